//! `bindguard exec` without root: the daemon's unix socket, and the client that asks it.
//!
//! The request carries only what the user chooses (interface, mode, options), one JSON line
//! of at most 4 KiB, and a pidfd of the asking process (SCM_RIGHTS). Who asks is the
//! kernel's word: SO_PEERCRED's uid, gid and pid, the pidfd checked to be that pid, and the
//! process's supplementary groups. A granted request gets a root-owned cgroup
//! `<cgroup2>/bindguard.slice/exec-<uid>-<pid>[-n]`, outside every delegated subtree, bound
//! (strict attach refuses nothing there: its ancestors are root's), and the process moved
//! into it; the client then execs the command in place, so no root process stands between
//! the user and the program. The pidfd is alive after the move, so the pid moved was that
//! process's (a pid is not reused while its process lives).
//!
//! When the cgroup empties (cgroup.events, inotify) its binding is detached and the cgroup
//! removed; at start the daemon does the same for those left by a previous run and watches
//! the rest.

use std::{
    collections::HashMap,
    fs,
    io::{IoSlice, IoSliceMut, Read as _, Write as _},
    net::IpAddr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{
            fs::{MetadataExt as _, PermissionsExt as _},
            net::{UnixListener, UnixStream},
        },
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    Error,
    binding::{
        self, SocketPass,
        cgroup::{self, Cgroup},
        enforcer, netdev,
        netns::Netns,
        policy::{Dns, Maker, Mode, Options},
    },
    service::grants::{self, Asked, Caller, Grant, GrantOption},
};

/// Where the daemon listens (0666: anyone may ask; the grants decide).
pub const DEFAULT_SOCKET: &str = "/run/bindguard/bindguard.sock";
use crate::binding::cgroup::{USER_EXEC_PREFIX as PREFIX, USER_SLICE as SLICE};
const MAX_REQUEST: usize = 4096;
/// A client has this long to send its whole request.
const REQUEST_TIME: Duration = Duration::from_secs(2);
/// Requests handled at once; more wait in the listen backlog.
const MAX_ACTIVE: usize = 256;

/// What a request asks the daemon to do.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Bind the asking process (the default).
    #[default]
    Exec,
    /// List the asking user's exec bindings.
    List,
    /// End one of them (`end`: its name): kill what runs in it, release it.
    End,
    /// Bind one of the user's running processes (`pid`, its pidfd sent) in a new binding,
    /// ending the sockets it holds that do not obey it (`--existing destroy`).
    Move,
}

/// What a user asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub op: Op,
    /// For [`Op::End`]: the exec binding's name (`exec-<uid>-<pid>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// For [`Op::Move`]: the process to move (the request carries its pidfd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default)]
    pub dev: String,
    #[serde(default = "strict")]
    pub mode: String,
    #[serde(default)]
    pub allow_loopback: bool,
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

fn strict() -> String {
    Mode::Strict.as_str().into()
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The cgroup the caller now runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// [`Op::List`]: the asking user's exec bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<Session>,
}

/// One of a user's exec bindings, as `bindguard sessions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub name: String,
    pub cgroup: String,
    pub dev: String,
    pub mode: String,
    pub pids: Vec<i32>,
}

impl Reply {
    fn refused(why: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(why.into()),
            cgroup: None,
            sessions: Vec::new(),
        }
    }
}

/// The daemon's side: grants (replaced on reload), and the exec cgroups it watches.
pub struct Server {
    grants: RwLock<Vec<Grant>>,
    mount: PathBuf,
    active: AtomicUsize,
    /// The daemon's own network and user namespaces (device, inode): a request from another
    /// is refused (its interface names mean something else there).
    netns: (u64, u64),
    userns: (u64, u64),
    lifetime: Lifetime,
}

fn ns_id(path: &str) -> std::io::Result<(u64, u64)> {
    let m = fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl Server {
    /// Replaces the grants (a reloaded config).
    pub fn set_grants(&self, grants: Vec<Grant>) {
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = grants;
    }
}

/// Listens at `socket` (None: [`DEFAULT_SOCKET`]) and answers on threads of its own; first
/// removes the exec cgroups a previous run left empty and watches the others. The daemon's
/// event loop never waits on a request. Where another daemon already answers at the default
/// path, this one answers nothing (logged); at a path given, that is an error.
pub fn serve(
    socket: Option<&Path>,
    grants: Vec<Grant>,
    mount: PathBuf,
) -> anyhow::Result<Option<Arc<Server>>> {
    // Socket activation (deploy/systemd/bindguard.socket): the listener is systemd's, made
    // before the daemon starts, so a client that connects early waits instead of failing.
    if let Some(fd) = sd_notify::listen_fds().ok().and_then(|mut fds| fds.next()) {
        // SAFETY: systemd passed this listening socket to us (LISTEN_PID is ours).
        let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
        return start(listener, "the socket systemd passed", grants, mount).map(Some);
    }
    let given = socket.is_some();
    let socket = socket.unwrap_or(Path::new(DEFAULT_SOCKET));
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file nobody answers at is a previous daemon's: replaced.
    if UnixStream::connect(socket).is_ok() {
        if !given {
            warn!(
                "another bindguard daemon answers exec requests at {}: this one does not",
                socket.display()
            );
            return Ok(None);
        }
        anyhow::bail!(
            "another bindguard daemon answers at {}; stop it first or give another --socket",
            socket.display()
        );
    }
    let _ = fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).with_context(|| format!("listening at {}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod 0666 {}", socket.display()))?;
    start(listener, &socket.display().to_string(), grants, mount).map(Some)
}

/// Answers at `listener` from now on (`at`: where, for the log).
fn start(
    listener: UnixListener,
    at: &str,
    grants: Vec<Grant>,
    mount: PathBuf,
) -> anyhow::Result<Arc<Server>> {
    let server = Arc::new(Server {
        grants: RwLock::new(grants),
        netns: ns_id("/proc/self/ns/net")?,
        userns: ns_id("/proc/self/ns/user")?,
        lifetime: Lifetime::new()?,
        mount,
        active: AtomicUsize::new(0),
    });
    server.lifetime.sweep(&server.mount.join(SLICE));
    let watcher = server.clone();
    std::thread::Builder::new()
        .name("exec-cgroups".into())
        .spawn(move || watcher.lifetime.run())?;
    let acceptor = server.clone();
    std::thread::Builder::new()
        .name("exec-socket".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if acceptor.active.fetch_add(1, Ordering::SeqCst) >= MAX_ACTIVE {
                    acceptor.active.fetch_sub(1, Ordering::SeqCst);
                    let _ = answer(&conn, &Reply::refused("the daemon is busy; try again"));
                    continue;
                }
                let s = acceptor.clone();
                let spawned = std::thread::Builder::new()
                    .name("exec-request".into())
                    .spawn(move || {
                        let reply = s.handle(&conn);
                        let _ = answer(&conn, &reply);
                        s.active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    acceptor.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    info!("answering exec requests at {at}");
    Ok(server)
}

fn answer(conn: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    (&*conn).write_all(&line)
}

/// The request line and the first fd sent with it.
fn read_request(conn: &UnixStream) -> Result<(Vec<u8>, Option<OwnedFd>), String> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut buf = Vec::new();
    let mut fd = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the request was not sent within 2 s".into());
        }
        conn.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let msg = recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(|e| match e {
                nix::errno::Errno::EAGAIN => "the request was not sent within 2 s".to_string(),
                e => format!("reading the request: {e}"),
            })?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(|e| e.to_string())? {
                if let ControlMessageOwned::ScmRights(got) = c {
                    // SAFETY: the kernel just installed these descriptors for us.
                    fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
            (msg.bytes, fds)
        };
        if fd.is_none() {
            fd = fds.into_iter().next();
        }
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return Err(format!("the request is larger than {MAX_REQUEST} bytes"));
        }
        if buf.contains(&b'\n') {
            break;
        }
    }
    let line = buf
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    Ok((line, fd))
}

/// The pid a pidfd refers to (-1 once its process was reaped), from /proc/self/fdinfo.
fn pidfd_pid(fd: &OwnedFd) -> Option<i32> {
    fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the pidfd's process has not exited yet (signal 0: ESRCH once it has; EPERM, for
/// a daemon without CAP_KILL asking about another uid's process, still means it lives).
fn alive(fd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 and no info only checks.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether every uid of process `pid` (real, effective, saved, filesystem) is `uid`.
fn owned_by(pid: i32, uid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() == 4 && ids.iter().all(|i| i.parse() == Ok(uid))
        })
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Server {
    fn handle(&self, conn: &UnixStream) -> Reply {
        match self.try_handle(conn) {
            Ok(reply) => reply,
            Err(why) => {
                info!("exec request refused: {why}");
                Reply::refused(why)
            }
        }
    }

    fn try_handle(&self, conn: &UnixStream) -> Result<Reply, String> {
        let cred = nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| format!("SO_PEERCRED: {e}"))?;
        let (line, pidfd) = read_request(conn)?;
        let req: Request = serde_json::from_slice(&line)
            .map_err(|e| format!("the request is not a bindguard exec request ({e})"))?;
        match req.op {
            Op::Exec | Op::Move => {}
            // SO_PEERCRED's uid is all these need: nothing is moved.
            Op::List => return Ok(self.list(cred.uid())),
            Op::End => return self.end(cred.uid(), req.end.as_deref().unwrap_or_default()),
        }
        let pidfd =
            pidfd.ok_or("the request carries no pidfd of the asking process (SCM_RIGHTS)")?;
        // Exec binds the asking process; Move the one it names, which must be the user's.
        let moving = req.op == Op::Move;
        let pid = match req.pid {
            Some(p) if moving => p,
            _ => cred.pid(),
        };
        let of_pidfd = pidfd_pid(&pidfd);
        if of_pidfd != Some(pid) || !alive(&pidfd) {
            return Err(format!(
                "the pidfd sent is not {} (it names pid {}, the request pid {pid})",
                if moving {
                    "the process to move"
                } else {
                    "the asking process's"
                },
                of_pidfd.map_or("none".into(), |p| p.to_string())
            ));
        }
        if moving && !owned_by(pid, cred.uid()) {
            return Err(format!("pid {pid} is not a process of uid {}", cred.uid()));
        }
        // Its namespaces and groups, read through /proc/PID while the pidfd shows the process
        // alive before and after: PID was this process throughout.
        let same = |kind: &str, own: (u64, u64)| {
            ns_id(&format!("/proc/{pid}/ns/{kind}")).is_ok_and(|id| id == own)
        };
        let (same_net, same_user) = (same("net", self.netns), same("user", self.userns));
        let caller = Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            // The asker's groups (still connected, so alive): for exec it is the same process.
            groups: supplementary_groups(cred.pid()),
        };
        if !alive(&pidfd) || (moving && !owned_by(pid, cred.uid())) {
            return Err("the process exited".into());
        }
        if !same_user {
            return Err("requests from another user namespace are refused".into());
        }
        if !same_net {
            return Err("requests from another network namespace are refused (the daemon's interfaces are not that namespace's)".into());
        }
        let mode: Mode = req.mode.parse().map_err(|e: Error| e.to_string())?;
        let mut options = Vec::new();
        if req.allow_loopback {
            options.push(GrantOption::AllowLoopback);
        }
        if !req.dns.is_empty() {
            options.push(GrantOption::Dns);
        }
        netdev::validate_name(&req.dev).map_err(|e| e.to_string())?;
        {
            let grants = self.grants.read().unwrap_or_else(|e| e.into_inner());
            grants::check(
                &grants,
                &caller,
                &Asked {
                    dev: &req.dev,
                    mode,
                    options,
                },
            )?;
        }
        let opts = Options {
            mode,
            allow_loopback: req.allow_loopback,
            dns: Dns::from_addrs(&req.dns).map_err(|e| e.to_string())?,
            maker: Maker::User,
            existing: if moving {
                crate::binding::policy::Existing::Destroy
            } else {
                crate::binding::policy::Existing::Keep
            },
            ..Options::default()
        };
        opts.validate().map_err(|e| e.to_string())?;
        let iface = Netns::current()
            .and_then(|ns| netdev::resolve(&req.dev, &ns))
            .map_err(|e| crate::error::one_line(&e))?;
        let cg = self
            .make_cgroup(caller.uid, pid)
            .map_err(|e| format!("making the exec cgroup: {e:#}"))?;
        // The socket pass (Move) runs once the process is in: before, the cgroup is empty.
        let made = binding::bind(&cg, &iface, &opts, SocketPass::Later)
            .map_err(|e| crate::error::one_line(&e))
            .and_then(|bound| {
                fs::write(cg.path.join("cgroup.procs"), pid.to_string())
                    .map_err(|e| format!("moving pid {pid} into {}: {e}", cg.path.display()))?;
                Ok(bound)
            })
            .and_then(|bound| {
                if alive(&pidfd) {
                    Ok(bound)
                } else {
                    Err("the process exited".into())
                }
            });
        let bound = match made {
            Ok(b) => b,
            Err(why) => {
                release(&cg.path);
                return Err(why);
            }
        };
        let mut ended = String::new();
        if moving {
            // The binding stays whatever the pass finds (it governs every new socket).
            match bound.end_existing() {
                Ok(pass) => {
                    ended = format!(
                        "; ended {} socket(s) it held{}",
                        pass.ended.len(),
                        if pass.unreached.is_empty() {
                            String::new()
                        } else {
                            format!(", {} not reached", pass.unreached.len())
                        }
                    );
                }
                Err(e) => ended = format!("; its sockets: {}", crate::error::one_line(&e)),
            }
        }
        info!(
            "bound uid {} (pid {pid}) in {} to {} (ifindex {}), mode {}{ended}",
            caller.uid,
            cg.path.display(),
            iface.name,
            iface.ifindex,
            mode.as_str()
        );
        self.lifetime.watch(&cg.path);
        Ok(Reply {
            ok: true,
            error: None,
            cgroup: Some(cg.path.display().to_string()),
            sessions: Vec::new(),
        })
    }

    /// `uid`'s exec bindings: name, interface, mode and what runs in each.
    fn list(&self, uid: u32) -> Reply {
        let mut sessions = Vec::new();
        for e in fs::read_dir(self.mount.join(SLICE))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = e.path();
            if cgroup::user_of_exec_cgroup(&path) != Some(uid) {
                continue;
            }
            let policy = fs::metadata(&path).ok().and_then(|m| {
                enforcer::read_policy(&crate::kernel::pins::binding_dir(m.ino())).ok()
            });
            let pids = fs::read_to_string(path.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            sessions.push(Session {
                name: e.file_name().to_string_lossy().into_owned(),
                cgroup: path.display().to_string(),
                dev: policy
                    .as_ref()
                    .map(|p| netdev::name_from_bytes(&p.ifname))
                    .unwrap_or_default(),
                mode: policy
                    .as_ref()
                    .map(|p| crate::binding::policy::mode_of(p).as_str().to_string())
                    .unwrap_or_default(),
                pids,
            });
        }
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
        Reply {
            ok: true,
            error: None,
            cgroup: None,
            sessions,
        }
    }

    /// Ends `uid`'s exec binding `name`: kills what runs in it (cgroup.kill, which needs no
    /// CAP_KILL; before 5.14, SIGKILL by pid), then releases it. Never another user's.
    fn end(&self, uid: u32, name: &str) -> Result<Reply, String> {
        let path = self.mount.join(SLICE).join(name);
        if name.contains('/') || cgroup::user_of_exec_cgroup(&path) != Some(uid) || !path.is_dir() {
            return Err(format!(
                "uid {uid} has no exec binding named '{}'; `bindguard sessions` lists yours",
                crate::error::quote(name)
            ));
        }
        if !cgroup::kill_all(&path, Duration::from_secs(5)) {
            return Err(format!("{name} could not be emptied within 5 s"));
        }
        self.lifetime.forget(&path);
        release(&path);
        info!("ended {} for uid {uid}", path.display());
        Ok(Reply {
            ok: true,
            error: None,
            cgroup: Some(path.display().to_string()),
            sessions: Vec::new(),
        })
    }

    /// `<mount>/bindguard.slice/exec-<uid>-<pid>[-n]`, root's like its parent.
    fn make_cgroup(&self, uid: u32, pid: i32) -> anyhow::Result<Cgroup> {
        let slice = self.mount.join(SLICE);
        fs::create_dir_all(&slice).with_context(|| format!("creating {}", slice.display()))?;
        for n in 0..100 {
            let name = if n == 0 {
                format!("{PREFIX}{uid}-{pid}")
            } else {
                format!("{PREFIX}{uid}-{pid}-{n}")
            };
            let path = slice.join(name);
            match fs::create_dir(&path) {
                Ok(()) => return cgroup::resolve(&path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        anyhow::bail!("no free exec cgroup name in {}", slice.display())
    }
}

/// Detaches an exec cgroup's binding and removes the cgroup, unless something runs in it.
fn release(path: &Path) {
    if cgroup::populated(path) {
        return;
    }
    match enforcer::detach(path) {
        Ok(_) => {}
        // Not bound, or already removed (by its daemon, or another that adopted it).
        Err(e) if Error::is_not_bound(&e) || Error::is_cgroup_missing(&e) => {}
        Err(e) => warn!(
            "detaching {}: {}",
            path.display(),
            crate::error::one_line(&e)
        ),
    }
    if let Err(e) = fs::remove_dir(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!("removing {}: {e}", path.display());
    }
}

/// The exec cgroups' lifetime: one inotify watch on each cgroup.events.
struct Lifetime {
    inotify: Mutex<inotify::Inotify>,
    watches: inotify::Watches,
    by_wd: Mutex<HashMap<inotify::WatchDescriptor, PathBuf>>,
}

impl Lifetime {
    fn new() -> anyhow::Result<Self> {
        let inotify = inotify::Inotify::init().context("inotify_init")?;
        let watches = inotify.watches();
        Ok(Self {
            inotify: Mutex::new(inotify),
            watches,
            by_wd: Mutex::new(HashMap::new()),
        })
    }

    /// Releases the empty exec cgroups of `slice` (a previous daemon's) and watches the rest.
    fn sweep(&self, slice: &Path) {
        for e in fs::read_dir(slice).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                self.watch(&e.path());
            }
        }
    }

    /// Watches `path` until it empties; checked once after the watch is set, so a command
    /// that ended before is not missed.
    fn watch(&self, path: &Path) {
        let mut by_wd = self.by_wd.lock().unwrap_or_else(|e| e.into_inner());
        match self
            .watches
            .clone()
            .add(path.join("cgroup.events"), inotify::WatchMask::MODIFY)
        {
            Ok(wd) => {
                by_wd.insert(wd, path.to_path_buf());
            }
            Err(e) => warn!("watching {}: {e}", path.display()),
        }
        drop(by_wd);
        if !cgroup::populated(path) {
            self.forget(path);
            release(path);
        }
    }

    fn forget(&self, path: &Path) {
        let mut by_wd = self.by_wd.lock().unwrap_or_else(|e| e.into_inner());
        let wds: Vec<_> = by_wd
            .iter()
            .filter(|(_, p)| p.as_path() == path)
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in wds {
            by_wd.remove(&wd);
            let _ = self.watches.clone().remove(wd);
        }
    }

    fn run(&self) {
        let mut buf = [0u8; 4096];
        loop {
            let events: Vec<inotify::WatchDescriptor> = {
                let mut inotify = self.inotify.lock().unwrap_or_else(|e| e.into_inner());
                match inotify.read_events_blocking(&mut buf) {
                    Ok(events) => events.map(|e| e.wd).collect(),
                    Err(e) => {
                        warn!("reading exec cgroup events: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                }
            };
            for wd in events {
                let path = self
                    .by_wd
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&wd)
                    .cloned();
                if let Some(path) = path
                    && !cgroup::populated(&path)
                {
                    self.forget(&path);
                    release(&path);
                    info!("released {}: its programs ended", path.display());
                }
            }
        }
    }
}

/// The client: asks the daemon at `socket` to bind this process as `req` says. On success
/// this process runs in the new cgroup; exec the command next.
pub fn ask(socket: &Path, req: &Request) -> Result<Reply, Error> {
    let no_daemon = |why: String| Error::NoDaemon {
        socket: socket.to_path_buf(),
        why,
    };
    let conn = UnixStream::connect(socket).map_err(|e| no_daemon(e.to_string()))?;
    // Our own pid, or the one to move.
    let pid = req.pid.unwrap_or(std::process::id() as i32);
    // SAFETY: pidfd_open of a pid; the fd is checked and owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::InvalidInput {
            what: format!(
                "pidfd_open of pid {pid}: {} (no such process, or Linux before 5.3)",
                std::io::Error::last_os_error()
            ),
        });
    }
    // SAFETY: a new descriptor from pidfd_open.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let mut line = serde_json::to_vec(req).unwrap_or_default();
    line.push(b'\n');
    let fds = [pidfd.as_raw_fd()];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| no_daemon(format!("sending the request: {e}")))?;
    drop(pidfd);
    // Binding takes milliseconds; a daemon busy with 200 requests, a few seconds.
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| no_daemon(e.to_string()))?;
    let mut text = String::new();
    (&conn)
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| no_daemon(format!("reading the answer: {e}")))?;
    let reply: Reply = serde_json::from_str(text.trim())
        .map_err(|e| no_daemon(format!("its answer is not understood ({e})")))?;
    if reply.ok {
        Ok(reply)
    } else {
        Err(Error::Refused {
            why: reply.error.unwrap_or_else(|| "no reason given".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_what_the_user_chooses_and_nothing_else() {
        let r: Request = serde_json::from_str(r#"{"dev":"wg0"}"#).unwrap();
        assert_eq!(r.mode, "strict");
        // No cgroup, no pid: the daemon decides those.
        assert!(serde_json::from_str::<Request>(r#"{"dev":"wg0","cgroup":"/x"}"#).is_err());
    }
}
