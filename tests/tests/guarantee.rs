//! Strict means strict (issue 9): each escape an attacker found, in the two-uplink topology,
//! proved by what peer A's sniffer sees. Where bind mode is meant to leak, the same attempt is
//! shown leaking there, so these tests can fail.

use std::{io::Write, time::Duration};

use bindguard_tests::{
    Cmd, Peer, Scenario, TestCgroup,
    listener::PORT,
    privilege::rows_open_without_lsm,
    root_or_skip,
    scenario::{attached_programs, dest, mcast_group, program_count, settled_program_count, token},
    topology::{UPLINK_A, UPLINK_B},
};

/// Runs `script` (sh) in new mount and cgroup namespaces, from `cg`: the cgroup namespace's
/// root is `cg`, so a missing root guard binds that, never the host.
fn in_cgroup_namespace(cg: &TestCgroup, script: &str) -> (i32, String, String) {
    Cmd::new("unshare")
        .args([
            "--mount",
            "--cgroup",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ])
        .in_cgroup(cg)
        .run()
}

#[test]
fn the_root_cgroup_is_refused_in_every_spelling() {
    root_or_skip!();
    // Inside a cgroup namespace rooted at a test cgroup, with cgroup2 mounted afresh: there
    // the mount's root is the test cgroup, so a missing guard binds that, never the host.
    let cg = TestCgroup::new();
    let sub = cg.child("sub");
    let mount = bindguard::binding::cgroup::cgroup2_mount().unwrap();
    let m = mount.display().to_string();
    let link = std::env::temp_dir().join(bindguard_tests::unique("bgln"));
    let bg = bindguard_tests::bindguard_bin();
    let spellings = [
        m.clone(),
        format!("{m}/"),
        format!("{m}/."),
        ".".into(),
        format!("/proc/self/root{m}"),
        format!("{m}/sub/.."),
        link.display().to_string(),
    ];
    // The host's mount is replaced by one showing the namespace (set -e: no attach runs if
    // that fails); the root's inode printed first proves it is not the host's root (1).
    let mut script = format!(
        "set -e\numount -l {m}\nmount -t cgroup2 none {m}\nstat -c 'root=%i' {m}\nln -s {m} {}\nset +e\n",
        link.display()
    );
    for sp in &spellings {
        script += &format!(
            "{} attach --cgroup '{sp}' --dev lo 2>&1; echo \"=> $?\"\n",
            bg.display()
        );
    }
    // A child of the namespace's root: strict refuses it too, since what lies above the
    // namespace's root (where the processes may be able to go) cannot be seen from here.
    script += &format!(
        "{} attach --cgroup {m}/sub --dev lo 2>&1; echo \"ns=> $?\"\n",
        bg.display()
    );
    script += &format!("rm -f {}\n", link.display());
    let (code, out, err) = in_cgroup_namespace(&cg, &script);
    let _ = std::fs::remove_file(&link);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("root={}\n", cg.id)),
        "the namespace's cgroup2 root is not the test cgroup:\n{out}{err}"
    );
    let results: Vec<&str> = out.lines().filter(|l| l.starts_with("=> ")).collect();
    assert_eq!(results.len(), spellings.len(), "{out}");
    for (sp, r) in spellings.iter().zip(&results) {
        assert_eq!(*r, "=> 2", "{sp} was not refused as bad input:\n{out}");
    }
    assert_eq!(
        out.matches("is the root of a cgroup2 hierarchy").count(),
        spellings.len(),
        "{out}"
    );
    assert!(
        out.contains("ns=> 2") && out.contains("cgroup namespace's root"),
        "a strict attach below an unseen namespace root was not refused:\n{out}"
    );
    assert!(!sub.pins().exists());
    // Nothing changed: no binding, no program on the namespace's root cgroup.
    assert!(!cg.pins().exists());
    assert_eq!(
        program_count(&cg.path),
        0,
        "{}",
        attached_programs(&cg.path)
    );
    drop(sub);
}

/// Review of c5bf547: the namespace's root is also reachable through the host's cgroup2 mount
/// when the mount namespace still holds it (here a bind of it, as a container runtime or an
/// admin's shell may keep). That path is no mount's root, so STATX_ATTR_MOUNT_ROOT alone says
/// "not a root"; it is the same cgroup the namespace's own mount is rooted at.
#[test]
fn the_namespace_root_is_refused_through_the_hosts_mount_too() {
    root_or_skip!();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let cg = TestCgroup::new();
    let mount = bindguard::binding::cgroup::cgroup2_mount().unwrap();
    let m = mount.display().to_string();
    let rel = cg.path.strip_prefix(&mount).unwrap().display().to_string();
    let host = RmDir(std::env::temp_dir().join(bindguard_tests::unique("bghm")));
    std::fs::create_dir(&host.0).unwrap();
    let h = host.0.display().to_string();
    let bg = bindguard_tests::bindguard_bin();
    let script = format!(
        "set -e\nmount --bind {m} {h}\numount -l {m}\nmount -t cgroup2 none {m}\n\
         stat -c 'root=%i' {m}\nstat -c 'via=%i' {h}/{rel}\nset +e\n\
         {bg} attach --cgroup '{h}/{rel}' --dev lo 2>&1; echo \"=> $?\"\n",
        bg = bg.display()
    );
    let (code, out, err) = in_cgroup_namespace(&cg, &script);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("root={}\n", cg.id)), "{out}{err}");
    assert!(out.contains(&format!("via={}\n", cg.id)), "{out}{err}");
    let binding = cg.pins().exists();
    let programs = program_count(&cg.path);
    if binding || programs != 0 {
        let _ = Cmd::bindguard()
            .args(["detach", "--cgroup", &cg.path.display().to_string()])
            .run();
    }
    assert!(
        out.contains("=> 2") && out.contains("is the root of a cgroup2 hierarchy"),
        "the namespace's root was not refused through the host's mount:\n{out}"
    );
    assert!(!binding, "the namespace's root was bound");
    assert_eq!(programs, 0, "{}", attached_programs(&cg.path));
}

#[test]
fn oci_hook_refuses_the_runtimes_cgroup_and_its_ancestors() {
    root_or_skip!();
    let outer = TestCgroup::new();
    let runtime = outer.child("run");
    // The "container" process lives in `outer`, an ancestor of the runtime's cgroup.
    let mut sleeper = Cmd::new("sleep").arg("30").in_cgroup(&outer).spawn();
    for runtime_cg in [&runtime.path, &outer.path] {
        let state = serde_json::json!({
            "ociVersion": "1.0.2", "id": "bgtest", "status": "creating",
            "pid": sleeper.id(), "bundle": "/nonexistent",
            "annotations": {"io.bindguard.dev": "lo"}
        });
        let mut child = Cmd::bindguard()
            .arg("oci-hook")
            .in_cgroup_path(runtime_cg)
            .spawn_with_stdin();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(state.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("refusing to bind the runtime"), "{err}");
        assert!(!outer.pins().exists(), "the runtime's ancestor was bound");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn multicast_joins_stay_on_the_bound_interface() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let a = s.topo.host.ifindex(UPLINK_A);
    let wait = Duration::from_millis(800);
    let mut n = 0;
    let mut next = |v6| {
        n += 1;
        mcast_group(77, v6, n)
    };
    // Naming the other interface: refused, and no report leaves by it.
    for (how, v6) in [
        ("mreqn", false),
        ("group", false),
        ("group", true),
        ("mreq6", true),
    ] {
        let g = next(v6);
        let out = s.join(how, g, a);
        assert!(out.contains("join: error errno=1"), "{how} on upA: {out}");
        assert!(
            !s.listener.report_for(Peer::A, g, wait),
            "{how}: a report for {g} reached peer A"
        );
    }
    // Naming no interface: the kernel would take the routing table's choice (upA); the guard
    // puts the membership on the bound interface.
    for (how, v6) in [("mreq", false), ("group", false), ("mreq6", true)] {
        let g = next(v6);
        let out = s.join(how, g, 0);
        assert!(out.contains("join: ok"), "{how} any: {out}");
        assert!(
            s.listener.report_for(Peer::B, g, Duration::from_secs(3)),
            "{how} any: no report for {g} on upB: {out}"
        );
        assert!(
            !s.listener.report_for(Peer::A, g, wait),
            "{how} any: a report for {g} reached peer A"
        );
    }
    // An interface named only by address cannot be pinned: refused.
    let g = next(false);
    let out = s.join("source", g, 0);
    assert!(out.contains("join: error errno=1"), "source: {out}");
    assert!(s.counter("multicast_refused") >= 5);
}

#[test]
fn multicast_joins_leak_in_bind_mode() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &["--mode", "bind"]);
    let a = s.topo.host.ifindex(UPLINK_A);
    for (i, (how, ifindex)) in [("mreqn", a), ("mreq", 0)].into_iter().enumerate() {
        let g = mcast_group(77, false, 100 + i as u32);
        let out = s.join(how, g, ifindex);
        assert!(out.contains("join: ok"), "{how}: {out}");
        assert!(
            s.listener.report_for(Peer::A, g, Duration::from_secs(3)),
            "{how}: bind mode was expected to send the report for {g} by upA: {out}"
        );
    }
}

#[test]
fn mptcp_is_refused_with_eprotonosupport_in_both_modes() {
    root_or_skip!();
    let s = Scenario::new();
    let (code, out, _) = s.probe_bound().arg("mptcp").as_nobody().run();
    if out.contains("socket(IPPROTO_MPTCP): error errno=93") {
        // Debian 11 builds no MPTCP: the kernel refuses it before any hook, nothing can leak.
        bindguard_tests::skip(
            "guarantee::mptcp_is_refused_with_eprotonosupport_in_both_modes",
            "this kernel has no MPTCP (socket(IPPROTO_MPTCP) fails with EPROTONOSUPPORT unbound)",
        );
        return;
    }
    assert_eq!(code, 0, "MPTCP works without a binding here: {out}");
    assert!(out.contains("socket(IPPROTO_MPTCP): ok"), "{out}");
    // Without bpf_set_retval in cgroup_sock (before 6.1) the refusal can only be EPERM.
    let set_retval =
        bindguard::kernel::probe::features() & bindguard_common::features::SOCK_SET_RETVAL != 0;
    let errno = if set_retval { "errno=93" } else { "errno=1" };
    for mode in ["strict", "bind"] {
        s.attach(UPLINK_B, &["--mode", mode]);
        let (_, out, _) = s.probe_bound().arg("mptcp").as_nobody().run();
        assert!(
            out.contains(&format!("socket(IPPROTO_MPTCP): error {errno}")),
            "{mode}: {out}"
        );
        assert!(s.counter("mptcp_refused") >= 1, "{mode}");
        // TCP, the fallback, still leaves bound.
        assert_eq!(
            s.delivered_to(
                s.probe_bound().as_nobody(),
                bindguard_tests::Proto::Tcp,
                false
            ),
            [Peer::B],
            "{mode}"
        );
    }
}

fn send_marked(s: &Scenario, how: &str, value: &str, nobody: bool) -> (String, Vec<Peer>) {
    let tok = token(how);
    let mut cmd =
        s.probe_bound()
            .args(["marked", how, value, dest(false), &PORT.to_string(), &tok]);
    if nobody {
        cmd = cmd.as_nobody();
    }
    let (_, out, err) = cmd.run();
    let got = s.listener.wait_for(&tok, Duration::from_millis(800));
    (format!("{out}{err}"), got)
}

#[test]
fn a_changed_mark_is_dropped_and_a_changed_priority_restored() {
    root_or_skip!();
    let s = Scenario::new();
    // Without --mark the cmsg's mark is the packet's business: it leaves (the test can fail).
    s.attach(UPLINK_B, &[]);
    let (out, got) = send_marked(&s, "somark", "9", false);
    assert_eq!(got, [Peer::B], "{out}");
    s.attach(UPLINK_B, &["--mark", "7", "--priority", "3"]);
    // An SO_MARK cmsg (CAP_NET_ADMIN) bypasses the setsockopt guard: dropped at egress.
    let before = s.listener.packets(Peer::A) + s.listener.packets(Peer::B);
    let (out, got) = send_marked(&s, "somark", "9", false);
    assert!(got.is_empty(), "a packet with mark 9 left: {got:?} {out}");
    assert_eq!(
        s.listener.packets(Peer::A) + s.listener.packets(Peer::B),
        before,
        "{out}"
    );
    assert!(s.counter("mark_dropped") >= 1);
    // The policy's own mark passes.
    let (out, got) = send_marked(&s, "somark", "7", false);
    assert_eq!(got, [Peer::B], "{out}");
    // IP_TOS (unprivileged) also sets the priority: the packet leaves with the policy's.
    let (out, got) = send_marked(&s, "tos", "16", true);
    assert!(out.contains("setsockopt(IP_TOS): ok"), "{out}");
    assert_eq!(got, [Peer::B], "{out}");
    assert!(s.counter("priority_restored") >= 1);
}

/// Sockets on PORT in the host namespace (ss), to see whether they still exist.
fn sockets_on_port(s: &Scenario) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", s.topo.host.path().display()))
        .args(["ss", "-Hantu", &format!("sport = :{}", PORT + 50)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn existing_sockets_are_kept_or_destroyed_on_request() {
    root_or_skip!();
    for existing in ["keep", "destroy"] {
        let s = Scenario::new();
        let mut holder = s
            .probe_bound()
            .args(["hold", &(PORT + 50).to_string(), "30"])
            .spawn();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        assert_eq!(
            sockets_on_port(&s).lines().count(),
            2,
            "{}",
            sockets_on_port(&s)
        );
        let (code, out, err) = s.attach_result(UPLINK_B, &["--existing", existing]);
        assert_eq!(code, 0, "{out}{err}");
        let left = sockets_on_port(&s);
        if existing == "keep" {
            assert_eq!(left.lines().count(), 2, "{left}");
        } else {
            // TCP: gone. UDP (SOCK_DESTROY leaves a port-bound one usable): now bound to upB.
            assert_eq!(
                left.lines().count(),
                1,
                "the TCP socket remains:\n{left}\n{err}"
            );
            assert!(
                left.contains("udp") && left.contains(&format!("%{UPLINK_B}")),
                "{left}"
            );
            assert_eq!(err.matches("bindguard: destroyed: tcp").count(), 1, "{err}");
            assert_eq!(
                err.matches("bindguard: bound to upB: udp").count(),
                1,
                "{err}"
            );
        }
        let _ = holder.kill();
        let _ = holder.wait();
    }
}

/// A `bg-probe held KIND` started in the cgroup (uid 65534 with `nobody`) before any binding:
/// a port-bound UDP socket and a TCP connection, both made unbound (leaving by upA).
struct Held {
    child: std::process::Child,
    token: String,
}

impl Held {
    fn start(s: &Scenario, kind: &str, nobody: bool) -> Self {
        let token = token(kind);
        let cmd = s
            .probe_bound()
            .args(["held", kind, dest(false), &PORT.to_string(), &token]);
        let cmd = if nobody { cmd.as_nobody() } else { cmd };
        let mut child = cmd.spawn_with_stdin();
        let line = bindguard_tests::run::first_line(&mut child);
        assert_eq!(line, "ready", "held {kind}");
        Self { child, token }
    }

    /// Lets the probe send through its old sockets; returns (its report, who got the UDP
    /// datagram, who got the TCP bytes).
    fn send(mut self, s: &Scenario) -> (String, Vec<Peer>, Vec<Peer>) {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let out = bindguard_tests::run::wait_output(self.child, Duration::from_secs(10))
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|| "timed out".into());
        let udp = s.receivers(&format!("{}-udp", self.token));
        let tcp = s.receivers(&format!("{}-tcp", self.token));
        (out, udp, tcp)
    }
}

/// Whether the kernel can name one thread with a pidfd (PIDFD_THREAD, 6.9+): without it a
/// socket only a non-leader thread's fd table holds cannot be copied, so a UDP socket there
/// cannot be bound (TCP is destroyed by sock_diag all the same).
fn thread_pidfds() -> bool {
    // SAFETY: pidfd_open of this very thread; the fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::gettid(), libc::O_EXCL) };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

/// Issue 17, item 4: `--existing destroy` finds sockets the way the kernel knows them (sock_diag
/// by cgroup, every thread's fd table, every holder fd tried), so a socket hidden from a plain
/// /proc/PID/fd walk is ended too and leaves by the bound uplink afterwards.
#[test]
fn existing_destroy_ends_sockets_an_fd_walk_misses() {
    root_or_skip!();
    for kind in ["opath", "thread", "zombie"] {
        let s = Scenario::new();
        let held = Held::start(&s, kind, false);
        let (code, out, err) =
            s.attach_result(UPLINK_B, &["--mode", "bind", "--existing", "destroy"]);
        let udp_reachable = kind == "opath" || thread_pidfds();
        let (report, udp, tcp) = held.send(&s);
        assert_eq!(
            tcp,
            [Peer::B],
            "{kind}: TCP after attach: {report}\n{out}{err}"
        );
        if udp_reachable {
            assert_eq!(code, 0, "{kind}: {out}{err}");
            assert_eq!(udp, [Peer::B], "{kind}: UDP after attach: {report}\n{err}");
        } else {
            bindguard_tests::skip(
                &format!("existing_destroy_ends_sockets_an_fd_walk_misses ({kind}, UDP)"),
                "no PIDFD_THREAD (6.9+): the thread's UDP socket cannot be copied; attach must say so",
            );
            assert_eq!(code, 1, "{kind}: {out}{err}");
            assert!(err.contains("not ended: udp"), "{kind}: {err}");
        }
        // Whatever was ended or not, the binding is in place.
        assert_eq!(
            s.delivered_to(s.probe_bound(), bindguard_tests::Proto::Udp, false),
            [Peer::B]
        );
    }
}

#[test]
fn attach_restores_a_binding_that_lost_links() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let full = program_count(&s.cg.path);
    assert!(full >= 10);
    std::fs::remove_file(s.cg.pins().join("link_sock_create")).unwrap();
    assert_eq!(settled_program_count(&s.cg.path, full - 1), full - 1);
    assert!(s.problems().contains(&"link-missing".to_string()));
    let (code, out, err) = s.attach_result(UPLINK_B, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("programs replaced"), "{out}");
    assert_eq!(settled_program_count(&s.cg.path, full), full);
    assert_eq!(s.problems(), Vec::<String>::new());
    assert_eq!(
        s.delivered_to(s.probe_bound(), bindguard_tests::Proto::Udp, false),
        [Peer::B]
    );
}

#[test]
fn killed_commands_never_leave_silent_extras() {
    root_or_skip!();
    let s = Scenario::new();
    let modes = ["bind", "strict"];
    for i in 0..24u64 {
        // Alternate modes so each attach replaces the whole program set, or detach.
        let args: Vec<String> = if i % 3 == 2 {
            vec![
                "detach".into(),
                "--cgroup".into(),
                s.cg.path.display().to_string(),
            ]
        } else {
            let mut a = vec![
                "attach".into(),
                "--cgroup".into(),
                s.cg.path.display().to_string(),
                "--dev".into(),
                UPLINK_B.into(),
                "--netns".into(),
                s.topo.host.path().display().to_string(),
            ];
            a.extend(["--mode".into(), modes[(i % 2) as usize].into()]);
            a
        };
        let mut child = Cmd::bindguard().args(&args).spawn();
        std::thread::sleep(Duration::from_millis(5 + (i * 7919) % 60));
        let _ = child.kill();
        let _ = child.wait();
        // Links unpinned by the killed command are released from a workqueue: a surplus that
        // status does not explain must persist for 3 s to count.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let attached = program_count(&s.cg.path);
            let entry = s.status_entry();
            let pinned = entry.as_ref().map_or(0, |e| {
                e["links"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|l| l["pinned"] == true)
                    .count()
            });
            let kinds: Vec<String> = entry.as_ref().map_or(vec![], |e| {
                e["problems"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["kind"].as_str().unwrap().to_string())
                    .collect()
            });
            if attached <= pinned || kinds.contains(&"stray-programs".to_string()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {i}: {attached} programs attached, {pinned} pinned, status says {kinds:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The next commands finish whatever was interrupted.
    s.attach(UPLINK_B, &[]);
    // Every program this kernel's set holds (10, and the BPF LSM's where it runs).
    let full = s.status_entry().unwrap()["links"].as_array().unwrap().len();
    assert!(full >= 10);
    assert_eq!(settled_program_count(&s.cg.path, full), full);
    assert_eq!(s.problems(), Vec::<String>::new());
    let (code, _, err) = s.detach();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        settled_program_count(&s.cg.path, 0),
        0,
        "{}",
        attached_programs(&s.cg.path)
    );
}

#[test]
fn without_the_bpf_lsm_strict_mode_says_what_it_does_not_cover() {
    root_or_skip!();
    let s = Scenario::new();
    let lsm_list = Cmd::bindguard().env("BINDGUARD_LSM_LIST", "lockdown,capability");
    let (code, _, err) = s.attach_to(lsm_list, &s.cg.path, UPLINK_B).run();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "warning: strict mode cannot cover escape rows {}",
            rows_open_without_lsm()
        )),
        "{err}"
    );
    assert!(err.contains("lsm="), "{err}");
    let entry = s.status_entry().unwrap();
    assert_eq!(entry["lsm"], false);
    assert!(
        entry["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "rows-open"
                && p["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("rows {} ", rows_open_without_lsm()))),
        "{entry}"
    );
    let (_, out, _) = Cmd::bindguard()
        .arg("verify")
        .arg("--cgroup")
        .arg(&s.cg.path)
        .run();
    assert!(
        out.contains("WARN") && out.contains(&format!("rows {} ", rows_open_without_lsm())),
        "{out}"
    );
    // The rest of strict mode is attached and enforcing.
    assert_eq!(
        s.delivered_to(
            s.probe_bound().as_nobody(),
            bindguard_tests::Proto::Udp,
            true
        ),
        [Peer::B]
    );
}

#[test]
fn over_long_input_is_bad_input_and_not_echoed() {
    root_or_skip!();
    let long = "x".repeat(5000);
    let (code, _, err) = Cmd::bindguard()
        .args(["attach", "--cgroup", &long, "--dev", "lo"])
        .run();
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1);
    assert!(err.len() < 400, "{} bytes", err.len());
    // A 16 MB annotation: refused, one short line.
    let big = "y".repeat(16 << 20);
    let state = format!(
        r#"{{"ociVersion":"1.0.2","id":"c","status":"creating","pid":1,"bundle":"/x","annotations":{{"io.bindguard.dev":"{big}"}}}}"#
    );
    let mut child = Cmd::bindguard().arg("oci-hook").spawn_with_stdin();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(state.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", &err[..err.len().min(300)]);
    assert!(err.len() < 400, "{} bytes", err.len());
    let _ = UPLINK_B;
}

#[test]
fn lsm_programs_the_kernel_refuses_leave_the_rest_of_strict_mode_attached() {
    root_or_skip!();
    // Claim the BPF LSM is usable: on a kernel that then refuses the programs (this one does,
    // with EPERM) the binding is made without them, and says why.
    let s = Scenario::new();
    let lsm_list = Cmd::bindguard().env("BINDGUARD_LSM_LIST", "lockdown,capability,bpf");
    let (code, _, err) = s.attach_to(lsm_list, &s.cg.path, UPLINK_B).run();
    assert_eq!(code, 0, "{err}");
    let entry = s.status_entry().unwrap();
    if entry["lsm"] == true {
        // A kernel that runs BPF LSM programs: nothing to fall back from (row 28 is open
        // before 6.7 whatever the LSM).
        if bindguard_tests::privilege::unix_connect_expected() {
            assert!(!err.contains("escape rows"), "{err}");
        } else {
            assert!(err.contains("cannot cover escape rows 28 "), "{err}");
        }
        return;
    }
    // The build's program set is loaded once: by this attach (then the kernel's refusal is
    // quoted) or by an earlier one (then the set records why it has no LSM programs).
    assert!(
        err.contains(&format!(
            "warning: strict mode cannot cover escape rows {}",
            rows_open_without_lsm()
        )),
        "{err}"
    );
    // Strict mode's programs but the BPF LSM ones.
    let non_lsm = bindguard_tests::privilege::strict_programs_without_lsm();
    assert_eq!(settled_program_count(&s.cg.path, non_lsm), non_lsm);
    assert_eq!(
        s.delivered_to(
            s.probe_bound().as_nobody(),
            bindguard_tests::Proto::Tcp,
            false
        ),
        [Peer::B]
    );
}

/// A subtree delegated to uid 65534 the way systemd delegates `user@UID.service`: the
/// directory and its cgroup.procs and cgroup.threads are theirs.
fn delegate_to_nobody(cg: &TestCgroup) {
    for p in [
        cg.path.clone(),
        cg.path.join("cgroup.procs"),
        cg.path.join("cgroup.threads"),
    ] {
        std::os::unix::fs::chown(&p, Some(65534), Some(65534))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    }
}

/// `status --json`'s entry for the cgroup at `path`.
fn status_of(path: &std::path::Path) -> Option<serde_json::Value> {
    let (_, out, _) = Cmd::bindguard().args(["status", "--json"]).run();
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["cgroup"] == path.display().to_string())
        .cloned()
}

/// As uid 65534 with no capabilities, from `from`: leaves for a new cgroup `to` (mkdir, then
/// its own pid into cgroup.procs), then sends `tok` over TCP with busybox's static nc.
/// Returns the script's output.
fn walk_out_and_send(
    s: &Scenario,
    from: &std::path::Path,
    to: &std::path::Path,
    tok: &str,
) -> String {
    let script = format!(
        "mkdir {to} && echo $$ > {to}/cgroup.procs && echo moved && echo {tok} | /bin/busybox nc -w1 {dest} {PORT}",
        to = to.display(),
        dest = dest(false),
    );
    let (_, out, err) = Cmd::new("sh")
        .args(["-c", &script])
        .in_cgroup_path(from)
        .in_netns(&s.topo.host)
        .as_nobody()
        .run();
    format!("{out}{err}")
}

#[test]
fn a_strict_binding_below_a_delegation_boundary_is_refused_and_the_boundary_holds() {
    root_or_skip!();
    let s = Scenario::new();
    let delegated = s.cg.child("user");
    delegate_to_nobody(&delegated);
    let bound = delegated.child("bound");

    // Strict below the boundary: refused, one line naming the boundary, the uid and the ways
    // out; nothing is made.
    let (code, out, err) = s.attach_to(Cmd::bindguard(), &bound.path, UPLINK_B).run();
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for needle in [
        delegated.path.display().to_string(),
        "uid 65534".into(),
        "--allow-delegated".into(),
    ] {
        assert!(err.contains(&needle), "{needle} not in: {err}");
    }
    assert!(!bound.pins().exists());
    assert!(status_of(&bound.path).is_none());

    // Accepted knowingly: made, and reported by attach, status, verify and doctor...
    let (code, _, err) = s
        .attach_to(Cmd::bindguard(), &bound.path, UPLINK_B)
        .arg("--allow-delegated")
        .run();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("escapable-by-migration (uid 65534 via"),
        "{err}"
    );
    let entry = status_of(&bound.path).expect("binding in status");
    assert_eq!(entry["allow_delegated"], true);
    let problem = entry["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "escapable-by-migration")
        .unwrap_or_else(|| panic!("no escapable-by-migration: {entry}"));
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains(&format!("uid 65534 via {}", delegated.path.display())),
        "{problem}"
    );
    let (_, verify, _) = Cmd::bindguard()
        .arg("verify")
        .arg("--cgroup")
        .arg(&bound.path)
        .run();
    assert!(
        verify.contains("cgroup edge") && verify.contains("escapable-by-migration"),
        "{verify}"
    );
    let (_, doctor, _) = Cmd::bindguard().args(["doctor", "--json"]).run();
    let doctor: serde_json::Value = serde_json::from_str(&doctor).expect("doctor --json");
    assert!(
        doctor["escapable"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["cgroup"] == bound.path.display().to_string() && e["allowed"] == true),
        "{doctor}"
    );
    // ...and the escape is real: this is what the refusal prevents.
    let tok = token("walkout");
    let out = walk_out_and_send(&s, &bound.path, &delegated.path.join("free"), &tok);
    assert!(out.contains("moved"), "{out}");
    assert_eq!(
        s.receivers(&tok),
        vec![Peer::A],
        "the walk-out left by upA: {out}"
    );
    assert_eq!(s.detach_cgroup(&bound.path).0, 0);

    // The first way out the refusal names: bind the boundary. Walking to a new sibling, or
    // being cloned into one, stays inside the binding.
    let (code, _, err) = s
        .attach_to(Cmd::bindguard(), &delegated.path, UPLINK_B)
        .run();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("escapable"), "{err}");
    let tok = token("walkout");
    let out = walk_out_and_send(&s, &bound.path, &delegated.path.join("free2"), &tok);
    assert!(out.contains("moved"), "{out}");
    assert_eq!(s.receivers(&tok), vec![Peer::B], "{out}");
    let into = delegated.path.join("free3");
    let (code, _, err) = Cmd::new("mkdir").arg(&into).as_nobody().run();
    assert_eq!(code, 0, "{err}");
    let tok = token("clone3");
    let (_, out, err) = Cmd::probe()
        .args(["attack", "clone-into", dest(false), &PORT.to_string(), &tok])
        .arg(&into)
        .in_cgroup_path(&bound.path)
        .in_netns(&s.topo.host)
        .as_nobody()
        .run();
    assert!(out.contains("clone3: ok"), "{out}{err}");
    assert_eq!(s.receivers(&tok), vec![Peer::B], "{out}{err}");
    assert_eq!(s.detach_cgroup(&delegated.path).0, 0);
}

#[test]
fn bind_mode_below_a_delegation_boundary_binds_and_warns() {
    root_or_skip!();
    let s = Scenario::new();
    let delegated = s.cg.child("user");
    delegate_to_nobody(&delegated);
    let bound = delegated.child("bound");
    let (code, _, err) = s
        .attach_to(Cmd::bindguard(), &bound.path, UPLINK_B)
        .args(["--mode", "bind"])
        .run();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("escapable-by-migration (uid 65534 via"),
        "{err}"
    );
    assert_eq!(s.detach_cgroup(&bound.path).0, 0);
}

#[test]
fn mode_bits_group_root_and_threads_do_not_hide_a_boundary() {
    root_or_skip!();
    use std::os::unix::fs::PermissionsExt;
    let s = Scenario::new();
    let refused = |cg: &std::path::Path, needle: &str| {
        let (code, out, err) = s.attach_to(Cmd::bindguard(), cg, UPLINK_B).run();
        assert_eq!(code, 2, "{}: {out}{err}", cg.display());
        assert!(err.contains(needle), "{needle} not in: {err}");
    };
    // The owner of cgroup.procs can chmod it back whenever it likes: 0444 hides nothing.
    let owned = s.cg.child("owned");
    delegate_to_nobody(&owned);
    for f in ["cgroup.procs", "cgroup.threads"] {
        std::fs::set_permissions(owned.path.join(f), std::fs::Permissions::from_mode(0o444))
            .unwrap();
    }
    let below = owned.child("bound");
    refused(&below.path, "uid 65534");
    // Group write on a root-owned cgroup.procs: a uid with supplementary group 0 may move.
    let grouped = s.cg.child("grouped");
    std::fs::set_permissions(
        grouped.path.join("cgroup.procs"),
        std::fs::Permissions::from_mode(0o664),
    )
    .unwrap();
    let below2 = grouped.child("bound");
    refused(&below2.path, "group 0");
    // A threaded cgroup: other threads of its processes live in its siblings.
    let domain = s.cg.child("domain");
    let threaded = domain.child("a");
    let _sibling = domain.child("b");
    for t in ["a", "b"] {
        std::fs::write(domain.path.join(t).join("cgroup.type"), "threaded").unwrap();
    }
    refused(&threaded.path, "threads of its processes");
    let (code, _, err) = s.attach_to(Cmd::bindguard(), &domain.path, UPLINK_B).run();
    assert_eq!(code, 0, "the threaded subtree's domain binds: {err}");
    assert_eq!(s.detach_cgroup(&domain.path).0, 0);
}
