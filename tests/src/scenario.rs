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
        self.attach_to(Cmd::bindguard(), &self.cg.path, dev)
            .args(extra)
            .run()
    }

    /// `bin attach --cgroup CGROUP --dev DEV --netns <the host namespace>`: `bin` is bindguard,
    /// another build of it, or one given a test environment.
    pub fn attach_to(&self, bin: Cmd, cgroup: &std::path::Path, dev: &str) -> Cmd {
        bin.arg("attach")
            .arg("--cgroup")
            .arg(cgroup)
            .args(["--dev", dev, "--netns"])
            .arg(self.topo.host.path())
    }

    pub fn detach(&self) -> (i32, String, String) {
        self.detach_cgroup(&self.cg.path)
    }

    /// `bindguard detach --cgroup PATH`.
    pub fn detach_cgroup(&self, path: &std::path::Path) -> (i32, String, String) {
        Cmd::bindguard()
            .arg("detach")
            .arg("--cgroup")
            .arg(path)
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
        self.status_json_with(&[])
    }

    /// `status --json` with more arguments (`--links` for link ids).
    pub fn status_json_with(&self, args: &[&str]) -> serde_json::Value {
        let (code, out, err) = Cmd::bindguard().args(["status", "--json"]).args(args).run();
        assert_eq!(code, 0, "status failed: {err}");
        serde_json::from_str(&out).expect("status --json is JSON")
    }

    /// A counter of this cgroup's binding, from `status --json`.
    pub fn counter(&self, name: &str) -> u64 {
        self.status_entry().expect("binding in status")["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// The problem kinds `status` reports for this cgroup's binding (see [`problem_kinds`]).
    pub fn problems(&self) -> Vec<String> {
        problem_kinds(&self.status_entry().expect("binding in status"))
    }

    /// Joins multicast group `g` by membership option `how` (bg-probe mcast) naming `ifindex`,
    /// inside the cgroup as uid 65534 with no capabilities; returns the probe's output.
    pub fn join(&self, how: &str, g: std::net::IpAddr, ifindex: u32) -> String {
        let (_, out, err) = self
            .probe_bound()
            .args(["mcast", how, &g.to_string(), &ifindex.to_string()])
            .as_nobody()
            .run();
        format!("{out}{err}")
    }

    /// This cgroup's entry in `status --json`, if any.
    pub fn status_entry(&self) -> Option<serde_json::Value> {
        self.status_entry_with(&[])
    }

    /// This cgroup's entry in `status --json --links` (every link asked: link ids), if any.
    pub fn status_entry_links(&self) -> Option<serde_json::Value> {
        self.status_entry_with(&["--links"])
    }

    fn status_entry_with(&self, args: &[&str]) -> Option<serde_json::Value> {
        self.status_json_with(args)["bindings"]
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

/// The problem kinds of a `status --json` entry, less `rows-open`: that one says what the
/// kernel cannot do (every strict binding has it where the BPF LSM is not usable), not what is
/// wrong with the binding (tests/tests/kernel.rs tests it).
pub fn problem_kinds(entry: &serde_json::Value) -> Vec<String> {
    entry["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .filter(|k| k != "rows-open")
        .collect()
}

/// A multicast group no other test uses: `tag` tells test files apart, the pid processes.
pub fn mcast_group(tag: u8, v6: bool, n: u32) -> std::net::IpAddr {
    let p = std::process::id() % 250;
    if v6 {
        format!("ff15::{tag}:{p:x}:{n:x}").parse().unwrap()
    } else {
        format!("239.{tag}.{p}.{}", n % 250).parse().unwrap()
    }
}

/// How many programs the kernel lists on `cgroup`.
pub fn program_count(cgroup: &std::path::Path) -> usize {
    attached_programs(cgroup)
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count()
}

/// Waits (up to 3 s) for `cgroup`'s program count to reach `want`: the kernel releases an
/// unpinned link from a workqueue, which lags under load. Returns the last count.
pub fn settled_program_count(cgroup: &std::path::Path, want: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let n = program_count(cgroup);
        if n == want || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Programs the kernel has attached to `cgroup`, one line each (`<program id> <attach type>`,
/// bpftool's names): the kernel's own answer to BPF_PROG_QUERY, independent of bindguard.
/// Asked directly, not through bpftool, whose query Debian 11's kernel refuses.
pub fn attached_programs(cgroup: &std::path::Path) -> String {
    use std::os::fd::AsRawFd as _;
    // The cgroup attach types, by their number in enum bpf_attach_type.
    const TYPES: &[(u32, &str)] = &[
        (0, "ingress"),
        (1, "egress"),
        (2, "sock_create"),
        (3, "sock_ops"),
        (6, "device"),
        (8, "bind4"),
        (9, "bind6"),
        (10, "connect4"),
        (11, "connect6"),
        (12, "post_bind4"),
        (13, "post_bind6"),
        (14, "sendmsg4"),
        (15, "sendmsg6"),
        (18, "sysctl"),
        (19, "recvmsg4"),
        (20, "recvmsg6"),
        (21, "getsockopt"),
        (22, "setsockopt"),
        (29, "getpeername4"),
        (30, "getpeername6"),
        (31, "getsockname4"),
        (32, "getsockname6"),
        (34, "sock_release"),
        (43, "lsm_cgroup"),
        (49, "connect_unix"),
        (50, "sendmsg_unix"),
        (51, "recvmsg_unix"),
        (52, "getpeername_unix"),
        (53, "getsockname_unix"),
    ];
    /// `bpf_attr.query` up to prog_attach_flags (6.0), which a BPF_LSM_CGROUP query must
    /// give with its prog_ids; for every other type it stays zero, as 5.10 requires.
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
        prog_attach_flags: u64,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let dir = std::fs::File::open(cgroup).expect("open the cgroup");
    let mut out = String::new();
    for &(attach_type, name) in TYPES {
        let mut ids = [0u32; 64];
        let mut flags = [0u32; 64];
        let mut q = Query {
            target_fd: dir.as_raw_fd() as u32,
            attach_type,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            pad: 0,
            prog_attach_flags: if name == "lsm_cgroup" {
                flags.as_mut_ptr() as u64
            } else {
                0
            },
        };
        // SAFETY: q is a valid bpf_attr prefix of the size passed; prog_ids (and
        // prog_attach_flags) point at prog_cnt u32s that outlive the call. A kernel without this attach type says EINVAL.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &mut q as *mut Query,
                std::mem::size_of::<Query>(),
            )
        };
        if rc == 0 {
            for id in &ids[..(q.prog_cnt as usize).min(ids.len())] {
                out.push_str(&format!("{id} {name}\n"));
            }
        }
    }
    out
}

/// A shell command whose first instructions send `tok` over TCP and UDP, IPv4 and IPv6
/// (tokens `<tok>-tcp4` ...), with the static busybox client, then sleep: what a container's
/// first instructions are in the NRI and operations tests.
pub fn sender(tok: &str) -> Vec<String> {
    let mut script = String::new();
    for (v, dest) in [("4", DEST4), ("6", DEST6)] {
        script += &format!("echo {tok}-tcp{v} | /bin/busybox nc -w1 {dest} {PORT}; ");
        script += &format!(
            "/bin/busybox tftp -g -r {tok}-udp{v} -l /dev/null {dest} {PORT} 2>/dev/null & "
        );
    }
    script += "exec /bin/busybox sleep 86400";
    vec!["/bin/sh".into(), "-c".into(), script]
}
