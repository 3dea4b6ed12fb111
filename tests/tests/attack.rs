//! An attacker's review of strict mode (beyond the escapes of strict.rs and guarantee.rs): each
//! attack that strict mode stops, run from a cgroup bound to upB as uid 65534 with no
//! capabilities (or with CAP_NET_RAW alone where the attack needs it), and judged by what peer
//! A's sniffer saw: no frame carrying the attempt's token, no TCP/UDP packet to the listeners'
//! port, no membership report. Where bind mode leaks, the same attempt is shown leaking there,
//! so these tests can fail.
//!
//! Not here because strict mode does *not* stop them (see the review's report): multicast
//! joins by io_uring's SOCKET_URING_OP_SETSOCKOPT on a ring created by a 32-bit io_uring_setup
//! (`bg-probe attack uring-compat-join`), and joins whose option is longer than a page while
//! another thread rewrites it (`bg-probe attack race-join`).

use std::{
    io::{BufRead, BufReader, Read},
    net::IpAddr,
    time::Duration,
};

use bindguard_tests::{
    Cmd, Peer, Scenario,
    listener::PORT,
    root_or_skip,
    scenario::{mcast_group, token},
    topology::{DEST4, DEST6, HOST_A4, PEER_B4, UPLINK_A, UPLINK_B},
};

/// Who runs an attack.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    /// uid 65534, no capabilities.
    Nobody,
    /// uid 65534 with CAP_NET_RAW only (the container default).
    NetRaw,
}

struct Attack {
    kind: &'static str,
    addr: String,
    args: Vec<String>,
    who: Who,
    /// Whether bind mode lets a frame carrying the token out by upA (so the test can fail).
    leaks_in_bind_mode: bool,
}

fn attack(kind: &'static str, addr: &str, args: &[&str], who: Who, leaks: bool) -> Attack {
    Attack {
        kind,
        addr: addr.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        who,
        leaks_in_bind_mode: leaks,
    }
}

/// Ping sockets need the caller's group in ping_group_range; systemd opens it to everyone.
fn allow_ping_sockets(s: &Scenario) {
    s.topo
        .host
        .sysctl("net.ipv4.ping_group_range", "0 2147483647");
}

/// Every egress attack this kernel can carry out, aimed from a socket bound to upB at peer A.
/// Attacks through io_uring operations the kernel lacks cannot happen here: `test` names them
/// as skipped.
fn egress_attacks(s: &Scenario, test: &str) -> Vec<Attack> {
    let uring = bindguard_tests::privilege::uring();
    let mut all = every_egress_attack(s);
    all.retain(|a| {
        let (has, needs) = match a.kind {
            "uring-pktinfo" | "uring-unspec" => (uring.socket, "IORING_OP_SOCKET (Linux 5.19)"),
            "uring-compat-bindtodev" => (
                uring.setsockopt,
                "io_uring setsockopt (SOCKET_URING_OP_SETSOCKOPT, Linux 6.7)",
            ),
            _ => (true, ""),
        };
        if !has {
            bindguard_tests::skip(
                &format!("attack::{test} ({} {})", a.kind, a.addr),
                &format!("this kernel has no {needs}: the attack cannot happen here"),
            );
        }
        has
    });
    all
}

fn every_egress_attack(s: &Scenario) -> Vec<Attack> {
    let a = s.topo.host.ifindex(UPLINK_A).to_string();
    let a = a.as_str();
    let peer_a_ll = s.topo.peer_a.link_local("eth0");
    use Who::*;
    vec![
        // sendmmsg: each message's IP_PKTINFO names upA.
        attack("sendmmsg-pktinfo", DEST4, &[a], Nobody, true),
        // IPv4-mapped destinations on an IPv6 socket reach udp_sendmsg (IPv4) with an
        // IPV6_PKTINFO cmsg, which ip_cmsg_send accepts there (the kernel refuses it: EINVAL).
        attack("mapped-pktinfo", DEST4, &[a], Nobody, false),
        attack("pktinfo6", DEST6, &[a], Nobody, false),
        // A reset binding, then a mapped or AF_INET destination on the IPv6 socket.
        attack("mapped-unspec", DEST4, &[], Nobody, true),
        // IP_UNICAST_IF / IPV6_UNICAST_IF: refused while bound, accepted after a reset.
        attack("unicast-if", DEST4, &[a], Nobody, true),
        attack("unicast-if", DEST6, &[a], Nobody, true),
        // IP_MULTICAST_IF / IPV6_MULTICAST_IF and a datagram to a group.
        attack("mcast-if", "239.77.1.1", &[a], Nobody, true),
        attack("mcast-if", "ff0e::77:1", &[a], Nobody, true),
        // io_uring: a socket made by IORING_OP_SOCKET, sent on by IORING_OP_SENDMSG.
        attack("uring-pktinfo", DEST4, &[a], Nobody, true),
        attack("uring-unspec", DEST4, &[], Nobody, true),
        // ICMP echo ("ping") sockets: no sendmsg hook; the echo carries the token.
        attack("ping-unspec", DEST4, &[], Nobody, true),
        attack("ping-unspec", DEST6, &[], Nobody, true),
        attack("ping-pktinfo", DEST4, &[a], Nobody, true),
        // Raw sockets: no sendmsg hook either.
        attack("raw-unspec", DEST4, &[], NetRaw, true),
        attack("raw-unspec", DEST6, &[], NetRaw, true),
        attack("raw-pktinfo", DEST4, &[a], NetRaw, true),
        attack("raw-hdrincl", DEST4, &[a], NetRaw, true),
        attack("raw-scope", &peer_a_ll, &[a], NetRaw, true),
        // 32-bit setsockopt skips the cgroup sockopt hook: the socket really moves to upA.
        attack("compat-bindtodev", DEST4, &[UPLINK_A], NetRaw, true),
        // So does io_uring's setsockopt on a ring made by a 32-bit io_uring_setup.
        attack("uring-compat-bindtodev", DEST4, &[UPLINK_A], NetRaw, true),
    ]
}

/// Runs one attack from the bound cgroup; returns (probe output, whether a frame with its
/// token reached peer A).
fn run(s: &Scenario, a: &Attack) -> (String, bool) {
    let tok = token(a.kind);
    let mut cmd = s
        .probe_bound()
        .args(["attack", a.kind, &a.addr, &PORT.to_string(), &tok])
        .args(&a.args);
    cmd = match a.who {
        Who::Nobody => cmd.as_nobody(),
        Who::NetRaw => cmd.as_nobody_with("net_raw"),
    };
    let (_, out, err) = cmd.run();
    let at_a = s
        .listener
        .frame_with(Peer::A, &tok, Duration::from_millis(400));
    (format!("{out}{err}"), at_a)
}

#[test]
fn strict_mode_stops_every_egress_attack() {
    root_or_skip!();
    let s = Scenario::new();
    allow_ping_sockets(&s);
    s.attach(UPLINK_B, &[]);
    for a in egress_attacks(&s, "strict_mode_stops_every_egress_attack") {
        let before = s.listener.packets(Peer::A);
        let dropped = s.counter("egress_dropped");
        let (out, at_a) = run(&s, &a);
        eprintln!(
            "strict: {} {} {:?} ({:?}): {} [egress_dropped +{}]",
            a.kind,
            a.addr,
            a.args,
            a.who,
            out.replace('\n', "; "),
            s.counter("egress_dropped") - dropped
        );
        // Ping and raw sockets pass no sendmsg hook: only the egress filter can stop them, so
        // each must show in its counter (on every kernel, whatever else it refuses earlier).
        if a.kind.starts_with("ping-") || a.kind.starts_with("raw-") {
            assert!(
                s.counter("egress_dropped") > dropped,
                "{} {}: the egress filter dropped nothing:\n{out}",
                a.kind,
                a.addr
            );
        }
        assert!(!at_a, "{} {}: reached peer A:\n{out}", a.kind, a.addr);
        assert_eq!(
            s.listener.packets(Peer::A),
            before,
            "{} {}: a packet reached peer A:\n{out}",
            a.kind,
            a.addr
        );
        // A socket made by io_uring is bound like any other.
        if a.kind.starts_with("uring-") && !a.kind.contains("compat") {
            let b = s.topo.host.ifindex(UPLINK_B);
            assert!(out.contains(&format!("ifindex={b}")), "{out}");
        }
        // The 32-bit paths really re-bind the socket: only the egress filter stops them.
        if a.kind.contains("compat") {
            let ifa = s.topo.host.ifindex(UPLINK_A);
            assert!(out.contains(&format!("ifindex={ifa}")), "{out}");
        }
    }
    assert!(s.counter("addr_refused") >= 4);
}

#[test]
fn bind_mode_lets_the_egress_attacks_through() {
    root_or_skip!();
    let s = Scenario::new();
    allow_ping_sockets(&s);
    s.attach(UPLINK_B, &["--mode", "bind"]);
    let mut missing = Vec::new();
    for a in egress_attacks(&s, "bind_mode_lets_the_egress_attacks_through") {
        let (out, at_a) = run(&s, &a);
        eprintln!(
            "bind: {} {} at_a={at_a}: {}",
            a.kind,
            a.addr,
            out.replace('\n', "; ")
        );
        if a.leaks_in_bind_mode && !at_a {
            missing.push(format!("{} {}", a.kind, a.addr));
        }
    }
    assert!(
        missing.is_empty(),
        "did not reach A in bind mode: {missing:?}"
    );
}

#[test]
fn tcp_fast_open_after_a_link_local_bind_does_not_leave_by_the_other_uplink() {
    root_or_skip!();
    for mode in ["strict", "bind"] {
        let s = Scenario::new();
        s.attach(UPLINK_B, &["--mode", mode]);
        let a = s.topo.host.ifindex(UPLINK_A).to_string();
        // bind(fe80::1%upA) fails but leaves the socket bound to upA; sendto(MSG_FASTOPEN)
        // then connects without connect(2).
        let (out, _) = run(&s, &attack("tfo-llbind", DEST6, &[&a], Who::Nobody, false));
        let syns = s.listener.packets(Peer::A);
        if mode == "strict" {
            assert!(
                out.contains("sendto(MSG_FASTOPEN): error errno=1"),
                "{mode}: {out}"
            );
            assert_eq!(syns, 0, "{mode}: a SYN reached peer A: {out}");
        } else {
            assert!(syns > 0, "{mode}: the SYN was expected at peer A: {out}");
        }
    }
}

/// Starts a receiving attack (it prints `ready`), lets `send` run, and returns everything the
/// attack printed.
fn receive(bound: Cmd, send: impl FnOnce()) -> String {
    let mut child = bound.spawn();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        out += &line;
        if line.trim() == "ready" {
            send();
            break;
        }
    }
    let _ = reader.read_to_string(&mut out);
    let _ = bindguard_tests::run::wait_output(child, Duration::from_secs(10));
    out
}

#[test]
fn nothing_arriving_by_the_other_uplink_reaches_the_cgroup() {
    root_or_skip!();
    for mode in ["strict", "bind"] {
        let s = Scenario::new();
        s.attach(UPLINK_B, &["--mode", mode]);
        let host_a_ll = s.topo.host.link_local(UPLINK_A);
        let a = s.topo.host.ifindex(UPLINK_A).to_string();
        let peer_eth0 = s.topo.peer_a.ifindex("eth0").to_string();
        let mut leaked = Vec::new();
        // (attack, its address, its args, how peer A sends, port)
        let port = |n: u16| (PORT + 200 + n).to_string();
        let cases: [(&str, &str, Vec<&str>, &str, String); 3] = [
            // A UDP socket whose binding was reset, bound to the port on every address.
            ("recv-unspec", PEER_B4, vec!["2"], "udp", port(0)),
            // An IPv6 UDP socket bound to upA's link-local address (the scope id re-binds it).
            ("recv-llbind", &host_a_ll, vec![&a, "2"], "scope", port(1)),
            // The same as a TCP listener: peer A connects to it.
            (
                "listen-llbind",
                &host_a_ll,
                vec![&a, "2"],
                "tcp-scope",
                port(2),
            ),
        ];
        for (kind, addr, args, how, port) in cases {
            let tok = token(kind);
            let bound = s
                .probe_bound()
                .args(["attack", kind, addr, &port, "-"])
                .args(&args)
                .as_nobody();
            let out = receive(bound, || {
                let from_a = Cmd::probe().in_netns(&s.topo.peer_a);
                let (_, sent, _) = match how {
                    "udp" => from_a.args(["send", "udp", HOST_A4, &port, &tok]).run(),
                    "scope" => from_a
                        .args(["escape", "scope", &host_a_ll, &port, &tok, &peer_eth0])
                        .run(),
                    _ => from_a
                        .args(["attack", "tcp-scope", &host_a_ll, &port, &tok, &peer_eth0])
                        .run(),
                };
                eprintln!("{mode}: peer A {how}: {}", sent.replace('\n', "; "));
            });
            eprintln!("{mode}: {kind}: {}", out.replace('\n', "; "));
            assert!(out.contains("ready"), "{mode} {kind}: {out}");
            if out.contains(&format!("got {tok}")) || out.contains("accepted") {
                leaked.push(kind);
            }
        }
        if mode == "strict" {
            assert!(
                leaked.is_empty(),
                "received by upA under strict: {leaked:?}"
            );
            assert!(s.counter("ingress_dropped") >= 3);
        } else {
            assert_eq!(
                leaked,
                ["recv-unspec", "recv-llbind", "listen-llbind"],
                "bind mode was expected to receive by upA"
            );
        }
    }
}

#[test]
fn every_membership_option_stays_on_the_bound_interface() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let a = s.topo.host.ifindex(UPLINK_A);
    let b = s.topo.host.ifindex(UPLINK_B);
    let wait = Duration::from_millis(800);
    let mut n = 0;
    let mut next = |v6| {
        n += 1;
        mcast_group(78, v6, n)
    };
    // (option, IPv6?, interface index, what the guard answers: EPERM or a join on upB)
    let refused = "join: error errno=1";
    let joined = "join: ok";
    let cases = [
        // Source-specific joins and filters name the interface like MCAST_JOIN_GROUP.
        ("source-group", false, a, refused),
        ("source-group", true, a, refused),
        ("msfilter", false, a, refused),
        ("msfilter", true, a, refused),
        // Options longer than the page the program is shown: the kernel re-reads them from
        // user memory after the program ran (a racing thread could change the index), so they
        // are refused whatever index they name — the bound interface's too.
        ("mreqn-long", false, a, refused),
        ("mreqn-long", false, 0, refused),
        ("group-long", false, 0, refused),
        ("group-long", true, a, refused),
        ("mreq6-long", true, 0, refused),
        ("mreq6-long", true, a, refused),
        ("mreq6-long", true, b, refused),
        // The bound interface's own index is fine at the option's real length.
        ("source-group", false, b, joined),
    ];
    for (how, v6, ifindex, want) in cases {
        let g = next(v6);
        let out = s.join(how, g, ifindex);
        assert!(out.contains(want), "{how} v6={v6} ifindex={ifindex}: {out}");
        assert!(
            !s.listener.report_for(Peer::A, g, wait),
            "{how} ifindex={ifindex}: a report for {g} reached peer A: {out}"
        );
        if want == joined {
            assert!(
                s.listener.report_for(Peer::B, g, Duration::from_secs(3)),
                "{how}: no report for {g} on upB: {out}"
            );
        }
    }
    // IP_MSFILTER names the interface by address (upA's) and is not guarded: the kernel only
    // filters memberships the socket already has there, and it has none.
    let g = next(false);
    let out = s.join("ip-msfilter", g, 0);
    assert!(out.contains("join: error"), "ip-msfilter: {out}");
    assert!(
        !s.listener.report_for(Peer::A, g, wait),
        "ip-msfilter: {out}"
    );
}

#[test]
fn source_specific_joins_leak_in_bind_mode() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &["--mode", "bind"]);
    let a = s.topo.host.ifindex(UPLINK_A);
    // (MCAST_MSFILTER only filters a membership the socket already has.)
    for (i, (how, v6)) in [("source-group", false), ("source-group", true)]
        .into_iter()
        .enumerate()
    {
        let g = mcast_group(78, v6, 200 + i as u32);
        let out = s.join(how, g, a);
        assert!(out.contains("join: ok"), "{how}: {out}");
        assert!(
            s.listener.report_for(Peer::A, g, Duration::from_secs(3)),
            "{how}: bind mode was expected to report {g} by upA: {out}"
        );
    }
}

/// A child cgroup made by hand, removed (its processes killed) on drop.
struct ChildCgroup(std::path::PathBuf);

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for _ in 0..250 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_delegated_user_cannot_leave_the_binding_by_cgroups() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    // Delegate the bound cgroup to uid 65534, as systemd does for Delegate=yes.
    let cg = s.cg.path.clone();
    for f in [
        "",
        "cgroup.procs",
        "cgroup.threads",
        "cgroup.subtree_control",
    ] {
        let p = if f.is_empty() { cg.clone() } else { cg.join(f) };
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let sub = ChildCgroup(cg.join("sub"));
    let tok = token("delegated");
    let probe = bindguard_tests::probe_bin();
    // Inside the cgroup, as 65534: make a child cgroup, move there, send; then try to move to
    // the parent of the bound cgroup (where the binding does not reach) and send again.
    let script = format!(
        "mkdir {sub} && echo $$ > {sub}/cgroup.procs && echo moved-to-child && \
         {probe} send udp {DEST4} {PORT} {tok}-child; \
         if echo $$ > {parent}/cgroup.procs; then echo moved-out; fi; \
         {probe} send udp {DEST4} {PORT} {tok}-after",
        sub = sub.0.display(),
        probe = probe.display(),
        parent = cg.parent().unwrap().display(),
    );
    let (_, out, err) = Cmd::new("sh")
        .args(["-c", &script])
        .in_cgroup(&s.cg)
        .in_netns(&s.topo.host)
        .as_nobody()
        .run();
    let out = format!("{out}{err}");
    assert!(out.contains("moved-to-child"), "{out}");
    assert!(!out.contains("moved-out"), "left the bound cgroup: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert_eq!(s.receivers(&format!("{tok}-child")), [Peer::B], "{out}");
    assert_eq!(s.receivers(&format!("{tok}-after")), [Peer::B], "{out}");
    assert_eq!(s.listener.packets(Peer::A), 0, "{out}");
    drop(sub);
}

#[test]
fn a_64_bit_io_uring_setsockopt_meets_the_guard() {
    root_or_skip!();
    // The control for the compat-ring finding: on a ring made by the 64-bit io_uring_setup,
    // SOCKET_URING_OP_SETSOCKOPT goes through the cgroup sockopt hook like setsockopt(2).
    if !bindguard_tests::privilege::uring().setsockopt {
        bindguard_tests::skip(
            "attack::a_64_bit_io_uring_setsockopt_meets_the_guard",
            "this kernel has no io_uring setsockopt (SOCKET_URING_OP_SETSOCKOPT, Linux 6.7)",
        );
        return;
    }
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let tok = token("uring64");
    let (_, out, err) = s
        .probe_bound()
        .args(["attack", "uring-bindtodev", DEST4, &PORT.to_string(), &tok])
        .arg(UPLINK_A)
        .as_nobody_with("net_raw")
        .run();
    let out = format!("{out}{err}");
    assert!(out.contains("io_uring_setup(compat=false): ok"), "{out}");
    assert!(
        out.contains("setsockopt(SO_BINDTODEVICE): error errno=1"),
        "{out}"
    );
    assert_eq!(s.receivers(&tok), [Peer::B], "{out}");
}

/// A membership option longer than a page: the program sees only its first page and the kernel
/// copies the option from user memory again, so a racing thread could swap the index to upA
/// between the copies (found by the attack review: 20-80 of 300 joins leaked). Such options
/// are now refused whatever the copy says.
#[test]
fn racing_a_long_membership_option_cannot_join_on_the_other_uplink() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let (a, b) = (
        s.topo.host.ifindex(UPLINK_A).to_string(),
        s.topo.host.ifindex(UPLINK_B).to_string(),
    );
    for base in ["239.67.0.0", "ff15::67:0"] {
        let (_, out, err) = s
            .probe_bound()
            .arg("attack")
            .args(["race-join", base, "0", "-", &a, &b, "300"])
            .as_nobody()
            .run();
        std::thread::sleep(Duration::from_secs(1));
        let leaked: Vec<IpAddr> = (0..300u32)
            .map(|i| match base.parse::<IpAddr>().unwrap() {
                IpAddr::V4(g) => IpAddr::V4((u32::from(g) + i).into()),
                IpAddr::V6(g) => IpAddr::V6((u128::from(g) + u128::from(i)).into()),
            })
            .filter(|g| s.listener.report_for(Peer::A, *g, Duration::ZERO))
            .collect();
        assert!(
            leaked.is_empty(),
            "{out}{err}: reports by upA for {leaked:?}"
        );
    }
}

/// An SO_BINDTODEVICE option longer than a page, its name changed to upA by another thread
/// between the program's copy (at most a page) and the kernel's second read from user memory:
/// the setsockopt guard saw upB and let it through (issue #17, item 11). Such options are now
/// refused whatever the copy says. In bind mode (no guard) the same race moves the socket.
#[test]
fn racing_a_long_bindtodevice_option_cannot_move_the_socket() {
    root_or_skip!();
    for strict in [true, false] {
        let s = Scenario::new();
        s.attach(UPLINK_B, if strict { &[] } else { &["--mode", "bind"] });
        let a = s.topo.host.ifindex(UPLINK_A).to_string();
        let race = || {
            let (_, out, err) = s
                .probe_bound()
                .arg("attack")
                .args(["race-bind", DEST4, "0", "-", UPLINK_A, UPLINK_B, &a, "1000"])
                .as_nobody_with("net_raw")
                .run();
            let out = format!("{out}{err}");
            let moved: u32 = out
                .split("moved=")
                .nth(1)
                .and_then(|m| m.split_whitespace().next())
                .and_then(|m| m.parse().ok())
                .unwrap_or_else(|| panic!("no count in: {out}"));
            (moved, out)
        };
        // The same number of rounds in both modes; bind mode stops at its first move (on a
        // loaded machine the flipping thread can miss a whole round's window).
        let mut rounds = 0;
        let (moved, out) = loop {
            rounds += 1;
            let (moved, out) = race();
            if (moved > 0 && !strict) || rounds == 5 {
                break (moved, format!("round {rounds}: {out}"));
            }
            if strict && moved > 0 {
                break (moved, out);
            }
        };
        if strict {
            assert_eq!(moved, 0, "strict: sockets moved to upA: {out}");
        } else if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            // One CPU (the VM matrix): the flipping thread never runs between the two copies,
            // so the leak this guards against cannot be shown here; the host shows it.
            bindguard_tests::skip(
                "attack::racing_a_long_bindtodevice_option_cannot_move_the_socket (bind-mode control)",
                "one CPU: the racing thread cannot interleave with the option's two copies",
            );
        } else {
            assert!(moved > 0, "bind mode: the race never moved a socket: {out}");
        }
    }
}
