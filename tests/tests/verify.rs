//! `verify` proves a good binding and fails, naming the reason, on a broken one.

use bindguard_tests::{Cmd, Scenario, root_or_skip, topology::UPLINK_B};

fn verify(s: &Scenario, extra: &[&str]) -> (i32, String, String) {
    Cmd::bindguard()
        .args(["verify", "--cgroup"])
        .arg(&s.cg.path)
        .args(extra)
        .run()
}

#[test]
fn verify_passes_on_a_good_binding() {
    root_or_skip!();
    for mode in [
        &["--mode", "strict"][..],
        &["--mode", "bind", "--mark", "9"],
        &["--allow-loopback"],
    ] {
        let s = Scenario::new();
        s.attach(UPLINK_B, mode);
        let (code, out, err) = verify(&s, &[]);
        assert_eq!(code, 0, "{mode:?}:\n{out}{err}");
        assert!(!out.contains("FAIL"), "{out}");
        for check in [
            "PASS links",
            "PASS interface",
            "PASS udp socket",
            "PASS tcp6 socket",
            "PASS route to 203.0.113.1",
            "PASS route to 2001:db8::1",
            "PASS existing sockets",
            "PASS other network namespace",
        ] {
            assert!(out.contains(check), "{mode:?}: missing {check}:\n{out}");
        }
        // With a route only via B the source is B's address; the classic way agrees.
        assert!(out.contains("source 198.51.100.1"), "{out}");
        eprintln!("{out}");
        // Per-address, and as JSON.
        let (code, json, _) = verify(&s, &["--to", "2001:db8:ff::10", "--json"]);
        assert_eq!(code, 0, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["ok"], true);
        assert!(
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "route to 2001:db8:ff::10" && c["outcome"] == "pass")
        );
    }
}

#[test]
fn verify_fails_when_pins_are_removed() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    // One guard's link unpinned behind bindguard's back: that hook is no longer enforced.
    std::fs::remove_file(s.cg.pins().join("link_egress")).unwrap();
    let (code, out, _) = verify(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL links: not enforced"), "{out}");
    // All pins gone: there is no binding any more.
    bindguard::kernel::pins::remove_dir(&s.cg.pins(), &bindguard::kernel::pins::lock().unwrap())
        .unwrap();
    let (code, out, err) = verify(&s, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("has no bindguard binding"), "{err}");
}

#[test]
fn verify_fails_on_a_socket_opened_before_the_attach() {
    root_or_skip!();
    let s = Scenario::new();
    // A process already in the cgroup holds a UDP socket from before the binding.
    let mut holder = s.probe_bound().args(["hold", "5353", "30"]).spawn();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    s.attach(UPLINK_B, &[]);
    let (code, out, _) = verify(&s, &["--json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let socks = v["unbound_sockets"].as_array().unwrap();
    for proto in ["udp", "tcp"] {
        assert!(
            socks.iter().any(|x| x["pid"] == holder.id()
                && x["command"] == "bg-probe"
                && x["protocol"] == proto
                && x["local"].as_str().unwrap().ends_with(":5353")
                && x["bound_ifindex"] == 0),
            "{proto}: {out}"
        );
    }
    let (_, text, _) = verify(&s, &[]);
    assert!(
        text.contains("FAIL existing sockets: 2 socket(s) not bound to upB"),
        "{text}"
    );
    eprintln!("{text}");
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn verify_fails_when_the_interface_is_deleted() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    s.topo.host.ip(&["link", "del", UPLINK_B]);
    let (code, out, _) = verify(&s, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL interface: upB (ifindex"), "{out}");
    assert!(out.contains("no longer exists"), "{out}");
}

#[test]
fn verify_follows_the_binding_of_an_ancestor() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let child = s.cg.child("app");
    let (code, out, err) = Cmd::bindguard()
        .args(["verify", "--cgroup"])
        .arg(&child.path)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("inherited from"), "{out}");
}

#[test]
fn strict_rp_filter_is_a_warning_not_a_failure() {
    root_or_skip!();
    let s = Scenario::new();
    s.topo.host.sysctl("net.ipv4.conf.upB.rp_filter", "1");
    let (code, _, err) = s.attach_result(UPLINK_B, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: rp_filter is strict (1) on upB"),
        "{err}"
    );
    let (code, out, _) = verify(&s, &[]);
    assert_eq!(code, 0, "a warning does not fail verify:\n{out}");
    assert!(out.contains("WARN rp_filter"), "{out}");
    s.topo.host.sysctl("net.ipv4.conf.upB.rp_filter", "2");
    let (_, out, _) = verify(&s, &[]);
    assert!(out.contains("PASS rp_filter: 2 on upB"), "{out}");
}

/// What the README says beside the status example: verify's probe refuses on purpose (a
/// socket moved to lo, a socket from another namespace), which the REFUSED counters count,
/// and the counters live with the cgroup, so a detach and re-attach of it keeps them.
#[test]
fn verify_s_refusals_are_counted_and_counters_survive_a_re_attach() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let refused = |s: &Scenario| s.counter("sockopt_refused") + s.counter("sockets_refused_netns");
    assert_eq!(refused(&s), 0, "a new binding has refused nothing");
    let (code, out, err) = verify(&s, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let after_verify = refused(&s);
    assert!(
        s.counter("sockopt_refused") > 0 && s.counter("sockets_refused_netns") > 0,
        "verify's refusals are not counted: {}",
        s.status_entry().unwrap()["counters"]
    );
    let bound = s.counter("sockets_bound");
    let (code, out, err) = s.detach();
    assert_eq!(code, 0, "{out}{err}");
    s.attach(UPLINK_B, &[]);
    assert_eq!(refused(&s), after_verify, "re-attach reset the counters");
    assert_eq!(s.counter("sockets_bound"), bound);
}
