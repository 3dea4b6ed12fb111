//! `bindguard daemon`: applies the config, then keeps it true.
//!
//! This file holds the entry ([`run`]), the event loop and what the loop does with the whole
//! config (start, SIGHUP reload, stop). Each kind of event has its room:
//!
//! - [`links`]: link events. A link event is handled in one pass over the bindings of that
//!   namespace, from what the daemon knows (no path walk, no pin opened): each affected
//!   binding is one policy write in the program set's storage (atomic per binding), all of
//!   them in a row, and one log line says how many and how long ("upB (ifindex 7) was
//!   deleted: closed 1000 binding(s) in 2.1 ms"); each binding at debug
//!   (`BINDGUARD_LOG=debug`). An RTM_NEWLINK that changes neither name nor ifindex (up, down,
//!   carrier) is skipped before any binding is looked at. What an event means for one binding
//!   is a pure function, [`links::decide`].
//! - [`netns`]: one rtnetlink socket (RTMGRP_LINK) per network namespace the config names,
//!   and namespace paths that appear or go.
//! - [`watches`]: inotify on the configured cgroups (a cgroup that appears is bound at once,
//!   one that is created by the daemon, `create = true`, is bound before anything can run in
//!   it), on namespace directories, and on /sys/fs/bpf/bindguard and each binding's pins:
//!   removed pins, detached links and outdated programs are repaired make-before-break (a new
//!   set of programs is attached before the old one goes).
//! - [`held`]: the bindings held by cgroup id; the pins of a removed cgroup go by the same
//!   path as `detach`'s, re-checked by timer until the kernel has detached its links: the
//!   event loop never sleeps.
//! - [`ensure`]: the attach path for one binding, as [`super::reconcile::compare`] decides.
//! - [`sockets`]: socket work that can block (SOCK_DESTROY, /proc walks), on threads of its
//!   own with a deadline.
//! - [`state`]: what the daemon knows of each binding (by its cgroup) and the reports made of
//!   it.
//!
//! - SIGHUP reloads (a bad config changes nothing), SIGTERM/SIGINT exit and leave every
//!   binding in place; a restart finds them unchanged and touches nothing.
//! - Descriptors: none per binding. The kernel holds each binding by its pins; the daemon
//!   holds one directory fd on bpffs, so bpffs cannot be unmounted under it (EBUSY; a lazy
//!   unmount leaves every pin in place), and opens what an event needs. At start the soft
//!   RLIMIT_NOFILE is raised to the hard limit. A binding that cannot be made is counted as
//!   failed in the readiness report (sd_notify STATUS and the "ready:" line, with the first
//!   reasons).
//! - Metrics (`--metrics ADDR` or the config's `metrics` key, off by default): served from a
//!   thread of their own ([`super::metrics`]), so that the probes answer while the loop works; the
//!   daemon publishes its bindings after each change, and is ready once the config was
//!   applied at start.
//!
//! Nothing is polled: between events the daemon sleeps in epoll with no timeout.
//!
//! May use: [`crate::binding`] (cgroups, namespaces, interfaces, the bind door, socket
//! passes), [`crate::kernel`] to hold a bpffs fd, watch and release pins and read and write
//! policies in the running build's program set, and the other services ([`config`],
//! [`super::reconcile`], [`super::metrics`], [`super::userexec`]). Never [`crate::commands`].

mod ensure;
mod held;
mod links;
mod netns;
mod sockets;
mod state;
mod watches;

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use inotify::{Inotify, WatchDescriptor, Watches};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use self::{links::Seen, netns::ns_label, state::Known, watches::Watch};
use crate::{
    Error,
    binding::{cgroup, enforcer, unbound},
    kernel::{pins, progset},
    service::{
        config::{self, Config},
        metrics::Metrics,
        reconcile::Namespaces,
    },
};

/// What the link watchers, and the loop's own timers and threads, report.
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
            known: Known::default(),
            links: HashMap::new(),
            set: None,
            bpffs: None,
            socket_work: HashSet::new(),
            releasing: HashSet::new(),
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
    /// Each configured binding, by cgroup: where it stands, what it was made as, why it failed.
    known: Known,
    /// Per namespace: its interfaces as the last link events said (an RTM_NEWLINK that
    /// changes neither name nor ifindex is skipped).
    links: HashMap<Option<PathBuf>, Seen>,
    /// The running build's program set, opened once (two map fds).
    set: Option<Arc<progset::Set>>,
    /// A directory fd on bpffs: the mount cannot go while the daemon runs.
    bpffs: Option<fs::File>,
    /// cgroups with socket work running off the event loop (one at a time each).
    socket_work: HashSet<PathBuf>,
    /// Removed cgroups (by id) whose pins wait for the kernel to detach their links.
    releasing: HashSet<u64>,
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
        if self.any_failed() {
            error!("{ready}");
        } else {
            info!("{ready}");
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
        // What the bindings it no longer names were is forgotten; where the others stand is
        // found again by the apply below.
        self.known.reload(&self.config);
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
