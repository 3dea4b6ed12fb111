//! A real containerd 2.x for the NRI suite and bench, driven through CRI as kubelet drives it.
//!
//! `cargo xtask setup` extracts Debian's containerd package under target/containerd. Each
//! [`Containerd`] runs it with a private config (its own root, state, CRI and NRI sockets,
//! `restrict_oom_score_adj`, a local pause image) inside a test network namespace, so
//! host-network pods use that namespace's two uplinks. The image (busybox-static, built here
//! as an OCI archive: there is no registry) serves both as the pause image and the pods'.
//! Dropping it removes every pod, stops containerd and its shims and deletes what it made.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Cmd, topology::NetnsGuard, unique};

/// The CRI API (k8s.io/cri-api runtime/v1), client side.
#[allow(clippy::all, clippy::pedantic)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}

use cri::runtime_service_client::RuntimeServiceClient;

/// The one image: static busybox, `sleep` by default.
pub const IMAGE: &str = "localhost/bgn-busybox:1";
/// Capabilities `bindguard nri` runs with: deploy/kubernetes/bindguard-nri.yaml's list.
pub const PLUGIN_CAPS: &str = "-all,+bpf,+net_admin,+sys_admin,+sys_ptrace";

/// Where `cargo xtask setup` put containerd's binaries.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/containerd/usr/bin")
}

/// Why containerd cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let bin = bin_dir();
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if !bin.join(tool).is_file() {
            return Some(format!(
                "{} is missing; run `cargo xtask setup`",
                bin.join(tool).display()
            ));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("/bin/busybox (busybox-static) is missing; run `cargo xtask setup`".into());
    }
    None
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// Writes an OCI image archive of static busybox (`/bin/busybox`, `/bin/sh`) named [`IMAGE`].
fn image_archive(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in [
        "bin", "tmp", "proc", "sys", "dev", "etc", "usr", "lib", "lib64", "probe",
    ] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let oci = dir.join("oci");
    let blobs = oci.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |path: &Path| -> (String, u64) {
        let digest = sha256(path);
        let size = fs::metadata(path).unwrap().len();
        fs::rename(path, blobs.join(&digest)).unwrap();
        (format!("sha256:{digest}"), size)
    };
    let layer = dir.join("layer.tar");
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    );
    let (layer_digest, layer_size) = blob(&layer);
    let config = dir.join("config.json");
    fs::write(
        &config,
        serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/busybox", "sleep", "86400"], "Env": ["PATH=/bin:/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
        })
        .to_string(),
    )
    .unwrap();
    let (config_digest, config_size) = blob(&config);
    let manifest = dir.join("manifest.json");
    fs::write(
        &manifest,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}]
        })
        .to_string(),
    )
    .unwrap();
    let (manifest_digest, manifest_size) = blob(&manifest);
    fs::write(
        oci.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest_digest, "size": manifest_size,
                           "annotations": {"io.containerd.image.name": IMAGE,
                                           "org.opencontainers.image.ref.name": "1"}}]
        })
        .to_string(),
    )
    .unwrap();
    fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = dir.join("image.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&oci)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    archive
}

/// containerd 2.x with a private config, running in `netns`.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub nri_socket: PathBuf,
    /// The cgroup parent of every pod (relative to the cgroup root: `/NAME`).
    pub cgroup_parent: String,
    child: Child,
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

/// What a test asks a pod to be.
#[derive(Default)]
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub pod_annotations: &'a [(&'a str, &'a str)],
    pub container_annotations: &'a [(&'a str, &'a str)],
    /// The container's name in its pod.
    pub container_name: &'a str,
    /// The container's argv.
    pub command: Vec<String>,
    /// Mount the host's /usr, /lib, /lib64 and the workspace's probe (at /probe) read-only.
    pub host_libs: bool,
}

/// A pod made through CRI: sandbox id and, once created, its container's id.
pub struct Pod {
    pub sandbox: String,
    pub container: Option<String>,
}

impl Containerd {
    /// Starts containerd in `netns` and imports the image; panics when it cannot.
    pub fn start(netns: &NetnsGuard) -> Self {
        Self::start_with_prefix(netns, &crate::name_prefix())
    }

    /// [`Containerd::start`] with its directory and pods' cgroup parent named `{prefix}n…`.
    pub fn start_with_prefix(netns: &NetnsGuard, prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(&format!("{prefix}n")));
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let nri_socket = dir.join("nri.sock");
        let cgroup_parent = format!("/{}", unique(&format!("{prefix}n")));
        let d = dir.display();
        let config = format!(
            r#"version = 3
root = '{d}/root'
state = '{d}/state'
[grpc]
  address = '{socket}'
[ttrpc]
  address = '{socket}.ttrpc'
[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = '{nri}'
  plugin_path = '{d}/nri-plugins'
  plugin_config_path = '{d}/nri-conf'
  disable_connections = false
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{IMAGE}'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    conf_dir = '{d}/cni'
"#,
            socket = socket.display(),
            nri = nri_socket.display(),
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        // Killed if this function panics before the Containerd (whose Drop stops it) exists.
        let mut starting = Starting(Some(spawn_containerd(&dir, netns)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        wait_sockets(&dir, &socket, &nri_socket);
        let channel = rt.block_on(connect(socket.clone()));
        let ctd = Self {
            dir,
            socket,
            nri_socket,
            cgroup_parent,
            child: starting.0.take().expect("the child"),
            rt,
            channel,
        };
        let archive = image_archive(&ctd.dir.join("image"));
        run_ok(
            Command::new(bin_dir().join("ctr"))
                .arg("--address")
                .arg(&ctd.socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&archive),
        );
        ctd.wait_cri();
        ctd
    }

    /// SIGKILL, as a crash ends it: the shims and their containers go on running.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts containerd again on the same config and state (after [`Containerd::kill`]),
    /// and waits until CRI answers.
    pub fn restart(&mut self, netns: &NetnsGuard) {
        self.kill();
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(&self.nri_socket);
        self.child = spawn_containerd(&self.dir, netns);
        wait_sockets(&self.dir, &self.socket, &self.nri_socket);
        self.channel = self.rt.block_on(connect(self.socket.clone()));
        self.wait_cri();
    }

    /// Waits until the CRI plugin answers (once its runtime is up).
    fn wait_cri(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self
                .rt
                .block_on(self.client().status(cri::StatusRequest { verbose: false }));
            match status {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("CRI status: {e}"),
            }
        }
    }

    fn client(&self) -> RuntimeServiceClient<tonic::transport::Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    /// Runs a CRI call to completion.
    pub fn call<T>(
        &self,
        f: impl AsyncFnOnce(
            RuntimeServiceClient<tonic::transport::Channel>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        self.rt
            .block_on(f(self.client()))
            .map(tonic::Response::into_inner)
    }

    fn sandbox_config(&self, spec: &PodSpec) -> cri::PodSandboxConfig {
        let node = cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            pid: cri::NamespaceMode::Pod as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: spec.name.into(),
                uid: format!("uid-{}", spec.name),
                namespace: "bgn".into(),
                attempt: 0,
            }),
            log_directory: self.dir.join("logs").display().to_string(),
            annotations: map(spec.pod_annotations),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(node),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox, then CreateContainer and StartContainer. On a refused create or start,
    /// returns the pod (to be removed) and the runtime's error.
    pub fn run_pod(&self, spec: &PodSpec) -> (Pod, Result<(), tonic::Status>) {
        let mut pod = Pod {
            sandbox: self.run_sandbox(spec),
            container: None,
        };
        let id = match self.create_container(&pod.sandbox, spec) {
            Ok(id) => id,
            Err(e) => return (pod, Err(e)),
        };
        pod.container = Some(id.clone());
        (pod, self.start_container(&id))
    }

    /// RunPodSandbox with `spec`'s name and pod annotations; panics if refused.
    pub fn run_sandbox(&self, spec: &PodSpec) -> String {
        let config = self.sandbox_config(spec);
        self.call(async |mut c| {
            c.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
        })
        .unwrap_or_else(|e| panic!("RunPodSandbox {}: {e}", spec.name))
        .pod_sandbox_id
    }

    /// CreateContainer of `spec`'s container in `sandbox` (made from `spec`); its id.
    pub fn create_container(&self, sandbox: &str, spec: &PodSpec) -> Result<String, tonic::Status> {
        let config = self.sandbox_config(spec);
        let mut mounts = Vec::new();
        if spec.host_libs {
            for p in ["/usr", "/lib", "/lib64"] {
                mounts.push(cri::Mount {
                    container_path: p.into(),
                    host_path: p.into(),
                    readonly: true,
                    ..Default::default()
                });
            }
            let probe = crate::probe_bin();
            mounts.push(cri::Mount {
                container_path: "/probe".into(),
                host_path: probe.parent().unwrap().display().to_string(),
                readonly: true,
                ..Default::default()
            });
        }
        let node = cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            pid: cri::NamespaceMode::Pod as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        };
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: spec.container_name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            log_path: format!("{}.log", spec.container_name),
            annotations: map(spec.container_annotations),
            mounts,
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(node),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call(async |mut c| {
            c.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.to_string(),
                config: Some(container.clone()),
                sandbox_config: Some(config.clone()),
            })
            .await
        })
        .map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        self.call(async |mut c| {
            c.start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
        })
        .map(|_| ())
    }

    /// StopContainer (no grace period) and RemoveContainer.
    pub fn remove_container(&self, id: &str) {
        let _ = self.call(async |mut c| {
            c.stop_container(cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout: 0,
            })
            .await
        });
        let _ = self.call(async |mut c| {
            c.remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
        });
    }

    /// The pid of a pod's container, from CRI's verbose status.
    pub fn pid(&self, pod: &Pod) -> Option<i32> {
        let id = pod.container.clone()?;
        let status = self
            .call(async |mut c| {
                c.container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: true,
                })
                .await
            })
            .ok()?;
        let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
        info["pid"].as_i64().map(|p| p as i32).filter(|p| *p > 0)
    }

    /// The id (inode) of the cgroup v2 directory a pod's container runs in.
    pub fn cgroup_id(&self, pod: &Pod) -> Option<u64> {
        let pid = self.pid(pod)?;
        let path = bindguard::binding::cgroup::of_process(pid).ok()?;
        fs::metadata(path).ok().map(|m| m.ino())
    }

    /// StopPodSandbox and RemovePodSandbox, as kubelet deletes a pod.
    pub fn remove_pod(&self, pod: &Pod) {
        let id = pod.sandbox.clone();
        let _ = self.call(async |mut c| {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        });
        let _ = self.call(async |mut c| {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        });
    }

    /// The shims this containerd started (they outlive it).
    fn shims(&self) -> Vec<i32> {
        let needle = self.socket.display().to_string();
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim") && c.contains(&needle)
                })
            })
            .collect()
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The CRI channel. The socket file appears when containerd binds it, a moment before it
/// listens (connect then gets ECONNREFUSED, seen under load): retried for up to 30 s.
async fn connect(socket: PathBuf) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let socket = socket.clone();
        let result = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await;
        match result {
            Ok(channel) => return channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connecting to containerd's CRI socket: {e:?}"),
        }
    }
}

/// containerd on the config in `dir`, in `netns`, logging to `dir`/containerd.log (appended:
/// a restart keeps the first run's lines).
fn spawn_containerd(dir: &Path, netns: &NetnsGuard) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("nsenter")
        .arg(format!("--net={}", netns.path().display()))
        .arg(bin_dir().join("containerd"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", &path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting containerd")
}

/// Waits until containerd made its CRI and NRI sockets.
fn wait_sockets(dir: &Path, socket: &Path, nri_socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() || !nri_socket.exists() {
        assert!(
            Instant::now() < deadline,
            "containerd did not come up: {}",
            fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A containerd being started: killed on drop unless handed on.
struct Starting(Option<std::process::Child>);

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pods = self
            .call(async |mut c| {
                c.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                    .await
            })
            .map(|r| r.items)
            .unwrap_or_default();
        for p in pods {
            self.remove_pod(&Pod {
                sandbox: p.id,
                container: None,
            });
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.shims() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Whatever pods' processes are left, then the pods' cgroups in every hierarchy.
        let name = self.cgroup_parent.trim_start_matches('/');
        if let Ok(mount) = bindguard::binding::cgroup::cgroup2_mount() {
            let _ = fs::write(mount.join(name).join("cgroup.kill"), "1");
        }
        for hierarchy in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_tree(&hierarchy.path().join(name));
        }
        // Mounts the shims left (rootfs, shm), deepest first.
        let prefix = self.dir.display().to_string();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        if std::env::var_os("BGN_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes a cgroup directory tree, children first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `bindguard nri` on a containerd's NRI socket as the DaemonSet runs it: in `netns`, with
/// exactly the DaemonSet's capabilities ([`PLUGIN_CAPS`]), in a cgroup of its own and a
/// private cgroup namespace rooted there (a container's); killed on drop.
pub struct NriPlugin {
    child: Child,
    pub log: PathBuf,
    // After the child: the cgroup goes once the plugin is dead.
    _cgroup: crate::TestCgroup,
}

impl NriPlugin {
    /// Starts the plugin and waits until the runtime has configured and synchronized it.
    pub fn start(ctd: &Containerd, netns: &NetnsGuard) -> Self {
        let plugin = Self::spawn(ctd, netns, &[], &crate::name_prefix());
        plugin.wait_log("configured by", Duration::from_secs(10));
        // Synchronize follows Configure; its log line is the last of a (re)connect.
        std::thread::sleep(Duration::from_millis(200));
        plugin
    }

    /// Starts the plugin with `extra` arguments, in a cgroup named `{prefix}t…`, without
    /// waiting for the runtime.
    pub fn spawn(ctd: &Containerd, netns: &NetnsGuard, extra: &[&str], prefix: &str) -> Self {
        let log = ctd.dir.join(format!("nri-{}.log", unique("p")));
        let file = fs::File::create(&log).unwrap();
        let cgroup = crate::TestCgroup::with_prefix(prefix);
        let child = Cmd::new("unshare")
            .args(["--cgroup", "--", "setpriv"])
            .arg(format!("--bounding-set={PLUGIN_CAPS}"))
            .arg("--")
            .arg(crate::bindguard_bin())
            .arg("nri")
            .arg("--socket")
            .arg(&ctd.nri_socket)
            .args(extra)
            .in_cgroup(&cgroup)
            .in_netns(netns)
            .spawn_logged(file);
        Self {
            child,
            log,
            _cgroup: cgroup,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the plugin's log has `needle`; panics with the log otherwise.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "bindguard nri never logged {needle:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash or an OOM kill ends it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NriPlugin {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "bindguard nri log:\n{}", self.log_text());
        }
    }
}
