//! bpffs and the layout of bindguard's pins: the only place a binding's state lives.
//!
//! ```text
//! /sys/fs/bpf/bindguard/<cgroup-id>/link_<hook>     one bpf_link per attached program
//!                       programs/<object-hash>/...  the shared program set (progset.rs)
//!                       work/new-<cgroup-id>-<pid>  a binding being made
//!                       work/dead-<cgroup-id>-<pid> a binding being removed
//! ```
//! A binding is only links: its policy and counters are its cgroup's values in the set's
//! cgroup storage maps. A new binding is pinned into `work/new-<cgroup-id>-<pid>` and renamed
//! into place, so a reader (or a kill at any moment) sees either a whole binding or none.
//! Staging lives in its own directory so that finding abandoned ones never lists every
//! binding (attach time stays flat with 10,000 bindings).
//!
//! Bindings made by bindguard builds before the shared set also have `policy`, `stats` and
//! `events` pins of their own; they are read as such and replaced on the next attach.
//!
//! Every name in this layout is written and read back by [`names`], nowhere else.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::{
    fcntl::{Flock, FlockArg},
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::Error;

pub mod names;

use names::{RootEntry, Stage, WorkDir};

pub const BPFFS: &str = "/sys/fs/bpf";

/// Makes sure bpffs is mounted at /sys/fs/bpf, mounting it if needed.
pub fn ensure_bpffs() -> anyhow::Result<()> {
    let path = Path::new(BPFFS);
    if statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    if !path.is_dir() {
        fs::create_dir_all(path).map_err(|e| Error::BpffsMount {
            path: path.into(),
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    }
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| Error::BpffsMount {
        path: path.into(),
        source,
    })?;
    Ok(())
}

/// Whether bpffs is mounted (read-only commands must not mount it).
pub fn bpffs_mounted() -> bool {
    statfs(Path::new(BPFFS)).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// /sys/fs/bpf/bindguard
pub fn root() -> PathBuf {
    Path::new(BPFFS).join(names::ROOT)
}

/// /sys/fs/bpf/bindguard/work: staging and dying bindings.
pub fn work() -> PathBuf {
    root().join(RootEntry::Work.to_string())
}

/// The cgroup id a binding directory is for: its name, or the id in a staging/dead name.
pub fn cgroup_id_of(dir: &Path) -> Option<u64> {
    let name = dir.file_name()?.to_str()?;
    if let Some(RootEntry::Binding(id)) = RootEntry::parse(name) {
        return Some(id);
    }
    WorkDir::parse(name).map(|w| w.cgroup_id)
}

/// The pin directory of the binding of cgroup `id`.
pub fn binding_dir(cgroup_id: u64) -> PathBuf {
    root().join(RootEntry::Binding(cgroup_id).to_string())
}

/// Exclusive lock over all bindings, held while one is created, changed or removed, so two
/// bindguard processes never interleave on one cgroup. Released when dropped.
pub struct Lock(#[allow(dead_code)] Flock<fs::File>);

pub fn lock() -> anyhow::Result<Lock> {
    let root = root();
    trusted_root(&root)?;
    let dir = fs::File::open(&root).with_context(|| format!("opening {}", root.display()))?;
    let locked = Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", root.display()))?;
    Ok(Lock(locked))
}

/// [`lock`] without waiting: None while another bindguard holds it (the daemon retries
/// later instead of blocking its event loop).
pub fn try_lock() -> anyhow::Result<Option<Lock>> {
    let root = root();
    trusted_root(&root)?;
    let dir = fs::File::open(&root).with_context(|| format!("opening {}", root.display()))?;
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(Lock(locked))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("locking {}", root.display())),
    }
}

/// Makes sure bindguard's root on bpffs is a real directory that only root can enter, before
/// anything in it is trusted or locked.
///
/// bpffs's own root is world-writable (1777): any user can make `bindguard` there before
/// bindguard does, fill it with symlinks, and later rename a binding into what the sweep
/// removes; and anyone who can open the directory can hold its flock and stall every bindguard
/// command (the daemon included). So a root directory not owned by root, writable by others,
/// or not a directory at all is moved aside (root may rename in a sticky directory; nothing in
/// it is followed or removed) and a fresh one made; the root is kept at 0700.
fn trusted_root(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let trusted = |m: &fs::Metadata| m.file_type().is_dir() && m.uid() == 0;
    match fs::symlink_metadata(root) {
        Ok(m) if trusted(&m) => {
            if m.mode() & 0o077 != 0 {
                fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("restricting {} to root", root.display()))?;
            }
            return Ok(());
        }
        Ok(_) => {
            let aside = root.with_file_name(names::aside(
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            ));
            fs::rename(root, &aside).with_context(|| {
                format!(
                    "{} is not a directory owned by root; moving it aside to {}",
                    root.display(),
                    aside.display()
                )
            })?;
            eprintln!(
                "bindguard: warning: {} was not a root-owned directory (made by another user?); moved it aside to {}",
                root.display(),
                aside.display()
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", root.display())),
    }
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        // Another bindguard made it meanwhile: check it like any other.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", root.display())),
    }
    let m = fs::symlink_metadata(root).with_context(|| format!("inspecting {}", root.display()))?;
    anyhow::ensure!(
        trusted(&m) && m.mode() & 0o077 == 0,
        "{} is not a root-owned directory of mode 0700 after creating it; refusing to use it",
        root.display()
    );
    Ok(())
}

/// Every binding's (cgroup id, pin directory), sorted by id.
pub fn list() -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(root())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| match RootEntry::parse(e.file_name().to_str()?)? {
            RootEntry::Binding(id) => Some((id, e.path())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// A pin directory being filled for a new binding; removed (detaching what it holds) unless
/// [`Staging::publish`] renames it into place. It borrows the lock it was made under, so the
/// lock outlives it, its removal in `Drop` included.
pub struct Staging<'l> {
    pub dir: PathBuf,
    cgroup_id: u64,
    target: PathBuf,
    published: bool,
    lock: &'l Lock,
}

impl<'l> Staging<'l> {
    pub fn new(cgroup_id: u64, lock: &'l Lock) -> anyhow::Result<Self> {
        let work = work();
        fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let dir = work.join(WorkDir::own(Stage::New, cgroup_id).to_string());
        if dir.exists() {
            remove_dir(&dir, lock)?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            cgroup_id,
            target: binding_dir(cgroup_id),
            published: false,
            lock,
        })
    }

    /// Renames the staged pins into place; fails if a binding already exists there.
    pub fn publish(self) -> anyhow::Result<PathBuf> {
        let target = self.target.clone();
        self.rename(rustix::fs::RenameFlags::NOREPLACE, "renaming")?;
        Ok(target)
    }

    /// Atomically swaps the staged pins with the published binding; returns where the old
    /// binding's pins now are (to be removed by the caller).
    pub fn exchange(mut self) -> anyhow::Result<PathBuf> {
        let old = self.dir.clone();
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.dir,
            rustix::fs::CWD,
            &self.target,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => {
                self.published = true;
                Ok(old)
            }
            // bpffs supports RENAME_EXCHANGE from Linux 5.15 on; before, it is refused with
            // EINVAL, and the swap is done in steps.
            Err(rustix::io::Errno::INVAL) => self.replace_in_steps(),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "exchanging {} with {}",
                    self.dir.display(),
                    self.target.display()
                )
            }),
        }
    }

    /// The swap without RENAME_EXCHANGE: the complete staging directory is marked ready, the
    /// binding is renamed away, the ready one renamed into place. Both sets of links stay
    /// attached throughout, so no socket meets an unbound cgroup; only the pin directory is
    /// missing for the moment between the two renames, and if bindguard is killed then, the
    /// next sweep publishes the ready directory (see [`sweep_abandoned`]).
    fn replace_in_steps(mut self) -> anyhow::Result<PathBuf> {
        let work = work();
        let ready = work.join(WorkDir::own(Stage::Ready, self.cgroup_id).to_string());
        rename_path(&self.dir, &ready)?;
        self.dir = ready.clone();
        let dead = work.join(WorkDir::own(Stage::Dead, self.cgroup_id).to_string());
        rename_path(&self.target, &dead)?;
        if let Err(e) = rename_path(&ready, &self.target) {
            // Put the old binding back; the staged links go with `self`.
            let _ = rename_path(&dead, &self.target);
            return Err(e);
        }
        self.published = true;
        Ok(dead)
    }

    // rustix, not nix: nix offers renameat2 only on glibc, and the release build is musl.
    fn rename(mut self, flags: rustix::fs::RenameFlags, verb: &str) -> anyhow::Result<()> {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.dir,
            rustix::fs::CWD,
            &self.target,
            flags,
        )
        .with_context(|| format!("{verb} {} to {}", self.dir.display(), self.target.display()))?;
        self.published = true;
        Ok(())
    }
}

fn rename_path(from: &Path, to: &Path) -> anyhow::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .with_context(|| format!("renaming {} to {}", from.display(), to.display()))
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if !self.published {
            let _ = remove_dir(&self.dir, self.lock);
        }
    }
}

/// Removes one pin; a link's program is detached before this returns. Takes the lock's
/// token: nothing is unpinned under another bindguard's feet.
pub fn unpin(pin: &Path, _lock: &Lock) -> Result<(), crate::kernel::Error> {
    // A link is detached first: unpinned, the kernel frees it (and so detaches its program)
    // from a workqueue, and under load the program ran on after the command had returned. A
    // link whose cgroup is gone is detached already: the unpin is what matters then.
    if pin
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(names::parse_link)
        .is_some()
    {
        let _ = crate::kernel::link::detach_pinned(pin);
    }
    fs::remove_file(pin).map_err(|source| crate::kernel::Error::Unpin {
        path: pin.to_path_buf(),
        source,
    })
}

/// Removes a pin directory (a binding's, or a program set's once its subdirectories are
/// gone). Unpinning the last reference to a link detaches its program.
pub fn remove_dir(dir: &Path, lock: &Lock) -> anyhow::Result<()> {
    // Links first, so the programs stop before their maps lose their pins.
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(names::parse_link)
            .is_none()
    });
    for entry in entries {
        unpin(&entry, lock)?;
    }
    fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Detaches a published binding: renamed away first (atomic), then its pins removed.
pub fn remove_binding(dir: &Path, lock: &Lock) -> anyhow::Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("binding directory without a name")?;
    let Some(RootEntry::Binding(id)) = RootEntry::parse(name) else {
        anyhow::bail!("{} is not a binding directory", dir.display());
    };
    let work = work();
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let dead = work.join(WorkDir::own(Stage::Dead, id).to_string());
    fs::rename(dir, &dead)
        .with_context(|| format!("renaming {} to {}", dir.display(), dead.display()))?;
    remove_dir(&dead, lock)
}

/// Every staging or dying binding directory in work/, with its path.
fn work_entries() -> Vec<(WorkDir, PathBuf)> {
    fs::read_dir(work())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((WorkDir::parse(e.file_name().to_str()?)?, e.path())))
        .collect()
}

/// A directory left by an attach (staging) or detach that was killed before it finished:
/// the cgroup it concerns and its path.
///
/// Every such directory is made and removed under the pins lock, so when nobody holds the lock
/// every one there is abandoned. Only while some bindguard holds it does the maker's pid
/// decide — pids are reused (pid_max is 32768 on many machines), so that is the fallback only.
pub fn abandoned() -> Vec<(u64, PathBuf)> {
    let idle = fs::File::open(root())
        .ok()
        .and_then(|f| Flock::lock(f, FlockArg::LockSharedNonblock).ok());
    work_entries()
        .into_iter()
        .filter(|(w, _)| {
            idle.is_some()
                || !w
                    .pid
                    .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
        })
        .map(|(w, path)| (w.cgroup_id, path))
        .collect()
}

/// With the lock held: every staging or dying directory is abandoned (its maker would hold the
/// lock otherwise).
pub fn abandoned_locked(_lock: &Lock) -> Vec<(u64, PathBuf)> {
    work_entries()
        .into_iter()
        .map(|(w, path)| (w.cgroup_id, path))
        .collect()
}

/// Removes what [`abandoned`] finds. A staging directory's programs were attached but never
/// published, so the cgroup's binding is whatever was published before; a dead one's detach
/// is completed. Program sets have their own staging directories: the caller sweeps those too
/// (`progset::sweep_abandoned`), so that bpffs layout does not depend on the program set.
pub fn sweep_abandoned(lock: &Lock) {
    // A ready directory first: it may be the binding itself, if a replacement was killed
    // after renaming the old binding away (its links are attached, the old ones go below).
    let mut entries = abandoned_locked(lock);
    entries.sort_by_key(|(_, dir)| !is_ready(dir));
    for (id, dir) in entries {
        if is_ready(&dir) && rename_path(&dir, &binding_dir(id)).is_ok() {
            continue;
        }
        let _ = remove_dir(&dir, lock);
    }
}

fn is_ready(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| WorkDir::parse(n.to_str()?))
        .is_some_and(|w| w.stage == Stage::Ready)
}
