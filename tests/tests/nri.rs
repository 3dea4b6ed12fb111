//! `bindguard nri` against a real containerd 2.x, with pods made through CRI as kubelet makes
//! them. The pods use the node network of the two-uplink topology (containerd runs inside its
//! host namespace), so which peer received a pod's traffic tells which uplink it left by.
//!
//! One containerd, topology and plugin serve every test of the suite (pods have unique names);
//! the last test to finish drops them. The plugin runs with exactly the DaemonSet's
//! capabilities. The restart test kills the shared plugin, so it runs alone (write lock).

use std::{
    sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak},
    time::{Duration, Instant},
};

use bindguard_tests::scenario::sender;
use bindguard_tests::{
    Listener, Peer, Topology,
    containerd::{self, Containerd, NriPlugin, Pod, PodSpec},
    listener::PORT,
    require_root,
    scenario::token,
    topology::{DEST4, DEST6, UPLINK_A, UPLINK_B},
};

struct World {
    // Drop order: the plugin stops, containerd removes its pods and stops, then the
    // listeners and namespaces go.
    plugin: Mutex<Option<NriPlugin>>,
    ctd: Containerd,
    listener: Listener,
    topo: Topology,
}

static WORLD: Mutex<Weak<World>> = Mutex::new(Weak::new());
/// Tests share the plugin (read); the restart test takes it down (write).
static PLUGIN_UP: RwLock<()> = RwLock::new(());

fn world(test: &str) -> Option<Arc<World>> {
    if !require_root(test) {
        return None;
    }
    if let Some(why) = containerd::unavailable() {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{test}: {why}; CI=true so this is a failure");
        }
        bindguard_tests::skip(test, &why);
        return None;
    }
    let mut shared = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = shared.upgrade() {
        return Some(w);
    }
    let topo = Topology::new();
    let listener = Listener::start(&topo);
    let ctd = Containerd::start(&topo.host);
    let plugin = NriPlugin::start(&ctd, &topo.host);
    let w = Arc::new(World {
        plugin: Mutex::new(Some(plugin)),
        ctd,
        listener,
        topo,
    });
    *shared = Arc::downgrade(&w);
    Some(w)
}

fn shared() -> RwLockReadGuard<'static, ()> {
    PLUGIN_UP.read().unwrap_or_else(|e| e.into_inner())
}

/// A pod removed (as kubelet deletes it) when the test ends, passing or not.
struct PodGuard<'a> {
    ctd: &'a Containerd,
    pod: Pod,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        self.ctd.remove_pod(&self.pod);
    }
}

/// Runs a pod of a unique name whose one container is called `main`.
fn run_pod<'a>(w: &'a World, spec: PodSpec) -> (PodGuard<'a>, Result<(), tonic::Status>) {
    let name = bindguard_tests::unique("bgn");
    let (pod, result) = w.ctd.run_pod(&PodSpec {
        name: &name,
        container_name: "main",
        ..spec
    });
    (PodGuard { ctd: &w.ctd, pod }, result)
}

const FLOWS: [&str; 4] = ["tcp4", "udp4", "tcp6", "udp6"];

/// Which peers received each flow of `tok` (waiting up to 5 s for the first hit).
fn received(w: &World, tok: &str) -> Vec<(&'static str, Vec<Peer>)> {
    FLOWS
        .iter()
        .map(|f| {
            let t = format!("{tok}-{f}");
            w.listener.wait_for(&t, Duration::from_secs(5));
            // A stray by the other uplink would come at about the same time.
            std::thread::sleep(Duration::from_millis(100));
            (*f, w.listener.peers_with(&t))
        })
        .collect()
}

fn pins_gone_within(id: u64, timeout: Duration) -> bool {
    let dir = bindguard::kernel::pins::binding_dir(id);
    let deadline = Instant::now() + timeout;
    while dir.exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn annotated_pod_reaches_peer_b_only_from_its_first_instruction() {
    let Some(w) = world("annotated_pod_reaches_peer_b_only_from_its_first_instruction") else {
        return;
    };
    let _up = shared();
    let tok = token("nri-bound");
    let (guard, started) = run_pod(
        &w,
        PodSpec {
            pod_annotations: &[("io.bindguard.dev", UPLINK_B)],
            command: sender(&tok),
            ..Default::default()
        },
    );
    started.expect("the annotated pod starts");
    for (flow, peers) in received(&w, &tok) {
        assert_eq!(peers, [Peer::B], "{flow} of the annotated pod");
    }
    let id = w.ctd.cgroup_id(&guard.pod).expect("the container's cgroup");
    let policy =
        bindguard::binding::enforcer::read_policy(&bindguard::kernel::pins::binding_dir(id))
            .expect("the container's binding");
    assert!(policy.has(bindguard_common::flags::FROM_NRI));
    assert!(policy.has(bindguard_common::flags::STRICT));
}

#[test]
fn container_annotation_binds_and_overrides_the_pods() {
    let Some(w) = world("container_annotation_binds_and_overrides_the_pods") else {
        return;
    };
    let _up = shared();
    let tok = token("nri-ctr");
    let (_guard, started) = run_pod(
        &w,
        PodSpec {
            pod_annotations: &[("io.bindguard.dev", UPLINK_A)],
            container_annotations: &[
                ("io.bindguard.dev", UPLINK_B),
                ("io.bindguard.mode", "bind"),
            ],
            command: sender(&tok),
            ..Default::default()
        },
    );
    started.expect("the pod starts");
    for (flow, peers) in received(&w, &tok) {
        assert_eq!(
            peers,
            [Peer::B],
            "{flow}: the container's own annotation wins"
        );
    }
}

#[test]
fn unannotated_pod_follows_the_routing_table() {
    let Some(w) = world("unannotated_pod_follows_the_routing_table") else {
        return;
    };
    let _up = shared();
    let tok = token("nri-free");
    let (guard, started) = run_pod(
        &w,
        PodSpec {
            pod_annotations: &[],
            command: sender(&tok),
            ..Default::default()
        },
    );
    started.expect("the pod starts");
    for (flow, peers) in received(&w, &tok) {
        assert_eq!(peers, [Peer::A], "{flow} of the unannotated pod");
    }
    let id = w.ctd.cgroup_id(&guard.pod).expect("the container's cgroup");
    assert!(!bindguard::kernel::pins::binding_dir(id).exists());
}

#[test]
fn unknown_interface_or_bad_annotation_refuses_the_container_and_nothing_is_sent() {
    let Some(w) =
        world("unknown_interface_or_bad_annotation_refuses_the_container_and_nothing_is_sent")
    else {
        return;
    };
    let _up = shared();
    for (annotations, needle) in [
        (
            &[("io.bindguard.dev", "nope0")][..],
            "no interface named 'nope0'",
        ),
        (
            &[
                ("io.bindguard.dev", UPLINK_B),
                ("io.bindguard.mark", "lots"),
            ][..],
            "io.bindguard.mark",
        ),
    ] {
        let tok = token("nri-refused");
        let (guard, started) = run_pod(
            &w,
            PodSpec {
                pod_annotations: annotations,
                command: sender(&tok),
                ..Default::default()
            },
        );
        let err = started.expect_err("the container must be refused");
        assert!(
            err.message().contains(needle) && err.message().contains("bindguard"),
            "the refusal names the reason: {}",
            err.message()
        );
        assert!(guard.pod.container.is_none(), "refused at CreateContainer");
        std::thread::sleep(Duration::from_millis(1500));
        for f in FLOWS {
            assert!(
                w.listener.peers_with(&format!("{tok}-{f}")).is_empty(),
                "{f} was sent"
            );
        }
    }
}

#[test]
fn pod_deletion_leaves_no_pins() {
    let Some(w) = world("pod_deletion_leaves_no_pins") else {
        return;
    };
    let _up = shared();
    let (guard, started) = run_pod(
        &w,
        PodSpec {
            pod_annotations: &[("io.bindguard.dev", UPLINK_B)],
            command: vec!["/bin/busybox".into(), "sleep".into(), "86400".into()],
            ..Default::default()
        },
    );
    started.expect("the pod starts");
    let id = w.ctd.cgroup_id(&guard.pod).expect("the container's cgroup");
    assert!(bindguard::kernel::pins::binding_dir(id).exists(), "bound");
    drop(guard);
    assert!(
        pins_gone_within(id, Duration::from_secs(10)),
        "the pins of the deleted pod's container are still there"
    );
}

#[test]
fn strict_mode_escapes_are_refused_inside_the_pod() {
    let Some(w) = world("strict_mode_escapes_are_refused_inside_the_pod") else {
        return;
    };
    let _up = shared();
    let ifa = w.topo.host.ifindex(UPLINK_A).to_string();
    let tok = token("nri-esc");
    let escapes = [
        ("unspec", DEST4, ""),
        ("unspec", DEST6, ""),
        ("sockopt", DEST4, UPLINK_A),
        ("pktinfo", DEST4, ifa.as_str()),
    ];
    let mut script = String::new();
    for (i, (kind, dest, arg)) in escapes.iter().enumerate() {
        script += &format!("/probe/bg-probe escape {kind} {dest} {PORT} {tok}-esc{i} {arg}; ");
    }
    script +=
        &format!("/probe/bg-probe send udp {DEST4} {PORT} {tok}-ok; exec /bin/busybox sleep 86400");
    let (_guard, started) = run_pod(
        &w,
        PodSpec {
            pod_annotations: &[("io.bindguard.dev", UPLINK_B)],
            command: vec!["/bin/sh".into(), "-c".into(), script],
            host_libs: true,
            ..Default::default()
        },
    );
    started.expect("the pod starts");
    assert_eq!(
        w.listener
            .wait_for(&format!("{tok}-ok"), Duration::from_secs(10)),
        [Peer::B],
        "the pod's plain send"
    );
    for (i, (kind, dest, _)) in escapes.iter().enumerate() {
        assert!(
            !w.listener
                .peers_with(&format!("{tok}-esc{i}"))
                .contains(&Peer::A),
            "escape {kind} to {dest} reached peer A from inside the pod"
        );
    }
}

#[test]
fn plugin_restart_binds_what_started_meanwhile_and_removes_stale_bindings() {
    let test = "plugin_restart_binds_what_started_meanwhile_and_removes_stale_bindings";
    let Some(w) = world(test) else {
        return;
    };
    let _alone = PLUGIN_UP.write().unwrap_or_else(|e| e.into_inner());
    // A loop that sends a numbered token every 200 ms.
    let looping = |tok: &str| {
        vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "i=0; while true; do echo {tok}-$i | /bin/busybox nc -w1 {DEST4} {PORT}; i=$((i+1)); /bin/busybox sleep 0.2; done"
            ),
        ]
    };
    let (gone, started) = run_pod(&w, annotated(looping("x")));
    started.expect("pod 1 starts");
    let gone_id = w.ctd.cgroup_id(&gone.pod).expect("pod 1's cgroup");
    let tok_kept = token("nri-kept");
    let (kept, started) = run_pod(&w, annotated(looping(&tok_kept)));
    started.expect("pod 2 starts");
    let kept_id = w.ctd.cgroup_id(&kept.pod).expect("pod 2's cgroup");

    w.plugin
        .lock()
        .unwrap()
        .take()
        .expect("the plugin runs")
        .kill();
    // While bindguard is down: pod 1 goes, pod 3 starts — unbound (NRI fails open).
    drop(gone);
    let tok_late = token("nri-late");
    let (late, started) = run_pod(&w, annotated(looping(&tok_late)));
    started.expect("pod 3 starts while the plugin is down");
    let late_id = w.ctd.cgroup_id(&late.pod).expect("pod 3's cgroup");
    assert_eq!(
        w.listener
            .wait_for(&format!("{tok_late}-0"), Duration::from_secs(5)),
        [Peer::A],
        "containerd runs an annotated pod unbound while no plugin is connected"
    );
    assert!(!bindguard::kernel::pins::binding_dir(late_id).exists());

    let plugin = NriPlugin::start(&w.ctd, &w.topo.host);
    *w.plugin.lock().unwrap() = Some(plugin);
    let late_pins = bindguard::kernel::pins::binding_dir(late_id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !late_pins.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(late_pins.exists(), "pod 3 bound by Synchronize");
    assert!(
        bindguard::kernel::pins::binding_dir(kept_id).exists(),
        "pod 2 still bound"
    );
    assert!(
        pins_gone_within(gone_id, Duration::from_secs(10)),
        "pod 1's pins removed"
    );
    // From now on the numbered sends of pods 3 and 2 reach B only (the one in flight while
    // Synchronize ran is skipped).
    for tok in [&tok_late, &tok_kept] {
        let seen = (0..)
            .take_while(|i| !w.listener.peers_with(&format!("{tok}-{i}")).is_empty())
            .count();
        for i in seen + 1..seen + 4 {
            assert_eq!(
                w.listener
                    .wait_for(&format!("{tok}-{i}"), Duration::from_secs(5)),
                [Peer::B],
                "{tok}-{i} after the restart"
            );
        }
    }
}

/// A pod annotated to be bound to uplink B.
fn annotated(command: Vec<String>) -> PodSpec<'static> {
    PodSpec {
        pod_annotations: &[("io.bindguard.dev", UPLINK_B)],
        command,
        ..Default::default()
    }
}

#[test]
fn a_binding_that_fails_at_start_refuses_the_start_and_nothing_runs() {
    let test = "a_binding_that_fails_at_start_refuses_the_start_and_nothing_runs";
    let Some(w) = world(test) else {
        return;
    };
    let _up = shared();
    // An interface of the pod's namespace that exists at CreateContainer and is gone at
    // StartContainer, when the plugin binds.
    let dev = bindguard_tests::unique("bgn");
    w.topo.host.ip(&[
        "link",
        "add",
        &dev,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{dev}p"),
    ]);
    let tok = token("nri-start");
    let name = bindguard_tests::unique("bgn");
    let ann = [("io.bindguard.dev", dev.as_str())];
    let spec = PodSpec {
        name: &name,
        pod_annotations: &ann,
        container_name: "main",
        command: sender(&tok),
        ..Default::default()
    };
    let guard = PodGuard {
        ctd: &w.ctd,
        pod: Pod {
            sandbox: w.ctd.run_sandbox(&spec),
            container: None,
        },
    };
    let id = w
        .ctd
        .create_container(&guard.pod.sandbox, &spec)
        .expect("the interface exists at CreateContainer");
    w.topo.host.ip(&["link", "del", &dev]);
    let err = w
        .ctd
        .start_container(&id)
        .expect_err("the start must be refused");
    assert!(
        err.message().contains("bindguard") && err.message().contains(&dev),
        "the refusal names the reason: {}",
        err.message()
    );
    std::thread::sleep(Duration::from_millis(1500));
    for f in FLOWS {
        assert!(
            w.listener.peers_with(&format!("{tok}-{f}")).is_empty(),
            "{f} was sent by a container whose start was refused"
        );
    }
}
