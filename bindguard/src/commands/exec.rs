//! `exec`: runs one command bound, without preparing a cgroup.
//!
//! A transient cgroup `<cgroup2 mount>/bindguard-exec-<pid>` is created and bound, the command
//! joins it between fork and exec (so its first socket is already bound — static binaries
//! included), signals sent to bindguard are forwarded, and when the command ends, however it
//! ends, whatever it left in the cgroup is killed and the binding and the cgroup are removed.

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
/// pins and the cgroup. In that order: a process still running when the pins went would make
/// its next sockets unbound. A cgroup that cannot be emptied keeps its binding (fail closed).
fn remove(path: &Path, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while populated(path) {
        // cgroup.kill is 5.14+; before, every member is killed by pid (again, for late forks).
        if fs::write(path.join("cgroup.kill"), "1").is_err() {
            for pid in fs::read_to_string(path.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pins = pins::binding_dir(id);
    if pins.exists() {
        let _ = pins::remove_dir(&pins);
        crate::kernel::progset::forget_user(id);
    }
    while fs::remove_dir(path).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether processes still run in the cgroup at `path` (cgroup.events; a cgroup already gone
/// is empty).
fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .is_ok_and(|e| e.lines().any(|l| l.trim() == "populated 1"))
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
    enforcer::attach(&transient.cgroup, &iface, opts)?;

    // Signals wait in a queue for this thread to forward them; the child starts unblocked.
    let mut waited = SigSet::empty();
    for s in FORWARDED {
        waited.add(s);
    }
    waited.add(Signal::SIGCHLD);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&waited), None)?;
    let result = run_child(&transient.cgroup.path, netns.map(|_| &ns), command, &waited);
    // The teardown runs with the signals still blocked, and they stay blocked: the caller
    // exits with the command's status next. A SIGTERM that arrives now (a supervisor
    // repeating its stop) must neither kill bindguard half-way, leaving the cgroup, nor
    // replace the command's status with its own; the command it was meant for has ended.
    drop(transient);
    result
}

fn run_child(
    cgroup: &Path,
    netns: Option<&Netns>,
    command: &[OsString],
    waited: &SigSet,
) -> anyhow::Result<i32> {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let procs_fd = procs.as_raw_fd();
    let ns_file = match netns.and_then(|n| n.path.clone()) {
        Some(p) => Some(fs::File::open(p)?),
        None => None,
    };
    let ns_fd = ns_file.as_ref().map(|f| f.as_raw_fd());
    let (program, args) = command.split_first().context("no command given")?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only write(2), setns(2) and sigprocmask(2) between fork and exec.
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
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
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
