//! What a kernel lets strict mode cover, proven on the kernel at hand (the VM matrix boots
//! Debian's 5.10, 6.1 and 6.12 for these): `doctor`, `attach`, `status` and `verify` name the
//! same open rows, and the BPF LSM rows hold where the kernel runs BPF LSM programs — each
//! judged by what peer A's sniffer saw, each shown leaking in bind mode so the test can fail.
//!
//! Whether a kernel must run the BPF LSM programs is not left to the kernel under test to
//! say: in the VM matrix (BINDGUARD_VM names the boot) Debian 12 and 13 with their stock lsm=
//! must, and the others must not; a kernel that quietly lost them fails here.

use std::{collections::BTreeSet, io::BufRead, time::Duration};

use bindguard_tests::{
    Cmd, Peer, Scenario,
    listener::PORT,
    root_or_skip,
    scenario::{mcast_group, token},
    skip,
    topology::{DEST4, UPLINK_A, UPLINK_B},
};

/// Whether the kernel under test must run strict mode's BPF LSM programs.
fn lsm_expected() -> bool {
    match std::env::var("BINDGUARD_VM").as_deref() {
        // arm64's 6.1 loads lsm_cgroup programs but cannot link them (docs/arm64.md).
        Ok("6.1") | Ok("6.12") | Ok("arm64-6.12") => true,
        Ok(other) if !other.is_empty() => false,
        _ => bindguard::kernel::lsm::usable(false),
    }
}

/// Runs the LSM row test `name` when this kernel has the BPF LSM; otherwise says why not.
fn lsm_or_skip(name: &str) -> bool {
    if lsm_expected() {
        return true;
    }
    skip(
        &format!("kernel::{name}"),
        &bindguard::kernel::lsm::state(false).describe(),
    );
    false
}

/// The rows `doctor --json` reports open, and its exit code.
fn doctor() -> (BTreeSet<u64>, i32, String) {
    let (code, out, err) = Cmd::bindguard().args(["doctor", "--json"]).run();
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("doctor --json: {e}: {out}{err}"));
    let open = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["state"] == "open")
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    (open, code, out)
}

#[test]
fn doctor_attach_status_and_verify_agree_on_the_open_rows() {
    root_or_skip!();
    let (open, code, out) = doctor();
    let lsm_rows: BTreeSet<u64> = [7, 12, 14, 20, 21, 26].into();
    // Before 6.7 no kernel has cgroup/connect_unix: row 28 is open with or without the LSM.
    let unix_rows: BTreeSet<u64> = if bindguard_tests::privilege::unix_connect_expected() {
        BTreeSet::new()
    } else {
        [28].into()
    };
    if lsm_expected() {
        assert_eq!(open, unix_rows, "rows open where the BPF LSM runs: {out}");
        assert_eq!(code, i32::from(!open.is_empty()), "{out}");
    } else {
        assert_eq!(open, &lsm_rows | &unix_rows, "{out}");
        assert_eq!(code, 1, "doctor exits 1 when a row is open: {out}");
        // The fix is named: the lsm= parameter, a kernel with lsm_cgroup, or what refused.
        assert!(
            out.contains("lsm=") || out.contains("6.0") || out.contains("refuses"),
            "{out}"
        );
    }
    let (text_code, text, _) = Cmd::bindguard().arg("doctor").run();
    assert_eq!(text_code, code);
    assert_eq!(text.matches("NOT COVERED").count(), open.len(), "{text}");

    let s = Scenario::new();
    let (code, _, err) = s.attach_result(UPLINK_B, &[]);
    assert_eq!(code, 0, "{err}");
    let problems: Vec<String> = s.status_entry().unwrap()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    let (_, verify, _) = Cmd::bindguard()
        .arg("verify")
        .arg("--cgroup")
        .arg(&s.cg.path)
        .run();
    let rows = open
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if open.is_empty() {
        assert!(!err.contains("escape rows"), "{err}");
        assert!(!problems.contains(&"rows-open".to_string()), "{problems:?}");
        assert!(!verify.contains("kernel coverage"), "{verify}");
        assert_eq!(s.status_entry().unwrap()["lsm"], true);
    } else {
        assert!(
            err.contains(&format!("cannot cover escape rows {rows} ")),
            "{err}"
        );
        assert!(problems.contains(&"rows-open".to_string()), "{problems:?}");
        assert!(
            verify.contains("WARN") && verify.contains(&format!("rows {rows} ")),
            "{verify}"
        );
    }
    // Bind mode needs sock_create alone: no warning about rows on any kernel.
    let b = Scenario::new();
    let (code, _, err) = b.attach_result(UPLINK_B, &["--mode", "bind"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("escape rows"), "{err}");
    assert!(
        !b.status_entry().unwrap()["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "rows-open")
    );
}

/// Runs `attack` from the bound cgroup as `who`; returns its output.
fn attack(s: &Scenario, who: &str, args: &[&str]) -> String {
    let cmd = s.probe_bound().arg("attack").args(args);
    let cmd = if who.is_empty() {
        cmd.as_nobody()
    } else {
        cmd.as_nobody_with(who)
    };
    let (_, out, err) = cmd.run();
    format!("{out}{err}")
}

#[test]
fn af_packet_is_refused_with_the_bpf_lsm_and_leaks_without() {
    root_or_skip!();
    if !lsm_or_skip("af_packet_is_refused_with_the_bpf_lsm_and_leaks_without") {
        return;
    }
    for mode in ["strict", "bind"] {
        let s = Scenario::new();
        s.attach(UPLINK_B, &["--mode", mode]);
        let tok = token("packet");
        let a = s.topo.host.ifindex(UPLINK_A).to_string();
        let out = attack(
            &s,
            "net_raw",
            &["packet-send", DEST4, &PORT.to_string(), &tok, &a],
        );
        let at_a = s
            .listener
            .frame_with(Peer::A, &tok, Duration::from_millis(800));
        if mode == "strict" {
            assert!(out.contains("error errno=1"), "strict: {out}");
            assert!(!at_a, "strict: the frame reached peer A: {out}");
            assert!(s.counter("families_refused") >= 1);
        } else {
            assert!(
                at_a,
                "bind mode was expected to let the frame out by upA: {out}"
            );
        }
    }
}

/// A UDP socket made outside the cgroup is handed to a bound process (uid 65534, no
/// capabilities) by `how`; the receiver sends the token through it.
/// Starts `bg-probe attack ARGS` outside the cgroup as uid 65534 and reads the `key=value`
/// fields of its first line; the returned closure gives a field by its `key=`.
fn outside(s: &Scenario, args: &[&str]) -> (std::process::Child, impl Fn(&str) -> String + use<>) {
    let mut child = s
        .probe_unbound()
        .arg("attack")
        .args(args)
        .as_nobody()
        .spawn();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let field = move |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("the outside helper printed no {k}: {line}"))
            .to_string()
    };
    (child, field)
}

fn handed_in(s: &Scenario, how: &str) -> (String, bool) {
    let tok = token(how);
    let port = PORT.to_string();
    let out = if how == "scm" {
        let path = format!("/tmp/bg-scm-{}", bindguard_tests::unique("s"));
        let mut child = s
            .probe_bound()
            .args(["attack", "fd-receive", DEST4, &port, &tok, &path])
            .as_nobody()
            .spawn();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut out = String::new();
        while reader.read_line(&mut out).unwrap_or(0) > 0 && !out.contains("ready") {}
        let _ =
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777));
        let (_, give, _) = s
            .probe_unbound()
            .args(["attack", "fd-give", DEST4, &port, &tok, &path])
            .as_nobody()
            .run();
        let _ = std::io::Read::read_to_string(&mut reader, &mut out);
        let _ = bindguard_tests::run::wait_output(child, Duration::from_secs(10));
        format!("{give}{out}")
    } else {
        let (mut holder, field) = outside(s, &["fd-hold", DEST4, &port, &tok, "10"]);
        let out = attack(
            s,
            "",
            &[
                "pidfd-take",
                DEST4,
                &port,
                &tok,
                &field("pid="),
                &field("fd="),
            ],
        );
        let _ = holder.kill();
        let _ = holder.wait();
        out
    };
    let at_a = s
        .listener
        .frame_with(Peer::A, &tok, Duration::from_millis(800));
    (out, at_a)
}

#[test]
fn sockets_handed_in_from_outside_are_refused_with_the_bpf_lsm() {
    root_or_skip!();
    if !lsm_or_skip("sockets_handed_in_from_outside_are_refused_with_the_bpf_lsm") {
        return;
    }
    // pidfd_getfd asks ptrace_may_access first (row 21's lsm_ptrace refuses it there);
    // with --allow-ptrace-out it is file_receive (row 12) that refuses the socket.
    for how in ["scm", "pidfd"] {
        for mode in ["strict", "strict --allow-ptrace-out", "bind"] {
            let s = Scenario::new();
            let mut args = vec!["--mode"];
            args.extend(mode.split(' '));
            s.attach(UPLINK_B, &args);
            let (out, at_a) = handed_in(&s, how);
            if mode != "bind" {
                assert!(!at_a, "{how} {mode}: reached peer A: {out}");
                let refused = if how == "scm" {
                    out.contains("received: no fd")
                } else {
                    out.contains("pidfd_getfd: error errno=1")
                };
                assert!(refused, "{how} {mode}: not refused on receipt: {out}");
                let counter = if how == "pidfd" && mode == "strict" {
                    "ptrace_refused"
                } else {
                    "fds_refused"
                };
                assert!(s.counter(counter) >= 1, "{how} {mode}: {counter}");
            } else {
                assert!(
                    at_a,
                    "{how} bind: the outside socket was expected to leave by upA: {out}"
                );
            }
        }
    }
}

#[test]
fn a_32_bit_multicast_join_is_refused_with_the_bpf_lsm() {
    root_or_skip!();
    if !lsm_or_skip("a_32_bit_multicast_join_is_refused_with_the_bpf_lsm") {
        return;
    }
    // bg-probe's 32-bit syscall is x86's int 0x80; on arm64 a 32-bit syscall needs an AArch32
    // program (tests/aarch32/compat_join.rs, built by the VM matrix's arm64 boots).
    let aarch32 = std::env::var_os("BG_AARCH32_PROBE");
    if cfg!(not(target_arch = "x86_64")) && aarch32.is_none() {
        return skip(
            "kernel::a_32_bit_multicast_join_is_refused_with_the_bpf_lsm",
            "no AArch32 client (BG_AARCH32_PROBE, set by the VM matrix's arm64 boots)",
        );
    }
    for (i, mode) in ["strict", "bind"].into_iter().enumerate() {
        let s = Scenario::new();
        s.attach(UPLINK_B, &["--mode", mode]);
        let g = mcast_group(78, false, 200 + i as u32);
        let a = s.topo.host.ifindex(UPLINK_A).to_string();
        let args = ["compat-join", &g.to_string(), &PORT.to_string(), "x", &a];
        let out = match (cfg!(target_arch = "x86_64"), &aarch32) {
            (false, Some(client)) => {
                let (_, out, err) = Cmd::new(client)
                    .in_cgroup(&s.cg)
                    .in_netns(&s.topo.host)
                    .arg("attack")
                    .args(args)
                    .as_nobody()
                    .run();
                format!("{out}{err}")
            }
            _ => attack(&s, "", &args),
        };
        let at_a = s.listener.report_for(Peer::A, g, Duration::from_secs(2));
        if mode == "strict" {
            assert!(out.contains("join: error errno=1"), "strict: {out}");
            assert!(!at_a, "strict: a report for {g} reached peer A: {out}");
        } else {
            assert!(
                at_a,
                "bind: the 32-bit join was expected to report by upA: {out}"
            );
        }
    }
}

/// A `/dev/net/tun` node uid 65534 may open, as Debian, Fedora and Ubuntu make theirs (0666);
/// made in a scratch directory so the machine's own node stays as it is. The tun driver is
/// loaded first (a module on Debian's kernels; devtmpfs has no node until it is).
fn tun_node() -> (bindguard_tests::dist::ScratchDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(modprobe) = std::fs::read_to_string("/proc/sys/kernel/modprobe") {
        let _ = std::process::Command::new(modprobe.trim())
            .arg("tun")
            .status();
    }
    let dir = bindguard_tests::dist::ScratchDir::new("tun");
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = dir.path.join("tun");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(10, 200),
    )
    .expect("mknod tun");
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666)).unwrap();
    (dir, node)
}

#[test]
fn a_tun_device_of_the_workloads_user_is_refused_with_the_bpf_lsm() {
    root_or_skip!();
    if !lsm_or_skip("a_tun_device_of_the_workloads_user_is_refused_with_the_bpf_lsm") {
        return;
    }
    let (_dir, node) = tun_node();
    let node = node.display().to_string();
    for mode in ["strict", "strict --allow-tun", "bind"] {
        let s = Scenario::new();
        let mut args = vec!["--mode"];
        args.extend(mode.split(' '));
        s.attach(UPLINK_B, &args);
        // A persistent device the workload's user owns, on a host that forwards (a router,
        // an appliance), as OpenVPN, wireguard-go and tun2socks are run without root.
        s.topo.host.ip(&[
            "tuntap", "add", "dev", "bgtun", "mode", "tun", "user", "65534",
        ]);
        s.topo.host.ip(&["link", "set", "bgtun", "up"]);
        s.topo.host.sysctl("net.ipv4.ip_forward", "1");
        s.topo.host.sysctl("net.ipv4.conf.bgtun.rp_filter", "0");
        let tok = token("tun");
        let out = attack(
            &s,
            "",
            &["tun-inject", DEST4, &PORT.to_string(), &tok, &node, "bgtun"],
        );
        let at_a = s
            .listener
            .wait_for(&tok, Duration::from_secs(2))
            .contains(&Peer::A);
        if mode == "strict" {
            assert!(out.contains("TUNSETIFF: error errno=1"), "{mode}: {out}");
            assert!(!at_a, "{mode}: the injected packet reached peer A: {out}");
            assert!(s.counter("devices_refused") >= 1);
        } else {
            assert!(
                at_a,
                "{mode}: the injected packet was expected to be forwarded by upA: {out}"
            );
        }
    }
}

#[test]
fn driving_a_process_outside_the_binding_is_refused_with_the_bpf_lsm() {
    root_or_skip!();
    if !lsm_or_skip("driving_a_process_outside_the_binding_is_refused_with_the_bpf_lsm") {
        return;
    }
    for mode in ["strict", "bind"] {
        let s = Scenario::new();
        s.attach(UPLINK_B, &["--mode", mode]);
        for how in ["ptrace", "vm-write", "proc-mem", "proc-fd"] {
            let tok = token("drive");
            let port = PORT.to_string();
            // A process of the same uid outside the cgroup (the user's shell, agent, ...),
            // traceable as under kernel.yama.ptrace_scope = 0.
            let (mut puppet, field) = outside(&s, &["puppet", DEST4, &port, &tok, "10"]);
            let out = attack(
                &s,
                "",
                &[
                    "drive",
                    DEST4,
                    &port,
                    &tok,
                    &field("pid="),
                    &field("flag="),
                    how,
                    &field("wfd="),
                ],
            );
            let at_a = s
                .listener
                .wait_for(&tok, Duration::from_secs(2))
                .contains(&Peer::A);
            let _ = puppet.kill();
            let _ = puppet.wait();
            if mode == "strict" {
                assert!(out.contains("error errno=1"), "{how}: {out}");
                assert!(!at_a, "{how}: the driven process sent by upA: {out}");
            } else {
                assert!(
                    at_a,
                    "{how} bind: the driven process was expected to send by upA: {out}"
                );
            }
        }
        if mode == "strict" {
            assert!(s.counter("ptrace_refused") >= 4);
        }
    }
}

/// Sets dev.tty.legacy_tiocsti (6.2+) for the TIOCSTI test and puts it back: with it 0 the
/// kernel itself refuses TIOCSTI to everyone but CAP_SYS_ADMIN, and bind mode could not show
/// the leak.
struct LegacyTiocsti(Option<String>);

impl LegacyTiocsti {
    const PATH: &str = "/proc/sys/dev/tty/legacy_tiocsti";
    fn on() -> Self {
        let old = std::fs::read_to_string(Self::PATH).ok();
        if old.is_some() {
            std::fs::write(Self::PATH, "1").expect("enable legacy_tiocsti");
        }
        Self(old)
    }
}

impl Drop for LegacyTiocsti {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(Self::PATH, v.trim());
        }
    }
}

#[test]
fn typing_into_a_shell_outside_the_binding_is_refused_with_the_bpf_lsm() {
    root_or_skip!();
    if !lsm_or_skip("typing_into_a_shell_outside_the_binding_is_refused_with_the_bpf_lsm") {
        return;
    }
    let _tiocsti = LegacyTiocsti::on();
    for mode in ["strict", "bind"] {
        let s = Scenario::new();
        s.attach(UPLINK_B, &["--mode", mode]);
        // A terminal whose reader is a shell outside the binding (the one `bindguard exec`
        // was typed into), and a bound process with the same terminal as its controlling tty.
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        std::os::unix::fs::chown(
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&slave)
            ))
            .unwrap(),
            Some(65534),
            None,
        )
        .unwrap();
        // (as_nobody first: it rebuilds the command, and stdin with it)
        let mut shell = Cmd::new("sh")
            .in_netns(&s.topo.host)
            .as_nobody()
            .stdin_file(slave.try_clone().unwrap())
            .spawn();
        let tok = token("tiocsti");
        let (_, out, err) = Cmd::new("setsid")
            .arg("-c")
            .arg(bindguard_tests::run::probe_bin())
            .args(["attack", "tiocsti", DEST4, &PORT.to_string(), &tok])
            .in_cgroup(&s.cg)
            .in_netns(&s.topo.host)
            .as_nobody()
            .stdin_file(slave)
            .run();
        let at_a = s
            .listener
            .wait_for(&tok, Duration::from_secs(3))
            .contains(&Peer::A);
        let _ = shell.kill();
        let _ = shell.wait();
        drop(pty.master);
        if mode == "strict" {
            assert!(out.contains("TIOCSTI: error errno=1"), "{out}{err}");
            assert!(
                !at_a,
                "the typed command ran outside and sent by upA: {out}{err}"
            );
        } else {
            assert!(
                at_a,
                "bind: the typed command was expected to send by upA: {out}{err}"
            );
        }
    }
}
