//! `verify`: proves a binding on the live kernel.
//!
//! A probe process joins the cgroup and the binding's network namespace and, as a real member,
//! creates sockets and reads back what the kernel did to them. Its routing decisions are
//! compared with a reference socket bound the classic way (setsockopt SO_BINDTODEVICE) made by
//! bindguard outside the cgroup. A UDP connect() only looks the route up: verify sends nothing,
//! but for a binding with `--dns` one DNS query (the root's NS) to the first nameserver of
//! /etc/resolv.conf, whose answer proves lookups work through the binding.
//! Then every socket the cgroup's processes already hold is audited.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::Context as _;
use bindguard_common::{Policy, flags};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    binding::{
        audit,
        audit::UnboundSocket,
        cgroup::{self, Cgroup},
        enforcer, netdev,
        netns::{self, Netns},
    },
    error::{printable, printable_path},
    kernel::{
        link, pins,
        sockopt::{get_int, new_socket, set_bindtodevice},
    },
};

/// Destinations whose routes are compared when `--to` is not given (documentation ranges; a
/// UDP connect sends nothing).
pub const DEFAULT_TARGETS: [&str; 2] = ["203.0.113.1", "2001:db8::1"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
    /// Works, but something nearby may break traffic; does not fail verify.
    Warn,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: if ok { Outcome::Pass } else { Outcome::Fail },
            detail: detail.into(),
        }
    }

    fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Skip,
            detail: detail.into(),
        }
    }
}

/// What the probe is told (on stdin, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeInput {
    pub ifindex: u32,
    pub ifname: String,
    pub mark: Option<u32>,
    pub priority: Option<u32>,
    pub strict: bool,
    pub allow_loopback: bool,
    pub targets: Vec<IpAddr>,
    /// The binding's `--dns` resolvers (empty: none).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}

/// The route a UDP connect() took: the source address chosen, or the errno.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Route {
    Source(IpAddr),
    Errno(i32),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Source(ip) => write!(f, "source {ip}"),
            Route::Errno(e) => write!(f, "{}", std::io::Error::from_raw_os_error(*e)),
        }
    }
}

/// What the probe reports (on stdout, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeOutput {
    pub checks: Vec<Check>,
    pub routes: Vec<(IpAddr, Route)>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(serialize_with = "crate::binding::cgroup::serialize_lossy")]
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    /// The cgroup whose binding applies (the cgroup itself or an ancestor).
    #[serde(serialize_with = "crate::binding::cgroup::serialize_lossy")]
    pub binding_cgroup: PathBuf,
    pub ifname: String,
    pub ifindex: u32,
    pub mode: String,
    pub checks: Vec<Check>,
    pub unbound_sockets: Vec<UnboundSocket>,
    pub ok: bool,
    pub elapsed_ms: u64,
}

/// UDP connect() to `target` (port 9, discard) on `sock`; nothing is sent.
fn route_of(sock: &UdpSocket, target: IpAddr) -> Route {
    match sock
        .connect(SocketAddr::new(target, 9))
        .and_then(|()| sock.local_addr())
    {
        Ok(local) => Route::Source(local.ip()),
        Err(e) => Route::Errno(e.raw_os_error().unwrap_or(0)),
    }
}

fn udp_socket_for(target: IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
}

/// The reference: a socket bound the classic way, in the binding's namespace, outside the cgroup.
pub fn reference_route(ifname: &str, target: IpAddr) -> Route {
    let sock = match udp_socket_for(target) {
        Ok(s) => s,
        Err(e) => return Route::Errno(e.raw_os_error().unwrap_or(0)),
    };
    if let Err(e) = set_bindtodevice(sock.as_raw_fd(), ifname) {
        return Route::Errno(e.raw_os_error().unwrap_or(0));
    }
    route_of(&sock, target)
}

/// The nameservers a resolv.conf names, in order.
fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        // A scoped IPv6 address (fe80::1%eth0) keeps its address part.
        .filter_map(|a| a.trim().split('%').next()?.parse().ok())
        .collect()
}

/// Where the probe's lookups go. With `--dns`: one query for the root's NS records to the
/// first nameserver, sent unconnected as musl does; it passes when an answer arrives from the
/// address asked (the binding sent it to its resolver through the interface and gave the
/// reply the source back). Without: where lookups would go, sending nothing.
fn dns_check(input: &ProbeInput, resolv_conf: &Path) -> Check {
    const NAME: &str = "dns";
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    let Some(&ns) = nameservers(&text).first() else {
        return Check::skip(
            NAME,
            format!("{} names no nameserver", resolv_conf.display()),
        );
    };
    let stub = ns.is_loopback();
    if input.dns.is_empty() {
        // Strict mode refuses DNS to loopback without --dns, --allow-loopback or not (row 27).
        return if stub && input.strict {
            Check {
                name: NAME.into(),
                outcome: Outcome::Warn,
                detail: format!(
                    "lookups go to the local resolver {ns}, which strict mode refuses (and which would send them by its own interface); attach with --dns ADDR to send them through {}",
                    input.ifname
                ),
            }
        } else if stub {
            Check {
                name: NAME.into(),
                outcome: Outcome::Warn,
                detail: format!(
                    "lookups go to the local resolver {ns}, which sends them by its own choice of interface, not necessarily {}; --dns ADDR sends them through the binding",
                    input.ifname
                ),
            }
        } else {
            match udp_socket_for(ns).map(|s| route_of(&s, ns)) {
                Ok(Route::Source(src)) => Check::new(
                    NAME,
                    true,
                    format!("lookups go to {ns} through {} (source {src})", input.ifname),
                ),
                Ok(Route::Errno(e)) => Check {
                    name: NAME.into(),
                    outcome: Outcome::Warn,
                    detail: format!(
                        "lookups go to {ns}, which {} does not reach ({}): they fail; --dns ADDR names a resolver it reaches",
                        input.ifname,
                        std::io::Error::from_raw_os_error(e)
                    ),
                },
                Err(e) => Check::new(NAME, false, format!("socket() failed: {e}")),
            }
        };
    }
    let nss_resolve = std::fs::read_to_string("/etc/nsswitch.conf")
        .is_ok_and(|t| crate::commands::exec::without_resolve(&t).is_some());
    match ask_root_ns(ns) {
        // Answered through the binding, but glibc asks systemd-resolved first (row 28).
        Ok(_) if nss_resolve => Check {
            name: NAME.into(),
            outcome: Outcome::Warn,
            detail: "DNS goes through the binding, but /etc/nsswitch.conf asks systemd-resolved first (nss-resolve, escape row 28), which sends glibc's lookups by its own interface; give the workload an nsswitch.conf without `resolve` (`bindguard exec --dns` does)".into(),
        },
        Ok(ms) => Check::new(
            NAME,
            true,
            format!(
                "a query to {ns} was answered by the binding's resolver ({}) through {} in {ms} ms",
                input
                    .dns
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                input.ifname
            ),
        ),
        Err(why) => Check::new(NAME, false, format!("a query to {ns} got no answer: {why}")),
    }
}

/// Sends one query for the root's NS records to `ns` port 53, unconnected, and waits up to
/// 2 s for a reply with its id from `ns`; returns the milliseconds it took.
fn ask_root_ns(ns: IpAddr) -> Result<u128, String> {
    let sock = udp_socket_for(ns).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let id = (std::process::id() as u16).to_be_bytes();
    // Header (id, RD, one question), then the root name, type NS, class IN.
    let query = [
        id[0], id[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1,
    ];
    let started = Instant::now();
    sock.send_to(&query, SocketAddr::new(ns, 53))
        .map_err(|e| format!("sendto: {e}"))?;
    let mut buf = [0u8; 512];
    loop {
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "no reply within 2 s".to_string()
            }
            _ => e.to_string(),
        })?;
        // A reply (QR set) to this query, from the address asked.
        if n >= 12 && buf[..2] == id && buf[2] & 0x80 != 0 {
            if from.ip() != ns {
                return Err(format!(
                    "the reply came from {}, not {ns}: resolvers that check drop it",
                    from.ip()
                ));
            }
            return Ok(started.elapsed().as_millis());
        }
    }
}

/// Runs inside the cgroup and namespace (`bindguard __verify-probe`).
pub fn probe(input: &ProbeInput) -> ProbeOutput {
    let mut checks = Vec::new();
    let at_create = if input.allow_loopback {
        0
    } else {
        input.ifindex
    };
    let kinds: [(&str, i32, i32, i32); 8] = [
        ("udp", libc::AF_INET, libc::SOCK_DGRAM, 0),
        ("tcp", libc::AF_INET, libc::SOCK_STREAM, 0),
        ("udp6", libc::AF_INET6, libc::SOCK_DGRAM, 0),
        ("tcp6", libc::AF_INET6, libc::SOCK_STREAM, 0),
        ("raw", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        ("raw6", libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
        ("ping", libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        (
            "ping6",
            libc::AF_INET6,
            libc::SOCK_DGRAM,
            libc::IPPROTO_ICMPV6,
        ),
    ];
    for (name, family, kind, proto) in kinds {
        let check = format!("{name} socket");
        match new_socket(family, kind, proto) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT)
                ) && (proto != 0) =>
            {
                checks.push(Check::skip(check, format!("not permitted here ({e})")));
            }
            Err(e) => checks.push(Check::new(check, false, format!("socket() failed: {e}"))),
            Ok(fd) => {
                let mut problems = Vec::new();
                match get_int(fd.as_raw_fd(), libc::SO_BINDTOIFINDEX) {
                    Ok(i) if i == at_create => {}
                    Ok(i) => problems.push(format!("bound to ifindex {i}, want {at_create}")),
                    Err(e) => problems.push(format!("SO_BINDTOIFINDEX: {e}")),
                }
                if let Some(mark) = input.mark {
                    match get_int(fd.as_raw_fd(), libc::SO_MARK) {
                        Ok(m) if m == mark => {}
                        other => problems.push(format!("SO_MARK {other:?}, want {mark}")),
                    }
                }
                if let Some(prio) = input.priority {
                    match get_int(fd.as_raw_fd(), libc::SO_PRIORITY) {
                        Ok(p) if p == prio => {}
                        other => problems.push(format!("SO_PRIORITY {other:?}, want {prio}")),
                    }
                }
                let ok = problems.is_empty();
                let detail = if ok {
                    let pinned = if input.allow_loopback {
                        "unpinned until first use (--allow-loopback)".to_string()
                    } else {
                        format!("bound to {} (ifindex {})", input.ifname, input.ifindex)
                    };
                    let mut d = pinned;
                    if let Some(m) = input.mark {
                        d.push_str(&format!(", mark {m}"));
                    }
                    if let Some(p) = input.priority {
                        d.push_str(&format!(", priority {p}"));
                    }
                    d
                } else {
                    problems.join("; ")
                };
                checks.push(Check::new(check, ok, detail));
            }
        }
    }
    let mut routes = Vec::new();
    for &target in &input.targets {
        let route = match udp_socket_for(target) {
            Ok(sock) => {
                let route = route_of(&sock, target);
                if input.allow_loopback && matches!(route, Route::Source(_)) {
                    let pinned = get_int(sock.as_raw_fd(), libc::SO_BINDTOIFINDEX);
                    checks.push(Check::new(
                        format!("pinned on connect to {target}"),
                        pinned.as_ref().is_ok_and(|&i| i == input.ifindex),
                        format!("bound to ifindex {pinned:?} after connect()"),
                    ));
                }
                route
            }
            Err(e) => Route::Errno(e.raw_os_error().unwrap_or(0)),
        };
        routes.push((target, route));
    }
    let other = if input.ifname == "lo" { "" } else { "lo" };
    if input.strict {
        let refused = udp_socket_for("0.0.0.0".parse().unwrap())
            .map(|s| set_bindtodevice(s.as_raw_fd(), other))
            .map(|r| r.err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM))
            .unwrap_or(false);
        checks.push(Check::new(
            "setsockopt guard",
            refused,
            if refused {
                format!("moving a socket to '{other}' is refused (EPERM), even with CAP_NET_RAW")
            } else {
                "a socket could be moved to another device".into()
            },
        ));
    } else {
        checks.push(Check::skip(
            "setsockopt guard",
            "bind mode has none (see the escape table)",
        ));
    }
    checks.push(dns_check(input, Path::new("/etc/resolv.conf")));
    // Last: this process leaves the binding's namespace for good.
    // SAFETY: unshare affects only this (single-threaded) probe process.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
    if unshared {
        let refused = matches!(
            new_socket(libc::AF_INET, libc::SOCK_DGRAM, 0),
            Err(e) if e.raw_os_error() == Some(libc::EPERM)
        );
        checks.push(Check::new(
            "other network namespace",
            refused,
            if refused {
                "a socket made in a new network namespace is refused (EPERM)"
            } else {
                "a socket made in a new network namespace was allowed"
            },
        ));
    } else {
        checks.push(Check::skip(
            "other network namespace",
            "unshare(CLONE_NEWNET) not permitted",
        ));
    }
    ProbeOutput { checks, routes }
}

/// The nearest cgroup, `cg` itself or an ancestor, that has a binding.
fn binding_of(cg: &Cgroup) -> anyhow::Result<(PathBuf, u64, PathBuf)> {
    let mount = cgroup::cgroup2_mount()?;
    let mut dir = cg.path.clone();
    loop {
        let id = std::fs::metadata(&dir).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
        let pins = pins::binding_dir(id);
        if pins.exists() {
            return Ok((dir, id, pins));
        }
        if dir == mount || !dir.pop() || !dir.starts_with(&mount) {
            return Err(Error::NotBound {
                path: cg.path.clone(),
            }
            .into());
        }
    }
}

fn run_probe(cg: &Cgroup, ns: &Netns, input: &ProbeInput) -> anyhow::Result<ProbeOutput> {
    let exe = std::env::current_exe().context("finding bindguard's own executable")?;
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cg.path.join("cgroup.procs"))
        .with_context(|| format!("opening {}/cgroup.procs", cg.path.display()))?;
    let procs_fd = procs.as_raw_fd();
    let ns_file = std::fs::File::open(
        ns.path
            .clone()
            .unwrap_or_else(|| "/proc/self/ns/net".into()),
    )?;
    let ns_fd = ns_file.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("__verify-probe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: only write(2) and setns(2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1
                || libc::setns(ns_fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the probe in the cgroup")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(serde_json::to_string(input)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("the probe failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).context("reading the probe's report")
}

/// Verifies the binding that applies to the cgroup at `arg`.
pub fn verify(arg: &Path, to: Option<IpAddr>) -> anyhow::Result<Report> {
    enforcer::require_privileges("verify")?;
    let started = Instant::now();
    let cg = cgroup::resolve(arg)?;
    let (binding_cgroup, binding_id, dir) = binding_of(&cg)?;
    let mut checks = Vec::new();
    let policy: Policy = match enforcer::read_policy(&dir) {
        Ok(p) => p,
        Err(e) => {
            checks.push(Check::new(
                "pins",
                false,
                format!("policy unreadable: {e:#}"),
            ));
            Policy::default()
        }
    };
    let mode = crate::binding::policy::mode_of(&policy);
    let ifname = netdev::name_from_bytes(&policy.ifname);
    // The kernel's side: every link pinned and attached to this cgroup.
    let mut link_problems = Vec::new();
    let set = crate::kernel::progset::set_of_binding(&dir);
    let hooks = enforcer::hooks_of_binding(&policy, set.as_deref());
    for hook in &hooks {
        let path = dir.join(pins::names::link(hook.name()));
        match link::pinned_state(&path) {
            Ok(s) if s.cgroup_id == Some(binding_id) => {}
            Ok(s) => link_problems.push(format!("{} attached to {:?}", hook.name(), s.cgroup_id)),
            Err(e) => link_problems.push(format!("{} ({e})", path.display())),
        }
    }
    checks.push(Check::new(
        "links",
        link_problems.is_empty(),
        if link_problems.is_empty() {
            format!("{} program(s) attached with pinned bpf_links", hooks.len())
        } else {
            format!("not enforced: {}", link_problems.join("; "))
        },
    ));
    if mode == crate::binding::policy::Mode::Strict
        && let Some(set) = &set
    {
        let open = set.open_rows(|h| !h.is_lsm() || policy.has(flags::LSM));
        if !open.is_empty() {
            checks.push(Check {
                name: "kernel coverage".into(),
                outcome: Outcome::Warn,
                detail: format!(
                    "escape rows {} are not covered on this kernel; `bindguard doctor` says why and how to close them",
                    crate::kernel::escapes::row_list(&open)
                ),
            });
        }
    }
    if let Some(d) = cgroup::delegation(&binding_cgroup, &mut Default::default()) {
        // Strict mode promised more than holds here, unless the attach accepted it knowingly.
        let knowingly =
            mode != crate::binding::policy::Mode::Strict || policy.has(flags::ALLOW_DELEGATED);
        checks.push(Check {
            name: "cgroup edge".into(),
            outcome: if knowingly {
                Outcome::Warn
            } else {
                Outcome::Fail
            },
            detail: format!(
                "{}: its processes can move themselves out of the binding; bind {} itself to cover them",
                d.describe(),
                d.boundary.display()
            ),
        });
    }
    let Some(ns) = netns::find_by_ino(policy.netns_ino) else {
        checks.push(Check::new(
            "network namespace",
            false,
            "the binding's namespace is gone",
        ));
        return Ok(finish(
            cg,
            binding_cgroup,
            &policy,
            mode,
            checks,
            Vec::new(),
            started,
        ));
    };
    let iface = netdev::name_of(policy.ifindex, &ns)?;
    checks.push(Check::new(
        "interface",
        iface.as_deref() == Some(ifname.as_str()),
        match &iface {
            Some(n) if *n == ifname => {
                format!("{ifname} is ifindex {} in {}", policy.ifindex, ns.label)
            }
            Some(n) => format!("ifindex {} is now named {n}, not {ifname}", policy.ifindex),
            None => format!(
                "{ifname} (ifindex {}) no longer exists: sends fail (ENODEV)",
                policy.ifindex
            ),
        },
    ));
    if iface.is_some() {
        match netdev::rp_filter(&ifname, &ns) {
            Ok(v) => checks.push(match netdev::rp_filter_warning(&ifname, v) {
                Some(w) => Check {
                    name: "rp_filter".into(),
                    outcome: Outcome::Warn,
                    detail: w,
                },
                None => Check::new("rp_filter", true, format!("{v} on {ifname} (not strict)")),
            }),
            Err(e) => checks.push(Check::skip("rp_filter", format!("{e:#}"))),
        }
    }
    let targets: Vec<IpAddr> = match to {
        Some(t) => vec![t],
        None => DEFAULT_TARGETS.iter().map(|t| t.parse().unwrap()).collect(),
    };
    let input = ProbeInput {
        ifindex: policy.ifindex,
        ifname: ifname.clone(),
        mark: policy.has(flags::SET_MARK).then_some(policy.mark),
        priority: policy.has(flags::SET_PRIORITY).then_some(policy.priority),
        strict: policy.has(flags::STRICT),
        allow_loopback: policy.has(flags::ALLOW_LOOPBACK),
        targets: targets.clone(),
        dns: crate::binding::policy::Dns::of(&policy).addrs(),
    };
    let probed = run_probe(&cg, &ns, &input)?;
    checks.extend(probed.checks);
    for (target, route) in probed.routes {
        let name = ifname.clone();
        let reference = ns.run(move || reference_route(&name, target))?;
        checks.push(Check::new(
            format!("route to {target}"),
            route == reference,
            if route == reference {
                format!("same as SO_BINDTODEVICE: {route}")
            } else {
                format!("bindguard: {route}; SO_BINDTODEVICE: {reference}")
            },
        ));
    }
    let (unbound, blind) = audit::unbound_sockets(&cg.path, &policy, &ns)?;
    checks.push(Check::new(
        "existing sockets",
        unbound.is_empty(),
        if unbound.is_empty() {
            "no socket of the cgroup is outside the binding".to_string()
        } else {
            format!(
                "{} socket(s) not bound to {ifname} (listed below)",
                unbound.len()
            )
        },
    ));
    if !blind.is_empty() {
        checks.push(Check::new(
            "tasks seen",
            false,
            blind
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    Ok(finish(
        cg,
        binding_cgroup,
        &policy,
        mode,
        checks,
        unbound,
        started,
    ))
}

fn finish(
    cg: Cgroup,
    binding_cgroup: PathBuf,
    policy: &Policy,
    mode: crate::binding::policy::Mode,
    checks: Vec<Check>,
    unbound_sockets: Vec<UnboundSocket>,
    started: Instant,
) -> Report {
    let ok = checks.iter().all(|c| c.outcome != Outcome::Fail) && unbound_sockets.is_empty();
    Report {
        cgroup: cg.path,
        cgroup_id: cg.id,
        binding_cgroup,
        ifname: netdev::name_from_bytes(&policy.ifname),
        ifindex: policy.ifindex,
        mode: mode.as_str().into(),
        checks,
        unbound_sockets,
        ok,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// The lines `verify` prints for people.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verify {} -> {} (ifindex {}), mode {}{}",
        printable_path(&report.cgroup),
        report.ifname,
        report.ifindex,
        report.mode,
        if report.binding_cgroup == report.cgroup {
            String::new()
        } else {
            format!(
                ", inherited from {}",
                printable_path(&report.binding_cgroup)
            )
        }
    );
    for c in &report.checks {
        let tag = match c.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
            Outcome::Warn => "WARN",
        };
        let _ = writeln!(out, "{tag} {}: {}", c.name, c.detail);
    }
    for s in &report.unbound_sockets {
        let _ = writeln!(
            out,
            "     pid {} ({}) {} {} -> {} bound to ifindex {}",
            s.pid,
            printable(&s.command),
            s.protocol,
            s.local,
            s.remote,
            s.bound_ifindex
        );
    }
    let _ = writeln!(
        out,
        "{} in {} ms",
        if report.ok {
            "verified"
        } else {
            "NOT verified"
        },
        report.elapsed_ms
    );
    out
}

#[cfg(test)]
mod tests {
    use super::nameservers;

    #[test]
    fn nameservers_are_read_in_order() {
        let text = "# a comment\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n";
        let want: Vec<std::net::IpAddr> =
            vec!["127.0.0.53".parse().unwrap(), "fe80::1".parse().unwrap()];
        assert_eq!(nameservers(text), want);
    }
}
