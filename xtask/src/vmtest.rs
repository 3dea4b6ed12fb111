//! `cargo xtask vmtest`: the integration tests on Debian's stock kernels, each booted under
//! QEMU with the host's root shared read-only over virtio-9p. The test binaries are the ones
//! built on the host, driving the release builds of bindguard and bg-probe (emulated, a debug
//! build loads the program set 3x slower: 4.9 s against 1.5 s); the guest runs them as root and prints `bindguard-vm: exit=N`, the only
//! verdict read back (besides the libtest tallies and `SKIP name: reason` lines for the
//! summary).
//!
//! KVM is used when it can run a stock guest (probed by booting one); otherwise TCG. /dev/kvm
//! exists on these machines but cannot run one, so TCG it is here.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    cargo,
    dist::Arch,
    kernels::{self, Kernel},
    workspace,
};

/// One boot of the matrix: a kernel series and the command line it gets.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub name: &'static str,
    pub series: &'static str,
    /// Added to the kernel command line (an `lsm=` list for the LSM variants).
    pub cmdline: &'static str,
    pub why: &'static str,
    /// The test binaries it runs.
    pub suites: &'static [&'static str],
    /// The guest's architecture: arm64 boots run cross-built binaries on Debian's arm64
    /// userland under qemu-system-aarch64. What they cannot run (a 32-bit syscall, python3)
    /// the tests skip by name on aarch64.
    pub arch: Arch,
}

/// The matrix. 5.10 runs with and without `bpf` in lsm= (Debian 11 leaves it out; 5.10 has no
/// lsm_cgroup either way); 6.12 runs once more with Ubuntu's default list, which has no `bpf`.
pub const MATRIX: &[Config] = &[
    Config {
        name: "5.10",
        series: "5.10",
        cmdline: "",
        why: "Debian 11, stock lsm= (no bpf)",
        suites: DEBIAN_11,
        arch: Arch::X86_64,
    },
    Config {
        name: "5.10-lsm-bpf",
        series: "5.10",
        cmdline: "lsm=lockdown,yama,integrity,apparmor,bpf",
        why: "Debian 11 with bpf added to lsm=",
        suites: LSM_VARIANT,
        arch: Arch::X86_64,
    },
    Config {
        name: "6.1",
        series: "6.1",
        cmdline: "",
        why: "Debian 12 (Amazon Linux 2023's series), stock lsm= (bpf listed)",
        suites: STOCK,
        arch: Arch::X86_64,
    },
    Config {
        name: "6.12",
        series: "6.12",
        cmdline: "",
        why: "Debian 13 (RHEL 10's series), stock lsm= (bpf listed)",
        suites: STOCK,
        arch: Arch::X86_64,
    },
    Config {
        name: "6.12-ubuntu-lsm",
        series: "6.12",
        cmdline: "lsm=landlock,lockdown,yama,integrity,apparmor",
        why: "Debian 13 with Ubuntu's default lsm= (no bpf)",
        suites: LSM_VARIANT,
        arch: Arch::X86_64,
    },
    Config {
        name: "arm64-6.1",
        series: "6.1",
        cmdline: "",
        why: "Debian 12 arm64, stock lsm= (bpf listed; its lsm_cgroup programs load but cannot link)",
        suites: ARM64,
        arch: Arch::Aarch64,
    },
    Config {
        name: "arm64-6.12",
        series: "6.12",
        cmdline: "",
        why: "Debian 13 arm64, stock lsm= (bpf listed)",
        suites: ARM64,
        arch: Arch::Aarch64,
    },
];

/// What the arm64 boots run: the kernel rows (BPF LSM included), the guarantee and strict
/// mode, as on amd64. Not attack, attack2, binding, verify and exec: the same programs and
/// userspace as the amd64 boots of the same kernel series, and under TCG an arm64 guest
/// costs the time CI does not have (see docs/arm64.md for the measurements).
const ARM64: &[&str] = &["kernel", "guarantee", "strict"];

/// The integration test binaries a stock kernel's boot runs (tests/tests/<name>.rs). Not the
/// daemon, deploy, dist, errors, oci and upgrade suites: they test userspace (systemd, podman,
/// the packages, argument checks) that no kernel changes, and the matrix must fit CI's time
/// under emulation (a process start costs ~90 ms there, an attach ~0.5 s).
const SUITES: &[&str] = &[
    "kernel",
    "guarantee",
    "strict",
    "attack",
    "attack2",
    "binding",
    "verify",
    "exec",
    "dns",
];

/// Debian 11 runs every suite, exec included (the kill-by-pid path: no cgroup.kill before
/// 5.14). What 5.10 cannot do (no MPTCP, no bpf_setsockopt in the address hooks, bpftool
/// unable to list cgroup programs) each test skips by name.
const DEBIAN_11: &[&str] = SUITES;

/// 6.1 and 6.12 run every suite. (exec had been left out on them: its transient cgroup was
/// left behind under emulation. The cause was a SIGTERM arriving during the teardown, after
/// exec had unblocked signals; exec_finishes_its_teardown_under_repeated_sigterm shows it.)
const STOCK: &[&str] = SUITES;

/// A boot that differs from a stock one only in its lsm= list: the rows that list decides
/// (kernel.rs: what attach, status, verify and doctor say, the LSM rows skipped by name) and
/// the guarantee. The other strict rows are the same programs on the same kernel build as the
/// stock boot's, which runs strict and attack*.
const LSM_VARIANT: &[&str] = &["kernel", "guarantee"];

/// What one boot reported.
#[derive(Debug, Default)]
pub struct Outcome {
    pub name: String,
    /// The kernel's release (uname -r).
    pub release: String,
    pub exit: Option<i32>,
    pub passed: u64,
    pub failed: u64,
    /// `name: reason` of each test that said it could not run on this kernel.
    pub skipped: Vec<String>,
    pub failures: Vec<String>,
    pub minutes: f64,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.exit == Some(0) && self.failed == 0 && self.passed > 0
    }
}

/// Options of `cargo xtask vmtest`.
#[derive(Debug, Default)]
pub struct Options {
    /// Configs whose name or series matches (empty: all).
    pub kernels: Vec<String>,
    /// Passed to every test binary (test name filters, --exact, ...).
    pub filter: Vec<String>,
    /// Only these test binaries (tests/tests/<name>.rs); empty: all of [`SUITES`].
    pub suites: Vec<String>,
    /// Only boots of these guest architectures; empty: [`DEFAULT_ARCHES`].
    pub arches: Vec<Arch>,
    pub jobs: usize,
    /// Print a line per finished boot (and a failed boot's whole console) instead of
    /// streaming the consoles: for a run beside the host suite, whose output it would cut up.
    pub quiet: bool,
}

pub fn parse_args(args: &[String]) -> anyhow::Result<(Options, bool)> {
    let mut o = Options {
        jobs: 2,
        ..Options::default()
    };
    let mut update = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kernel" => {
                let k = it
                    .next()
                    .context("--kernel needs 5.10, 6.1, 6.12, a config name or all")?;
                if k != "all" {
                    o.kernels.extend(k.split(',').map(String::from));
                }
            }
            "--jobs" => {
                o.jobs = it
                    .next()
                    .and_then(|j| j.parse().ok())
                    .filter(|j| *j > 0)
                    .context("--jobs needs a number")?
            }
            "--update-pins" => update = true,
            "--arch" => {
                let a = it.next().context("--arch needs x86_64, aarch64 or all")?;
                o.arches.extend(Arch::parse_list(a)?);
            }
            "--suite" => {
                let s = it
                    .next()
                    .context("--suite needs a test binary name, e.g. kernel")?;
                o.suites.extend(s.split(',').map(String::from));
            }
            "--" => o.filter.extend(it.by_ref().cloned()),
            other => bail!(
                "vmtest: unknown argument '{other}'; usage: cargo xtask vmtest [--kernel 5.10|6.1|6.12|arm64-6.1|...|all] [--arch x86_64|aarch64|all] [--suite NAME,...] [--jobs N] [--update-pins] [-- <test filter>]"
            ),
        }
    }
    for s in &o.suites {
        if !SUITES.contains(&s.as_str()) {
            bail!(
                "vmtest: no test suite '{s}'; use one of {}",
                SUITES.join(", ")
            );
        }
    }
    for k in &o.kernels {
        if !MATRIX.iter().any(|c| c.name == k || c.series == k) {
            let names: Vec<&str> = MATRIX.iter().map(|c| c.name).collect();
            bail!(
                "vmtest: no kernel '{k}' in the matrix; use one of {}",
                names.join(", ")
            );
        }
    }
    Ok((o, update))
}

/// The guest architectures a plain `cargo xtask vmtest` (and `cargo xtask test`) boots.
pub const DEFAULT_ARCHES: &[Arch] = &[Arch::X86_64, Arch::Aarch64];

fn selected(o: &Options) -> Vec<Config> {
    let arches = if o.arches.is_empty() {
        DEFAULT_ARCHES
    } else {
        &o.arches[..]
    };
    MATRIX
        .iter()
        .filter(|c| arches.contains(&c.arch))
        .filter(|c| o.kernels.is_empty() || o.kernels.iter().any(|k| k == c.name || k == c.series))
        // A boot that --suite leaves nothing to run is not booted.
        .filter(|c| o.suites.is_empty() || c.suites.iter().any(|s| o.suites.iter().any(|o| o == s)))
        .copied()
        .collect()
}

/// Whether the boots `o` selects include one of `arch`.
pub fn boots_arch(o: &Options, arch: Arch) -> bool {
    selected(o).iter().any(|c| c.arch == arch)
}

/// Where the guest finds bindguard and bg-probe: the host's release builds for amd64 guests;
/// for arm64 the static `dist` builds (the very binary the arm64 package ships).
fn guest_bin_dir(arch: Arch) -> PathBuf {
    match arch {
        Arch::X86_64 => workspace().join("target/release"),
        Arch::Aarch64 => workspace().join("target").join(arch.target()).join("dist"),
    }
}

/// Builds what the guests of `configs` run that the host's own builds do not give: for
/// arm64, bindguard, bg-probe and the test binaries cross-built for aarch64-unknown-linux-musl
/// (static: the guest's userland has no Rust runtime to offer) in the `dist` profile. Called
/// before any VM starts (`cargo xtask test` runs it before the host suite).
pub fn prebuild(o: &Options) -> anyhow::Result<()> {
    let configs = selected(o);
    if configs.iter().any(|c| c.arch == Arch::Aarch64) {
        crate::run(cargo().args([
            "build",
            "--quiet",
            "--profile",
            "dist",
            "--target",
            Arch::Aarch64.target(),
            "-p",
            "bindguard",
            "-p",
            "bindguard-tests",
            "--bin",
            "bindguard",
            "--bin",
            "bg-probe",
        ]))
        .context("cross-building bindguard and bg-probe for arm64")?;
        test_binaries(Arch::Aarch64)?;
        build_aarch32_client()?;
    }
    Ok(())
}

/// The 32-bit ARM client of row 7's test on arm64 (tests/aarch32/compat_join.rs):
/// freestanding, built by rustc and rust-lld alone for armv7-unknown-linux-gnueabihf.
pub const AARCH32_TARGET: &str = "armv7-unknown-linux-gnueabihf";

fn aarch32_client() -> PathBuf {
    workspace().join("target/aarch32/compat-join")
}

fn build_aarch32_client() -> anyhow::Result<()> {
    let out = aarch32_client();
    fs::create_dir_all(out.parent().expect("a parent"))?;
    crate::run(
        Command::new("rustc")
            .args(["--edition", "2024", "--target", AARCH32_TARGET])
            .args([
                "-C",
                "panic=abort",
                "-C",
                "opt-level=2",
                "-C",
                "linker=rust-lld",
            ])
            .args(["-C", "relocation-model=static", "-o"])
            .arg(&out)
            .arg(workspace().join("tests/aarch32/compat_join.rs")),
    )
    .context("building the AArch32 client (`cargo xtask setup` adds its target)")
}

/// The test binaries of `arch`, built (or found up to date) on the host: suite name →
/// executable. arm64's are only the suites its boots run ([`ARM64`]).
fn test_binaries(arch: Arch) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut c = cargo();
    c.args([
        "test",
        "-p",
        "bindguard-tests",
        "--no-run",
        "--message-format=json",
        "--quiet",
    ]);
    let wanted: &[&str] = match arch {
        Arch::X86_64 => SUITES,
        Arch::Aarch64 => {
            c.args(["--profile", "dist", "--target", arch.target()]);
            for s in ARM64 {
                c.args(["--test", s]);
            }
            ARM64
        }
    };
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .context("building the test binaries")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kinds = &v["target"]["kind"];
        if v["reason"] == "compiler-artifact"
            && kinds
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
            && let (Some(name), Some(exe)) =
                (v["target"]["name"].as_str(), v["executable"].as_str())
            && wanted.contains(&name)
        {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    found.sort_by_key(|(n, _)| SUITES.iter().position(|s| s == n));
    if found.len() != wanted.len() {
        bail!(
            "expected the {} test binaries {wanted:?}, cargo built {:?}",
            arch.name(),
            found.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
    }
    Ok(found)
}

/// Writes the script the guest runs: every suite, one test at a time (they share the kernel's
/// state, and a slow emulated CPU has no cores to spare).
fn run_script(
    config: &Config,
    binaries: &[(String, PathBuf)],
    filter: &[String],
) -> anyhow::Result<PathBuf> {
    let dir = kernels::vmtest_dir().join("run");
    fs::create_dir_all(&dir)?;
    let ci = std::env::var("CI").unwrap_or_default();
    let mut s = format!(
        "# generated by cargo xtask vmtest for {}\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/tmp CI='{ci}' RUST_BACKTRACE=1 BINDGUARD_VM='{}'\n\
         export BINDGUARD_SKIP_LOG=/tmp/bindguard-skips\n\
         export BINDGUARD_BIN='{release}/bindguard' BG_PROBE_BIN='{release}/bg-probe'\n\
         export BG_AARCH32_PROBE='{aarch32}'\n\
         cd '{}'\nrc=0\n\
         echo 'bindguard-vm: doctor'\n'{release}/bindguard' doctor\n",
        config.name,
        config.name,
        workspace().join("tests").display(),
        release = guest_bin_dir(config.arch).display(),
        // Only arm64 guests run it (x86 makes its 32-bit calls with int 0x80).
        aarch32 = if config.arch == Arch::Aarch64 {
            aarch32_client().display().to_string()
        } else {
            String::new()
        },
    );
    let filter: Vec<String> = filter
        .iter()
        .map(|f| format!("'{}'", f.replace('\'', "")))
        .collect();
    for (name, exe) in binaries
        .iter()
        .filter(|(n, _)| config.suites.contains(&n.as_str()))
    {
        s += &format!(
            "echo 'bindguard-vm: suite {name}'\n'{}' --test-threads=1 --color never {} || rc=1\n",
            exe.display(),
            filter.join(" ")
        );
    }
    // Tests that could not run here, by name with the reason (libtest hides their output).
    s += "[ -f /tmp/bindguard-skips ] && sed 's/^/SKIP /' /tmp/bindguard-skips\nexit $rc\n";
    let path = dir.join(format!("{}.sh", config.name));
    fs::write(&path, s)?;
    Ok(path)
}

/// Boots `kernel` with `config` and runs `script`, streaming the console prefixed with the
/// config's name (unless `quiet`).
fn boot(
    config: &Config,
    kernel: &Kernel,
    script: &std::path::Path,
    timeout: Duration,
    accel: Accel,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (root, stage2) = kernels::guest_root(config.arch.debian())?;
    let (qemu, console) = match config.arch {
        Arch::X86_64 => ("qemu-system-x86_64", "ttyS0"),
        Arch::Aarch64 => ("qemu-system-aarch64", "ttyAMA0"),
    };
    let foreign = config.arch != Arch::X86_64;
    let append = format!(
        "console={console} quiet panic=-1 oops=panic {} bg.stage2={} bg.run={} bg.modroot={} bg.keep={}{}",
        config.cmdline,
        stage2.display(),
        script.display(),
        kernel.modules_root.display(),
        workspace().display(),
        if foreign { " bg.ws9p=1" } else { "" }
    );
    let share = |path: &std::path::Path, tag: &str| {
        format!(
            "local,path={},mount_tag={tag},security_model=none,readonly=on,multidevs=remap",
            path.display()
        )
    };
    // Niced: beside the host suite, whose tests have deadlines, the guests take what is idle.
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "10", qemu])
        .args(accel.args_for(config.arch))
        .args(["-m", "2048", "-smp", "1"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&kernel.initramfs)
        .args(["-append", &append])
        .args(["-virtfs", &share(&root, "root")]);
    if foreign {
        cmd.args(["-virtfs", &share(&workspace(), "ws")]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {qemu} (Debian's qemu-system-x86 / qemu-system-arm; `cargo xtask setup` installs them)"))?;
    let stdout = child.stdout.take().expect("piped");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            // SAFETY: kill(pid, 0) only asks whether the process exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: the VM is our child; SIGKILL ends a hung guest.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        true
    });
    let mut o = Outcome {
        name: config.name.into(),
        release: kernel.release.clone(),
        ..Outcome::default()
    };
    let mut suite = String::new();
    let mut log = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        let line = line.trim_end_matches('\r');
        if !quiet {
            println!("[{}] {line}", config.name);
        }
        log += line;
        log.push('\n');
        if let Some(s) = line.strip_prefix("bindguard-vm: suite ") {
            suite = s.to_string();
        } else if let Some(code) = line.strip_prefix("bindguard-vm: exit=") {
            o.exit = code.trim().parse().ok();
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| -> u64 {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(key))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            o.passed += num(" passed");
            o.failed += num(" failed");
        } else if let Some(skip) = line.strip_prefix("SKIP ") {
            o.skipped.push(skip.to_string());
        } else if line.starts_with("test ") && line.ends_with("... FAILED") {
            o.failures.push(format!(
                "{suite}::{}",
                line.trim_start_matches("test ")
                    .trim_end_matches(" ... FAILED")
            ));
        }
    }
    let status = child.wait()?;
    let timed_out = watchdog.join().unwrap_or(false);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    o.minutes = started.elapsed().as_secs_f64() / 60.0;
    let logs = kernels::vmtest_dir().join("logs");
    fs::create_dir_all(&logs)?;
    fs::write(logs.join(format!("{}.log", config.name)), &log)?;
    if timed_out {
        o.failures.push(format!(
            "the VM did not finish within {} min",
            timeout.as_secs() / 60
        ));
    } else if o.exit.is_none() {
        o.failures.push(format!(
            "the VM stopped without a verdict ({status}): {}",
            stderr.trim()
        ));
    }
    if quiet && !config.suites.is_empty() {
        let mut report = format!(
            "vmtest: {} finished: {} passed, {} failed in {:.1} min (console: target/vmtest/logs/{}.log)\n",
            config.name, o.passed, o.failed, o.minutes, config.name
        );
        // CI shows only what is printed: a failed boot's whole console, in one piece.
        if !o.ok() {
            for line in log.lines() {
                report += &format!("[{}] {line}\n", config.name);
            }
        }
        print!("{report}");
    }
    Ok(o)
}

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn args_for(self, arch: Arch) -> [&'static str; 4] {
        match (arch, self) {
            (Arch::X86_64, Accel::Kvm) => ["-machine", "accel=kvm", "-cpu", "host"],
            (Arch::X86_64, Accel::Tcg) => ["-machine", "accel=tcg", "-cpu", "max"],
            // Emulated always (no arm64 host). pauth-impdef: QEMU's own pointer-auth hash
            // instead of the architected QARMA, which costs 3x the boot time under TCG
            // (18.6 s against 6.1 s to init, measured here).
            (Arch::Aarch64, _) => ["-machine", "virt,accel=tcg", "-cpu", "max,pauth-impdef=on"],
        }
    }

    /// KVM where it runs a stock guest (a boot to an empty script within 30 s), else TCG.
    /// Here /dev/kvm exists but QEMU fails to set the guest's MSRs.
    fn probe(kernel: &Kernel) -> anyhow::Result<Self> {
        if fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
        {
            return Ok(Accel::Tcg);
        }
        let dir = kernels::vmtest_dir().join("run");
        fs::create_dir_all(&dir)?;
        let script = dir.join("kvm-probe.sh");
        fs::write(&script, "exit 0\n")?;
        let probe = Config {
            name: "kvm-probe",
            series: "",
            cmdline: "",
            why: "",
            suites: &[],
            arch: Arch::X86_64,
        };
        let probed = boot(
            &probe,
            kernel,
            &script,
            Duration::from_secs(30),
            Accel::Kvm,
            true,
        )?;
        Ok(if probed.exit == Some(0) {
            Accel::Kvm
        } else {
            Accel::Tcg
        })
    }
}

/// Runs the selected configs, `jobs` VMs at a time; prints one summary.
pub fn vmtest(o: &Options) -> anyhow::Result<Vec<Outcome>> {
    if !crate::is_root() {
        bail!(
            "`cargo xtask vmtest` boots VMs whose tests need root on the host's files: run it as root"
        );
    }
    let configs = selected(o);
    let pins = kernels::read_pins()?;
    let mut kernels = Vec::new();
    for c in &configs {
        let pin = pins
            .iter()
            .find(|p| p.series == c.series && p.arch == c.arch.debian())
            .with_context(|| {
                format!(
                    "xtask/kernels.pins has no {} {} kernel",
                    c.series,
                    c.arch.debian()
                )
            })?;
        kernels.push(kernels::prepare(pin)?);
    }
    // A foreign architecture's userland, built once here rather than by two boots at once.
    for c in &configs {
        if c.arch != Arch::X86_64 {
            kernels::guest_root(c.arch.debian())?;
        }
    }
    prebuild(o)?;
    let mut binaries: Vec<(Arch, Vec<(String, PathBuf)>)> = Vec::new();
    for arch in Arch::ALL {
        if configs.iter().any(|c| c.arch == arch) {
            let b = test_binaries(arch)?
                .into_iter()
                .filter(|(name, _)| o.suites.is_empty() || o.suites.contains(name))
                .collect();
            binaries.push((arch, b));
        }
    }
    let timeout = Duration::from_secs(
        std::env::var("BINDGUARD_VM_TIMEOUT_MIN")
            .ok()
            .and_then(|m| m.parse::<u64>().ok())
            .unwrap_or(30)
            * 60,
    );
    let accel = match configs
        .iter()
        .zip(&kernels)
        .find(|(c, _)| c.arch == Arch::X86_64)
    {
        Some((_, k)) => Accel::probe(k)?,
        None => Accel::Tcg,
    };
    println!(
        "vmtest: {accel:?} ({} boot(s), {} at a time)",
        configs.len(),
        o.jobs
    );
    // Longest boots first (popped from the end), so the short lsm= variants fill in at the end;
    // among equals the matrix's order, oldest kernel first (5.10 is the slowest to emulate).
    let mut queue: Vec<_> = configs.iter().zip(&kernels).enumerate().collect();
    queue.sort_by_key(|(i, (c, _))| (c.suites.len(), std::cmp::Reverse(*i)));
    let queue: Vec<_> = queue.into_iter().map(|(_, ck)| ck).collect();
    let queue = Mutex::new(queue);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..o.jobs.min(configs.len()) {
            s.spawn(|| {
                loop {
                    let Some((c, k)) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let bins = binaries
                        .iter()
                        .find(|(a, _)| *a == c.arch)
                        .map(|(_, b)| &b[..])
                        .unwrap_or_default();
                    let r = run_script(c, bins, &o.filter)
                        .and_then(|script| boot(c, k, &script, timeout, accel, o.quiet));
                    let r = r.unwrap_or_else(|e| Outcome {
                        name: c.name.into(),
                        failures: vec![format!("{e:#}")],
                        ..Outcome::default()
                    });
                    results.lock().unwrap().push(r);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| MATRIX.iter().position(|c| c.name == r.name));
    if !o.quiet {
        summarize(&results)?;
    }
    Ok(results)
}

/// Prints the summary; fails if a boot did.
pub fn summarize(results: &[Outcome]) -> anyhow::Result<()> {
    println!("\nVM matrix summary");
    for r in results {
        let config = MATRIX.iter().find(|c| c.name == r.name);
        let release = &r.release;
        println!(
            "  {:<16} {:<22} {:>4} passed, {:>2} failed, {:>2} skipped, {:5.1} min  {}  [{}]",
            r.name,
            release,
            r.passed.saturating_sub(r.skipped.len() as u64),
            r.failed,
            r.skipped.len(),
            r.minutes,
            if r.ok() { "ok" } else { "FAILED" },
            config.map_or("", |c| c.why)
        );
        for s in &r.skipped {
            println!("      skipped {s}");
        }
        for f in &r.failures {
            println!("      FAILED  {f}");
        }
    }
    if results.iter().any(|r| !r.ok()) {
        bail!("the VM matrix failed (logs: target/vmtest/logs/)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boot_has_a_pinned_kernel_of_its_architecture() {
        let pins = kernels::read_pins().unwrap();
        for c in MATRIX {
            assert!(
                pins.iter()
                    .any(|p| p.series == c.series && p.arch == c.arch.debian()),
                "{}: no {} {} kernel in xtask/kernels.pins",
                c.name,
                c.series,
                c.arch.debian()
            );
        }
        assert!(MATRIX.iter().any(|c| c.arch == Arch::Aarch64));
    }

    #[test]
    fn arch_selects_boots() {
        let (o, _) = parse_args(&["--arch".into(), "aarch64".into()]).unwrap();
        let names: Vec<_> = selected(&o).iter().map(|c| c.name).collect();
        assert_eq!(names, ["arm64-6.1", "arm64-6.12"]);
        let (o, _) = parse_args(&["--arch".into(), "x86_64".into()]).unwrap();
        assert!(selected(&o).iter().all(|c| c.arch == Arch::X86_64));
        assert!(parse_args(&["--arch".into(), "mips".into()]).is_err());
    }
}
