//! The shared program set: bindguard's programs loaded and verified once per build and pinned,
//! so that a binding is only links plus its policy.
//!
//! ```text
//! /sys/fs/bpf/bindguard/programs/<object-hash>/prog_<hook>   one program per hook (+ prog_hold)
//!                                              policy        cgroup storage: Policy per cgroup
//!                                              stats         per-CPU cgroup storage: Counters
//!                                              events        ring buffer shared by all bindings
//!                                              users/<id>    one empty dir per binding on it
//!                                              build-<major>_<minor>_<patch>-<commit time>
//!                                                            each build that used it ([`Rank`])
//!                                              absent/<hook>/<why>  a program this kernel
//!                                                            cannot run, and why ([`Why`])
//! ```
//! A set holds every program the kernel accepted when it was loaded; what it could not load
//! is recorded under `absent/`, so `attach`, `status` and `verify` know which escape rows
//! are open on this kernel without probing again (`doctor` probes and says how to close
//! them).
//! A set is created under the pins lock in `programs/new-<hash>-<pid>` and renamed into place,
//! so a kill at any moment leaves a whole set or a staging dir the next command removes. Sets of
//! other builds (other object hashes) live beside it; a set other than the running build's is
//! removed once no binding uses it.
//!
//! Per-binding values live in cgroup storage keyed by the bare cgroup id (8-byte key: one value
//! per cgroup, shared by all attach types). The kernel creates a cgroup's storage when the first
//! program using the map is linked to it and frees it with the cgroup, not with the link; that
//! is what [`Set::hold`] relies on to write a policy before any enforcing program runs.

use std::{
    collections::HashMap,
    fs,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::Context as _;
use aya::{
    EbpfLoader,
    programs::{CgroupSkb, CgroupSock, CgroupSockAddr, CgroupSockopt, LsmCgroup, Program},
};
use aya_obj::generated::{bpf_cmd, bpf_map_info, bpf_prog_info};
use bindguard_common::{Counters, KernelLayout, Policy};

use crate::kernel::{
    Error,
    hooks::{self, Hook, Kind},
    link,
    pins::{
        self,
        names::{self, BindingPin, Build, LegacyPin, RootEntry, SetEntry, SetMap, SetsEntry, User},
    },
};

/// A build's place in the upgrade order: two daemons of different builds (an upgrade overlap)
/// agree on which one's programs a binding should run — the newer build's — so the older one
/// leaves such bindings alone instead of replacing them back (each would otherwise unpin the
/// other's set forever). Crate version first, then the commit time, then the object hash
/// (only so that two builds of one commit still agree). A set pinned by a build that
/// recorded no rank ranks below every build that does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    pub version: (u64, u64, u64),
    pub commit_time: u64,
    pub object_hash: u64,
}

impl Rank {
    /// The running build's.
    pub fn own() -> Self {
        let mut v = env!("CARGO_PKG_VERSION")
            .split(['.', '-', '+'])
            .map(|p| p.parse::<u64>().unwrap_or(0));
        Self {
            version: (
                v.next().unwrap_or(0),
                v.next().unwrap_or(0),
                v.next().unwrap_or(0),
            ),
            commit_time: env!("BINDGUARD_COMMIT_TIME").parse().unwrap_or(0),
            object_hash: hooks::object_hash(),
        }
    }

    /// The set directory entry that records it.
    fn entry(&self) -> String {
        SetEntry::Build(Build {
            version: self.version,
            commit_time: self.commit_time,
        })
        .to_string()
    }

    /// Records in set directory `dir` (this build's own set) that this build uses it: builds
    /// with one object share a set, and the set ranks as the newest of them.
    fn raise(&self, dir: &Path) {
        if Self::of_set(dir, self.object_hash) < *self {
            let _ = fs::create_dir(dir.join(self.entry()));
        }
    }

    /// The rank recorded in set directory `dir` (of the object with hash `hash`): the newest
    /// build that used it.
    fn of_set(dir: &Path, hash: u64) -> Self {
        let recorded = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| match SetEntry::parse(e.file_name().to_str()?)? {
                SetEntry::Build(b) => Some((b.version, b.commit_time)),
                _ => None,
            })
            .max();
        let (version, commit_time) = recorded.unwrap_or(((0, 0, 0), 0));
        Self {
            version,
            commit_time,
            object_hash: hash,
        }
    }
}

impl std::fmt::Display for Rank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, c) = self.version;
        write!(
            f,
            "{a}.{b}.{c}, commit time {}, ebpf {:016x}",
            self.commit_time, self.object_hash
        )
    }
}

/// /sys/fs/bpf/bindguard/programs
pub fn root() -> PathBuf {
    pins::root().join(RootEntry::Programs.to_string())
}

/// Directory name of the set of the object with this hash.
pub fn dir_name(hash: u64) -> String {
    SetsEntry::Set(hash).to_string()
}

/// The hash of the set directory named `name` (None: not a set, or one being loaded).
fn hash_of(name: &std::ffi::OsStr) -> Option<u64> {
    match SetsEntry::parse(name.to_str()?)? {
        SetsEntry::Set(hash) => Some(hash),
        SetsEntry::Staging { .. } => None,
    }
}

fn is_staging(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(SetsEntry::parse)
        .is_some_and(|e| matches!(e, SetsEntry::Staging { .. }))
}

/// The `users/` directory of the set at `dir`.
fn users(dir: &Path) -> PathBuf {
    dir.join(SetEntry::Users.to_string())
}

/// The entry in the set at `dir` that records the binding of cgroup `id` as a user.
fn user(dir: &Path, id: u64) -> PathBuf {
    users(dir).join(User(id).to_string())
}

/// One pinned program set, with its per-binding maps open.
#[derive(Debug)]
pub struct Set {
    pub hash: u64,
    pub dir: PathBuf,
    /// The hooks whose programs the set holds ([`Hook::bit`]).
    present: u64,
    /// What the loader left out, read once per opened set: `status` asks it for every
    /// binding (10 directory reads each, 4x the whole command at 10,000 bindings), and a
    /// published set's `absent/` never changes.
    absent: std::sync::OnceLock<Vec<(Hook, Why)>>,
    policy: OwnedFd,
    stats: OwnedFd,
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn map_elem(cmd: bpf_cmd, map: BorrowedFd<'_>, key: &u64, value: *mut u8) -> std::io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: (key as *const u64) as u64,
        value: value as u64,
        flags: 0, // BPF_ANY: cgroup storage is only ever updated in place (ENOENT otherwise)
    };
    link::sys_bpf(cmd, &mut attr).map(|_| ())
}

/// Number of possible CPUs: per-CPU values come back as one slot per possible CPU.
fn possible_cpus() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| aya::util::nr_cpus().unwrap_or(1))
}

/// Key and value size of the map behind `fd`.
fn map_sizes(fd: BorrowedFd<'_>) -> std::io::Result<(u32, u32)> {
    // SAFETY: a map's fd, read as bpf_map_info.
    let info: bpf_map_info = unsafe { link::info_by_fd(fd)? };
    Ok((info.key_size, info.value_size))
}

/// The id of the program behind `fd`.
pub fn program_id(fd: BorrowedFd<'_>) -> std::io::Result<u32> {
    // SAFETY: a program's fd, read as bpf_prog_info.
    let info: bpf_prog_info = unsafe { link::info_by_fd(fd)? };
    Ok(info.id)
}

impl Set {
    /// Opens the set pinned at `dir` (named by its hash).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let hash = dir
            .file_name()
            .and_then(hash_of)
            .with_context(|| format!("{} is not a program set", dir.display()))?;
        // The kernel copies the map's value size into the buffer a lookup is given: a set of a
        // build with another Policy or Counters layout is refused here, never read into ours.
        let open = |map: SetMap, value: usize| -> Result<OwnedFd, Error> {
            let path = dir.join(map.to_string());
            let fd = match link::open_pinned(&path) {
                Ok(fd) => fd,
                Err(source) => return Err(Error::OpenPin { path, source }),
            };
            let found = match map_sizes(fd.as_fd()) {
                Ok(sizes) => sizes,
                Err(source) => return Err(Error::Info { path, source }),
            };
            let value = value as u32;
            if found != (8, value) {
                return Err(Error::MapLayout { path, found, value });
            }
            Ok(fd)
        };
        Ok(Self {
            hash,
            dir: dir.to_path_buf(),
            present: present_hooks(dir),
            absent: std::sync::OnceLock::new(),
            policy: open(SetMap::Policy, std::mem::size_of::<Policy>())?,
            stats: open(SetMap::Stats, std::mem::size_of::<Counters>())?,
        })
    }

    /// The build that loaded this set.
    pub fn rank(&self) -> Rank {
        Rank::of_set(&self.dir, self.hash)
    }

    /// Whether the set holds the program of `hook` (the kernel loaded it).
    pub fn has(&self, hook: Hook) -> bool {
        self.present & hook.bit() != 0
    }

    /// The escape rows strict mode leaves open with this set's programs, of which a binding
    /// links those `linked` allows (one the kernel does not need, such as the io_uring guard
    /// before io_uring has setsockopt, leaves none).
    pub fn open_rows(
        &self,
        linked: impl Fn(Hook) -> bool,
    ) -> Vec<(&'static crate::kernel::escapes::Escape, Vec<Hook>)> {
        let absent = self.absent();
        crate::kernel::escapes::open_rows(|h| {
            (self.has(h) && linked(h))
                || absent.iter().any(|(a, w)| *a == h && *w == Why::NotNeeded)
        })
    }

    /// Why the set lacks the programs it lacks, as the loader recorded it.
    pub fn absent(&self) -> Vec<(Hook, Why)> {
        self.absent.get_or_init(|| absent_hooks(&self.dir)).clone()
    }

    /// Why the BPF LSM was not usable when this set was loaded, as the loader recorded it
    /// with the programs it left out (None: usable, or a set of a build that did not record
    /// it).
    pub fn lsm_state(&self) -> Option<crate::kernel::lsm::State> {
        fs::read_dir(self.dir.join(SetEntry::Absent.to_string()))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|h| fs::read_dir(h.path()).into_iter().flatten().flatten())
            .find_map(|w| crate::kernel::lsm::State::from_code(w.file_name().to_str()?, false))
    }

    /// The pinned program of `hook`.
    pub fn program(&self, hook: &str) -> Result<OwnedFd, Error> {
        let path = self.dir.join(names::prog(hook));
        link::open_pinned(&path).map_err(|source| Error::OpenPin { path, source })
    }

    /// Every program id of the set.
    pub fn program_ids(&self) -> Vec<u32> {
        self.programs().into_iter().map(|(_, id)| id).collect()
    }

    /// Every program of the set: (hook name, program id).
    pub fn programs(&self) -> Vec<(String, u32)> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let hook = names::parse_prog(e.file_name().to_str()?)?.to_string();
                let fd = link::open_pinned(&e.path()).ok()?;
                Some((hook, program_id(fd.as_fd()).ok()?))
            })
            .collect()
    }

    /// The cgroup ids of the bindings recorded as running this set (`users/<id>`): one
    /// directory listing. An entry can outlive its binding or precede it (an interrupted
    /// command), so callers check it against the binding's pins.
    pub fn users(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        let Ok(fd) = rustix::fs::open(users(&self.dir), DIR_FLAGS, rustix::fs::Mode::empty())
        else {
            return ids;
        };
        // Thousands of entries: listed in large getdents calls, parsed without allocating.
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut dir = rustix::fs::RawDir::new(fd, &mut buf);
        while let Some(Ok(entry)) = dir.next() {
            if let Some(User(id)) = std::str::from_utf8(entry.file_name().to_bytes())
                .ok()
                .and_then(User::parse)
            {
                ids.push(id);
            }
        }
        ids
    }

    /// Links the set's storage-holding program to `cgroup`: from then on the cgroup has its
    /// (zeroed) policy and counters in this set, and [`Set::write_policy`] works, while no
    /// enforcing program of the set runs yet. The storage outlives the returned link.
    pub fn hold(&self, cgroup: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
        self.link(Hook::Hold, cgroup)
    }

    /// Links the program of `hook` to `cgroup`.
    pub fn link(&self, hook: Hook, cgroup: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
        let prog = self.program(hook.name())?;
        link::create_cgroup_link(prog.as_fd(), cgroup, hook.attach_type()).map_err(|source| {
            Error::Link {
                program: hook.program(),
                source,
            }
        })
    }

    /// Writes the policy of cgroup `cgroup_id`: one map update, so every socket sees the old
    /// policy or the new one. Fails (ENOENT) if no program of the set is linked to the cgroup.
    pub fn write_policy(&self, cgroup_id: u64, policy: &Policy) -> Result<(), Error> {
        let mut value = *policy;
        map_elem(
            bpf_cmd::BPF_MAP_UPDATE_ELEM,
            self.policy.as_fd(),
            &cgroup_id,
            (&mut value as *mut Policy).cast(),
        )
        .map_err(|source| Error::WritePolicy {
            cgroup_id,
            set: self.dir.clone(),
            source,
        })
    }

    /// The policy of cgroup `cgroup_id` (all zero until written).
    pub fn read_policy(&self, cgroup_id: u64) -> std::io::Result<Policy> {
        let mut value = Policy::default();
        map_elem(
            bpf_cmd::BPF_MAP_LOOKUP_ELEM,
            self.policy.as_fd(),
            &cgroup_id,
            (&mut value as *mut Policy).cast(),
        )?;
        Ok(value)
    }

    /// The counters of cgroup `cgroup_id`, summed over CPUs.
    pub fn read_counters(&self, cgroup_id: u64) -> std::io::Result<Counters> {
        let slot = std::mem::size_of::<Counters>().next_multiple_of(8);
        let size = slot * possible_cpus();
        // On the stack for up to 32 CPUs (`status` reads one per binding).
        let mut stack = [0u8; 4096];
        let mut heap = Vec::new();
        let buf = if size <= stack.len() {
            &mut stack[..size]
        } else {
            heap.resize(size, 0u8);
            &mut heap[..]
        };
        map_elem(
            bpf_cmd::BPF_MAP_LOOKUP_ELEM,
            self.stats.as_fd(),
            &cgroup_id,
            buf.as_mut_ptr(),
        )?;
        Ok(buf.chunks(slot).fold(Counters::default(), |mut sum, c| {
            // SAFETY: each slot holds one Counters (plain u64s); read_unaligned copes with the
            // Vec<u8>'s alignment.
            sum += unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<Counters>()) };
            sum
        }))
    }

    /// Records that the binding of cgroup `id` runs this set's programs.
    pub fn add_user(&self, id: u64) -> anyhow::Result<()> {
        let p = user(&self.dir, id);
        match fs::create_dir(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(e).with_context(|| format!("creating {}", p.display()))
            }
            _ => Ok(()),
        }
    }

    pub fn remove_user(&self, id: u64, _lock: &pins::Lock) {
        let _ = fs::remove_dir(user(&self.dir, id));
    }

    /// Whether some binding still links this set's programs. Entries of bindings that moved
    /// away, were detached by an interrupted command or whose cgroup is gone are dropped on the
    /// way (hence the lock's token); the first live one ends the search.
    pub fn in_use(&self, _lock: &pins::Lock) -> bool {
        let ids = self.program_ids();
        for entry in fs::read_dir(users(&self.dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Some(User(id)) = entry.file_name().to_str().and_then(User::parse) else {
                continue;
            };
            let dir = pins::binding_dir(id);
            let live = binding_links(&dir)
                .iter()
                .any(|(_, s)| s.cgroup_id == Some(id) && ids.contains(&s.program_id));
            if live {
                return true;
            }
            let _ = fs::remove_dir(entry.path());
        }
        false
    }

    /// Unpins the set. Programs still linked somewhere keep running until their links go.
    pub fn remove(self, lock: &pins::Lock) -> anyhow::Result<()> {
        let Self { dir, .. } = self;
        remove_set_dir(&dir, lock)
    }
}

/// Which hooks have a program pinned in the set at `dir` (one listing), as [`Hook::bit`]s.
fn present_hooks(dir: &Path) -> u64 {
    let mut bits = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Some(hook) = e.file_name().to_str().and_then(names::parse_prog)
            && let Some(hook) = Hook::from_name(hook)
        {
            bits |= hook.bit();
        }
    }
    bits
}

/// Why a program of the set could not be loaded on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The kernel lacks what the program guards (io_uring setsockopt before 6.7): the row
    /// it closes cannot happen here.
    NotNeeded,
    /// The BPF LSM is not active or lsm_cgroup is missing (the reason in words).
    LsmUnavailable,
    /// The kernel's BTF lacks fields the program reads.
    BtfLacks,
    /// The kernel refused the program (verifier or attach type).
    Refused,
    /// The kernel has no such hook ([`Hook::needs`]): a newer kernel closes the row.
    KernelLacks,
}

impl Why {
    fn code(&self) -> &'static str {
        match self {
            Why::NotNeeded => "not-needed",
            Why::LsmUnavailable => "lsm-unavailable",
            Why::BtfLacks => "btf-lacks",
            Why::Refused => "refused",
            Why::KernelLacks => "kernel-lacks",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        [
            Why::NotNeeded,
            Why::LsmUnavailable,
            Why::BtfLacks,
            Why::Refused,
            Why::KernelLacks,
        ]
        .into_iter()
        .find(|w| w.code() == code)
    }
}

fn absent_hooks(dir: &Path) -> Vec<(Hook, Why)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join(SetEntry::Absent.to_string()))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Some(hook) = e.file_name().to_str().and_then(Hook::from_name) else {
            continue;
        };
        let why = fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|w| Why::from_code(w.file_name().to_str()?))
            .unwrap_or(Why::Refused);
        out.push((hook, why));
    }
    out
}

fn remove_set_dir(dir: &Path, lock: &pins::Lock) -> anyhow::Result<()> {
    for e in fs::read_dir(dir.join(SetEntry::Absent.to_string()))
        .into_iter()
        .flatten()
        .flatten()
    {
        for w in fs::read_dir(e.path()).into_iter().flatten().flatten() {
            let _ = fs::remove_dir(w.path());
        }
        let _ = fs::remove_dir(e.path());
    }
    let _ = fs::remove_dir(dir.join(SetEntry::Absent.to_string()));
    let users = users(dir);
    for e in fs::read_dir(&users).into_iter().flatten().flatten() {
        let _ = fs::remove_dir(e.path());
    }
    let _ = fs::remove_dir(&users);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let build = e
            .file_name()
            .to_str()
            .and_then(SetEntry::parse)
            .is_some_and(|e| matches!(e, SetEntry::Build(_)));
        if build {
            let _ = fs::remove_dir(e.path());
        }
    }
    pins::remove_dir(dir, lock)
}

/// The link pins of a binding directory and what the kernel says about each (pins that cannot
/// be opened are left out).
pub fn binding_links(dir: &Path) -> Vec<(String, link::LinkState)> {
    read_binding_dir(dir)
        .0
        .into_iter()
        .filter_map(|(name, state)| Some((name, state.ok()?)))
        .collect()
}

/// Every link pin of a binding directory (by hook name) with what the kernel says about it,
/// and whether the directory has a `policy` pin of its own (a binding made by a bindguard that
/// loaded programs per binding), from one directory listing.
pub fn read_binding_dir(dir: &Path) -> (Vec<(String, std::io::Result<link::LinkState>)>, bool) {
    let (names, legacy) = binding_pins(dir);
    let links = names
        .into_iter()
        .map(|name| {
            let state = link::pinned_state(&dir.join(names::link(&name)));
            (name, state)
        })
        .collect();
    (links, legacy)
}

/// The hook names of a binding directory's link pins and whether it has a `policy` pin of its
/// own, from one directory listing.
pub fn binding_pins(dir: &Path) -> (Vec<String>, bool) {
    let mut names = Vec::new();
    let legacy = match rustix::fs::open(dir, DIR_FLAGS, rustix::fs::Mode::empty()) {
        Ok(fd) => list_pins(fd, |hook| names.push(hook.to_string())),
        Err(_) => false,
    };
    (names, legacy)
}

/// Calls `f` with the hook name of each link pin of the binding directory `name` in `parent`
/// (the pins root, opened once: one path component to look up instead of the whole path from
/// `/`); returns whether the directory has a `policy` pin of its own. No link is opened
/// (opening one is a path walk and an fd, which at 10,000 bindings is most of what `status`
/// costs), nothing is allocated.
pub fn binding_pins_at(parent: BorrowedFd<'_>, name: &str, f: impl FnMut(&str)) -> bool {
    match rustix::fs::openat(parent, name, DIR_FLAGS, rustix::fs::Mode::empty()) {
        Ok(fd) => list_pins(fd, f),
        Err(_) => false,
    }
}

const DIR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::CLOEXEC);

/// Lists a binding directory with getdents into a stack buffer (a dozen entries fit; more
/// only cost another call).
fn list_pins(fd: OwnedFd, mut f: impl FnMut(&str)) -> bool {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    let mut dir = rustix::fs::RawDir::new(fd, &mut buf);
    let mut legacy = false;
    while let Some(Ok(entry)) = dir.next() {
        match std::str::from_utf8(entry.file_name().to_bytes())
            .ok()
            .and_then(BindingPin::parse)
        {
            Some(BindingPin::Link(hook)) => f(hook),
            Some(BindingPin::Legacy(LegacyPin::Policy)) => legacy = true,
            _ => {}
        }
    }
    legacy
}

/// Unpins every set of another build that no binding uses any more (after bindings were
/// removed without moving off their set: deleted cgroups, exec and oci-hook cleanup). The
/// running build's set is kept. Call with the pins lock held.
pub fn remove_unused_old_sets(lock: &pins::Lock) {
    let current = dir_name(hooks::object_hash());
    for dir in list() {
        if dir.file_name().is_some_and(|n| *n == *current) {
            continue;
        }
        if let Ok(set) = Set::open(&dir)
            && !set.in_use(lock)
        {
            let _ = set.remove(lock);
            forget();
        }
    }
}

/// Drops the `users/<id>` entry of cgroup `id` from every set: for callers that remove a
/// binding's pins without a detach (exec and oci-hook cleanup, stale bindings). An entry left
/// behind only costs an inode, and delays removing an old set.
pub fn forget_user(id: u64, _lock: &pins::Lock) {
    for dir in list() {
        let _ = fs::remove_dir(user(&dir, id));
    }
}

/// The directories of every pinned set.
pub fn list() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !is_staging(&e.file_name()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Which set a program id belongs to; built from the pins on first use and rebuilt when an id
/// is not found (a set created since).
#[derive(Default)]
struct Index {
    by_program: HashMap<u32, u64>,
    sets: HashMap<u64, std::sync::Arc<Set>>,
}

static INDEX: Mutex<Option<Index>> = Mutex::new(None);

fn scan() -> Index {
    let mut index = Index::default();
    for dir in list() {
        let Ok(set) = Set::open(&dir) else { continue };
        for id in set.program_ids() {
            index.by_program.insert(id, set.hash);
        }
        index.sets.insert(set.hash, std::sync::Arc::new(set));
    }
    index
}

/// The pinned set the program with id `program_id` belongs to.
pub fn set_of_program(program_id: u32) -> Option<std::sync::Arc<Set>> {
    let mut guard = INDEX.lock().unwrap_or_else(|e| e.into_inner());
    let find = |i: &Index| {
        i.by_program
            .get(&program_id)
            .and_then(|h| i.sets.get(h).cloned())
    };
    if let Some(found) = guard.as_ref().and_then(find) {
        return Some(found);
    }
    let index = scan();
    let found = find(&index);
    *guard = Some(index);
    found
}

/// Forgets what [`set_of_program`] and [`set_of_binding`] learnt (after a set was created or
/// removed).
pub fn forget() {
    *INDEX.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The running build's set once opened by [`set_of_binding`], and its program ids by hook as
/// asked: a process that looks at many bindings (`apply`, the daemon) opens it once.
static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// The running build's set and its program ids by hook name (None: no such program).
type Current = (std::sync::Arc<Set>, HashMap<String, Option<u32>>);

/// The set a binding directory's links run, if it is a pinned set (None for a binding made by
/// an older bindguard that loaded programs per binding, or one whose set was removed).
/// The newest rank of the sets that record cgroup `id` as a user (`users/<id>`), without
/// opening their maps: a set of a build with another map layout is ranked too. A binding
/// being moved is listed by both sets for a moment; the newer one is where it is going.
pub fn rank_of_binding(id: u64) -> Option<Rank> {
    list()
        .into_iter()
        .filter_map(|d| {
            if !user(&d, id).exists() {
                return None;
            }
            let hash = hash_of(d.file_name()?)?;
            Some(Rank::of_set(&d, hash))
        })
        .max()
}

pub fn set_of_binding(dir: &Path) -> Option<std::sync::Arc<Set>> {
    // One link tells: a binding's links all come from one set (attach keeps it so).
    let (name, state) = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let name = names::parse_link(e.file_name().to_str()?)?.to_string();
            Some((name, link::pinned_state(&e.path()).ok()?))
        })?;
    // Usually the running build's set: asking its program of the same hook is two calls,
    // where finding the set among all of them opens every pinned program.
    let current = root().join(dir_name(hooks::object_hash()));
    let mut cached = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if cached.is_none()
        && let Ok(set) = Set::open(&current)
    {
        *cached = Some((std::sync::Arc::new(set), HashMap::new()));
    }
    if let Some((set, ids)) = cached.as_mut() {
        let id = *ids.entry(name).or_insert_with_key(|name| {
            link::open_pinned(&current.join(names::prog(name)))
                .ok()
                .and_then(|fd| program_id(fd.as_fd()).ok())
        });
        if id == Some(state.program_id) {
            return Some(set.clone());
        }
    }
    drop(cached);
    set_of_program(state.program_id)
}

/// The running build's set: opened if pinned, else loaded, verified and pinned (the only step
/// that parses the kernel's BTF), with what that load left out (empty when the set was
/// already pinned: its `absent/` records say why). Call with the pins lock held.
pub fn current(lock: &pins::Lock) -> anyhow::Result<(Set, Vec<LeftOut>)> {
    // Linking a cgroup allocates its storage, charged to RLIMIT_MEMLOCK before 5.11.
    crate::kernel::probe::raise_memlock();
    let dir = root().join(dir_name(hooks::object_hash()));
    // A set is renamed into place whole, so an existing directory is a complete set.
    if dir.exists() {
        Rank::own().raise(&dir);
        return Ok((Set::open(&dir)?, Vec::new()));
    }
    let left_out = load(&dir, lock)?;
    forget();
    Ok((Set::open(&dir)?, left_out))
}

/// Removes set staging directories left by a load that was killed (with the lock held, any
/// staging directory is abandoned: its maker would hold the lock).
pub fn sweep_abandoned(lock: &pins::Lock) {
    for entry in fs::read_dir(root()).into_iter().flatten().flatten() {
        if is_staging(&entry.file_name()) {
            let _ = remove_set_dir(&entry.path(), lock);
        }
    }
}

fn load(dir: &Path, lock: &pins::Lock) -> anyhow::Result<Vec<LeftOut>> {
    fs::create_dir_all(root()).with_context(|| format!("creating {}", root().display()))?;
    let staging = root().join(SetsEntry::own_staging(hooks::object_hash()).to_string());
    if staging.exists() {
        remove_set_dir(&staging, lock)?;
    }
    fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let fill = || -> anyhow::Result<Vec<LeftOut>> {
        let left_out = load_programs(Some(&staging), &KernelTypes::probe())?;
        let stamp = staging.join(Rank::own().entry());
        fs::create_dir(&stamp).with_context(|| format!("creating {}", stamp.display()))?;
        // rustix, not nix: nix offers renameat2 only on glibc, and the release build is musl.
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staging,
            rustix::fs::CWD,
            dir,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .with_context(|| format!("renaming {} to {}", staging.display(), dir.display()))?;
        Ok(left_out)
    };
    let result = fill();
    if result.is_err() {
        let _ = remove_set_dir(&staging, lock);
    }
    result
}

/// A program of the set the kernel did not load, and why.
#[derive(Debug, Clone)]
pub struct LeftOut {
    pub hook: Hook,
    pub why: Why,
    /// One line: what the kernel lacks or said.
    pub detail: String,
    /// The verifier's log, for `--verbose` (never the only message).
    pub log: Option<String>,
}

/// What this kernel lets the set's programs do: the BPF LSM's state and the kernel's
/// layout (with the probed [`bindguard_common::features`]) for the programs' `KERNEL`.
pub struct KernelTypes {
    pub lsm: crate::kernel::lsm::State,
    pub btf: Option<aya::Btf>,
    pub layout: KernelLayout,
    /// Whether the kernel has the file_ioctl_compat LSM hook (6.8 and stable backports).
    pub has_ioctl_compat: bool,
    /// Whether the kernel has cgroup/connect_unix with the context layout its program reads
    /// (None: the BTF cannot be read).
    pub unix_connect: Option<bool>,
}

impl KernelTypes {
    pub fn probe() -> Self {
        let lsm = crate::kernel::lsm::state(true);
        let vmlinux = crate::kernel::btf::Btf::from_sys_fs().ok();
        let mut layout = vmlinux
            .as_ref()
            .map(|b| b.kernel_layout())
            .unwrap_or(KernelLayout::UNKNOWN);
        let has_ioctl_compat = vmlinux
            .as_ref()
            .is_some_and(|b| b.func_id("bpf_lsm_file_ioctl_compat").is_some());
        let unix_connect = vmlinux.as_ref().map(|b| b.has_unix_sock_addr());
        layout.features = crate::kernel::probe::features();
        let btf = if lsm == crate::kernel::lsm::State::Usable {
            aya::Btf::from_sys_fs().ok()
        } else {
            None
        };
        Self {
            lsm,
            btf,
            layout,
            has_ioctl_compat,
            unix_connect,
        }
    }

    /// Why `hook` cannot be loaded here before trying, if something already says so.
    fn ruled_out(&self, hook: Hook) -> Option<LeftOut> {
        let left = |why, detail: String| LeftOut {
            hook,
            why,
            detail,
            log: None,
        };
        if hook.kind() == Kind::Unix {
            return match self.unix_connect {
                Some(true) => None,
                Some(false) => Some(left(
                    Why::KernelLacks,
                    format!(
                        "this kernel has no {} hook",
                        hook.needs().unwrap_or(hook.name())
                    ),
                )),
                None => Some(left(
                    Why::BtfLacks,
                    "the kernel's BTF cannot be read".into(),
                )),
            };
        }
        if !hook.is_lsm() {
            return None;
        }
        if self.lsm != crate::kernel::lsm::State::Usable {
            return Some(left(Why::LsmUnavailable, self.lsm.describe()));
        }
        if self.btf.is_none() {
            return Some(left(
                Why::BtfLacks,
                "the kernel's BTF cannot be read".into(),
            ));
        }
        let missing = crate::kernel::btf::missing_fields_for(&self.layout, hook);
        match hook {
            Hook::LsmIoctlCompat if !self.has_ioctl_compat => {
                return Some(left(
                    Why::NotNeeded,
                    "this kernel has no file_ioctl_compat LSM hook (6.8): its 32-bit ioctls go through file_ioctl".into(),
                ));
            }
            Hook::LsmUringCmd if self.layout.sqe_optname == KernelLayout::MISSING => {
                return Some(left(
                    Why::NotNeeded,
                    "this kernel's io_uring has no setsockopt (SOCKET_URING_OP_SETSOCKOPT, Linux 6.7): nothing to guard".into(),
                ));
            }
            _ => {}
        }
        (!missing.is_empty()).then(|| {
            left(
                Why::BtfLacks,
                format!("the kernel's BTF lacks {}", missing.join(", ")),
            )
        })
    }
}

/// Loads every program the kernel accepts (the verifier runs here, once per build) and, with
/// `pin`, pins them and the maps into that directory. Returns what was left out. Only
/// sock_create (and the storage holder) are required: bind mode is that program alone.
pub fn load_programs(pin: Option<&Path>, kernel: &KernelTypes) -> anyhow::Result<Vec<LeftOut>> {
    crate::kernel::probe::raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .override_global("KERNEL", &kernel.layout, true)
        .load(hooks::EBPF_OBJECT)
        .map_err(Error::Object)?;
    if let Some(dir) = pin {
        for map in SetMap::ALL {
            let (name, path) = (map.symbol(), dir.join(map.to_string()));
            ebpf.map_mut(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))?
                .pin(&path)
                .map_err(|source| Error::PinMap { path, source })?;
        }
        fs::create_dir(users(dir)).with_context(|| format!("creating {}", users(dir).display()))?;
    }
    let mut left_out = Vec::new();
    for hook in Hook::loaded() {
        if let Some(l) = kernel.ruled_out(hook) {
            left_out.push(l);
            continue;
        }
        let program = ebpf
            .program_mut(hook.program())
            .with_context(|| format!("program {} missing from the eBPF object", hook.program()))?;
        let fd = match load_program(program, hook, kernel.btf.as_ref()) {
            Ok(fd) => fd,
            // The binding itself (sock_create and its storage holder) is required.
            Err(e) if hook.required() => return Err(e.into()),
            Err(e) => {
                left_out.push(refused(hook, &e));
                continue;
            }
        };
        if let Some(dir) = pin {
            let path = dir.join(names::prog(hook.name()));
            link::pin(fd.as_fd(), &path).map_err(|source| Error::Pin { path, source })?;
        }
    }
    if let Some(dir) = pin {
        for l in &left_out {
            let absent = dir.join(SetEntry::Absent.to_string());
            let p = absent.join(l.hook.name()).join(l.why.code());
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            if l.why == Why::LsmUnavailable {
                // Why the BPF LSM was not usable, so attach can say it without a probe.
                let p = absent.join(l.hook.name()).join(kernel.lsm.code());
                fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
            }
        }
    }
    Ok(left_out)
}

/// A refusal in one line (the verifier's last words), the log kept apart.
fn refused(hook: Hook, e: &Error) -> LeftOut {
    let log = e.verifier_log();
    let cause = log
        .as_deref()
        .and_then(|l| {
            // The verifier's last words, less its closing statistics.
            const STATS: [&str; 5] = [
                "processed ",
                "verification time",
                "stack depth",
                "max_states_per_insn",
                "peak_states",
            ];
            l.lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !STATS.iter().any(|s| l.starts_with(s)))
        })
        .map(str::to_string)
        .unwrap_or_else(|| e.root_cause());
    LeftOut {
        hook,
        why: Why::Refused,
        detail: format!("the kernel refused {}: {cause}", hook.program()),
        log,
    }
}

fn load_program(
    program: &mut Program,
    hook: Hook,
    btf: Option<&aya::Btf>,
) -> Result<OwnedFd, Error> {
    let load_error = |source: aya::programs::ProgramError| Error::Load {
        program: hook.program(),
        source,
    };
    macro_rules! load {
        ($ty:ty $(, $arg:expr)*) => {{
            let p: &mut $ty = program.try_into().map_err(load_error)?;
            p.load($($arg),*).map_err(load_error)?;
            p.fd()
                .map_err(load_error)?
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| load_error(e.into()))?
        }};
    }
    Ok(match hook.kind() {
        Kind::Sock => load!(CgroupSock),
        Kind::Sockopt => load!(CgroupSockopt),
        Kind::SockAddr => load!(CgroupSockAddr),
        Kind::Skb => load!(CgroupSkb),
        Kind::Lsm(lsm_hook) => {
            let btf = btf.ok_or(Error::NoBtf {
                program: hook.program(),
            })?;
            load!(LsmCgroup, lsm_hook, btf)
        }
        Kind::Unix => crate::kernel::rawload::load_sock_addr(
            hooks::EBPF_OBJECT,
            hook.program(),
            hook.attach_type(),
        )
        .map_err(|source| Error::LoadRaw {
            program: hook.program(),
            source,
        })?,
    })
}
