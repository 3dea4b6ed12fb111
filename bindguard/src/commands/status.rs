//! `status`: every binding, read back from its pins, with what is wrong with it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use bindguard_common::{Counters, Policy, flags};
use serde::Serialize;

use crate::{
    binding::{enforcer, netdev, netns},
    error::printable_path,
    kernel::{hooks::Hook, link, pins, progset},
};

/// Version of the JSON document `status --json` prints; bumped on incompatible changes.
/// 2: `link_id` is null unless `--links`; each link has `pinned`.
pub const JSON_VERSION: u32 = 2;

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub bindings: Vec<Binding>,
    /// Configured bindings the running daemon could not make (they have no pins).
    pub unbound: Vec<crate::binding::unbound::Unbound>,
    /// Whether every link was asked (`--links`): the table labels its columns by it.
    #[serde(skip)]
    pub links_checked: bool,
}

#[derive(Debug, Serialize)]
pub struct Binding {
    /// Path of the cgroup, or null if it was deleted.
    #[serde(serialize_with = "crate::binding::cgroup::serialize_lossy_opt")]
    pub cgroup: Option<PathBuf>,
    pub cgroup_id: u64,
    /// A user's `bindguard exec` made by the daemon (a grant): that user's uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    pub pins: PathBuf,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: NetnsInfo,
    pub mark: Option<u32>,
    pub priority: Option<u32>,
    pub mode: String,
    pub allow_loopback: bool,
    /// Socket families allowed beyond unix, netlink, inet and inet6 (`--allow-family`).
    pub allow_families: Vec<String>,
    /// Strict mode lets the cgroup attach tun/tap devices (`--allow-tun`).
    pub allow_tun: bool,
    /// `--dns`: the resolvers every DNS query of the cgroup goes to (empty: none).
    pub dns: Vec<std::net::IpAddr>,
    /// Strict mode lets the cgroup ptrace processes outside it (`--allow-ptrace-out`).
    pub allow_ptrace_out: bool,
    /// Strict mode was asked below a delegation boundary knowingly (`--allow-delegated`).
    pub allow_delegated: bool,
    /// Whether strict mode's BPF LSM programs are attached.
    pub lsm: bool,
    pub links: Vec<LinkInfo>,
    pub counters: Counters,
    /// Empty when the binding is healthy.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct NetnsInfo {
    pub cookie: u64,
    pub inode: u64,
    /// A path that names the namespace now ("current" for bindguard's own), if one was found.
    pub path: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LinkInfo {
    pub hook: &'static str,
    /// Whether the binding directory has this hook's link pin.
    pub pinned: bool,
    /// The link's id: only with `--links` (null otherwise, and if the pin cannot be opened).
    pub link_id: Option<u32>,
    /// Without `--links`, the program of this hook in the binding's set; with it, the program
    /// the link runs. Null if the pin is missing.
    pub program_id: Option<u32>,
    /// Pinned, and (with `--links`) linked to a cgroup: what the table's LINKS column counts.
    #[serde(skip)]
    pub attached: bool,
}

/// What `status` asks the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Open every link pin (link id, program, attached cgroup) instead of trusting the pin
    /// names and the program set's `users/` entries.
    pub links: bool,
}

#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

/// What is wrong with a binding: the `kind` of a problem in `status --json` (its serde name,
/// as docs/status-and-monitor.md lists them) and in the table's PROBLEMS column.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The binding's policy cannot be read from its program set.
    PinsUnreadable,
    /// A hook the mode uses has no link pinned, or its pin cannot be opened.
    LinkMissing,
    /// The cgroup was deleted and the kernel detached its programs.
    CgroupGone,
    /// Links left by an interrupted attach or detach are attached besides the binding's own.
    StrayPrograms,
    /// The links run another build's program set, or programs an older bindguard loaded for
    /// this binding alone.
    ProgramsOutdated,
    /// Strict mode on a kernel that cannot run some guards.
    RowsOpen,
    /// An ancestor's cgroup.procs is writable by a user other than root: their processes can
    /// move out of the binding.
    EscapableByMigration,
    /// The last `--existing destroy` or `reset-sockets` pass could not end some sockets, or
    /// could not see some tasks'.
    SocketsUnreached,
    /// The binding's network namespace no longer exists.
    NetnsGone,
    /// A closed binding: its interface does not exist yet.
    WaitingForInterface,
    /// The interface the binding names is gone.
    InterfaceMissing,
    /// The binding's ifindex now has another name.
    InterfaceRenamed,
}

impl ProblemKind {
    /// The name `status` prints and `--json` carries (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::PinsUnreadable => "pins-unreadable",
            ProblemKind::LinkMissing => "link-missing",
            ProblemKind::CgroupGone => "cgroup-gone",
            ProblemKind::StrayPrograms => "stray-programs",
            ProblemKind::ProgramsOutdated => "programs-outdated",
            ProblemKind::RowsOpen => "rows-open",
            ProblemKind::EscapableByMigration => "escapable-by-migration",
            ProblemKind::SocketsUnreached => "sockets-unreached",
            ProblemKind::NetnsGone => "netns-gone",
            ProblemKind::WaitingForInterface => "waiting-for-interface",
            ProblemKind::InterfaceMissing => "interface-missing",
            ProblemKind::InterfaceRenamed => "interface-renamed",
        }
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reads every binding. Read-only: never mounts bpffs or changes a pin.
pub fn collect(opts: Options) -> Report {
    let mut bindings = Vec::new();
    if pins::bpffs_mounted() {
        // Bindings often share a namespace and an interface; each is looked up (a /proc scan,
        // a thread in the namespace) once.
        let mut cache = Cache {
            abandoned: pins::abandoned(),
            ..Cache::default()
        };
        // The two long listings (every binding, every set's users) at once.
        let (sets, list) = std::thread::scope(|scope| {
            let sets = scope.spawn(Sets::read);
            let list = pins::list();
            (sets.join().unwrap_or_else(|_| Sets::default()), list)
        });
        // Binding directories are opened relative to the root: one path component each.
        let root = std::fs::File::open(pins::root()).ok();
        // What the kernel says about each binding (its pins, its policy and counters, its
        // cgroup's path: ~9 system calls, ~40 with --links) is read by a few threads at once;
        // the rest is computed from that.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(list.len().div_ceil(256).max(1));
        // Owned parts, so that each binding's path moves into its entry instead of being
        // copied.
        let mut parts = Vec::with_capacity(workers);
        let mut rest = list;
        let chunk = rest.len().div_ceil(workers).max(1);
        while rest.len() > chunk {
            let tail = rest.split_off(chunk);
            parts.push(std::mem::replace(&mut rest, tail));
        }
        parts.push(rest);
        let raws: Vec<Vec<Raw>> = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    let root = root.as_ref();
                    let sets = &sets;
                    scope.spawn(move || {
                        let mut cgroups = crate::binding::cgroup::Namer::new();
                        part.into_iter()
                            .map(|(id, dir)| Raw::read(id, dir, root, &mut cgroups, sets, opts))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        bindings.reserve(raws.iter().map(Vec::len).sum());
        for raw in raws.into_iter().flatten() {
            bindings.push(read_binding(raw, &mut cache));
        }
        // An attach or detach killed half-way on a cgroup with no binding (any more): its
        // programs still run, so it is listed too.
        let bound: std::collections::HashSet<u64> = bindings.iter().map(|b| b.cgroup_id).collect();
        let mut cgroups = crate::binding::cgroup::Namer::new();
        for (id, dir) in cache.abandoned.clone() {
            if !bound.contains(&id) && attached_links(&dir, id) > 0 {
                // Its links are all it has (no users/ entry need match): always asked.
                let links = Options { links: true };
                let raw = Raw::read(id, dir, None, &mut cgroups, &sets, links);
                bindings.push(read_binding(raw, &mut cache));
            }
        }
    }
    Report {
        version: JSON_VERSION,
        bindings,
        unbound: [
            crate::binding::unbound::PATH,
            crate::binding::unbound::NRI_PATH,
        ]
        .iter()
        .flat_map(|p| crate::binding::unbound::read(Path::new(p)))
        .collect(),
        links_checked: opts.links,
    }
}

/// What `collect` looks up once for all bindings.
#[derive(Default)]
struct Cache {
    namespaces: std::collections::HashMap<u64, Option<netns::Netns>>,
    names: std::collections::HashMap<(u64, u32), anyhow::Result<Option<String>>>,
    abandoned: Vec<(u64, PathBuf)>,
    /// Who can write each ancestor's cgroup.procs (bindings share ancestors).
    writers: crate::binding::cgroup::DelegationCache,
}

/// One pinned program set with its programs by hook.
struct SetInfo {
    set: Arc<progset::Set>,
    programs: HashMap<String, u32>,
}

impl SetInfo {
    fn new(set: Arc<progset::Set>) -> Arc<Self> {
        let programs = set.programs().into_iter().collect();
        Arc::new(Self { set, programs })
    }
}

/// Every pinned set and which bindings it records as its users, read once per process (one
/// listing of each set's users/ and one query per program) so that no binding's link has to
/// be opened to learn its set.
#[derive(Default)]
struct Sets {
    sets: Vec<Arc<SetInfo>>,
    /// cgroup id -> index in `sets`; None when several sets list it (an attach moving the
    /// binding between sets was interrupted): then its links tell.
    users: HashMap<u64, Option<usize>>,
}

impl Sets {
    fn read() -> Self {
        let sets: Vec<Arc<SetInfo>> = progset::list()
            .iter()
            .filter_map(|dir| progset::Set::open(dir).ok())
            .map(|set| SetInfo::new(Arc::new(set)))
            .collect();
        let mut users = HashMap::new();
        for (i, info) in sets.iter().enumerate() {
            for id in info.set.users() {
                users.entry(id).and_modify(|e| *e = None).or_insert(Some(i));
            }
        }
        Self { sets, users }
    }

    /// The set of the binding of `cgroup_id` with link pins `pinned`: from users/, or else
    /// from the program of one of its links (one link opened).
    fn of(&self, cgroup_id: u64, dir: &Path, pinned: &Pinned) -> Option<Arc<SetInfo>> {
        if let Some(Some(i)) = self.users.get(&cgroup_id) {
            return Some(self.sets[*i].clone());
        }
        let program = pinned.names().find_map(|name| {
            link::pinned_state(&dir.join(pins::names::link(name)))
                .ok()
                .map(|s| s.program_id)
        })?;
        self.of_program(program)
    }

    /// The set running program `id`: one of those read, or one pinned since.
    fn of_program(&self, id: u32) -> Option<Arc<SetInfo>> {
        if let Some(info) = self
            .sets
            .iter()
            .find(|i| i.programs.values().any(|p| *p == id))
        {
            return Some(info.clone());
        }
        progset::set_of_program(id).map(SetInfo::new)
    }
}

/// Which link pins a binding directory has, from its listing alone.
#[derive(Default)]
struct Pinned {
    /// The pinned hooks' [`Hook::bit`]s.
    hooks: u64,
    /// The first pin of a hook this build does not know, if any.
    other: Option<String>,
}

impl Pinned {
    fn has(&self, hook: Hook) -> bool {
        self.hooks & hook.bit() != 0
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        Hook::ALL
            .into_iter()
            .filter(move |&h| self.has(h))
            .map(|h| h.name())
            .chain(self.other.as_deref())
    }
}

/// A binding's link pins as `status` read them.
enum Links {
    /// Listed only: the pins and the set's programs stand for the links.
    Listed(Pinned, Option<Arc<SetInfo>>),
    /// Every link asked (`--links`, or a binding made before the shared set).
    Asked(Vec<(String, std::io::Result<link::LinkState>)>),
}

/// What the kernel holds for one binding.
struct Raw {
    cgroup_id: u64,
    dir: PathBuf,
    cgroup: Option<PathBuf>,
    links: Links,
    policy: anyhow::Result<Policy>,
    counters: Counters,
    set: Option<Arc<progset::Set>>,
}

impl Raw {
    /// `root` is the pins root, opened once: binding directories are opened relative to it,
    /// one path component each.
    fn read(
        cgroup_id: u64,
        dir: PathBuf,
        root: Option<&std::fs::File>,
        cgroups: &mut crate::binding::cgroup::Namer,
        sets: &Sets,
        opts: Options,
    ) -> Self {
        use std::os::fd::AsFd as _;
        let cgroup = cgroups.path(cgroup_id);
        // One directory listing; the maps are the set's. A binding made by a bindguard that
        // loaded programs per binding has no set to ask: its links are, as with --links.
        let mut pinned = Pinned::default();
        let mut add = |hook: &str| match Hook::from_name(hook) {
            Some(hook) => pinned.hooks |= hook.bit(),
            None => {
                pinned.other.get_or_insert_with(|| hook.to_string());
            }
        };
        let ask_links = match (root, dir.file_name().and_then(|n| n.to_str())) {
            (Some(root), Some(name)) if !opts.links => {
                progset::binding_pins_at(root.as_fd(), name, &mut add)
            }
            _ => true,
        };
        if ask_links {
            let (links, legacy) = progset::read_binding_dir(&dir);
            let (policy, counters, set) =
                policy_and_counters(cgroup_id, &dir, &links, legacy, sets);
            return Self {
                cgroup_id,
                dir,
                cgroup,
                links: Links::Asked(links),
                policy,
                counters,
                set,
            };
        }
        let set = sets.of(cgroup_id, &dir, &pinned);
        let (policy, counters) = match &set {
            Some(info) => read_maps(&info.set, cgroup_id),
            None => (Err(no_set(&dir)), Counters::default()),
        };
        Self {
            cgroup_id,
            dir,
            cgroup,
            set: set.as_ref().map(|i| i.set.clone()),
            links: Links::Listed(pinned, set),
            policy,
            counters,
        }
    }
}

fn no_set(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!("no link in {} runs a pinned program set", dir.display())
}

/// The policy and counters of cgroup `cgroup_id` in `set`: one map lookup each, through the
/// set's map fds opened once per process.
fn read_maps(set: &progset::Set, cgroup_id: u64) -> (anyhow::Result<Policy>, Counters) {
    let policy = set
        .read_policy(cgroup_id)
        .map_err(|e| anyhow::anyhow!("{e} (cgroup {cgroup_id} in {})", set.dir.display()));
    (policy, set.read_counters(cgroup_id).unwrap_or_default())
}

/// With `--links`: the policy and counters of one binding from the set its links run, or
/// from the binding's own pins when an older bindguard made it.
fn policy_and_counters(
    cgroup_id: u64,
    dir: &Path,
    links: &[(String, std::io::Result<link::LinkState>)],
    legacy: bool,
    sets: &Sets,
) -> (anyhow::Result<Policy>, Counters, Option<Arc<progset::Set>>) {
    if legacy {
        let policy = enforcer::read_policy(dir);
        return (
            policy,
            enforcer::read_counters(dir).unwrap_or_default(),
            None,
        );
    }
    let Some(info) = links
        .iter()
        .find_map(|(_, s)| s.as_ref().ok().and_then(|s| sets.of_program(s.program_id)))
    else {
        return (Err(no_set(dir)), Counters::default(), None);
    };
    let (policy, counters) = read_maps(&info.set, cgroup_id);
    (policy, counters, Some(info.set.clone()))
}

fn read_binding(raw: Raw, cache: &mut Cache) -> Binding {
    let Raw {
        cgroup_id,
        dir,
        cgroup,
        links: raw_links,
        policy,
        counters,
        set,
    } = raw;
    // The policy lives in the cgroup's storage: unreadable and unnamed, the cgroup is gone.
    if cgroup.is_none() && policy.is_err() {
        return deleted_binding(cgroup_id, dir, &raw_links);
    }
    let mut problems = Vec::new();
    let policy = policy.unwrap_or_else(|e| {
        problems.push(Problem {
            kind: ProblemKind::PinsUnreadable,
            message: format!("policy cannot be read ({e:#})"),
        });
        Policy::default()
    });
    let mode = crate::binding::policy::mode_of(&policy);
    let hooks = crate::binding::enforcer::hooks_of_binding(&policy, set.as_deref());
    let mut links = Vec::with_capacity(hooks.len());
    let mut detached = false;
    for hook in hooks {
        let missing = |why: String| Problem {
            kind: ProblemKind::LinkMissing,
            message: format!(
                "{} {why}: this hook is not enforced; re-attach",
                dir.join(pins::names::link(hook.name())).display()
            ),
        };
        let mut info = LinkInfo {
            hook: hook.name(),
            pinned: false,
            link_id: None,
            program_id: None,
            attached: false,
        };
        let asked = match &raw_links {
            Links::Listed(pinned, _) if !pinned.has(hook) => None,
            // Not asked: the pin stands for its link, the set says which program it runs.
            Links::Listed(_, set) => {
                info.pinned = true;
                info.attached = true;
                info.program_id = set
                    .as_ref()
                    .and_then(|s| s.programs.get(hook.name()).copied());
                Some(None)
            }
            Links::Asked(links) => links
                .iter()
                .find(|(n, _)| n == hook.name())
                .map(|(_, s)| Some(s)),
        };
        match asked {
            None => problems.push(missing("is not pinned".into())),
            Some(None) => {}
            Some(Some(Ok(s))) => {
                detached |= s.cgroup_id.is_none();
                info.pinned = true;
                info.attached = s.cgroup_id.is_some();
                info.link_id = Some(s.link_id);
                info.program_id = Some(s.program_id);
            }
            Some(Some(Err(e))) => {
                info.pinned = true;
                problems.push(missing(format!("cannot be opened ({e})")));
            }
        }
        links.push(info);
    }
    if detached || cgroup.is_none() {
        problems.push(Problem {
            kind: ProblemKind::CgroupGone,
            message: format!(
                "cgroup {cgroup_id} was deleted; `bindguard detach --cgroup <its old path>` removes these pins"
            ),
        });
    }
    let stray: usize = cache
        .abandoned
        .iter()
        .filter(|(id, _)| *id == cgroup_id)
        .map(|(_, d)| attached_links(d, cgroup_id))
        .sum();
    // An orphaned directory listed on its own counts its links as stray, not as the binding's.
    let stray = if dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().parse::<u64>().is_err())
    {
        stray.max(1)
    } else {
        stray
    };
    if stray > 0 {
        problems.push(Problem {
            kind: ProblemKind::StrayPrograms,
            message: format!(
                "{stray} program(s) left by an interrupted attach or detach are attached besides this binding's own; the next attach or detach removes them"
            ),
        });
    }
    if set.as_ref().map(|s| s.hash) != Some(crate::kernel::hooks::object_hash())
        && problems.is_empty()
    {
        problems.push(Problem {
            kind: ProblemKind::ProgramsOutdated,
            message: "the binding runs programs from another bindguard build; attach again to replace them".into(),
        });
    }
    if mode == crate::binding::policy::Mode::Strict
        && let Some(set) = &set
    {
        let open = set.open_rows(|h| !h.is_lsm() || policy.has(flags::LSM));
        if !open.is_empty() {
            problems.push(Problem {
                kind: ProblemKind::RowsOpen,
                message: format!(
                    "this kernel cannot run {}: escape rows {} are not covered; `bindguard doctor` says why and how to close them",
                    open.iter()
                        .flat_map(|(_, hooks)| hooks.iter().map(|h| h.name()))
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::kernel::escapes::row_list(&open)
                ),
            });
        }
    }
    if let Some(path) = &cgroup
        && let Some(d) = crate::binding::cgroup::delegation(path, &mut cache.writers)
    {
        problems.push(Problem {
            kind: ProblemKind::EscapableByMigration,
            message: format!(
                "{}: its processes can move themselves out of the binding (no program sees a migration); bind {} itself to cover them",
                d.describe(),
                d.boundary.display()
            ),
        });
    }
    if policy.unreached > 0 {
        problems.push(Problem {
            kind: ProblemKind::SocketsUnreached,
            message: format!(
                "the last pass over the sockets the cgroup already held left {} socket(s) or task(s) it could not end or see (the log of the attach or daemon names them): they may still use another interface",
                policy.unreached
            ),
        });
    }
    let ifname = netdev::name_from_bytes(&policy.ifname);
    let ns = cache
        .namespaces
        .entry(policy.netns_ino)
        .or_insert_with(|| netns::find_by_ino(policy.netns_ino));
    match &*ns {
        None => problems.push(Problem {
            kind: ProblemKind::NetnsGone,
            message: format!(
                "network namespace (inode {}) no longer exists: sockets are refused (fail-closed)",
                policy.netns_ino
            ),
        }),
        Some(_) if policy.ifindex == 0 && !ifname.is_empty() => problems.push(Problem {
            kind: ProblemKind::WaitingForInterface,
            message: format!(
                "interface {ifname} does not exist: every new socket is refused (fail-closed) until it appears and the binding is re-targeted"
            ),
        }),
        Some(ns) => match cache
            .names
            .entry((policy.netns_ino, policy.ifindex))
            .or_insert_with(|| netdev::name_of(policy.ifindex, ns))
        {
            Ok(None) => problems.push(Problem {
                kind: ProblemKind::InterfaceMissing,
                message: format!(
                    "interface {ifname} (ifindex {}) is gone: sends fail with ENODEV (fail-closed); re-attach to use a new interface",
                    policy.ifindex
                ),
            }),
            Ok(Some(now)) if *now != ifname => problems.push(Problem {
                kind: ProblemKind::InterfaceRenamed,
                message: format!(
                    "ifindex {} is now named {now} (was {ifname}); sockets still use ifindex {}",
                    policy.ifindex, policy.ifindex
                ),
            }),
            _ => {}
        },
    }
    let user = cgroup
        .as_deref()
        .filter(|_| policy.has(flags::FROM_USER))
        .and_then(crate::binding::cgroup::user_of_exec_cgroup);
    Binding {
        cgroup,
        cgroup_id,
        user,
        pins: dir,
        ifname,
        ifindex: policy.ifindex,
        netns: NetnsInfo {
            cookie: policy.netns_cookie,
            inode: policy.netns_ino,
            path: ns.as_ref().map(|n| {
                n.path
                    .as_ref()
                    .map_or_else(|| "current".to_string(), |p| p.display().to_string())
            }),
        },
        mark: policy.has(flags::SET_MARK).then_some(policy.mark),
        priority: policy.has(flags::SET_PRIORITY).then_some(policy.priority),
        mode: mode.as_str().into(),
        allow_loopback: policy.has(flags::ALLOW_LOOPBACK),
        allow_families: crate::binding::policy::family_names(policy.families),
        allow_tun: policy.has(flags::ALLOW_TUN),
        dns: crate::binding::policy::Dns::of(&policy).addrs(),
        allow_ptrace_out: policy.has(flags::ALLOW_PTRACE_OUT),
        allow_delegated: policy.has(flags::ALLOW_DELEGATED),
        lsm: policy.has(flags::LSM),
        links,
        counters,
        problems,
    }
}

/// A binding whose cgroup was deleted. The kernel detached its links and freed the cgroup's
/// policy with the cgroup, so nothing is enforced and there is no policy to read: what is left
/// is the pin directory. Its mode is told by the pins (bind mode pins sock_create alone), and
/// none of its links is attached.
fn deleted_binding(cgroup_id: u64, dir: PathBuf, raw_links: &Links) -> Binding {
    let pinned: Vec<Hook> = Hook::ALL
        .into_iter()
        .filter(|&h| match raw_links {
            Links::Listed(pinned, _) => pinned.has(h),
            Links::Asked(links) => links.iter().any(|(n, _)| n == h.name()),
        })
        .collect();
    let mode = if pinned
        .iter()
        .any(|h| !crate::binding::policy::Mode::Bind.wants(*h))
    {
        crate::binding::policy::Mode::Strict
    } else {
        crate::binding::policy::Mode::Bind
    };
    let links = pinned
        .into_iter()
        .map(|hook| LinkInfo {
            hook: hook.name(),
            pinned: true,
            link_id: None,
            program_id: None,
            attached: false,
        })
        .collect();
    Binding {
        cgroup: None,
        cgroup_id,
        user: None,
        pins: dir,
        ifname: String::new(),
        ifindex: 0,
        netns: NetnsInfo {
            cookie: 0,
            inode: 0,
            path: None,
        },
        mark: None,
        priority: None,
        mode: mode.as_str().into(),
        allow_loopback: false,
        allow_families: Vec::new(),
        allow_tun: false,
        dns: Vec::new(),
        allow_ptrace_out: false,
        allow_delegated: false,
        lsm: false,
        links,
        counters: Counters::default(),
        problems: vec![Problem {
            kind: ProblemKind::CgroupGone,
            message: format!(
                "cgroup {cgroup_id} was deleted and the kernel detached its programs; its pins are leftovers: `bindguard detach --cgroup <any deleted cgroup's path>` removes every such binding (so does the next oci-hook call)"
            ),
        }],
    }
}

/// How many links pinned in `dir` are attached to cgroup `cgroup_id`.
fn attached_links(dir: &Path, cgroup_id: u64) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| link::pinned_state(&e.path()).is_ok_and(|s| s.cgroup_id == Some(cgroup_id)))
        .count()
}

/// `bindguard status`: collects the report and prints it on stdout, as JSON with `json`, else
/// as the table. Meant to end the process: the report is not freed.
pub fn print(json: bool, opts: Options) -> anyhow::Result<()> {
    use std::io::Write as _;
    // The pins root is root-only (0700): for anyone else "no bindings" would be a lie.
    if let Err(e) = std::fs::read_dir(pins::root())
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        eprintln!(
            "bindguard: warning: cannot read {} ({e}), so bindings are not shown; run status as root",
            pins::root().display()
        );
    }
    let report = collect(opts);
    // Indented for a person at a terminal; compact otherwise, where programs read it and
    // indenting 10,000 bindings costs more than reading them.
    let pretty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        if pretty {
            serde_json::to_writer_pretty(&mut out, &report)?;
        } else {
            serde_json::to_writer(&mut out, &report)?;
        }
        writeln!(out)?;
    } else {
        out.write_all(render_table(&report).as_bytes())?;
    }
    out.flush()?;
    // The process ends here: freeing 10,000 bindings one allocation at a time would only add
    // to the command's time.
    std::mem::forget(report);
    Ok(())
}

/// The table `status` prints for people: one row per binding, then the configured bindings
/// the daemon could not make.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = render_bindings(report);
    for u in &report.unbound {
        let _ = writeln!(
            out,
            "NOT bound (the daemon could not make it): {} ({}): {}",
            printable_path(&u.cgroup),
            crate::error::printable(&u.origin),
            crate::error::printable(&u.why)
        );
    }
    out
}

/// One row per binding.
fn render_bindings(report: &Report) -> String {
    use std::fmt::Write as _;
    if report.bindings.is_empty() {
        return "no bindings\n".into();
    }
    let mut rows = vec![
        [
            "CGROUP", "ID", "DEV", "IFINDEX", "NETNS", "MODE", "MARK", "PRIO", "LINKS", "BOUND",
            "REFUSED", "DROPPED", "PROBLEMS",
        ]
        .map(String::from),
    ];
    for b in &report.bindings {
        let opt = |v: Option<u32>| v.map_or("-".into(), |v| v.to_string());
        let up = b.links.iter().filter(|l| l.attached).count();
        let links = format!("{up}/{}", b.links.len());
        let refused =
            b.counters.sockets_refused_netns + b.counters.sockopt_refused + b.counters.addr_refused;
        let problems = if b.problems.is_empty() {
            "ok".to_string()
        } else {
            b.problems
                .iter()
                .map(|p| p.kind.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        rows.push([
            b.cgroup
                .as_deref()
                .map_or("(deleted)".into(), printable_path),
            b.cgroup_id.to_string(),
            b.ifname.clone(),
            b.ifindex.to_string(),
            b.netns.path.clone().unwrap_or_else(|| "(gone)".into()),
            b.mode.clone(),
            opt(b.mark),
            opt(b.priority),
            links,
            b.counters.sockets_bound.to_string(),
            refused.to_string(),
            (b.counters.egress_dropped + b.counters.ingress_dropped).to_string(),
            problems,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for b in &report.bindings {
        let links: Vec<String> = b
            .links
            .iter()
            .map(|l| match (l.link_id, l.program_id) {
                (Some(link), Some(prog)) => format!("{}={link}/{prog}", l.hook),
                (None, Some(prog)) if !report.links_checked => format!("{}={prog}", l.hook),
                (None, None) if l.pinned && b.cgroup.is_none() => format!("{}=detached", l.hook),
                _ => format!("{}=MISSING", l.hook),
            })
            .collect();
        let what = if report.links_checked {
            "links (link/program)"
        } else {
            "pinned links (program)"
        };
        let _ = writeln!(out, "cgroup {} {what}: {}", b.cgroup_id, links.join(" "));
        for p in b
            .problems
            .iter()
            .filter(|p| p.kind != ProblemKind::RowsOpen)
        {
            let _ = writeln!(out, "cgroup {}: {}", b.cgroup_id, p.message);
        }
        if b.counters.events_dropped > 0 {
            let _ = writeln!(
                out,
                "cgroup {}: {} refusal event(s) not sent to monitor (over the binding's rate limit, or the ring buffer was full)",
                b.cgroup_id, b.counters.events_dropped
            );
        }
    }
    // What the kernel cannot run is the same for every strict binding on it: said once, with
    // the bindings it concerns.
    let mut open: Vec<(&str, Vec<String>)> = Vec::new();
    for b in &report.bindings {
        for p in b
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::RowsOpen)
        {
            match open.iter_mut().find(|(m, _)| *m == p.message) {
                Some((_, ids)) => ids.push(b.cgroup_id.to_string()),
                None => open.push((&p.message, vec![b.cgroup_id.to_string()])),
            }
        }
    }
    for (message, ids) in open {
        let which = if ids.len() == 1 { "cgroup" } else { "cgroups" };
        let _ = writeln!(out, "{which} {}: {message}", ids.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON carries the same names the table prints, as docs/status-and-monitor.md lists.
    #[test]
    fn problem_kinds_serialize_as_their_names() {
        use ProblemKind::*;
        let all = [
            PinsUnreadable,
            LinkMissing,
            CgroupGone,
            StrayPrograms,
            ProgramsOutdated,
            RowsOpen,
            EscapableByMigration,
            SocketsUnreached,
            NetnsGone,
            WaitingForInterface,
            InterfaceMissing,
            InterfaceRenamed,
        ];
        let docs = include_str!("../../../docs/status-and-monitor.md");
        for kind in all {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert!(docs.contains(kind.as_str()), "{kind} is not in the docs");
        }
    }
}
