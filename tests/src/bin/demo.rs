//! bg-demo (run by `cargo xtask demo`): bindguard in a throwaway sandbox.
//!
//! A host namespace with two uplinks and two default routes; a statically linked client
//! (busybox) follows the routing table until its cgroup is bound, then leaves by the pinned
//! interface. Everything is removed at the end, also on failure.

use std::time::Instant;

use bindguard_tests::{Cmd, Peer, Scenario, scenario::dest, topology::UPLINK_B};

fn show(cmd: &str, (code, out, err): (i32, String, String)) {
    println!("  $ {cmd}");
    for line in out.lines().chain(err.lines()) {
        println!("    {line}");
    }
    assert_eq!(code, 0, "`{cmd}` failed");
}

/// Sends one token with busybox (TCP via nc, UDP via tftp) and says which peer got it.
fn client(s: &Scenario, in_cgroup: bool, udp: bool, v6: bool) -> Vec<Peer> {
    let got = s.busybox_delivered(in_cgroup, udp, v6);
    let what = format!(
        "busybox {} {:<16} {}",
        if udp { "tftp (UDP)" } else { "nc   (TCP)" },
        dest(v6),
        if in_cgroup {
            "in the cgroup "
        } else {
            "outside it    "
        }
    );
    println!("    {what} -> arrived at {}", describe(&got));
    got
}

fn describe(peers: &[Peer]) -> String {
    match peers {
        [] => "nobody".into(),
        [Peer::A] => "peer A (via upA)".into(),
        [Peer::B] => "peer B (via upB)".into(),
        _ => "BOTH peers".into(),
    }
}

fn main() {
    let started = Instant::now();
    let bg = "bindguard";
    println!("bindguard demo");
    println!("  sandbox: namespace `host` with uplinks upA (default route, metric 10) and");
    println!(
        "  upB (default route, metric 20); peers A and B both answer 203.0.113.10 and 2001:db8:ff::10."
    );
    let s = Scenario::new();
    let host = s.topo.host.path();
    let cg = s.cg.path.display();
    println!("  cgroup: {cg}\n");

    println!("1. Before binding, everything follows the routing table (upA):");
    for (udp, v6) in [(false, false), (true, true)] {
        assert_eq!(client(&s, true, udp, v6), [Peer::A]);
    }

    println!("\n2. Pin the cgroup to upB:");
    show(
        &format!(
            "{bg} attach --cgroup {cg} --dev {UPLINK_B} --netns {}",
            host.display()
        ),
        s.attach_result(UPLINK_B, &[]),
    );

    println!("\n3. The same static binary, unmodified: inside the cgroup it leaves by upB.");
    for (udp, v6) in [(false, false), (true, false), (false, true), (true, true)] {
        assert_eq!(client(&s, true, udp, v6), [Peer::B]);
    }
    assert_eq!(client(&s, false, false, false), [Peer::A]);

    println!("\n4. The binding lives in the kernel (the attach process has exited):");
    show(
        &format!("{bg} status"),
        Cmd::bindguard().arg("status").run(),
    );

    println!("\n5. Detach, and the routing table is back in charge:");
    show(&format!("{bg} detach --cgroup {cg}"), s.detach());
    assert_eq!(client(&s, true, false, false), [Peer::A]);

    drop(s);
    println!(
        "\nDone in {:.1} s; namespaces, veths, cgroup and pins removed.",
        started.elapsed().as_secs_f64()
    );
}
