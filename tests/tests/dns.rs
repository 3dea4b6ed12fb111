//! DNS follows the binding (`--dns`). Real resolvers (Debian's dnsmasq) in both peers answer
//! the same name with different addresses: the answer a bound program gets, and which
//! resolver logged the query, tell which interface the lookup left by. The clients are
//! glibc's `getent` (dynamic), busybox's `nslookup` (static, glibc) and a static musl client
//! (musl sends unconnected and accepts a reply only from an address it asked: the recvmsg
//! programs' case), run as uid 65534 with no capabilities, with a resolv.conf of the test's
//! own in a private mount namespace.

use std::{
    fs,
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use bindguard_tests::{
    Cmd, Scenario, root_or_skip,
    topology::{NetnsGuard, PEER_A4, PEER_A6, PEER_B4, PEER_B6, UPLINK_B},
    unique,
};

/// The name both resolvers answer, each with its own addresses.
const NAME: &str = "probe.bindguard.test";
const ANSWER_A4: &str = "192.0.2.77";
const ANSWER_B4: &str = "198.51.100.77";
const ANSWER_B6: &str = "2001:db8:b::77";
/// A resolver address both peers own: which one answers depends only on the interface.
const RESOLVER4: &str = "203.0.113.53";
const RESOLVER6: &str = "2001:db8:ff::53";

/// dnsmasq in one peer, logging every query; killed and its files removed on drop.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
    conf: PathBuf,
}

impl Dnsmasq {
    fn start(peer: &NetnsGuard, own4: &str, own6: &str, answer4: &str, answer6: &str) -> Self {
        peer.ip_batch(&[
            format!("addr add {RESOLVER4}/32 dev lo"),
            format!("addr add {RESOLVER6}/128 dev lo"),
        ]);
        let base = std::env::temp_dir().join(unique("bgd"));
        let log = base.with_extension("log");
        let conf = base.with_extension("conf");
        // Listening addresses named: dnsmasq then answers any source (no local-service
        // default), on UDP and TCP.
        let text = format!(
            "no-resolv\nno-hosts\nbind-interfaces\nuser=root\nlog-queries\nlog-facility={}\n\
             listen-address={RESOLVER4},{RESOLVER6},{own4},{own6}\n\
             address=/{NAME}/{answer4}\naddress=/{NAME}/{answer6}\n",
            log.display()
        );
        fs::write(&conf, text).unwrap();
        let child = Cmd::new("dnsmasq")
            .args(["--keep-in-foreground", "--pid-file=", "-C"])
            .arg(&conf)
            .in_netns(peer)
            .spawn();
        let d = Self { child, log, conf };
        // Ready when it has logged its start (it binds before it logs).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fs::read_to_string(&d.log).is_ok_and(|l| l.contains("started")) {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start in {}",
                peer.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// Queries for NAME this resolver has logged.
    fn queries(&self) -> usize {
        self.logged(&format!(" {NAME} from"))
    }

    /// Queries whose log line contains `what` (dnsmasq: `query[A] NAME from ADDR`).
    fn logged(&self, what: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query[") && l.contains(what))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log);
        let _ = fs::remove_file(&self.conf);
    }
}

/// The two-uplink scenario with a resolver in each peer.
struct Dns {
    a: Dnsmasq,
    b: Dnsmasq,
    s: Scenario,
}

impl Dns {
    fn new() -> Self {
        let s = Scenario::new();
        let a = Dnsmasq::start(
            &s.topo.peer_a,
            PEER_A4,
            PEER_A6,
            ANSWER_A4,
            "2001:db8:a::77",
        );
        let b = Dnsmasq::start(&s.topo.peer_b, PEER_B4, PEER_B6, ANSWER_B4, ANSWER_B6);
        Self { a, b, s }
    }

    /// Runs `client` in the host namespace (inside the cgroup, or not) as uid 65534 with no
    /// capabilities, with `resolv_conf` as /etc/resolv.conf and nsswitch asking files, dns.
    /// Returns (exit code, stdout and stderr).
    fn lookup(&self, in_cgroup: bool, resolv_conf: &str, client: &[&str]) -> (i32, String) {
        let base = std::env::temp_dir().join(unique("bgr"));
        let rc = base.with_extension("resolv");
        let nss = base.with_extension("nss");
        // One try, one second: a lookup that cannot be answered fails fast.
        fs::write(
            &rc,
            format!("{resolv_conf}\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        fs::write(&nss, "hosts: files dns\n").unwrap();
        let script = format!(
            "mount --bind {} /etc/resolv.conf && mount --bind {} /etc/nsswitch.conf && \
             exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
             --bounding-set=-all -- {}",
            rc.display(),
            nss.display(),
            client.join(" ")
        );
        let cmd = Cmd::new("unshare").args(["-m", "--propagation", "private", "/bin/sh", "-c"]);
        let cmd = cmd.arg(script);
        let cmd = if in_cgroup {
            cmd.in_cgroup(&self.s.cg)
        } else {
            cmd
        };
        let (code, out, err) = cmd.in_netns(&self.s.topo.host).run();
        let _ = fs::remove_file(&rc);
        let _ = fs::remove_file(&nss);
        (code, format!("{out}{err}"))
    }
}

const GETENT4: &[&str] = &["getent", "ahostsv4", NAME];
const GETENT6: &[&str] = &["getent", "ahostsv6", NAME];
const NSLOOKUP: &[&str] = &["/bin/busybox", "nslookup", NAME];

/// The static musl client, copied where uid 65534 can run it.
fn musl() -> String {
    let bin = bindguard_tests::run::musl_lookup_bin();
    let copy = std::env::temp_dir().join(unique("bgm"));
    fs::copy(&bin, &copy).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy.to_string_lossy().into_owned()
}

/// The resolv.conf setups a bound program meets: the systemd-resolved stub (UDP, and TCP by
/// `use-vc`), an IPv6 loopback resolver, and a remote server only peer A can reach.
fn setups() -> Vec<(&'static str, String)> {
    vec![
        ("stub udp", "nameserver 127.0.0.53".into()),
        ("stub tcp", "nameserver 127.0.0.53\noptions use-vc".into()),
        ("v6 loopback udp", "nameserver ::1".into()),
        ("v6 loopback tcp", "nameserver ::1\noptions use-vc".into()),
        ("remote only A serves", format!("nameserver {PEER_A4}")),
    ]
}

#[test]
fn lookups_follow_the_binding_with_dns() {
    root_or_skip!();
    let d = Dns::new();
    // Control: outside the cgroup the remote server answers (the setup can see peer A).
    let (code, out) = d.lookup(false, &format!("nameserver {PEER_A4}"), GETENT4);
    assert_eq!(code, 0, "unbound lookup: {out}");
    assert!(out.contains(ANSWER_A4), "unbound lookup: {out}");
    let a_before = d.a.queries();
    assert!(a_before > 0, "peer A logged the control query");

    d.s.attach(UPLINK_B, &["--dns", &format!("{RESOLVER4},{RESOLVER6}")]);
    let musl = musl();
    let musl_client: &[&str] = &[&musl, NAME];
    for (setup, rc) in setups() {
        let clients: &[&[&str]] = if setup.ends_with("tcp") {
            // busybox's nslookup and musl (under 2.0 KiB answers) speak UDP only.
            &[GETENT4, GETENT6]
        } else {
            &[GETENT4, GETENT6, NSLOOKUP, musl_client]
        };
        for client in clients {
            let b_before = d.b.queries();
            let (code, out) = d.lookup(true, &rc, client);
            assert_eq!(code, 0, "{setup}, {}: {out}", client.join(" "));
            let want = if client == &GETENT6 {
                ANSWER_B6
            } else {
                ANSWER_B4
            };
            assert!(
                out.contains(want) && !out.contains(ANSWER_A4),
                "{setup}, {}: peer B's answer expected: {out}",
                client.join(" ")
            );
            assert!(d.b.queries() > b_before, "{setup}: peer B logged no query");
        }
    }
    let _ = fs::remove_file(&musl);
    assert_eq!(
        d.a.queries(),
        a_before,
        "peer A's resolver saw a query of the bound cgroup"
    );
    let redirected = d.s.counter("dns_redirected");
    assert!(redirected > 0, "dns_redirected counts the queries");
    let entry = d.s.status_entry().unwrap();
    assert_eq!(
        entry["dns"],
        serde_json::json!([RESOLVER4, RESOLVER6]),
        "{entry}"
    );
}

/// With an IPv4 resolver only, an IPv6 socket's query goes to it as a mapped address.
#[test]
fn an_ipv4_resolver_serves_ipv6_sockets() {
    root_or_skip!();
    let d = Dns::new();
    d.s.attach(UPLINK_B, &["--dns", RESOLVER4]);
    let (code, out) = d.lookup(true, "nameserver ::1", GETENT4);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(ANSWER_B4), "{out}");
    assert_eq!(d.a.queries(), 0);
}

/// Without --dns the guard is what a user meets: strict mode refuses the stub at once (named
/// by monitor), and a server only the other uplink reaches gets nothing.
#[test]
fn without_dns_the_stub_is_refused_and_named() {
    root_or_skip!();
    let d = Dns::new();
    d.s.attach(UPLINK_B, &[]);
    let monitor = Cmd::bindguard()
        .args(["monitor", "--json", "--duration", "20"])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    // Refused at connect (the dns_stub events below say so), not left to time out.
    let (code, out) = d.lookup(true, "nameserver 127.0.0.53", GETENT4);
    assert_ne!(
        code, 0,
        "the stub answered a strict binding without --dns: {out}"
    );
    let (code, out) = d.lookup(true, &format!("nameserver {PEER_A4}"), GETENT4);
    assert_ne!(code, 0, "a server only A serves answered by B: {out}");
    assert_eq!(d.a.queries(), 0, "peer A saw the bound cgroup's query");
    // --allow-loopback opens loopback, not the stub (escape row 27): a stub on this host
    // would send the query by its own interface.
    d.s.attach(UPLINK_B, &["--allow-loopback"]);
    let (code, out) = d.lookup(true, "nameserver 127.0.0.53", GETENT4);
    assert_ne!(
        code, 0,
        "--allow-loopback let the stub query through: {out}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = bindguard_tests::run::wait_output(monitor, Duration::from_secs(5)).unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let stubs: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["binding"] == d.s.cg.id && e["hook"] == "dns_stub")
        .collect();
    // One refusal without --allow-loopback, one with it.
    assert!(stubs.len() >= 2, "dns_stub events:\n{lines}");
    for stub in stubs {
        assert!(
            stub["reason"].as_str().unwrap().contains("use --dns"),
            "{stub}"
        );
    }
}

#[test]
fn dns_needs_strict_mode_and_addresses() {
    root_or_skip!();
    let s = Scenario::new();
    for (args, says) in [
        (
            &["--mode", "bind", "--dns", RESOLVER4][..],
            "--dns needs --mode strict",
        ),
        (&["--dns", "resolver.example"][..], "--dns"),
        (&["--dns", "10.0.0.1,10.0.0.2"][..], "at most one IPv4"),
        (&["--dns", "0.0.0.0"][..], "unicast"),
    ] {
        let (code, out, err) = s.attach_result(UPLINK_B, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!s.cg.pins().exists(), "{args:?} made a binding");
    }
}

/// `verify` with the machine's resolv.conf naming the stub: without --dns it warns and names
/// the fix; with --dns its query is answered through the binding (peer B's resolver).
#[test]
fn verify_says_where_lookups_go() {
    root_or_skip!();
    let d = Dns::new();
    let verify = |d: &Dns| -> serde_json::Value {
        let rc = std::env::temp_dir().join(unique("bgv"));
        fs::write(&rc, "nameserver 127.0.0.53\n").unwrap();
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec {} verify --json --cgroup {}",
            rc.display(),
            bindguard_tests::bindguard_bin().display(),
            d.s.cg.path.display()
        );
        let (_, out, err) = Cmd::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh", "-c"])
            .arg(script)
            .in_netns(&d.s.topo.host)
            .run();
        let _ = fs::remove_file(&rc);
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "dns")
            .cloned()
            .unwrap_or_else(|| panic!("no dns check: {report}"))
    };
    d.s.attach(UPLINK_B, &[]);
    let check = verify(&d);
    assert_eq!(check["outcome"], "warn", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains("--dns"),
        "{check}"
    );
    assert_eq!(
        d.b.logged("query[NS]"),
        0,
        "verify sent a query without --dns"
    );
    d.s.attach(UPLINK_B, &["--dns", RESOLVER4]);
    let check = verify(&d);
    assert_eq!(check["outcome"], "pass", "{check}");
    assert_eq!(d.b.logged("query[NS]"), 1, "verify's query reached peer B");
    assert_eq!(d.a.logged("query["), 0, "peer A saw a query");
}

/// `exec --dns` where nsswitch.conf asks systemd-resolved first (Ubuntu's and Fedora's
/// `resolve [!UNAVAIL=return]`, escape row 28): the command's own mount namespace has an
/// nsswitch.conf without it, so glibc asks DNS, which the binding sends to peer B; the
/// caller's file is untouched.
#[test]
fn exec_with_dns_takes_resolve_out_of_nsswitch() {
    root_or_skip!();
    let d = Dns::new();
    let base = std::env::temp_dir().join(unique("bgn"));
    let (rc, nss) = (base.with_extension("resolv"), base.with_extension("nss"));
    fs::write(&rc, "nameserver 127.0.0.53\noptions timeout:1 attempts:1\n").unwrap();
    let ubuntu = "hosts: files resolve [!UNAVAIL=return] dns myhostname\n";
    fs::write(&nss, ubuntu).unwrap();
    let script = format!(
        "mount --bind {rc} /etc/resolv.conf && mount --bind {nss} /etc/nsswitch.conf && \
         {bin} exec --netns {netns} --dev {UPLINK_B} --dns {RESOLVER4} -- \
         /bin/sh -c 'grep hosts: /etc/nsswitch.conf; getent ahostsv4 {NAME}' && \
         grep hosts: /etc/nsswitch.conf",
        rc = rc.display(),
        nss = nss.display(),
        bin = bindguard_tests::bindguard_bin().display(),
        netns = d.s.topo.host.path().display(),
    );
    let (code, out, err) = Cmd::new("unshare")
        .args(["-m", "--propagation", "private", "/bin/sh", "-c"])
        .arg(script)
        .run();
    let _ = fs::remove_file(&rc);
    let _ = fs::remove_file(&nss);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"hosts: files dns myhostname"),
        "the command's nsswitch.conf: {out}"
    );
    assert!(out.contains(ANSWER_B4), "{out}{err}");
    assert_eq!(
        lines.last(),
        Some(&ubuntu.trim_end()),
        "the caller's nsswitch.conf changed: {out}"
    );
    assert_eq!(d.a.queries(), 0);
}

/// A stand-in for systemd-resolved's varlink socket, and a client that connects to it as
/// nss-resolve does, as uid 65534 with no capabilities: once with the path's NUL in the
/// address (systemd's own clients) and once without (the length alone ends it). Prints the
/// client's result per connect, then how many connections the stand-in accepted.
const VARLINK_STANDIN: &str = r#"
import os, socket, sys, time
path = "/run/systemd/resolve/io.systemd.Resolve"
os.makedirs(os.path.dirname(path), exist_ok=True)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o666)
srv.listen(8)
other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
other.bind(path + ".Monitor")
os.chmod(path + ".Monitor", 0o666)
other.listen(8)
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    for addr in (path.encode() + b"\0", path):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.connect(addr)
            print("connected", flush=True)
        except OSError as e:
            print("refused", e.errno, flush=True)
        c.close()
    # A socket whose path only starts like it is the workload's own business.
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path + ".Monitor")
    print("other connected", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
srv.setblocking(False)
n = 0
while True:
    try:
        srv.accept()[0].close(); n += 1
    except BlockingIOError:
        break
print("accepted", n)
"#;

/// Runs [`VARLINK_STANDIN`] inside the scenario's cgroup, with a /run of its own.
fn varlink_connects(s: &Scenario) -> String {
    let script = format!(
        "mount -t tmpfs tmpfs /run && exec /usr/bin/python3 -c '{}'",
        VARLINK_STANDIN.replace('\'', "\"")
    );
    let (code, out, err) = Cmd::new("unshare")
        .args(["-m", "--propagation", "private", "/bin/sh", "-c"])
        .arg(script)
        .in_cgroup(&s.cg)
        .in_netns(&s.topo.host)
        .run();
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// Escape row 28: nss-resolve (first in nsswitch.conf where systemd-resolved runs) asks
/// systemd-resolved over varlink, which sends the lookup by its own interface. Strict mode's
/// cgroup/connect_unix program (Linux 6.7) refuses that connect with EPERM, so nss-resolve
/// reports UNAVAIL and glibc asks DNS, which the binding keeps on its interface. In bind mode
/// (no such program) the same connects reach the stand-in: the test can fail.
#[test]
fn strict_mode_refuses_nss_resolves_varlink_socket() {
    root_or_skip!();
    if !bindguard_tests::privilege::unix_connect_expected() {
        bindguard_tests::skip(
            "dns::strict_mode_refuses_nss_resolves_varlink_socket",
            "this kernel has no cgroup/connect_unix hook (Linux 6.7): escape row 28 is NOT COVERED (doctor says so)",
        );
        return;
    }
    let s = Scenario::new();
    s.attach(UPLINK_B, &["--mode", "bind"]);
    let out = varlink_connects(&s);
    assert_eq!(
        out, "connected\nconnected\nother connected\naccepted 2\n",
        "bind mode: the stand-in should see both connects"
    );
    s.attach(UPLINK_B, &["--dns", RESOLVER4]);
    let out = varlink_connects(&s);
    assert_eq!(
        out,
        format!(
            "refused {e}\nrefused {e}\nother connected\naccepted 0\n",
            e = libc::EPERM
        ),
        "strict mode let nss-resolve's connect through"
    );
}
