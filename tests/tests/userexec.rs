//! `bindguard exec` without root: uid 65534 with no capabilities asks the daemon (run with
//! exactly the shipped unit's capabilities), which binds it as the config's grant allows in a
//! root-owned cgroup; which peer received the traffic says which interface it left by.

use std::{
    fs,
    io::Write as _,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use bindguard_tests::{
    Cmd, Peer, Scenario, TestCgroup, root_or_skip,
    scenario::{busybox_client, token},
    topology::{UPLINK_A, UPLINK_B},
    unique,
};

const NOBODY: u32 = 65534;

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The capabilities the shipped unit gives the daemon, in setpriv's spelling.
fn unit_caps() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/bindguard.service");
    let text = fs::read_to_string(&unit).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet")
        .split_whitespace()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect()
}

/// A daemon in the scenario's host namespace with `config`, answering at a socket of its own
/// (reachable by uid 65534); killed and its files removed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start(s: &Scenario, config: &str) -> Self {
        Self::launch(s, config, false)
    }

    /// `activated`: under systemd-socket-activate, as bindguard.socket starts it (the
    /// listener made before the daemon and passed in LISTEN_FDS; no --socket).
    fn launch(s: &Scenario, config: &str, activated: bool) -> Self {
        let dir = std::env::temp_dir().join(unique("bgu"));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("bindguard.toml");
        fs::write(&conf, config).unwrap();
        let socket = dir.join("exec.sock");
        let log = fs::File::create(dir.join("log")).unwrap();
        let mut cmd = if activated {
            let mut c = std::process::Command::new("systemd-socket-activate");
            c.arg("--listen").arg(&socket).arg("setpriv");
            c
        } else {
            std::process::Command::new("setpriv")
        };
        cmd.args([
            "--inh-caps=-all",
            "--ambient-caps=-all",
            &format!("--bounding-set=-all{}", unit_caps()),
            "--no-new-privs",
            "--",
        ])
        .arg(bindguard_tests::bindguard_bin())
        .arg("daemon")
        .arg("--config")
        .arg(&conf)
        .args(if activated {
            vec![]
        } else {
            vec!["--socket".into(), socket.clone().into_os_string()]
        })
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
        let ns = fs::File::open(s.topo.host.path()).unwrap();
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let fd = ns.as_raw_fd();
        // SAFETY: only setns between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn the daemon");
        let d = Self { child, dir, socket };
        if activated {
            // systemd-socket-activate starts the daemon at the first connection, as systemd
            // does for a socket unit whose service is not running yet.
            assert!(
                wait_until(Duration::from_secs(10), || d.socket.exists()),
                "no socket: {}",
                d.log()
            );
            return d;
        }
        assert!(
            wait_until(Duration::from_secs(30), || d.log().contains("ready:")),
            "the daemon did not become ready: {}",
            d.log()
        );
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `bindguard exec ARGS` as uid 65534 with no capabilities, asking this daemon, in the
    /// scenario's host namespace.
    fn exec(&self, s: &Scenario, args: &[&str]) -> Cmd {
        Cmd::bindguard()
            .arg("exec")
            .args(args)
            .as_nobody()
            .env("BINDGUARD_SOCKET", &self.socket)
            .in_netns(&s.topo.host)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn slice() -> PathBuf {
    bindguard::binding::cgroup::cgroup2_mount()
        .unwrap()
        .join(bindguard::binding::cgroup::USER_SLICE)
}

/// The exec cgroups made for process `pid` (none once released).
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("exec-{NOBODY}-{pid}");
    fs::read_dir(slice())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

fn grant(extra: &str) -> String {
    format!("[[grant]]\nusers = [{NOBODY}]\ndev = [\"{UPLINK_B}\", \"tun*\"]\n{extra}\n")
}

#[test]
fn a_granted_user_runs_bound_as_themselves_in_a_cgroup_they_cannot_leave() {
    root_or_skip!();
    let s = Scenario::new();
    let d = Daemon::start(&s, &grant(""));

    // Traffic: bound, at peer B; the same client run plainly goes by the routing table, A.
    for udp in [false, true] {
        let tok = token("userexec");
        let argv = busybox_client(&tok, udp, false);
        let child = d.exec(&s, &["--dev", UPLINK_B, "--"]).args(&argv).spawn();
        assert_eq!(s.receivers(&tok), [Peer::B], "udp={udp}: {}", d.log());
        let _ = bindguard_tests::run::wait_output(child, Duration::from_secs(5));
    }
    let tok = token("plain");
    let argv = busybox_client(&tok, false, false);
    let plain = Cmd::new(&argv[0])
        .args(&argv[1..])
        .as_nobody()
        .in_netns(&s.topo.host)
        .spawn();
    assert_eq!(s.receivers(&tok), [Peer::A]);
    let _ = bindguard_tests::run::wait_output(plain, Duration::from_secs(5));

    // Who it runs as, where, with what: the user's; the command is the process that asked
    // (exec in place: no root process between). A cgroup owned by the user (what a delegated
    // subtree is) is among the places it tries to move to.
    let theirs = TestCgroup::new();
    for f in [
        "",
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.subtree_control",
    ] {
        let p = theirs.path.join(f);
        nix::unistd::chown(&p, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    }
    let mount = bindguard::binding::cgroup::cgroup2_mount().unwrap();
    let script = format!(
        "id -u; pwd; echo \"$BG_MARK\"; echo $$; cg=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); echo \"$cg\"; \
         for c in {theirs} {mount} {slice}; do echo $$ > $c/cgroup.procs 2>/dev/null && echo MOVED $c; done; \
         mkdir {slice}/escape-$$ 2>/dev/null && echo MKDIR; mkdir \"{mount}$cg/x\" 2>/dev/null && echo MKDIR; \
         grep '^0::' /proc/self/cgroup | cut -d: -f3",
        theirs = theirs.path.display(),
        mount = mount.display(),
        slice = slice().display(),
    );
    let child = d
        .exec(&s, &["--dev", UPLINK_B, "--", "/bin/sh", "-c", &script])
        .env("BG_MARK", "the user's environment")
        .spawn();
    let pid = child.id();
    let out = bindguard_tests::run::wait_output(child, Duration::from_secs(30)).unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 6, "{out}{err}{}", d.log());
    assert_eq!(lines[0], NOBODY.to_string(), "{out}");
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(lines[1], cwd.to_str().unwrap(), "{out}");
    assert_eq!(lines[2], "the user's environment", "{out}");
    assert_eq!(
        lines[3],
        pid.to_string(),
        "the command is not the asking process: {out}"
    );
    let exec_cgroup = format!(
        "/{}/exec-{NOBODY}-{pid}",
        bindguard::binding::cgroup::USER_SLICE
    );
    assert_eq!(lines[4], exec_cgroup, "{out}");
    assert!(
        !out.contains("MOVED"),
        "the bound process left its cgroup: {out}"
    );
    assert!(!out.contains("MKDIR"), "{out}");
    assert_eq!(lines.last().copied(), Some(exec_cgroup.as_str()), "{out}");
    // Released once its programs ended: binding detached, cgroup removed.
    assert!(
        wait_until(Duration::from_secs(10), || cgroups_of(pid).is_empty()),
        "the exec cgroup was left: {}",
        d.log()
    );
    assert!(d.log().contains("released"), "{}", d.log());
}

#[test]
fn a_refused_request_says_why_in_one_line_and_makes_nothing() {
    root_or_skip!();
    let s = Scenario::new();
    let d = Daemon::start(&s, &grant(""));
    for (args, says) in [
        (&["--dev", UPLINK_A][..], "not granted interface upA"),
        (
            &["--dev", UPLINK_B, "--mode", "bind"][..],
            "not granted mode bind",
        ),
        (
            &["--dev", UPLINK_B, "--dns", "10.0.0.53"][..],
            "not granted --dns",
        ),
        (&["--dev", "tun9"][..], "no interface named 'tun9'"),
        (&["--dev", UPLINK_B, "--mark", "1"][..], "--mark needs root"),
    ] {
        let child = d.exec(&s, args).args(["--", "/bin/true"]).spawn();
        let pid = child.id();
        let out = bindguard_tests::run::wait_output(child, Duration::from_secs(30)).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(cgroups_of(pid).is_empty(), "{args:?} made a cgroup");
    }
    // Another user: no grant at all.
    let (code, _, err) = Cmd::bindguard()
        .args(["exec", "--dev", UPLINK_B, "--", "/bin/true"])
        .as_uid(65533)
        .env("BINDGUARD_SOCKET", &d.socket)
        .in_netns(&s.topo.host)
        .run();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no grant"), "{err}");
    // No daemon: one line naming the fix.
    let (code, _, err) = Cmd::bindguard()
        .args(["exec", "--dev", UPLINK_B, "--", "/bin/true"])
        .as_nobody()
        .env("BINDGUARD_SOCKET", d.dir.join("missing.sock"))
        .run();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("systemctl enable --now bindguard"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Raw clients that do not play by the protocol: each gets an answer or is dropped, and the
/// daemon goes on answering well-formed requests and following link events meanwhile.
#[test]
fn hostile_clients_get_an_answer_and_leave_nothing() {
    root_or_skip!();
    let s = Scenario::new();
    let watched = TestCgroup::new();
    let config = format!(
        "{}[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
        grant(""),
        watched.path.display(),
        s.topo.host.path().display()
    );
    let d = Daemon::start(&s, &config);
    let ask = |bytes: &[u8], wait: Duration| -> String {
        let mut c = UnixStream::connect(&d.socket).unwrap();
        c.write_all(bytes).unwrap();
        std::thread::sleep(wait);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut c, &mut out);
        out
    };
    let malformed = ask(b"{\"dev\": 12}\n", Duration::ZERO);
    assert!(
        malformed.contains("not a bindguard exec request"),
        "{malformed}"
    );
    let unknown = ask(b"{\"dev\":\"upB\",\"cgroup\":\"/\"}\n", Duration::ZERO);
    assert!(unknown.contains("unknown field"), "{unknown}");
    let big = ask(&vec![b'x'; 10_000], Duration::ZERO);
    assert!(big.contains("larger than 4096"), "{big}");
    // Half a request, then silence: answered after the 2 s the daemon gives.
    let half = ask(b"{\"dev\":", Duration::from_millis(2500));
    assert!(half.contains("within 2 s"), "{half}");
    // Well-formed but without the asking process's pidfd.
    let bare = ask(b"{\"dev\":\"upB\"}\n", Duration::ZERO);
    assert!(bare.contains("no pidfd"), "{bare}");

    // From another network namespace: its interface names are not the daemon's.
    let (code, _, err) = Cmd::bindguard()
        .args(["exec", "--dev", UPLINK_B, "--", "/bin/true"])
        .as_nobody()
        .env("BINDGUARD_SOCKET", &d.socket)
        .in_netns(&s.topo.peer_a)
        .run();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another network namespace"), "{err}");

    // 200 clients at once while uplink B is deleted and re-created under the daemon.
    let clients: Vec<Child> = (0..200)
        .map(|_| d.exec(&s, &["--dev", UPLINK_B, "--", "/bin/true"]).spawn())
        .collect();
    s.topo.delete_uplink_b();
    assert!(
        wait_until(Duration::from_secs(20), || d.log().contains("was deleted")),
        "the link event was not handled during the flood: {}",
        d.log()
    );
    s.topo.recreate_uplink_b();
    let mut codes = std::collections::BTreeMap::new();
    for c in clients {
        let out = bindguard_tests::run::wait_output(c, Duration::from_secs(60))
            .expect("a client got no answer within 60 s");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // Bound and ran, or refused in one line while upB was gone.
        assert!(
            out.status.success() || (out.status.code() == Some(2) && err.lines().count() == 1),
            "{:?}: {err}",
            out.status
        );
        *codes.entry(out.status.code()).or_insert(0) += 1;
    }
    eprintln!("200 clients: {codes:?}");
    assert!(codes.get(&Some(0)).copied().unwrap_or(0) > 0, "{codes:?}");
    // Nothing left behind: every exec cgroup this daemon bound is released. (Matched by path:
    // a daemon starting beside this test adopts, and may release, other daemons' exec
    // cgroups in the shared slice too.)
    let all_released = || {
        let log = d.log();
        log.lines()
            .filter(|l| l.contains("bound uid"))
            .filter_map(|l| l.split(" in ").nth(1)?.split(" to ").next())
            .all(|p| log.contains(&format!("released {p}:")))
    };
    assert!(
        wait_until(Duration::from_secs(30), all_released),
        "{}",
        d.log()
    );
}

/// Root keeps working, and `--user` runs the command as that user.
#[test]
fn root_exec_user_runs_as_the_user() {
    root_or_skip!();
    let s = Scenario::new();
    let (code, out, err) = Cmd::bindguard()
        .args(["exec", "--netns"])
        .arg(s.topo.host.path())
        .args([
            "--dev",
            UPLINK_B,
            "--user",
            "nobody",
            "--",
            "/bin/sh",
            "-c",
            "id -u; id -G; echo $HOME",
        ])
        .run();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], NOBODY.to_string(), "{out}");
    assert!(
        !lines[1].split_whitespace().any(|g| g == "0"),
        "root's group kept: {out}"
    );
    let (code, _, err) = Cmd::bindguard()
        .args([
            "exec",
            "--dev",
            UPLINK_B,
            "--user",
            "no-such-user-bg",
            "--",
            "/bin/true",
        ])
        .run();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such user"), "{err}");
}

/// A user lists their exec bindings and ends one; another user sees none of them and cannot
/// end them.
#[test]
fn a_user_lists_and_ends_their_own_bindings_only() {
    root_or_skip!();
    let s = Scenario::new();
    let d = Daemon::start(&s, &grant(""));
    let sleeper = d
        .exec(&s, &["--dev", UPLINK_B, "--", "/bin/sleep", "600"])
        .spawn();
    let pid = sleeper.id();
    let name = format!("exec-{NOBODY}-{pid}");
    assert!(
        wait_until(Duration::from_secs(10), || cgroups_of(pid).len() == 1),
        "{}",
        d.log()
    );
    let sessions = |uid: u32, extra: &[&str]| {
        Cmd::bindguard()
            .arg("sessions")
            .args(extra)
            .as_uid(uid)
            .env("BINDGUARD_SOCKET", &d.socket)
            .run()
    };
    let (code, out, err) = sessions(NOBODY, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mine = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {out}"));
    assert_eq!(mine["dev"], UPLINK_B, "{out}");
    assert_eq!(mine["mode"], "strict", "{out}");
    assert_eq!(mine["pids"], serde_json::json!([pid]), "{out}");
    // Another user: not listed, cannot end it.
    let (code, out, _) = sessions(65533, &["--json"]);
    assert_eq!(code, 0);
    assert!(!out.contains(&name), "{out}");
    let (code, _, err) = sessions(65533, &["--end", &name]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no exec binding named"), "{err}");
    assert_eq!(cgroups_of(pid).len(), 1, "another user ended it");
    // Its own user ends it: the program is killed, the binding released.
    let (code, out, err) = sessions(NOBODY, &["--end", &name]);
    assert_eq!(code, 0, "{out}{err}");
    let status = bindguard_tests::run::wait_output(sleeper, Duration::from_secs(10))
        .expect("the program was not ended")
        .status;
    assert!(!status.success());
    assert!(
        wait_until(Duration::from_secs(10), || cgroups_of(pid).is_empty()),
        "{}",
        d.log()
    );
}

/// A running program of the user's, moved into a binding: what it starts from then on leaves
/// by upB. Another user's process, or root's, is refused.
#[test]
fn a_user_moves_their_own_running_program_and_no_one_elses() {
    root_or_skip!();
    let s = Scenario::new();
    let d = Daemon::start(&s, &grant(""));
    let tok = token("moved");
    let argv = busybox_client(&tok, false, false);
    // The client again and again (a new process each time: children inherit the cgroup).
    let script = format!("while :; do {}; sleep 0.2; done", argv[2..].join(" "));
    assert_eq!(argv[..2], ["sh", "-c"], "{argv:?}");
    let mut program = Cmd::new("/bin/sh")
        .args(["-c", &script])
        .as_nobody()
        .in_netns(&s.topo.host)
        .spawn();
    let pid = program.id();
    assert_eq!(s.listener.wait_for(&tok, Duration::from_secs(5)), [Peer::A]);
    let moving = |uid: u32, pid: u32| {
        Cmd::bindguard()
            .args(["sessions", "--move", &pid.to_string(), "--dev", UPLINK_B])
            .as_uid(uid)
            .env("BINDGUARD_SOCKET", &d.socket)
            .in_netns(&s.topo.host)
            .run()
    };
    for (uid, target) in [(65533, pid), (NOBODY, 1)] {
        let (code, _, err) = moving(uid, target);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("is not a process of uid"), "{err}");
    }
    let (code, out, err) = moving(NOBODY, pid);
    assert_eq!(code, 0, "{out}{err}{}", d.log());
    assert!(
        wait_until(Duration::from_secs(10), || s
            .listener
            .peers_with(&tok)
            .contains(&Peer::B)),
        "nothing of the moved program reached peer B: {}",
        d.log()
    );
    let _ = program.kill();
    let _ = program.wait();
    assert!(
        wait_until(Duration::from_secs(10), || cgroups_of(pid).is_empty()),
        "{}",
        d.log()
    );
}

/// Started as bindguard.socket starts it (systemd-socket-activate: the listener exists before
/// the daemon), the daemon answers at the socket it was passed.
#[test]
fn a_socket_activated_daemon_answers_at_the_socket_it_was_passed() {
    root_or_skip!();
    let s = Scenario::new();
    let d = Daemon::launch(&s, &grant(""), true);
    // systemd makes it 0666 (SocketMode=); systemd-socket-activate leaves the umask's mode.
    fs::set_permissions(&d.socket, fs::Permissions::from_mode(0o666)).unwrap();
    // The first request starts the daemon and waits for its answer.
    let (code, out, err) = d
        .exec(
            &s,
            &[
                "--dev",
                UPLINK_B,
                "--",
                "/bin/sh",
                "-c",
                "grep '^0::' /proc/self/cgroup",
            ],
        )
        .run();
    assert_eq!(code, 0, "{err}{}", d.log());
    assert!(out.contains("/bindguard.slice/exec-65534-"), "{out}");
    assert!(d.log().contains("the socket systemd passed"), "{}", d.log());
}

/// A request from another user namespace is refused (its uids mean something else there);
/// and an asker that exits before the daemon reads its request (what a recycled pid would
/// follow) gets nothing made: its pidfd is dead, so no pid is written anywhere.
#[test]
fn requests_from_another_user_namespace_or_a_gone_asker_make_nothing() {
    root_or_skip!();
    let s = Scenario::new();
    let d = Daemon::start(&s, &grant(""));
    let (code, _, err) = Cmd::new("unshare")
        .args(["--user", "--"])
        .arg(bindguard_tests::bindguard_bin())
        .args(["exec", "--dev", UPLINK_B, "--", "/bin/true"])
        .as_nobody()
        .env("BINDGUARD_SOCKET", &d.socket)
        .in_netns(&s.topo.host)
        .run();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another user namespace"), "{err}");
    // The asker sends a whole request and its pidfd, no newline, and exits: the daemon reads
    // to EOF (its exit), then finds the pidfd's process gone.
    let script = format!(
        "import os, socket\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.connect({:?})\n\
         socket.send_fds(s, [b'{{\"dev\": \"{UPLINK_B}\"}}'], [os.pidfd_open(os.getpid())])\n\
         print(os.getpid(), flush=True)\n\
         os._exit(0)\n",
        d.socket.display().to_string()
    );
    let (code, out, err) = Cmd::new("/usr/bin/python3")
        .args(["-c", &script])
        .as_nobody()
        .in_netns(&s.topo.host)
        .run();
    assert_eq!(code, 0, "{err}");
    let pid: u32 = out.trim().parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || d
            .log()
            .contains("exec request refused")),
        "{}",
        d.log()
    );
    // Refused at the pidfd check (reaped), or at the move (a zombie moves nowhere): either
    // way nothing is left.
    assert!(
        wait_until(Duration::from_secs(5), || cgroups_of(pid).is_empty()),
        "a cgroup was left for a gone asker: {}",
        d.log()
    );
    assert!(!d.log().contains(&format!("(pid {pid})")), "{}", d.log());
}

/// `bindguard grants` says what a user may bind, from the config as the daemon reads it.
#[test]
fn grants_say_what_a_user_may_bind() {
    let dir = std::env::temp_dir().join(unique("bgg"));
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.join("bindguard.toml");
    fs::write(&conf, grant("options = [\"dns\"]")).unwrap();
    let grants = |cmd: Cmd| {
        let (code, out, err) = cmd.run();
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let all = |user: &str| {
        Cmd::bindguard()
            .args(["grants", "--json", "--config"])
            .arg(&conf)
            .args(["--user", user])
    };
    let v = grants(all("nobody"));
    assert_eq!(v["uid"], NOBODY);
    assert_eq!(v["grants"][0]["dev"], serde_json::json!([UPLINK_B, "tun*"]));
    assert_eq!(v["grants"][0]["options"], serde_json::json!(["dns"]));
    assert_eq!(grants(all("65533"))["grants"], serde_json::json!([]));
    // Without --user: the caller's own.
    let v = grants(
        Cmd::bindguard()
            .args(["grants", "--json", "--config"])
            .arg(&conf)
            .as_nobody(),
    );
    assert_eq!(v["uid"], NOBODY);
    assert_eq!(v["grants"].as_array().unwrap().len(), 1);
    let (code, _, err) = all("no-such-user-bg").run();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}
