//! `bindguard daemon`: applies the config, then keeps it true.
//!
//! - Link events: one rtnetlink socket (RTMGRP_LINK) per network namespace the config names,
//!   opened inside that namespace on a dedicated thread (setns) and then read here. An
//!   interface that disappears closes its bindings at once (ifindex 0: every new socket is
//!   refused, never left pointing at a dead ifindex another interface may reuse); an interface
//!   that appears with the configured name, or is renamed to it, re-targets them in place
//!   (one map write).
//!   A link event is handled in one pass over the bindings of that namespace, from what the
//!   daemon knows (no path walk, no pin opened): each affected binding is one policy write in
//!   the program set's storage (atomic per binding), all of them in a row, and one log line
//!   says how many and how long ("upB (ifindex 7) was deleted: closed 1000 binding(s) in
//!   2.1 ms"); each binding at debug (`BINDGUARD_LOG=debug`). An RTM_NEWLINK that changes
//!   neither name nor ifindex (up, down, carrier) is skipped before any binding is looked at.
//! - cgroups: inotify on the nearest existing ancestor of every configured cgroup and on the
//!   directory above it (cgroupfs says nothing to a watch on a directory that is removed; its
//!   parent sees IN_DELETE); after every change the watches are walked again and a configured
//!   cgroup that appeared meanwhile is bound. A cgroup that appears is bound at once, one that
//!   is created by the daemon (`create = true`) is bound before anything can run in it.
//! - Pins: inotify on /sys/fs/bpf/bindguard and on each binding's directory; removed pins,
//!   detached links and outdated programs are repaired make-before-break (a new set of programs
//!   is attached before the old one goes). The pins of a removed cgroup go by the same path as
//!   `detach`'s ([`enforcer::release_stale`]), re-checked by timer until the kernel has
//!   detached its links: the event loop never sleeps.
//! - Socket work that can block (SOCK_DESTROY waits for the socket's lock, which its process
//!   may hold indefinitely; /proc walks) runs on threads of its own with a deadline; what did
//!   not finish is logged. Closing, re-targeting and binding new cgroups go on meanwhile.
//! - SIGHUP reloads (a bad config changes nothing), SIGTERM/SIGINT exit and leave every
//!   binding in place; a restart finds them unchanged and touches nothing.
//! - Descriptors: none per binding. The kernel holds each binding by its pins; the daemon
//!   holds one directory fd on bpffs, so bpffs cannot be unmounted under it (EBUSY; a lazy
//!   unmount leaves every pin in place), and opens what an event needs. At start the soft
//!   RLIMIT_NOFILE is raised to the hard limit. A binding that cannot be made is counted as
//!   failed in the readiness report (sd_notify STATUS and the "ready:" line, with the first
//!   reasons).
//!
//! - Metrics (`--metrics ADDR` or the config's `metrics` key, off by default): served from a
//!   thread of their own ([`metrics`]), so that the probes answer while the loop works; the
//!   daemon publishes its bindings after each change, and is ready once the config was
//!   applied at start.
//!
//! Nothing is polled: between events the daemon sleeps in epoll with no timeout.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsString,
    fs,
    os::fd::{FromRawFd as _, IntoRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
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
use tracing::{debug, error, info, warn};

use crate::{
    Error,
    binding::{
        SocketPass, cgroup, enforcer,
        netdev::{self, Interface},
        policy::Existing,
        sockreset, unbound,
    },
    kernel::{pins, progset},
    service::{
        config::{self, Config, OnRecreate},
        metrics::{self, Metrics},
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
    /// Look again whether the kernel has detached the links of removed cgroup `id`.
    Stale { id: u64, path: PathBuf, tries: u32 },
    /// Socket work for cgroup `path` ended (or gave up waiting).
    SocketWorkDone(PathBuf),
}

/// How long socket work (resetting sockets, `existing = "destroy"`) may take before it is
/// reported as not finished; it may still end later, and says so.
const SOCKET_WORK_DEADLINE: Duration = Duration::from_secs(5);
/// How often and how long the pins of a removed cgroup are looked at again until the kernel
/// has detached its links (from a workqueue, ~10 ms here).
const STALE_RECHECK: Duration = Duration::from_millis(10);
const STALE_TRIES: u32 = 300;

/// What an inotify watch is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watch {
    /// The nearest existing ancestor of configured cgroups, and the directory above it.
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

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Enforcing => "enforcing",
            State::WaitingForInterface => "waiting-for-interface",
            State::WaitingForCgroup => "waiting-for-cgroup",
            State::Failed => "failed",
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT, answering users' exec requests at `socket`.
/// `metrics_addr` (the command line's) overrides the config's `metrics` key.
pub fn run(
    config_path: Option<PathBuf>,
    socket: Option<&Path>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    super::log_to_stderr();
    enforcer::require_privileges("daemon")?;
    raise_nofile();
    let mount = cgroup::cgroup2_mount()?;
    let config = config::load(config_path.as_deref(), &mount)?;
    // Listening before the config is applied: /readyz answers "not ready" meanwhile, and a
    // port in use fails the start instead of a silent daemon without metrics. On a thread of
    // its own, not this loop's runtime: the loop does blocking work (an apply of thousands
    // of bindings, socket audits), and the probes must answer meanwhile.
    let metrics = match metrics_addr.or(config.metrics) {
        Some(addr) => {
            let m = Metrics::new();
            m.serve_on_thread(addr)?;
            Some(m)
        }
        None => None,
    };
    // Its own threads: a request never waits on the event loop, nor the loop on a request.
    let exec = super::userexec::serve(socket, config.grants.clone(), mount.clone())?;
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
            made: HashMap::new(),
            links: HashMap::new(),
            set: None,
            bpffs: None,
            socket_work: HashSet::new(),
            releasing: HashSet::new(),
            states: HashMap::new(),
            failures: HashMap::new(),
            unbound: Vec::new(),
            event_at: None,
            loaded: false,
            exec,
            metrics,
        };
        daemon.main_loop(rx, stream).await
    })
}

struct Daemon {
    /// Users' exec requests (grants replaced on reload); None where another daemon answers.
    exec: Option<Arc<super::userexec::Server>>,
    path: Option<PathBuf>,
    mount: PathBuf,
    config: Config,
    namespaces: Namespaces,
    /// Network namespaces (by config key) with a link watcher, and its tasks.
    link_watchers: HashMap<Option<PathBuf>, Vec<tokio::task::AbortHandle>>,
    tx: mpsc::UnboundedSender<Msg>,
    watches: Watches,
    watched: HashMap<WatchDescriptor, Watch>,
    /// cgroup id -> the configured cgroup path it was bound as. No fd: the pins hold the links.
    held: HashMap<u64, PathBuf>,
    /// binding index -> (cgroup id, ifindex) of the binding the daemon made or found whole on
    /// the running build's programs: the link events' fast path (one policy write each).
    made: HashMap<usize, (u64, u32)>,
    /// Per namespace: ifindex -> name, as the last link event said (an RTM_NEWLINK that
    /// changes neither is skipped).
    links: HashMap<Option<PathBuf>, HashMap<u32, String>>,
    /// The running build's program set, opened once (two map fds).
    set: Option<Arc<progset::Set>>,
    /// A directory fd on bpffs: the mount cannot go while the daemon runs.
    bpffs: Option<fs::File>,
    /// cgroups with socket work running off the event loop (one at a time each).
    socket_work: HashSet<PathBuf>,
    /// Removed cgroups (by id) whose pins wait for the kernel to detach their links.
    releasing: HashSet<u64>,
    /// binding index -> where it stands.
    states: HashMap<usize, State>,
    /// binding index -> why it failed (for the readiness report).
    failures: HashMap<usize, String>,
    /// The failed bindings as last published for `status`.
    unbound: Vec<unbound::Unbound>,
    /// When the link event being handled was read (its change's log line says how long the
    /// change took from there).
    event_at: Option<Instant>,
    /// Programs were loaded since the heap was last trimmed.
    loaded: bool,
    /// The metrics endpoint, if served.
    metrics: Option<Metrics>,
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
        let started = Instant::now();
        self.apply_all("start");
        self.after_change();
        self.hold_bpffs();
        if let Some(m) = &self.metrics {
            m.reconciled(started.elapsed());
            m.set_ready(true);
        }
        let ready = format!(
            "ready: {} (config: {}; {:.0} ms from start)",
            self.counts(),
            self.describe_files(),
            started.elapsed().as_secs_f64() * 1e3
        );
        if self.failures.is_empty() {
            info!("{ready}");
        } else {
            error!("{ready}");
        }
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&self.counts()),
        ]);
        self.publish_unbound();
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
        if !self.unbound.is_empty() {
            let _ = unbound::publish(Path::new(unbound::PATH), &[]);
        }
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
        let mut line = format!(
            "{} binding(s): {} enforcing, {} waiting for their interface, {} waiting for their cgroup, {} failed",
            self.config.bindings.len(),
            n(State::Enforcing),
            n(State::WaitingForInterface),
            n(State::WaitingForCgroup),
            n(State::Failed)
        );
        if n(State::Failed) > 0 {
            line.push_str(" (NOT bound: ");
            line.push_str(&self.failed_list());
            line.push(')');
        }
        line
    }

    /// The failed bindings, the first few with their reason.
    fn failed_list(&self) -> String {
        let mut failed: Vec<(&usize, &String)> = self
            .failures
            .iter()
            .filter(|(i, _)| self.states.get(i) == Some(&State::Failed))
            .collect();
        failed.sort();
        let mut out: Vec<String> = failed
            .iter()
            .take(3)
            .map(|(i, why)| format!("{}: {why}", self.config.bindings[**i].cgroup.display()))
            .collect();
        if failed.len() > 3 {
            out.push(format!("and {} more", failed.len() - 3));
        }
        out.join("; ")
    }

    /// Binding `i` could not be made: counted, and its reason kept for the report.
    fn fail(&mut self, i: usize, why: String) {
        self.states.insert(i, State::Failed);
        self.made.remove(&i);
        self.failures.insert(i, why);
    }

    /// Keeps a directory of bpffs open, so that bpffs is not unmounted under the bindings (its
    /// pins would go with the mount, and every link with them).
    fn hold_bpffs(&mut self) {
        if self.bpffs.is_none() && pins::bpffs_mounted() {
            self.bpffs = fs::File::open(pins::root()).ok();
        }
    }

    /// The running build's program set (opened once; None until some binding made it).
    fn current_set(&mut self) -> Option<Arc<progset::Set>> {
        if self.set.is_none() {
            self.set = enforcer::current_set().ok().map(Arc::new);
        }
        self.set.clone()
    }

    fn publish_status(&mut self) {
        notify(&[sd_notify::NotifyState::Status(&self.counts())]);
        self.publish_unbound();
        self.publish_metrics();
    }

    /// What `/metrics` exposes: every configured binding by mode and state, and the kernel
    /// counters of those the daemon holds (labelled by their configured cgroup).
    fn publish_metrics(&self) {
        let Some(m) = &self.metrics else { return };
        let mut snap = metrics::Snapshot::default();
        for (i, b) in self.config.bindings.iter().enumerate() {
            let state = self.states.get(&i).copied().unwrap_or(State::Failed);
            *snap
                .bindings
                .entry((b.options.mode.as_str(), state.label()))
                .or_default() += 1;
            if matches!(state, State::Enforcing | State::WaitingForInterface)
                && let Some((id, _)) = self.made.get(&i)
            {
                snap.bound.push(metrics::Bound {
                    cgroup_id: *id,
                    labels: vec![("cgroup", b.cgroup.display().to_string())],
                });
            }
        }
        m.publish(snap);
    }

    /// Keeps `status`'s list of configured bindings that are not bound
    /// ([`crate::binding::unbound`]) equal to the failed ones.
    fn publish_unbound(&mut self) {
        let mut now: Vec<unbound::Unbound> = self
            .failures
            .iter()
            .filter(|(i, _)| self.states.get(i) == Some(&State::Failed))
            .map(|(i, why)| {
                let b = &self.config.bindings[*i];
                unbound::Unbound {
                    cgroup: b.cgroup.clone(),
                    origin: b.origin(),
                    why: why.clone(),
                }
            })
            .collect();
        now.sort_by(|a, b| a.origin.cmp(&b.origin));
        if now == self.unbound {
            return;
        }
        match unbound::publish(Path::new(unbound::PATH), &now) {
            Ok(()) => self.unbound = now,
            Err(e) => warn!("cannot write {}: {e}", unbound::PATH),
        }
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
            Msg::Stale { id, path, tries } => self.release_stale(id, &path, tries),
            Msg::SocketWorkDone(path) => {
                self.socket_work.remove(&path);
            }
            Msg::Resync(ns) => {
                warn!(
                    "link events of {} were lost; re-reading its interfaces",
                    ns_label(&ns)
                );
                self.links.remove(&ns);
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

    /// A link event: every binding of the namespace that it concerns is closed or re-targeted
    /// in one pass, each by one policy write. Bindings the daemon has not made whole on the
    /// running build's programs go through [`Daemon::ensure`] (the attach path).
    fn on_link(&mut self, ns: &Option<PathBuf>, new: bool, index: u32, name: &str, at: Instant) {
        let seen = self.links.entry(ns.clone()).or_default();
        if new && seen.get(&index).is_some_and(|n| n == name) {
            // Up, down, carrier, MTU...: nothing a binding depends on.
            return;
        }
        let kind = match (new, seen.contains_key(&index)) {
            (false, _) => "deleted",
            (true, true) => "renamed",
            (true, false) => "new",
        };
        if new {
            seen.insert(index, name.to_string());
        } else {
            seen.remove(&index);
        }
        if let Some(m) = &self.metrics {
            m.interface_event(kind);
        }
        let (cookie, ino) = match self.namespaces.get(ns.as_deref()) {
            Ok((n, cookie)) => (*cookie, n.ino),
            Err(_) => return,
        };
        let set = self.current_set();
        let (mut closed, mut retargeted) = (0usize, 0usize);
        let mut slow: Vec<(usize, Interface)> = Vec::new();
        let mut resets: Vec<usize> = Vec::new();
        for i in 0..self.config.bindings.len() {
            let b = &self.config.bindings[i];
            if &b.netns != ns {
                continue;
            }
            let wanted = new && name == b.dev;
            let made = self.made.get(&i).copied();
            // Only bindings this event can concern: those of the interface's name, and those
            // the daemon last left on this ifindex.
            if !wanted && made.is_none_or(|(_, at_index)| at_index != index || index == 0) {
                continue;
            }
            let target = if wanted {
                Interface {
                    name: b.dev.clone(),
                    ifindex: index,
                    netns_cookie: cookie,
                    netns_ino: ino,
                }
            } else {
                // Deleted, or renamed away from the configured name: close, never keep a
                // dead ifindex that root may give to another interface.
                netdev::closed(&b.dev, cookie, ino)
            };
            let (Some((id, _)), Some(set)) = (made, set.as_ref()) else {
                if self.states.get(&i) != Some(&State::WaitingForCgroup) {
                    slow.push((i, target));
                }
                continue;
            };
            // The kernel's value, not the daemon's memory, decides (one lookup).
            let Ok(have) = set.read_policy(id) else {
                slow.push((i, target));
                continue;
            };
            if !wanted && have.ifindex != index {
                self.made.insert(i, (id, have.ifindex));
                continue;
            }
            let lsm = have.has(bindguard_common::flags::LSM);
            let want = crate::binding::policy::policy_for(&target, &b.options, id, lsm);
            if have == want {
                continue;
            }
            if have.object_hash != want.object_hash
                || have.netns_cookie != want.netns_cookie
                || crate::binding::policy::mode_of(&have) != b.options.mode
            {
                slow.push((i, target));
                continue;
            }
            // One map update: each new socket meets the old policy or the new one.
            if let Err(e) = set.write_policy(id, &want) {
                debug!("{}: {e:#}; through the attach path", b.cgroup.display());
                slow.push((i, target));
                continue;
            }
            debug!(
                "~ retarget  {} -> {} (was ifindex {})",
                b.cgroup.display(),
                reconcile::describe(&target),
                have.ifindex
            );
            self.made.insert(i, (id, target.ifindex));
            self.states.insert(
                i,
                if target.ifindex == 0 {
                    State::WaitingForInterface
                } else {
                    State::Enforcing
                },
            );
            if target.ifindex == 0 {
                closed += 1;
            } else {
                retargeted += 1;
                if have.ifindex != target.ifindex && b.on_recreate == OnRecreate::ResetSockets {
                    resets.push(i);
                }
            }
        }
        let cause = if !new {
            format!("{name} (ifindex {index}) was deleted")
        } else if self
            .config
            .bindings
            .iter()
            .any(|b| &b.netns == ns && b.dev == name)
        {
            format!("{name} appeared (ifindex {index})")
        } else {
            format!("ifindex {index} was renamed to {name}")
        };
        let fast = closed + retargeted;
        let mut changed = fast > 0;
        let slow_count = slow.len();
        self.event_at = Some(at);
        for (i, t) in slow {
            changed |= self.ensure(i, Some(t), &cause);
        }
        self.event_at = None;
        if fast > 0 || slow_count > 0 {
            let mut what = Vec::new();
            if closed > 0 {
                what.push(format!("closed {closed} binding(s)"));
            }
            if retargeted > 0 {
                what.push(format!("re-targeted {retargeted} binding(s)"));
            }
            if slow_count > 0 {
                what.push(format!("{slow_count} through the attach path"));
            }
            info!(
                "{cause}: {} in {:.2} ms ({} us after the event)",
                what.join(", "),
                at.elapsed().as_secs_f64() * 1e3,
                at.elapsed().as_micros()
            );
        }
        for i in resets {
            self.reset_sockets(i);
        }
        if changed {
            self.publish_status();
            if slow_count > 0 {
                self.after_change();
            }
        }
        if let Some(m) = &self.metrics
            && (fast > 0 || slow_count > 0)
        {
            m.reconciled(at.elapsed());
        }
    }

    /// Makes binding `i` what the config says, with `iface` when the caller knows it (a link
    /// event), else resolved now. Returns whether the kernel was changed.
    fn ensure(&mut self, i: usize, iface: Option<Interface>, cause: &str) -> bool {
        let b = self.config.bindings[i].clone();
        let cg = match cgroup::resolve(&b.cgroup) {
            Ok(cg) => cg,
            Err(e) if Error::is_cgroup_missing(&e) => {
                if b.create {
                    if let Err(e) = fs::create_dir_all(&b.cgroup) {
                        error!("cannot create cgroup {}: {e}", b.cgroup.display());
                        self.fail(i, format!("cannot create the cgroup: {e}"));
                        return false;
                    }
                    info!("created cgroup {}", b.cgroup.display());
                    match cgroup::resolve(&b.cgroup) {
                        Ok(cg) => cg,
                        Err(e) => {
                            error!("{e:#}");
                            self.fail(i, crate::error::one_line(&e));
                            return false;
                        }
                    }
                } else {
                    self.made.remove(&i);
                    self.failures.remove(&i);
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
                self.fail(i, crate::error::one_line(&e));
                return false;
            }
        };
        let iface = match iface {
            Some(i) => i,
            None => match reconcile::desired_interface(&b, &mut self.namespaces) {
                Ok(i) => i,
                Err(e) => {
                    error!("binding at {}: {e:#}", b.origin());
                    self.fail(i, crate::error::one_line(&e));
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
            self.failures.remove(&i);
            self.made.insert(i, (cg.id, iface.ifindex));
            if self.held.get(&cg.id) != Some(&b.cgroup) {
                self.hold(cg.id, &b.cgroup);
            }
            return false;
        }
        // The socket pass runs off the loop (below): a flap is not held up by a walk of /proc.
        let bound = match crate::binding::bind(&cg, &iface, &b.options, SocketPass::Later) {
            Ok(bound) => bound,
            Err(e) => {
                error!(
                    "{} {} -> {} failed: {e:#}",
                    action.symbol(),
                    cg.path.display(),
                    reconcile::describe(&iface)
                );
                self.fail(i, crate::error::one_line(&e));
                return false;
            }
        };
        self.states.insert(i, state);
        self.failures.remove(&i);
        self.made.insert(i, (cg.id, iface.ifindex));
        if action != Action::Retarget {
            self.loaded = true;
            // A set may have been loaded anew (its old pins removed by someone): open it again.
            self.set = None;
        }
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
        // A link event says how many it changed in one line; each binding only at debug.
        if self.event_at.is_some() {
            debug!("{line}");
        } else {
            info!("{line}");
        }
        self.hold(cg.id, &b.cgroup);
        if b.options.existing == Existing::Destroy && iface.ifindex != 0 {
            let what = format!("ending the unbound sockets of {}", cg.path.display());
            self.off_loop(cg.path.clone(), what, move || {
                // What the pass could not end is an error (logged; `status` shows
                // sockets-unreached), the rest is done all the same.
                let ended = bound.end_existing()?.check()?;
                Ok(if ended == 0 {
                    String::new()
                } else {
                    format!(
                        "ended {ended} unbound socket(s) of {}",
                        bound.cgroup.path.display()
                    )
                })
            });
        }
        let recreated = iface.ifindex != 0 && before.is_some_and(|p| p.ifindex != iface.ifindex);
        if recreated && b.on_recreate == OnRecreate::ResetSockets {
            self.reset_sockets(i);
        }
        true
    }

    /// `on_recreate = "reset-sockets"` for binding `i`, off the event loop.
    fn reset_sockets(&mut self, i: usize) {
        let b = &self.config.bindings[i];
        let Some(&(_, ifindex)) = self.made.get(&i) else {
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
    fn off_loop(
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

    /// Watches the pin directory of the binding of `cgroup_id` (a removed pin is repaired).
    /// No fd is kept: the pins hold the links.
    fn hold(&mut self, cgroup_id: u64, path: &Path) {
        let dir = pins::binding_dir(cgroup_id);
        self.held.insert(cgroup_id, path.to_path_buf());
        self.watch(&dir, Watch::Pins(cgroup_id), pin_dir_mask());
    }

    /// A configured cgroup is gone: the kernel detaches its links (from a workqueue, moments
    /// later); its pins are removed then, by `detach`'s own path, looked at again by timer
    /// until then.
    fn release_gone(&mut self, path: &Path) {
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

    fn release_stale(&mut self, id: u64, path: &Path, tries: u32) {
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

    /// Every binding, each interface resolved once for the pass (a change meanwhile is a link
    /// event, handled after it).
    fn apply_all(&mut self, cause: &str) {
        self.namespaces.cache_interfaces(true);
        for i in 0..self.config.bindings.len() {
            self.ensure(i, None, cause);
        }
        self.namespaces.cache_interfaces(false);
    }

    fn after_change(&mut self) {
        self.settle();
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
    fn settle(&mut self) {
        for _ in 0..16 {
            let added = self.refresh_watches();
            let appeared: Vec<usize> = (0..self.config.bindings.len())
                .filter(|i| self.states.get(i) == Some(&State::WaitingForCgroup))
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

    fn on_fs(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<OsString>) {
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
                    crate::error::one_line(&e)
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
        if new.metrics != self.config.metrics {
            warn!("the metrics address changed in the config; it takes effect at the next start");
        }
        if let Some(exec) = &self.exec {
            exec.set_grants(new.grants.clone());
        }
        self.config = new;
        // Indexes name bindings of the old config: forget what was known by them.
        self.states.clear();
        self.made.clear();
        self.failures.clear();
        for path in dropped {
            self.held.retain(|_, p| *p != path);
            match enforcer::detach(&path) {
                Ok(_) => info!("- detach    {} (no longer in the config)", path.display()),
                Err(e) if crate::error::exit_code(&e) == 2 || Error::is_not_bound(&e) => {}
                Err(e) => error!(
                    "- detach    {} failed: {}",
                    path.display(),
                    crate::error::one_line(&e)
                ),
            }
        }
        self.start_link_watchers();
        let started = Instant::now();
        self.apply_all("reload");
        self.after_change();
        if let Some(m) = &self.metrics {
            m.reconciled(started.elapsed());
        }
        info!("reloaded: {}", self.counts());
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&self.counts()),
        ]);
    }
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

/// Raises the soft limit of open files to the hard one (systemd's advice to programs that need
/// many: the soft limit of a service stays 1,024 for select()'s sake). The daemon holds no
/// descriptor per binding, but an event over thousands of bindings opens what it needs.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                warn!(
                    "cannot raise the open-files limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
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
