//! Operated like a node agent (#30): a real Prometheus scrapes `bindguard daemon` and
//! `bindguard nri` (`--metrics`), the probes say ready only when the service is, and the NRI
//! plugin survives containerd being killed and restarted under it.
//!
//! Every name these tests make starts with `op` (namespaces, cgroups, temp directories): other
//! suites may run on the same machine at the same time. The daemon runs with exactly the
//! systemd unit's capabilities, the plugin with exactly the DaemonSet's.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use bindguard_tests::scenario::sender;
use bindguard_tests::{
    Cmd, Listener, Peer, TestCgroup, Topology,
    containerd::{self, Containerd, NriPlugin, Pod, PodSpec},
    listener::PORT,
    prometheus::{self, Prometheus, free_port, get, promtool_check, wait_for},
    require_root,
    scenario::token,
    topology::{DEST4, UPLINK_A, UPLINK_B},
    unique, unit_caps,
};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Root and Prometheus, or a reason to skip (a failure under CI=true).
fn may_run(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if let Some(why) = prometheus::unavailable() {
        assert!(!ci(), "{test}: {why}; CI=true so this is a failure");
        bindguard_tests::skip(test, &why);
        return false;
    }
    true
}

/// A directory for one test's files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(unique("opd"));
        fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `bindguard daemon --config CONFIG` as the shipped unit runs it (exactly its capabilities,
/// no new privileges), in the root network namespace; SIGKILLed on drop, its log printed
/// when the test fails.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(config: &Path, dir: &TempDir) -> Self {
        let log = dir.0.join("daemon.log");
        let out = fs::File::create(&log).unwrap();
        let set: String = unit_caps().iter().map(|c| format!(",+{c}")).collect();
        let child = std::process::Command::new("setpriv")
            .args([
                "--inh-caps=-all",
                "--ambient-caps=-all",
                &format!("--bounding-set=-all{set}"),
                "--no-new-privs",
                "--",
            ])
            .arg(bindguard_tests::bindguard_bin())
            .arg("daemon")
            .arg("--config")
            .arg(config)
            // Its own exec socket, not the machine's default one.
            .arg("--socket")
            .arg(dir.0.join("op.sock"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn bindguard daemon");
        Self { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
    }
}

/// The status of `GET path` on `addr` (in `ns`), 0 when nothing answers.
fn status(ns: Option<&bindguard_tests::topology::NetnsGuard>, addr: SocketAddr, path: &str) -> u16 {
    get(ns, addr, path).map_or(0, |(s, _)| s)
}

/// Waits until Prometheus reports job `job` up; panics with its last error otherwise.
fn wait_up(prom: &Prometheus, job: &str) {
    let mut last = None;
    let up = wait_for(Duration::from_secs(30), || {
        last = prom.target(job);
        last.as_ref().filter(|(h, _)| h == "up").map(|_| ())
    });
    assert!(up.is_some(), "Prometheus never saw {job} up: {last:?}");
}

/// Waits until the PromQL query `q` returns one series of at least `min`; returns its value.
fn wait_value(prom: &Prometheus, q: &str, min: f64) -> f64 {
    let mut last = Vec::new();
    let v = wait_for(Duration::from_secs(30), || {
        last = prom.query(q);
        match last.as_slice() {
            [(_, v)] if *v >= min => Some(*v),
            _ => None,
        }
    });
    v.unwrap_or_else(|| panic!("{q} never reached {min}: {last:?}"))
}

/// Sends a UDP token from `cg` in the host namespace; which peers received it.
fn send_from(topo: &Topology, listener: &Listener, cg: &TestCgroup) -> Vec<Peer> {
    let tok = token("op-send");
    let (code, out, err) = Cmd::probe()
        .in_cgroup(cg)
        .in_netns(&topo.host)
        .args(["send", "udp", DEST4, &PORT.to_string(), &tok])
        .run();
    assert_eq!(code, 0, "send from the bound cgroup: {out}{err}");
    let first = listener.wait_for(&tok, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(150));
    if first.is_empty() {
        first
    } else {
        listener.peers_with(&tok)
    }
}

#[test]
fn prometheus_scrapes_the_daemon_and_counts_the_refusals_it_provoked() {
    let test = "prometheus_scrapes_the_daemon_and_counts_the_refusals_it_provoked";
    if !may_run(test) {
        return;
    }
    let topo = Topology::with_prefix("op");
    let listener = Listener::start(&topo);
    let cg = TestCgroup::with_prefix("op");
    let dir = TempDir::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port(None)).parse().unwrap();
    let config = dir.0.join("bindguard.toml");
    let binding = format!(
        "[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
        cg.path.display(),
        topo.host.path().display()
    );
    fs::write(&config, format!("metrics = \"{addr}\"\n{binding}")).unwrap();
    let daemon = Daemon::spawn(&config, &dir);
    assert!(
        wait_for(Duration::from_secs(30), || (status(None, addr, "/readyz")
            == 200)
            .then_some(()))
        .is_some(),
        "the daemon never became ready: {}",
        daemon.log()
    );
    assert_eq!(status(None, addr, "/healthz"), 200);
    assert_eq!(
        send_from(&topo, &listener, &cg),
        [Peer::B],
        "the daemon's binding holds"
    );

    // Refusals: SO_BINDTODEVICE to the other uplink from inside the cgroup, three times. The
    // setsockopt is refused, and the datagram sent after it still leaves by B.
    for _ in 0..3 {
        let tok = token("op-esc");
        let (_, out, err) = Cmd::probe()
            .in_cgroup(&cg)
            .in_netns(&topo.host)
            .args([
                "escape",
                "sockopt",
                DEST4,
                &PORT.to_string(),
                &tok,
                UPLINK_A,
            ])
            .run();
        assert!(
            out.contains("setsockopt(SO_BINDTODEVICE): error errno=1"),
            "the setsockopt escape is refused: {out}{err}"
        );
        assert_eq!(
            listener.wait_for(&tok, Duration::from_secs(5)),
            [Peer::B],
            "{tok}"
        );
    }

    let prom = Prometheus::start(None, &[("opdaemon", addr)]);
    wait_up(&prom, "opdaemon");
    let q = format!(
        "bindguard_refusals_total{{job=\"opdaemon\",hook=\"setsockopt\",cgroup=\"{}\"}}",
        cg.path.display()
    );
    assert_eq!(
        wait_value(&prom, &q, 3.0),
        3.0,
        "exactly the refusals provoked"
    );
    let enforcing = "bindguard_bindings{job=\"opdaemon\",mode=\"strict\",state=\"enforcing\"}";
    assert_eq!(wait_value(&prom, enforcing, 1.0), 1.0);

    let (code, text) = get(None, addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let (ok, said) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics refused the exposition: {said}\n{text}"
    );
    let label = format!("cgroup=\"{}\"", cg.path.display());
    assert!(text.contains(&label), "{text}");

    // A binding dropped from the config takes its series with it.
    fs::write(&config, format!("metrics = \"{addr}\"\n")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        get(None, addr, "/metrics").filter(|(_, t)| !t.contains(&label))
    });
    assert!(gone.is_some(), "the dropped binding's series stayed");
}

#[test]
fn the_daemon_is_not_ready_until_its_config_is_applied() {
    let test = "the_daemon_is_not_ready_until_its_config_is_applied";
    if !require_root(test) {
        return;
    }
    let topo = Topology::with_prefix("op");
    let cg = TestCgroup::with_prefix("op");
    let dir = TempDir::new();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port(None)).parse().unwrap();
    // The binding names its namespace by a FIFO: the daemon's open of it blocks until the test
    // opens the other end, so the apply is held in progress for as long as the test wants
    // (then the binding fails: a FIFO is no network namespace).
    let fifo = dir.0.join("opfifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let held = format!(
        "[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
        cg.path.display(),
        fifo.display()
    );
    let _ = &topo;
    let config = dir.0.join("bindguard.toml");
    fs::write(&config, format!("metrics = \"{addr}\"\n{held}")).unwrap();
    let daemon = Daemon::spawn(&config, &dir);
    assert!(
        wait_for(Duration::from_secs(10), || (status(None, addr, "/healthz")
            == 200)
            .then_some(()))
        .is_some(),
        "the listener never answered: {}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(None, addr, "/readyz"), 503, "ready during the apply");
    assert!(!daemon.log().contains("ready:"), "{}", daemon.log());
    // Release the apply: the daemon's open returns, the binding fails, the config is applied.
    let _writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || (status(None, addr, "/readyz")
            == 200)
            .then_some(()))
        .is_some(),
        "not ready after the apply: {}",
        daemon.log()
    );
    let (_, text) = get(None, addr, "/metrics").unwrap();
    assert!(
        text.contains("bindguard_bindings{mode=\"strict\",state=\"failed\"} 1"),
        "{text}"
    );
}

#[test]
fn a_bad_metrics_address_is_one_line_exit_2() {
    let dir = TempDir::new();
    let config = dir.0.join("bindguard.toml");
    fs::write(&config, "metrics = \"localhost\"\n").unwrap();
    let (code, out, err) = Cmd::bindguard()
        .args(["apply", "--dry-run", "--config"])
        .arg(&config)
        .run();
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bindguard.toml:1") && err.contains("metrics"),
        "{err}"
    );
}

/// A pod of a unique name whose one container is `main` (the Containerd removes every pod
/// when it drops): the pod and its name.
fn run_pod(ctd: &Containerd, command: Vec<String>, host_libs: bool) -> (Pod, String) {
    run_pod_on(ctd, UPLINK_B, command, host_libs)
}

/// [`run_pod`] annotated with interface `dev`.
fn run_pod_on(ctd: &Containerd, dev: &str, command: Vec<String>, host_libs: bool) -> (Pod, String) {
    let name = unique("opn");
    let (pod, result) = ctd.run_pod(&PodSpec {
        name: &name,
        container_name: "main",
        pod_annotations: &[("io.bindguard.dev", dev)],
        command,
        host_libs,
        ..Default::default()
    });
    if let Err(e) = result {
        ctd.remove_pod(&pod);
        panic!("the annotated pod did not start: {e}");
    }
    (pod, name)
}

#[test]
fn a_metrics_port_in_use_fails_the_start_before_anything_is_bound() {
    let test = "a_metrics_port_in_use_fails_the_start_before_anything_is_bound";
    if !require_root(test) {
        return;
    }
    let topo = Topology::with_prefix("op");
    let cg = TestCgroup::with_prefix("op");
    let dir = TempDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = dir.0.join("bindguard.toml");
    fs::write(
        &config,
        format!(
            "[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
            cg.path.display(),
            topo.host.path().display()
        ),
    )
    .unwrap();
    // Under timeout(1): a daemon that started anyway would run until killed (exit 124).
    let (code, out, err) = Cmd::new("timeout")
        .arg("10")
        .arg(bindguard_tests::bindguard_bin())
        .args(["daemon", "--metrics", &addr.to_string(), "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(dir.0.join("op.sock"))
        .run();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("listening on {addr} for --metrics")),
        "{err}"
    );
    assert!(!cg.pins().exists(), "bound although the start failed");
}

/// The pins of the bindings the plugin made for this test's pods, removed on drop: the
/// plugin is killed before containerd removes the pods, so its cleaner never sees them go.
#[derive(Default)]
struct PodPins(std::sync::Mutex<Vec<u64>>);

impl PodPins {
    fn add(&self, id: u64) {
        self.0.lock().unwrap().push(id);
    }
}

impl Drop for PodPins {
    fn drop(&mut self) {
        for id in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let dir = bindguard::kernel::pins::binding_dir(id);
            if dir.exists()
                && let Ok(lock) = bindguard::kernel::pins::lock()
            {
                let _ = bindguard::kernel::pins::remove_dir(&dir, &lock);
                bindguard::kernel::progset::forget_user(id, &lock);
            }
        }
    }
}

/// The plugin's list for `status` (a file on the host's /run), removed on drop when it names
/// this test's pod: a killed plugin leaves it behind (ignored by `status` once its pid is gone).
struct NriList(String);

impl Drop for NriList {
    fn drop(&mut self) {
        let path = bindguard::binding::unbound::NRI_PATH;
        if fs::read_to_string(path).is_ok_and(|t| t.contains(&self.0)) {
            let _ = fs::remove_file(path);
        }
    }
}

#[test]
fn nri_is_ready_only_while_registered_and_survives_a_containerd_restart() {
    let test = "nri_is_ready_only_while_registered_and_survives_a_containerd_restart";
    if !may_run(test) {
        return;
    }
    if let Some(why) = containerd::unavailable() {
        assert!(!ci(), "{test}: {why}; CI=true so this is a failure");
        bindguard_tests::skip(test, &why);
        return;
    }
    // Dropped last: after containerd has removed the pods.
    let pod_pins = PodPins::default();
    let topo = Topology::with_prefix("op");
    let listener = Listener::start(&topo);
    let mut ctd = Containerd::start_with_prefix(&topo.host, "op");
    // Made while no plugin is connected: containerd 2.1 runs it unbound (fail-open). Its
    // interface does not exist, so Synchronize cannot bind it either: it must be named.
    let sleep = vec!["/bin/busybox".into(), "sleep".into(), "86400".into()];
    let (_orphan, orphan_name) = run_pod_on(&ctd, "opnone0", sleep, false);
    let _list = NriList(orphan_name.clone());
    // The plugin starts while containerd is down: it keeps trying, and is not ready.
    ctd.kill();
    let ns = Some(&topo.host);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port(ns)).parse().unwrap();
    let plugin = NriPlugin::spawn(&ctd, &topo.host, &["--metrics", &addr.to_string()], "op");
    assert!(
        wait_for(Duration::from_secs(10), || (status(ns, addr, "/healthz")
            == 200)
            .then_some(()))
        .is_some(),
        "the plugin's listener never answered: {}",
        plugin.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(ns, addr, "/readyz"), 503, "ready without a runtime");
    ctd.restart(&topo.host);
    let ready = |timeout| {
        wait_for(timeout, || {
            (status(ns, addr, "/readyz") == 200).then_some(())
        })
        .is_some()
    };
    assert!(ready(Duration::from_secs(15)), "{}", plugin.log_text());
    // The pod Synchronize could not bind: a log line, the metric, and `status`.
    let log = plugin.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&orphan_name) && l.contains("runs UNBOUND")),
        "{log}"
    );
    let (_, text) = get(ns, addr, "/metrics").unwrap();
    assert!(
        text.contains("bindguard_bindings{mode=\"strict\",state=\"unbound\"} 1"),
        "{text}"
    );
    let (code, out, err) = Cmd::bindguard().args(["status", "--json"]).run();
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let named = report["unbound"].as_array().is_some_and(|u| {
        u.iter().any(|e| {
            e["origin"]
                .as_str()
                .is_some_and(|o| o.contains(&orphan_name))
                && e["why"].as_str().is_some_and(|w| w.contains("opnone0"))
        })
    });
    assert!(named, "status does not name the unbound pod: {out}");

    // A bound pod that provokes refusals (SO_BINDTODEVICE to the other uplink), then stays.
    let tok = token("op-esc");
    let script = format!(
        "for i in 1 2 3; do /probe/bg-probe escape sockopt {DEST4} {PORT} {tok}-$i {UPLINK_A}; done; \
         /probe/bg-probe send udp {DEST4} {PORT} {tok}-ok; exec /bin/busybox sleep 86400"
    );
    let (kept, kept_name) = run_pod(&ctd, vec!["/bin/sh".into(), "-c".into(), script], true);
    assert_eq!(
        listener.wait_for(&format!("{tok}-ok"), Duration::from_secs(10)),
        [Peer::B],
        "the pod's plain send"
    );
    let kept_id = ctd.cgroup_id(&kept).expect("the pod's cgroup");
    pod_pins.add(kept_id);
    let kept_pins = bindguard::kernel::pins::binding_dir(kept_id);
    let kept_cgroup =
        bindguard::binding::cgroup::of_process(ctd.pid(&kept).expect("the pod's pid")).unwrap();
    assert!(kept_pins.exists());

    let prom = Prometheus::start(ns, &[("opnri", addr)]);
    wait_up(&prom, "opnri");
    let q = format!(
        "bindguard_refusals_total{{job=\"opnri\",hook=\"setsockopt\",pod=\"{}\",container=\"main\"}}",
        kept_name
    );
    assert_eq!(
        wait_value(&prom, &q, 3.0),
        3.0,
        "exactly the refusals provoked"
    );
    let (_, text) = get(ns, addr, "/metrics").unwrap();
    let (ok, said) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics refused the exposition: {said}\n{text}"
    );

    // containerd is killed under the plugin: not ready, the running pod stays bound.
    ctd.kill();
    assert!(
        wait_for(Duration::from_secs(10), || (status(ns, addr, "/readyz")
            == 503)
            .then_some(()))
        .is_some(),
        "still ready without a runtime: {}",
        plugin.log_text()
    );
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        assert!(
            kept_pins.exists(),
            "the running pod's binding left the kernel"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        send_in_pod_is_b(&kept_cgroup, &topo, &listener),
        "the kept pod while containerd is down"
    );

    ctd.restart(&topo.host);
    assert!(ready(Duration::from_secs(15)), "{}", plugin.log_text());
    assert!(
        plugin.log_text().contains("reconnected to"),
        "{}",
        plugin.log_text()
    );
    assert!(
        kept_pins.exists(),
        "the kept pod's binding after the restart"
    );

    // A pod made after the restart is bound before its first instruction.
    let tok = token("op-late");
    let (late, _) = run_pod(&ctd, sender(&tok), false);
    pod_pins.add(ctd.cgroup_id(&late).expect("the late pod's cgroup"));
    for f in ["tcp4", "udp4", "tcp6", "udp6"] {
        let t = format!("{tok}-{f}");
        listener.wait_for(&t, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(listener.peers_with(&t), [Peer::B], "{t} after the restart");
    }
    wait_up(&prom, "opnri");
    assert_eq!(
        wait_value(&prom, &q, 3.0),
        3.0,
        "the kept pod's counter across the restart"
    );
    drop(plugin);
}

/// A fresh send from the pod's cgroup `cgroup` (the probe joins it; the pods use the node
/// network of the topology's host namespace) leaves by uplink B.
fn send_in_pod_is_b(cgroup: &Path, topo: &Topology, listener: &Listener) -> bool {
    let tok = token("op-down");
    let (code, out, err) = Cmd::probe()
        .in_cgroup_path(cgroup)
        .in_netns(&topo.host)
        .args(["send", "udp", DEST4, &PORT.to_string(), &tok])
        .run();
    let got = listener.wait_for(&tok, Duration::from_secs(5));
    assert_eq!(code, 0, "send from {}: {out}{err}", cgroup.display());
    got == [Peer::B]
}
