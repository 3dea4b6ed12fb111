//! `bindguard apply` and `bindguard daemon` against real namespaces and real traffic: which
//! peer namespace received a datagram says which interface it left by.
//!
//! The topology's uplink upB (to peer B) is deleted and re-created in the host namespace to
//! stand in for a VPN reconnect: every re-creation gives it a new ifindex.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::RwLock,
    time::{Duration, Instant},
};

use bindguard_tests::{
    Cmd, Peer, Proto, Scenario, TestCgroup, probe_bin, root_or_skip,
    scenario::{dest, token},
    topology::{Topology, UPLINK_A, UPLINK_B},
    unique, unit_caps,
};

/// `apply --prune` detaches every config-made binding its config does not name, including
/// those of the other tests of this file running at the same time: it takes this lock for
/// writing, every other test for reading.
static PRUNE: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    PRUNE.read().unwrap_or_else(|e| e.into_inner())
}

/// A directory for one test's config and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("bgd-{}", unique("c")));
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    /// Writes `name` with `text`; returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One `[[binding]]` table for `cgroup` -> `dev` in the scenario's host namespace.
fn binding(cgroup: &Path, dev: &str, topo: &Topology, extra: &str) -> String {
    format!(
        "[[binding]]\ncgroup = \"{}\"\ndev = \"{dev}\"\nnetns = \"{}\"\n{extra}\n",
        cgroup.display(),
        topo.host.path().display()
    )
}

/// `bindguard apply --config CONFIG [extra]`.
fn apply(config: &Path, extra: &[&str]) -> (i32, String, String) {
    Cmd::bindguard()
        .args(["apply", "--config"])
        .arg(config)
        .args(extra)
        .run()
}

/// A running `bindguard daemon`, SIGKILLed on drop (also when the test panics).
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, dir: &TempDir) -> Self {
        Self::launch(config, dir, None, None, Duration::from_secs(30))
    }

    /// With a soft RLIMIT_NOFILE of `nofile` (systemd gives a service 1,024), waiting up to
    /// `ready` for it to be ready.
    fn start_with(config: &Path, dir: &TempDir, nofile: Option<u64>, ready: Duration) -> Self {
        Self::launch(config, dir, None, nofile, ready)
    }

    /// The daemon as the shipped unit runs it: uid 0 with exactly the capabilities `caps`
    /// (setpriv's names), no others, no new privileges.
    fn start_with_caps(config: &Path, dir: &TempDir, caps: &[String]) -> Self {
        Self::launch(config, dir, Some(caps), None, Duration::from_secs(30))
    }

    fn launch(
        config: &Path,
        dir: &TempDir,
        caps: Option<&[String]>,
        nofile: Option<u64>,
        ready: Duration,
    ) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = dir.0.join(format!("daemon-{}.log", unique("l")));
        let out = fs::File::create(&log).unwrap();
        let mut cmd = match caps {
            None => std::process::Command::new(bindguard_tests::bindguard_bin()),
            Some(caps) => {
                let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
                let mut cmd = std::process::Command::new("setpriv");
                cmd.args([
                    "--inh-caps=-all",
                    "--ambient-caps=-all",
                    &format!("--bounding-set=-all{set}"),
                    "--no-new-privs",
                    "--",
                ])
                .arg(bindguard_tests::bindguard_bin());
                cmd
            }
        };
        cmd.arg("daemon")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(soft) = nofile {
            // SAFETY: only getrlimit/setrlimit between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut lim = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    lim.rlim_cur = soft;
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn bindguard daemon");
        let d = Self {
            child: Some(child),
            log,
        };
        assert!(
            d.wait_log("ready:", 1, ready),
            "daemon did not become ready: {}",
            d.log()
        );
        d
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` occurs at least `count` times in the log.
    fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().matches(needle).count() >= count)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the daemon to exit; returns its exit code (128+N for signal N).
    fn wait(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.take().unwrap().wait().unwrap();
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends fresh UDP tokens from inside the cgroup until one reaches a peer or `timeout`
/// passes; returns the peers and how long it took.
fn first_delivery(s: &Scenario, cg: &TestCgroup, timeout: Duration) -> (Vec<Peer>, Duration) {
    first_delivery_in(s, &cg.path, timeout)
}

/// [`first_delivery`] from the cgroup at `path`.
fn first_delivery_in(s: &Scenario, path: &Path, timeout: Duration) -> (Vec<Peer>, Duration) {
    let start = Instant::now();
    loop {
        let probe = Cmd::probe().in_cgroup_path(path).in_netns(&s.topo.host);
        let (code, _, tok) = s.send(probe, Proto::Udp, false);
        if code == 0 {
            let got = s.listener.wait_for(&tok, Duration::from_millis(200));
            if !got.is_empty() {
                return (got, start.elapsed());
            }
        }
        if start.elapsed() >= timeout {
            return (Vec::new(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status entry of cgroup `id`, every link asked (`--links`: link ids).
fn entry(s: &Scenario, id: u64) -> Option<serde_json::Value> {
    s.status_json_with(&["--links"])["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["cgroup_id"] == id)
        .cloned()
}

fn problems(e: &serde_json::Value) -> Vec<String> {
    bindguard_tests::scenario::problem_kinds(e)
}

fn link_ids(e: &serde_json::Value) -> Vec<u64> {
    e["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["link_id"].as_u64().expect("link present"))
        .collect()
}

#[test]
fn daemon_before_the_interface_fails_closed_then_binds_within_1s() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    s.topo.delete_uplink_b();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let _d = Daemon::start(&conf, &dir);
    let e = entry(&s, s.cg.id).expect("bound at start");
    assert_eq!(problems(&e), ["waiting-for-interface"], "{e}");
    assert_eq!(e["ifindex"], 0);
    let a_before = s.listener.packets(Peer::A);
    for (proto, v6) in [(Proto::Udp, false), (Proto::Tcp, false), (Proto::Udp, true)] {
        let (code, out, tok) = s.send(s.probe_bound(), proto, v6);
        assert_ne!(
            code, 0,
            "{proto:?} v6={v6} send from a closed cgroup worked: {out}"
        );
        assert!(
            s.listener
                .wait_for(&tok, Duration::from_millis(300))
                .is_empty()
        );
    }
    // Outside the cgroup nothing changed.
    assert_eq!(
        s.delivered_to(s.probe_unbound(), Proto::Udp, false),
        [Peer::A]
    );
    let a_unbound = s.listener.packets(Peer::A);
    assert!(a_unbound > a_before, "the listener counts packets");
    s.topo.recreate_uplink_b();
    let (got, took) = first_delivery(&s, &s.cg, Duration::from_secs(1));
    assert_eq!(
        got,
        [Peer::B],
        "not delivered within 1 s of the interface appearing"
    );
    assert!(took <= Duration::from_secs(1), "{took:?}");
    assert_eq!(
        s.listener.packets(Peer::A),
        a_unbound,
        "a bound packet reached A"
    );
    let e = entry(&s, s.cg.id).unwrap();
    assert!(problems(&e).is_empty(), "{e}");
    assert_eq!(e["ifindex"], s.topo.host.ifindex(UPLINK_B));
}

#[test]
fn twenty_recreations_under_load_never_leak_to_the_other_uplink() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let d = Daemon::start(&conf, &dir);
    assert_eq!(
        first_delivery(&s, &s.cg, Duration::from_secs(1)).0,
        [Peer::B]
    );
    let a_start = s.listener.packets(Peer::A);
    // A sender in the cgroup: a new UDP socket per datagram, IPv4 and IPv6, as fast as it can.
    let script = format!(
        "i=0; while :; do i=$((i+1)); {p} send udp {d4} 7000 loop4-$i >/dev/null 2>&1; {p} send udp {d6} 7000 loop6-$i >/dev/null 2>&1; done",
        p = probe_bin().display(),
        d4 = dest(false),
        d6 = dest(true)
    );
    let _sender = Running(
        Cmd::new("sh")
            .args(["-c", &script])
            .in_cgroup(&s.cg)
            .in_netns(&s.topo.host)
            .spawn(),
    );
    let mut worst = Duration::ZERO;
    for round in 0..20 {
        s.topo.delete_uplink_b();
        std::thread::sleep(Duration::from_millis(30));
        s.topo.recreate_uplink_b();
        let (got, took) = first_delivery(&s, &s.cg, Duration::from_secs(2));
        assert_eq!(
            got,
            [Peer::B],
            "round {round}: traffic did not resume: {}",
            d.log()
        );
        worst = worst.max(took);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.listener.packets(Peer::A),
        a_start,
        "packets of the cgroup reached peer A during the flaps"
    );
    // Every deletion closed the binding and every creation re-targeted it.
    assert!(
        d.wait_log("was deleted", 20, Duration::from_secs(2)),
        "{}",
        d.log()
    );
    assert!(
        d.wait_log("appeared", 20, Duration::from_secs(2)),
        "{}",
        d.log()
    );
    eprintln!("worst time to first delivery after a re-creation: {worst:?}");
}

/// A TCP client that keeps one connection, writes to it every 50 ms and reconnects (sending
/// `second`) as soon as a write fails.
const CLIENT: &str = r#"
import socket, sys, time
dest, port, first, second = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((dest, port), timeout=2)
s.sendall(first.encode())
deadline = time.time() + 20
while time.time() < deadline:
    time.sleep(0.05)
    try:
        s.sendall(b".")
    except OSError as e:
        print("reset:", e, flush=True)
        break
else:
    sys.exit(3)
for _ in range(100):
    try:
        s = socket.create_connection((dest, port), timeout=2)
        s.sendall(second.encode())
        s.close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(4)
"#;

#[test]
fn reset_sockets_makes_a_connected_client_reconnect_over_the_new_interface() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write(
        "c.toml",
        &binding(
            &s.cg.path,
            UPLINK_B,
            &s.topo,
            "on_recreate = \"reset-sockets\"",
        ),
    );
    let d = Daemon::start(&conf, &dir);
    let script = dir.write("client.py", CLIENT);
    let (first, second) = (token("first"), token("second"));
    let client = Cmd::new("/usr/bin/python3")
        .arg(&script)
        .args([dest(false), "7000", &first, &second])
        .in_cgroup(&s.cg)
        .in_netns(&s.topo.host)
        .spawn();
    let mut client = Running(client);
    // The first connection is up (the listener records it when it ends; wait for the SYN).
    assert!(
        wait_until(Duration::from_secs(3), || s.listener.packets(Peer::B) > 0),
        "the client never connected"
    );
    std::thread::sleep(Duration::from_millis(200));
    s.topo.delete_uplink_b();
    std::thread::sleep(Duration::from_millis(100));
    s.topo.recreate_uplink_b();
    assert!(
        d.wait_log("reset 1 socket", 1, Duration::from_secs(3)),
        "{}",
        d.log()
    );
    let got = s.listener.wait_for(&second, Duration::from_secs(8));
    assert_eq!(
        got,
        [Peer::B],
        "the client did not reconnect over upB: {}",
        d.log()
    );
    let status = client.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "client: {status:?}");
}

#[test]
fn a_cgroup_created_after_start_is_bound_when_it_appears() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let late_path = s.cg.path.join("late");
    let conf = dir.write("c.toml", &binding(&late_path, UPLINK_B, &s.topo, ""));
    let d = Daemon::start(&conf, &dir);
    assert!(d.log().contains("waiting for their cgroup") || d.log().contains("? waiting"));
    let late = s.cg.child("late");
    assert!(
        wait_until(Duration::from_secs(1), || late.pins().exists()),
        "not bound within 1 s: {}",
        d.log()
    );
    assert_eq!(
        first_delivery(&s, &late, Duration::from_secs(1)).0,
        [Peer::B]
    );
    // Outside it, routing as usual.
    assert_eq!(
        s.delivered_to(s.probe_unbound(), Proto::Udp, false),
        [Peer::A]
    );
}

#[test]
fn a_bad_config_on_sighup_changes_nothing_and_a_good_one_applies() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let d = Daemon::start(&conf, &dir);
    let before = entry(&s, s.cg.id).unwrap();
    // The bad file would move the cgroup to upA, and has an unknown key.
    dir.write(
        "c.toml",
        &binding(&s.cg.path, UPLINK_A, &s.topo, "colour = \"blue\""),
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        d.wait_log("reload refused", 1, Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert!(d.log().contains("c.toml:5"), "names file:line: {}", d.log());
    let after = entry(&s, s.cg.id).unwrap();
    assert_eq!(link_ids(&after), link_ids(&before));
    assert_eq!(after["ifname"], UPLINK_B);
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
    // A good config is applied in place.
    dir.write("c.toml", &binding(&s.cg.path, UPLINK_A, &s.topo, ""));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        d.wait_log("reloaded", 1, Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::A]
    );
    let moved = entry(&s, s.cg.id).unwrap();
    assert_eq!(moved["ifname"], UPLINK_A);
    assert_eq!(link_ids(&moved), link_ids(&before), "retargeted in place");
}

#[test]
fn kill_9_leaves_every_binding_enforcing() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let closed = s.cg.child("closed");
    let conf = dir.write(
        "c.toml",
        &format!(
            "{}{}",
            binding(&s.cg.path, UPLINK_B, &s.topo, ""),
            binding(&closed.path, "upGone", &s.topo, "")
        ),
    );
    let mut d = Daemon::start(&conf, &dir);
    d.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(d.wait(), 128 + 9);
    let a = s.listener.packets(Peer::A);
    // The open binding still pins to B, the closed one still refuses everything.
    let cmd = Cmd::probe().in_cgroup(&s.cg).in_netns(&s.topo.host);
    assert_eq!(s.delivered_to(cmd, Proto::Udp, false), [Peer::B]);
    let cmd = Cmd::probe().in_cgroup(&closed).in_netns(&s.topo.host);
    let (code, out, tok) = s.send(cmd, Proto::Udp, false);
    assert_ne!(code, 0, "closed binding let a send through: {out}");
    assert!(
        s.listener
            .wait_for(&tok, Duration::from_millis(300))
            .is_empty()
    );
    assert_eq!(s.listener.packets(Peer::A), a);
    assert_eq!(
        problems(&entry(&s, closed.id).unwrap()),
        ["waiting-for-interface"]
    );
}

#[test]
fn a_restart_is_idempotent_same_link_ids() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write(
        "c.toml",
        &binding(&s.cg.path, UPLINK_B, &s.topo, "mark = 7"),
    );
    let mut d = Daemon::start(&conf, &dir);
    let before = entry(&s, s.cg.id).unwrap();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait(), 0, "{}", d.log());
    assert!(d.log().contains("every binding stays"));
    // Stopped: the binding is still there and enforcing.
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
    let d2 = Daemon::start(&conf, &dir);
    let after = entry(&s, s.cg.id).unwrap();
    assert_eq!(link_ids(&after), link_ids(&before), "links were churned");
    assert_eq!(after["mark"], 7);
    let log = d2.log();
    assert!(
        !log.contains("+ attach") && !log.contains("~ re"),
        "a restart changed something: {log}"
    );
}

#[test]
fn apply_dry_run_changes_nothing_and_apply_is_idempotent() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let apply = |extra: &[&str]| apply(&conf, extra);
    let (code, out, err) = apply(&["--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ attach"), "{out}");
    assert!(!s.cg.pins().exists(), "dry run attached");
    let (code, out, err) = apply(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ attach"), "{out}");
    let first = entry(&s, s.cg.id).unwrap();
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
    let (code, out, _) = apply(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("= unchanged"), "{out}");
    assert_eq!(link_ids(&entry(&s, s.cg.id).unwrap()), link_ids(&first));
    // A changed config, dry run: the plan says retarget, the kernel keeps upB.
    dir.write("c.toml", &binding(&s.cg.path, UPLINK_A, &s.topo, ""));
    let (code, out, _) = apply(&["--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("~ retarget"), "{out}");
    assert_eq!(entry(&s, s.cg.id).unwrap()["ifname"], UPLINK_B);
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
    // A missing interface: attached closed, reported waiting-for-interface.
    dir.write("c.toml", &binding(&s.cg.path, "upNone", &s.topo, ""));
    let (code, out, err) = apply(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("waiting-for-interface"), "{out}");
    let (code, _, _) = s.send(s.probe_bound(), Proto::Udp, false);
    assert_ne!(code, 0, "closed binding let a socket through");
}

/// `apply --dry-run` exits as `apply` would when the plan already shows a failure: a
/// configured cgroup that does not exist and is not created.
#[test]
fn apply_dry_run_exits_as_apply_would_for_a_missing_cgroup() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let absent = s.cg.path.join("absent");
    let conf = dir.write(
        "c.toml",
        &format!(
            "{}{}",
            binding(&s.cg.path, UPLINK_B, &s.topo, ""),
            binding(&absent, UPLINK_B, &s.topo, "")
        ),
    );
    let apply = |extra: &[&str]| apply(&conf, extra);
    let (code, out, err) = apply(&["--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("? waiting") && out.contains("+ attach"),
        "{out}"
    );
    assert!(
        err.contains("apply would exit 1")
            && err.contains(&absent.display().to_string())
            && err.contains("create = true"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!s.cg.pins().exists(), "dry run attached");
    let dry_run_code = code;
    let (code, out, err) = apply(&[]);
    assert_eq!(
        code, dry_run_code,
        "apply and its dry run disagree: {out}{err}"
    );
    assert!(
        s.cg.pins().exists(),
        "apply still binds what it can: {out}{err}"
    );
}

/// The conffile the package installs binds nothing, and `apply` (dry or not) and the daemon
/// take it as it is: no error, nothing attached.
#[test]
fn the_shipped_config_applies_nothing_and_the_daemon_runs_idle_on_it() {
    root_or_skip!();
    let _g = shared();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/config/bindguard.toml");
    for extra in [&["--dry-run"][..], &[]] {
        let (code, out, err) = apply(&shipped, extra);
        assert_eq!(code, 0, "apply {extra:?}: {out}{err}");
        assert_eq!(out.trim(), "no bindings in the config", "{extra:?}");
        assert_eq!(err, "", "{extra:?}");
    }
    let dir = TempDir::new();
    let mut d = Daemon::start(&shipped, &dir);
    assert!(d.log().contains("ready: 0 binding(s)"), "{}", d.log());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait(), 0, "{}", d.log());
}

#[test]
fn apply_prune_detaches_only_config_bindings_the_config_dropped() {
    root_or_skip!();
    let _g = PRUNE.write().unwrap_or_else(|e| e.into_inner());
    let s = Scenario::new();
    let dir = TempDir::new();
    let other = s.cg.child("other");
    let manual = s.cg.child("manual");
    let both = format!(
        "{}{}",
        binding(&s.cg.path, UPLINK_B, &s.topo, ""),
        binding(&other.path, UPLINK_B, &s.topo, "")
    );
    let conf = dir.write("c.toml", &both);
    let (code, out, err) = Cmd::bindguard()
        .args(["apply", "--config"])
        .arg(&conf)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    // A binding made by hand is never pruned.
    let (code, _, err) = s.attach_to(Cmd::bindguard(), &manual.path, UPLINK_B).run();
    assert_eq!(code, 0, "{err}");
    dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let (code, out, err) = Cmd::bindguard()
        .args(["apply", "--prune", "--config"])
        .arg(&conf)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("- detach"), "{out}");
    assert!(!other.pins().exists(), "dropped binding kept");
    assert!(manual.pins().exists(), "hand-made binding pruned");
    assert!(s.cg.pins().exists());
}

#[test]
fn config_errors_name_file_and_line_and_apply_nothing() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    fs::create_dir_all(dir.0.join("bindings.d")).unwrap();
    dir.write(
        "bindguard.toml",
        &binding(&s.cg.path, UPLINK_B, &s.topo, ""),
    );
    let bad = dir.write(
        "bindings.d/20-bad.toml",
        "# a comment\n[[binding]]\ncgroup = \"x\"\ndev = \"eth0\"\nmode = \"loose\"\n",
    );
    for cmd in ["apply", "daemon"] {
        let (code, out, err) = Cmd::bindguard().args([cmd, "--config"]).arg(&dir.0).run();
        assert_eq!(code, 2, "{cmd}: {out}{err}");
        assert!(
            err.contains(&format!("{}:5:", bad.display())) && err.contains("loose"),
            "{cmd}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!s.cg.pins().exists(), "{cmd} applied part of a bad config");
    }
    // Two bindings for one cgroup, across files.
    fs::remove_file(&bad).unwrap();
    dir.write(
        "bindings.d/30-dup.toml",
        &format!("\n{}", binding(&s.cg.path, UPLINK_A, &s.topo, "")),
    );
    let (code, _, err) = Cmd::bindguard()
        .args(["apply", "--config"])
        .arg(&dir.0)
        .run();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("30-dup.toml:2:") && err.contains("already bound"),
        "{err}"
    );
    assert!(!s.cg.pins().exists());
}

#[test]
fn cgroup_self_binds_the_callers_cgroup() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let (code, out, err) = Cmd::bindguard()
        .args(["attach", "--cgroup", "self", "--dev", UPLINK_B, "--netns"])
        .arg(s.topo.host.path())
        .in_cgroup(&s.cg)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&s.cg.path.display().to_string()), "{out}");
    assert!(s.cg.pins().exists());
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
    let (code, out, err) = Cmd::bindguard()
        .args(["detach", "--cgroup", "self"])
        .in_cgroup(&s.cg)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    // It names the cgroup it detached, not the word it was given.
    assert!(
        out.starts_with(&format!("detached {} ", s.cg.path.display())),
        "{out}"
    );
    assert!(!s.cg.pins().exists());
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let unit = fs::read_to_string(root.join("deploy/systemd/bindguard.service")).unwrap();
    for want in [
        "Type=notify",
        "DefaultDependencies=no",
        "Before=network-pre.target",
        "Wants=network-pre.target",
        "ExecReload=",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "systemd-analyze is missing (cargo xtask setup installs systemd)"
        );
        eprintln!("SKIP: systemd-analyze is missing; `cargo xtask setup` installs it");
        return;
    };
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = TempDir::new();
    let bin = bindguard_tests::bindguard_bin();
    let copy = dir.write(
        "bindguard.service",
        &unit.replace("/usr/bin/bindguard", &bin.display().to_string()),
    );
    // The exec requests' socket unit, verified beside the service it activates.
    let socket = dir.write(
        "bindguard.socket",
        &fs::read_to_string(root.join("deploy/systemd/bindguard.socket")).unwrap(),
    );
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .arg(&socket)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    assert!(!err.contains("bindguard.service:"), "warnings: {err}");
    assert!(!err.contains("bindguard.socket:"), "warnings: {err}");
    // The drop-in is what the README shows. (The sample config: config.rs's unit tests.)
    let dropin =
        fs::read_to_string(root.join("deploy/systemd/bindguard-binding.conf.example")).unwrap();
    assert!(dropin.contains("ExecStartPre=+/usr/bin/bindguard attach --cgroup self --dev eth3"));
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn removed_pins_are_repaired_and_a_recreated_cgroup_is_bound_again() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let parent = TestCgroup::new();
    let svc_path = parent.path.join("svc");
    let conf = dir.write(
        "c.toml",
        &format!(
            "{}{}",
            binding(&s.cg.path, UPLINK_B, &s.topo, ""),
            binding(&svc_path, UPLINK_B, &s.topo, "")
        ),
    );
    let d = Daemon::start(&conf, &dir);
    let before = link_ids(&entry(&s, s.cg.id).unwrap());
    // One link pin removed by hand: the daemon still holds the link, and replaces the set.
    fs::remove_file(s.cg.pins().join("link_egress")).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || entry(&s, s.cg.id)
            .is_some_and(|e| problems(&e).is_empty() && link_ids(&e) != before)),
        "not repaired: {}",
        d.log()
    );
    assert!(d.log().contains("links missing"), "{}", d.log());
    // The whole pin directory removed: bound again. Renamed away first, in one step: the daemon
    // starts repairing at the first change it sees, and would re-pin into a directory being
    // emptied file by file.
    let aside = bindguard::kernel::pins::root().join(format!("gone-{}", s.cg.id));
    fs::rename(s.cg.pins(), &aside).unwrap();
    bindguard::kernel::pins::remove_dir(&aside, &bindguard::kernel::pins::lock().unwrap()).unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || entry(&s, s.cg.id)
            .is_some_and(|e| problems(&e).is_empty())),
        "not re-pinned: {}",
        d.log()
    );
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
    // A cgroup removed and made again (a service restart) gets a new id and is bound again.
    for round in 0..2 {
        let svc = parent.child("svc");
        assert!(
            wait_until(Duration::from_secs(1), || svc.pins().exists()),
            "round {round}: not bound: {}",
            d.log()
        );
        assert_eq!(
            first_delivery(&s, &svc, Duration::from_secs(1)).0,
            [Peer::B]
        );
        // Removed as systemd removes a stopped service's cgroup: the daemon drops its pins.
        let pins = svc.pins();
        assert!(wait_until(Duration::from_secs(5), || fs::remove_dir(
            &svc.path
        )
        .is_ok()));
        assert!(
            wait_until(Duration::from_secs(2), || !pins.exists()),
            "pins of the removed cgroup left behind: {}",
            d.log()
        );
        drop(svc);
    }
}

#[test]
fn a_missing_network_namespace_keeps_the_cgroup_closed_until_it_appears() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let name = unique("bgn");
    let path = Path::new("/run/netns").join(&name);
    let conf = dir.write(
        "c.toml",
        &format!(
            "[[binding]]\ncgroup = \"{}\"\ndev = \"vx0\"\nnetns = \"{}\"\n",
            s.cg.path.display(),
            path.display()
        ),
    );
    // apply: attached closed, not left open for want of the namespace.
    let (code, out, err) = Cmd::bindguard()
        .args(["apply", "--config"])
        .arg(&conf)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("does not exist: closed"), "{out}");
    let d = Daemon::start(&conf, &dir);
    let a = s.listener.packets(Peer::A);
    for probe in [s.probe_bound(), Cmd::probe().in_cgroup(&s.cg)] {
        let (code, out, tok) = s.send(probe, Proto::Udp, false);
        assert_ne!(code, 0, "a socket was allowed: {out}");
        assert!(
            s.listener
                .wait_for(&tok, Duration::from_millis(200))
                .is_empty()
        );
    }
    assert_eq!(s.listener.packets(Peer::A), a);
    // The namespace appears (a VPN's namespace made after boot), then its interface.
    bindguard_tests::topology::sh("ip", &["netns", "add", &name]);
    let ns = bindguard_tests::topology::NetnsGuard { name: name.clone() };
    ns.ip(&["link", "add", "vx0", "type", "veth", "peer", "name", "vx1"]);
    let want = ns.ifindex("vx0");
    assert!(
        wait_until(Duration::from_secs(2), || entry(&s, s.cg.id)
            .is_some_and(|e| e["ifindex"] == want && problems(&e).is_empty())),
        "not re-targeted into the new namespace: {}",
        d.log()
    );
    // The namespace goes: closed again.
    drop(ns);
    assert!(
        wait_until(Duration::from_secs(2), || entry(&s, s.cg.id)
            .is_some_and(|e| e["ifindex"] == 0 && e["netns"]["cookie"] == 0)),
        "not closed when the namespace went: {}",
        d.log()
    );
    let (code, out, _) = s.send(s.probe_bound(), Proto::Udp, false);
    assert_ne!(code, 0, "a socket was allowed: {out}");
}

#[test]
fn sd_notify_ready_only_after_the_first_apply() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let sock_path = dir.0.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let child = std::process::Command::new(bindguard_tests::bindguard_bin())
        .args(["daemon", "--config"])
        .arg(&conf)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Running(child);
    let mut buf = [0u8; 4096];
    let recv = |buf: &mut [u8]| -> String {
        let n = sock.recv(buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // STATUS= may come first; READY=1 comes once, after the first apply.
    let first = loop {
        let m = recv(&mut buf);
        if m.contains("READY=1") {
            break m;
        }
    };
    // Units ordered after the daemon start bound: the binding exists when READY=1 arrives.
    let e = entry(&s, s.cg.id).expect("bound before READY=1");
    assert!(problems(&e).is_empty(), "{e}");
    assert!(
        first.contains("STATUS=1 binding(s): 1 enforcing"),
        "{first}"
    );
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reloading = recv(&mut buf);
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    while !recv(&mut buf).contains("READY=1") {}
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    while !recv(&mut buf).contains("STOPPING=1") {}
}

#[test]
fn outdated_programs_are_replaced_make_before_break_at_start() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    // Applied by another build (another eBPF object, so another program set): to this build
    // the binding runs outdated programs.
    let Some(old_build) = bindguard_tests::run::variant_bin() else {
        return;
    };
    let (code, out, err) = Cmd::new(&old_build)
        .args(["apply", "--config"])
        .arg(&conf)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    let before = link_ids(&entry(&s, s.cg.id).unwrap());
    let e = entry(&s, s.cg.id).unwrap();
    assert_eq!(problems(&e), ["programs-outdated"], "{e}");
    // Without --links the set comes from its users/ entry: the same verdict.
    let e = s.status_entry().unwrap();
    assert_eq!(problems(&e), ["programs-outdated"], "{e}");
    let (code, out, _) = Cmd::bindguard()
        .args(["apply", "--dry-run", "--config"])
        .arg(&conf)
        .run();
    assert_eq!(code, 0);
    assert!(
        out.contains("~ replace") && out.contains("programs outdated"),
        "{out}"
    );
    let d = Daemon::start(&conf, &dir);
    assert!(d.log().contains("programs outdated"), "{}", d.log());
    let e = entry(&s, s.cg.id).unwrap();
    assert!(problems(&e).is_empty(), "{e}");
    assert_ne!(link_ids(&e), before, "programs not replaced");
    assert_eq!(
        s.delivered_to(s.probe_bound(), Proto::Udp, false),
        [Peer::B]
    );
}

#[test]
fn a_deleted_interface_closes_even_if_its_ifindex_is_reused_and_renames_are_followed() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let conf = dir.write("c.toml", &binding(&s.cg.path, UPLINK_B, &s.topo, ""));
    let d = Daemon::start(&conf, &dir);
    let old = s.topo.host.ifindex(UPLINK_B);
    s.topo.delete_uplink_b();
    assert!(
        wait_until(Duration::from_secs(1), || entry(&s, s.cg.id)
            .is_some_and(|e| e["ifindex"] == 0)),
        "not closed: {}",
        d.log()
    );
    // Root gives the dead ifindex to another interface, with a route to peer A over it: a
    // binding still holding that number would now send there.
    let idx = old.to_string();
    s.topo.host.ip(&[
        "link",
        "add",
        "upZ",
        "index",
        &idx,
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "netns",
        &s.topo.peer_a.name,
    ]);
    s.topo.host.ip(&["link", "set", "upZ", "up"]);
    s.topo.peer_a.ip(&["link", "set", "eth1", "up"]);
    s.topo
        .host
        .ip(&["route", "add", &format!("{}/32", dest(false)), "dev", "upZ"]);
    assert_eq!(s.topo.host.ifindex("upZ"), old);
    // Unbound processes do reach A over upZ (the route works)...
    assert_eq!(
        s.delivered_to(s.probe_unbound(), Proto::Udp, false),
        [Peer::A]
    );
    // ...the cgroup's do not: its binding is closed, not pointing at the reused number.
    let (code, out, tok) = s.send(s.probe_bound(), Proto::Udp, false);
    assert_ne!(code, 0, "a socket of the closed cgroup was allowed: {out}");
    assert!(
        s.listener
            .wait_for(&tok, Duration::from_millis(300))
            .is_empty()
    );
    // An interface renamed to the configured name is followed by name...
    s.topo.host.ip(&["link", "set", "upZ", "down"]);
    s.topo.host.ip(&["link", "set", "upZ", "name", UPLINK_B]);
    s.topo.host.ip(&["link", "set", UPLINK_B, "up"]);
    s.topo.host.ip(&[
        "route",
        "replace",
        &format!("{}/32", dest(false)),
        "dev",
        UPLINK_B,
    ]);
    assert!(
        wait_until(Duration::from_secs(1), || entry(&s, s.cg.id)
            .is_some_and(|e| e["ifindex"] == old && problems(&e).is_empty())),
        "rename to the configured name not followed: {}",
        d.log()
    );
    assert_eq!(
        first_delivery(&s, &s.cg, Duration::from_secs(1)).0,
        [Peer::A]
    );
    // ...and one renamed away closes the binding.
    s.topo.host.ip(&["link", "set", UPLINK_B, "name", "upY"]);
    assert!(
        wait_until(Duration::from_secs(1), || entry(&s, s.cg.id)
            .is_some_and(|e| e["ifindex"] == 0)),
        "rename away not followed: {}",
        d.log()
    );
    let (code, out, _) = s.send(s.probe_bound(), Proto::Udp, false);
    assert_ne!(code, 0, "closed binding let a socket through: {out}");
}

#[test]
fn create_true_makes_the_cgroup_and_binds_it_before_anything_runs_there() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let made = s.cg.path.join("made");
    let conf = dir.write(
        "c.toml",
        &binding(&made, UPLINK_B, &s.topo, "create = true"),
    );
    let (code, out, err) = Cmd::bindguard()
        .args(["apply", "--config"])
        .arg(&conf)
        .run();
    assert!(made.is_dir(), "cgroup not created: {out}{err}");
    // Removed (pins, then the directory) by this guard, before the parent's.
    let made = TestCgroup {
        id: std::os::unix::fs::MetadataExt::ino(&fs::metadata(&made).unwrap()),
        path: made,
    };
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("+ attach") && out.contains("creating the cgroup"),
        "{out}"
    );
    assert!(made.pins().exists());
    assert_eq!(
        first_delivery(&s, &made, Duration::from_secs(1)).0,
        [Peer::B]
    );
}

/// Issue #17, item 7: a `bindings.d/*.toml` that cannot be read — a dangling symlink, a
/// directory named `x.toml` — was skipped silently on SIGHUP and its binding detached, while a
/// bad value rejected the reload. Both are now a bad config: the reload is refused, naming the
/// file, and the running bindings stay. Removing the file is what detaches its binding.
#[test]
fn an_unreadable_config_file_on_sighup_changes_nothing() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let other = TestCgroup::new();
    let dir = TempDir::new();
    let etc = dir.0.join("etc");
    let d_dir = etc.join("bindings.d");
    fs::create_dir_all(&d_dir).unwrap();
    fs::write(
        d_dir.join("a.toml"),
        binding(&s.cg.path, UPLINK_B, &s.topo, ""),
    )
    .unwrap();
    let b = d_dir.join("b.toml");
    fs::write(&b, binding(&other.path, UPLINK_B, &s.topo, "")).unwrap();
    let d = Daemon::start(&etc, &dir);
    assert!(s.cg.pins().exists() && other.pins().exists(), "{}", d.log());
    let before = entry(&s, other.id).unwrap();
    let unreadable: [(&str, &dyn Fn()); 2] = [
        ("dangling symlink", &|| {
            std::os::unix::fs::symlink(dir.0.join("nowhere.toml"), &b).unwrap()
        }),
        ("directory", &|| fs::create_dir(&b).unwrap()),
    ];
    for (n, (what, make)) in unreadable.into_iter().enumerate() {
        let _ = fs::remove_file(&b);
        let _ = fs::remove_dir(&b);
        make();
        d.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(
            d.wait_log("reload refused", n + 1, Duration::from_secs(5)),
            "{what}: {}",
            d.log()
        );
        let refused = d
            .log()
            .lines()
            .filter(|l| l.contains("reload refused"))
            .nth(n)
            .unwrap()
            .to_string();
        assert!(
            refused.contains("b.toml"),
            "{what}: names the file: {refused}"
        );
        let after =
            entry(&s, other.id).unwrap_or_else(|| panic!("{what}: binding detached: {}", d.log()));
        assert_eq!(link_ids(&after), link_ids(&before), "{what}");
        assert!(s.cg.pins().exists(), "{what}: {}", d.log());
    }
    // Without the file, its binding goes.
    let _ = fs::remove_dir(&b);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        d.wait_log("reloaded", 1, Duration::from_secs(5)),
        "{}",
        d.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || !other.pins().exists()),
        "{}",
        d.log()
    );
    assert!(s.cg.pins().exists(), "{}", d.log());
}

/// Issue 17, item 3: with exactly the unit's capabilities, `existing = "destroy"` ends the
/// sockets of another uid's process (it needs CAP_DAC_READ_SEARCH to read its fds); without
/// that capability the pass is a logged error and `status` shows it, never a silent no-op.
#[test]
fn existing_destroy_reaches_another_uids_sockets_with_the_units_capabilities() {
    root_or_skip!();
    let _g = shared();
    let caps = unit_caps();
    for (caps, enough) in [
        (caps.clone(), true),
        (
            caps.into_iter()
                .filter(|c| c != "dac_read_search" && c != "dac_override")
                .collect::<Vec<_>>(),
            false,
        ),
    ] {
        let s = Scenario::new();
        let dir = TempDir::new();
        let tok = token("unit");
        let mut holder = s
            .probe_bound()
            .args(["held", "plain", dest(false), "7000", &tok])
            .as_nobody()
            .spawn_with_stdin();
        let line = bindguard_tests::run::first_line(&mut holder);
        if line != "ready" {
            let out = bindguard_tests::run::wait_output(holder, Duration::from_secs(5)).unwrap();
            panic!("holder: {line}{}", String::from_utf8_lossy(&out.stderr));
        }
        let conf = dir.write(
            "c.toml",
            &binding(
                &s.cg.path,
                UPLINK_B,
                &s.topo,
                "mode = \"bind\"\nexisting = \"destroy\"",
            ),
        );
        let d = Daemon::start_with_caps(&conf, &dir, &caps);
        // The pass runs off the event loop, after the binding: wait for its outcome.
        let outcome = if enough {
            "ended 2 unbound socket(s)"
        } else {
            "cannot read the fds of pid"
        };
        assert!(
            d.wait_log(outcome, 1, Duration::from_secs(5)),
            "{caps:?}: {}",
            d.log()
        );
        std::io::Write::write_all(&mut holder.stdin.take().unwrap(), b"go\n").unwrap();
        let out = bindguard_tests::run::wait_output(holder, Duration::from_secs(10)).unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let udp = s
            .listener
            .wait_for(&format!("{tok}-udp"), Duration::from_secs(3));
        let tcp = s
            .listener
            .wait_for(&format!("{tok}-tcp"), Duration::from_secs(3));
        if enough {
            assert_eq!(udp, [Peer::B], "UDP ({caps:?}): {report}\n{}", d.log());
            assert_eq!(tcp, [Peer::B], "TCP ({caps:?}): {report}\n{}", d.log());
            assert!(!d.log().contains("could not be reached"), "{}", d.log());
            assert_eq!(problems(&entry(&s, s.cg.id).unwrap()), Vec::<String>::new());
        } else {
            // TCP is found by sock_diag and destroyed all the same; the UDP socket cannot be
            // bound without a copy of its fd: said in the log and in status.
            assert_eq!(tcp, [Peer::B], "TCP ({caps:?}): {report}\n{}", d.log());
            assert!(
                d.log().contains("cannot read the fds of pid"),
                "no error logged: {}",
                d.log()
            );
            assert!(
                problems(&entry(&s, s.cg.id).unwrap()).contains(&"sockets-unreached".to_string()),
                "{:?}",
                entry(&s, s.cg.id)
            );
        }
    }
}

/// A UDP client bound to a port that sends every 50 ms, its token read afresh from a file
/// each time; prints `ready` once its socket exists.
const UDP_CLIENT: &str = r#"
import socket, sys, time
dest, port, phase_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
print("ready", flush=True)
deadline = time.time() + 20
while time.time() < deadline:
    tok = open(phase_file).read().strip()
    try:
        s.sendto(tok.encode(), (dest, port))
    except OSError as e:
        print("error", e.errno, flush=True)
    time.sleep(0.05)
"#;

/// Issue 17, item 6: `reset-sockets` re-binds a port-bound UDP socket to the re-created
/// interface (SOCK_DESTROY would clear its binding: bind mode would send by the other uplink,
/// strict mode would refuse it forever). The daemon runs with the unit's capabilities and the
/// client as uid 65534.
#[test]
fn reset_sockets_keeps_a_udp_client_on_the_recreated_interface() {
    root_or_skip!();
    let _g = shared();
    for mode in ["bind", "strict"] {
        let s = Scenario::new();
        let dir = TempDir::new();
        let conf = dir.write(
            "c.toml",
            &binding(
                &s.cg.path,
                UPLINK_B,
                &s.topo,
                &format!("mode = \"{mode}\"\non_recreate = \"reset-sockets\""),
            ),
        );
        let d = Daemon::start_with_caps(&conf, &dir, &unit_caps());
        let script = dir.write("client.py", UDP_CLIENT);
        let phase = dir.write("phase", &token("before"));
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut client = Cmd::new("/usr/bin/python3")
            .arg(&script)
            .args([dest(false), "7000"])
            .arg(&phase)
            .in_cgroup(&s.cg)
            .in_netns(&s.topo.host)
            .as_nobody()
            .spawn();
        let line = bindguard_tests::run::first_line(&mut client);
        let client = Running(client);
        assert_eq!(line, "ready");
        let before = fs::read_to_string(&phase).unwrap();
        assert_eq!(
            s.listener.wait_for(&before, Duration::from_secs(3)),
            [Peer::B],
            "{mode}: before"
        );
        s.topo.delete_uplink_b();
        std::thread::sleep(Duration::from_millis(100));
        s.topo.recreate_uplink_b();
        assert!(
            d.wait_log("reset 1 socket", 1, Duration::from_secs(3)),
            "{mode}: {}",
            d.log()
        );
        let after = token("after");
        fs::write(&phase, &after).unwrap();
        let got = s.listener.wait_for(&after, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            s.listener.peers_with(&after),
            [Peer::B],
            "{mode}: the client's datagrams after the re-creation (first: {got:?}): {}",
            d.log()
        );
        drop(client);
    }
}

/// Cgroups made by hand (`bgs` names), removed on drop: their pins, their processes, then the
/// directories, deepest first. Removing one that is already gone costs nothing.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// `n` cgroups `bgs<i>` under `parent`.
    fn under(parent: &Path, n: usize) -> Self {
        let paths: Vec<PathBuf> = (0..n).map(|i| parent.join(format!("bgs{i}"))).collect();
        for p in &paths {
            fs::create_dir(p).unwrap();
        }
        Self(paths)
    }

    /// One binding to upB per cgroup.
    fn config(&self, topo: &Topology) -> String {
        self.0
            .iter()
            .map(|p| binding(p, UPLINK_B, topo, ""))
            .collect()
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let mut paths = self.0.clone();
        paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in paths {
            let Ok(m) = fs::metadata(&p) else { continue };
            let pins = bindguard::kernel::pins::binding_dir(m.ino());
            if pins.exists()
                && let Ok(lock) = bindguard::kernel::pins::lock()
            {
                let _ = bindguard::kernel::pins::remove_dir(&pins, &lock);
                bindguard::kernel::progset::forget_user(m.ino(), &lock);
            }
            let _ = fs::write(p.join("cgroup.kill"), "1");
            let deadline = Instant::now() + Duration::from_secs(5);
            while fs::remove_dir(&p).is_err() && p.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The ifindex the binding of the cgroup at `path` enforces now (None: not bound).
fn bound_ifindex(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let id = fs::metadata(path).ok()?.ino();
    bindguard::binding::enforcer::read_policy(&bindguard::kernel::pins::binding_dir(id))
        .ok()
        .map(|p| p.ifindex)
}

/// Issue 23 §1: the daemon held ~10 descriptors per binding and, at systemd's default soft
/// limit, left most bindings unbound ("failed") while saying "ready".
#[test]
fn under_a_soft_limit_of_1024_fds_all_1200_bindings_are_enforced_and_follow_a_flap() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let parent = TestCgroup::new();
    let many = Cgroups::under(&parent.path, 1200);
    let conf = dir.write("c.toml", &many.config(&s.topo));
    let started = Instant::now();
    let d = Daemon::start_with(&conf, &dir, Some(1024), Duration::from_secs(300));
    eprintln!("1200 bindings ready in {:?}", started.elapsed());
    assert!(
        d.log().contains("1200 enforcing") && d.log().contains(" 0 failed"),
        "{}",
        d.log().lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    let up_b = s.topo.host.ifindex(UPLINK_B);
    let all_on = |want: u32| many.0.iter().all(|p| bound_ifindex(p) == Some(want));
    assert!(all_on(up_b), "not every binding is on {UPLINK_B}");
    let fds = fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    assert!(fds < 100, "the daemon holds {fds} descriptors");
    for i in [0, 599, 1199] {
        assert_eq!(
            first_delivery_in(&s, &many.0[i], Duration::from_secs(1)).0,
            [Peer::B],
            "cgroup {i}"
        );
    }
    // A deletion closes every one, a re-creation re-targets every one.
    s.topo.delete_uplink_b();
    assert!(
        wait_until(Duration::from_secs(3), || all_on(0)),
        "not all closed: {}",
        d.log()
    );
    s.topo.recreate_uplink_b();
    let up_b = s.topo.host.ifindex(UPLINK_B);
    assert!(
        wait_until(Duration::from_secs(3), || all_on(up_b)),
        "not all re-targeted"
    );
    assert_eq!(
        first_delivery_in(&s, &many.0[1199], Duration::from_secs(1)).0,
        [Peer::B]
    );
    assert!(d.log().contains("closed 1200 binding(s)"), "{}", d.log());
    assert!(
        d.log().contains("re-targeted 1200 binding(s)"),
        "{}",
        d.log()
    );
}

/// Issue 23 §3: the daemon slept on its event loop for every removed cgroup until the kernel
/// detached its links, binding nothing new meanwhile.
#[test]
fn two_hundred_cgroups_removed_at_once_do_not_delay_binding_a_new_one() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let parent = TestCgroup::new();
    let late = parent.path.join("bgslate");
    let late_guard = Cgroups(vec![late.clone()]);
    let many = Cgroups::under(&parent.path, 200);
    let mut text = many.config(&s.topo);
    text.push_str(&binding(&late, UPLINK_B, &s.topo, ""));
    let conf = dir.write("c.toml", &text);
    let d = Daemon::start_with(&conf, &dir, None, Duration::from_secs(120));
    let up_b = s.topo.host.ifindex(UPLINK_B);
    let pins: Vec<PathBuf> = many
        .0
        .iter()
        .map(|p| {
            use std::os::unix::fs::MetadataExt as _;
            bindguard::kernel::pins::binding_dir(fs::metadata(p).unwrap().ino())
        })
        .collect();
    assert!(pins.iter().all(|p| p.exists()));
    for p in &many.0 {
        fs::remove_dir(p).unwrap();
    }
    fs::create_dir(&late).unwrap();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_millis(500), || bound_ifindex(&late)
            == Some(up_b)),
        "the new cgroup was not bound within 500 ms of 200 removals: {}",
        d.log()
    );
    eprintln!("bound {:?} after its mkdir", t.elapsed());
    assert_eq!(
        first_delivery_in(&s, &late, Duration::from_secs(1)).0,
        [Peer::B]
    );
    assert!(
        wait_until(Duration::from_secs(5), || pins.iter().all(|p| !p.exists())),
        "pins of removed cgroups left: {}",
        d.log()
    );
    drop(late_guard);
}

/// Issue 17 item 5: SOCK_DESTROY (reset-sockets) of a socket whose lock a process holds
/// waited on the event loop for as long as the process wanted; a new configured cgroup stayed
/// unbound meanwhile and its traffic followed the routing table.
#[test]
fn a_held_socket_lock_during_reset_sockets_does_not_stop_a_new_cgroup_being_bound() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let parent = TestCgroup::new();
    let held = parent.child("bgsheld");
    let late = parent.path.join("bgslate");
    let late_guard = Cgroups(vec![late.clone()]);
    let conf = dir.write(
        "c.toml",
        &format!(
            "{}{}",
            binding(
                &held.path,
                UPLINK_B,
                &s.topo,
                "on_recreate = \"reset-sockets\""
            ),
            binding(&late, UPLINK_B, &s.topo, "")
        ),
    );
    let d = Daemon::start(&conf, &dir);
    let mut holder = Running(
        Cmd::probe()
            .args(["lock-udp", dest(false), "7000"])
            .in_cgroup(&held)
            .in_netns(&s.topo.host)
            .spawn(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "holding");
    s.topo.delete_uplink_b();
    std::thread::sleep(Duration::from_millis(50));
    s.topo.recreate_uplink_b();
    let up_b = s.topo.host.ifindex(UPLINK_B);
    assert!(
        wait_until(Duration::from_secs(2), || bound_ifindex(&held.path)
            == Some(up_b)),
        "not re-targeted: {}",
        d.log()
    );
    // The reset is under way (and stuck in lock_sock); a new cgroup appears.
    std::thread::sleep(Duration::from_millis(200));
    fs::create_dir(&late).unwrap();
    assert!(
        wait_until(Duration::from_millis(500), || bound_ifindex(&late)
            == Some(up_b)),
        "the new cgroup was not bound while a reset waited: {}",
        d.log()
    );
    assert_eq!(
        first_delivery_in(&s, &late, Duration::from_secs(1)).0,
        [Peer::B]
    );
    assert!(
        d.wait_log("did not finish within", 1, Duration::from_secs(8)),
        "the stuck reset was not reported: {}",
        d.log()
    );
    drop(holder);
    assert!(
        d.wait_log("finished late", 1, Duration::from_secs(3)),
        "{}",
        d.log()
    );
    drop(late_guard);
}

/// Issue 17 item 1: `rmdir leaf; rmdir P; mkdir -p P/leaf` (systemd's user-N.slice at logout
/// and login) left the configured leaf unbound: the daemon watched only P, and cgroupfs says
/// nothing to a watch whose directory is removed.
#[test]
fn a_configured_leaf_is_bound_again_after_its_parent_is_recreated_50_rounds() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let top = TestCgroup::new();
    let p = top.path.join("bgsp");
    let leaf = p.join("leaf");
    let _guard = Cgroups(vec![p.clone(), leaf.clone()]);
    fs::create_dir(&p).unwrap();
    let conf = dir.write("c.toml", &binding(&leaf, UPLINK_B, &s.topo, ""));
    let d = Daemon::start(&conf, &dir);
    fs::create_dir(&leaf).unwrap();
    let up_b = s.topo.host.ifindex(UPLINK_B);
    let rmdir = |d: &Path| {
        assert!(
            wait_until(Duration::from_secs(2), || fs::remove_dir(d).is_ok()),
            "rmdir {}",
            d.display()
        )
    };
    for round in 0..50 {
        assert!(
            wait_until(Duration::from_secs(1), || bound_ifindex(&leaf)
                == Some(up_b)),
            "round {round}: the leaf is not bound: {}",
            d.log()
        );
        if round % 10 == 0 || round == 49 {
            assert_eq!(
                first_delivery_in(&s, &leaf, Duration::from_secs(1)).0,
                [Peer::B],
                "round {round}"
            );
        }
        rmdir(&leaf);
        if round % 2 == 1 {
            // The daemon has seen the leaf go before its parent goes.
            std::thread::sleep(Duration::from_millis(20));
        }
        rmdir(&p);
        fs::create_dir_all(&leaf).unwrap();
    }
}

/// Issue 23: flapping the interface under a tight socket loop in 300 bound cgroups; no
/// datagram leaves by the other uplink (peer A's sniffer counts every one).
#[test]
fn flaps_under_a_socket_loop_in_300_bound_cgroups_never_leave_by_the_other_uplink() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let parent = TestCgroup::new();
    let many = Cgroups::under(&parent.path, 300);
    let conf = dir.write("c.toml", &many.config(&s.topo));
    let d = Daemon::start_with(&conf, &dir, None, Duration::from_secs(120));
    let list = dir.write(
        "cgroups",
        &many
            .0
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect::<String>(),
    );
    // Moves itself from cgroup to cgroup, making a new UDP socket (IPv4 and IPv6) in each.
    let sender = dir.write(
        "sender.py",
        r#"
import os, socket, sys
cgs = open(sys.argv[1]).read().split()
pid = str(os.getpid()).encode()
while True:
    for c in cgs:
        fd = os.open(c + "/cgroup.procs", os.O_WRONLY)
        os.write(fd, pid)
        os.close(fd)
        for fam, dst in ((socket.AF_INET, sys.argv[2]), (socket.AF_INET6, sys.argv[3])):
            try:
                s = socket.socket(fam, socket.SOCK_DGRAM)
                s.sendto(b"x", (dst, 7000))
                s.close()
            except OSError:
                pass
"#,
    );
    let senders: Vec<Running> = (0..2)
        .map(|i| {
            Running(
                Cmd::new("/usr/bin/python3")
                    .arg(&sender)
                    .arg(&list)
                    .args([dest(false), dest(true)])
                    .in_cgroup_path(&many.0[i * 150])
                    .in_netns(&s.topo.host)
                    .spawn(),
            )
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(3), || s.listener.packets(Peer::B) > 100),
        "the senders send nothing"
    );
    let a_start = s.listener.packets(Peer::A);
    for round in 0..8 {
        s.topo.delete_uplink_b();
        std::thread::sleep(Duration::from_millis(30));
        s.topo.recreate_uplink_b();
        // (Peer B's sniffer went with its eth0: the listener's tokens tell instead.)
        assert_eq!(
            first_delivery_in(&s, &many.0[round * 37], Duration::from_secs(3)).0,
            [Peer::B],
            "round {round}: traffic did not resume: {}",
            d.log()
        );
    }
    drop(senders);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.listener.packets(Peer::A),
        a_start,
        "datagrams of bound cgroups left by {UPLINK_A} during the flaps"
    );
    assert!(d.log().contains("closed 300 binding(s)"), "{}", d.log());
}

/// Issue 23 §1: a configured binding the daemon cannot make was counted, but nothing named it:
/// the ready line and `status` must.
#[test]
fn a_binding_that_cannot_be_made_is_named_by_the_ready_line_and_by_status() {
    root_or_skip!();
    let _g = shared();
    let dir = TempDir::new();
    let cg = TestCgroup::new();
    // A "network namespace" that is a plain file: every resolution of it fails.
    let not_ns = dir.write("not-a-netns", "");
    let conf = dir.write(
        "c.toml",
        &format!(
            "[[binding]]\ncgroup = \"{}\"\ndev = \"lo\"\nnetns = \"{}\"\n",
            cg.path.display(),
            not_ns.display()
        ),
    );
    let d = Daemon::start(&conf, &dir);
    let ready = d
        .log()
        .lines()
        .find(|l| l.contains("ready:"))
        .unwrap()
        .to_string();
    assert!(
        ready.contains("ERROR") && ready.contains("1 failed") && ready.contains("NOT bound"),
        "{ready}"
    );
    assert!(ready.contains(&cg.path.display().to_string()), "{ready}");
    let (code, out, err) = Cmd::bindguard().args(["status", "--json"]).run();
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let unbound = json["unbound"].as_array().expect("an unbound list");
    assert!(
        unbound
            .iter()
            .any(|u| u["cgroup"] == cg.path.display().to_string()
                && u["why"]
                    .as_str()
                    .unwrap()
                    .contains("not a network namespace")),
        "{out}"
    );
    let (_, table, _) = Cmd::bindguard().arg("status").run();
    assert!(table.contains("NOT bound"), "{table}");
}

/// Issue 27: the daemon (with exactly the unit's capabilities) makes no strict binding below
/// a delegation boundary and names it; a binding whose parent is delegated later (a chown of
/// its cgroup.procs) keeps enforcing and is named in the log at error level.
#[test]
fn the_daemon_refuses_a_delegated_cgroup_and_names_one_delegated_later() {
    root_or_skip!();
    let _g = shared();
    let s = Scenario::new();
    let dir = TempDir::new();
    let user = s.cg.child("user");
    for p in [user.path.clone(), user.path.join("cgroup.procs")] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let below = user.child("bound");
    let later = s.cg.child("later");
    let fine = later.child("bound");
    let conf = dir.write(
        "c.toml",
        &format!(
            "{}{}",
            binding(&below.path, UPLINK_B, &s.topo, ""),
            binding(&fine.path, UPLINK_B, &s.topo, "")
        ),
    );
    let d = Daemon::start_with_caps(&conf, &dir, &unit_caps());
    assert!(
        d.log().contains("escapable-by-migration (uid 65534 via"),
        "the refusal is not named: {}",
        d.log()
    );
    assert!(!below.pins().exists(), "{}", d.log());
    assert!(fine.pins().exists(), "{}", d.log());
    std::os::unix::fs::chown(later.path.join("cgroup.procs"), Some(65534), None).unwrap();
    assert!(
        d.wait_log("is now escapable-by-migration", 1, Duration::from_secs(5)),
        "{}",
        d.log()
    );
    // Still enforcing: taking the binding away would free every process in it.
    assert_eq!(
        first_delivery(&s, &fine, Duration::from_secs(1)).0,
        [Peer::B]
    );
}
