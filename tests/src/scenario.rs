//! One test's world: the two-uplink topology, listeners in both peers and a fresh cgroup.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{
    Cmd, Listener, Peer, TestCgroup, Topology,
    listener::PORT,
    topology::{DEST4, DEST6},
};

pub struct Scenario {
    // Drop order: listeners stop, the cgroup (and its pins) goes, then the namespaces.
    pub listener: Listener,
    pub cg: TestCgroup,
    pub topo: Topology,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// Every (protocol, IPv6?) pair the traffic tests cover.
pub const FLOWS: [(Proto, bool); 4] = [
    (Proto::Udp, false),
    (Proto::Tcp, false),
    (Proto::Udp, true),
    (Proto::Tcp, true),
];

pub fn dest(v6: bool) -> &'static str {
    if v6 { DEST6 } else { DEST4 }
}

/// A token no other send in this process carries.
pub fn token(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "bgtok-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The argv of a statically linked client nobody here wrote, sending `tok` to the peers:
/// busybox nc over TCP, or busybox tftp over UDP (its read request carries `tok` as the file
/// name; it then waits for an answer that never comes).
pub fn busybox_client(tok: &str, udp: bool, v6: bool) -> Vec<String> {
    let port = PORT.to_string();
    if udp {
        [
            "/bin/busybox",
            "tftp",
            "-g",
            "-r",
            tok,
            "-l",
            "/dev/null",
            dest(v6),
            &port,
        ]
        .map(String::from)
        .to_vec()
    } else {
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo {tok} | /bin/busybox nc -w1 {} {port}", dest(v6)),
        ]
    }
}

impl Scenario {
    pub fn new() -> Self {
        let topo = Topology::new();
        let listener = Listener::start(&topo);
        Self {
            listener,
            cg: TestCgroup::new(),
            topo,
        }
    }

    /// `bindguard attach --cgroup <cg> --dev <dev> --netns <host> [extra]`; panics unless it
    /// succeeds.
    pub fn attach(&self, dev: &str, extra: &[&str]) {
        let (code, out, err) = self.attach_result(dev, extra);
        assert_eq!(code, 0, "attach failed: {out}{err}");
    }

    pub fn attach_result(&self, dev: &str, extra: &[&str]) -> (i32, String, String) {
        Cmd::bindguard()
            .arg("attach")
            .arg("--cgroup")
            .arg(&self.cg.path)
            .args(["--dev", dev, "--netns"])
            .arg(self.topo.host.path())
            .args(extra)
            .run()
    }

    pub fn detach(&self) -> (i32, String, String) {
        Cmd::bindguard()
            .arg("detach")
            .arg("--cgroup")
            .arg(&self.cg.path)
            .run()
    }

    /// The probe, inside the cgroup and the host namespace.
    pub fn probe_bound(&self) -> Cmd {
        Cmd::probe().in_cgroup(&self.cg).in_netns(&self.topo.host)
    }

    /// The probe in the host namespace but outside the cgroup.
    pub fn probe_unbound(&self) -> Cmd {
        Cmd::probe().in_netns(&self.topo.host)
    }

    /// Sends a fresh token with `probe`; returns (probe exit code, probe output, token).
    pub fn send(&self, probe: Cmd, proto: Proto, v6: bool) -> (i32, String, String) {
        let tok = token(proto.as_str());
        let (code, out, err) = probe
            .args(["send", proto.as_str(), dest(v6), &PORT.to_string(), &tok])
            .run();
        (code, format!("{out}{err}"), tok)
    }

    /// Which peers received `tok`: waits for the first arrival, then a little longer so a
    /// second copy by the other path would be seen too.
    pub fn receivers(&self, tok: &str) -> Vec<Peer> {
        let first = self.listener.wait_for(tok, Duration::from_secs(5));
        if first.is_empty() {
            return first;
        }
        std::thread::sleep(Duration::from_millis(150));
        self.listener.peers_with(tok)
    }

    /// Sends with `probe` and returns who received it; panics if the send itself failed.
    pub fn delivered_to(&self, probe: Cmd, proto: Proto, v6: bool) -> Vec<Peer> {
        let (code, out, tok) = self.send(probe, proto, v6);
        assert_eq!(code, 0, "{proto:?} v6={v6} send failed: {out}");
        self.receivers(&tok)
    }

    /// Runs the busybox client (inside the cgroup or not) in the host namespace and returns
    /// who received its token.
    pub fn busybox_delivered(&self, in_cgroup: bool, udp: bool, v6: bool) -> Vec<Peer> {
        let tok = token("busybox");
        let argv = busybox_client(&tok, udp, v6);
        let cmd = Cmd::new(&argv[0]).args(&argv[1..]);
        let cmd = if in_cgroup {
            cmd.in_cgroup(&self.cg)
        } else {
            cmd
        };
        let child = cmd.in_netns(&self.topo.host).spawn();
        let got = self.receivers(&tok);
        // tftp is still waiting for its answer: only the datagram mattered.
        let _ = crate::run::wait_output(child, Duration::from_secs(1));
        got
    }

    pub fn status_json(&self) -> serde_json::Value {
        let (code, out, err) = Cmd::bindguard().args(["status", "--json"]).run();
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    /// This cgroup's entry in `status --json`, if any.
    pub fn status_entry(&self) -> Option<serde_json::Value> {
        self.status_json()["bindings"]
            .as_array()?
            .iter()
            .find(|b| b["cgroup_id"] == self.cg.id)
            .cloned()
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

/// Programs the kernel has attached to `cgroup` (bpftool's view, independent of bindguard).
pub fn attached_programs(cgroup: &std::path::Path) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
