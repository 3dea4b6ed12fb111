//! The artefacts `cargo xtask dist` ships, for tests/tests/dist.rs: found in $BINDGUARD_DIST
//! (set by `cargo xtask test`), else in the workspace's dist/.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::unique;

pub struct Dist {
    pub dir: PathBuf,
}

impl Dist {
    /// Panics (never skips) when the artefacts are missing: they are what the tests check.
    pub fn find() -> Self {
        let dir = std::env::var_os("BINDGUARD_DIST")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("dist"));
        let dist = Self { dir };
        for p in [dist.tarball(), dist.deb()] {
            assert!(
                p.is_file(),
                "{} is missing: run `cargo xtask dist` (`cargo xtask test` does)",
                p.display()
            );
        }
        dist
    }

    /// `bindguard-<version>-x86_64-linux-musl`: the tarball's top directory.
    pub fn name() -> String {
        Self::name_for("x86_64")
    }

    /// The same for `arch` (`x86_64`, `aarch64`).
    pub fn name_for(arch: &str) -> String {
        format!(
            "bindguard-{}-{arch}-linux-musl",
            bindguard::version::VERSION
        )
    }

    pub fn tarball(&self) -> PathBuf {
        self.tarball_for("x86_64")
    }

    pub fn tarball_for(&self, arch: &str) -> PathBuf {
        self.dir.join(format!("{}.tar.gz", Self::name_for(arch)))
    }

    pub fn deb(&self) -> PathBuf {
        self.deb_for("amd64")
    }

    /// The .deb of Debian architecture `arch` (`amd64`, `arm64`).
    pub fn deb_for(&self, arch: &str) -> PathBuf {
        self.dir.join(format!(
            "bindguard_{}_{arch}.deb",
            bindguard::version::VERSION
        ))
    }

    /// The tarball unpacked into a scratch directory; returns it and the release directory.
    pub fn unpack(&self) -> (ScratchDir, PathBuf) {
        self.unpack_for("x86_64")
    }

    /// The tarball of `arch` unpacked, as [`Dist::unpack`].
    pub fn unpack_for(&self, arch: &str) -> (ScratchDir, PathBuf) {
        let tarball = self.tarball_for(arch);
        assert!(
            tarball.is_file(),
            "{} is missing: run `cargo xtask dist` (`cargo xtask test` does)",
            tarball.display()
        );
        let scratch = ScratchDir::new("bgu");
        crate::topology::sh(
            "tar",
            &[
                "-xzf",
                tarball.to_str().unwrap(),
                "-C",
                scratch.path.to_str().unwrap(),
            ],
        );
        let release = scratch.path.join(Self::name_for(arch));
        (scratch, release)
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The checkout's short commit, as build.rs names it.
pub fn git_commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(workspace())
        .output()
        .expect("git");
    assert!(out.status.success(), "not a git checkout: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// A directory under the temp dir, removed on drop, but never through a mount point: a test
/// that mounts inside it (in a private mount namespace, so nothing should remain) must not
/// make the removal walk into /proc or /sys.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("bindguard-{}", unique(prefix)));
        fs::create_dir_all(&path).expect("scratch dir");
        Self { path }
    }
}

/// Mount points at or under `dir`, from /proc/self/mountinfo (octal escapes left as they are:
/// the test paths have none).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(String::from)
        .collect()
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let mounts = mounts_under(&self.path);
        if mounts.is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!("leaving {}: still mounted: {mounts:?}", self.path.display());
        }
    }
}
