//! A real podman (Debian's 4.3, with runc) for the hooks.d tests: private storage, run and tmp
//! directories and a containers.conf in a scratch directory, a cgroup parent of its own, and
//! a hooks directory holding deploy/hooks.d/bindguard.json pointed at the binary under test.
//! On drop its containers are removed, then its cgroups and its directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::{container::busybox_rootfs, dist::ScratchDir, topology::NetnsGuard, unique};

// This VM's hard rlimits are below podman's default ulimits; crun fails on this hybrid-cgroup
// host, so runc; systemd is not PID 1, so cgroupfs and file events; no journald, so k8s-file.
const CONTAINERS_CONF: &str = r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#;

pub struct Podman {
    /// The cgroup parent of this instance's containers: `/<name>` in every hierarchy.
    pub cgroup_parent: String,
    scratch: ScratchDir,
}

impl Podman {
    /// A podman whose hooks.d entry runs `bindguard`.
    pub fn new(bindguard: &Path) -> Self {
        let podman = Self {
            cgroup_parent: unique("bgp"),
            scratch: ScratchDir::new("bgs"),
        };
        let dir = &podman.scratch.path;
        fs::write(dir.join("containers.conf"), CONTAINERS_CONF).unwrap();
        let shipped = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hooks.d/bindguard.json"),
        )
        .unwrap();
        let mut hook: serde_json::Value = serde_json::from_str(&shipped).unwrap();
        hook["hook"]["path"] = bindguard.to_str().unwrap().into();
        fs::create_dir_all(dir.join("hooks")).unwrap();
        fs::write(
            dir.join("hooks/bindguard.json"),
            serde_json::to_vec_pretty(&hook).unwrap(),
        )
        .unwrap();
        busybox_rootfs(&podman.rootfs());
        podman
    }

    fn rootfs(&self) -> PathBuf {
        self.scratch.path.join("rootfs")
    }

    /// `podman` with this instance's storage and configuration.
    pub fn command(&self) -> Command {
        let dir = &self.scratch.path;
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", dir.join("containers.conf"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("runroot"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            // vfs: no overlay mounts to leave behind; --rootfs needs no image layers anyway.
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null());
        cmd
    }

    /// `podman run --rm` under this instance's cgroup parent (podman's default parent,
    /// libpod_parent, would outlive the test); image and command to be added.
    pub fn run(&self) -> Command {
        let mut cmd = self.command();
        cmd.args(["run", "--rm", "--name", &unique("bgn")])
            .arg(format!("--cgroup-parent=/{}", self.cgroup_parent));
        cmd
    }

    /// `podman run --rm` of `sh -c script` on the busybox rootfs, in `netns`, with this
    /// instance's hooks directory, in the background.
    pub fn spawn(&self, netns: &NetnsGuard, annotations: &[(&str, &str)], script: &str) -> Child {
        let mut cmd = self.run();
        cmd.arg("--hooks-dir")
            .arg(self.scratch.path.join("hooks"))
            .arg(format!("--network=ns:{}", netns.path().display()));
        for (k, v) in annotations {
            cmd.arg("--annotation").arg(format!("{k}={v}"));
        }
        cmd.arg("--rootfs")
            .arg(self.rootfs())
            .args(["sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman (installed by `cargo xtask setup`)")
    }

    /// Containers this instance still has (`podman ps -a`).
    pub fn containers(&self) -> Vec<String> {
        let out = self
            .command()
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .output()
            .expect("podman ps");
        assert!(out.status.success(), "podman ps: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--all", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // podman made the parent in every hierarchy (conmon has a child in the v1 ones).
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            remove_cgroup_tree(&h.path().join(&self.cgroup_parent));
        }
        if let Ok(v2) = bindguard::binding::cgroup::cgroup2_mount() {
            remove_cgroup_tree(&v2.join(&self.cgroup_parent));
        }
    }
}

/// rmdir `dir` and its child cgroups, deepest first (cgroup directories hold only files the
/// kernel provides, which rmdir takes along).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
}
