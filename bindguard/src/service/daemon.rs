//! `bindguard daemon`: applies the config, then keeps it true.
//!
//! - Link events: one rtnetlink socket (RTMGRP_LINK) per network namespace the config names,
//!   opened inside that namespace on a dedicated thread (setns) and then read here. An
//!   interface that disappears closes its bindings at once (ifindex 0: every new socket is
//!   refused, never left pointing at a dead ifindex another interface may reuse); an interface
//!   that appears with the configured name, or is renamed to it, re-targets them in place
//!   (one map write).
//! - cgroups: inotify on the nearest existing ancestor of every configured cgroup; a cgroup
//!   that appears is bound at once, one that is created by the daemon (`create = true`) is
//!   bound before anything can run in it.
//! - Pins: inotify on /sys/fs/bpf/bindguard and on each binding's directory; removed pins,
//!   detached links and outdated programs are repaired make-before-break (a new set of programs
//!   is attached before the old one goes).
//! - SIGHUP reloads (a bad config changes nothing), SIGTERM/SIGINT exit and leave every
//!   binding in place; a restart finds them unchanged and touches nothing.
//! - While running it holds an fd of every link of its bindings, so an unmounted bpffs or a
//!   removed pin does not unbind anything.
//!
//! Nothing is polled: between events the daemon sleeps in epoll with no timeout.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    fs,
    os::fd::{FromRawFd as _, IntoRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{RouteNetlinkMessage, link::LinkAttribute},
    sys::{Socket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    Error,
    binding::{
        cgroup, enforcer,
        netdev::{self, Interface},
        sockreset,
    },
    kernel::{link, pins},
    service::{
        config::{self, Config, OnRecreate},
        reconcile::{self, Action, Namespaces},
    },
};

/// RTMGRP_LINK: the multicast group of RTM_NEWLINK / RTM_DELLINK.
const RTMGRP_LINK: u32 = 1;

/// What the link watchers report.
#[derive(Debug)]
enum Msg {
    Link {
        ns: Option<PathBuf>,
        new: bool,
        index: u32,
        name: String,
        at: Instant,
    },
    /// Events were lost (socket overrun) or the socket failed: re-read everything there.
    Resync(Option<PathBuf>),
    /// A configured network namespace path appeared, went, or names another namespace.
    NetnsChanged(PathBuf),
}

/// What an inotify watch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watch {
    /// The nearest existing ancestor of configured cgroups.
    Cgroups(PathBuf),
    /// A binding's pin directory (pins removed, the directory removed, bpffs unmounted).
    Pins(u64),
    /// The directory of configured network namespace paths (/run/netns).
    Namespaces(PathBuf),
}

/// Where a configured binding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Enforcing,
    WaitingForInterface,
    WaitingForCgroup,
    Failed,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    enforcer::require_privileges("daemon")?;
    let mount = cgroup::cgroup2_mount()?;
    let config = config::load(config_path.as_deref(), &mount)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let inotify = Inotify::init().context("inotify_init")?;
        let stream = inotify
            .into_event_stream(vec![0u8; 16 * 1024])
            .context("inotify event stream")?;
        let mut daemon = Daemon {
            path: config_path,
            mount,
            config,
            namespaces: Namespaces::default(),
            link_watchers: HashMap::new(),
            tx,
            watches: stream.watches(),
            watched: HashMap::new(),
            held: HashMap::new(),
            states: HashMap::new(),
            event_at: None,
            loaded: false,
        };
        daemon.main_loop(rx, stream).await
    })
}

struct Daemon {
    path: Option<PathBuf>,
    mount: PathBuf,
    config: Config,
    namespaces: Namespaces,
    /// Network namespaces (by config key) with a link watcher, and its tasks.
    link_watchers: HashMap<Option<PathBuf>, Vec<tokio::task::AbortHandle>>,
    tx: mpsc::UnboundedSender<Msg>,
    watches: Watches,
    watched: HashMap<WatchDescriptor, Watch>,
    /// cgroup id -> fds of its links (and the cgroup path, for messages).
    held: HashMap<u64, (PathBuf, Vec<OwnedFd>)>,
    /// binding index -> where it stands.
    states: HashMap<usize, State>,
    /// When the link event being handled was read (its change's log line says how long the
    /// change took from there).
    event_at: Option<Instant>,
    /// Programs were loaded since the heap was last trimmed.
    loaded: bool,
}

impl Daemon {
    async fn main_loop(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        mut inotify: inotify::EventStream<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        // Link watchers first: an interface that appears while the config is applied is
        // seen either by the apply or by an event afterwards.
        self.start_link_watchers();
        self.apply_all("start");
        self.after_change();
        info!(
            "ready: {} (config: {})",
            self.counts(),
            self.describe_files()
        );
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&self.counts()),
        ]);
        loop {
            tokio::select! {
                Some(msg) = rx.recv() => self.on_msg(msg),
                Some(ev) = inotify.next() => match ev {
                    Ok(ev) => self.on_fs(ev.wd, ev.mask, ev.name),
                    Err(e) => warn!("inotify: {e}"),
                },
                _ = hup.recv() => self.reload(),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        info!(
            "stopping; every binding stays in the kernel ({})",
            self.counts()
        );
        Ok(())
    }

    fn describe_files(&self) -> String {
        if self.config.files.is_empty() {
            "no files".into()
        } else {
            self.config
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    fn counts(&self) -> String {
        let n = |s: State| self.states.values().filter(|&&v| v == s).count();
        format!(
            "{} binding(s): {} enforcing, {} waiting for their interface, {} waiting for their cgroup, {} failed",
            self.config.bindings.len(),
            n(State::Enforcing),
            n(State::WaitingForInterface),
            n(State::WaitingForCgroup),
            n(State::Failed)
        )
    }

    fn publish_status(&self) {
        notify(&[sd_notify::NotifyState::Status(&self.counts())]);
    }

    fn start_link_watchers(&mut self) {
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

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Link {
                ns,
                new,
                index,
                name,
                at,
            } => self.on_link(&ns, new, index, &name, at),
            Msg::NetnsChanged(path) => self.on_netns_changed(path),
            Msg::Resync(ns) => {
                warn!(
                    "link events of {} were lost; re-reading its interfaces",
                    ns_label(&ns)
                );
                for i in 0..self.config.bindings.len() {
                    if self.config.bindings[i].netns == ns {
                        self.ensure(i, None, "resync");
                    }
                }
                self.after_change();
            }
        }
    }

    /// A configured namespace path appeared or went: forget what it named, watch the links of
    /// what it names now, and re-resolve its bindings (closed while it does not exist).
    fn on_netns_changed(&mut self, path: PathBuf) {
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

    fn on_link(&mut self, ns: &Option<PathBuf>, new: bool, index: u32, name: &str, at: Instant) {
        let (cookie, ino) = match self.namespaces.get(ns.as_deref()) {
            Ok((n, cookie)) => (*cookie, n.ino),
            Err(_) => return,
        };
        let mut changed = false;
        for i in 0..self.config.bindings.len() {
            let b = &self.config.bindings[i];
            if &b.netns != ns {
                continue;
            }
            let Ok(cg) = cgroup::resolve(&b.cgroup) else {
                continue;
            };
            let current = enforcer::read_policy(&pins::binding_dir(cg.id))
                .ok()
                .map(|p| p.ifindex);
            let target = if new && name == b.dev {
                Some(Interface {
                    name: b.dev.clone(),
                    ifindex: index,
                    netns_cookie: cookie,
                    netns_ino: ino,
                })
            } else if current == Some(index) && index != 0 {
                // Deleted, or renamed away from the configured name: close, never keep a
                // dead ifindex that root may give to another interface.
                Some(netdev::closed(&b.dev, cookie, ino))
            } else {
                None
            };
            if let Some(t) = target {
                let cause = match (new, name == b.dev) {
                    (true, true) => format!("{name} appeared (ifindex {index})"),
                    (true, false) => format!("ifindex {index} was renamed to {name}"),
                    (false, _) => format!("{name} (ifindex {index}) was deleted"),
                };
                self.event_at = Some(at);
                changed |= self.ensure(i, Some(t), &cause);
                self.event_at = None;
            }
        }
        if changed {
            self.after_change();
        }
    }

    /// Makes binding `i` what the config says, with `iface` when the caller knows it (a link
    /// event), else resolved now. Returns whether the kernel was changed.
    fn ensure(&mut self, i: usize, iface: Option<Interface>, cause: &str) -> bool {
        let b = self.config.bindings[i].clone();
        let cg = match cgroup::resolve(&b.cgroup) {
            Ok(cg) => cg,
            Err(e) if matches!(e.downcast_ref::<Error>(), Some(Error::CgroupMissing { .. })) => {
                if b.create {
                    if let Err(e) = fs::create_dir_all(&b.cgroup) {
                        error!("cannot create cgroup {}: {e}", b.cgroup.display());
                        self.states.insert(i, State::Failed);
                        return false;
                    }
                    info!("created cgroup {}", b.cgroup.display());
                    match cgroup::resolve(&b.cgroup) {
                        Ok(cg) => cg,
                        Err(e) => {
                            error!("{e:#}");
                            self.states.insert(i, State::Failed);
                            return false;
                        }
                    }
                } else {
                    self.release_gone(&b.cgroup);
                    if self.states.insert(i, State::WaitingForCgroup)
                        != Some(State::WaitingForCgroup)
                    {
                        info!(
                            "? waiting   {} (cgroup does not exist; bound when it appears)",
                            b.cgroup.display()
                        );
                    }
                    return false;
                }
            }
            Err(e) => {
                error!("binding at {}: {e:#}", b.origin());
                self.states.insert(i, State::Failed);
                return false;
            }
        };
        let iface = match iface {
            Some(i) => i,
            None => match reconcile::desired_interface(&b, &mut self.namespaces) {
                Ok(i) => i,
                Err(e) => {
                    error!("binding at {}: {e:#}", b.origin());
                    self.states.insert(i, State::Failed);
                    return false;
                }
            },
        };
        let dir = pins::binding_dir(cg.id);
        let before = enforcer::read_policy(&dir).ok();
        let (action, why) = reconcile::compare(&cg, &iface, &b);
        let state = if iface.ifindex == 0 {
            State::WaitingForInterface
        } else {
            State::Enforcing
        };
        if action == Action::Unchanged {
            self.states.insert(i, state);
            if !self.held.contains_key(&cg.id) {
                self.hold(cg.id, &cg.path);
            }
            return false;
        }
        if let Err(e) = reconcile::bind(&cg, &iface, &b) {
            error!(
                "{} {} -> {} failed: {e:#}",
                action.symbol(),
                cg.path.display(),
                reconcile::describe(&iface)
            );
            self.states.insert(i, State::Failed);
            return false;
        }
        self.states.insert(i, state);
        self.loaded |= action != Action::Retarget;
        let mut line = format!(
            "{} {} -> {} ({cause}",
            action.symbol(),
            cg.path.display(),
            reconcile::describe(&iface)
        );
        if !why.is_empty() {
            line.push_str("; ");
            line.push_str(&why);
        }
        if let Some(at) = self.event_at {
            line.push_str(&format!(
                ", {} us after the event",
                at.elapsed().as_micros()
            ));
        }
        line.push(')');
        info!("{line}");
        self.hold(cg.id, &cg.path);
        let recreated = iface.ifindex != 0 && before.is_some_and(|p| p.ifindex != iface.ifindex);
        if recreated && b.on_recreate == OnRecreate::ResetSockets {
            let reset = self
                .namespaces
                .get(b.netns.as_deref())
                .and_then(|(ns, _)| sockreset::reset_sockets(&cg.path, iface.ifindex, ns))
                .and_then(sockreset::Pass::check);
            match reset {
                Ok(0) => {}
                Ok(n) => info!(
                    "reset {n} socket(s) of {} still bound to the old interface",
                    cg.path.display()
                ),
                Err(e) => error!("resetting the sockets of {}: {e:#}", cg.path.display()),
            }
        }
        true
    }

    /// Keeps an fd of every link of the binding of `cgroup_id` (replacing older ones: the
    /// links of a replaced binding must be let go, or they would stay attached).
    fn hold(&mut self, cgroup_id: u64, path: &Path) {
        let dir = pins::binding_dir(cgroup_id);
        let fds: Vec<OwnedFd> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
            .filter_map(|e| link::open_pinned(&e.path()).ok())
            .collect();
        self.held.insert(cgroup_id, (path.to_path_buf(), fds));
        self.watch(&dir, Watch::Pins(cgroup_id), pin_dir_mask());
    }

    /// A configured cgroup is gone: its links were detached by the kernel; let go of them and
    /// remove the pins left behind.
    fn release_gone(&mut self, path: &Path) {
        let gone: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (p, _))| p == path)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.held.remove(&id);
            let dir = pins::binding_dir(id);
            // The kernel detaches a removed cgroup's links from a workqueue, moments later.
            let deadline = Instant::now() + std::time::Duration::from_millis(500);
            while dir.exists() && !enforcer::cgroup_gone(&dir) && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if dir.exists() && enforcer::cgroup_gone(&dir) {
                let _lock = pins::lock();
                match pins::remove_dir(&dir) {
                    Ok(()) => info!(
                        "- removed   pins of deleted cgroup {} (id {id})",
                        path.display()
                    ),
                    Err(e) => warn!("removing {}: {e:#}", dir.display()),
                }
            }
        }
    }

    fn apply_all(&mut self, cause: &str) {
        for i in 0..self.config.bindings.len() {
            self.ensure(i, None, cause);
        }
    }

    fn after_change(&mut self) {
        self.refresh_watches();
        self.publish_status();
        // Loading programs parses the kernel's BTF (megabytes, freed at once): give that
        // memory back so the resident size stays that of an idle daemon. (A retarget loads
        // nothing, and a trim costs about a millisecond.)
        // musl has no malloc_trim (and its allocator returns freed memory by itself).
        #[cfg(target_env = "gnu")]
        if std::mem::take(&mut self.loaded) {
            // SAFETY: malloc_trim only releases free heap memory.
            unsafe { libc::malloc_trim(0) };
        }
    }

    fn watch(&mut self, path: &Path, what: Watch, mask: WatchMask) {
        match self.watches.add(path, mask) {
            Ok(wd) => {
                self.watched.insert(wd, what);
            }
            Err(e) => warn!("cannot watch {}: {e}", path.display()),
        }
    }

    /// Watches the nearest existing ancestor of every configured cgroup: for its creation,
    /// its removal (cgroupfs sends no IN_DELETE_SELF for a removed cgroup) and its
    /// re-creation. Siblings coming and going wake the daemon for a name comparison only.
    fn refresh_watches(&mut self) {
        let mut want: HashMap<PathBuf, Watch> = HashMap::new();
        for b in &self.config.bindings {
            let mut dir = b.cgroup.parent().map(Path::to_path_buf);
            while let Some(d) = dir {
                if d.is_dir() {
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
        for (d, w) in want {
            self.watch(
                &d,
                w,
                WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_TO
                    | WatchMask::MOVED_FROM
                    | WatchMask::ONLYDIR,
            );
        }
    }

    fn on_fs(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<OsString>) {
        if mask.contains(EventMask::IGNORED) {
            self.watched.remove(&wd);
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

    /// Indexes of the bindings whose cgroup has id `id` now.
    fn bindings_of(&self, id: u64) -> Vec<usize> {
        let Some((path, _)) = self.held.get(&id) else {
            return Vec::new();
        };
        (0..self.config.bindings.len())
            .filter(|&i| &self.config.bindings[i].cgroup == path)
            .collect()
    }

    /// SIGHUP: a config that does not load changes nothing; a good one is applied, and the
    /// bindings it no longer names are detached.
    fn reload(&mut self) {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        notify(&reloading);
        let new = match config::load(self.path.as_deref(), &self.mount) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    "reload refused, the running bindings are kept: {}",
                    one_line(&e)
                );
                notify(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status(&self.counts()),
                ]);
                return;
            }
        };
        let kept: HashSet<PathBuf> = new.bindings.iter().map(|b| b.cgroup.clone()).collect();
        let dropped: Vec<PathBuf> = self
            .config
            .bindings
            .iter()
            .filter(|b| !kept.contains(&b.cgroup))
            .map(|b| b.cgroup.clone())
            .collect();
        self.config = new;
        self.states.clear();
        for path in dropped {
            self.held.retain(|_, (p, _)| *p != path);
            match enforcer::detach(&path) {
                Ok(_) => info!("- detach    {} (no longer in the config)", path.display()),
                Err(e) if crate::error::exit_code(&e) == 2 || is_not_bound(&e) => {}
                Err(e) => error!("- detach    {} failed: {}", path.display(), one_line(&e)),
            }
        }
        self.start_link_watchers();
        self.apply_all("reload");
        self.after_change();
        info!("reloaded: {}", self.counts());
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&self.counts()),
        ]);
    }
}

fn is_not_bound(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<Error>(), Some(Error::NotBound { .. }))
}

fn pin_dir_mask() -> WatchMask {
    WatchMask::DELETE | WatchMask::MOVED_FROM | WatchMask::DELETE_SELF | WatchMask::ONLYDIR
}

fn ns_label(key: &Option<PathBuf>) -> String {
    match key {
        Some(p) => format!("network namespace {}", p.display()),
        None => "the daemon's network namespace".into(),
    }
}

fn one_line(e: &anyhow::Error) -> String {
    match e.chain().find_map(|c| c.downcast_ref::<Error>()) {
        Some(typed) => typed.to_string(),
        None => format!("{e:#}"),
    }
}

/// sd_notify when started by systemd (NOTIFY_SOCKET set); a no-op otherwise.
fn notify(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        warn!("sd_notify: {e}");
    }
}
