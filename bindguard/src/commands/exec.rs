//! `exec`: runs one command bound, without preparing a cgroup.
//!
//! A transient cgroup `<cgroup2 mount>/bindguard-exec-<pid>` is created and bound, the command
//! joins it between fork and exec (so its first socket is already bound — static binaries
//! included), signals sent to bindguard are forwarded, and when the command ends, however it
//! ends, whatever it left in the cgroup is killed and the binding and the cgroup are removed.
//!
//! With `--dns`, where /etc/nsswitch.conf asks systemd-resolved (`resolve`, over a varlink
//! socket no cgroup hook here can refuse: escape row 28), the command gets a mount namespace
//! of its own whose nsswitch.conf lacks it, so glibc asks DNS, which the binding redirects.

use std::{
    ffi::OsString,
    fs,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use crate::{
    binding::{
        SocketPass,
        cgroup::{self, Cgroup},
        enforcer, netdev,
        netns::Netns,
        policy::Options,
    },
    kernel::pins,
};

const PREFIX: &str = "bindguard-exec-";

/// The signals bindguard passes on to the command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// A cgroup that exists for one command; removed with its binding when dropped.
pub struct TransientCgroup {
    pub cgroup: Cgroup,
}

impl TransientCgroup {
    fn create(mount: &Path) -> anyhow::Result<Self> {
        let path = mount.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        let cgroup = cgroup::resolve(&path)?;
        Ok(Self { cgroup })
    }
}

/// Kills what is left in `path`, waits until the cgroup is empty, then removes its binding's
/// pins (under the pins lock, which nothing in this process holds here) and the cgroup. In
/// that order: a process still running when the pins went would make its next sockets
/// unbound. A cgroup that cannot be emptied keeps its binding (fail closed).
fn remove(path: &Path, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    if !cgroup::kill_all(path, Duration::from_secs(10)) {
        return;
    }
    let pins = pins::binding_dir(id);
    if pins.exists() {
        match pins::lock() {
            Ok(lock) => {
                let _ = pins::remove_dir(&pins, &lock);
                crate::kernel::progset::forget_user(id, &lock);
            }
            // The pins stay: once the cgroup is removed below, the kernel detaches their links
            // and `bindguard detach` (or the next sweep of deleted cgroups) removes them.
            Err(e) => eprintln!(
                "bindguard: warning: leaving the pins of {}: {e:#}",
                path.display()
            ),
        }
    }
    while fs::remove_dir(path).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for TransientCgroup {
    fn drop(&mut self) {
        remove(&self.cgroup.path, self.cgroup.id);
    }
}

/// Removes transient cgroups of `bindguard exec` processes that died without cleaning up (for
/// example by SIGKILL), once nothing runs in them any more.
fn sweep_abandoned(mount: &Path) {
    for entry in fs::read_dir(mount).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        let empty = fs::read_to_string(entry.path().join("cgroup.procs"))
            .is_ok_and(|p| p.trim().is_empty());
        if !alive
            && empty
            && let Ok(cg) = cgroup::resolve(&entry.path())
        {
            remove(&cg.path, cg.id);
        }
    }
}

/// Runs `command` with every socket bound to `dev`; returns its exit status (128+N when it was
/// killed by signal N). The forwarded signals are left blocked: call it last, then exit.
pub fn exec(
    dev: &str,
    netns: Option<&Path>,
    opts: &Options,
    as_user: Option<&nix::unistd::User>,
    command: &[OsString],
) -> anyhow::Result<i32> {
    opts.validate()?;
    netdev::validate_name(dev)?;
    enforcer::require_privileges("exec")?;
    let ns = match netns {
        Some(p) => Netns::open(p)?,
        None => Netns::current()?,
    };
    let iface = netdev::resolve(dev, &ns)?;
    let mount = cgroup::cgroup2_mount()?;
    sweep_abandoned(&mount);
    let transient = TransientCgroup::create(&mount)?;
    crate::binding::bind(&transient.cgroup, &iface, opts, SocketPass::Now)?.unreached()?;

    // Signals wait in a queue for this thread to forward them; the child starts unblocked.
    let mut waited = SigSet::empty();
    for s in FORWARDED {
        waited.add(s);
    }
    waited.add(Signal::SIGCHLD);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&waited), None)?;
    let nsswitch = if opts.dns.is_set() {
        nsswitch_without_resolve(Path::new(NSSWITCH))?
    } else {
        None
    };
    let result = run_child(
        &transient.cgroup.path,
        netns.map(|_| &ns),
        nsswitch.as_deref(),
        as_user,
        command,
        &waited,
    );
    // The teardown runs with the signals still blocked, and they stay blocked: the caller
    // exits with the command's status next. A SIGTERM that arrives now (a supervisor
    // repeating its stop) must neither kill bindguard half-way, leaving the cgroup, nor
    // replace the command's status with its own; the command it was meant for has ended.
    drop(transient);
    result
}

const NSSWITCH: &str = "/etc/nsswitch.conf";

/// The hosts line of an nsswitch.conf without systemd-resolved's module (`resolve` and the
/// `[!UNAVAIL=return]` action after it): glibc then goes on to `dns`. None when the file
/// does not name it.
pub fn without_resolve(text: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let Some(rest) = line.trim_start().strip_prefix("hosts:") else {
                return line.to_string();
            };
            let mut out = Vec::new();
            let mut skip_action = false;
            for word in rest.split_whitespace() {
                if word == "resolve" {
                    changed = true;
                    skip_action = true;
                    continue;
                }
                if skip_action && word.starts_with('[') {
                    continue;
                }
                skip_action = false;
                out.push(word);
            }
            if out.is_empty() {
                // resolve alone: what it would have asked, the classic way.
                out = vec!["files", "dns"];
            }
            format!("hosts: {}", out.join(" "))
        })
        .collect();
    changed.then(|| lines.join("\n") + "\n")
}

/// `path`'s nsswitch.conf without `resolve`, written under /run/bindguard to be bind-mounted
/// over it in the command's own mount namespace (a memfd cannot be: the kernel refuses bind
/// mounts from its internal mount); None when there is nothing to take out. The file is
/// removed once the command runs: its mount keeps it.
fn nsswitch_without_resolve(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let Some(text) = without_resolve(&text) else {
        return Ok(None);
    };
    let dir = Path::new("/run/bindguard");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("exec-{}-nsswitch.conf", std::process::id()));
    fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    Ok(Some(file))
}

/// `--user`: a user by name or uid.
pub fn lookup_user(name: &str) -> anyhow::Result<nix::unistd::User> {
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    found.ok().flatten().ok_or_else(|| {
        crate::Error::InvalidInput {
            what: format!(
                "--user '{}': no such user; give a user name or uid from /etc/passwd",
                crate::error::quote(name)
            ),
        }
        .into()
    })
}

fn run_child(
    cgroup: &Path,
    netns: Option<&Netns>,
    nsswitch: Option<&Path>,
    as_user: Option<&nix::unistd::User>,
    command: &[OsString],
    waited: &SigSet,
) -> anyhow::Result<i32> {
    // --user: the user's uid, gid and groups, resolved before fork (nothing may allocate or
    // read files between fork and exec), and the environment a login gives them.
    let ids = match as_user {
        Some(u) => {
            let name = std::ffi::CString::new(u.name.as_bytes())?;
            let groups: Vec<libc::gid_t> = nix::unistd::getgrouplist(&name, u.gid)
                .with_context(|| format!("the groups of user {}", u.name))?
                .into_iter()
                .map(|g| g.as_raw())
                .collect();
            Some((u.uid.as_raw(), u.gid.as_raw(), groups))
        }
        None => None,
    };
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let procs_fd = procs.as_raw_fd();
    let ns_file = match netns.and_then(|n| n.path.clone()) {
        Some(p) => Some(fs::File::open(p)?),
        None => None,
    };
    let ns_fd = ns_file.as_ref().map(|f| f.as_raw_fd());
    // Prepared before fork: between fork and exec nothing may allocate.
    let nss_source = nsswitch
        .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()))
        .transpose()?;
    let (program, args) = command.split_first().context("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(u) = as_user {
        cmd.env("HOME", &u.dir)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name)
            .env("SHELL", &u.shell);
    }
    // SAFETY: only write(2), setns(2), unshare(2), mount(2), setgroups(2), setgid(2),
    // setuid(2) and sigprocmask(2) between fork and exec, on data made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = ns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(source) = &nss_source {
                // A mount namespace of the command's own, its mounts not shared back.
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_SLAVE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        source.as_ptr(),
                        c"/etc/nsswitch.conf".as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Last: groups, then gid, then uid (after setuid nothing else is allowed).
            if let Some((uid, gid, groups)) = &ids
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // Mounted in the command's namespace by now (or never): the file is not needed.
    if let Some(p) = nsswitch {
        let _ = fs::remove_file(p);
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "bindguard: {}: command not found",
                PathBuf::from(program).display()
            );
            return Ok(127);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("starting {}", PathBuf::from(program).display()));
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut terminations = 0;
    loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        // SAFETY: siginfo_t is plain data; sigwaitinfo fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waited is a valid, blocked signal set.
        let sig = unsafe { libc::sigwaitinfo(waited.as_ref(), &mut info) };
        if sig < 0 || sig == libc::SIGCHLD {
            continue;
        }
        let Ok(signal) = Signal::try_from(sig) else {
            continue;
        };
        // A terminal's ^C or ^\ already reached the command (same process group).
        if info.si_code == libc::SI_KERNEL && matches!(signal, Signal::SIGINT | Signal::SIGQUIT) {
            continue;
        }
        if matches!(signal, Signal::SIGINT | Signal::SIGTERM) {
            terminations += 1;
        }
        // Asked twice to stop: the command is not listening; kill it.
        let forward = if terminations > 1 {
            Signal::SIGKILL
        } else {
            signal
        };
        let _ = nix::sys::signal::kill(pid, forward);
    }
}

#[cfg(test)]
mod tests {
    use super::without_resolve;

    #[test]
    fn resolve_and_its_action_leave_the_hosts_line() {
        let ubuntu = "passwd: files systemd\nhosts: files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname\n";
        assert_eq!(
            without_resolve(ubuntu).unwrap(),
            "passwd: files systemd\nhosts: files mdns4_minimal [NOTFOUND=return] dns myhostname\n"
        );
        assert_eq!(without_resolve("hosts: files dns\n"), None);
        assert_eq!(
            without_resolve("hosts: resolve\n").unwrap(),
            "hosts: files dns\n"
        );
    }
}
