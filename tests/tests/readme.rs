//! The README's quick start, run as written: its block is typed into a shell (one line at a
//! time, as a reader pastes it), on this machine's cgroup layout (hybrid here: cgroup2 at
//! /sys/fs/cgroup/unified). Only what the README tells the reader to change is changed: the
//! interface (`eth0`), and the cgroup's name so that parallel runs do not meet.

use std::{io::Write as _, path::PathBuf, time::Duration};

use bindguard_tests::{
    Cmd, Peer, Scenario,
    listener::PORT,
    root_or_skip,
    run::wait_output,
    scenario::{dest, token},
    topology::UPLINK_B,
};

/// The first ```sh block after `## Quick start`.
fn quick_start() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let section = readme
        .split_once("\n## Quick start\n")
        .expect("README has a Quick start section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the quick start has a sh block")
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

/// Removes the quick start's cgroup (and its binding) if the block did not get that far.
struct Leftover(PathBuf);

impl Drop for Leftover {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = Cmd::bindguard()
                .arg("detach")
                .arg("--cgroup")
                .arg(&self.0)
                .output();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
}

#[test]
fn quick_start_runs_as_written() {
    root_or_skip!();
    let s = Scenario::new();
    let name = bindguard_tests::unique("bgqs");
    let block = quick_start();
    assert!(
        block.contains("/demo") && block.contains("eth0"),
        "the quick start changed: {block}"
    );
    let block = block
        .replace("/demo", &format!("/{name}"))
        .replace("eth0", UPLINK_B);
    let mount = bindguard::binding::cgroup::cgroup2_mount().expect("a cgroup2 mount");
    let _leftover = Leftover(mount.join(&name));

    // What the reader types in the shell the block opens inside the cgroup, before `exit`.
    let tok = token("quickstart");
    let typed = format!("echo {tok} | /bin/busybox nc -w1 {} {PORT}\n", dest(false));
    let (before, after) = block
        .split_once("\nexit ")
        .expect("the block leaves its inner shell with exit");
    let input = format!("{before}\n{typed}exit {after}");

    let bin_dir = bindguard_tests::bindguard_bin()
        .parent()
        .expect("bindguard's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `bash -s -e`: read from stdin a line at a time, as typed; the first failing command ends it.
    let mut child = Cmd::new("bash")
        .args(["-s", "-e"])
        .env("PATH", &path)
        .in_netns(&s.topo.host)
        .spawn_with_stdin();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60)).expect("the quick start finished");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{input}\n---\n{stdout}{stderr}");
    for expected in [
        format!("bound cgroup {}", mount.join(&name).display()),
        "verified in".to_string(),
        format!("detached {}", mount.join(&name).display()),
    ] {
        assert!(
            stdout.contains(&expected) || stderr.contains(&expected),
            "the quick start's comments promise `{expected}`:\n{stdout}{stderr}"
        );
    }
    assert_eq!(
        s.receivers(&tok),
        [Peer::B],
        "the shell in the cgroup left by the interface"
    );
    assert!(!mount.join(&name).exists(), "the block removed its cgroup");
}
