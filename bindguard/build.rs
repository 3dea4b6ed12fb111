//! Builds the eBPF object (bindguard-ebpf: nightly, build-std=core, bpf-linker) into OUT_DIR so
//! the loader can embed it. Quiet on success; on failure the inner build's output is the error.
//! `cargo xtask setup` installs what this needs.
//!
//! It also sets what `bindguard --version` names: the git commit (BINDGUARD_GIT_COMMIT) and the
//! FNV-1a 64 of the object (BINDGUARD_EBPF_HASH, the hash `kernel::hooks::object_hash()`
//! computes).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    if let Err(e) = build() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let workspace = manifest_dir.parent().ok_or("no workspace root")?;
    for dir in ["bindguard-ebpf", "bindguard-common"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    // A build whose eBPF object really differs (one extra global), for the upgrade test: two
    // bindguard builds with different program sets, built into separate target dirs.
    println!("cargo:rerun-if-env-changed=BINDGUARD_EBPF_VARIANT");
    let variant = env::var("BINDGUARD_EBPF_VARIANT").is_ok_and(|v| !v.is_empty() && v != "0");
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| e.to_string())?;
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--quiet", "--release"])
        .args(["--package", "bindguard-ebpf", "--bins", "--target", target])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .current_dir(workspace)
        // BTF lets the kernel and bpftool show the maps' types.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!(
                "--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf{}",
                remap_paths(workspace)
                    + if variant {
                        "\x1f--cfg=bindguard_variant"
                    } else {
                        ""
                    }
            ),
        );
    // The outer build's compiler settings must not leak into the nightly bpf build.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(key);
    }
    let out = cmd.output().map_err(|e| {
        format!("running `rustup run nightly cargo` failed ({e}); run `cargo xtask setup`")
    })?;
    if !out.status.success() {
        return Err(format!(
            "building the eBPF programs failed; run `cargo xtask setup` to install nightly rust-src and bpf-linker\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let built = target_dir.join(target).join("release/bindguard");
    copy(&built, &out_dir.join("bindguard"))?;
    // The object's FNV-1a hash names its program set and is shown by --version; computed
    // here because hashing the object at run time costs ~0.4 ms of every attach.
    let object = std::fs::read(&built).map_err(|e| format!("reading {}: {e}", built.display()))?;
    let hash = fnv1a64(&object);
    println!("cargo:rustc-env=BINDGUARD_EBPF_HASH={hash:016x}");
    std::fs::write(out_dir.join("object_hash"), format!("{hash}u64"))
        .map_err(|e| format!("writing the object hash: {e}"))?;
    println!(
        "cargo:rustc-env=BINDGUARD_GIT_COMMIT={}",
        git_commit(workspace)
    );
    // The variant plays the *older* build in the upgrade tests: it ranks one second before
    // its commit, whatever the two object hashes are.
    println!(
        "cargo:rustc-env=BINDGUARD_COMMIT_TIME={}",
        commit_time(workspace).saturating_sub(u64::from(variant))
    );
    Ok(())
}

/// The debug info names source files: without this, the same source checked out in two places
/// builds two objects with two hashes (and `status` calls the other's bindings outdated).
fn remap_paths(workspace: &Path) -> String {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut flags = format!("\x1f--remap-path-prefix={}=/bindguard", workspace.display());
    if let Some(home) = cargo_home {
        flags += &format!("\x1f--remap-path-prefix={}=/cargo", home.display());
    }
    flags
}

/// Same function as `kernel::hooks::object_hash()` (a unit test checks that they agree).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The commit time (Unix seconds) of the checkout, 0 outside one; a packager can set it with
/// BINDGUARD_COMMIT_TIME. It orders builds of one version (`kernel::progset::Rank`); the
/// rebuild triggers are [`git_commit`]'s.
fn commit_time(workspace: &Path) -> u64 {
    println!("cargo:rerun-if-env-changed=BINDGUARD_COMMIT_TIME");
    if let Ok(t) = env::var("BINDGUARD_COMMIT_TIME") {
        return t.trim().parse().unwrap_or(0);
    }
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// The short commit of the checkout, "unknown" outside one (a source tarball); a packager can
/// name it with BINDGUARD_GIT_COMMIT.
fn git_commit(workspace: &Path) -> String {
    println!("cargo:rerun-if-env-changed=BINDGUARD_GIT_COMMIT");
    if let Ok(commit) = env::var("BINDGUARD_GIT_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let Some(commit) = git(&["rev-parse", "--short=7", "HEAD"]) else {
        return "unknown".into();
    };
    // Rebuild when HEAD moves: its file, packed-refs, and the branch it names — or, while that
    // branch is only packed (a fresh clone), the directory its loose ref will appear in.
    // Never a missing path: cargo would rerun the script on every build.
    let path = |name: &str| git(&["rev-parse", "--git-path", name]).map(|p| workspace.join(p));
    let mut watch: Vec<PathBuf> = ["HEAD", "packed-refs"]
        .into_iter()
        .filter_map(path)
        .filter(|p| p.exists())
        .collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]).and_then(|b| path(&b)) {
        match branch.parent() {
            Some(dir) if !branch.exists() && dir.is_dir() => watch.push(dir.into()),
            _ => watch.push(branch),
        }
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    commit
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
}
