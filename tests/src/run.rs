//! Running processes inside a test cgroup and namespace, optionally as an unprivileged user.

use std::{
    fs::{File, OpenOptions},
    os::{
        fd::AsRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::topology::{NetnsGuard, TestCgroup};

/// The bindguard CLI under test: $BINDGUARD_BIN, else the workspace's target/debug/bindguard.
pub fn bindguard_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BINDGUARD_BIN") {
        return p.into();
    }
    target_bin("bindguard")
}

/// A binary of this workspace: next to the running executable (target/<profile>/ for bins,
/// target/<profile>/deps/ for tests), so a release bench uses release binaries.
fn target_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build --bins`, done by `cargo xtask test`)",
        p.display()
    );
    p
}

/// The probe helper built from this package (src/bin/probe.rs).
pub fn probe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BG_PROBE_BIN") {
        return p.into();
    }
    target_bin("bg-probe")
}

/// The DNS tests' static musl client (tests/fixtures/musl-lookup.rs, built by `cargo xtask`).
pub fn musl_lookup_bin() -> PathBuf {
    target_bin("musl-lookup")
}

/// A command that joins a cgroup and a network namespace between fork and exec.
pub struct Cmd {
    cmd: Command,
    cgroup_procs: Option<File>,
    netns: Option<File>,
    default_signals: bool,
}

impl Cmd {
    pub fn new(program: impl AsRef<std::ffi::OsStr>) -> Self {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        Self {
            cmd,
            cgroup_procs: None,
            netns: None,
            default_signals: false,
        }
    }

    /// The child's stdin is `file` (a terminal, for the TIOCSTI test). Call it after
    /// [`Cmd::as_nobody`], which rebuilds the command.
    pub fn stdin_file(mut self, file: File) -> Self {
        self.cmd.stdin(file);
        self
    }

    /// SIGINT and SIGQUIT at their default action in the child: a test run from a
    /// non-interactive shell's background job inherits them ignored, and a test of what those
    /// signals do must not depend on how it was started.
    pub fn default_signals(mut self) -> Self {
        self.default_signals = true;
        self
    }

    pub fn bindguard() -> Self {
        Self::new(bindguard_bin())
    }

    pub fn probe() -> Self {
        Self::new(probe_bin())
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut parts = vec![self.cmd.get_program().to_string_lossy().into_owned()];
        parts.extend(
            self.cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned()),
        );
        parts.join(" ")
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// The child moves itself into `cg` before exec: every socket it makes is the cgroup's.
    pub fn in_cgroup(self, cg: &TestCgroup) -> Self {
        self.in_cgroup_path(&cg.path)
    }

    pub fn in_cgroup_path(mut self, cg: &Path) -> Self {
        let f = OpenOptions::new()
            .write(true)
            .open(cg.join("cgroup.procs"))
            .expect("open cgroup.procs");
        self.cgroup_procs = Some(f);
        self
    }

    /// The child enters `ns` before exec (setns, not `ip netns exec`, which remounts /sys).
    pub fn in_netns(mut self, ns: &NetnsGuard) -> Self {
        self.netns = Some(File::open(ns.path()).expect("open netns"));
        self
    }

    /// Runs as uid/gid 65534 with no capabilities at all.
    pub fn as_nobody(self) -> Self {
        self.drop_to(65534, "")
    }

    /// Runs as uid/gid `uid` with no capabilities at all.
    pub fn as_uid(self, uid: u32) -> Self {
        self.drop_to(uid, "")
    }

    /// Runs as uid/gid 65534 with only capability `cap` (setpriv's name, e.g. `net_raw`),
    /// kept across exec as an ambient capability.
    pub fn as_nobody_with(self, cap: &str) -> Self {
        self.drop_to(65534, &format!(",+{cap}"))
    }

    fn drop_to(mut self, uid: u32, caps: &str) -> Self {
        let program = world_executable(Path::new(self.cmd.get_program()));
        let args: Vec<_> = self.cmd.get_args().map(|a| a.to_owned()).collect();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            &format!("--inh-caps=-all{caps}"),
            &format!("--ambient-caps=-all{caps}"),
            &format!("--bounding-set=-all{caps}"),
            "--",
        ])
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
        for (k, v) in self.cmd.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        self.cmd = cmd;
        self
    }

    fn prepare(&mut self) {
        let procs = self.cgroup_procs.as_ref().map(|f| f.as_raw_fd());
        let netns = self.netns.as_ref().map(|f| f.as_raw_fd());
        // Without a pre_exec hook std can spawn with vfork semantics (posix_spawn) instead of
        // copying this process's page tables: what `bench` times should be bindguard, not that.
        let default_signals = self.default_signals;
        if procs.is_none() && netns.is_none() && !default_signals {
            return;
        }
        // SAFETY: only async-signal-safe calls (write, setns, signal) between fork and exec.
        unsafe {
            self.cmd.pre_exec(move || {
                if let Some(fd) = procs
                    && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = netns
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if default_signals {
                    libc::signal(libc::SIGINT, libc::SIG_DFL);
                    libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                }
                Ok(())
            });
        }
    }

    pub fn spawn(mut self) -> Child {
        self.prepare();
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    /// Runs to completion, stdout discarded and stderr written to `stderr` (no pipes to drain,
    /// no reader thread): for timing.
    pub fn status_quiet(mut self, stderr: File) -> std::process::ExitStatus {
        self.prepare();
        self.cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .expect("spawn")
    }

    /// Spawns with stdout and stderr both written to `log` (a long-running helper whose
    /// output nobody drains).
    pub fn spawn_logged(mut self, log: File) -> Child {
        self.prepare();
        self.cmd
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn")
    }

    /// Spawns with a writable stdin (close it to signal EOF).
    pub fn spawn_with_stdin(mut self) -> Child {
        self.cmd.stdin(Stdio::piped());
        self.spawn()
    }

    /// Runs to completion (killed after 30 s) and returns its output.
    pub fn output(self) -> Output {
        let what = self.describe();
        let child = self.spawn();
        wait_output(child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("`{what}` did not finish within 30 s"))
    }

    /// Runs and returns (exit code, stdout, stderr); code is 128+signal when killed.
    pub fn run(self) -> (i32, String, String) {
        let out = self.output();
        let code = out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        (
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `program`, or a copy of it that uid 65534 can execute: the workspace may live under a
/// directory only root can enter (a clone in /root). Copies live in one directory per test
/// process, removed when the process exits.
fn world_executable(program: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if !program.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()) {
        return program.to_path_buf();
    }
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bindguard-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        extern "C" fn cleanup() {
            let dir = std::env::temp_dir().join(format!("bindguard-tests-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(dir);
        }
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(cleanup) };
        dir
    });
    let copy = dir.join(program.file_name().expect("file name"));
    static COPYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = COPYING.lock().unwrap_or_else(|e| e.into_inner());
    if !copy.exists() {
        let tmp = copy.with_extension("tmp");
        // Copied by cp, not here: a write fd of this process would be inherited by children
        // other test threads fork meanwhile, and until they exec, running the copy fails with
        // ETXTBSY (seen: "setpriv: failed to execute ...: Text file busy").
        let copied = Command::new("cp")
            .arg(program)
            .arg(&tmp)
            .status()
            .expect("running cp");
        assert!(copied.success(), "cp {} failed", program.display());
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &copy).expect("rename copy");
    }
    copy
}

/// The first line `child` writes to its stdout (empty if it ends first), trimmed; the rest
/// stays in the pipe.
pub fn first_line(child: &mut Child) -> String {
    use std::io::Read as _;
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim().to_string()
}

/// Waits for `child` with a deadline, reading its output meanwhile (a child whose output
/// fills the pipe would otherwise never finish); kills it and returns None if it overruns.
pub fn wait_output(child: Child, timeout: Duration) -> Option<Output> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.ok(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(5));
            None
        }
    }
}

/// The variant build of bindguard (another eBPF object, so another program set): the binary
/// $BINDGUARD_VARIANT_BIN names, else target/variant/debug/bindguard, which `cargo xtask test`
/// builds. None when it is missing — a failure under CI=true.
pub fn variant_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BINDGUARD_VARIANT_BIN") {
        return Some(p.into());
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/variant/debug/bindguard");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI=true but the variant build is missing: `cargo xtask test` builds target/variant"
    );
    eprintln!("skipped: no variant build (run `cargo xtask test`, which builds it)");
    None
}
