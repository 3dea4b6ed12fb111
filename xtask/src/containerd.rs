//! containerd 2.x for the NRI suite and bench (`tests/tests/nri.rs`): Debian's stable
//! releases ship containerd 1.6, which has no NRI, so setup takes unstable's package with
//! `apt-get download` under a private apt configuration (the host's sources are untouched)
//! and extracts it with `dpkg -x` under target/containerd. Nothing is installed: the tests
//! run these binaries with a private config. The package needs only runc (installed by
//! setup from the host's own suite) and libc ≥ 2.34.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, bail};

use crate::{kernels::Apt, run, workspace};

const SUITE: &str = "sid";
const PACKAGE: &str = "containerd";

/// Where the package is extracted; `tests/src/containerd.rs` looks for `usr/bin` there.
pub fn dir() -> PathBuf {
    workspace().join("target/containerd")
}

/// The major version of an extracted containerd, if it runs.
fn major(bin: &std::path::Path) -> Option<u32> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    // "containerd github.com/containerd/containerd/v2 2.1.9+unknown"
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)?
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

pub fn ensure() -> anyhow::Result<()> {
    let dir = dir();
    let bin = dir.join("usr/bin/containerd");
    if major(&bin).is_some_and(|m| m >= 2) {
        return Ok(());
    }
    eprintln!("setup: fetching containerd 2.x (Debian {SUITE}) for the NRI tests");
    let apt = Apt::at(workspace().join("target/containerd-apt"), &[SUITE], false)?;
    apt.update()?;
    let debs = workspace().join("target/containerd-apt/debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    run(apt
        .cmd("apt-get")
        .args(["download", "-qq", PACKAGE])
        .current_dir(&debs))
    .with_context(|| format!("apt-get download {PACKAGE} (Debian {SUITE})"))?;
    let deb = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", debs.display()))?;
    let _ = fs::remove_dir_all(&dir);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&dir))
        .with_context(|| format!("extracting {}", deb.display()))?;
    match major(&bin) {
        Some(m) if m >= 2 => Ok(()),
        other => bail!(
            "{} from {} does not run as containerd 2.x (version {other:?})",
            bin.display(),
            deb.display()
        ),
    }
}
