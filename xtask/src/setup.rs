//! `cargo xtask setup`: idempotent installation of everything the build and tests need
//! (`cargo xtask demo` installs only what the demo runs: [`Purpose::Demo`]).
//!
//! - Debian packages the tests and demo use (busybox-static, iproute2, bpftool, util-linux,
//!   runc, podman, systemd for systemd-analyze, dnsmasq-base for the DNS tests);
//! - the x86_64- and aarch64-unknown-linux-musl targets (`cargo xtask dist` builds the static
//!   binaries) and armv7-unknown-linux-gnueabihf (the arm64 boots' AArch32 client);
//! - nightly's rust-src (the eBPF crate builds core for the bpf target);
//! - containerd 2.x for the NRI tests (Debian unstable's package, extracted under
//!   target/containerd: see containerd.rs);
//! - bpf-linker, built against the libLLVM that ships with rustc nightly (same LLVM major,
//!   detected, never hard-coded).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::run;

/// Version of bpf-linker to install; it must offer an `llvm-<major>` feature for nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What a command sets up for: the demo runs one topology and the CLI, so it needs only the
/// build chain, iproute2 and busybox; the suite needs everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Demo,
    All,
}

/// (command that must exist, Debian package providing it, whether the demo uses it)
const TOOLS: &[(&str, &str, bool)] = &[
    ("ip", "iproute2", true),
    ("bpftool", "bpftool", false),
    ("nsenter", "util-linux", true),
    ("setpriv", "util-linux", true),
    ("unshare", "util-linux", true),
    ("runc", "runc", false),
    // `systemd-analyze verify` of deploy/systemd/bindguard.service in the daemon tests
    ("systemd-analyze", "systemd", false),
    ("podman", "podman", false),
    // the DNS tests' resolvers (the -base package: the binary, no service grabbing port 53)
    ("dnsmasq", "dnsmasq-base", false),
    // the VM matrix (cargo xtask vmtest): QEMU, depmod for the guest kernels' modules,
    // xz for trixie's compressed modules
    ("qemu-system-x86_64", "qemu-system-x86", false),
    // the matrix's arm64 boots
    ("qemu-system-aarch64", "qemu-system-arm", false),
    ("depmod", "kmod", false),
    ("xz", "xz-utils", false),
    ("dpkg-deb", "dpkg", false),
    // the metrics tests: a real Prometheus scrapes the daemon and the plugin, and promtool
    // checks the exposition (both in Debian's prometheus package)
    ("prometheus", "prometheus", false),
    ("promtool", "prometheus", false),
];

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(tool).is_file())
}

/// busybox-static, not a dynamically linked busybox: the static-binary tests rely on it.
fn busybox_static_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "busybox-static"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn ensure_packages(purpose: Purpose) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _, demo)| (*demo || purpose == Purpose::All) && !on_path(tool))
        .map(|(_, pkg, _)| *pkg)
        .collect();
    if !busybox_static_installed() {
        missing.push("busybox-static");
    }
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "-o",
            "Dpkg::Use-Pty=0",
        ])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing Debian packages (needs root)")
}

fn ensure_rust_components(purpose: Purpose) -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("setup: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if purpose == Purpose::Demo {
        // clippy and rustfmt check the suite; the musl target builds the release.
        return Ok(());
    }
    let stable = output(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for comp in ["clippy", "rustfmt"] {
        if !stable.lines().any(|l| l.starts_with(comp)) {
            run(Command::new("rustup").args(["component", "add", comp]))?;
        }
    }
    // Both release architectures: the toolchain's rust-lld links the arm64 build with musl's
    // self-contained CRT (.cargo/config.toml), so no cross gcc is needed.
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    // And 32-bit ARM for the arm64 boots' AArch32 client (tests/aarch32).
    let wanted = crate::dist::Arch::ALL
        .map(|a| a.target())
        .into_iter()
        .chain([crate::vmtest::AARCH32_TARGET]);
    for target in wanted {
        if !targets.lines().any(|l| l.trim() == target) {
            eprintln!("setup: adding the {target} target");
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    Ok(())
}

/// The major version of the LLVM inside rustc nightly, e.g. 22.
fn nightly_llvm_major() -> anyhow::Result<u32> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.trim().parse().ok())
        .context("rustc +nightly -vV names no LLVM version")
}

/// bpf-linker works if it starts in nightly's environment (where its libLLVM lives).
fn bpf_linker_works() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "bpf-linker", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_bpf_linker(target_dir: &Path) -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let major = nightly_llvm_major()?;
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    // nightly ships libLLVM.so.<major>.<minor>-rust-<version>; bpf-linker's build wants
    // <prefix>/lib/libLLVM.so.
    let libdir = sysroot.join("lib");
    let lib = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        })
        .with_context(|| format!("no libLLVM.so.{major}* in {}", libdir.display()))?;
    let prefix = target_dir.join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link)?;
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}); this takes a few minutes",
        lib.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "--locked",
            "--force",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not start under `rustup run nightly`");
    }
    Ok(())
}

/// Installs whatever is missing for everything; quiet when nothing is.
pub fn ensure() -> anyhow::Result<()> {
    ensure_for(Purpose::All)
}

/// Installs whatever `purpose` needs and is missing.
pub fn ensure_for(purpose: Purpose) -> anyhow::Result<()> {
    let target_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/xtask");
    ensure_packages(purpose)?;
    ensure_rust_components(purpose)?;
    ensure_bpf_linker(&target_dir)?;
    if purpose == Purpose::All {
        crate::containerd::ensure()?;
    }
    Ok(())
}
