//! inotify: the configured cgroups (the nearest existing ancestor of each, and the directory
//! above it: cgroupfs says nothing to a watch on a directory that is removed, its parent sees
//! IN_DELETE), the directories of configured network namespace paths (/run/netns), and each
//! held binding's pin directory. After every change the watches are walked again and a
//! configured cgroup that appeared meanwhile is bound; a chown below a binding re-checks its
//! delegation.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    path::{Path, PathBuf},
};

use inotify::{EventMask, WatchDescriptor, WatchMask};
use tracing::{error, warn};

use super::{Daemon, Msg, state::State};
use crate::binding::cgroup;

/// What an inotify watch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Watch {
    /// The nearest existing ancestor of configured cgroups, and the directory above it.
    Cgroups(PathBuf),
    /// A binding's pin directory (pins removed, the directory removed, bpffs unmounted).
    Pins(u64),
    /// The directory of configured network namespace paths (/run/netns).
    Namespaces(PathBuf),
}

impl Daemon {
    pub(super) fn watch(&mut self, path: &Path, what: Watch, mask: WatchMask) {
        match self.watches.add(path, mask) {
            Ok(wd) => {
                self.watched.insert(wd, what);
            }
            Err(e) => warn!("cannot watch {}: {e}", path.display()),
        }
    }

    /// Watches the nearest existing ancestor of every configured cgroup, for the creation of
    /// the next directory down, and the directory above it, for that ancestor's removal
    /// (cgroupfs tells a watch nothing when its own directory is removed; the parent sees
    /// IN_DELETE). Siblings coming and going wake the daemon for a name comparison only.
    /// Returns whether a cgroup watch was added.
    fn refresh_watches(&mut self) -> bool {
        let mut want: HashMap<PathBuf, Watch> = HashMap::new();
        // Bindings mostly share parents (10,000 services under one slice): each walked once.
        let parents: HashSet<&Path> = self
            .config
            .bindings
            .iter()
            .filter_map(|b| b.cgroup.parent())
            .collect();
        for parent in parents {
            let mut dir = Some(parent.to_path_buf());
            while let Some(d) = dir {
                if d.is_dir() {
                    if d != self.mount
                        && let Some(up) = d.parent()
                    {
                        want.insert(up.to_path_buf(), Watch::Cgroups(up.to_path_buf()));
                    }
                    want.insert(d.clone(), Watch::Cgroups(d));
                    break;
                }
                if d == self.mount {
                    break;
                }
                dir = d.parent().map(Path::to_path_buf);
            }
        }
        for b in &self.config.bindings {
            if let Some(dir) = b.netns.as_ref().and_then(|p| p.parent())
                && dir.is_dir()
            {
                want.insert(dir.to_path_buf(), Watch::Namespaces(dir.to_path_buf()));
            }
        }
        let stale: Vec<WatchDescriptor> = self
            .watched
            .iter()
            .filter(|(_, w)| match w {
                Watch::Cgroups(d) | Watch::Namespaces(d) => want.get(d) != Some(*w),
                Watch::Pins(_) => false,
            })
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in stale {
            self.watched.remove(&wd);
            let _ = self.watches.remove(wd);
        }
        let had: HashSet<PathBuf> = self
            .watched
            .values()
            .filter_map(|w| match w {
                Watch::Cgroups(d) => Some(d.clone()),
                _ => None,
            })
            .collect();
        let mut added = false;
        for (d, w) in want {
            let new = matches!(w, Watch::Cgroups(_)) && !had.contains(&d);
            // inotify_add_watch on a watched directory returns its descriptor again, and on a
            // removed and re-made one a new descriptor: either way the watch is current.
            added |= new;
            self.watch(
                &d,
                w,
                WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    // a chown of the directory or its cgroup.procs: a new delegation
                    | WatchMask::ATTRIB
                    | WatchMask::ONLYDIR,
            );
        }
        added
    }

    /// Re-walks the configured cgroups after a change: watches follow the nearest existing
    /// ancestors, and a configured cgroup that appeared before its ancestor's watch was in
    /// place (`mkdir -p P/leaf` right after `rmdir P`) is bound now, not missed.
    pub(super) fn settle(&mut self) {
        for _ in 0..16 {
            let added = self.refresh_watches();
            let appeared: Vec<usize> = (0..self.config.bindings.len())
                .filter(|&i| {
                    self.known.state(&self.config.bindings[i].cgroup)
                        == Some(State::WaitingForCgroup)
                })
                .filter(|&i| self.config.bindings[i].cgroup.is_dir())
                .collect();
            if appeared.is_empty() && !added {
                return;
            }
            for i in &appeared {
                self.ensure(*i, None, "cgroup appeared");
            }
            if appeared.is_empty() {
                return;
            }
        }
    }

    pub(super) fn on_fs(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<OsString>) {
        if mask.contains(EventMask::IGNORED) {
            // The watched directory went (or the watch was replaced): walk again.
            if let Some(Watch::Cgroups(_)) = self.watched.remove(&wd) {
                self.after_change();
            }
            return;
        }
        let Some(what) = self.watched.get(&wd).cloned() else {
            return;
        };
        if mask.contains(EventMask::UNMOUNT) {
            warn!(
                "bpffs was unmounted; the daemon's link fds keep every binding attached; re-pinning"
            );
            self.watched.retain(|_, w| !matches!(w, Watch::Pins(_)));
            self.apply_all("bpffs unmounted");
            self.after_change();
            return;
        }
        let name = name.map(|n| n.to_string_lossy().into_owned());
        if let (Watch::Namespaces(dir), Some(name)) = (&what, &name) {
            let path = dir.join(name);
            if !self
                .config
                .bindings
                .iter()
                .any(|b| b.netns.as_ref() == Some(&path))
            {
                return;
            }
            if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                // `ip netns add` creates the file, then bind-mounts the namespace on it: wait
                // (bounded) until it is one.
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        if crate::binding::netns::Netns::open(&path).is_ok() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    let _ = tx.send(Msg::NetnsChanged(path));
                });
            } else {
                self.on_netns_changed(path);
            }
            return;
        }
        if let Watch::Cgroups(dir) = &what
            && mask.contains(EventMask::ATTRIB)
        {
            self.recheck_delegation(dir);
            return;
        }
        let affected: Vec<usize> = match &what {
            Watch::Cgroups(dir) => {
                let Some(name) = &name else { return };
                let child = dir.join(name);
                (0..self.config.bindings.len())
                    .filter(|&i| self.config.bindings[i].cgroup.starts_with(&child))
                    .collect()
            }
            Watch::Pins(id) => self.bindings_of(*id),
            Watch::Namespaces(_) => return,
        };
        if affected.is_empty() {
            return;
        }
        let cause = match &what {
            Watch::Cgroups(_) if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) => {
                "cgroup appeared"
            }
            Watch::Cgroups(_) => "cgroup removed",
            Watch::Pins(_) => "pins changed",
            Watch::Namespaces(_) => return,
        };
        for i in affected {
            self.ensure(i, None, cause);
        }
        // Even with nothing changed in the kernel, the watched directories follow cgroups
        // appearing and going.
        self.after_change();
    }

    /// Ownership changed at `dir` (a chown: a new delegation, or one taken back): the
    /// bindings below it are checked again (escape row 19). A strict binding that became
    /// escapable keeps enforcing (removing it would free every process in it) and is named
    /// at error level; `status` and `verify` report it as escapable-by-migration.
    fn recheck_delegation(&mut self, dir: &Path) {
        let mut cache = cgroup::DelegationCache::default();
        for b in &self.config.bindings {
            if !b.cgroup.starts_with(dir) || b.cgroup == dir || !b.cgroup.is_dir() {
                continue;
            }
            let Some(d) = cgroup::delegation(&b.cgroup, &mut cache) else {
                continue;
            };
            if b.options.mode == crate::binding::policy::Mode::Strict && !b.options.allow_delegated
            {
                error!(
                    "binding {} is now {}: its processes can move out of it; bind {} instead, or take the delegation back",
                    b.cgroup.display(),
                    d.describe(),
                    d.boundary.display()
                );
            } else {
                warn!("binding {} is {}", b.cgroup.display(), d.describe());
            }
        }
    }

    /// Indexes of the bindings whose cgroup has id `id` now.
    fn bindings_of(&self, id: u64) -> Vec<usize> {
        let Some(path) = self.held.get(&id) else {
            return Vec::new();
        };
        (0..self.config.bindings.len())
            .filter(|&i| &self.config.bindings[i].cgroup == path)
            .collect()
    }
}

pub(super) fn pin_dir_mask() -> WatchMask {
    WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::DELETE_SELF | WatchMask::ONLYDIR
}
