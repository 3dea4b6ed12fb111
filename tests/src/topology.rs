//! Network namespaces, the two-uplink topology and test cgroups, as guards.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::unique;

/// Where the peers live and what they own.
pub const DEST4: &str = "203.0.113.10";
pub const DEST6: &str = "2001:db8:ff::10";
pub const HOST_A4: &str = "192.0.2.1";
pub const PEER_A4: &str = "192.0.2.2";
pub const HOST_B4: &str = "198.51.100.1";
pub const PEER_B4: &str = "198.51.100.2";
pub const HOST_A6: &str = "2001:db8:a::1";
pub const PEER_A6: &str = "2001:db8:a::2";
pub const HOST_B6: &str = "2001:db8:b::1";
pub const PEER_B6: &str = "2001:db8:b::2";
/// The host's uplinks (names are per namespace, so every topology can use the same ones).
pub const UPLINK_A: &str = "upA";
pub const UPLINK_B: &str = "upB";

/// Runs a command and panics with its stderr if it fails (set-up must not half-succeed).
pub fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A named network namespace (`ip netns add`), deleted on drop with everything in it.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        // Link-local addresses must be usable at once, not after seconds of DAD.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The IPv6 link-local address of `dev` in this namespace.
    pub fn link_local(&self, dev: &str) -> String {
        let out = Command::new("ip")
            .args([
                "-n", &self.name, "-6", "-o", "addr", "show", "dev", dev, "scope", "link",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no link-local address on {dev}: {text}"))
            .to_string()
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full);
    }

    /// `ip -n NAME -batch -`: one process for many commands (under emulation every exec
    /// costs tens of milliseconds, and a topology needs dozens).
    pub fn ip_batch(&self, commands: &[String]) {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running ip");
        let mut input = commands.join("\n");
        input.push('\n');
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ip -n {} -batch failed: {}\n{input}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Writes a sysctl inside the namespace: from a thread that joined it, since
    /// /proc/sys/net is the opener's namespace (no process to start).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let ns = fs::File::open(self.path()).expect("open netns");
        let value = value.to_string();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            fs::write(&path, &value).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        })
        .join()
        .expect("sysctl thread");
    }

    pub fn ifindex(&self, ifname: &str) -> u32 {
        let ns = bindguard::binding::netns::Netns::open(&self.path()).expect("open netns");
        bindguard::binding::netdev::resolve(ifname, &ns)
            .expect("interface exists")
            .ifindex
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The seed scenario: `host` with uplinks upA (metric 10) and upB (metric 20), each to a peer
/// that owns DEST4/DEST6 and routes back.
pub struct Topology {
    // Field order = drop order: peers go first, then the host.
    pub peer_a: NetnsGuard,
    pub peer_b: NetnsGuard,
    pub host: NetnsGuard,
}

/// One uplink: a veth from `host` (named `up`) to `peer` (named eth0), with addresses, both
/// ends up, the peer's default routes back, and a host default route of `metric`. Three `ip`
/// processes: the link, the peer's side, the host's side.
#[allow(clippy::too_many_arguments)]
fn link_uplink(
    host: &NetnsGuard,
    peer: &NetnsGuard,
    up: &str,
    host4: &str,
    peer4: &str,
    host6: &str,
    peer6: &str,
    metric: &str,
) {
    host.ip(&[
        "link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", &peer.name,
    ]);
    peer.ip_batch(&[
        format!("addr add {peer4}/24 dev eth0"),
        format!("addr add {peer6}/64 dev eth0 nodad"),
        "link set eth0 up".into(),
        format!("route add default via {host4}"),
        format!("route add default via {host6}"),
    ]);
    host.ip_batch(&[
        format!("addr add {host4}/24 dev {up}"),
        format!("addr add {host6}/64 dev {up} nodad"),
        format!("link set {up} up"),
        format!("route add default via {peer4} dev {up} metric {metric}"),
        format!("route add default via {peer6} dev {up} metric {metric}"),
    ]);
}

impl Topology {
    pub fn new() -> Self {
        Self::with_prefix(&crate::name_prefix())
    }

    /// With namespaces named `{prefix}h…`, `{prefix}a…`, `{prefix}b…` (engineers who share a
    /// machine each keep to their own prefix).
    pub fn with_prefix(prefix: &str) -> Self {
        let host = NetnsGuard::new(&format!("{prefix}h"));
        let peer_a = NetnsGuard::new(&format!("{prefix}a"));
        let peer_b = NetnsGuard::new(&format!("{prefix}b"));
        for (up, peer, host4, peer4, host6, peer6, metric) in [
            (UPLINK_A, &peer_a, HOST_A4, PEER_A4, HOST_A6, PEER_A6, "10"),
            (UPLINK_B, &peer_b, HOST_B4, PEER_B4, HOST_B6, PEER_B6, "20"),
        ] {
            link_uplink(&host, peer, up, host4, peer4, host6, peer6, metric);
            peer.ip_batch(&[
                format!("addr add {DEST4}/32 dev lo"),
                format!("addr add {DEST6}/128 dev lo"),
            ]);
            // Replies and strays must not be dropped by reverse-path checks in the peers.
            peer.sysctl("net.ipv4.conf.all.rp_filter", "0");
            peer.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
        }
        host.sysctl("net.ipv4.conf.all.rp_filter", "0");
        Self {
            peer_a,
            peer_b,
            host,
        }
    }

    /// Deletes uplink B (both ends of the veth: peer B loses its eth0 too), as a VPN
    /// disconnect deletes its interface.
    pub fn delete_uplink_b(&self) {
        self.host.ip(&["link", "del", UPLINK_B]);
    }

    /// Re-creates uplink B as [`Topology::new`] made it: a new ifindex on both ends.
    pub fn recreate_uplink_b(&self) {
        link_uplink(
            &self.host,
            &self.peer_b,
            UPLINK_B,
            HOST_B4,
            PEER_B4,
            HOST_B6,
            PEER_B6,
            "20",
        );
        self.peer_b.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

/// A cgroup made for one test; on drop its binding's pins are removed, its processes killed,
/// and it is deleted.
pub struct TestCgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl TestCgroup {
    pub fn new() -> Self {
        Self::with_prefix(&crate::name_prefix())
    }

    /// Named `{prefix}t…` under the cgroup2 mount.
    pub fn with_prefix(prefix: &str) -> Self {
        let mount = bindguard::binding::cgroup::cgroup2_mount().expect("a cgroup2 mount");
        Self::create(mount.join(unique(&format!("{prefix}t"))))
    }

    /// A child cgroup of this one.
    pub fn child(&self, name: &str) -> Self {
        Self::create(self.path.join(name))
    }

    fn create(path: PathBuf) -> Self {
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        let id = fs::metadata(&path).expect("stat cgroup").ino();
        Self { path, id }
    }

    pub fn pins(&self) -> PathBuf {
        bindguard::kernel::pins::binding_dir(self.id)
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let pins = self.pins();
        if pins.exists()
            && let Ok(lock) = bindguard::kernel::pins::lock()
        {
            let _ = bindguard::kernel::pins::remove_dir(&pins, &lock);
            bindguard::kernel::progset::forget_user(self.id, &lock);
        }
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while remove_tree(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes a cgroup and the cgroups a test's processes made below it, deepest first.
fn remove_tree(path: &std::path::Path) -> std::io::Result<()> {
    for e in fs::read_dir(path)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = remove_tree(&e.path());
        }
    }
    fs::remove_dir(path)
}
