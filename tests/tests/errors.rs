//! Bad input and refused operations: one line naming the problem, exit 2 (input) or 1
//! (operation), and nothing changed — no pins, no program on the cgroup, the old policy kept.

use bindguard_tests::{
    Cmd, Scenario, TestCgroup, root_or_skip,
    scenario::attached_programs,
    topology::{NetnsGuard, UPLINK_A, UPLINK_B},
};

/// Runs bindguard with `args`; asserts the exit code, a single stderr line containing
/// `needle`, and that `cg` has neither pins nor programs afterwards.
fn refused(cg: &TestCgroup, cmd: Cmd, code: i32, needle: &str) {
    let (got, out, err) = cmd.run();
    assert_eq!(got, code, "exit code; stdout={out} stderr={err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(needle),
        "stderr names the problem ({needle}): {err}"
    );
    assert!(
        !cg.pins().exists(),
        "no pins were left for {}",
        cg.path.display()
    );
    assert!(
        !attached_programs(&cg.path).contains("sock_create"),
        "no program attached"
    );
}

fn attach(cg: &std::path::Path, args: &[&str]) -> Cmd {
    Cmd::bindguard()
        .args(["attach", "--cgroup"])
        .arg(cg)
        .args(args)
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    root_or_skip!();
    let cg = TestCgroup::new();
    let ns = NetnsGuard::new("bge");
    let netns = ns.path();
    let netns = netns.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--dev", "nosuch0", "--netns", netns],
            "no interface named 'nosuch0'",
        ),
        (&["--dev", "sixteen-bytes-xx"], "at most 15 bytes"),
        (&["--dev", "a/b"], "is invalid"),
        (&["--dev", "lo", "--mark", "abc"], "--mark"),
        (&["--dev", "lo", "--mark", "4294967296"], "--mark"),
        (&["--dev", "lo", "--priority", "-1"], "--priority"),
        (&["--dev", "lo", "--mode", "loose"], "--mode"),
        (
            &["--dev", "lo", "--netns", "/etc/hostname"],
            "is not a network namespace",
        ),
        (
            &["--dev", "lo", "--netns", "/proc/self/ns/mnt"],
            "is not a network namespace",
        ),
        (
            &["--dev", "lo", "--netns", "/nonexistent/ns"],
            "is not a network namespace",
        ),
        (&["--cgroup-typo", "x"], "--cgroup-typo"),
    ];
    for (args, needle) in cases {
        refused(&cg, attach(&cg.path, args), 2, needle);
    }
}

#[test]
fn bad_cgroups_exit_2() {
    root_or_skip!();
    let cg = TestCgroup::new();
    let missing = cg.path.join("does-not-exist");
    refused(&cg, attach(&missing, &["--dev", "lo"]), 2, "does not exist");
    refused(
        &cg,
        attach("/etc".as_ref(), &["--dev", "lo"]),
        2,
        "is not on a cgroup2 mount",
    );
    let file = cg.path.join("cgroup.procs");
    refused(
        &cg,
        attach(&file, &["--dev", "lo"]),
        2,
        "is not a directory",
    );
    refused(&cg, attach("../x".as_ref(), &["--dev", "lo"]), 2, "'..'");
    // A cgroup v1 hierarchy, where the host has one (hybrid layout).
    if let Some(v1) = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_dir())
        .filter(|p| {
            !bindguard::binding::cgroup::cgroup2_mount()
                .unwrap()
                .starts_with(p)
        })
    {
        refused(&cg, attach(v1.as_ref(), &["--dev", "lo"]), 2, "cgroup v1");
    }
    let (code, _, err) = Cmd::bindguard()
        .args(["detach", "--cgroup"])
        .arg(&cg.path)
        .run();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has no bindguard binding"), "{err}");
}

#[test]
fn unprivileged_user_is_told_the_capability() {
    root_or_skip!();
    let cg = TestCgroup::new();
    refused(
        &cg,
        attach(&cg.path, &["--dev", "lo"]).as_nobody(),
        1,
        "CAP_BPF",
    );
    // status is read-only and works for anyone, reporting what it may see — and saying that
    // the bindings are hidden from it (the pins root is root-only), so "no bindings" is not
    // taken at face value. The binding made here is one it cannot see.
    let (code, _, err) = Cmd::bindguard()
        .args(["attach", "--dev", "lo", "--allow-loopback", "--cgroup"])
        .arg(&cg.path)
        .run();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = Cmd::bindguard().arg("status").as_nobody().run();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("bindings are not shown; run status as root"),
        "{err}"
    );
}

#[test]
fn bpffs_that_cannot_be_mounted_is_an_operational_error() {
    root_or_skip!();
    let cg = TestCgroup::new();
    // In a private mount namespace without bpffs at /sys/fs/bpf, and without CAP_SYS_ADMIN
    // (still CAP_BPF + CAP_NET_ADMIN), the mount fails.
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; mount -t tmpfs none /sys/fs/bpf && \
         exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin {} attach --cgroup {} --dev lo",
        bindguard_tests::bindguard_bin().display(),
        cg.path.display()
    );
    let cmd =
        Cmd::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    refused(&cg, cmd, 1, "bpffs is not mounted at /sys/fs/bpf");
}

#[test]
fn failed_reattach_keeps_the_old_binding() {
    root_or_skip!();
    let s = Scenario::new();
    s.attach(UPLINK_B, &[]);
    let before = s.status_entry_links().unwrap();
    for (dev, needle) in [
        ("nosuch0", "no interface"),
        ("sixteen-bytes-xx", "15 bytes"),
    ] {
        let (code, _, err) = s.attach_result(dev, &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    let (code, _, err) = s.attach_result(UPLINK_A, &["--mark", "nope"]);
    assert_eq!(code, 2, "{err}");
    let after = s.status_entry_links().unwrap();
    assert_eq!(before["ifindex"], after["ifindex"]);
    assert_eq!(before["links"], after["links"], "same link and program");
    assert_eq!(
        s.delivered_to(s.probe_bound(), bindguard_tests::Proto::Udp, false),
        [bindguard_tests::Peer::B]
    );
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = Cmd::bindguard().args(["completions", shell]).run();
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("attach") && out.contains("verify"), "{shell}");
    }
    let (code, out, _) = Cmd::bindguard().arg("manpage").run();
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") && out.contains(".TH bindguard 1"),
        "{out}"
    );
    let (code, _, err) = Cmd::bindguard().args(["completions", "tcsh"]).run();
    assert_eq!(code, 2, "{err}");
}
