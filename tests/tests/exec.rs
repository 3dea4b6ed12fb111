//! `bindguard exec`: one command bound, its status and signals passed through, nothing left.

use std::{path::PathBuf, time::Duration};

use bindguard_tests::{
    Cmd, Peer, Scenario,
    listener::PORT,
    root_or_skip,
    run::wait_output,
    scenario::{busybox_client, token},
    topology::{DEST4, UPLINK_B},
};
use nix::{sys::signal::Signal, unistd::Pid};

fn exec(s: &Scenario, command: &[&str]) -> Cmd {
    Cmd::bindguard()
        .default_signals()
        .args(["exec", "--dev", UPLINK_B, "--netns"])
        .arg(s.topo.host.path())
        .arg("--")
        .args(command)
}

/// The transient cgroup of the `bindguard exec` with this pid.
fn transient(pid: u32) -> PathBuf {
    bindguard::binding::cgroup::cgroup2_mount()
        .unwrap()
        .join(format!("bindguard-exec-{pid}"))
}

/// Waits until the transient cgroup of `bindguard exec` (pid `pid`) holds at least `procs`
/// processes; returns the cgroup and the command (bindguard's direct child).
fn wait_started(pid: u32, procs: usize) -> (PathBuf, i32) {
    let cg = transient(pid);
    for _ in 0..1000 {
        let members = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let command = children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok());
        if let Some(command) = command
            && members.lines().count() >= procs
        {
            return (cg, command);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{} never got {procs} process(es)", cg.display());
}

fn assert_cleaned(cg: &std::path::Path, id_hint: Option<u64>) {
    assert!(!cg.exists(), "{} left behind", cg.display());
    if let Some(id) = id_hint {
        assert!(
            !bindguard::kernel::pins::binding_dir(id).exists(),
            "pins left behind"
        );
    }
}

#[test]
fn exec_binds_a_static_client_and_cleans_up() {
    root_or_skip!();
    let s = Scenario::new();
    for (v6, udp) in [(false, false), (true, false), (false, true), (true, true)] {
        let tok = token("exec");
        let argv = busybox_client(&tok, udp, v6);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cmd = exec(&s, &argv);
        let child = cmd.spawn();
        let pid = child.id();
        assert_eq!(s.receivers(&tok), [Peer::B], "v6={v6} udp={udp}");
        // busybox tftp waits for an answer that never comes; stop it like a user would.
        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        wait_output(child, Duration::from_secs(10)).expect("exec ended");
        assert_cleaned(&transient(pid), None);
    }
}

#[test]
fn exec_exits_with_the_command_status() {
    root_or_skip!();
    let s = Scenario::new();
    for (script, want) in [("exit 0", 0), ("exit 7", 7), ("kill -9 $$", 137)] {
        let (code, out, err) = exec(&s, &["sh", "-c", script]).run();
        assert_eq!(code, want, "{script}: {out}{err}");
    }
    let (code, _, err) = exec(&s, &["/nonexistent/cmd"]).run();
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("command not found"), "{err}");
    let (code, _, err) = Cmd::bindguard()
        .args(["exec", "--dev", "nosuch0", "--", "true"])
        .run();
    assert_eq!(code, 2, "{err}");
}

#[test]
fn exec_forwards_signals_and_cleans_up() {
    root_or_skip!();
    let s = Scenario::new();
    // SIGTERM to bindguard reaches the command, which reports it by its exit status.
    let child = exec(&s, &["sh", "-c", "trap 'exit 3' TERM; sleep 30 & wait"]).spawn();
    let pid = child.id();
    // Two processes (sh and its background sleep): the trap is installed by then.
    let (cg, _) = wait_started(pid, 2);
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg).unwrap());
    assert!(
        bindguard::kernel::pins::binding_dir(id).exists(),
        "bound while running"
    );
    nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let out = wait_output(child, Duration::from_secs(10)).expect("exec ended");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_cleaned(&cg, Some(id));

    // SIGINT sent to bindguard: the command dies of it, bindguard reports 130.
    let child = exec(&s, &["sleep", "30"]).spawn();
    let pid = child.id();
    let (cg, _) = wait_started(pid, 1);
    nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let out = wait_output(child, Duration::from_secs(10)).expect("exec ended");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_cleaned(&cg, None);
}

#[test]
fn exec_cleans_up_after_sigkill_of_the_command() {
    root_or_skip!();
    let s = Scenario::new();
    // The command leaves a background process in the cgroup; it goes too.
    let child = exec(&s, &["sh", "-c", "sleep 60 & exec sleep 60"]).spawn();
    let pid = child.id();
    let (cg, command) = wait_started(pid, 2);
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cg).unwrap());
    nix::sys::signal::kill(Pid::from_raw(command), Signal::SIGKILL).unwrap();
    let out = wait_output(child, Duration::from_secs(10)).expect("exec ended");
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    assert_cleaned(&cg, Some(id));
}

/// The command exits and leaves a background child (uid 65534) that keeps sending: exec kills
/// it and waits for the cgroup to empty before it removes the binding, so none of the child's
/// datagrams leaves by upA. exec used to unpin first, and 1–34 datagrams of the child reached
/// peer A in 6 of 12 rounds (issue #17).
#[test]
fn exec_kills_what_the_command_left_behind_before_it_unbinds() {
    root_or_skip!();
    let s = Scenario::new();
    let probe = bindguard_tests::probe_bin();
    // A new socket per datagram: a socket made while the binding was still there stays bound.
    let script = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
         sh -c '{} attack send-loop {DEST4} {PORT} exec-left 30 >/dev/null 2>&1 & sleep 0.3'",
        probe.display()
    );
    for round in 0..6 {
        let (a, b) = (s.listener.packets(Peer::A), s.listener.packets(Peer::B));
        let (code, out, err) = exec(&s, &["sh", "-c", &script]).run();
        assert_eq!(code, 0, "round {round}: {out}{err}");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            s.listener.packets(Peer::A),
            a,
            "round {round}: the left-behind child's datagrams reached peer A"
        );
        assert!(
            s.listener.packets(Peer::B) > b,
            "round {round}: the child never sent"
        );
    }
    // Control: the same sender outside the binding follows the routing table to A.
    let a = s.listener.packets(Peer::A);
    let (_, out, _) = s
        .probe_unbound()
        .args(["send", "udp", DEST4, &PORT.to_string(), "exec-left"])
        .run();
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.listener.packets(Peer::A) > a, "control: {out}");
}

/// A stop request that keeps coming (a supervisor's SIGTERM, repeated) also reaches bindguard
/// while it tears down, after the command ended: it finishes the teardown (kill, unbind,
/// remove the cgroup) and exits with the command's status. Signals were unblocked before the
/// teardown, and a SIGTERM then killed bindguard with its transient cgroup left behind (seen on
/// 6.1/6.12 under emulation, where the window is long).
#[test]
fn exec_finishes_its_teardown_under_repeated_sigterm() {
    root_or_skip!();
    let s = Scenario::new();
    for _ in 0..5 {
        let child = exec(&s, &["sh", "-c", "sleep 30 & sleep 30 & wait"]).spawn();
        let pid = child.id();
        let (cg, _) = wait_started(pid, 3);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Through a pidfd: once bindguard is reaped its pid may name another test's process.
        // SAFETY: pidfd_open of our own child, which is not reaped before the thread stops.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        assert!(pidfd >= 0, "pidfd_open");
        let spam = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // SAFETY: pidfd_send_signal on a pidfd this test owns; no siginfo.
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && unsafe {
                        libc::syscall(
                            libc::SYS_pidfd_send_signal,
                            pidfd,
                            libc::SIGTERM,
                            std::ptr::null::<libc::siginfo_t>(),
                            0,
                        )
                    } == 0
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let out = wait_output(child, Duration::from_secs(20)).expect("exec ended");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spam.join().unwrap();
        // SAFETY: the pidfd is ours and no longer used.
        unsafe { libc::close(pidfd) };
        assert!(
            matches!(out.status.code(), Some(137 | 143)),
            "bindguard exits with the command's status, not by the signal: {out:?}"
        );
        assert_cleaned(&cg, None);
    }
}
