//! cgroup v2: finding the mount, resolving user paths to cgroups, cgroup ids.
//!
//! A cgroup's id (what bpf_get_current_cgroup_id() and bpf_link_info report) is the inode
//! number of its directory on cgroup2.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use anyhow::Context as _;
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};

use crate::Error;

/// One cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Absolute path, symlinks resolved.
    pub path: PathBuf,
    /// Inode number of the directory = the kernel's cgroup id.
    pub id: u64,
}

impl Cgroup {
    pub fn open_dir(&self) -> anyhow::Result<fs::File> {
        fs::File::open(&self.path)
            .with_context(|| format!("opening cgroup {}", self.path.display()))
    }
}

/// A mount as read from /proc/self/mountinfo: where, and what.
#[derive(Debug, Clone)]
struct Mount {
    point: PathBuf,
    fs_type: String,
    /// Comma-joined super options; for cgroup v1 these name the controllers.
    options: String,
}

fn mounts() -> anyhow::Result<Vec<Mount>> {
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .context("reading /proc/self/mountinfo")?;
    Ok(infos
        .into_iter()
        .map(|m| {
            let mut options: Vec<String> = m
                .super_options
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            options.sort();
            Mount {
                point: m.mount_point,
                fs_type: m.fs_type,
                options: options.join(","),
            }
        })
        .collect())
}

/// The first cgroup2 mount: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    // Where systemd puts it: one statfs each, where parsing mountinfo is ~10 % of an attach.
    for place in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if statfs(place).is_ok_and(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC) {
            return Ok(place.into());
        }
    }
    mounts()?
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.point)
        .ok_or_else(|| Error::NoCgroup2Mount.into())
}

/// Describes the filesystem `path` lives on, for the "not cgroup2" message.
fn describe_fs(path: &Path) -> String {
    let Ok(mounts) = mounts() else {
        return "an unknown filesystem".into();
    };
    let best = mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count());
    match best {
        Some(m) if m.fs_type == "cgroup" => {
            let controllers: Vec<&str> = m
                .options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                .collect();
            format!("cgroup v1 '{}'", controllers.join(","))
        }
        Some(m) => format!("{} mounted at {}", m.fs_type, m.point.display()),
        None => "an unknown filesystem".into(),
    }
}

/// Joins a user-supplied cgroup path to the cgroup2 mount when it is relative. Refuses `..` so a
/// relative path cannot climb out of the hierarchy.
pub fn join_under_mount(mount: &Path, arg: &Path) -> Result<PathBuf, Error> {
    if arg.as_os_str().is_empty() {
        return Err(Error::InvalidInput {
            what: "the cgroup path is empty; give a path such as /sys/fs/cgroup/mgmt or mgmt"
                .into(),
        });
    }
    if arg.is_absolute() {
        return Ok(arg.to_path_buf());
    }
    if arg.components().any(|c| c == Component::ParentDir) {
        return Err(Error::InvalidInput {
            what: format!(
                "cgroup path '{}' contains '..'; give an absolute path or one relative to {}",
                arg.display(),
                mount.display()
            ),
        });
    }
    Ok(mount.join(arg))
}

/// Linux's PATH_MAX: a longer path is bad input, not a failed operation.
const PATH_MAX: usize = 4095;

/// Refuses the root of a cgroup2 hierarchy: the real root (id 1), and any cgroup2 directory
/// that is the root of a mount (inside a cgroup namespace, the namespace's root).
pub fn refuse_root(cg: &Cgroup) -> Result<(), Error> {
    let is_mount_root = || -> bool {
        // The kernel says whether the (canonical) path is a mount's root (statx, 5.8+). In the
        // initial cgroup namespace that is the whole answer (its root is id 1, refused below).
        // Inside another, the namespace's root may also be reachable through a cgroup2 mount
        // with a higher root (the host's, kept or bind-mounted) where it is no mount's root:
        // then only a comparison with every cgroup2 mount's root tells.
        match mount_root_attr(&cg.path) {
            Some(true) => return true,
            Some(false) if in_initial_cgroup_ns() => return false,
            _ => {}
        }
        let Ok(here) = fs::metadata(&cg.path) else {
            return false;
        };
        mounts().unwrap_or_default().iter().any(|m| {
            m.fs_type == "cgroup2"
                && fs::metadata(&m.point)
                    .is_ok_and(|root| root.dev() == here.dev() && root.ino() == here.ino())
        })
    };
    if cg.id == 1 || is_mount_root() {
        return Err(Error::RootCgroup {
            path: cg.path.clone(),
        });
    }
    Ok(())
}

/// Who, besides root, can move processes across a cgroup's ancestor: the owner of a
/// delegated subtree (systemd's `user@UID.service`, a `Delegate=yes` unit with `User=`, a
/// rootless container runtime's tree), a group, or anyone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "id")]
pub enum Writer {
    Uid(u32),
    Gid(u32),
    Everyone,
    /// The walk ended at a cgroup namespace's root (bindguard sees only that subtree): what
    /// is above it cannot be checked.
    NamespaceRoot,
    /// The cgroup is threaded: its processes' other threads may be in sibling cgroups of the
    /// threaded subtree (the boundary is the subtree's domain).
    Threads,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Writer::Uid(u) => write!(f, "uid {u}"),
            Writer::Gid(g) => write!(f, "group {g}"),
            Writer::Everyone => write!(f, "every user"),
            Writer::NamespaceRoot => {
                write!(
                    f,
                    "anyone above this cgroup namespace's root (unseen from here)"
                )
            }
            Writer::Threads => write!(f, "threads of its processes in sibling threaded cgroups"),
        }
    }
}

/// Where a binding's processes can walk out: the topmost ancestor whose `cgroup.procs` (or
/// `cgroup.threads`) someone other than root can write.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delegation {
    #[serde(serialize_with = "serialize_lossy")]
    pub boundary: PathBuf,
    pub writer: Writer,
}

impl Delegation {
    /// status/verify's words: `escapable-by-migration (uid U via PATH)`.
    pub fn describe(&self) -> String {
        format!(
            "escapable-by-migration ({} via {})",
            self.writer,
            self.boundary.display()
        )
    }
}

/// Who can write `file` besides root. Its owner can, whatever the mode bits say now (an owner
/// may chmod its own file, and kernfs lets it); a group with the write bit can, group root
/// included (a uid that is not root may hold gid 0 as a supplementary group).
fn non_root_writer(file: &Path) -> Option<Writer> {
    let m = fs::metadata(file).ok()?;
    let mode = m.mode();
    if mode & 0o002 != 0 {
        Some(Writer::Everyone)
    } else if m.uid() != 0 {
        Some(Writer::Uid(m.uid()))
    } else if mode & 0o020 != 0 {
        Some(Writer::Gid(m.gid()))
    } else {
        None
    }
}

/// Whether processes in `cgroup` can move themselves out of it. The kernel lets a process move
/// a process between two cgroups when it can write `cgroup.procs` of the destination and of
/// the two cgroups' common ancestor ("cgroup: require write perm on common ancestor", 4.5;
/// `clone3(CLONE_INTO_CGROUP)` and `cgroup.threads` check the same), and no program runs on
/// a migration. So an ancestor *above* the cgroup whose `cgroup.procs` or `cgroup.threads` a
/// non-root user can write is a way out for that user's processes; children of the cgroup
/// are not (they inherit its programs). The walk goes up through the cgroup2 mount the path
/// is on (any of them: by device, not by the first mount's path) to that mount's root; a
/// mount root that is not the hierarchy's root (a cgroup namespace's, id ≠ 1) is a boundary
/// too, since what lies above it cannot be seen. A threaded cgroup is one too: the other
/// threads of its processes may live in sibling threaded cgroups and send from there.
/// Returns the topmost such place.
pub fn delegation(cgroup: &Path, cache: &mut DelegationCache) -> Option<Delegation> {
    let dev = fs::metadata(cgroup).ok()?.dev();
    let mut found = None;
    if fs::read_to_string(cgroup.join("cgroup.type")).is_ok_and(|t| t.trim() == "threaded") {
        found = Some(Delegation {
            boundary: threaded_domain(cgroup),
            writer: Writer::Threads,
        });
    }
    let mut dir = cgroup.parent();
    while let Some(d) = dir {
        let Some(step) = cache
            .0
            .entry(d.to_path_buf())
            .or_insert_with(|| Step::of(d))
            .clone()
        else {
            break;
        };
        if step.dev != dev {
            break;
        }
        if let Some(writer) = step.writer {
            found = Some(Delegation {
                boundary: d.to_path_buf(),
                writer,
            });
        }
        if step.mount_root {
            break;
        }
        dir = d.parent();
    }
    found
}

/// What [`delegation`] learnt of each ancestor: bindings share them (10,000 services under
/// one slice), so each is read once per cache.
#[derive(Debug, Default)]
pub struct DelegationCache(std::collections::HashMap<PathBuf, Option<Step>>);

#[derive(Debug, Clone)]
struct Step {
    dev: u64,
    writer: Option<Writer>,
    /// The root of its mount: the walk ends here.
    mount_root: bool,
}

impl Step {
    /// One ancestor: its device, who besides root can write its cgroup.procs or
    /// cgroup.threads, and whether it is its mount's root (then, if it is not the
    /// hierarchy's root, a cgroup namespace's: what is above cannot be seen).
    fn of(d: &Path) -> Option<Self> {
        let meta = fs::metadata(d).ok()?;
        let mount_root = d.parent().is_none_or(|u| {
            fs::metadata(u)
                .map(|m| m.dev() != meta.dev())
                .unwrap_or(true)
        });
        let writer = non_root_writer(&d.join("cgroup.procs"))
            .or_else(|| non_root_writer(&d.join("cgroup.threads")))
            .or_else(|| (mount_root && meta.ino() != 1).then_some(Writer::NamespaceRoot));
        Some(Self {
            dev: meta.dev(),
            writer,
            mount_root,
        })
    }
}

/// The nearest ancestor of the threaded cgroup `cgroup` that is its threaded subtree's domain.
fn threaded_domain(cgroup: &Path) -> PathBuf {
    let mut dir = cgroup.parent();
    while let Some(d) = dir {
        if fs::read_to_string(d.join("cgroup.type")).is_ok_and(|t| t.trim() != "threaded") {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    cgroup.to_path_buf()
}

/// Whether this process is in the initial cgroup namespace (whose nsfs inode is fixed:
/// PROC_CGROUP_INIT_INO). False when that cannot be read.
fn in_initial_cgroup_ns() -> bool {
    const PROC_CGROUP_INIT_INO: u64 = 0xEFFF_FFFB;
    fs::metadata("/proc/self/ns/cgroup").is_ok_and(|m| m.ino() == PROC_CGROUP_INIT_INO)
}

/// STATX_ATTR_MOUNT_ROOT of `path`, if the kernel reports that attribute.
fn mount_root_attr(path: &Path) -> Option<bool> {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    let st = statx(CWD, path, AtFlags::NO_AUTOMOUNT, StatxFlags::BASIC_STATS).ok()?;
    st.stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
        .then(|| st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
}

/// Resolves `arg` (absolute, or relative to the cgroup2 mount) to an existing cgroup v2 directory.
pub fn resolve(arg: &Path) -> anyhow::Result<Cgroup> {
    let len = arg.as_os_str().len();
    if len > PATH_MAX {
        return Err(Error::TooLong {
            what: "the cgroup path",
            value: arg.to_string_lossy().into_owned(),
            len,
            max: PATH_MAX,
        }
        .into());
    }
    let mount = cgroup2_mount()?;
    let joined = join_under_mount(&mount, arg)?;
    let path = match fs::canonicalize(&joined) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::CgroupMissing { path: joined }.into());
        }
        Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            return Err(Error::InvalidInput {
                what: format!(
                    "cgroup path {} has a component longer than 255 bytes",
                    crate::error::quote_path(&joined)
                ),
            }
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("resolving cgroup {}", joined.display())),
    };
    let fs = statfs(&path).with_context(|| format!("statfs {}", path.display()))?;
    if fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err(Error::NotCgroup2 {
            found: describe_fs(&path),
            path,
            mount,
        }
        .into());
    }
    let meta = fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_dir() {
        return Err(Error::CgroupNotDirectory { path, mount }.into());
    }
    Ok(Cgroup {
        path,
        id: meta.ino(),
    })
}

/// What an fd refers to, from /proc/self/fd.
fn fd_path(fd: &std::os::fd::OwnedFd) -> Option<PathBuf> {
    use std::os::{fd::AsRawFd, unix::ffi::OsStringExt};
    // /proc/self/fd is opened once per process: `status` names thousands of cgroups, and a
    // readlink of the full /proc/self/fd/N path walks it again each time.
    static FD_DIR: std::sync::OnceLock<Option<fs::File>> = std::sync::OnceLock::new();
    let dir = FD_DIR
        .get_or_init(|| fs::File::open("/proc/self/fd").ok())
        .as_ref()?;
    let target = rustix::fs::readlinkat(dir, fd.as_raw_fd().to_string(), Vec::new()).ok()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(
        target.into_bytes(),
    )))
}

/// Names cgroups by id: by file handle, or — where the kernel refuses handles (no
/// CAP_DAC_READ_SEARCH) — from one walk of every cgroup, done on first need.
pub struct Namer {
    mount: Option<PathBuf>,
    mount_fd: Option<fs::File>,
    walked: Option<std::collections::HashMap<u64, PathBuf>>,
}

impl Namer {
    pub fn new() -> Self {
        let mount = cgroup2_mount().ok();
        let mount_fd = mount.as_ref().and_then(|m| fs::File::open(m).ok());
        Self {
            mount,
            mount_fd,
            walked: None,
        }
    }

    /// The path of cgroup `id`; None if no such cgroup exists (any more).
    pub fn path(&mut self, id: u64) -> Option<PathBuf> {
        match self.open(id) {
            Some(Ok(fd)) => fd_path(&fd),
            Some(Err(())) => None,
            None => self.walk().get(&id).cloned(),
        }
    }

    /// Whether cgroup `id` exists (one handle lookup, no readlink).
    pub fn exists(&mut self, id: u64) -> bool {
        match self.open(id) {
            Some(found) => found.is_ok(),
            None => self.walk().contains_key(&id),
        }
    }

    /// The cgroup by handle: Err if the kernel says it does not exist (a removed cgroup's
    /// handle is stale), None if the kernel cannot say.
    fn open(&self, id: u64) -> Option<Result<std::os::fd::OwnedFd, ()>> {
        match open_by_id(self.mount_fd.as_ref()?, id) {
            Ok(fd) => Some(Ok(fd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESTALE | libc::ENOENT)) => {
                Some(Err(()))
            }
            Err(_) => None,
        }
    }

    fn walk(&mut self) -> &std::collections::HashMap<u64, PathBuf> {
        let mount = self.mount.clone();
        self.walked
            .get_or_insert_with(|| mount.map(|m| paths_by_id(&m)).unwrap_or_default())
    }
}

impl Default for Namer {
    fn default() -> Self {
        Self::new()
    }
}

/// An O_PATH fd of the cgroup with id `id`, through its kernfs file handle (the handle of a
/// cgroup2 directory is its 8-byte id).
fn open_by_id(mount: &fs::File, id: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        id: u64,
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let mut handle = Handle {
        bytes: 8,
        kind: FILEID_KERNFS,
        id,
    };
    // SAFETY: `handle` is a valid struct file_handle with 8 bytes of f_handle.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            (&mut handle as *mut Handle).cast::<libc::c_void>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Every cgroup under the cgroup2 mount, by id (the kernel knows a binding's cgroup only by
/// id): a walk of every cgroup directory, for where file handles are refused.
pub fn paths_by_id(mount: &Path) -> std::collections::HashMap<u64, PathBuf> {
    let mut found = std::collections::HashMap::new();
    let mut stack = vec![mount.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::metadata(&dir) {
            found.insert(meta.ino(), dir.clone());
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found
}

/// Serializes a cgroup path for JSON: cgroup2 names may hold any byte but '/' and '\n', and
/// whoever owns a delegated subtree picks them, so a name that is not UTF-8 must not fail the
/// whole document (serde refuses such a `Path`); its bytes are replaced lossily, the cgroup id
/// next to it names it exactly.
pub fn serialize_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`serialize_lossy`] of an optional path (None is null).
pub fn serialize_lossy_opt<S: serde::Serializer>(
    path: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => serialize_lossy(p, s),
        None => s.serialize_none(),
    }
}

/// The argument `--cgroup self`: the caller's own cgroup.
pub const SELF: &str = "self";

/// The calling process's cgroup v2 directory: the `0::/PATH` line of /proc/self/cgroup, under
/// the cgroup2 mount. A systemd `ExecStartPre=+` command runs in its service's cgroup, so
/// `--cgroup self` there names the service.
pub fn self_path() -> anyhow::Result<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let rel = self_from_proc(&text).ok_or_else(|| Error::InvalidInput {
        what: "this process has no cgroup v2 membership in /proc/self/cgroup; give --cgroup PATH"
            .into(),
    })?;
    let mount = cgroup2_mount()?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// Moves the calling thread (and the threads it starts later) into the cgroup namespace of
/// process `pid` (a container runtime), when that is another one: inside a container with a
/// private cgroup namespace, /proc/PID/cgroup names other pods' cgroups relative to the
/// container's own (`0::/../../kubepods/...`). Needs CAP_SYS_ADMIN and CAP_SYS_PTRACE, and
/// `pid` in this PID namespace (hostPID). Returns whether it moved.
pub fn join_namespace_of(pid: i32) -> anyhow::Result<bool> {
    let theirs = format!("/proc/{pid}/ns/cgroup");
    let ino = |p: &str| fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let own = ino("/proc/self/ns/cgroup").context("reading /proc/self/ns/cgroup")?;
    let other = ino(&theirs).with_context(|| format!("reading {theirs}"))?;
    if own == other {
        return Ok(false);
    }
    let ns = fs::File::open(&theirs).with_context(|| format!("opening {theirs}"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .with_context(|| format!("joining the cgroup namespace of process {pid} (setns)"))?;
    Ok(true)
}

/// The cgroup v2 directory of process `pid`, from /proc/PID/cgroup ("0::/path", relative to
/// the cgroup2 mount). A container runtime's hook and the NRI plugin find a container's cgroup
/// this way: from its first process, whatever cgroup driver named it.
pub fn of_process(pid: i32) -> anyhow::Result<PathBuf> {
    let text =
        fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|_| Error::InvalidInput {
            what: format!(
                "container process {pid} is gone; the runtime must call bindguard while it exists"
            ),
        })?;
    let rel = self_from_proc(&text).ok_or_else(|| Error::InvalidInput {
        what: format!("process {pid} is in no cgroup v2 hierarchy"),
    })?;
    let mount = cgroup2_mount()?;
    Ok(mount.join(rel.trim().trim_start_matches('/')))
}

/// The cgroup v2 path in the text of /proc/PID/cgroup (the `0::` line).
pub fn self_from_proc(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// A `--cgroup` argument with `self` replaced by the caller's cgroup.
pub fn expand_self(arg: &Path) -> anyhow::Result<PathBuf> {
    if arg == Path::new(SELF) {
        self_path()
    } else {
        Ok(arg.to_path_buf())
    }
}

/// Whether processes still run in the cgroup at `path` (cgroup.events; a cgroup already gone
/// is empty).
pub fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .is_ok_and(|e| e.lines().any(|l| l.trim() == "populated 1"))
}

/// Kills everything in the cgroup at `path` until it is empty, or `within` has passed;
/// returns whether it is empty. cgroup.kill is 5.14+ (and needs no CAP_KILL); before, every
/// member is killed by pid, again each round for late forks.
pub fn kill_all(path: &Path, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while populated(path) {
        if fs::write(path.join("cgroup.kill"), "1").is_err() {
            for pid in fs::read_to_string(path.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// The cgroup (below the cgroup2 mount) the daemon makes users' exec cgroups in, root's.
pub const USER_SLICE: &str = "bindguard.slice";
/// A user's exec cgroup: `<USER_SLICE>/exec-<uid>-<pid>[-n]`.
pub const USER_EXEC_PREFIX: &str = "exec-";

/// The uid a user's exec cgroup was made for, from its name.
pub fn user_of_exec_cgroup(path: &Path) -> Option<u32> {
    if path.parent()?.file_name()? != USER_SLICE {
        return None;
    }
    path.file_name()?
        .to_str()?
        .strip_prefix(USER_EXEC_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_the_v2_line() {
        let text = "12:memory:/user.slice\n1:name=systemd:/x\n0::/system.slice/a.service\n";
        assert_eq!(self_from_proc(text), Some("/system.slice/a.service"));
        assert_eq!(self_from_proc("1:cpu:/x\n"), None);
    }

    #[test]
    fn relative_paths_join_the_mount() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(
            join_under_mount(m, Path::new("mgmt")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/mgmt")
        );
        assert_eq!(
            join_under_mount(m, Path::new("a/b")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
    }

    #[test]
    fn absolute_paths_stay() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            join_under_mount(m, Path::new("/sys/fs/cgroup/unified/x")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/x")
        );
    }

    #[test]
    fn relative_paths_cannot_climb_out() {
        let m = Path::new("/sys/fs/cgroup");
        let err = join_under_mount(m, Path::new("../etc")).unwrap_err();
        assert!(err.to_string().contains("'..'"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert!(join_under_mount(m, Path::new("")).is_err());
    }

    #[test]
    fn exec_cgroups_name_their_uid() {
        let uid = |p: &str| user_of_exec_cgroup(Path::new(p));
        assert_eq!(
            uid("/sys/fs/cgroup/bindguard.slice/exec-1000-4242"),
            Some(1000)
        );
        assert_eq!(uid("/sys/fs/cgroup/bindguard.slice/exec-0-1-2"), Some(0));
        assert_eq!(uid("/sys/fs/cgroup/other/exec-1000-1"), None);
        assert_eq!(uid("/sys/fs/cgroup/bindguard.slice/x"), None);
    }
}
