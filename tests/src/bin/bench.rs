//! bg-bench (run by `cargo xtask bench`): what bindguard costs, measured against the classic
//! approaches in one run. Every comparison is interleaved (each round runs every variant once,
//! in a rotating order) and reported as median (p25–p75) with ratios. Results go to stdout and
//! between the markers of BENCHMARKS.md.
//!
//!   bg-bench [--quick] [--no-write]
//!            [--phases socket,send,guards,runtime,latency,scale,daemon,daemon-scale,nri,dns,
//!                      exec,nri-sync,metrics]
//!            [--scale N] [--daemon-only] [--daemon-scale-only] [--daemon-scale N,N,...]
//!
//! Phases run in that order; `--phases` picks some (BENCHMARKS.md is only rewritten when all
//! ran). `--scale N` sets how many bindings the scale phase makes (default 10,000; 50 with
//! --quick); kernel memory is sampled at 1,000 and at N. `--daemon-only` is `--phases daemon`
//! (interface re-creation latency, RSS, idle wake-ups). `nri` times what `bindguard nri` adds
//! to a container's CreateContainer and StartContainer on a real containerd 2.x. `metrics`
//! times a Prometheus scrape of the daemon over 1,000 strict bindings (`--metrics-bindings N`)
//! under a refusal loop, and checks that scrapes change no kernel counter. `nri-sync` times the
//! plugin's slowest handler, Synchronize, against containerd's 2 s request budget: 100
//! annotated pods started while no plugin runs, then the plugin connects (100 binds), then
//! containerd restarts under it (100 bindings found in place).
//!
//! Every namespace, cgroup and directory it makes starts with $BINDGUARD_TEST_PREFIX (two
//! letters, default `bg`).
//!
//! The daemon-scale phase (`--daemon-scale-only`, also part of a full run) starts the daemon
//! over 100, 1,000 and 10,000 strict bindings on one interface (`--daemon-scale` picks other
//! counts) under a soft RLIMIT_NOFILE of 1,024 and measures start to ready, deletion → every
//! binding closed and creation → every binding re-targeted over repeated flaps, RSS, idle
//! wake-ups and `apply` (plan and no-op); it has its own block in BENCHMARKS.md
//! (`bench:daemon-scale` markers), rewritten whenever the phase ran.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use bindguard_tests::{
    Cmd, Scenario, TestCgroup,
    topology::{PEER_B4, UPLINK_A, UPLINK_B},
};

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
const DS_BEGIN: &str = "<!-- bench:daemon-scale:begin -->";
const DS_END: &str = "<!-- bench:daemon-scale:end -->";

/// Replaces the text between `begin` and `end` in BENCHMARKS.md (appending the block when the
/// markers are missing).
fn write_block(begin: &str, end: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let old = fs::read_to_string(&path).unwrap_or_default();
    let block = format!("{begin}\n{text}{end}");
    let new = match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{old}\n{block}\n"),
    };
    fs::write(&path, new).expect("write BENCHMARKS.md");
    println!("updated {}", path.canonicalize().unwrap().display());
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    p25: f64,
    p75: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    assert!(!v.is_empty());
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p25: at(0.25),
        p75: at(0.75),
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prec = if self.median >= 100.0 { 0 } else { 1 };
        write!(
            f,
            "{:.prec$} ({:.prec$}–{:.prec$})",
            self.median, self.p25, self.p75
        )
    }
}

/// Runs a probe and parses the single number it prints.
fn measure(cmd: Cmd) -> f64 {
    let (code, out, err) = cmd.run();
    assert_eq!(code, 0, "probe failed: {out}{err}");
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {out}"))
}

/// Times a whole command (wall clock, ms); it must succeed.
/// Wall-clock ms of one whole bindguard process, spawned as a shell would (output to
/// /dev/null, no pipes to drain). A failure panics with the command and its exit status.
fn timed(cmd: Cmd) -> f64 {
    let what = cmd.describe();
    let mut err = tempfile();
    let start = Instant::now();
    let status = cmd.status_quiet(err.try_clone().expect("dup stderr file"));
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !status.success() {
        let mut text = String::new();
        let _ = std::io::Seek::rewind(&mut err);
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        panic!("{what}: {status}: {text}");
    }
    ms
}

/// What kind of bindguard binary is measured: the shipped static one, or a dynamic build.
fn binary_kind() -> String {
    let bin = bindguard_tests::bindguard_bin();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"));
    let name = bin
        .strip_prefix(workspace)
        .unwrap_or(&bin)
        .display()
        .to_string();
    // A static executable has no PT_INTERP: the "/lib64/ld-linux" string is absent.
    let dynamic = fs::read(&bin).is_ok_and(|b| b.windows(13).any(|w| w == b"/lib64/ld-lin"));
    if dynamic {
        format!("`{name}` (dynamically linked)")
    } else {
        format!("`{name}` (the static release binary `cargo xtask dist` ships)")
    }
}

/// An anonymous file (O_TMPFILE) for a timed command's stderr.
fn tempfile() -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .expect("O_TMPFILE in the temp dir")
}

fn phase(name: &str, started: Instant) {
    eprintln!(
        "bg-bench: [{:>4.0} s] {name}",
        started.elapsed().as_secs_f64()
    );
}

fn attach_cmd(cg: &Path, dev: &str, netns: &Path, extra: &[&str]) -> Cmd {
    Cmd::bindguard()
        .args(["attach", "--cgroup"])
        .arg(cg)
        .args(["--dev", dev, "--netns"])
        .arg(netns)
        .args(extra)
}

/// The classic LD_PRELOAD approach: a socket() wrapper that binds every INET socket.
fn build_preload(dir: &Path) -> PathBuf {
    let src = dir.join("bindpreload.c");
    fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int (*real_socket)(int, int, int);
static const char *dev;

int socket(int domain, int type, int protocol) {
    if (!real_socket) {
        real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
        dev = getenv("BIND_DEV");
    }
    int fd = real_socket(domain, type, protocol);
    if (fd >= 0 && dev && (domain == AF_INET || domain == AF_INET6))
        setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, strlen(dev));
    return fd;
}
"#,
    )
    .unwrap();
    let lib = dir.join("bindpreload.so");
    let out = Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "building the LD_PRELOAD library: {out:?}"
    );
    lib
}

/// bpftool's JSON about one program or map.
fn bpftool(kind: &str, id: u64) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args([kind, "show", "id", &id.to_string(), "-j"])
        .output()
        .expect("bpftool");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn status_entry(cg_id: u64) -> serde_json::Value {
    let (_, out, _) = Cmd::bindguard().args(["status", "--json"]).run();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["cgroup_id"] == cg_id)
        .cloned()
        .expect("binding listed")
}

/// The bench's scratch directory (the LD_PRELOAD library), removed on drop, also on panic.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{}-bench-{}",
            bindguard_tests::name_prefix(),
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kb: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} × {cpu}, {:.0} GiB RAM, Linux {}",
        mem_kb as f64 / 1048576.0,
        kernel.trim()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let all = [
        "socket",
        "send",
        "guards",
        "runtime",
        "latency",
        "scale",
        "daemon",
        "daemon-scale",
        "nri",
        "dns",
        "exec",
        "metrics",
        "nri-sync",
    ];
    let phases: Vec<String> = if args.iter().any(|a| a == "--daemon-only") {
        vec!["daemon".to_string()]
    } else if args.iter().any(|a| a == "--daemon-scale-only") {
        vec!["daemon-scale".to_string()]
    } else {
        value("--phases").map_or_else(
            || all.iter().map(|p| p.to_string()).collect(),
            |v| v.split(',').map(|p| p.trim().to_string()).collect(),
        )
    };
    for p in &phases {
        assert!(
            all.contains(&p.as_str()),
            "unknown phase {p}; phases: {all:?}"
        );
    }
    let run = |p: &str| phases.iter().any(|x| x == p);
    let write = !args.iter().any(|a| a == "--no-write") && phases.len() == all.len();
    assert!(
        bindguard_tests::require_root("bg-bench"),
        "the benchmarks need root"
    );
    let started = Instant::now();
    let (rounds, socket_n, send_n, latency_n, scale) = if quick {
        (3, 2_000, 2_000, 3, 50)
    } else {
        (15, 20_000, 50_000, 15, 10_000)
    };
    let scale: usize = value("--scale").map_or(scale, |v| v.parse().expect("--scale N"));
    let mut report = String::new();
    let _ = writeln!(report, "Machine: {}", machine());
    let _ = writeln!(
        report,
        "Command: `cargo xtask bench{}{}`, {} rounds interleaved; median (p25–p75). bindguard: {}.\n",
        if quick { " --quick" } else { "" },
        if phases.len() == all.len() {
            String::new()
        } else {
            format!(" --phases {}", phases.join(","))
        },
        rounds,
        binary_kind()
    );

    let s = Scenario::new();
    let host = s.topo.host.path();
    // First attach after an install or upgrade: the build's program set is not pinned yet, so
    // this attach loads and verifies it (and parses the kernel's BTF). Measured by unpinning
    // the set between rounds, which is only done while no binding uses it.
    let mut first_attach = Vec::new();
    if run("latency") {
        phase("first attach (loads the program set)", started);
        for _ in 0..latency_n.min(7) {
            let dir = bindguard::kernel::progset::root().join(
                bindguard::kernel::progset::dir_name(bindguard::kernel::hooks::object_hash()),
            );
            if let Ok(set) = bindguard::kernel::progset::Set::open(&dir) {
                // Released before the attach below, which takes it in another process.
                let lock = bindguard::kernel::pins::lock().expect("the pins lock");
                if set.in_use(&lock) {
                    break;
                }
                set.remove(&lock).expect("unpinning the unused program set");
            }
            let cg = TestCgroup::new();
            first_attach.push(timed(attach_cmd(&cg.path, UPLINK_B, &host, &[])));
            timed(Cmd::bindguard().args(["detach", "--cgroup"]).arg(&cg.path));
        }
    }
    let cg_none = TestCgroup::new();
    let cg_bind = TestCgroup::new();
    let cg_strict = TestCgroup::new();
    timed(attach_cmd(
        &cg_bind.path,
        UPLINK_B,
        &host,
        &["--mode", "bind"],
    ));
    timed(attach_cmd(&cg_strict.path, UPLINK_B, &host, &[]));
    let tmp = TempDir::new();
    let preload = build_preload(&tmp.0);

    // 1. socket() + close()
    if run("socket") {
        phase("socket()+close()", started);
        let _ = writeln!(report, "### 1. socket() + close(), ns per call\n");
        let _ = writeln!(
            report,
            "| socket | no binding | `--mode bind` | `--mode strict` | setsockopt(SO_BINDTODEVICE) | LD_PRELOAD socket() hook |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|---|");
        let mut added = Vec::new();
        for (fam, kind) in [("4", "udp"), ("4", "tcp"), ("6", "udp"), ("6", "tcp")] {
            let n = socket_n.to_string();
            let variant = |i: usize| -> Cmd {
                let base = || Cmd::probe().in_netns(&s.topo.host);
                let args = ["bench-socket", fam, kind, &n];
                match i {
                    0 => base().in_cgroup(&cg_none).args(args),
                    1 => base().in_cgroup(&cg_bind).args(args),
                    2 => base().in_cgroup(&cg_strict).args(args),
                    3 => base().in_cgroup(&cg_none).args(args).arg(UPLINK_B),
                    _ => base()
                        .in_cgroup(&cg_none)
                        .args(args)
                        .env("LD_PRELOAD", &preload)
                        .env("BIND_DEV", UPLINK_B),
                }
            };
            let mut samples = vec![Vec::new(); 5];
            for round in 0..rounds {
                for k in 0..5 {
                    let i = (round + k) % 5;
                    samples[i].push(measure(variant(i)));
                }
            }
            let st: Vec<Stats> = samples.into_iter().map(stats).collect();
            let _ = writeln!(
                report,
                "| {kind}{} | {} | {} | {} | {} | {} |",
                if fam == "6" { "6" } else { "" },
                st[0],
                st[1],
                st[2],
                st[3],
                st[4]
            );
            added.push((format!("{kind}{}", if fam == "6" { "6" } else { "" }), st));
        }
        let _ = writeln!(
            report,
            "\nAdded cost over no binding (median difference) and ratios:\n"
        );
        let _ = writeln!(
            report,
            "| socket | bind: +ns (% of socket+close) | strict: +ns (%) | setsockopt: +ns (× bindguard's) | LD_PRELOAD: +ns (× bindguard's) |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|");
        for (name, st) in &added {
            let base = st[0].median;
            let d = |i: usize| st[i].median - base;
            let times = |x: f64| {
                if d(1) > 1.0 {
                    format!("{:.1}×", x / d(1))
                } else {
                    "bindguard's is within noise".into()
                }
            };
            let _ = writeln!(
                report,
                "| {name} | {:+.0} ({:+.1} %) | {:+.0} ({:+.1} %) | {:+.0} ({}) | {:+.0} ({}) |",
                d(1),
                100.0 * d(1) / base,
                d(2),
                100.0 * d(2) / base,
                d(3),
                times(d(3)),
                d(4),
                times(d(4))
            );
        }
    }

    // 2. per packet
    let sink_port = 9000u16;
    let _sink = {
        let path = s.topo.peer_b.path();
        std::thread::spawn(move || {
            let f = fs::File::open(&path).unwrap();
            nix::sched::setns(
                std::os::fd::AsFd::as_fd(&f),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .unwrap();
            // Never read: datagrams are queued then dropped, no ICMP comes back.
            std::net::UdpSocket::bind(("0.0.0.0", sink_port)).unwrap()
        })
        .join()
        .unwrap()
    };
    if run("send") {
        phase("UDP send", started);
        // The kernel's own price for the two hooks strict mode runs per unconnected datagram
        // (cgroup/sendmsg4 takes the socket lock; cgroup_skb/egress saves and restores the
        // skb's control block), paid whatever the programs do: a `--mode bind` binding (same
        // bound socket, same route) plus empty programs on those hooks.
        let cg_hooks = TestCgroup::new();
        timed(attach_cmd(
            &cg_hooks.path,
            UPLINK_B,
            &host,
            &["--mode", "bind"],
        ));
        let _empty_hooks = [
            empty_program(&cg_hooks.path, 18, 14), // CGROUP_SOCK_ADDR at UDP4_SENDMSG
            empty_program(&cg_hooks.path, 8, 1),   // CGROUP_SKB at INET_EGRESS
        ];
        let _ = writeln!(
            report,
            "\n### 2. UDP sendto() over veth, ns per 64-byte datagram (to peer B)\n"
        );
        let _ = writeln!(
            report,
            "| no binding | `--mode bind` | `--mode strict` | floor: bind + empty sendmsg4 and egress programs | strict pps / unbound pps | floor pps / unbound pps | strict pps / floor pps |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|---|---|");
        let cgs = [&cg_none, &cg_bind, &cg_strict, &cg_hooks];
        let mut samples = vec![Vec::new(); cgs.len()];
        for round in 0..rounds.min(9) {
            for k in 0..cgs.len() {
                let i = (round + k) % cgs.len();
                let cmd = Cmd::probe().in_netns(&s.topo.host).in_cgroup(cgs[i]).args([
                    "bench-send",
                    PEER_B4,
                    &sink_port.to_string(),
                    &send_n.to_string(),
                ]);
                samples[i].push(measure(cmd));
            }
        }
        let st: Vec<Stats> = samples.into_iter().map(stats).collect();
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} |",
            st[0],
            st[1],
            st[2],
            st[3],
            st[0].median / st[2].median,
            st[0].median / st[3].median,
            st[3].median / st[2].median
        );
        timed(
            Cmd::bindguard()
                .args(["detach", "--cgroup"])
                .arg(&cg_hooks.path),
        );
    }

    // 3. run time of each program in the kernel
    if run("guards") {
        strict_guards(&mut report, &s, [&cg_none, &cg_strict], rounds, socket_n);
    }

    if run("runtime") {
        phase("program run time", started);
        let prev = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or("0".into());
        fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable bpf stats");
        // The floor of this measurement on this machine: an empty sock_create program
        // (`return 1`) linked to a cgroup of its own, run as often.
        let cg_empty = TestCgroup::new();
        let empty = empty_sock_create(&cg_empty.path);
        measure(
            Cmd::probe()
                .in_netns(&s.topo.host)
                .in_cgroup(&cg_empty)
                .args(["bench-socket", "4", "udp", "20000"]),
        );
        let empty_stats = bpftool("prog", u64::from(empty.0));
        drop(empty);
        for cg in [&cg_bind, &cg_strict] {
            measure(Cmd::probe().in_netns(&s.topo.host).in_cgroup(cg).args([
                "bench-socket",
                "4",
                "udp",
                "20000",
            ]));
            measure(Cmd::probe().in_netns(&s.topo.host).in_cgroup(cg).args([
                "bench-send",
                PEER_B4,
                &sink_port.to_string(),
                "20000",
            ]));
        }
        let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", prev.trim());
        let _ = writeln!(
            report,
            "\n### 3. Program run time in the kernel (kernel.bpf_stats_enabled: run_time_ns / run_cnt)\n"
        );
        let _ = writeln!(
            report,
            "Every binding runs the same programs (the build's shared set), so the counts cover both bindings.\n"
        );
        let _ = writeln!(report, "| program | runs | ns per run |");
        let _ = writeln!(report, "|---|---|---|");
        let entry = status_entry(cg_strict.id);
        for l in entry["links"].as_array().unwrap() {
            let id = l["program_id"].as_u64().unwrap();
            let p = bpftool("prog", id);
            let runs = p["run_cnt"].as_u64().unwrap_or(0);
            let ns = p["run_time_ns"].as_u64().unwrap_or(0);
            if runs > 0 {
                let _ = writeln!(
                    report,
                    "| {} | {runs} | {:.1} |",
                    l["hook"].as_str().unwrap(),
                    ns as f64 / runs as f64
                );
            }
        }
        let runs = empty_stats["run_cnt"].as_u64().unwrap_or(0).max(1);
        let ns = empty_stats["run_time_ns"].as_u64().unwrap_or(0);
        let _ = writeln!(
            report,
            "| (floor: an empty sock_create program, `return 1`) | {runs} | {:.1} |",
            ns as f64 / runs as f64
        );
    }

    // 4. whole-process latencies
    if run("latency") {
        phase("latencies", started);
        let _ = writeln!(
            report,
            "\n### 4. Whole-process latency (ms, wall clock, incl. process start)\n"
        );
        // The floor every command pays on this machine: starting the bindguard process at all.
        let start_ms: Vec<f64> = (0..latency_n)
            .map(|_| timed(Cmd::bindguard().arg("--version")))
            .collect();
        let mut attach_ms = Vec::new();
        let mut retarget_ms = Vec::new();
        let mut detach_ms = Vec::new();
        for _ in 0..latency_n {
            let cg = TestCgroup::new();
            attach_ms.push(timed(attach_cmd(&cg.path, UPLINK_B, &host, &[])));
            retarget_ms.push(timed(attach_cmd(&cg.path, UPLINK_A, &host, &[])));
            detach_ms.push(timed(
                Cmd::bindguard().args(["detach", "--cgroup"]).arg(&cg.path),
            ));
        }
        let mut hook_create = Vec::new();
        let mut hook_stop = Vec::new();
        let mount = bindguard::binding::cgroup::cgroup2_mount().unwrap();
        for n in 0..latency_n {
            let id = format!("bgbench{}x{n}", std::process::id());
            let path = mount.join(&id);
            fs::create_dir(&path).unwrap();
            let cg = TestCgroup {
                id: fs::metadata(&path).unwrap().ino(),
                path,
            };
            let mut sleeper = Cmd::new("sleep")
                .arg("30")
                .in_cgroup(&cg)
                .in_netns(&s.topo.host)
                .spawn();
            let state = |status: &str| {
                format!(
                    r#"{{"ociVersion":"1.0.2","id":"{id}","status":"{status}","pid":{},"bundle":"/nonexistent","annotations":{{"io.bindguard.dev":"{UPLINK_B}"}}}}"#,
                    sleeper.id()
                )
            };
            for (phase, out) in [("creating", &mut hook_create), ("stopped", &mut hook_stop)] {
                let start = Instant::now();
                let mut child = Cmd::bindguard().arg("oci-hook").spawn_with_stdin();
                std::io::Write::write_all(child.stdin.as_mut().unwrap(), state(phase).as_bytes())
                    .unwrap();
                drop(child.stdin.take());
                let o = bindguard_tests::run::wait_output(child, Duration::from_secs(30)).unwrap();
                assert!(o.status.success(), "oci-hook {phase}: {o:?}");
                out.push(start.elapsed().as_secs_f64() * 1e3);
            }
            let _ = sleeper.kill();
            let _ = sleeper.wait();
        }
        let _ = writeln!(report, "| operation | ms |");
        let _ = writeln!(report, "|---|---|");
        for (name, v) in [
            (
                "process start alone (`bindguard --version`): the floor of every command",
                start_ms,
            ),
            (
                "first attach after an install or upgrade (strict: loads + verifies the program set, pins it, binds)",
                first_attach,
            ),
            (
                "attach (strict, new binding: links the pinned programs, writes the policy)",
                attach_ms,
            ),
            (
                "re-target (attach again to another interface: policy rewritten in place)",
                retarget_ms,
            ),
            ("detach", detach_ms),
            ("oci-hook createRuntime (strict)", hook_create),
            ("oci-hook poststop", hook_stop),
        ] {
            if v.is_empty() {
                let _ = writeln!(report, "| {name} | not measured (the set was in use) |");
            } else {
                let _ = writeln!(report, "| {name} | {} |", stats(v));
            }
        }
    }

    // Scale: attach time and kernel memory as bindings grow, and status over them.
    if run("scale") {
        scale_phase(&mut report, scale, started);
    }
    if run("daemon") {
        report.push_str(&daemon_bench(if quick { 10 } else { 50 }, started));
    }
    if run("daemon-scale") {
        let sizes: Vec<usize> = value("--daemon-scale").map_or_else(
            || {
                if quick {
                    vec![100, 1_000]
                } else {
                    vec![100, 1_000, 10_000]
                }
            },
            |v| {
                v.split(',')
                    .map(|n| n.trim().parse().expect("--daemon-scale N,N"))
                    .collect()
            },
        );
        let block = daemon_scale_phase(&sizes, if quick { 5 } else { 20 }, started);
        println!("{block}");
        if !args.iter().any(|a| a == "--no-write") {
            write_block(DS_BEGIN, DS_END, &block);
        }
    }
    if run("nri") {
        report.push_str(&nri_bench(&s, if quick { 5 } else { 40 }, started));
    }
    if run("dns") {
        report.push_str(&dns_bench(&s, rounds.min(9), send_n, started));
    }
    if run("exec") {
        report.push_str(&exec_bench(&s, if quick { 20 } else { 200 }, started));
    }
    if run("nri-sync") {
        report.push_str(&nri_sync_bench(&s, if quick { 10 } else { 100 }, started));
    }
    if run("metrics") {
        let n =
            value("--metrics-bindings").map_or(1_000, |v| v.parse().expect("--metrics-bindings N"));
        report.push_str(&metrics_bench(n, if quick { 50 } else { 200 }, started));
    }
    drop(tmp);
    let _ = writeln!(
        report,
        "\nWhole run: {:.0} s.",
        started.elapsed().as_secs_f64()
    );

    println!("{report}");
    if write {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
        let old = fs::read_to_string(&path).unwrap_or_default();
        let block = format!("{BEGIN}\n{report}{END}");
        let new = match (old.find(BEGIN), old.find(END)) {
            (Some(a), Some(b)) if a < b => format!("{}{block}{}", &old[..a], &old[b + END.len()..]),
            _ => format!("# Benchmarks\n\n{block}\n"),
        };
        fs::write(&path, new).expect("write BENCHMARKS.md");
        println!("updated {}", path.canonicalize().unwrap().display());
    }
}

/// `--dns`: what redirecting a query costs per datagram. The same strict binding sends to
/// port 53 of DEST4 (routed to peer B), without `--dns` and with `--dns PEER_B4` (every
/// datagram rewritten to peer B's address and its socket's original destination recorded).
fn dns_bench(s: &Scenario, rounds: usize, n: usize, started: Instant) -> String {
    phase("dns redirect", started);
    let host = s.topo.host.path();
    let plain = TestCgroup::new();
    let redirected = TestCgroup::new();
    timed(attach_cmd(&plain.path, UPLINK_B, &host, &[]));
    timed(attach_cmd(
        &redirected.path,
        UPLINK_B,
        &host,
        &["--dns", PEER_B4],
    ));
    let cgs = [&plain, &redirected];
    let mut samples = vec![Vec::new(); 2];
    for round in 0..rounds {
        for k in 0..2 {
            let i = (round + k) % 2;
            let cmd = Cmd::probe().in_netns(&s.topo.host).in_cgroup(cgs[i]).args([
                "bench-send",
                bindguard_tests::topology::DEST4,
                "53",
                &n.to_string(),
            ]);
            samples[i].push(measure(cmd));
        }
    }
    let redirects = status_entry(redirected.id)["counters"]["dns_redirected"]
        .as_u64()
        .unwrap_or(0);
    let st: Vec<Stats> = samples.into_iter().map(stats).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### DNS redirect (`--dns`), ns per 64-byte datagram to port 53 (strict, to peer B)\n"
    );
    let _ = writeln!(
        out,
        "| strict, no `--dns` | strict, `--dns` (rewritten) | added per query (median) | queries redirected |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {} | {:.0} ns | {redirects} |",
        st[0],
        st[1],
        st[1].median - st[0].median
    );
    out
}

/// `bindguard exec` of `/bin/true`: plainly (uid 65534, no binding), as root (a transient
/// cgroup made, bound, removed), and as uid 65534 asking the daemon (grant checked, cgroup
/// made and bound by the daemon, the command exec'd in place). Wall clock, p50/p99.
fn exec_bench(s: &Scenario, n: usize, started: Instant) -> String {
    phase("exec as a user", started);
    let host = s.topo.host.path();
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = dir.0.join("grant.toml");
    fs::write(
        &conf,
        format!("[[grant]]\nusers = [65534]\ndev = [\"{UPLINK_B}\"]\n"),
    )
    .unwrap();
    let socket = dir.0.join("exec.sock");
    let log = fs::File::create(dir.0.join("daemon.log")).unwrap();
    let mut daemon = Cmd::bindguard()
        .arg("daemon")
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(&socket)
        .in_netns(&s.topo.host)
        .spawn_logged(log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(dir.0.join("daemon.log")).is_ok_and(|l| l.contains("ready:")) {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let plain = || Cmd::new("/bin/true").as_nobody().in_netns(&s.topo.host);
    let root = || {
        Cmd::bindguard().args(["exec", "--netns"]).arg(&host).args([
            "--dev",
            UPLINK_B,
            "--",
            "/bin/true",
        ])
    };
    let user = || {
        Cmd::bindguard()
            .args(["exec", "--dev", UPLINK_B, "--", "/bin/true"])
            .as_nobody()
            .env("BINDGUARD_SOCKET", &socket)
            .in_netns(&s.topo.host)
    };
    let (mut p, mut r, mut u) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        p.push(timed(plain()));
        r.push(timed(root()));
        u.push(timed(user()));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let row = |name: &str, v: &[f64]| {
        let (p50, p99) = p50_p99(v);
        format!("| {name} | {p50:.2} | {p99:.2} |\n")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### `bindguard exec` as a user ({n} runs each, interleaved; ms, wall clock)\n"
    );
    let _ = writeln!(out, "| /bin/true run | p50 | p99 |");
    let _ = writeln!(out, "|---|---|---|");
    out += &row("plainly, as uid 65534 (no binding)", &p);
    out += &row("`bindguard exec` as root", &r);
    out += &row("`bindguard exec` as uid 65534, asking the daemon", &u);
    let over = p50_p99(&u).0 - p50_p99(&p).0;
    let _ = writeln!(
        out,
        "\nAs a user, exec adds {over:.2} ms (p50) to a plain run; as root {:.2} ms.",
        p50_p99(&r).0 - p50_p99(&p).0
    );
    out
}

/// p50 and p99 of `v` (ms).
fn p50_p99(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// `bindguard nri` on a real containerd 2.x: CRI CreateContainer and StartContainer round
/// trips of containers in a host-network pod, `n` of each kind, interleaved round by round:
/// on a containerd with no plugin connected (the floor), and on a second one with the plugin
/// connected, the container not annotated (an NRI round trip per event) or annotated
/// (CreateContainer looks the interface up in the pod's namespace, StartContainer binds the
/// cgroup). The plugin's own time per event comes from its log.
fn nri_bench(s: &Scenario, n: usize, started: Instant) -> String {
    use bindguard_tests::containerd::{self, Containerd, NriPlugin, PodSpec};
    phase("nri: CreateContainer/StartContainer on containerd", started);
    if let Some(why) = containerd::unavailable() {
        return format!("\nNRI plugin: not measured ({why}).\n");
    }
    fn spec<'a>(
        name: &'a str,
        container_name: &'a str,
        container_annotations: &'a [(&'a str, &'a str)],
        command: &[String],
    ) -> PodSpec<'a> {
        PodSpec {
            name,
            pod_annotations: &[],
            container_annotations,
            container_name,
            command: command.to_vec(),
            host_libs: false,
        }
    }
    let sleep: Vec<String> = vec!["/bin/busybox".into(), "sleep".into(), "86400".into()];
    let bare = Containerd::start(&s.topo.host);
    let with = Containerd::start(&s.topo.host);
    let plugin = NriPlugin::start(&with, &s.topo.host);
    let name = bindguard_tests::unique("bgn");
    let pods = [&bare, &with].map(|c| c.run_sandbox(&spec(&name, "", &[], &sleep)));
    let bound: &[(&str, &str)] = &[("io.bindguard.dev", UPLINK_B)];
    let mut samples: [(Vec<f64>, Vec<f64>); 3] = Default::default();
    // Round 0 warms up (image snapshot, program set) and is not counted.
    for round in 0..=n {
        for (kind, (creates, starts)) in samples.iter_mut().enumerate() {
            let (ctd, pod) = if kind == 0 {
                (&bare, &pods[0])
            } else {
                (&with, &pods[1])
            };
            let cname = format!("c{kind}x{round}");
            let ann = if kind == 2 { bound } else { &[] };
            let t = Instant::now();
            let id = ctd
                .create_container(pod, &spec(&name, &cname, ann, &sleep))
                .unwrap_or_else(|e| panic!("CreateContainer: {}", e.message()));
            let create = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            ctd.start_container(&id)
                .unwrap_or_else(|e| panic!("StartContainer: {}", e.message()));
            let start = t.elapsed().as_secs_f64() * 1e3;
            ctd.remove_container(&id);
            if round > 0 {
                creates.push(create);
                starts.push(start);
            }
        }
    }
    let log = plugin.log_text();
    let in_plugin = |what: &str| -> Vec<f64> {
        log.lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| {
                l.rsplit_once(" in ")?
                    .1
                    .trim_end_matches(')')
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .skip(1)
            .collect()
    };
    let (checks, binds) = (in_plugin("INFO admitted "), in_plugin("INFO bound "));
    drop(plugin);
    drop(with);
    drop(bare);
    let mut out = format!(
        "\nNRI plugin (`bindguard nri`) on containerd {} through CRI: containers in a host-network \
         pod, {n} of each kind, interleaved; ms, p50 / p99:\n\n\
         | container | CreateContainer | StartContainer |\n|---|---|---|\n",
        containerd_version()
    );
    for (kind, (create, start)) in [
        "containerd without the plugin",
        "with the plugin, not annotated",
        "with the plugin, annotated (bound at StartContainer)",
    ]
    .iter()
    .zip(&samples)
    {
        let (c50, c99) = p50_p99(create);
        let (s50, s99) = p50_p99(start);
        let _ = writeln!(
            out,
            "| {kind} | {c50:.1} / {c99:.1} | {s50:.1} / {s99:.1} |"
        );
    }
    let p50 = |v: &Vec<f64>| p50_p99(v).0;
    let _ = writeln!(
        out,
        "\nRound trips, annotated against no plugin (p50 difference, within the noise of \
         container creation): CreateContainer {:+.1} ms, StartContainer {:+.1} ms.",
        p50(&samples[2].0) - p50(&samples[0].0),
        p50(&samples[2].1) - p50(&samples[0].1),
    );
    for (what, v) in [
        (
            "the CreateContainer check (annotations, interface in the pod's namespace)",
            &checks,
        ),
        (
            "the StartContainer bind (cgroup, namespaces, interface, attach)",
            &binds,
        ),
    ] {
        if !v.is_empty() {
            let (a, b) = p50_p99(v);
            let _ = writeln!(
                out,
                "Inside the plugin, {what}: {a:.2} / {b:.2} ms (p50 / p99)."
            );
        }
    }
    out
}

fn containerd_version() -> String {
    let bin = bindguard_tests::containerd::bin_dir().join("containerd");
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(String::from)
        })
        .unwrap_or_else(|| "2.x".into())
}

/// Slab + VmallocUsed + Percpu from /proc/meminfo, in KiB: the kernel memory a binding costs
/// (programs, maps, links, bpffs inodes, cgroup storage), which memlock accounting understates.
fn kernel_kib() -> u64 {
    let info = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    ["Slab:", "VmallocUsed:", "Percpu:"]
        .iter()
        .map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// [`kernel_kib`] after reclaimable caches (dentries and inodes of other activity on the machine)
/// are dropped and RCU-freed objects are gone: the median of three such samples. Pinned bpffs
/// entries are not reclaimable, so a binding's own memory stays counted.
fn settled_kernel_kib() -> u64 {
    let mut samples: Vec<u64> = (0..3)
        .map(|_| {
            let _ = fs::write("/proc/sys/vm/drop_caches", "2");
            std::thread::sleep(Duration::from_millis(300));
            kernel_kib()
        })
        .collect();
    samples.sort_unstable();
    samples[1]
}

fn scale_phase(report: &mut String, scale: usize, started: Instant) {
    phase("scale: creating cgroups", started);
    let parent = TestCgroup::new();
    // Cgroups are made first so their own cost stays out of the per-binding figure.
    let many: Vec<TestCgroup> = (0..scale).map(|i| parent.child(&format!("b{i}"))).collect();
    let base = settled_kernel_kib();
    let mut memory = Vec::new();
    let mut by_bucket: Vec<(usize, Vec<f64>)> = Vec::new();
    let bucket = (scale / 5).max(1);
    phase("scale: attaching", started);
    for (i, cg) in many.iter().enumerate() {
        let ms = timed(
            Cmd::bindguard()
                .args(["attach", "--dev", "lo", "--allow-loopback", "--cgroup"])
                .arg(&cg.path),
        );
        if i % bucket == 0 {
            by_bucket.push((i, Vec::new()));
        }
        by_bucket.last_mut().unwrap().1.push(ms);
        let n = i + 1;
        if n == 1000.min(scale) || n == scale {
            memory.push((n, settled_kernel_kib().saturating_sub(base)));
        }
    }
    let _ = writeln!(
        report,
        "\nKernel memory per binding (`--mode strict`; growth of Slab + VmallocUsed + Percpu in /proc/meminfo over {scale} bindings made after their cgroups):\n"
    );
    let _ = writeln!(report, "| bindings | growth | per binding |");
    let _ = writeln!(report, "|---|---|---|");
    for (n, kib) in memory {
        let _ = writeln!(
            report,
            "| {n} | {:.1} MiB | {:.1} KiB |",
            kib as f64 / 1024.0,
            kib as f64 / n as f64
        );
    }
    let _ = writeln!(
        report,
        "\nAttach time as bindings grow (`--mode strict`, ms, whole process):\n"
    );
    let _ = writeln!(report, "| bindings already present | attach ms |");
    let _ = writeln!(report, "|---|---|");
    for (from, v) in by_bucket {
        let _ = writeln!(report, "| {from}–{} | {} |", from + bucket - 1, stats(v));
    }
    phase("scale: status over all bindings", started);
    let total = bindguard::kernel::pins::list().len();
    // Untimed once: the memory samples dropped the dentry cache, and the first lookup of each
    // cgroup by handle reconnects its dentry (a directory search in the parent) — a cold-cache
    // cost reported in BENCHMARKS.md, not the steady state measured here.
    timed(Cmd::bindguard().args(["status", "--json"]));
    let mut status_ms = Vec::new();
    for _ in 0..5 {
        status_ms.push(timed(Cmd::bindguard().args(["status", "--json"])));
    }
    let _ = writeln!(
        report,
        "\n`bindguard status --json` over {total} bindings: {} ms",
        stats(status_ms)
    );
    // oci-hook poststop as runc calls it: the container's cgroup is already removed, so the
    // hook sweeps every binding for ones whose cgroup is gone.
    phase("scale: oci-hook poststop", started);
    let mut poststop_ms = Vec::new();
    for n in 0..5 {
        let gone = parent.child(&format!("gone{n}"));
        timed(
            Cmd::bindguard()
                .args(["attach", "--dev", "lo", "--allow-loopback", "--cgroup"])
                .arg(&gone.path),
        );
        fs::remove_dir(&gone.path).expect("rmdir the container's cgroup");
        let pins = gone.pins();
        // Its cgroup is gone, so the guard has nothing to remove but leftover pins.
        std::mem::forget(gone);
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":"bgbench-gone{n}","status":"stopped","pid":0,"bundle":"/nonexistent","annotations":{{"io.bindguard.dev":"lo"}}}}"#
        );
        let start = Instant::now();
        let mut child = Cmd::bindguard().arg("oci-hook").spawn_with_stdin();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), state.as_bytes()).unwrap();
        drop(child.stdin.take());
        let o = bindguard_tests::run::wait_output(child, Duration::from_secs(30)).unwrap();
        poststop_ms.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(o.status.success(), "oci-hook poststop: {o:?}");
        if pins.exists() {
            if let Ok(lock) = bindguard::kernel::pins::lock() {
                let _ = bindguard::kernel::pins::remove_dir(&pins, &lock);
            }
            panic!("oci-hook poststop left {}", pins.display());
        }
    }
    let _ = writeln!(
        report,
        "\n`bindguard oci-hook` poststop with {total} bindings present (the container's cgroup already removed, as runc does): {} ms",
        stats(poststop_ms)
    );
    phase("scale: detaching", started);
    let mut detach_ms = Vec::new();
    for cg in &many {
        detach_ms.push(timed(
            Cmd::bindguard().args(["detach", "--cgroup"]).arg(&cg.path),
        ));
    }
    let _ = writeln!(
        report,
        "\n`bindguard detach` with {scale} down to 1 bindings present: {} ms",
        stats(detach_ms)
    );
    // Children before the parent.
    drop(many);
    drop(parent);
}

/// An empty program (`return 1`: allow, pass) of `prog_type` linked to `cgroup` at
/// `attach_type`: what the kernel's hook costs without any work of bindguard's. Returns the
/// program id, and the link and program fds (dropping them unlinks it).
fn empty_program(
    cgroup: &Path,
    prog_type: u32,
    attach_type: u32,
) -> (u32, std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let sys = |cmd: i32, attr: &mut [u8]| -> i64 {
        // SAFETY: attr is a zero-initialised bpf_attr prefix for `cmd` of the size passed.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr().cast::<libc::c_void>(),
                attr.len() as libc::c_uint,
            )
        }
    };
    let put = |attr: &mut [u8], at: usize, v: u64, width: usize| {
        attr[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    };
    let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, prog_type.into(), 4);
    put(&mut attr, 4, 2, 4);
    put(&mut attr, 8, insns.as_ptr() as u64, 8);
    put(&mut attr, 16, license.as_ptr() as u64, 8);
    attr[48..56].copy_from_slice(b"bg_empty");
    put(&mut attr, 68, attach_type.into(), 4); // expected_attach_type
    let prog = sys(5, &mut attr); // BPF_PROG_LOAD
    assert!(
        prog >= 0,
        "loading the empty program: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd from the kernel.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let dir = fs::File::open(cgroup).unwrap();
    let mut attr = [0u8; 16];
    put(&mut attr, 0, prog.as_raw_fd() as u64, 4);
    put(&mut attr, 4, dir.as_raw_fd() as u64, 4);
    put(&mut attr, 8, attach_type.into(), 4);
    let link = sys(28, &mut attr); // BPF_LINK_CREATE
    assert!(
        link >= 0,
        "linking the empty program: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd from the kernel.
    let link = unsafe { OwnedFd::from_raw_fd(link as i32) };
    let id = bindguard::kernel::progset::program_id(prog.as_fd()).unwrap();
    (id, link, prog)
}

/// BPF_PROG_TYPE_CGROUP_SOCK at BPF_CGROUP_INET_SOCK_CREATE.
fn empty_sock_create(cgroup: &Path) -> (u32, std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    empty_program(cgroup, 9, 2)
}

/// Section 2b: what strict mode's guards add where they run — a multicast join+leave (the
/// setsockopt guard reads and rewrites the option) and an fd passed by SCM_RIGHTS (the BPF LSM
/// file_receive guard, where the kernel lets it run).
fn strict_guards(
    report: &mut String,
    s: &Scenario,
    [none, strict]: [&TestCgroup; 2],
    rounds: usize,
    n: u64,
) {
    let lsm = status_entry(strict.id)["lsm"].as_bool().unwrap_or(false);
    let _ = writeln!(
        report,
        "\n### 2b. Strict-mode guards, ns per operation (BPF LSM programs attached: {})\n",
        if lsm {
            "yes"
        } else {
            "no — the kernel refuses them, so fd passing runs no guard here"
        }
    );
    let _ = writeln!(
        report,
        "| operation | no binding | `--mode strict` | strict vs none |"
    );
    let _ = writeln!(report, "|---|---|---|---|");
    let n = (n / 4).to_string();
    for (label, args) in [
        (
            "IP_ADD_MEMBERSHIP + IP_DROP_MEMBERSHIP",
            ["bench-join", n.as_str()],
        ),
        (
            "SCM_RIGHTS pass of a UDP socket",
            ["bench-passfd", n.as_str()],
        ),
    ] {
        let mut samples = vec![Vec::new(); 2];
        for round in 0..rounds.min(9) {
            for k in 0..2 {
                let i = (round + k) % 2;
                let cg = [none, strict][i];
                samples[i].push(measure(
                    Cmd::probe().in_netns(&s.topo.host).in_cgroup(cg).args(args),
                ));
            }
        }
        let st: Vec<Stats> = samples.into_iter().map(stats).collect();
        let _ = writeln!(
            report,
            "| {label} | {} | {} | {:.3}× |",
            st[0],
            st[1],
            st[1].median / st[0].median
        );
    }
}

// ---- daemon: interface re-creation ---------------------------------------------------------

/// q-quantile (0..=1) of `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// `ip -n NS -batch -` with `lines` on stdin; panics unless it succeeds.
fn ip_batch(ns: &str, lines: &[String]) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -n {ns} -batch failed");
}

/// Runs `f` on a new thread that entered the network namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let ns = fs::File::open(&path).expect("open netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A socket fd with a 100 ms receive timeout, so its reader can notice it should stop.
fn raw_socket(family: i32, kind: i32, proto: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, proto) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: valid fd and option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    // SAFETY: fd was just returned to us.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// The first outgoing UDP datagram to `port` (or ARP request for `arp_target`, which such a
/// datagram triggers first) on each interface of the thread's namespace: (ifindex, when).
fn watch_first_packets(
    port: u16,
    arp_target: std::net::Ipv4Addr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tx: std::sync::mpsc::Sender<(u32, Instant)>,
) {
    use std::os::fd::AsRawFd as _;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    let sock = raw_socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
    let mut buf = vec![0u8; 2048];
    let mut seen = std::collections::HashSet::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: reading into our buffer and address.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        let at = Instant::now();
        if n <= 0 || sll.sll_pkttype != libc::PACKET_OUTGOING {
            continue;
        }
        let f = &buf[..n as usize];
        // IPv4 UDP over Ethernet: ethertype 0x0800, protocol 17, destination port.
        let udp = f.len() >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 17 && {
            let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
            f.get(l4 + 2..l4 + 4) == Some(&port.to_be_bytes()[..])
        };
        // Or the ARP request the datagram triggers (the first frame it makes leave): ethertype
        // 0x0806, opcode 1, target protocol address = the gateway.
        let arp = f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 1]
            && f[38..42] == arp_target.octets();
        if (udp || arp) && seen.insert(sll.sll_ifindex as u32) {
            let _ = tx.send((sll.sll_ifindex as u32, at));
        }
    }
}

/// Voluntary + involuntary context switches of every thread of `pid`.
fn context_switches(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| {
            fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The namespace at `ns` bind-mounted at `dir`/host-netns: a path of its own (the daemon
/// watches the directory of a configured namespace path, and /run/netns is busy with every
/// other test's namespaces).
fn own_netns_path(dir: &Path, ns: &Path) -> (PathBuf, Unmount) {
    let path = dir.join("host-netns");
    fs::File::create(&path).unwrap();
    nix::mount::mount(
        Some(ns),
        &path,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("bind-mount the host namespace");
    (path.clone(), Unmount(path))
}

/// A bind mount, unmounted on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A daemon process killed on drop.
struct DaemonGuard(std::process::Child);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon phase: `flaps` deletions and re-creations of the bound interface; returns the
/// report section.
fn daemon_bench(flaps: usize, started: Instant) -> String {
    use std::sync::{Arc, atomic::AtomicBool, mpsc};
    phase("daemon: interface re-creation", started);
    let s = Scenario::new();
    let host = s.topo.host.path();
    // Its own parent: the daemon watches the parent, which nothing else touches.
    let parent = TestCgroup::new();
    let cg = parent.child("app");
    let dir = std::env::temp_dir().join(format!("bindguard-bench-daemon-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let (ns_path, _unmount) = own_netns_path(&dir, &host);
    let conf = dir.join("bindguard.toml");
    fs::write(
        &conf,
        format!(
            "[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
            cg.path.display(),
            ns_path.display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let out = fs::File::create(&log).unwrap();
    let daemon = DaemonGuard(
        Command::new(bindguard_tests::bindguard_bin())
            .arg("daemon")
            .arg("--config")
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn daemon"),
    );
    let pid = daemon.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready:")
    {
        assert!(
            Instant::now() < deadline,
            "daemon not ready: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let rss_ready = rss_mib(pid);
    let pins = bindguard::kernel::pins::binding_dir(cg.id);
    let ifindex_now =
        || bindguard::binding::enforcer::read_policy(&pins).map_or(u32::MAX, |p| p.ifindex);

    let stop = Arc::new(AtomicBool::new(false));
    let (link_tx, link_rx) = mpsc::channel();
    let (pkt_tx, pkt_rx) = mpsc::channel();
    let st = stop.clone();
    let t1 = in_netns(host.clone(), move || watch_links(UPLINK_B, st, link_tx));
    let st = stop.clone();
    let t2 = in_netns(host.clone(), move || {
        watch_first_packets(7000, PEER_B4.parse().unwrap(), st, pkt_tx)
    });
    // A sender in the cgroup: a new UDP socket per datagram, every ~100 µs.
    let sender = Cmd::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                "import socket, time\nwhile True:\n    try:\n        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n        s.sendto(b'x', ('{}', 7000))\n        s.close()\n    except OSError:\n        pass\n    time.sleep(0.0001)\n",
                bindguard_tests::topology::DEST4
            ),
        ])
        .in_cgroup(&cg)
        .in_netns(&s.topo.host)
        .spawn();
    let sender = DaemonGuard(sender);
    std::thread::sleep(Duration::from_millis(200));

    let host_ns = s.topo.host.name.clone();
    let peer_ns = s.topo.peer_b.name.clone();
    let (mut to_policy, mut to_packet, mut config_to_packet) = (Vec::new(), Vec::new(), Vec::new());
    for flap in 0..flaps {
        sh_ip(&host_ns, &["link", "del", UPLINK_B]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while ifindex_now() != 0 {
            assert!(Instant::now() < deadline, "flap {flap}: binding not closed");
            std::thread::sleep(Duration::from_micros(200));
        }
        while link_rx.try_recv().is_ok() {}
        ip_batch(
            &host_ns,
            &[format!(
                "link add {UPLINK_B} type veth peer name eth0 netns {peer_ns}"
            )],
        );
        let (index, t_newlink) = loop {
            let (new, index, at) = link_rx
                .recv_timeout(Duration::from_secs(2))
                .expect("RTM_NEWLINK");
            if new {
                break (index, at);
            }
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        let t_policy = loop {
            if ifindex_now() == index {
                break Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "flap {flap}: policy not re-targeted"
            );
            std::hint::spin_loop();
        };
        ip_batch(
            &peer_ns,
            &[
                format!("addr add {PEER_B4}/24 dev eth0"),
                "link set eth0 up".into(),
                format!(
                    "route add default via {}",
                    bindguard_tests::topology::HOST_B4
                ),
            ],
        );
        ip_batch(
            &host_ns,
            &[
                format!(
                    "addr add {}/24 dev {UPLINK_B}",
                    bindguard_tests::topology::HOST_B4
                ),
                format!("link set {UPLINK_B} up"),
                format!("route add default via {PEER_B4} dev {UPLINK_B} metric 20"),
            ],
        );
        let t_configured = Instant::now();
        let t_packet = loop {
            let (i, at) = pkt_rx
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or_else(|_| panic!("flap {flap}: no packet left by {UPLINK_B}"));
            if i == index {
                break at;
            }
        };
        let ms = |a: Instant, b: Instant| {
            if b >= a {
                (b - a).as_secs_f64() * 1e3
            } else {
                -((a - b).as_secs_f64() * 1e3)
            }
        };
        to_policy.push(ms(t_newlink, t_policy));
        to_packet.push(ms(t_newlink, t_packet));
        config_to_packet.push(ms(t_configured, t_packet));
    }
    let rss_after = rss_mib(pid);
    // The daemon's own time per link event (from reading it to the policy written).
    let handled: Vec<f64> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split(" us after the event")
                .next()?
                .rsplit(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|us| us / 1e3)
        .collect();
    drop(sender);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = t1.join();
    let _ = t2.join();
    std::thread::sleep(Duration::from_secs(1));
    let idle_secs = 5;
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wakeups = (context_switches(pid) - before) as f64 / idle_secs as f64;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "\n### Daemon: interface re-created {flaps} times (`cargo xtask bench --daemon-only` runs only this)\n"
    );
    let _ = writeln!(
        report,
        "| from RTM_NEWLINK (read by a netlink listener) to | p50 ms | p99 ms |"
    );
    let _ = writeln!(report, "|---|---|---|");
    for (what, v) in [
        (
            "the binding's policy re-targeted to the new ifindex",
            &to_policy,
        ),
        (
            "the first packet the cgroup's sender makes leave by the new interface (its datagram, or the ARP request for the gateway it triggers)",
            &to_packet,
        ),
    ] {
        let _ = writeln!(
            report,
            "| {what} | {:.2} | {:.2} |",
            quantile(v, 0.5),
            quantile(v, 0.99)
        );
    }
    let _ = writeln!(
        report,
        "\nThe second row includes configuring the new interface (address, link up, route: two `ip -batch` runs); from the last `ip` returning to that first datagram: p50 {:.2} ms, p99 {:.2} ms. A sender in the cgroup makes a new UDP socket every ~0.1 ms.",
        quantile(&config_to_packet, 0.5),
        quantile(&config_to_packet, 0.99)
    );
    if !handled.is_empty() {
        let _ = writeln!(
            report,
            "\nInside the daemon (its log, {} link events: deletions and creations), from reading the event to the policy written: p50 {:.2} ms, p99 {:.2} ms.",
            handled.len(),
            quantile(&handled, 0.5),
            quantile(&handled, 0.99)
        );
    }
    let _ = writeln!(
        report,
        "\nDaemon RSS: {rss_ready:.1} MiB when ready, {rss_after:.1} MiB after the flaps. Idle: {wakeups:.1} wake-ups/s (context switches of all its threads over {idle_secs} s)."
    );
    let _ = daemon;
    report
}

fn sh_ip(ns: &str, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .expect("ip")
        .success();
    assert!(ok, "ip -n {ns} {}", args.join(" "));
}

// ---- daemon at scale: many bindings on one interface ----------------------------------------

/// RTM_NEWLINK / RTM_DELLINK of `name` in the thread's namespace: (new?, ifindex, when read).
fn watch_links(
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tx: std::sync::mpsc::Sender<(bool, u32, Instant)>,
) {
    use std::os::fd::AsRawFd as _;
    let sock = raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
    // SAFETY: sockaddr_nl is plain data.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = 1; // RTMGRP_LINK
    // SAFETY: binding our socket to a valid sockaddr_nl.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind netlink");
    let mut buf = vec![0u8; 65536];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let at = Instant::now();
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        let mut off = 0usize;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if len < 16 || off + len > n {
                break;
            }
            if kind == libc::RTM_NEWLINK || kind == libc::RTM_DELLINK {
                let msg = &buf[off + 16..off + len];
                let index = i32::from_ne_bytes(msg[4..8].try_into().unwrap()) as u32;
                let mut a = 16;
                while a + 4 <= msg.len() {
                    let alen = u16::from_ne_bytes(msg[a..a + 2].try_into().unwrap()) as usize;
                    let atype = u16::from_ne_bytes(msg[a + 2..a + 4].try_into().unwrap());
                    if alen < 4 || a + alen > msg.len() {
                        break;
                    }
                    if atype == libc::IFLA_IFNAME {
                        let v = &msg[a + 4..a + alen];
                        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                        if &v[..end] == name.as_bytes() {
                            let _ = tx.send((kind == libc::RTM_NEWLINK, index, at));
                        }
                    }
                    a += (alen + 3) & !3;
                }
            }
            off += (len + 3) & !3;
        }
    }
}

/// N cgroups `bgs<i>` under a parent of their own; their pins and the directories are removed
/// on drop.
struct ScaleCgroups {
    parent: TestCgroup,
    paths: Vec<PathBuf>,
    ids: Vec<u64>,
}

impl ScaleCgroups {
    fn new(n: usize) -> Self {
        let parent = TestCgroup::new();
        let mut paths = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let p = parent.path.join(format!("bgs{i}"));
            fs::create_dir(&p).unwrap();
            ids.push(fs::metadata(&p).unwrap().ino());
            paths.push(p);
        }
        Self { parent, paths, ids }
    }
}

impl Drop for ScaleCgroups {
    fn drop(&mut self) {
        for (p, id) in self.paths.iter().zip(&self.ids) {
            let pins = bindguard::kernel::pins::binding_dir(*id);
            if pins.exists()
                && let Ok(lock) = bindguard::kernel::pins::lock()
            {
                let _ = bindguard::kernel::pins::remove_dir(&pins, &lock);
                bindguard::kernel::progset::forget_user(*id, &lock);
            }
            let _ = fs::remove_dir(p);
        }
        let _ = &self.parent;
    }
}

/// `p50 / p99` of `v` (ms) as text; a dash when nothing was measured.
fn p50_p99_text(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!("{:.2} / {:.2}", quantile(v, 0.5), quantile(v, 0.99))
}

/// One row of the daemon-scale table.
struct ScaleRow {
    n: usize,
    ready_s: f64,
    fds: usize,
    closed: Vec<f64>,
    retargeted: Vec<f64>,
    daemon_del: Vec<f64>,
    daemon_new: Vec<f64>,
    rss_ready: f64,
    rss_after: f64,
    wakeups: f64,
    plan_ms: f64,
    noop_ms: f64,
}

/// Waits until the daemon logging to `log` says it is ready; panics with its log after
/// `timeout`.
fn wait_ready(log: &Path, timeout: Duration) {
    let log_text = || fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    while !log_text().contains("ready:") {
        assert!(
            Instant::now() < deadline,
            "daemon not ready: {}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `bindguard daemon` over every cgroup of `cgs` bound to upB in `ns_path`: its config
/// (`head`, then a `[[binding]]` each) written in `dir`, its output to `dir`/daemon.log
/// (returned), its exec socket there too.
fn scale_daemon(head: &str, cgs: &ScaleCgroups, ns_path: &Path, dir: &Path) -> (Command, PathBuf) {
    let conf = dir.join("bindguard.toml");
    let mut text = head.to_string();
    for p in &cgs.paths {
        let _ = writeln!(
            text,
            "[[binding]]\ncgroup = \"{}\"\ndev = \"{UPLINK_B}\"\nnetns = \"{}\"\n",
            p.display(),
            ns_path.display()
        );
    }
    fs::write(&conf, text).unwrap();
    let log = dir.join("daemon.log");
    let out = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bindguard_tests::bindguard_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(&conf)
        .arg("--socket")
        .arg(dir.join("exec.sock"))
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    (cmd, log)
}

/// The daemon over `n` strict bindings to upB in a fresh topology, `flaps` times upB deleted
/// and re-created.
fn daemon_scale_one(n: usize, flaps: usize, started: Instant) -> ScaleRow {
    use std::os::unix::process::CommandExt as _;
    use std::sync::{Arc, atomic::AtomicBool, mpsc};
    phase(&format!("daemon-scale: {n} bindings"), started);
    let s = Scenario::new();
    let host = s.topo.host.path();
    let cgs = ScaleCgroups::new(n);
    let dir = std::env::temp_dir().join(format!("bindguard-bench-ds-{}-{n}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let (ns_path, _unmount) = own_netns_path(&dir, &host);
    let (mut cmd, log) = scale_daemon("", &cgs, &ns_path, &dir);
    // systemd's default soft limit for a service.
    // SAFETY: only getrlimit/setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 1024;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            Ok(())
        });
    }
    let spawned = Instant::now();
    let daemon = DaemonGuard(cmd.spawn().expect("spawn daemon"));
    let pid = daemon.0.id();
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    wait_ready(&log, Duration::from_secs(900));
    let ready_s = spawned.elapsed().as_secs_f64();
    let ready_line = log_text()
        .lines()
        .find(|l| l.contains("ready:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        ready_line.contains(&format!("{n} enforcing")),
        "not all enforcing: {ready_line}"
    );
    let rss_ready = rss_mib(pid);
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let set = bindguard::binding::enforcer::current_set().expect("the program set");
    let ifindex = |id: u64| set.read_policy(id).map_or(u32::MAX, |p| p.ifindex);
    let last = *cgs.ids.last().unwrap();
    let all_at = |want: u32| cgs.ids.iter().all(|&id| ifindex(id) == want);
    assert!(
        all_at(s.topo.host.ifindex(UPLINK_B)),
        "not every binding is on upB"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let st = stop.clone();
    let watcher = in_netns(host.clone(), move || watch_links(UPLINK_B, st, tx));
    std::thread::sleep(Duration::from_millis(100));
    let host_ns = s.topo.host.name.clone();
    let peer_ns = s.topo.peer_b.name.clone();
    // Waits for the last binding (the daemon writes them in config order) to hold `want`, then
    // checks every one; returns when the last one did.
    let settle = |want: u32, what: &str| -> Instant {
        let deadline = Instant::now() + Duration::from_secs(30);
        let at = loop {
            if ifindex(last) == want {
                break Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the last binding never got {want}"
            );
            std::thread::sleep(Duration::from_micros(50));
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !all_at(want) {
            assert!(
                Instant::now() < deadline,
                "{what}: not every binding got {want}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        at
    };
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let (mut closed, mut retargeted) = (Vec::new(), Vec::new());
    for flap in 0..flaps {
        while rx.try_recv().is_ok() {}
        // Not waited for here: `ip link del` returns only after the kernel's teardown (RCU
        // grace periods, ~15 ms), long after RTM_DELLINK went out.
        let mut del = Command::new("ip")
            .args(["-n", &host_ns, "link", "del", UPLINK_B])
            .spawn()
            .expect("ip");
        let t_del = loop {
            let (new, _, at) = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("flap {flap}: no RTM_DELLINK"));
            if !new {
                break at;
            }
        };
        closed.push(ms(t_del, settle(0, "deletion")));
        assert!(del.wait().unwrap().success(), "ip link del {UPLINK_B}");
        ip_batch(
            &host_ns,
            &[format!(
                "link add {UPLINK_B} type veth peer name eth0 netns {peer_ns}"
            )],
        );
        let (index, t_new) = loop {
            let (new, index, at) = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("flap {flap}: no RTM_NEWLINK"));
            if new {
                break (index, at);
            }
        };
        retargeted.push(ms(t_new, settle(index, "creation")));
        // Up, as a VPN brings its interface up: two more RTM_NEWLINKs the daemon skips.
        sh_ip(&host_ns, &["link", "set", UPLINK_B, "up"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.join();
    let rss_after = rss_mib(pid);
    // The daemon's own account: "... in X ms" on its one line per event.
    let own = |needle: &str| -> Vec<f64> {
        log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| {
                l.split(" ms (")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .collect()
    };
    let daemon_del = own("was deleted: closed");
    let daemon_new = own(" appeared (ifindex");
    std::thread::sleep(Duration::from_millis(500));
    let idle_secs = 5;
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(idle_secs));
    let wakeups = (context_switches(pid) - before) as f64 / idle_secs as f64;
    // `apply` over the same config while the daemon runs: the plan, and a run with nothing
    // to change.
    let apply = |extra: &[&str]| {
        let v: Vec<f64> = (0..3)
            .map(|_| {
                timed(
                    Cmd::bindguard()
                        .args(["apply", "--config"])
                        .arg(dir.join("bindguard.toml"))
                        .args(extra),
                )
            })
            .collect();
        quantile(&v, 0.5)
    };
    let plan_ms = apply(&["--dry-run"]);
    let noop_ms = apply(&[]);
    drop(daemon);
    ScaleRow {
        n,
        ready_s,
        fds,
        closed,
        retargeted,
        daemon_del,
        daemon_new,
        rss_ready,
        rss_after,
        wakeups,
        plan_ms,
        noop_ms,
    }
}

/// The daemon-scale phase over `sizes`; returns its block for BENCHMARKS.md.
fn daemon_scale_phase(sizes: &[usize], flaps: usize, started: Instant) -> String {
    let load = || {
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string()
    };
    let load_before = load();
    let rows: Vec<ScaleRow> = sizes
        .iter()
        .map(|&n| daemon_scale_one(n, flaps, started))
        .collect();
    let mut r = String::new();
    let _ = writeln!(r, "Machine: {}", machine());
    let _ = writeln!(
        r,
        "Command: `cargo xtask bench --daemon-scale-only` ({flaps} flaps per size). bindguard: {}.\n",
        binary_kind()
    );
    let _ = writeln!(
        r,
        "### Daemon at scale: N strict bindings on one interface, started under `ulimit -Sn 1024`\n"
    );
    let _ = writeln!(
        r,
        "An observer in the namespace reads RTM_DELLINK/RTM_NEWLINK on its own netlink socket and polls the policy map of the last binding the daemon writes (then checks all of them). Times in ms, p50 / p99 over the flaps.\n"
    );
    let _ = writeln!(
        r,
        "| bindings | start → ready | DELLINK → all closed | NEWLINK → all re-targeted | the daemon's own line: deleted · appeared | fds | RSS ready → after flaps | idle wake-ups/s | `apply --dry-run` | `apply` (no-op) |"
    );
    let _ = writeln!(r, "|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let _ = writeln!(
            r,
            "| {} | {:.2} s | {} | {} | {} · {} | {} | {:.1} → {:.1} MiB | {:.1} | {:.0} ms | {:.0} ms |",
            row.n,
            row.ready_s,
            p50_p99_text(&row.closed),
            p50_p99_text(&row.retargeted),
            p50_p99_text(&row.daemon_del),
            p50_p99_text(&row.daemon_new),
            row.fds,
            row.rss_ready,
            row.rss_after,
            row.wakeups,
            row.plan_ms,
            row.noop_ms
        );
    }
    let _ = writeln!(
        r,
        "\nWhole phase: {:.0} s; load average (1 min) {load_before} at its start, {} at its end.",
        started.elapsed().as_secs_f64(),
        load()
    );
    r
}

/// One HTTP/1.0 GET of `path` on `addr`: (status, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The metrics phase: the daemon over `n` strict bindings with `--metrics`, `scrapes` GETs
/// of /metrics (each a fresh connection, as Prometheus's first scrape) while a loop in one
/// bound cgroup keeps provoking refusals (SO_BINDTODEVICE to the other uplink); then, with the
/// loop stopped, every binding's kernel counters before and after 20 scrapes.
fn metrics_bench(n: usize, scrapes: usize, started: Instant) -> String {
    phase(&format!("metrics: scrape over {n} bindings"), started);
    let s = Scenario::new();
    let host = s.topo.host.path();
    let cgs = ScaleCgroups::new(n);
    let dir = std::env::temp_dir().join(format!(
        "{}-bench-metrics-{}",
        bindguard_tests::name_prefix(),
        std::process::id()
    ));
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let (ns_path, _unmount) = own_netns_path(&dir, &host);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (mut cmd, log) = scale_daemon(&format!("metrics = \"{addr}\"\n"), &cgs, &ns_path, &dir);
    let daemon = DaemonGuard(cmd.spawn().expect("spawn daemon"));
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    wait_ready(&log, Duration::from_secs(600));
    assert!(
        log_text().contains(&format!("{n} enforcing")),
        "not all enforcing: {}",
        log_text()
    );
    assert_eq!(http_get(addr, "/readyz").0, 200);

    // First without load, then under the flood.
    let (quiet_ms, _, quiet_cpu) = scrape_batch(addr, scrapes, n, daemon.0.id());

    // The refusal flood: one process in the first bound cgroup, in the host namespace, that
    // repeats a refused setsockopt for longer than the scrapes take.
    let flood = Cmd::probe()
        .args(["refuse-loop", "600", UPLINK_A])
        .in_cgroup_path(&cgs.paths[0])
        .in_netns(&s.topo.host)
        .spawn();
    struct Flood(std::process::Child, PathBuf);
    impl Drop for Flood {
        fn drop(&mut self) {
            // Everything in the cgroup.
            let _ = fs::write(self.1.join("cgroup.kill"), "1");
            let _ = self.0.wait();
        }
    }
    let flood = Flood(flood, cgs.paths[0].clone());
    let set = bindguard::binding::enforcer::current_set().expect("the program set");
    let refused = |id: u64| set.read_counters(id).map_or(0, |c| c.sockopt_refused);
    std::thread::sleep(Duration::from_millis(500));
    let flood_from = (Instant::now(), refused(cgs.ids[0]));
    let (ms, size, cpu_ms) = scrape_batch(addr, scrapes, n, daemon.0.id());
    let rate = (refused(cgs.ids[0]) - flood_from.1) as f64 / flood_from.0.elapsed().as_secs_f64();
    drop(flood);

    // Scrapes change no counter: every binding's counters before and after 20 scrapes (no
    // loop running; nothing else runs in these cgroups).
    std::thread::sleep(Duration::from_millis(200));
    let all = || -> Vec<bindguard_common::Counters> {
        cgs.ids
            .iter()
            .map(|&id| set.read_counters(id).expect("counters"))
            .collect()
    };
    let before = all();
    for _ in 0..20 {
        http_get(addr, "/metrics");
    }
    let after = all();
    assert!(before == after, "a scrape changed a kernel counter");
    drop(daemon);

    let (p50, p99) = p50_p99(&ms);
    let (q50, q99) = p50_p99(&quiet_ms);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Metrics scrape (`bindguard daemon --metrics`)\n\n\
         {n} strict bindings; {scrapes} GETs of /metrics, each on a new connection, idle and then while \
         a process in one bound cgroup is refused SO_BINDTODEVICE in a loop ({rate:.0} refusals/s). \
         Exposition: {} KiB.\n\n\
         | scrape | wall p50 | wall p99 | daemon CPU per scrape | goal |\n|---|---|---|---|---|\n\
         | {n} bindings, idle | {q50:.1} ms | {q99:.1} ms | {quiet_cpu:.1} ms | ≤ 50 ms |\n\
         | {n} bindings, refusal flood | {p50:.1} ms | {p99:.1} ms | {cpu_ms:.1} ms | ≤ 50 ms |\n\n\
         Wall time is what Prometheus waits for; on this 2-core machine the flood holds one \
         CPU, so it includes waiting for the other. Daemon CPU is what a scrape costs.\n\n\
         Every binding's kernel counters read before and after 20 more scrapes (loop stopped): \
         unchanged.",
        size / 1024
    );
    out
}

/// CPU time (ns) every thread of process `pid` has run so far (schedstat's first field).
fn cpu_ns(pid: u32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `scrapes` GETs of /metrics on `addr`, each checked to carry a series per binding of `n`:
/// wall times (ms), the exposition's size, and the daemon's CPU per scrape (ms; all its
/// threads, nothing else happens in it meanwhile).
fn scrape_batch(
    addr: std::net::SocketAddr,
    scrapes: usize,
    n: usize,
    pid: u32,
) -> (Vec<f64>, usize, f64) {
    let mut ms = Vec::with_capacity(scrapes);
    let mut size = 0;
    let cpu_from = cpu_ns(pid);
    for _ in 0..scrapes {
        let t = Instant::now();
        let (status, body) = http_get(addr, "/metrics");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200);
        size = body.len();
        assert_eq!(
            body.matches("bindguard_refusals_total{hook=\"setsockopt\"")
                .count(),
            n,
            "a series per binding"
        );
    }
    let cpu_ms = (cpu_ns(pid) - cpu_from) as f64 / 1e6 / scrapes as f64;
    (ms, size, cpu_ms)
}

/// The plugin's Synchronize over `n` annotated running pods, as `bindguard_reconcile_duration_
/// seconds` of the plugin reports it: first when the plugin connects to a containerd whose
/// pods all run unbound (each is bound, its sockets audited), then after containerd is killed
/// and restarted under it (each binding is found in place).
fn nri_sync_bench(s: &Scenario, n: usize, started: Instant) -> String {
    use bindguard_tests::containerd::{self, Containerd, NriPlugin, PodSpec};
    phase(&format!("nri-sync: Synchronize over {n} pods"), started);
    if let Some(why) = containerd::unavailable() {
        return format!("\nNRI Synchronize: not measured ({why}).\n");
    }
    let sleep: Vec<String> = vec!["/bin/busybox".into(), "sleep".into(), "86400".into()];
    let mut ctd = Containerd::start(&s.topo.host);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let name = bindguard_tests::unique(&format!("{}n", bindguard_tests::name_prefix()));
        let (pod, result) = ctd.run_pod(&PodSpec {
            name: &name,
            pod_annotations: &[("io.bindguard.dev", UPLINK_B)],
            container_name: "main",
            command: sleep.clone(),
            ..Default::default()
        });
        result.expect("a pod starts (unbound: no plugin yet)");
        ids.push(ctd.cgroup_id(&pod).expect("the pod's cgroup"));
    }
    // The plugin dies before containerd removes the pods: their pins are removed here.
    struct Pins(Vec<u64>);
    impl Drop for Pins {
        fn drop(&mut self) {
            let Ok(lock) = bindguard::kernel::pins::lock() else {
                return;
            };
            for &id in &self.0 {
                let _ = bindguard::kernel::pins::remove_dir(
                    &bindguard::kernel::pins::binding_dir(id),
                    &lock,
                );
                bindguard::kernel::progset::forget_user(id, &lock);
            }
        }
    }
    let _pins = Pins(ids.clone());
    let port = bindguard_tests::prometheus::free_port(Some(&s.topo.host));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ns = Some(&s.topo.host);
    let sync_sum = || -> Option<(f64, u64)> {
        let (_, text) = bindguard_tests::prometheus::get(ns, addr, "/metrics")?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        };
        Some((
            field("bindguard_reconcile_duration_seconds_sum")?,
            field("bindguard_reconcile_duration_seconds_count")? as u64,
        ))
    };
    let wait_count = |count: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some((sum, c)) = sync_sum()
                && c >= count
            {
                return sum;
            }
            assert!(Instant::now() < deadline, "no Synchronize #{count}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let plugin = NriPlugin::spawn(
        &ctd,
        &s.topo.host,
        &["--metrics", &addr.to_string()],
        &bindguard_tests::name_prefix(),
    );
    let first = wait_count(1);
    let all_bound = ids
        .iter()
        .all(|&id| bindguard::kernel::pins::binding_dir(id).exists());
    ctd.restart(&s.topo.host);
    let second = wait_count(2) - first;
    let log = plugin.log_text();
    drop(plugin);
    drop(ctd);
    assert!(all_bound, "Synchronize did not bind every pod: {log}");
    format!(
        "\nNRI Synchronize over {n} annotated running pods (one request; containerd drops a plugin \
         that takes more than 2 s): {:.0} ms when the plugin connects and binds all {n} (each \
         one's sockets audited), {:.0} ms after a containerd restart (every binding in place).\n",
        first * 1e3,
        second * 1e3
    )
}
