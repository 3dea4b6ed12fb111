//! Loading, filling, attaching and pinning one binding; changing and removing it.

use std::{
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    maps::{Array, Map, MapData, PerCpuArray},
    util::KernelVersion,
};
use aya_obj::generated::bpf_attach_type::{self, self as A};
use bindguard_common::{ABI_VERSION, Counters, Policy, flags};

use crate::{
    Error,
    cgroup::Cgroup,
    netdev::{self, Interface},
    pins, progset,
};

/// The eBPF object built from bindguard-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bindguard"));

/// FNV-1a of [`EBPF_OBJECT`] (computed by build.rs): identifies the program set a binding
/// runs and names its pin directory.
pub const fn object_hash() -> u64 {
    include!(concat!(env!("OUT_DIR"), "/object_hash"))
}

/// What a binding enforces beyond SO_BINDTODEVICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The binding plus guards that close the known escapes (README, "Escapes").
    #[default]
    Strict,
    /// Exactly SO_BINDTODEVICE semantics: new sockets are bound, nothing else.
    Bind,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Bind => "bind",
        }
    }

    fn from_flags(flags: u32) -> Self {
        if flags & flags::STRICT != 0 {
            Mode::Strict
        } else {
            Mode::Bind
        }
    }

    /// Every program this mode uses, sock_create first so that a binding exists before the
    /// guards that check it.
    pub fn wants(self) -> &'static [Hook] {
        match self {
            Mode::Strict => HOOKS,
            Mode::Bind => &HOOKS[..1],
        }
    }

    /// The programs this mode attaches where `available` says the kernel has them (the
    /// program set holds what the kernel loaded; `doctor` says why the rest is missing).
    pub fn hooks(self, available: impl Fn(&Hook) -> bool) -> Vec<&'static Hook> {
        self.wants().iter().filter(|h| available(h)).collect()
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "strict" => Ok(Mode::Strict),
            "bind" => Ok(Mode::Bind),
            _ => Err(Error::InvalidInput {
                what: format!("mode '{s}' is not known; use --mode strict or --mode bind"),
            }),
        }
    }
}

/// Which aya program type loads a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sock,
    Sockopt,
    SockAddr,
    Skb,
    /// A BPF LSM program attached per cgroup (lsm_cgroup); the string is the LSM hook.
    Lsm(&'static str),
}

/// One program of a binding and where its link is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// Pinned as `link_<name>`.
    pub name: &'static str,
    /// The function name in bindguard-ebpf.
    pub program: &'static str,
    pub kind: Kind,
    pub attach_type: bpf_attach_type,
    /// The rows of the escape table ([`crate::escapes::ESCAPES`]) this program closes.
    pub rows: &'static [u8],
}

const fn hook(
    name: &'static str,
    program: &'static str,
    kind: Kind,
    attach_type: bpf_attach_type,
    rows: &'static [u8],
) -> Hook {
    Hook {
        name,
        program,
        kind,
        attach_type,
        rows,
    }
}

impl Hook {
    /// A BPF LSM program (needs the BPF LSM active and lsm_cgroup, 6.0).
    pub fn is_lsm(&self) -> bool {
        matches!(self.kind, Kind::Lsm(_))
    }
}

/// Every program, in attach order.
pub const HOOKS: &[Hook] = &[
    hook(
        "sock_create",
        "bind_sock_create",
        Kind::Sock,
        A::BPF_CGROUP_INET_SOCK_CREATE,
        &[11, 8],
    ),
    hook(
        "setsockopt",
        "guard_setsockopt",
        Kind::Sockopt,
        A::BPF_CGROUP_SETSOCKOPT,
        &[1, 6],
    ),
    hook(
        "connect4",
        "guard_connect4",
        Kind::SockAddr,
        A::BPF_CGROUP_INET4_CONNECT,
        &[2, 4],
    ),
    hook(
        "connect6",
        "guard_connect6",
        Kind::SockAddr,
        A::BPF_CGROUP_INET6_CONNECT,
        &[2, 4],
    ),
    hook(
        "bind4",
        "guard_bind4",
        Kind::SockAddr,
        A::BPF_CGROUP_INET4_BIND,
        &[2, 4],
    ),
    hook(
        "bind6",
        "guard_bind6",
        Kind::SockAddr,
        A::BPF_CGROUP_INET6_BIND,
        &[2, 4],
    ),
    hook(
        "sendmsg4",
        "guard_sendmsg4",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP4_SENDMSG,
        &[2, 4],
    ),
    hook(
        "sendmsg6",
        "guard_sendmsg6",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP6_SENDMSG,
        &[2, 4],
    ),
    hook(
        "egress",
        "filter_egress",
        Kind::Skb,
        A::BPF_CGROUP_INET_EGRESS,
        &[3, 5, 9, 10],
    ),
    hook(
        "ingress",
        "filter_ingress",
        Kind::Skb,
        A::BPF_CGROUP_INET_INGRESS,
        &[3, 5],
    ),
    // From here on: BPF LSM, attached only where the BPF LSM is active.
    hook(
        "lsm_socket_create",
        "lsm_socket_create",
        Kind::Lsm("socket_create"),
        A::BPF_LSM_CGROUP,
        &[14],
    ),
    hook(
        "lsm_file_receive",
        "lsm_file_receive",
        Kind::Lsm("file_receive"),
        A::BPF_LSM_CGROUP,
        &[12],
    ),
    hook(
        "lsm_setsockopt",
        "lsm_socket_setsockopt",
        Kind::Lsm("socket_setsockopt"),
        A::BPF_LSM_CGROUP,
        &[7],
    ),
    hook(
        "lsm_uring_cmd",
        "lsm_uring_cmd",
        Kind::Lsm("uring_cmd"),
        A::BPF_LSM_CGROUP,
        &[7],
    ),
];

/// Index of the first BPF LSM hook in [`HOOKS`].
pub const LSM_HOOKS_START: usize = 10;

/// Socket families `--allow-family` knows by name (include/linux/socket.h).
pub const FAMILIES: &[(&str, u32)] = &[
    ("ax25", 3),
    ("ipx", 4),
    ("appletalk", 5),
    ("x25", 9),
    ("key", 15),
    ("packet", 17),
    ("rds", 21),
    ("llc", 26),
    ("can", 29),
    ("tipc", 30),
    ("bluetooth", 31),
    ("rxrpc", 33),
    ("ieee802154", 36),
    ("alg", 38),
    ("vsock", 40),
    ("kcm", 41),
    ("qipcrtr", 42),
    ("smc", 43),
    ("xdp", 44),
    ("mctp", 45),
];

/// Parses one `--allow-family` value: a name from [`FAMILIES`] or a number from 1 to 63.
pub fn parse_family(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let family = match FAMILIES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        Some((_, f)) => *f,
        None => match s.parse::<u32>() {
            Ok(n) if (1..64).contains(&n) => n,
            _ => {
                let names: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "'{}' is not a socket family; use one of {} or a number from 1 to 63",
                    crate::error::quote(s),
                    names.join(", ")
                ));
            }
        },
    };
    Ok(1u64 << family)
}

/// The names of the families in a `--allow-family` mask, for status.
pub fn family_names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|f| mask & (1u64 << f) != 0)
        .map(|f| {
            FAMILIES
                .iter()
                .find(|(_, n)| *n == f)
                .map_or_else(|| f.to_string(), |(n, _)| (*n).to_string())
        })
        .collect()
}

/// Parses a mark or priority: decimal or 0x hex, 0 to 2^32-1.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    parsed.map_err(|_| format!("'{s}' is not a number from 0 to 4294967295"))
}

/// What `attach` does with the sockets the cgroup's processes already hold (made before the
/// binding, or before they were moved in): the programs never see those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Leave them; `verify` reports them.
    #[default]
    Keep,
    /// Destroy (SOCK_DESTROY, as `ss -K`) every TCP/UDP socket not bound to the interface.
    Destroy,
}

impl std::str::FromStr for Existing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "keep" => Ok(Existing::Keep),
            "destroy" => Ok(Existing::Destroy),
            _ => Err(Error::InvalidInput {
                what: format!("--existing '{s}' is not known; use keep or destroy"),
            }),
        }
    }
}

/// The user's choices for a binding, before the interface is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub mark: Option<u32>,
    pub priority: Option<u32>,
    pub mode: Mode,
    pub allow_loopback: bool,
    /// Strict mode: extra socket families the cgroup may create (bit N = family N).
    pub allow_families: u64,
    pub existing: Existing,
    /// The binding comes from a config file (recorded in the policy for `apply --prune`).
    pub from_config: bool,
}

impl Options {
    /// Combinations that cannot mean what the user asked for.
    pub fn validate(&self) -> Result<(), Error> {
        if self.allow_families != 0 && self.mode == Mode::Bind {
            return Err(Error::InvalidInput {
                what: "--allow-family needs --mode strict (bind mode refuses no family)".into(),
            });
        }
        if self.allow_loopback && self.mode == Mode::Bind {
            return Err(Error::InvalidInput {
                what: "--allow-loopback needs --mode strict (its hooks move loopback connections to lo)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The policy value the programs read for `iface` and `opts` on the cgroup with id `cgroup_id`.
/// `lsm`: the BPF LSM programs are attached too.
pub fn policy_for(iface: &Interface, opts: &Options, cgroup_id: u64, lsm: bool) -> Policy {
    let mut f = 0;
    if opts.mark.is_some() {
        f |= flags::SET_MARK;
    }
    if opts.priority.is_some() {
        f |= flags::SET_PRIORITY;
    }
    if opts.allow_loopback {
        f |= flags::ALLOW_LOOPBACK;
    }
    if opts.mode == Mode::Strict {
        f |= flags::STRICT;
    }
    if opts.from_config {
        f |= flags::FROM_CONFIG;
    }
    if lsm && opts.mode == Mode::Strict {
        f |= flags::LSM;
    }
    Policy {
        netns_cookie: iface.netns_cookie,
        netns_ino: iface.netns_ino,
        object_hash: object_hash(),
        abi: ABI_VERSION,
        ifindex: iface.ifindex,
        mark: opts.mark.unwrap_or(0),
        priority: opts.priority.unwrap_or(0),
        flags: f,
        _pad: 0,
        ifname: netdev::name_bytes(&iface.name),
        families: opts.allow_families,
        cgroup_id,
    }
}

/// What `attach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// A new binding was pinned at this directory.
    Created(PathBuf),
    /// The existing binding's policy was rewritten in place.
    Updated(PathBuf),
    /// The existing binding was replaced by a new set of programs (mode or namespace changed).
    Replaced(PathBuf),
}

/// Refuses early, naming the capability, instead of failing deep inside bpf(2).
pub fn require_privileges(action: &'static str) -> Result<(), Error> {
    use caps::{CapSet, Capability};
    let eff = caps::read(None, CapSet::Effective).unwrap_or_default();
    let ok = eff.contains(&Capability::CAP_SYS_ADMIN)
        || (eff.contains(&Capability::CAP_BPF) && eff.contains(&Capability::CAP_NET_ADMIN));
    if ok {
        Ok(())
    } else {
        Err(Error::MissingPrivilege {
            action,
            caps: "CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN)",
        })
    }
}

/// Bindings are bpf_links (never legacy attachments, which unprivileged processes can detach
/// on 6.5+): probed, not read from the version.
fn require_bpf_link() -> Result<(), Error> {
    if crate::probe::have_cgroup_links() {
        return Ok(());
    }
    Err(Error::KernelTooOld {
        release: KernelVersion::current().map_or_else(|_| "unknown".into(), |v| v.to_string()),
    })
}

/// Binds every new socket of `cgroup` to `iface`. Re-attaching updates the binding without a
/// moment in which new sockets are unbound.
///
/// The programs come from the build's pinned set ([`crate::progset`]); only the first attach
/// after an install or upgrade loads (and verifies) them. A binding is the set's programs
/// linked to the cgroup plus the cgroup's policy in the set's storage, written *before* any
/// enforcing program is linked ([`crate::progset::Set::hold`]), so no socket ever meets a
/// zero policy.
pub fn attach(cgroup: &Cgroup, iface: &Interface, opts: &Options) -> anyhow::Result<Attached> {
    opts.validate()?;
    crate::cgroup::refuse_root(cgroup)?;
    require_privileges("attach")?;
    require_bpf_link()?;
    pins::ensure_bpffs()?;
    let lock = pins::lock()?;
    pins::sweep_abandoned(&lock);
    let set = progset::current(&lock)?;
    let forced_off = crate::lsm::forced_unavailable();
    let hooks = opts
        .mode
        .hooks(|h| set.has(h) && !(h.is_lsm() && forced_off));
    let lsm = hooks.iter().any(|h| h.is_lsm());
    let policy = policy_for(iface, opts, cgroup.id, lsm);
    let dir = pins::binding_dir(cgroup.id);
    let cgroup_fd = cgroup.open_dir()?;
    let cgroup_fd = cgroup_fd.as_fd();
    let on = if dir.exists() {
        progset::set_of_binding(&dir)
    } else {
        None
    };
    if on.as_ref().is_some_and(|on| on.hash == set.hash) {
        // The binding already runs this set's programs: the policy is rewritten in place (one
        // map write: each new socket sees the old policy or the new one); links the mode no
        // longer uses are dropped first and missing ones added after, so an interrupted
        // command leaves at worst a missing link (`status`: link-missing), never an unlisted
        // extra one. The same program cannot be linked twice to one cgroup, so this path
        // never makes a second set of links.
        let have = progset::binding_links(&dir);
        let mut changed = false;
        for (name, _) in &have {
            if !hooks.iter().any(|h| h.name == name) {
                let pin = dir.join(pins::link_name(name));
                fs::remove_file(&pin).with_context(|| format!("unpinning {}", pin.display()))?;
                changed = true;
            }
        }
        set.write_policy(cgroup.id, &policy)?;
        for &hook in &hooks {
            let linked = have
                .iter()
                .any(|(n, s)| n == hook.name && s.cgroup_id == Some(cgroup.id));
            if linked {
                continue;
            }
            let pin = dir.join(pins::link_name(hook.name));
            let _ = fs::remove_file(&pin);
            let link = set
                .link(hook, cgroup_fd)
                .with_context(|| format!("cgroup {}", cgroup.path.display()))?;
            crate::link::pin(link.as_fd(), &pin)
                .with_context(|| format!("pinning {}", pin.display()))?;
            changed = true;
        }
        set.add_user(cgroup.id)?;
        return Ok(if changed {
            Attached::Replaced(dir)
        } else {
            Attached::Updated(dir)
        });
    }
    // A new binding, or one running other programs (another build's set, or per-binding
    // programs of an older bindguard): make before break. The new links are pinned in a
    // staging directory and swapped in; the old programs go only after, so every socket meets
    // at least one binding (the later-linked programs run last and win).
    let staging = pins::Staging::new(cgroup.id, &lock)?;
    {
        let _hold = set
            .hold(cgroup_fd)
            .with_context(|| format!("linking to cgroup {}", cgroup.path.display()))?;
        set.write_policy(cgroup.id, &policy)?;
        for &hook in &hooks {
            let link = set
                .link(hook, cgroup_fd)
                .with_context(|| format!("cgroup {}", cgroup.path.display()))?;
            let path = staging.dir.join(pins::link_name(hook.name));
            crate::link::pin(link.as_fd(), &path)
                .with_context(|| format!("pinning {}", path.display()))?;
        }
    }
    set.add_user(cgroup.id)?;
    if !dir.exists() {
        return Ok(Attached::Created(staging.publish()?));
    }
    let old = staging.exchange()?;
    pins::remove_dir(&old)?;
    if let Some(on) = on {
        release(&on, cgroup.id);
    }
    Ok(Attached::Replaced(dir))
}

/// The binding of cgroup `id` no longer runs `old`'s programs: the set is unpinned when no
/// binding uses it any more, unless it is the running build's own (kept so the next attach
/// loads nothing).
fn release(old: &progset::Set, id: u64) {
    old.remove_user(id);
    if old.hash != object_hash() && !old.in_use() {
        if let Ok(set) = progset::Set::open(&old.dir) {
            let _ = set.remove();
        }
        progset::forget();
    }
}

/// The running build's program set, if pinned.
pub fn current_set() -> anyhow::Result<progset::Set> {
    progset::Set::open(&progset::root().join(progset::dir_name(object_hash())))
}

/// The policy of cgroup `cgroup_id` in the running build's program set: what [`attach`] just
/// wrote (cheaper than [`read_policy`], which first finds the set a binding's links run).
pub fn current_policy(cgroup_id: u64) -> anyhow::Result<Policy> {
    let dir = progset::root().join(progset::dir_name(object_hash()));
    let set = progset::Set::open(&dir)?;
    set.read_policy(cgroup_id).with_context(|| {
        format!(
            "reading the policy of cgroup {cgroup_id} in {}",
            dir.display()
        )
    })
}

/// Whether every link of `hooks` is pinned in `dir` and attached to cgroup `cgroup_id`.
pub fn links_complete(dir: &Path, cgroup_id: u64, hooks: &[&Hook]) -> bool {
    hooks.iter().all(|h| {
        crate::link::pinned_state(&dir.join(pins::link_name(h.name)))
            .is_ok_and(|s| s.cgroup_id == Some(cgroup_id))
    })
}

fn pinned_map(path: &Path) -> anyhow::Result<Map> {
    let data =
        MapData::from_pin(path).with_context(|| format!("opening pin {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("reading map {}", path.display()))
}

/// Whether `dir` is a binding made by a bindguard that loaded programs per binding.
pub fn legacy_layout(dir: &Path) -> bool {
    dir.join(pins::POLICY).exists()
}

fn cgroup_id_of(dir: &Path) -> anyhow::Result<u64> {
    pins::cgroup_id_of(dir).with_context(|| format!("{} is not a binding directory", dir.display()))
}

/// The policy of the binding pinned at `dir` (a binding directory): read from the program set
/// its links run, by cgroup id.
pub fn read_policy(dir: &Path) -> anyhow::Result<Policy> {
    if legacy_layout(dir) {
        let map: Array<_, Policy> = Array::try_from(pinned_map(&dir.join(pins::POLICY))?)?;
        return map.get(&0, 0).context("reading the policy");
    }
    let id = cgroup_id_of(dir)?;
    let set = progset::set_of_binding(dir)
        .with_context(|| format!("no link in {} runs a pinned program set", dir.display()))?;
    set.read_policy(id)
        .with_context(|| format!("reading the policy of cgroup {id} in {}", set.dir.display()))
}

/// The binding's counters, summed over CPUs.
pub fn read_counters(dir: &Path) -> anyhow::Result<Counters> {
    if legacy_layout(dir) {
        let map: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(pinned_map(&dir.join(pins::STATS))?)?;
        let per_cpu = map.get(&0, 0).context("reading the counters")?;
        return Ok(per_cpu.iter().fold(Counters::default(), |mut sum, c| {
            sum += *c;
            sum
        }));
    }
    let id = cgroup_id_of(dir)?;
    let set = progset::set_of_binding(dir)
        .with_context(|| format!("no link in {} runs a pinned program set", dir.display()))?;
    set.read_counters(id).with_context(|| {
        format!(
            "reading the counters of cgroup {id} in {}",
            set.dir.display()
        )
    })
}

/// The mode recorded in a policy.
pub fn mode_of(policy: &Policy) -> Mode {
    Mode::from_flags(policy.flags)
}

/// What `detach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detached {
    /// The binding of the cgroup was removed: the cgroup (absolute, symlinks resolved; `self`
    /// named) and the pin directory that held it.
    Removed { cgroup: PathBuf, pins: PathBuf },
    /// The cgroup no longer exists; this many bindings of deleted cgroups were cleaned up.
    Stale(usize),
}

/// Removes the binding of the cgroup at `arg`. If that cgroup no longer exists, removes the
/// leftovers of bindings whose cgroups were deleted (the kernel already detached them).
pub fn detach(arg: &Path) -> anyhow::Result<Detached> {
    require_privileges("detach")?;
    let cgroup = match crate::cgroup::resolve(arg) {
        Ok(c) => c,
        Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::CgroupMissing { .. })) => {
            let removed = remove_stale()?;
            return if removed > 0 {
                Ok(Detached::Stale(removed))
            } else {
                Err(e)
            };
        }
        Err(e) => return Err(e),
    };
    let dir = pins::binding_dir(cgroup.id);
    if !pins::bpffs_mounted() {
        return Err(Error::NotBound { path: cgroup.path }.into());
    }
    let lock = pins::lock()?;
    // Finishes an earlier attach or detach that was killed half-way.
    let interrupted = pins::abandoned_locked(&lock)
        .iter()
        .any(|(id, _)| *id == cgroup.id);
    pins::sweep_abandoned(&lock);
    if !dir.exists() {
        if interrupted {
            return Ok(Detached::Removed {
                cgroup: cgroup.path,
                pins: dir,
            });
        }
        return Err(Error::NotBound { path: cgroup.path }.into());
    }
    let on = progset::set_of_binding(&dir);
    pins::remove_binding(&dir, &lock)?;
    if let Some(on) = on {
        release(&on, cgroup.id);
    }
    Ok(Detached::Removed {
        cgroup: cgroup.path,
        pins: dir,
    })
}

/// Removes every binding whose cgroup is gone; returns how many.
///
/// The kernel detaches a removed cgroup's links asynchronously (cgroup_bpf_release runs from a
/// workqueue, ~10 ms here), so a binding whose cgroup directory has just disappeared is given
/// up to 2 s to be detached. Only the kernel's word (detached links) removes pins.
pub fn remove_stale() -> anyhow::Result<usize> {
    if !pins::bpffs_mounted() {
        return Ok(0);
    }
    let lock = pins::lock()?;
    pins::sweep_abandoned(&lock);
    let mut cgroups = crate::cgroup::Namer::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut removed = 0;
    // Old sets whose last binding went with its cgroup go too (after the loop, below).
    for (id, dir) in pins::list() {
        // A binding whose cgroup exists stays, decided without opening its links (poststop
        // runs this on every container stop, with thousands of bindings on the node).
        if cgroups.exists(id) {
            continue;
        }
        let mut gone = cgroup_gone(&dir);
        while !gone && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            gone = cgroup_gone(&dir);
        }
        if gone {
            pins::remove_dir(&dir)?;
            progset::forget_user(id);
            removed += 1;
        }
    }
    if removed > 0 {
        progset::remove_unused_old_sets(&lock);
    }
    Ok(removed)
}

/// A binding's cgroup is gone when the kernel has auto-detached its links.
pub fn cgroup_gone(dir: &Path) -> bool {
    let links: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
        })
        .collect();
    !links.is_empty()
        && links
            .iter()
            .all(|p| crate::link::pinned_state(p).is_ok_and(|s| s.cgroup_id.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_hash_is_the_embedded_objects() {
        let h = EBPF_OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(h, object_hash());
    }

    #[test]
    fn numbers_are_decimal_or_hex() {
        assert_eq!(parse_u32("42"), Ok(42));
        assert_eq!(parse_u32("0x2a"), Ok(42));
        assert_eq!(parse_u32("0X2A"), Ok(42));
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        for bad in ["", "-1", "4294967296", "0x", "x", "1.5", "0x1g"] {
            assert!(parse_u32(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn families_parse_by_name_or_number() {
        assert_eq!(parse_family("packet"), Ok(1 << 17));
        assert_eq!(parse_family("XDP"), Ok(1 << 44));
        assert_eq!(parse_family("40"), Ok(1 << 40));
        for bad in ["", "0", "64", "inet6x", "-1"] {
            assert!(parse_family(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(family_names((1 << 17) | (1 << 50)), ["packet", "50"]);
    }

    #[test]
    fn modes_parse_and_loopback_needs_strict() {
        assert_eq!("strict".parse::<Mode>().unwrap(), Mode::Strict);
        assert_eq!("bind".parse::<Mode>().unwrap(), Mode::Bind);
        assert_eq!("loose".parse::<Mode>().unwrap_err().exit_code(), 2);
        let opts = Options {
            mode: Mode::Bind,
            allow_loopback: true,
            ..Options::default()
        };
        assert!(opts.validate().is_err());
        assert!(Options::default().validate().is_ok());
        assert_eq!(Mode::Strict.hooks(|_| true).len(), HOOKS.len());
        assert_eq!(Mode::Strict.hooks(|h| !h.is_lsm()).len(), LSM_HOOKS_START);
        assert!(HOOKS[LSM_HOOKS_START].is_lsm());
        assert!(!HOOKS[LSM_HOOKS_START - 1].is_lsm());
        assert_eq!(Mode::Bind.hooks(|_| true), [&HOOKS[0]]);
        // Every hook closes some row, and every row it names exists.
        for h in HOOKS {
            assert!(
                h.rows.iter().all(|r| crate::escapes::row(*r).is_some()),
                "{}",
                h.name
            );
        }
    }

    #[test]
    fn policy_carries_the_options() {
        let iface = Interface {
            name: "eth3".into(),
            ifindex: 7,
            netns_cookie: 11,
            netns_ino: 13,
        };
        let p = policy_for(
            &iface,
            &Options {
                mark: Some(5),
                priority: None,
                mode: Mode::Strict,
                allow_loopback: true,
                allow_families: parse_family("packet").unwrap(),
                ..Options::default()
            },
            99,
            true,
        );
        assert_eq!((p.cgroup_id, p.families), (99, 1 << 17));
        assert!(p.has(flags::LSM));
        assert_eq!(
            (p.ifindex, p.netns_cookie, p.netns_ino, p.mark),
            (7, 11, 13, 5)
        );
        assert!(p.has(flags::SET_MARK) && !p.has(flags::SET_PRIORITY));
        assert!(p.has(flags::STRICT) && p.has(flags::ALLOW_LOOPBACK));
        assert_eq!(mode_of(&p), Mode::Strict);
        assert_eq!(netdev::name_from_bytes(&p.ifname), "eth3");
        assert_eq!(p.object_hash, object_hash());
    }
}
