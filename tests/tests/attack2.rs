//! A second attacker's review, after the shared program set (per-binding policy in cgroup
//! storage): nested bindings (a child cgroup bound elsewhere than its ancestor), detaching one
//! of two nested bindings, a re-attach over the storage a detach left behind, and re-targets
//! under a tight socket() loop. Every attempt runs as uid 65534 (no capabilities, or
//! CAP_NET_RAW alone where it needs to move a socket) and is judged by peer sniffers.
//!
//! Where the attempt leaks without strict mode's guards (the ancestor in bind mode, or no
//! ancestor binding at all), that is shown too, so the tests can fail. Upgrades between two
//! builds' sets and the daemon's close/re-target of an ancestor under a bound child are run
//! under load and judged by peer A's packet count.
//!
//! The review also found two leaks in how bindguard kept its bpffs directory, since fixed and
//! tested at the end of this file: the pins lock was a flock on /sys/fs/bpf/bindguard, a
//! directory any user could open, so uid 65534 could hold it and stall every attach, the OCI
//! hook and the daemon; and the directory was trusted as found, though bpffs's root is mode
//! 1777, so a user who made it first (with `work` a symlink back to it) could later have any
//! binding swept away.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use bindguard_tests::{
    Cmd, Peer, Scenario, TestCgroup,
    listener::PORT,
    root_or_skip,
    scenario::token,
    topology::{DEST4, UPLINK_A, UPLINK_B},
    unique,
};

fn attach_cg(s: &Scenario, cg: &TestCgroup, dev: &str, mode: &str) {
    let (code, out, err) = s
        .attach_to(Cmd::bindguard(), &cg.path, dev)
        .args(["--mode", mode])
        .run();
    assert_eq!(
        code,
        0,
        "attach {} {dev} {mode}: {out}{err}",
        cg.path.display()
    );
}

fn detach_cg(cg: &TestCgroup) {
    let (code, out, err) = Cmd::bindguard()
        .arg("detach")
        .arg("--cgroup")
        .arg(&cg.path)
        .run();
    assert_eq!(code, 0, "detach {}: {out}{err}", cg.path.display());
}

fn peer_of(dev: &str) -> Peer {
    if dev == UPLINK_A { Peer::A } else { Peer::B }
}

/// From `cg`, as uid 65534 with CAP_NET_RAW: a UDP socket moved to `dev` by SO_BINDTODEVICE,
/// then a datagram carrying a fresh token to DEST4. Returns (output, whether `dev`'s peer got
/// a frame with the token).
fn rebind_and_send(s: &Scenario, cg: &TestCgroup, dev: &str) -> (String, bool) {
    let tok = token("atk2-rebind");
    let (_, out, err) = Cmd::probe()
        .in_cgroup(cg)
        .in_netns(&s.topo.host)
        .args(["escape", "sockopt", DEST4, &PORT.to_string(), &tok, dev])
        .as_nobody_with("net_raw")
        .run();
    let got = s
        .listener
        .frame_with(peer_of(dev), &tok, Duration::from_millis(400));
    (format!("{out}{err}"), got)
}

/// From `cg`, as uid 65534 with no capabilities: a plain UDP datagram to DEST4; which peers
/// got it.
fn plain_send(s: &Scenario, cg: &TestCgroup) -> (String, Vec<Peer>) {
    let tok = token("atk2-plain");
    let (_, out, err) = Cmd::probe()
        .in_cgroup(cg)
        .in_netns(&s.topo.host)
        .args(["send", "udp", DEST4, &PORT.to_string(), &tok])
        .as_nobody()
        .run();
    std::thread::sleep(Duration::from_millis(300));
    (format!("{out}{err}"), s.listener.peers_with(&tok))
}

/// A child bound to X under a parent bound to Y (both ways round): the ancestor's binding holds
/// for the child. Its sock_create runs last (the socket is bound to Y) and the child's own
/// filter drops Y, so nothing leaves at all; a CAP_NET_RAW move to X — which the child's own
/// guard allows, being its interface — is refused by the ancestor's guard. With the ancestor in
/// bind mode the same move reaches X's peer.
#[test]
fn an_ancestor_binding_holds_for_a_child_bound_to_the_other_interface() {
    root_or_skip!();
    for (parent_dev, child_dev) in [(UPLINK_B, UPLINK_A), (UPLINK_A, UPLINK_B)] {
        for parent_mode in ["strict", "bind"] {
            let s = Scenario::new();
            let child = s.cg.child("atk2-child");
            attach_cg(&s, &s.cg, parent_dev, parent_mode);
            attach_cg(&s, &child, child_dev, "strict");

            let (out, got) = rebind_and_send(&s, &child, child_dev);
            eprintln!(
                "parent {parent_dev} {parent_mode}, child {child_dev} strict: rebind to \
                 {child_dev}: leaked={got}: {}",
                out.replace('\n', "; ")
            );
            if parent_mode == "strict" {
                assert!(
                    !got,
                    "a child bound to {child_dev} got out by it under a strict parent bound to \
                     {parent_dev}:\n{out}"
                );
                assert!(out.contains("EPERM") || out.contains("errno=1"), "{out}");
            } else {
                assert!(
                    got,
                    "control: under a bind-mode parent the move to {child_dev} should leak:\n{out}"
                );
            }

            // Unprivileged, no tricks: the socket ends up bound to the parent's interface and
            // the child's filter drops it: nothing reaches either peer (fail closed).
            let (out, peers) = plain_send(&s, &child);
            assert!(
                peers.is_empty(),
                "parent {parent_dev} {parent_mode}, child {child_dev}: plain send reached \
                 {peers:?}:\n{out}"
            );
            drop(child);
        }
    }
}

/// The same program set linked to a parent and its child (both bound to upB): detaching either
/// leaves the other's binding whole — its links and its storage — so a process in the child
/// still cannot move a socket to upA.
#[test]
fn detaching_one_of_two_nested_bindings_leaves_the_other_whole() {
    root_or_skip!();
    for detach_parent in [false, true] {
        let s = Scenario::new();
        attach_cg(&s, &s.cg, UPLINK_B, "strict");
        // Made after the parent's binding: it inherits it, then gets its own.
        let child = s.cg.child("atk2-child");
        let (out, got) = rebind_and_send(&s, &child, UPLINK_A);
        assert!(!got, "inherited binding: leaked to A:\n{out}");
        attach_cg(&s, &child, UPLINK_B, "strict");
        let (out, got) = rebind_and_send(&s, &child, UPLINK_A);
        assert!(!got, "both bound: leaked to A:\n{out}");
        if detach_parent {
            detach_cg(&s.cg);
        } else {
            detach_cg(&child);
        }
        let (out, got) = rebind_and_send(&s, &child, UPLINK_A);
        assert!(
            !got,
            "after detaching the {}: a child socket moved to upA reached A:\n{out}",
            if detach_parent { "parent" } else { "child" }
        );
        // Ordinary traffic still goes out by upB.
        let (out, peers) = plain_send(&s, &child);
        assert_eq!(peers, vec![Peer::B], "{out}");
        // Control: with the remaining binding gone too, the same move reaches A.
        if detach_parent {
            detach_cg(&child);
        } else {
            detach_cg(&s.cg);
        }
        let (out, got) = rebind_and_send(&s, &child, UPLINK_A);
        assert!(
            got,
            "control: unbound, the move to upA should reach A:\n{out}"
        );
        drop(child);
    }
}

/// Detach leaves the cgroup's storage (with the old policy) until the cgroup goes. A re-attach
/// to the other interface must not enforce, even for a moment, the stale policy: the cgroup is
/// bound to upB alone afterwards, and the guard takes upB's name, not upA's.
#[test]
fn a_reattach_over_stale_storage_enforces_the_new_policy_only() {
    root_or_skip!();
    let s = Scenario::new();
    attach_cg(&s, &s.cg, UPLINK_A, "strict");
    let (out, peers) = plain_send(&s, &s.cg);
    assert_eq!(peers, vec![Peer::A], "{out}");
    detach_cg(&s.cg);
    attach_cg(&s, &s.cg, UPLINK_B, "strict");
    let (out, peers) = plain_send(&s, &s.cg);
    assert_eq!(peers, vec![Peer::B], "after re-attach to upB: {out}");
    // The stale policy named upA: a guard still reading it would let this move through.
    let (out, got) = rebind_and_send(&s, &s.cg, UPLINK_A);
    assert!(
        !got,
        "re-attached to upB, a socket moved to upA reached A:\n{out}"
    );
    // Control: bind mode over the same stale storage lets the move through.
    attach_cg(&s, &s.cg, UPLINK_B, "bind");
    let (out, got) = rebind_and_send(&s, &s.cg, UPLINK_A);
    assert!(
        got,
        "control: bind mode should let the move to upA leak:\n{out}"
    );
}

/// Re-targets (one map write each) while a process of the cgroup makes sockets as fast as it
/// can: every socket is bound to one of the two interfaces, none is left unbound.
#[test]
fn no_socket_is_unbound_across_retargets_and_mode_changes() {
    root_or_skip!();
    let s = Scenario::new();
    attach_cg(&s, &s.cg, UPLINK_A, "strict");
    let child = s.probe_bound().args(["loop", "6"]).as_nobody().spawn();
    for i in 0..10 {
        let dev = if i % 2 == 0 { UPLINK_B } else { UPLINK_A };
        let mode = if i % 4 < 2 { "strict" } else { "bind" };
        attach_cg(&s, &s.cg, dev, mode);
    }
    let out = bindguard_tests::run::wait_output(child, Duration::from_secs(20)).expect("loop");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("loop: {text}");
    assert!(
        text.contains("unbound=0"),
        "a socket was made unbound: {text}"
    );
    let a = s.topo.host.ifindex(UPLINK_A);
    let b = s.topo.host.ifindex(UPLINK_B);
    let spread = text
        .split("ifindexes=")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    for entry in spread.split(',').filter(|e| !e.is_empty()) {
        let idx: u32 = entry.split(':').next().unwrap().parse().unwrap();
        assert!(
            idx == a || idx == b,
            "socket bound to ifindex {idx}: {text}"
        );
    }
}

/// An upgrade (another build's program set, make-before-break) and a downgrade back, four
/// times, while the cgroup makes sockets in a tight loop and sends a datagram per new socket:
/// no socket is ever unbound or bound to upA, and no packet reaches peer A.
#[test]
fn upgrades_between_sets_leave_no_unbound_socket_and_no_packet_at_a() {
    root_or_skip!();
    let Some(variant) = bindguard_tests::run::variant_bin() else {
        return;
    };
    let current = bindguard_tests::bindguard_bin();
    let s = Scenario::new();
    let attach_with = |bin: &std::path::PathBuf| {
        let (code, out, err) = s.attach_to(Cmd::new(bin), &s.cg.path, UPLINK_B).run();
        assert_eq!(code, 0, "{} attach: {out}{err}", bin.display());
    };
    attach_with(&variant);
    let a_start = s.listener.packets(Peer::A);
    let script = format!(
        "while :; do {p} send udp {DEST4} {PORT} atk2-up >/dev/null 2>&1; done",
        p = bindguard_tests::probe_bin().display(),
    );
    let sender = Cmd::new("sh")
        .args(["-c", &script])
        .in_cgroup(&s.cg)
        .in_netns(&s.topo.host)
        .spawn();
    let looper = s.probe_bound().args(["loop", "5"]).as_nobody().spawn();
    for i in 0..8 {
        attach_with(if i % 2 == 0 { &current } else { &variant });
    }
    let out = bindguard_tests::run::wait_output(looper, Duration::from_secs(20)).expect("loop");
    let mut sender = sender;
    let _ = sender.kill();
    let _ = sender.wait();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("loop: {text}");
    let b = s.topo.host.ifindex(UPLINK_B);
    assert!(
        text.contains("unbound=0") && text.contains(&format!("ifindexes={b}:")),
        "{text}"
    );
    assert!(
        !text.contains(','),
        "a socket bound elsewhere than upB: {text}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.listener.packets(Peer::A), a_start, "a packet reached A");
    assert!(
        s.listener.packets(Peer::B) > 0,
        "the sender never got through by upB"
    );
}

/// A child process killed on drop (also when the test panics).
struct Running(std::process::Child);

impl Running {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The parent bound to upB by the daemon, a child bound to upA by hand. While upB is deleted
/// (the daemon closes the parent's binding: ifindex 0) and re-created (re-targeted to the new
/// ifindex) five times, a sender in the child — root, so SO_BINDTODEVICE needs no more — keeps
/// trying plain sends and moves to upA: the parent's binding, closed or re-targeted, never lets
/// one reach A. Once the daemon is gone and the parent detached, the same sender reaches A (the
/// child's own binding allows it), so the test can fail.
#[test]
fn a_child_bound_to_a_never_leaks_while_the_daemon_closes_and_retargets_its_parent() {
    root_or_skip!();
    let s = Scenario::new();
    let child = s.cg.child("atk2-child");
    let dir = std::env::temp_dir().join(unique("atk2d"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
            s.cg.path.display(),
            s.topo.host.path().display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut daemon = Running(
        std::process::Command::new(bindguard_tests::bindguard_bin())
            .arg("daemon")
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn daemon"),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_log = |needle: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_log().matches(needle).count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        read_log().matches(needle).count() >= n
    };
    assert!(wait_log("ready:", 1), "{}", read_log());
    attach_cg(&s, &child, UPLINK_A, "strict");

    let a_start = s.listener.packets(Peer::A);
    let script = format!(
        "while :; do {p} send udp {DEST4} {PORT} atk2-d >/dev/null 2>&1; \
         {p} escape sockopt {DEST4} {PORT} atk2-d {UPLINK_A} >/dev/null 2>&1; done",
        p = bindguard_tests::probe_bin().display(),
    );
    let sender = Running(
        Cmd::new("sh")
            .args(["-c", &script])
            .in_cgroup(&child)
            .in_netns(&s.topo.host)
            .spawn(),
    );
    for round in 1..=5 {
        s.topo.host.ip(&["link", "del", UPLINK_B]);
        assert!(wait_log("was deleted", round), "{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
        s.topo.recreate_uplink_b();
        assert!(wait_log("appeared", round), "{}", read_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let leaked = s.listener.packets(Peer::A) - a_start;
    daemon.stop();
    assert_eq!(leaked, 0, "packets of the child reached A: {}", read_log());

    // Control: without the parent's binding the same sender reaches A.
    detach_cg(&s.cg);
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.listener.packets(Peer::A) == a_start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(sender);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        s.listener.packets(Peer::A) > a_start,
        "control: with the parent detached the child's sender should reach A"
    );
    drop(child);
}

/// Runs `script` with sh in a private mount namespace on a fresh bpffs, so nothing it pins or
/// squats outlives it (the links pinned there are detached when the namespace goes).
fn on_private_bpffs(script: &str) -> (i32, String, String) {
    Cmd::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("set -e\nmount -t bpf bpf /sys/fs/bpf\n{script}"))
        .run()
}

const NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all";

#[test]
fn an_unprivileged_user_cannot_hold_the_pins_lock() {
    root_or_skip!();
    let cg = TestCgroup::new();
    let bg = bindguard_tests::bindguard_bin();
    let (code, out, err) = on_private_bpffs(&format!(
        "{} attach --cgroup {} --dev lo --mode bind >/dev/null\n\
         stat -c 'mode=%a owner=%u' /sys/fs/bpf/bindguard\n\
         if {NOBODY} flock -n /sys/fs/bpf/bindguard -c true 2>/dev/null; then echo locked; else echo refused; fi",
        bg.display(),
        cg.path.display()
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("mode=700 owner=0"), "{out}{err}");
    assert!(
        out.contains("refused"),
        "uid 65534 took the pins lock:\n{out}{err}"
    );
}

#[test]
fn a_squatted_pins_directory_is_moved_aside_and_cannot_sweep_a_binding() {
    root_or_skip!();
    let (one, two) = (TestCgroup::new(), TestCgroup::new());
    let bg = bindguard_tests::bindguard_bin();
    let attach = |cg: &TestCgroup| {
        format!(
            "{} attach --cgroup {} --dev lo --mode bind >/dev/null",
            bg.display(),
            cg.path.display()
        )
    };
    // uid 65534 makes the directory first, with `work` pointing back at it; then, once `one`
    // is bound, tries to rename its binding into what the sweep removes and has an unrelated
    // attach run the sweep.
    let (code, out, err) = on_private_bpffs(&format!(
        "{NOBODY} mkdir -m 0777 /sys/fs/bpf/bindguard\n\
         {NOBODY} ln -s /sys/fs/bpf/bindguard /sys/fs/bpf/bindguard/work\n\
         {}\n\
         ls /sys/fs/bpf | grep -c '^bindguard-untrusted-' | sed 's/^/aside=/'\n\
         if {NOBODY} mv /sys/fs/bpf/bindguard/{id} /sys/fs/bpf/bindguard/dead-{id}-1 2>/dev/null; then echo moved; else echo refused; fi\n\
         {}\n\
         {} status --links",
        attach(&one),
        attach(&two),
        bg.display(),
        id = one.id,
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("aside=1"),
        "the squatted directory was used:\n{out}{err}"
    );
    assert!(err.contains("moved it aside"), "{err}");
    assert!(
        out.contains("refused"),
        "uid 65534 renamed a binding:\n{out}{err}"
    );
    // The kernel's word (status --links asks each link which cgroup it is attached to; not
    // bpftool, which cannot list cgroup programs on 5.10): `one` is still bound.
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{} ", one.path.display())));
    assert!(
        row.is_some_and(|r| r.contains(" 1/1 ") && r.ends_with(" ok")),
        "the binding was swept away:\n{out}{err}"
    );
}
