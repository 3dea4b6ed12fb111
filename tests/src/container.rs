//! A runc container for the OCI hook tests: a busybox-static rootfs, the host namespace of a
//! topology as its network, and bindguard as its createRuntime/poststop hook. Deleted (and its
//! bundle removed) on drop.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use crate::{bindguard_bin, topology::NetnsGuard, unique};

/// A root filesystem holding only busybox-static and the applets the tests use.
pub fn busybox_rootfs(rootfs: &std::path::Path) {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).expect("rootfs");
    fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static");
    for applet in ["sh", "nc", "tftp", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
}

impl Container {
    /// A bundle whose process runs `script` with busybox sh, in `netns`, annotated with
    /// `annotations`.
    pub fn new(netns: &NetnsGuard, script: &str, annotations: &[(&str, &str)]) -> Self {
        let id = unique("bgc");
        let bundle = std::env::temp_dir().join(format!("bindguard-oci-{id}"));
        let container = Self { id, bundle };
        busybox_rootfs(&container.bundle.join("rootfs"));
        let out = Command::new("runc")
            .arg("spec")
            .current_dir(&container.bundle)
            .output()
            .expect("runc (installed by `cargo xtask setup`)");
        assert!(out.status.success(), "runc spec: {out:?}");
        let path = container.bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        config["root"]["readonly"] = false.into();
        for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = netns.path().to_str().unwrap().into();
            }
        }
        let hook = serde_json::json!([{
            "path": bindguard_bin().to_str().unwrap(),
            "args": ["bindguard", "oci-hook"],
            "timeout": 20,
        }]);
        config["hooks"] = serde_json::json!({ "createRuntime": hook, "poststop": hook });
        config["annotations"] = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        container
    }

    /// `runc run` in the background.
    pub fn spawn(&self) -> Child {
        Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runc run")
    }

    /// The container's cgroup v2 (runc's default: /<id> under the mount).
    pub fn cgroup(&self) -> PathBuf {
        bindguard::binding::cgroup::cgroup2_mount()
            .unwrap()
            .join(&self.id)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.bundle);
    }
}
