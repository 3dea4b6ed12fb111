//! The OCI hook under a real runtime (Debian's runc): a static client in an annotated
//! container leaves by the annotated interface; no annotation, no binding; a bad annotation
//! stops the container before it runs; nothing is left after the container exits.

use std::{os::unix::fs::MetadataExt, time::Duration};

use bindguard_tests::{
    Cmd, Peer, Scenario,
    container::Container,
    listener::PORT,
    root_or_skip,
    run::wait_output,
    scenario::{dest, token},
    topology::UPLINK_B,
};

/// The tests of this file one at a time: every hook call (and attach) sweeps the bindings of
/// deleted cgroups, so one test's sweep would take the dead binding another is looking at
/// half-removed (seen under load: its link pins gone, its directory not yet).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for the container's cgroup to appear; returns its id.
fn cgroup_id(c: &Container) -> u64 {
    for _ in 0..500 {
        if let Ok(m) = std::fs::metadata(c.cgroup()) {
            return m.ino();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("container cgroup {} never appeared", c.cgroup().display());
}

#[test]
fn annotated_container_leaves_by_the_annotated_interface() {
    root_or_skip!();
    let _serial = serial();
    let s = Scenario::new();
    for v6 in [false, true] {
        let tok = token("oci");
        let script = format!(
            "echo {tok} | nc -w1 {} {PORT}; tftp -g -r {tok}-udp -l /dev/null {} {PORT} & sleep 1",
            dest(v6),
            dest(v6)
        );
        let c = Container::new(&s.topo.host, &script, &[("io.bindguard.dev", UPLINK_B)]);
        let run = c.spawn();
        let id = cgroup_id(&c);
        assert_eq!(s.receivers(&tok), [Peer::B], "tcp v6={v6}");
        assert_eq!(s.receivers(&format!("{tok}-udp")), [Peer::B], "udp v6={v6}");
        assert!(
            bindguard::kernel::pins::binding_dir(id).exists(),
            "bound while running"
        );
        let out = wait_output(run, Duration::from_secs(30)).expect("runc run ended");
        assert!(out.status.success(), "{out:?}");
        assert!(
            !bindguard::kernel::pins::binding_dir(id).exists(),
            "poststop removed the pins of cgroup {id}"
        );
    }
}

#[test]
fn unannotated_container_follows_the_routing_table() {
    root_or_skip!();
    let _serial = serial();
    let s = Scenario::new();
    let tok = token("oci-plain");
    let c = Container::new(
        &s.topo.host,
        &format!("echo {tok} | nc -w1 {} {PORT}", dest(false)),
        &[],
    );
    let run = c.spawn();
    let id = cgroup_id(&c);
    assert_eq!(s.receivers(&tok), [Peer::A]);
    assert!(
        !bindguard::kernel::pins::binding_dir(id).exists(),
        "no binding"
    );
    let out = wait_output(run, Duration::from_secs(30)).expect("runc run ended");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn container_asking_for_a_missing_interface_does_not_start() {
    root_or_skip!();
    let _serial = serial();
    let s = Scenario::new();
    for annotations in [
        &[("io.bindguard.dev", "nosuch0")][..],
        &[
            ("io.bindguard.dev", UPLINK_B),
            ("io.bindguard.mark", "not-a-number"),
        ],
    ] {
        let tok = token("oci-bad");
        let c = Container::new(
            &s.topo.host,
            &format!("echo {tok} | nc -w1 {} {PORT}", dest(false)),
            annotations,
        );
        let out = wait_output(c.spawn(), Duration::from_secs(30)).expect("runc run ended");
        assert!(!out.status.success(), "runc must refuse: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("createRuntime") || err.contains("hook"),
            "{err}"
        );
        assert!(
            s.listener
                .wait_for(&tok, Duration::from_millis(500))
                .is_empty(),
            "nothing was sent"
        );
        assert_eq!(s.listener.packets(Peer::A), 0);
        assert!(!c.cgroup().exists(), "runc removed the container");
    }
}

#[test]
fn hook_refuses_malformed_state() {
    root_or_skip!();
    let _serial = serial();
    for (input, needle) in [
        ("{", "not valid JSON"),
        (
            r#"{"ociVersion":"1.0.2","id":"x","status":"creating","bundle":"/nonexistent","annotations":{"io.bindguard.dev":"lo"}}"#,
            "has no pid",
        ),
        (
            r#"{"ociVersion":"1.0.2","id":"x","status":"creating","pid":999999999,"bundle":"/nonexistent","annotations":{"io.bindguard.dev":"lo"}}"#,
            "is gone",
        ),
    ] {
        let mut child = Cmd::bindguard().arg("oci-hook").spawn_with_stdin();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = wait_output(child, Duration::from_secs(10)).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{input}: {err}");
    }
}

/// Runs `oci-hook` with `state` on stdin; returns (exit code, stderr).
fn hook(state: &serde_json::Value) -> (Option<i32>, String) {
    let mut child = Cmd::bindguard().arg("oci-hook").spawn_with_stdin();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), state.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = wait_output(child, Duration::from_secs(10)).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue #17, item 12: a poststop state names its cgroup by container id (runc's default
/// cgroup is /<id>) and a bundle; whoever runs the runtime chooses both. A poststop whose id
/// was the name of a cgroup bound by `attach`, with no config.json in its bundle, removed that
/// binding. Poststop removes only bindings the hook made; those it still removes.
#[test]
fn poststop_removes_only_bindings_the_hook_made() {
    root_or_skip!();
    let _serial = serial();
    let s = Scenario::new();
    let mount = bindguard::binding::cgroup::cgroup2_mount().unwrap();
    let name = |cg: &bindguard_tests::topology::TestCgroup| {
        cg.path
            .strip_prefix(&mount)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let bundle = std::env::temp_dir().join(format!("bgt-oci-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&bundle).unwrap();
    let poststop = |id: &str| {
        serde_json::json!({
            "ociVersion": "1.0.2", "id": id, "status": "stopped",
            "bundle": bundle, "annotations": {"io.bindguard.dev": UPLINK_B},
        })
    };

    // A binding made by `attach`: poststop leaves it.
    s.attach(UPLINK_B, &[]);
    let (code, err) = hook(&poststop(&name(&s.cg)));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        s.cg.pins().exists(),
        "poststop removed the binding `attach` made: {err}"
    );
    assert!(s.status_entry().is_some(), "status lost the binding");

    // A binding made by the hook at createRuntime: poststop removes it.
    let cg = bindguard_tests::topology::TestCgroup::new();
    let mut sleeper = Cmd::new("sleep")
        .arg("30")
        .in_cgroup(&cg)
        .in_netns(&s.topo.host)
        .spawn();
    let (code, err) = hook(&serde_json::json!({
        "ociVersion": "1.0.2", "id": name(&cg), "status": "creating", "pid": sleeper.id(),
        "bundle": bundle, "annotations": {"io.bindguard.dev": UPLINK_B},
    }));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        cg.pins().exists(),
        "createRuntime bound the container: {err}"
    );
    let (code, err) = hook(&poststop(&name(&cg)));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = std::fs::remove_dir(&bundle);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !cg.pins().exists(),
        "poststop left the hook's binding: {err}"
    );
}

/// Issue #22, item 8: a container that fails after its createRuntime hook bound it never
/// reaches poststop, and its binding outlives its cgroup. `status` reports such a binding
/// as it is (the mode its pins show, no link attached, one problem), and the next container's
/// createRuntime sweeps it.
#[test]
fn a_dead_containers_binding_is_reported_truthfully_and_swept_at_the_next_start() {
    root_or_skip!();
    let _serial = serial();
    let s = Scenario::new();
    let dead = bindguard_tests::topology::TestCgroup::new();
    let (code, out, err) = s.attach_to(Cmd::bindguard(), &dead.path, UPLINK_B).run();
    assert_eq!(code, 0, "{out}{err}");
    let pins = dead.pins();
    std::fs::remove_dir(&dead.path).expect("rmdir the bound cgroup");
    let entry = || {
        s.status_json()["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["pins"].as_str() == Some(pins.to_str().unwrap()))
            .cloned()
    };
    let mut seen = None;
    for _ in 0..200 {
        seen = entry();
        if seen.as_ref().is_some_and(|b| b["cgroup"].is_null()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = seen.expect("status lists the dead binding");
    assert!(b["cgroup"].is_null(), "{b}");
    assert_eq!(b["mode"], "strict", "the pins are strict mode's: {b}");
    assert!(
        b["links"].as_array().unwrap().len() > 1,
        "every pinned link is listed: {b}"
    );
    assert_eq!(
        bindguard_tests::scenario::problem_kinds(&b),
        ["cgroup-gone"],
        "{b}"
    );

    // The next container's createRuntime sweeps what the kernel has released: wait for the
    // kernel to detach the links (cgroup_bpf_release runs from a workqueue after the cgroup's
    // last reference goes: seconds under load), asking each link pin as the sweep does.
    let released = || {
        std::fs::read_dir(&pins).unwrap().flatten().all(|e| {
            !e.file_name().to_string_lossy().starts_with("link_")
                || bindguard::kernel::link::pinned_state(&e.path())
                    .is_ok_and(|l| l.cgroup_id.is_none())
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !released() {
        assert!(
            std::time::Instant::now() < deadline,
            "the kernel never detached the dead cgroup's links"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next container's createRuntime sweeps it.
    let cg = bindguard_tests::topology::TestCgroup::new();
    let mut sleeper = Cmd::new("sleep")
        .arg("30")
        .in_cgroup(&cg)
        .in_netns(&s.topo.host)
        .spawn();
    let mount = bindguard::binding::cgroup::cgroup2_mount().unwrap();
    let (code, err) = hook(&serde_json::json!({
        "ociVersion": "1.0.2", "id": cg.path.strip_prefix(&mount).unwrap(), "status": "creating",
        "pid": sleeper.id(), "bundle": "/nonexistent",
        "annotations": {"io.bindguard.dev": UPLINK_B},
    }));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(code, Some(0), "{err}");
    assert!(cg.pins().exists(), "createRuntime bound the container");
    assert!(
        !pins.exists(),
        "createRuntime left the dead binding {} ({}): {err}",
        pins.display(),
        s.status_json()
    );
}
