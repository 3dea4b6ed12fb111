//! Every name bindguard gives an entry on bpffs, both ways: one type per kind of directory,
//! whose `Display` writes an entry's name and whose `parse` reads a name back as what it was
//! written as (aya's `PinnedLink::from_pin`: a pin is reopened as the type it was pinned as).
//! A prefix or a file name is spelled here and nowhere else.
//!
//! ```text
//! /sys/fs/bpf/bindguard/               [`ROOT`], holding [`RootEntry`]s
//!   <cgroup-id>/                       a binding: [`BindingPin`]s
//!   programs/                          [`SetsEntry`]s
//!     <object-hash>/                   a program set: [`SetEntry`]s
//!       users/<cgroup-id>              [`User`]s
//!   work/                              [`WorkDir`]s
//! /sys/fs/bpf/bindguard-untrusted-...  a root made by someone else, moved aside ([`aside`])
//! ```
//! bpffs refuses names with a dot, so versions use `_` and staging names are told apart from
//! bindings by not being a number. A part of a name that does not parse reads back as None
//! and is written empty, so what is parsed is written back unchanged.

use std::fmt;

/// bindguard's directory in bpffs's root.
pub const ROOT: &str = "bindguard";

const PROGRAMS: &str = "programs";
const WORK: &str = "work";
const LINK: &str = "link_";
const PROG: &str = "prog_";
const NEW: &str = "new-";
const DEAD: &str = "dead-";
const READY: &str = "ready-";
const BUILD: &str = "build-";
const USERS: &str = "users";
const ABSENT: &str = "absent";
const POLICY: &str = "policy";
const STATS: &str = "stats";
const EVENTS: &str = "events";

/// An entry of bindguard's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootEntry {
    /// The pin directory of the binding of a cgroup, named by its id.
    Binding(u64),
    /// The program sets (`programs`).
    Programs,
    /// Bindings being made or removed (`work`).
    Work,
}

impl RootEntry {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            PROGRAMS => Some(Self::Programs),
            WORK => Some(Self::Work),
            _ => name.parse().ok().map(Self::Binding),
        }
    }
}

impl fmt::Display for RootEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Binding(id) => write!(f, "{id}"),
            Self::Programs => f.write_str(PROGRAMS),
            Self::Work => f.write_str(WORK),
        }
    }
}

/// An entry of a binding directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingPin<'a> {
    /// The link of the hook of this name (`link_<hook>`).
    Link(&'a str),
    /// A map of its own, pinned by a bindguard build that loaded programs per binding.
    Legacy(LegacyPin),
}

/// A map pin of a binding made by a bindguard build that loaded programs per binding: the
/// binding's own, read as such and replaced on the next attach. Same file names as the
/// shared set's maps ([`SetMap`]), another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyPin {
    Policy,
    Stats,
    Events,
}

impl<'a> BindingPin<'a> {
    pub fn parse(name: &'a str) -> Option<Self> {
        if let Some(hook) = name.strip_prefix(LINK) {
            return Some(Self::Link(hook));
        }
        Some(Self::Legacy(match name {
            POLICY => LegacyPin::Policy,
            STATS => LegacyPin::Stats,
            EVENTS => LegacyPin::Events,
            _ => return None,
        }))
    }

    /// The hook name if this is a link pin.
    pub fn link(self) -> Option<&'a str> {
        match self {
            Self::Link(hook) => Some(hook),
            Self::Legacy(_) => None,
        }
    }
}

impl fmt::Display for BindingPin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Link(hook) => write!(f, "{LINK}{hook}"),
            Self::Legacy(pin) => f.write_str(match pin {
                LegacyPin::Policy => POLICY,
                LegacyPin::Stats => STATS,
                LegacyPin::Events => EVENTS,
            }),
        }
    }
}

impl fmt::Display for LegacyPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        BindingPin::Legacy(*self).fmt(f)
    }
}

/// The pin name of the link of `hook` in a binding directory (`link_<hook>`).
pub fn link(hook: &str) -> String {
    BindingPin::Link(hook).to_string()
}

/// The hook name of a binding directory's entry `name`, if it is a link pin.
pub fn parse_link(name: &str) -> Option<&str> {
    BindingPin::parse(name)?.link()
}

/// A directory in `work/`: a binding being made, removed or swapped in, named
/// `<stage><cgroup-id>-<pid of its maker>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkDir {
    pub stage: Stage,
    pub cgroup_id: u64,
    /// The bindguard process that made it (None: not a number).
    pub pid: Option<u32>,
}

/// What a [`WorkDir`] is on its way to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A binding being made (`new-`), renamed into place when complete.
    New,
    /// A binding being removed (`dead-`): renamed away first, so a detach killed half-way
    /// leaves a directory the next command finishes, never a half binding under the binding's
    /// own name.
    Dead,
    /// A complete new binding waiting to replace one on a bpffs without RENAME_EXCHANGE
    /// (`ready-`, before Linux 5.15): if the replacement is killed half-way, the next sweep
    /// publishes it when the binding is missing and removes it otherwise.
    Ready,
}

impl Stage {
    fn prefix(self) -> &'static str {
        match self {
            Self::New => NEW,
            Self::Dead => DEAD,
            Self::Ready => READY,
        }
    }
}

impl WorkDir {
    /// This process's directory of `stage` for the binding of cgroup `cgroup_id`.
    pub fn own(stage: Stage, cgroup_id: u64) -> Self {
        Self {
            stage,
            cgroup_id,
            pid: Some(std::process::id()),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        let (stage, rest) = [Stage::New, Stage::Dead, Stage::Ready]
            .into_iter()
            .find_map(|s| Some((s, name.strip_prefix(s.prefix())?)))?;
        let (id, pid) = rest.rsplit_once('-')?;
        Some(Self {
            stage,
            cgroup_id: id.parse().ok()?,
            pid: pid.parse().ok(),
        })
    }
}

impl fmt::Display for WorkDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}-", self.stage.prefix(), self.cgroup_id)?;
        match self.pid {
            Some(pid) => write!(f, "{pid}"),
            None => Ok(()),
        }
    }
}

/// An entry of `programs/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetsEntry {
    /// The set of the eBPF object with this hash (16 hex digits: bpffs refuses dots, hex is
    /// short).
    Set(u64),
    /// A set being loaded by `pid`, renamed into place when complete
    /// (`new-<object-hash>-<pid>`). Any name with the prefix is one.
    Staging { hash: Option<u64>, pid: Option<u32> },
}

impl SetsEntry {
    /// This process's staging directory for the set of the object with hash `hash`.
    pub fn own_staging(hash: u64) -> Self {
        Self::Staging {
            hash: Some(hash),
            pid: Some(std::process::id()),
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix(NEW) {
            let (hash, pid) = rest.rsplit_once('-').unwrap_or((rest, ""));
            return Some(Self::Staging {
                hash: parse_hash(hash),
                pid: pid.parse().ok(),
            });
        }
        parse_hash(name).map(Self::Set)
    }
}

fn parse_hash(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

impl fmt::Display for SetsEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Set(hash) => write!(f, "{hash:016x}"),
            Self::Staging { hash, pid } => {
                f.write_str(NEW)?;
                if let Some(hash) = hash {
                    write!(f, "{hash:016x}")?;
                }
                f.write_str("-")?;
                match pid {
                    Some(pid) => write!(f, "{pid}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// An entry of a program set's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetEntry<'a> {
    /// The program of the hook of this name (`prog_<hook>`).
    Prog(&'a str),
    /// One of the maps every binding on the set shares.
    Map(SetMap),
    /// One empty directory per binding on the set (`users/<cgroup-id>`, [`User`]).
    Users,
    /// The programs this kernel could not load, and why (`absent/<hook>/<why>`).
    Absent,
    /// A build that used the set (`build-<major>_<minor>_<patch>-<commit time>`).
    Build(Build),
}

/// A map of a program set, shared by every binding on it. Same file names as a legacy
/// binding's own maps ([`LegacyPin`]), another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMap {
    /// Cgroup storage: each binding's Policy.
    Policy,
    /// Per-CPU cgroup storage: each binding's Counters.
    Stats,
    /// The ring buffer of every binding's events.
    Events,
}

impl SetMap {
    pub const ALL: [Self; 3] = [Self::Policy, Self::Stats, Self::Events];

    /// The map's name in the eBPF object.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Policy => "POLICY",
            Self::Stats => "STATS",
            Self::Events => "EVENTS",
        }
    }
}

impl fmt::Display for SetMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SetEntry::Map(*self).fmt(f)
    }
}

/// A build's entry in a set: its crate version and commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    pub version: (u64, u64, u64),
    pub commit_time: u64,
}

impl<'a> SetEntry<'a> {
    pub fn parse(name: &'a str) -> Option<Self> {
        if let Some(hook) = name.strip_prefix(PROG) {
            return Some(Self::Prog(hook));
        }
        if let Some(rest) = name.strip_prefix(BUILD) {
            let (version, time) = rest.split_once('-')?;
            let mut v = version.split('_').map(|p| p.parse::<u64>().ok());
            return Some(Self::Build(Build {
                version: (v.next()??, v.next()??, v.next()??),
                commit_time: time.parse().ok()?,
            }));
        }
        Some(match name {
            POLICY => Self::Map(SetMap::Policy),
            STATS => Self::Map(SetMap::Stats),
            EVENTS => Self::Map(SetMap::Events),
            USERS => Self::Users,
            ABSENT => Self::Absent,
            _ => return None,
        })
    }

    /// The hook name if this is a program pin.
    pub fn prog(self) -> Option<&'a str> {
        match self {
            Self::Prog(hook) => Some(hook),
            _ => None,
        }
    }
}

impl fmt::Display for SetEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prog(hook) => write!(f, "{PROG}{hook}"),
            Self::Map(SetMap::Policy) => f.write_str(POLICY),
            Self::Map(SetMap::Stats) => f.write_str(STATS),
            Self::Map(SetMap::Events) => f.write_str(EVENTS),
            Self::Users => f.write_str(USERS),
            Self::Absent => f.write_str(ABSENT),
            Self::Build(Build {
                version: (a, b, c),
                commit_time,
            }) => write!(f, "{BUILD}{a}_{b}_{c}-{commit_time}"),
        }
    }
}

/// The pin name of the program of `hook` in a set directory (`prog_<hook>`).
pub fn prog(hook: &str) -> String {
    SetEntry::Prog(hook).to_string()
}

/// The hook name of a set directory's entry `name`, if it is a program pin.
pub fn parse_prog(name: &str) -> Option<&str> {
    SetEntry::parse(name)?.prog()
}

/// An entry of a set's `users/`: the binding of this cgroup id runs the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User(pub u64);

impl User {
    pub fn parse(name: &str) -> Option<Self> {
        name.parse().ok().map(Self)
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a root directory bindguard cannot trust is moved aside to, beside it: unique by
/// process and time, and never read back.
pub fn aside(pid: u32, nanos: u128) -> String {
    format!("{ROOT}-untrusted-{pid}-{nanos}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_entries_round_trip() {
        for e in [RootEntry::Binding(0), RootEntry::Binding(u64::MAX)] {
            assert_eq!(RootEntry::parse(&e.to_string()), Some(e));
        }
        assert_eq!(RootEntry::Binding(4242).to_string(), "4242");
        assert_eq!(RootEntry::parse("programs"), Some(RootEntry::Programs));
        assert_eq!(RootEntry::parse("work"), Some(RootEntry::Work));
        assert_eq!(RootEntry::Programs.to_string(), "programs");
        assert_eq!(RootEntry::Work.to_string(), "work");
        assert_eq!(RootEntry::parse("new-1-2"), None);
    }

    #[test]
    fn binding_pins_round_trip() {
        let all = [
            BindingPin::Link("connect4"),
            BindingPin::Link("sock_create"),
            BindingPin::Legacy(LegacyPin::Policy),
            BindingPin::Legacy(LegacyPin::Stats),
            BindingPin::Legacy(LegacyPin::Events),
        ];
        for p in all {
            let name = p.to_string();
            assert_eq!(BindingPin::parse(&name), Some(p), "{name}");
        }
        assert_eq!(link("connect4"), "link_connect4");
        assert_eq!(parse_link("link_egress"), Some("egress"));
        assert_eq!(parse_link("policy"), None);
        assert_eq!(LegacyPin::Policy.to_string(), "policy");
        assert_eq!(LegacyPin::Stats.to_string(), "stats");
        assert_eq!(LegacyPin::Events.to_string(), "events");
        assert_eq!(BindingPin::parse("prog_connect4"), None);
    }

    #[test]
    fn work_dirs_round_trip() {
        for stage in [Stage::New, Stage::Dead, Stage::Ready] {
            for pid in [Some(1), Some(u32::MAX), None] {
                let d = WorkDir {
                    stage,
                    cgroup_id: 77,
                    pid,
                };
                assert_eq!(WorkDir::parse(&d.to_string()), Some(d), "{d}");
            }
        }
        let own = WorkDir::own(Stage::Dead, 9);
        assert_eq!(own.to_string(), format!("dead-9-{}", std::process::id()));
        assert_eq!(
            WorkDir {
                stage: Stage::New,
                cgroup_id: 12,
                pid: Some(34)
            }
            .to_string(),
            "new-12-34"
        );
        assert_eq!(
            WorkDir::parse("ready-5-x"),
            Some(WorkDir {
                stage: Stage::Ready,
                cgroup_id: 5,
                pid: None
            })
        );
        // No pid part, or no number: not a work directory.
        assert_eq!(WorkDir::parse("new-5"), None);
        assert_eq!(WorkDir::parse("dead-x-5"), None);
        assert_eq!(WorkDir::parse("5"), None);
    }

    #[test]
    fn sets_entries_round_trip() {
        let all = [
            SetsEntry::Set(0x0123_4567_89ab_cdef),
            SetsEntry::Set(1),
            SetsEntry::own_staging(0xfeed),
            SetsEntry::Staging {
                hash: None,
                pid: None,
            },
        ];
        for e in all {
            let name = e.to_string();
            assert_eq!(SetsEntry::parse(&name), Some(e), "{name}");
        }
        assert_eq!(SetsEntry::Set(0xab).to_string(), "00000000000000ab");
        assert_eq!(
            SetsEntry::own_staging(0xab).to_string(),
            format!("new-00000000000000ab-{}", std::process::id())
        );
        // Any name with the prefix is a staging directory (the sweep removes it).
        assert!(matches!(
            SetsEntry::parse("new-whatever"),
            Some(SetsEntry::Staging { .. })
        ));
        assert_eq!(SetsEntry::parse("users"), None);
    }

    #[test]
    fn set_entries_round_trip() {
        let all = [
            SetEntry::Prog("connect4"),
            SetEntry::Prog("hold"),
            SetEntry::Map(SetMap::Policy),
            SetEntry::Map(SetMap::Stats),
            SetEntry::Map(SetMap::Events),
            SetEntry::Users,
            SetEntry::Absent,
            SetEntry::Build(Build {
                version: (0, 12, 3),
                commit_time: 1_765_000_000,
            }),
        ];
        for e in all {
            let name = e.to_string();
            assert_eq!(SetEntry::parse(&name), Some(e), "{name}");
        }
        assert_eq!(prog("hold"), "prog_hold");
        assert_eq!(parse_prog("prog_egress"), Some("egress"));
        assert_eq!(parse_prog("link_egress"), None);
        assert_eq!(
            SetEntry::Build(Build {
                version: (1, 2, 3),
                commit_time: 4
            })
            .to_string(),
            "build-1_2_3-4"
        );
        assert_eq!(SetEntry::parse("build-1_2-4"), None);
        assert_eq!(SetEntry::parse("build-1_2_3"), None);
        for (map, symbol, file) in [
            (SetMap::Policy, "POLICY", "policy"),
            (SetMap::Stats, "STATS", "stats"),
            (SetMap::Events, "EVENTS", "events"),
        ] {
            assert_eq!(map.symbol(), symbol);
            assert_eq!(map.to_string(), file);
        }
        // The same file names as a legacy binding's maps, read in another directory.
        assert_eq!(SetMap::Policy.to_string(), LegacyPin::Policy.to_string());
    }

    #[test]
    fn users_round_trip() {
        assert_eq!(User::parse(&User(123).to_string()), Some(User(123)));
        assert_eq!(User(123).to_string(), "123");
        assert_eq!(User::parse("x"), None);
    }

    #[test]
    fn aside_is_beside_the_root() {
        assert_eq!(aside(5, 6), "bindguard-untrusted-5-6");
    }
}
