//! Network namespaces: one rtnetlink socket (RTMGRP_LINK) per namespace the config names,
//! opened inside that namespace on a thread that entered it (setns) and read on the event
//! loop, its events sent as [`Msg::Link`]; and a configured namespace path that appears, goes
//! or comes to name another namespace ([`Daemon::on_netns_changed`]).

use std::{
    fs,
    os::fd::{FromRawFd as _, IntoRawFd as _, OwnedFd},
    path::PathBuf,
    time::Instant,
};

use futures_util::StreamExt as _;
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{RouteNetlinkMessage, link::LinkAttribute},
    sys::{Socket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE},
};
use tracing::{error, info, warn};

use super::{Daemon, Msg};

/// RTMGRP_LINK: the multicast group of RTM_NEWLINK / RTM_DELLINK.
const RTMGRP_LINK: u32 = 1;

impl Daemon {
    /// Watches the links of every namespace the config names that is not watched yet (and
    /// exists: a missing one's bindings are closed, and its directory is watched for it).
    pub(super) fn start_link_watchers(&mut self) {
        let keys: Vec<Option<PathBuf>> = self
            .config
            .bindings
            .iter()
            .map(|b| b.netns.clone())
            .collect();
        for key in keys {
            if self.link_watchers.contains_key(&key) {
                continue;
            }
            if key.as_ref().is_some_and(|p| !p.exists()) {
                // Its bindings are closed; watched for in its directory.
                continue;
            }
            match self.spawn_link_watcher(key.clone()) {
                Ok(tasks) => {
                    self.link_watchers.insert(key, tasks);
                }
                Err(e) => error!(
                    "cannot watch the links of {}: {e:#}; its bindings are not followed",
                    ns_label(&key)
                ),
            }
        }
    }

    /// Opens an RTMGRP_LINK socket inside the namespace (on a thread that entered it) and
    /// reads it here.
    fn spawn_link_watcher(
        &mut self,
        key: Option<PathBuf>,
    ) -> anyhow::Result<Vec<tokio::task::AbortHandle>> {
        let (ns, _) = self.namespaces.get(key.as_deref())?;
        let fd: OwnedFd = ns.run(|| -> std::io::Result<OwnedFd> {
            let mut s = Socket::new(NETLINK_ROUTE)?;
            s.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
            // A burst of events (many interfaces at once) must not overrun the socket.
            let _ = s.set_rx_buf_sz(1 << 20);
            s.set_non_blocking(true)?;
            // SAFETY: the fd was just taken out of the socket, which no longer owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) })
        })??;
        // SAFETY: a netlink socket fd we own, handed over to the tokio socket.
        let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, mut messages) = rtnetlink::from_socket(socket);
        let conn = tokio::spawn(conn).abort_handle();
        let tx = self.tx.clone();
        let reader = tokio::spawn(async move {
            let _handle = handle;
            while let Some((msg, _)) = messages.next().await {
                let at = Instant::now();
                let (new, link) = match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (true, l),
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (false, l),
                    NetlinkPayload::Overrun(_) => {
                        let _ = tx.send(Msg::Resync(key.clone()));
                        continue;
                    }
                    _ => continue,
                };
                let name = link
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let _ = tx.send(Msg::Link {
                    ns: key.clone(),
                    new,
                    index: link.header.index,
                    name,
                    at,
                });
            }
            error!(
                "the link watcher of {} stopped; re-reading its interfaces",
                ns_label(&key)
            );
            let _ = tx.send(Msg::Resync(key));
        });
        Ok(vec![conn, reader.abort_handle()])
    }

    /// A configured namespace path appeared or went: forget what it named, watch the links of
    /// what it names now, and re-resolve its bindings (closed while it does not exist).
    pub(super) fn on_netns_changed(&mut self, path: PathBuf) {
        let key = Some(path.clone());
        let still = self.link_watchers.contains_key(&key)
            && self.namespaces.get(Some(&path)).is_ok_and(|(ns, _)| {
                fs::metadata(&path).is_ok_and(|m| {
                    use std::os::unix::fs::MetadataExt as _;
                    m.ino() == ns.ino
                })
            });
        if still {
            return;
        }
        if let Some(tasks) = self.link_watchers.remove(&key) {
            for t in tasks {
                t.abort();
            }
        }
        self.namespaces.forget(Some(&path));
        self.links.remove(&key);
        if path.exists() {
            info!("network namespace {} appeared", path.display());
        } else {
            warn!(
                "network namespace {} is gone: its bindings refuse every socket",
                path.display()
            );
        }
        self.start_link_watchers();
        for i in 0..self.config.bindings.len() {
            if self.config.bindings[i].netns == key {
                self.ensure(i, None, "network namespace changed");
            }
        }
        self.after_change();
    }
}

pub(super) fn ns_label(key: &Option<PathBuf>) -> String {
    match key {
        Some(p) => format!("network namespace {}", p.display()),
        None => "the daemon's network namespace".into(),
    }
}
