//! Socket work off the event loop: ending a cgroup's unbound sockets (`existing =
//! "destroy"`) and `on_recreate = "reset-sockets"`. SOCK_DESTROY waits for the socket's lock,
//! which its process may hold indefinitely, and /proc walks take their time: each runs on a
//! thread of its own with a deadline, and what did not finish is logged. Closing,
//! re-targeting and binding new cgroups go on meanwhile.

use std::{path::PathBuf, time::Duration};

use tracing::{error, info, warn};

use super::{Daemon, Msg};
use crate::binding::sockreset;

/// How long socket work (resetting sockets, `existing = "destroy"`) may take before it is
/// reported as not finished; it may still end later, and says so.
const SOCKET_WORK_DEADLINE: Duration = Duration::from_secs(5);

impl Daemon {
    /// `on_recreate = "reset-sockets"` for binding `i`, off the event loop.
    pub(super) fn reset_sockets(&mut self, i: usize) {
        let b = &self.config.bindings[i];
        let Some((_, ifindex)) = self.known.made(&b.cgroup) else {
            return;
        };
        let path = b.cgroup.clone();
        let ns = match self.namespaces.get(b.netns.as_deref()) {
            Ok((ns, _)) => ns.try_clone(),
            Err(e) => Err(e),
        };
        let ns = match ns {
            Ok(ns) => ns,
            Err(e) => {
                error!("resetting the sockets of {}: {e:#}", path.display());
                return;
            }
        };
        let what = format!("resetting the sockets of {}", path.display());
        let p = path.clone();
        self.off_loop(path, what, move || {
            let n = sockreset::reset_sockets(&p, ifindex, &ns)?.check()?;
            Ok(if n == 0 {
                String::new()
            } else {
                format!(
                    "reset {n} socket(s) of {} still bound to the old interface",
                    p.display()
                )
            })
        });
    }

    /// Runs socket work for cgroup `cgroup` on a thread of its own: it may block for as long as
    /// a process holds a socket's lock (SOCK_DESTROY waits for it), which must never hold up
    /// enforcement. Past [`SOCKET_WORK_DEADLINE`] it is reported as not finished (and again
    /// when it ends). One at a time per cgroup: a later request while one runs is dropped,
    /// and said so.
    pub(super) fn off_loop(
        &mut self,
        cgroup: PathBuf,
        what: String,
        work: impl FnOnce() -> anyhow::Result<String> + Send + 'static,
    ) {
        if !self.socket_work.insert(cgroup.clone()) {
            warn!("{what}: skipped, the previous socket work of that cgroup has not finished");
            return;
        }
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("socket-work".into())
            .spawn(move || {
                let _ = done_tx.send(work());
            });
        if let Err(e) = spawned {
            error!("{what}: cannot start a thread: {e}");
            self.socket_work.remove(&cgroup);
            return;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let report = |r: Result<anyhow::Result<String>, _>, late: bool| match r {
                Ok(Ok(line)) if line.is_empty() => {}
                Ok(Ok(line)) if late => warn!("{line} (finished late)"),
                Ok(Ok(line)) => info!("{line}"),
                Ok(Err(e)) => error!("{what}: {e:#}"),
                Err(_) => error!("{what}: the worker thread ended without a result"),
            };
            match tokio::time::timeout(SOCKET_WORK_DEADLINE, &mut done_rx).await {
                Ok(r) => report(r, false),
                Err(_) => {
                    error!(
                        "{what} did not finish within {} s (a process of the cgroup holds a socket's lock?); bindings go on meanwhile",
                        SOCKET_WORK_DEADLINE.as_secs()
                    );
                    report(done_rx.await, true);
                }
            }
            let _ = tx.send(Msg::SocketWorkDone(cgroup));
        });
    }
}
