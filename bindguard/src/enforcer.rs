//! Loading, filling, attaching and pinning one binding; changing and removing it.

use std::{
    fs,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{CgroupSkb, CgroupSock, CgroupSockAddr, CgroupSockopt, LsmCgroup, Program},
    util::KernelVersion,
};
use aya_obj::generated::bpf_attach_type::{self, self as A};
use bindguard_common::{ABI_VERSION, Counters, Policy, flags};

use crate::{
    Error,
    cgroup::Cgroup,
    netdev::{self, Interface},
    pins,
};

/// The eBPF object built from bindguard-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bindguard"));

/// FNV-1a of [`EBPF_OBJECT`]: identifies the programs a binding runs (computed once).
pub fn object_hash() -> u64 {
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HASH.get_or_init(|| {
        EBPF_OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    })
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

    /// The programs this mode attaches, sock_create first so that a binding exists before the
    /// guards that check it. `lsm`: whether the BPF LSM programs are part of it.
    pub fn hooks(self, lsm: bool) -> &'static [Hook] {
        match (self, lsm) {
            (Mode::Strict, true) => HOOKS,
            (Mode::Strict, false) => &HOOKS[..LSM_HOOKS_START],
            (Mode::Bind, _) => &HOOKS[..1],
        }
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
}

const fn hook(
    name: &'static str,
    program: &'static str,
    kind: Kind,
    attach_type: bpf_attach_type,
) -> Hook {
    Hook {
        name,
        program,
        kind,
        attach_type,
    }
}

/// Every program, in attach order.
pub const HOOKS: &[Hook] = &[
    hook(
        "sock_create",
        "bind_sock_create",
        Kind::Sock,
        A::BPF_CGROUP_INET_SOCK_CREATE,
    ),
    hook(
        "setsockopt",
        "guard_setsockopt",
        Kind::Sockopt,
        A::BPF_CGROUP_SETSOCKOPT,
    ),
    hook(
        "connect4",
        "guard_connect4",
        Kind::SockAddr,
        A::BPF_CGROUP_INET4_CONNECT,
    ),
    hook(
        "connect6",
        "guard_connect6",
        Kind::SockAddr,
        A::BPF_CGROUP_INET6_CONNECT,
    ),
    hook(
        "bind4",
        "guard_bind4",
        Kind::SockAddr,
        A::BPF_CGROUP_INET4_BIND,
    ),
    hook(
        "bind6",
        "guard_bind6",
        Kind::SockAddr,
        A::BPF_CGROUP_INET6_BIND,
    ),
    hook(
        "sendmsg4",
        "guard_sendmsg4",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP4_SENDMSG,
    ),
    hook(
        "sendmsg6",
        "guard_sendmsg6",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP6_SENDMSG,
    ),
    hook(
        "egress",
        "filter_egress",
        Kind::Skb,
        A::BPF_CGROUP_INET_EGRESS,
    ),
    hook(
        "ingress",
        "filter_ingress",
        Kind::Skb,
        A::BPF_CGROUP_INET_INGRESS,
    ),
    // From here on: BPF LSM, attached only where the BPF LSM is active.
    hook(
        "lsm_socket_create",
        "lsm_socket_create",
        Kind::Lsm("socket_create"),
        A::BPF_LSM_CGROUP,
    ),
    hook(
        "lsm_file_receive",
        "lsm_file_receive",
        Kind::Lsm("file_receive"),
        A::BPF_LSM_CGROUP,
    ),
    hook(
        "lsm_setsockopt",
        "lsm_socket_setsockopt",
        Kind::Lsm("socket_setsockopt"),
        A::BPF_LSM_CGROUP,
    ),
    hook(
        "lsm_uring_cmd",
        "lsm_uring_cmd",
        Kind::Lsm("uring_cmd"),
        A::BPF_LSM_CGROUP,
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

fn require_bpf_link() -> Result<(), Error> {
    match KernelVersion::current() {
        Ok(v) if v < KernelVersion::new(5, 7, 0) => Err(Error::KernelTooOld {
            release: v.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Binds every new socket of `cgroup` to `iface`. Re-attaching updates the binding without a
/// moment in which new sockets are unbound.
pub fn attach(cgroup: &Cgroup, iface: &Interface, opts: &Options) -> anyhow::Result<Attached> {
    opts.validate()?;
    crate::cgroup::refuse_root(cgroup)?;
    require_privileges("attach")?;
    require_bpf_link()?;
    pins::ensure_bpffs()?;
    let lock = pins::lock()?;
    pins::sweep_abandoned(&lock);
    let dir = pins::binding_dir(cgroup.id);
    // A re-attach that keeps the programs keeps their BPF LSM part as it is; only a new program
    // set asks the kernel whether LSM programs load (a BTF read and a test load).
    let current = read_policy(&dir).ok();
    let lsm = match current {
        Some(c) if dir.exists() && Mode::from_flags(c.flags) == opts.mode => c.has(flags::LSM),
        _ => opts.mode == Mode::Strict && crate::lsm::usable(true),
    };
    let policy = policy_for(iface, opts, cgroup.id, lsm);
    if !dir.exists() {
        let staged = create_or_without_lsm(cgroup, policy, opts.mode, &lock)?;
        return Ok(Attached::Created(staged.publish()?));
    }
    // A policy that cannot be read (pins damaged, or written by a bindguard with another
    // layout) is repaired by replacing the whole binding; so is one missing a link (removed
    // by hand, or by an interrupted command).
    let same_programs = current.is_some_and(|current| {
        Mode::from_flags(current.flags) == opts.mode
            && current.netns_cookie == policy.netns_cookie
            && current.abi == ABI_VERSION
            && current.object_hash == policy.object_hash
    }) && links_complete(&dir, cgroup.id, opts.mode.hooks(lsm));
    if same_programs {
        // One map write: each new socket sees the old policy or the new one.
        write_policy(&dir, &policy)?;
        return Ok(Attached::Updated(dir));
    }
    // Make before break: the new programs are attached before the old ones go, so every
    // socket meets at least one binding (the later-attached program runs last and wins).
    let staged = create_or_without_lsm(cgroup, policy, opts.mode, &lock)?;
    let old = staged.exchange()?;
    pins::remove_dir(&old)?;
    Ok(Attached::Replaced(dir))
}

/// Whether every link of `hooks` is pinned in `dir` and attached to cgroup `cgroup_id`.
pub fn links_complete(dir: &Path, cgroup_id: u64, hooks: &[Hook]) -> bool {
    hooks.iter().all(|h| {
        crate::link::pinned_state(&dir.join(pins::link_name(h.name)))
            .is_ok_and(|s| s.cgroup_id == Some(cgroup_id))
    })
}

/// The kernel's type information the BPF LSM programs need, read once per process.
struct KernelTypes {
    btf: aya::Btf,
    layout: bindguard_common::KernelLayout,
}

fn kernel_types() -> anyhow::Result<&'static KernelTypes> {
    static TYPES: std::sync::OnceLock<KernelTypes> = std::sync::OnceLock::new();
    if let Some(t) = TYPES.get() {
        return Ok(t);
    }
    let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF for the LSM programs")?;
    let layout = crate::btf::Btf::from_sys_fs()?.kernel_layout();
    let missing = crate::btf::missing_fields(&layout);
    if !missing.is_empty() {
        anyhow::bail!(
            "the kernel's BTF lacks {} needed by the strict-mode LSM programs",
            missing.join(", ")
        );
    }
    Ok(TYPES.get_or_init(|| KernelTypes { btf, layout }))
}

/// Why the BPF LSM programs were left out of the last binding this process made, if the kernel
/// refused them although it loads LSM programs (see [`create_or_without_lsm`]).
pub fn lsm_failure() -> Option<String> {
    LSM_FAILURE.lock().ok()?.clone()
}

static LSM_FAILURE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// [`create`], and if the BPF LSM programs are what failed, [`create`] again without them:
/// a binding missing those guards (reported as `lsm-unavailable`, the reason kept for
/// [`lsm_failure`]) protects more than no binding.
fn create_or_without_lsm(
    cgroup: &Cgroup,
    mut policy: Policy,
    mode: Mode,
    lock: &pins::Lock,
) -> anyhow::Result<pins::Staging> {
    match create(cgroup, &policy, mode, lock) {
        Err(e)
            if policy.has(flags::LSM)
                && (format!("{e:#}").contains("lsm_") || format!("{e:#}").contains("LSM")) =>
        {
            if let Ok(mut f) = LSM_FAILURE.lock() {
                *f = Some(format!("{e:#}"));
            }
            policy.flags &= !flags::LSM;
            create(cgroup, &policy, mode, lock)
        }
        other => other,
    }
}

/// Loads a fresh program instance for `policy`, attaches it to `cgroup` and pins it into a
/// staging directory.
fn create(
    cgroup: &Cgroup,
    policy: &Policy,
    mode: Mode,
    lock: &pins::Lock,
) -> anyhow::Result<pins::Staging> {
    let staging = pins::Staging::new(cgroup.id, lock)?;
    let lsm = policy.has(flags::LSM);
    let types = if lsm { Some(kernel_types()?) } else { None };
    let layout = types.map_or(bindguard_common::KernelLayout::UNKNOWN, |t| t.layout);
    let mut ebpf = EbpfLoader::new()
        .override_global("KERNEL", &layout, true)
        .load(EBPF_OBJECT)
        .context("loading bindguard's eBPF object")?;
    {
        let mut map: Array<_, Policy> = Array::try_from(named_map(&mut ebpf, "POLICY")?)?;
        map.set(0, policy, 0).context("writing the policy")?;
    }
    for (name, pin) in [
        ("POLICY", pins::POLICY),
        ("STATS", pins::STATS),
        ("EVENTS", pins::EVENTS),
    ] {
        let path = staging.dir.join(pin);
        named_map(&mut ebpf, name)?
            .pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
    }
    let cgroup_fd = cgroup.open_dir()?;
    for hook in mode.hooks(lsm) {
        let program = ebpf
            .program_mut(hook.program)
            .with_context(|| format!("program {} missing from the eBPF object", hook.program))?;
        let link = attach_program(program, hook, &cgroup_fd, types.map(|t| &t.btf)).with_context(
            || {
                format!(
                    "attaching {} to cgroup {}",
                    hook.program,
                    cgroup.path.display()
                )
            },
        )?;
        let path = staging.dir.join(pins::link_name(hook.name));
        crate::link::pin(link.as_fd(), &path)
            .with_context(|| format!("pinning {}", path.display()))?;
    }
    Ok(staging)
}

/// Loads `program` and attaches it to the cgroup with a bpf_link (never a legacy attach).
fn attach_program(
    program: &mut Program,
    hook: &Hook,
    cgroup_fd: &fs::File,
    btf: Option<&aya::Btf>,
) -> anyhow::Result<OwnedFd> {
    macro_rules! load {
        ($ty:ty) => {{
            let p: &mut $ty = program.try_into()?;
            p.load().context("loading (verifier)")?;
            p.fd()?.as_fd().try_clone_to_owned()?
        }};
    }
    let prog_fd = match hook.kind {
        Kind::Sock => load!(CgroupSock),
        Kind::Sockopt => load!(CgroupSockopt),
        Kind::SockAddr => load!(CgroupSockAddr),
        Kind::Skb => load!(CgroupSkb),
        Kind::Lsm(lsm_hook) => {
            let p: &mut LsmCgroup = program.try_into()?;
            let btf = btf.context("the LSM programs need the kernel's BTF")?;
            p.load(lsm_hook, btf).context("loading (verifier)")?;
            p.fd()?.as_fd().try_clone_to_owned()?
        }
    };
    crate::link::create_cgroup_link(prog_fd.as_fd(), cgroup_fd.as_fd(), hook.attach_type)
        .context("BPF_LINK_CREATE")
}

fn named_map<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

fn pinned_map(path: &Path) -> anyhow::Result<Map> {
    let data =
        MapData::from_pin(path).with_context(|| format!("opening pin {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("reading map {}", path.display()))
}

/// The policy pinned in a binding directory.
pub fn read_policy(dir: &Path) -> anyhow::Result<Policy> {
    let map: Array<_, Policy> = Array::try_from(pinned_map(&dir.join(pins::POLICY))?)?;
    map.get(&0, 0).context("reading the policy")
}

fn write_policy(dir: &Path, policy: &Policy) -> anyhow::Result<()> {
    let mut map: Array<_, Policy> = Array::try_from(pinned_map(&dir.join(pins::POLICY))?)?;
    map.set(0, policy, 0).context("writing the policy")
}

/// The binding's counters, summed over CPUs.
pub fn read_counters(dir: &Path) -> anyhow::Result<Counters> {
    let map: PerCpuArray<_, Counters> = PerCpuArray::try_from(pinned_map(&dir.join(pins::STATS))?)?;
    let per_cpu = map.get(&0, 0).context("reading the counters")?;
    Ok(per_cpu.iter().fold(Counters::default(), |mut sum, c| {
        sum += *c;
        sum
    }))
}

/// The mode recorded in a policy.
pub fn mode_of(policy: &Policy) -> Mode {
    Mode::from_flags(policy.flags)
}

/// What `detach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detached {
    /// The binding of the cgroup was removed.
    Removed(PathBuf),
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
    let interrupted = pins::abandoned().iter().any(|(id, _)| *id == cgroup.id);
    pins::sweep_abandoned(&lock);
    if !dir.exists() {
        if interrupted {
            return Ok(Detached::Removed(dir));
        }
        return Err(Error::NotBound { path: cgroup.path }.into());
    }
    pins::remove_binding(&dir, &lock)?;
    Ok(Detached::Removed(dir))
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
    let live = crate::cgroup::cgroup2_mount()
        .map(|m| crate::cgroup::paths_by_id(&m))
        .unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut removed = 0;
    for (id, dir) in pins::list() {
        let mut gone = cgroup_gone(&dir);
        while !gone && !live.contains_key(&id) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            gone = cgroup_gone(&dir);
        }
        if gone {
            pins::remove_dir(&dir)?;
            removed += 1;
        }
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
        assert_eq!(Mode::Strict.hooks(true).len(), HOOKS.len());
        assert_eq!(Mode::Strict.hooks(false).len(), LSM_HOOKS_START);
        assert!(matches!(HOOKS[LSM_HOOKS_START].kind, Kind::Lsm(_)));
        assert!(!matches!(HOOKS[LSM_HOOKS_START - 1].kind, Kind::Lsm(_)));
        assert_eq!(Mode::Bind.hooks(true), &HOOKS[..1]);
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
