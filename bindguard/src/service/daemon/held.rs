//! The bindings the daemon holds, by cgroup id: each one's pin directory is watched (a
//! removed pin is repaired), and when its cgroup is removed its pins go by the same path as
//! `detach`'s ([`enforcer::release_stale`]), looked at again by timer until the kernel has
//! detached its links: the event loop never sleeps.

use std::{path::Path, time::Duration};

use tracing::{error, info, warn};

use super::{
    Daemon, Msg,
    watches::{Watch, pin_dir_mask},
};
use crate::{
    binding::enforcer,
    kernel::{pins, progset},
};

/// How often and how long the pins of a removed cgroup are looked at again until the kernel
/// has detached its links (from a workqueue, ~10 ms here).
const STALE_RECHECK: Duration = Duration::from_millis(10);
const STALE_TRIES: u32 = 300;

impl Daemon {
    /// Watches the pin directory of the binding of `cgroup_id` (a removed pin is repaired).
    /// No fd is kept: the pins hold the links.
    pub(super) fn hold(&mut self, cgroup_id: u64, path: &Path) {
        let dir = pins::binding_dir(cgroup_id);
        self.held.insert(cgroup_id, path.to_path_buf());
        self.watch(&dir, Watch::Pins(cgroup_id), pin_dir_mask());
    }

    /// A configured cgroup is gone: the kernel detaches its links (from a workqueue, moments
    /// later); its pins are removed then, by `detach`'s own path, looked at again by timer
    /// until then.
    pub(super) fn release_gone(&mut self, path: &Path) {
        let gone: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, p)| *p == path)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if !self.releasing.contains(&id) {
                self.release_stale(id, path, 0);
            }
        }
    }

    pub(super) fn release_stale(&mut self, id: u64, path: &Path, tries: u32) {
        self.releasing.remove(&id);
        let later = |me: &mut Self, path: &Path| {
            me.releasing.insert(id);
            let (tx, path) = (me.tx.clone(), path.to_path_buf());
            tokio::spawn(async move {
                tokio::time::sleep(STALE_RECHECK).await;
                let _ = tx.send(Msg::Stale {
                    id,
                    path,
                    tries: tries + 1,
                });
            });
        };
        if self.held.get(&id).is_none_or(|p| p != path) {
            // Bound again meanwhile (same id) or already released.
            return;
        }
        if tries > STALE_TRIES {
            warn!(
                "the links of deleted cgroup {} (id {id}) are still attached after {} s; its pins are left (`bindguard detach` removes them once detached)",
                path.display(),
                (STALE_RECHECK * STALE_TRIES).as_secs()
            );
            self.held.remove(&id);
            return;
        }
        let lock = match pins::try_lock() {
            Ok(Some(lock)) => lock,
            // Another bindguard holds it: look again shortly instead of waiting here.
            Ok(None) => return later(self, path),
            Err(e) => {
                error!(
                    "cannot remove the pins of deleted cgroup {} (id {id}): {e:#}",
                    path.display()
                );
                self.held.remove(&id);
                return;
            }
        };
        match enforcer::release_stale(id, &lock) {
            Ok(enforcer::Stale::Removed) => {
                progset::remove_unused_old_sets(&lock);
                self.held.remove(&id);
                info!(
                    "- removed   pins of deleted cgroup {} (id {id})",
                    path.display()
                );
            }
            Ok(enforcer::Stale::NoPins) => {
                self.held.remove(&id);
            }
            Ok(enforcer::Stale::Attached) => later(self, path),
            Err(e) => {
                self.held.remove(&id);
                error!(
                    "removing the pins of deleted cgroup {} (id {id}): {e:#}",
                    path.display()
                );
            }
        }
    }
}
