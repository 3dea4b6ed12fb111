//! Upgrades between bindguard builds (issue 11): a binding made by one build is moved to another
//! build's program set make-before-break, with no socket left unbound, and the set nobody uses
//! any more is removed.
//!
//! The other build is real: bindguard built with BINDGUARD_EBPF_VARIANT=1 into its own target
//! directory (`cargo xtask test` builds it), whose eBPF object has one more global, so its
//! object hash and its programs differ.

use std::{path::PathBuf, time::Duration};

use bindguard_tests::{
    Cmd, Peer, Scenario, root_or_skip,
    topology::{UPLINK_A, UPLINK_B},
};

/// The tests of this file move bindings between the two builds' sets and unpin unused ones:
/// one at a time.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The program set directory a cgroup's binding is recorded in (its `users/<id>` entry).
fn set_of(cgroup_id: u64) -> Option<PathBuf> {
    bindguard::kernel::progset::list()
        .into_iter()
        .find(|d| d.join("users").join(cgroup_id.to_string()).exists())
}

fn attach_with(bin: &PathBuf, s: &Scenario, dev: &str) -> String {
    let (code, out, err) = s.attach_to(Cmd::new(bin), &s.cg.path, dev).run();
    assert_eq!(code, 0, "{} attach: {out}{err}", bin.display());
    out
}

#[test]
fn an_upgrade_moves_the_binding_without_an_unbound_socket_and_drops_the_old_set() {
    root_or_skip!();
    let _one = one_at_a_time();
    let Some(variant) = bindguard_tests::run::variant_bin() else {
        return;
    };
    let current = bindguard_tests::bindguard_bin();
    let s = Scenario::new();
    // Bound by the "old" build.
    attach_with(&variant, &s, UPLINK_B);
    let old_set = set_of(s.cg.id).expect("the variant's set records the binding");
    let current_name =
        bindguard::kernel::progset::dir_name(bindguard::kernel::hooks::object_hash());
    assert_ne!(
        old_set.file_name().unwrap().to_string_lossy(),
        current_name,
        "the variant build must have another object"
    );
    let kinds = |s: &Scenario| s.problems();
    assert_eq!(kinds(&s), ["programs-outdated"]);

    // Sockets are made in a tight loop while the binding moves between the two builds' sets
    // (each move loads the target build's set again when the previous move removed it) and
    // between the two uplinks.
    // Four moves, however long they take (each loads a set: seconds on a loaded machine);
    // the loop runs until they are done.
    let stop = std::env::temp_dir().join(bindguard_tests::unique("bgs"));
    let loop_child = s.probe_bound().args(["loop-until"]).arg(&stop).spawn();
    let moves = 4;
    for m in 0..moves {
        let (bin, dev) = if m % 2 == 0 {
            (&current, UPLINK_A)
        } else {
            (&variant, UPLINK_B)
        };
        let out = attach_with(bin, &s, dev);
        assert!(out.contains("programs replaced"), "{out}");
    }
    std::fs::write(&stop, "").unwrap();
    let out = bindguard_tests::run::wait_output(loop_child, Duration::from_secs(10)).unwrap();
    let _ = std::fs::remove_file(&stop);
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("unbound=0 errors=0"), "{out}");
    eprintln!("{moves} moves between builds during the loop: {out}");

    // End on the current build: the variant's set is gone, the binding is healthy and enforces.
    attach_with(&current, &s, UPLINK_B);
    let variant_sets: Vec<PathBuf> = bindguard::kernel::progset::list()
        .into_iter()
        .filter(|d| *d == old_set)
        .collect();
    assert!(
        variant_sets.is_empty(),
        "the old set is still pinned: {variant_sets:?}"
    );
    assert_eq!(
        set_of(s.cg.id).map(|d| d.file_name().unwrap().to_string_lossy().into_owned()),
        Some(current_name)
    );
    assert_eq!(kinds(&s), Vec::<String>::new());
    assert_eq!(
        s.delivered_to(s.probe_bound(), bindguard_tests::Proto::Udp, false),
        [Peer::B]
    );
    // The kernel releases unpinned links from a workqueue, which lags under load.
    // Strict mode's programs without the BPF LSM ones (this host's kernel refuses those).
    let want = bindguard_tests::privilege::strict_programs_without_lsm();
    let count = bindguard_tests::scenario::settled_program_count(&s.cg.path, want);
    let attached = bindguard_tests::scenario::attached_programs(&s.cg.path);
    assert_eq!(
        count, want,
        "one program per hook, no leftovers: {attached}"
    );
}

/// A running `BIN daemon --config CONFIG`, its output in `log`; killed on drop.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn start(bin: &PathBuf, config: &std::path::Path, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(bin)
            .arg("daemon")
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let d = Self { child, log };
        let start = std::time::Instant::now();
        while !d.log().contains("ready:") {
            assert!(start.elapsed() < Duration::from_secs(30), "{}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The eBPF object hash `bin --version` names.
fn ebpf_hash(bin: &PathBuf) -> u64 {
    let (_, out, _) = Cmd::new(bin).arg("--version").run();
    // "... (commit C, ebpf HASH, ARCH)": the hex digits right after "ebpf ".
    let hex: String = out
        .split("ebpf ")
        .nth(1)
        .unwrap_or_else(|| panic!("no ebpf hash in {out}"))
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Issue 17, item 8: two daemons of different builds with one config (an upgrade overlap) used
/// to replace each other's programs forever (141 replaces each in 8 s). The newer build wins
/// — by version, then commit time, then object hash, recorded in each program set — and the
/// older one leaves the binding to it, saying so once.
#[test]
fn two_daemons_of_different_builds_converge_on_the_newer_one() {
    root_or_skip!();
    let _one = one_at_a_time();
    let Some(variant) = bindguard_tests::run::variant_bin() else {
        return;
    };
    let current = bindguard_tests::bindguard_bin();
    let s = Scenario::new();
    let dir = std::env::temp_dir().join(bindguard_tests::unique("bgfu"));
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
    // The variant build ranks as one second older than its commit (build.rs), so it is the
    // older build. It starts first and binds; the newer one then moves the binding to its
    // programs, once.
    let ((old_bin, old_name), (new_bin, new_name), new_hash) = (
        (&variant, "variant"),
        (&current, "current"),
        ebpf_hash(&current),
    );
    let loser = Daemon::start(old_bin, &conf, dir.join(format!("{old_name}.log")));
    let winner = Daemon::start(new_bin, &conf, dir.join(format!("{new_name}.log")));
    std::thread::sleep(Duration::from_secs(3));
    let replaces = |d: &Daemon| d.log().matches("~ replace").count();
    let settled = (replaces(&loser), replaces(&winner));
    std::thread::sleep(Duration::from_secs(2));
    let logs = format!(
        "older ({old_name}):\n{}\nnewer ({new_name}):\n{}",
        loser.log(),
        winner.log()
    );
    assert_eq!(
        (replaces(&loser), replaces(&winner)),
        settled,
        "still replacing each other:\n{logs}"
    );
    eprintln!("replaces (older, newer) after 3 s: {settled:?}, and none in the next 2 s");
    assert_eq!(settled, (0, 1), "{logs}");
    assert_eq!(
        loser.log().matches("leaves it to that one").count(),
        1,
        "the older build says once that it leaves the binding:\n{logs}"
    );
    assert_eq!(
        set_of(s.cg.id).map(|d| d.file_name().unwrap().to_string_lossy().into_owned()),
        Some(bindguard::kernel::progset::dir_name(new_hash)),
        "{logs}"
    );
    assert_eq!(
        s.delivered_to(s.probe_bound(), bindguard_tests::Proto::Udp, false),
        [Peer::B]
    );
    drop((loser, winner));
    let _ = std::fs::remove_dir_all(&dir);
}
