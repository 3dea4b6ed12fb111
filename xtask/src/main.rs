//! cargo xtask setup | demo | test | vmtest | bench | dist
//!
//! Every command first runs `setup`, which installs whatever is missing and is a no-op when
//! everything is there, so a fresh machine needs nothing but these commands.

mod containerd;
mod dist;
mod kernels;
mod setup;
mod vmtest;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace());
    c
}

/// Runs a command, failing with its name if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask {what}` creates namespaces, cgroups and eBPF programs: run it as root");
    }
    Ok(())
}

fn build_bins(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args([
        "build",
        "--quiet",
        "--bins",
        "-p",
        "bindguard",
        "-p",
        "bindguard-tests",
    ]);
    if release {
        c.arg("--release");
    }
    run(&mut c)
}

/// The DNS tests' static musl client (tests/fixtures/musl-lookup.rs), beside the test
/// binaries: std only, so rustc alone builds it for musl in well under a second.
/// `cargo xtask demo` sets up no musl target and runs no DNS test: only test and vmtest call
/// this.
fn build_musl_lookup() -> anyhow::Result<()> {
    let src = workspace().join("tests/fixtures/musl-lookup.rs");
    let out = workspace().join("target/debug/musl-lookup");
    let fresh = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if fresh(&out).is_some_and(|o| fresh(&src).is_some_and(|s| o >= s)) {
        return Ok(());
    }
    run(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2024",
                "--target",
                "x86_64-unknown-linux-musl",
                "-C",
                "opt-level=1",
                "-o",
            ])
            .arg(&out)
            .arg(&src),
    )
    .context("building tests/fixtures/musl-lookup.rs for musl")
}

/// A second bindguard whose eBPF object differs (BINDGUARD_EBPF_VARIANT=1), in its own target
/// dir, for the upgrade test (tests/tests/upgrade.rs): two builds with really different program
/// sets. Seeded from target/debug the first time, so only bindguard and its eBPF are rebuilt.
fn build_variant() -> anyhow::Result<()> {
    let target = workspace().join("target");
    let variant = target.join("variant");
    if !variant.join("debug").exists() && target.join("debug").exists() {
        std::fs::create_dir_all(&variant)?;
        run(Command::new("cp")
            .args(["-a"])
            .arg(target.join("debug"))
            .arg(&variant))
        .context("seeding target/variant from target/debug")?;
    }
    run(cargo()
        .args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "bindguard",
            "--target-dir",
        ])
        .arg(&variant)
        .env("BINDGUARD_EBPF_VARIANT", "1"))
}

fn demo() -> anyhow::Result<()> {
    require_root("demo")?;
    setup::ensure_for(setup::Purpose::Demo)?;
    build_bins(false)?;
    run(cargo().args([
        "run",
        "--quiet",
        "-p",
        "bindguard-tests",
        "--bin",
        "bg-demo",
    ]))
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    require_root("bench")?;
    setup::ensure()?;
    build_bins(true)?;
    // What is timed is the binary people install (the static musl build in the .deb and the
    // tarball): it starts in ~0.9 ms where the dynamically linked glibc build takes ~1.5 ms.
    let shipped = dist::build_binary()?;
    run(cargo()
        .env("BINDGUARD_BIN", &shipped)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "bindguard-tests",
            "--bin",
            "bg-bench",
            "--",
        ])
        .args(args))
}

/// The whole suite: formatting, clippy, unit tests and the privileged integration tests.
fn test(args: &[String]) -> anyhow::Result<()> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !is_root() {
        if ci {
            bail!("CI=true but not running as root: the privileged tests cannot run");
        }
        eprintln!("note: not root, privileged tests will be skipped (each says why)");
    }
    setup::ensure()?;
    run(cargo().args(["fmt", "--all", "--check"])).context("formatting: run `cargo fmt --all`")?;
    run(cargo().args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"]))?;
    build_bins(false)?;
    build_musl_lookup()?;
    build_variant()?;
    // The dist tests (tests/tests/dist.rs) check the artefacts that ship, built here.
    let dist_dir = dist::dist()?;
    // Everything both parts run is built before either starts, so nothing is rebuilt under
    // a running VM: the guests drive the release binaries and the same test binaries.
    build_bins(true)?;
    run(cargo()
        .args(["test", "--workspace", "--no-run", "--quiet"])
        .args(args))?;
    // The same suites on the kernels people run (Debian 11, 12, 13), in QEMU, beside the host
    // suite: the guests are emulated on their own CPU time while the host's tests mostly
    // wait on packets, and one after the other they would not fit CI's time.
    let (mut vm_opts, _) = vmtest::parse_args(&[])?;
    vm_opts.quiet = true;
    // The arm64 boots run beside the others (BINDGUARD_VM_ARM64=0 leaves them out): measured
    // from a fresh clone on this 2-core machine, the whole `.ci/run` took 35.5 min with them
    // (arm64-6.1 1.8 min, arm64-6.12 3.1 min), within CI's 45.
    let arm64 = !std::env::var("BINDGUARD_VM_ARM64").is_ok_and(|v| v == "0" || v == "false");
    if !arm64 {
        vm_opts.arches = vec![dist::Arch::X86_64];
    }
    // The arm64 guests' cross-built binaries, before anything runs (see above).
    vmtest::prebuild(&vm_opts)?;
    let matrix = std::thread::spawn(move || vmtest::vmtest(&vm_opts));
    // Tests that cannot run on this kernel say so by name in this file (libtest hides it).
    let skip_log = workspace().join("target/skipped-host.txt");
    let _ = std::fs::remove_file(&skip_log);
    // Stream the output while tallying the per-binary results into one closing line.
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .env("BINDGUARD_DIST", &dist_dir)
        .env("BINDGUARD_SKIP_LOG", &skip_log)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| -> u64 {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(key))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            passed += num(" passed");
            failed += num(" failed");
            ignored += num(" ignored");
        }
    }
    let status = child.wait()?;
    let skipped: Vec<String> = std::fs::read_to_string(&skip_log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    for s in &skipped {
        println!("skipped on this kernel: {s}");
    }
    println!(
        "bindguard suite (host kernel): {} passed, {failed} failed, {} skipped",
        passed.saturating_sub(skipped.len() as u64),
        ignored + skipped.len() as u64
    );
    let host_ok = status.success() && failed == 0 && passed > 0;
    if !host_ok {
        println!("the host suite failed; waiting for the VM matrix to finish");
    }
    let results = matrix
        .join()
        .map_err(|_| anyhow::anyhow!("the VM matrix thread panicked"))?
        .context("the VM matrix")?;
    let matrix_ok = vmtest::summarize(&results);
    if !arm64 {
        println!(
            "  arm64 boots (arm64-6.1, arm64-6.12) not run: BINDGUARD_VM_ARM64=0 left them out; `cargo xtask vmtest --arch aarch64` runs them (~2-3 min per boot)"
        );
    }
    if !status.success() || failed > 0 {
        bail!("the test suite failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    matrix_ok?;
    let (vm_passed, vm_failed) = results
        .iter()
        .fold((0, 0), |(p, f), r| (p + r.passed, f + r.failed));
    println!(
        "bindguard suite with the VM matrix: {} passed, {} failed",
        passed + vm_passed,
        failed + vm_failed
    );
    Ok(())
}

fn vmtest_command(args: &[String]) -> anyhow::Result<()> {
    let (opts, update) = vmtest::parse_args(args)?;
    if update {
        return kernels::update_pins();
    }
    setup::ensure()?;
    // The amd64 guests run the host's builds; arm64 ones only cross-built binaries.
    if vmtest::boots_arch(&opts, dist::Arch::X86_64) {
        build_bins(false)?;
        build_musl_lookup()?;
        build_bins(true)?;
        build_variant()?;
    }
    vmtest::vmtest(&opts).map(|_| ())
}

/// `cargo xtask dist [--arch x86_64|aarch64|all]` (default: all).
fn dist_command(args: &[String]) -> anyhow::Result<()> {
    let arches = match args {
        [] => dist::Arch::ALL.to_vec(),
        [flag, arch] if flag == "--arch" => dist::Arch::parse_list(arch)?,
        _ => bail!("usage: cargo xtask dist [--arch x86_64|aarch64|all]"),
    };
    setup::ensure()?;
    dist::dist_for(&arches).map(|_| ())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::ensure(),
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("vmtest") => vmtest_command(&args[1..]),
        Some("dist") => dist_command(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask setup | demo | test [cargo test args] | vmtest [--kernel K] [-- filter] | bench | dist [--arch x86_64|aarch64|all]"
            );
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
