//! bg-probe: a tiny client the tests run inside a cgroup and namespace.
//!
//!   bg-probe send udp|udp2|udpc|tcp ADDR PORT TOKEN  send TOKEN (udpc: connected, waits for
//!                                           the echo; udp2: two datagrams from one socket);
//!                                           prints `ok` or `error errno=N ...`
//!   bg-probe sockinfo                       per family/type: the new socket's ifindex, mark, priority
//!   bg-probe bench-socket 4|6 udp|tcp N [DEV]  time socket()(+SO_BINDTODEVICE)+close()
//!   bg-probe bench-send ADDR PORT N         time unconnected UDP sendto()
//!   bg-probe hold PORT SECONDS              hold a UDP socket and a TCP listener on PORT
//!   bg-probe held KIND ADDR PORT TOKEN      make a port-bound UDP socket and a TCP connection
//!                                           to ADDR, print `ready`, wait for a line on stdin,
//!                                           then send TOKEN-udp and TOKEN-tcp through them (a
//!                                           new TCP connection if the old one was destroyed).
//!                                           KIND hides the sockets from an fd walk: plain,
//!                                           opath (an O_PATH fd of each at a lower number),
//!                                           thread (only in one thread's own fd table,
//!                                           unshare(CLONE_FILES)), zombie (the thread-group
//!                                           leader has exited)
//!   bg-probe loop SECONDS                   make sockets in a tight loop; count their bindings
//!   bg-probe refuse-loop SECONDS IFNAME     one UDP socket, setsockopt(SO_BINDTODEVICE, IFNAME)
//!                                           in a tight loop; prints `refused=N other=N`
//!   bg-probe escape KIND ADDR PORT TOKEN [ARG]  try one known escape from a binding, then send
//!       unspec          UDP connect, connect(AF_UNSPEC) (resets the binding), sendto
//!       pktinfo IFINDEX IPv4 UDP sendmsg with IP_PKTINFO naming another interface
//!       llbind IFINDEX  IPv6 bind to fe80::1%IFINDEX (overwrites the binding), sendto
//!       scope IFINDEX   IPv6 UDP sendto ADDR%IFINDEX (the scope id picks the device)
//!       sockopt IFNAME  setsockopt(SO_BINDTODEVICE, IFNAME; "" clears it), sendto
//!       ifindex IFINDEX setsockopt(SO_BINDTOIFINDEX, IFINDEX), sendto
//!       tcp-sockopt IFNAME  the same over TCP: setsockopt, connect, write
//!   bg-probe mcast HOW GROUP IFINDEX        join GROUP by mreqn|mreq|source|group|mreq6|
//!                                           source-group|msfilter|ip-msfilter (a
//!                                           `-long` suffix passes optlen 8192), hold it 600 ms
//!   bg-probe attack KIND ADDR PORT TOKEN [ARG...]  further attacks: see probe/attack.rs
//!   bg-probe lock-udp ADDR PORT             hold a UDP socket's lock until killed: a corked
//!                                           sendto, then one whose data faults on a
//!                                           userfaultfd page nobody serves (root); prints
//!                                           `holding` just before
//!
//! BG_PROBE_COMM=NAME in the environment sets the process name (PR_SET_NAME) first.
//!
//! Exit status: 0 when the operation succeeded, 1 when the kernel refused it.

#[path = "probe/attack.rs"]
mod attack;

use bindguard::kernel::sockopt::{get_int, set_bindtodevice};
use std::{
    collections::BTreeMap,
    io::Write,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

fn new_socket(family: i32, kind: i32) -> std::io::Result<OwnedFd> {
    bindguard::kernel::sockopt::new_socket(family, kind, 0)
}

fn report(e: &std::io::Error) -> ! {
    println!("error errno={} {e}", e.raw_os_error().unwrap_or(0));
    std::process::exit(1)
}

fn send(proto: &str, addr: &str, port: &str, token: &str) {
    let ip: IpAddr = addr.parse().expect("ADDR");
    let dest = SocketAddr::new(ip, port.parse().expect("PORT"));
    let result = match proto {
        "udp" => {
            let any: SocketAddr = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            UdpSocket::bind(any).and_then(|s| s.send_to(token.as_bytes(), dest).map(|_| ()))
        }
        // Two unconnected datagrams from one socket: TOKEN-1 then TOKEN-2; ok if the second
        // was sent (the first is reported on its own line).
        "udp2" => {
            let any: SocketAddr = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            UdpSocket::bind(any).and_then(|s| {
                match s.send_to(format!("{token}-1").as_bytes(), dest) {
                    Ok(_) => println!("first: ok"),
                    Err(e) => println!("first: error errno={} {e}", e.raw_os_error().unwrap_or(0)),
                }
                s.send_to(format!("{token}-2").as_bytes(), dest).map(|_| ())
            })
        }
        // Connected UDP that waits for the echo (the loopback listener answers).
        "udpc" => {
            let any: SocketAddr = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            UdpSocket::bind(any).and_then(|s| {
                s.connect(dest)?;
                s.send(token.as_bytes())?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut buf = [0u8; 512];
                s.recv(&mut buf).map(|_| ())
            })
        }
        "tcp" => TcpStream::connect_timeout(&dest, Duration::from_secs(3)).and_then(|mut s| {
            s.write_all(token.as_bytes())?;
            s.shutdown(std::net::Shutdown::Write)
        }),
        _ => panic!("proto must be udp, udpc or tcp"),
    };
    match result {
        Ok(()) => println!("ok"),
        Err(e) => report(&e),
    }
}

/// An option's value, or -1 when it cannot be read.
fn show(v: std::io::Result<u32>) -> String {
    v.map_or("-1".into(), |v| v.to_string())
}

fn sockinfo() {
    let mut failed = false;
    for (fname, family) in [("inet", libc::AF_INET), ("inet6", libc::AF_INET6)] {
        for (tname, kind) in [("udp", libc::SOCK_DGRAM), ("tcp", libc::SOCK_STREAM)] {
            match new_socket(family, kind) {
                Ok(s) => {
                    let fd = s.as_raw_fd();
                    let idx = get_int(fd, libc::SO_BINDTOIFINDEX);
                    let mark = get_int(fd, libc::SO_MARK);
                    let prio = get_int(fd, libc::SO_PRIORITY);
                    println!(
                        "{fname} {tname} ifindex={} mark={} priority={}",
                        show(idx),
                        show(mark),
                        show(prio)
                    );
                }
                Err(e) => {
                    failed = true;
                    println!(
                        "{fname} {tname} error errno={}",
                        e.raw_os_error().unwrap_or(0)
                    );
                }
            }
        }
    }
    std::process::exit(i32::from(failed));
}

/// Makes sockets for `seconds`, or until `stop` exists (looked for every 1,024 sockets), and
/// prints how they were bound.
fn tight_loop(seconds: f64, stop: Option<&std::path::Path>) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut by_ifindex: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut total, mut errors) = (0u64, 0u64);
    while Instant::now() < deadline {
        if total % 1024 == 0 && stop.is_some_and(|p| p.exists()) {
            break;
        }
        total += 1;
        match new_socket(libc::AF_INET, libc::SOCK_DGRAM)
            .and_then(|s| get_int(s.as_raw_fd(), libc::SO_BINDTOIFINDEX))
        {
            Ok(idx) => *by_ifindex.entry(idx).or_default() += 1,
            Err(_) => errors += 1,
        }
    }
    let spread: Vec<String> = by_ifindex.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "total={total} unbound={} errors={errors} ifindexes={}",
        by_ifindex.get(&0).copied().unwrap_or(0),
        spread.join(",")
    );
}

/// A flood of refusals for a bound cgroup: the same setsockopt again and again on one socket
/// (strict mode refuses each with EPERM and counts it).
fn refuse_loop(seconds: f64, name: &str) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let s = new_socket(libc::AF_INET, libc::SOCK_DGRAM).expect("socket");
    let (mut refused, mut other) = (0u64, 0u64);
    while Instant::now() < deadline {
        match set_bindtodevice(s.as_raw_fd(), name) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
            _ => other += 1,
        }
    }
    println!("refused={refused} other={other}");
}

/// A sockaddr for `ip:port` with an optional IPv6 scope id, as raw bytes for libc.
fn sockaddr(ip: IpAddr, port: u16, scope: u32) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match ip {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(v4).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: port.to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: scope,
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Prints the outcome of one step; returns whether it succeeded.
fn step(name: &str, rc: libc::c_long) -> bool {
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        println!("{name}: error errno={} {e}", e.raw_os_error().unwrap_or(0));
        false
    } else {
        println!("{name}: ok");
        true
    }
}

fn escape(kind: &str, addr: &str, port: &str, token: &str, arg: Option<&str>) {
    let ip: IpAddr = addr.parse().expect("ADDR");
    let port: u16 = port.parse().expect("PORT");
    let family = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let stream = kind == "tcp-sockopt";
    let sock = new_socket(
        family,
        if stream {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        },
    )
    .unwrap_or_else(|e| report(&e));
    let fd = sock.as_raw_fd();
    let arg_u32 = || arg.expect("ARG").parse::<u32>().expect("ARG is a number");
    let mut scope = 0;
    let msg = token.as_bytes();
    // SAFETY (all blocks below): libc calls on our own fd with correctly sized arguments.
    match kind {
        "unspec" => {
            let (sa, len) = sockaddr(ip, port, 0);
            step("connect", unsafe {
                libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len)
            } as _);
            let mut unspec: libc::sockaddr = unsafe { std::mem::zeroed() };
            unspec.sa_family = libc::AF_UNSPEC as u16;
            step("connect(AF_UNSPEC)", unsafe {
                libc::connect(fd, &unspec, std::mem::size_of::<libc::sockaddr>() as u32)
            } as _);
        }
        "pktinfo" => {
            let (sa, len) = sockaddr(ip, port, 0);
            let mut iov = libc::iovec {
                iov_base: msg.as_ptr() as *mut _,
                iov_len: msg.len(),
            };
            let info = libc::in_pktinfo {
                ipi_ifindex: arg_u32() as i32,
                ipi_spec_dst: libc::in_addr { s_addr: 0 },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) };
            let mut cbuf = vec![0u8; space as usize];
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = (&sa as *const libc::sockaddr_storage) as *mut _;
            hdr.msg_namelen = len;
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = cbuf.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as _;
                std::ptr::write(libc::CMSG_DATA(c).cast(), info);
            }
            let sent = step("sendmsg(IP_PKTINFO)", unsafe { libc::sendmsg(fd, &hdr, 0) }
                as _);
            std::process::exit(i32::from(!sent));
        }
        "llbind" => {
            let (sa, len) = sockaddr("fe80::1".parse().unwrap(), 0, arg_u32());
            step("bind(fe80::1%other)", unsafe {
                libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len)
            } as _);
        }
        "scope" => scope = arg_u32(),
        "sockopt" | "tcp-sockopt" => {
            let name = arg.unwrap_or("");
            let rc = set_bindtodevice(fd, name).map_or(-1, |()| 0);
            step("setsockopt(SO_BINDTODEVICE)", rc);
        }
        "ifindex" => {
            let idx = arg_u32() as i32;
            step("setsockopt(SO_BINDTOIFINDEX)", unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_BINDTOIFINDEX,
                    (&idx as *const i32).cast(),
                    4,
                )
            } as _);
        }
        _ => panic!("unknown escape {kind}"),
    }
    let (sa, len) = sockaddr(ip, port, scope);
    let sent = if stream {
        step("connect", unsafe {
            libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len)
        } as _)
            && step(
                "write",
                unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) } as _,
            )
    } else {
        step("sendto", unsafe {
            libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_storage).cast(),
                len,
            )
        } as _)
    };
    // Give a TCP stream's bytes time to leave before the socket closes.
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(i32::from(!sent));
}

/// Joins multicast `group` by one of the membership options (`how`), naming interface
/// `ifindex` (0: none), prints `join: ok` or `join: error errno=N`, holds it for 600 ms so the
/// kernel's IGMP/MLD reports go out, then leaves by exiting.
fn mcast(how: &str, group: &str, ifindex: &str) {
    let group: IpAddr = group.parse().expect("GROUP");
    let ifindex: u32 = ifindex.parse().expect("IFINDEX");
    let family = if group.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let sock = new_socket(family, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
    let fd = sock.as_raw_fd();
    // `-long` variants pass optlen 8192: more than the page the sockopt program is shown.
    let (how, long) = match how.strip_suffix("-long") {
        Some(h) => (h, true),
        None => (how, false),
    };
    let mut buf = vec![0u8; 8192];
    let (level, name, len) = match (how, group) {
        // struct ip_mreqn { group, address, ifindex }
        ("mreqn", IpAddr::V4(g)) => {
            buf[..4].copy_from_slice(&g.octets());
            buf[8..12].copy_from_slice(&ifindex.to_ne_bytes());
            (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, 12)
        }
        // struct ip_mreq { group, INADDR_ANY }: the interface is left to the kernel
        ("mreq", IpAddr::V4(g)) => {
            buf[..4].copy_from_slice(&g.octets());
            (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, 8)
        }
        // struct ip_mreq_source { group, interface address, source }
        ("source", IpAddr::V4(g)) => {
            buf[..4].copy_from_slice(&g.octets());
            buf[8..12].copy_from_slice(&[192, 0, 2, 99]);
            (libc::IPPROTO_IP, libc::IP_ADD_SOURCE_MEMBERSHIP, 12)
        }
        // struct group_req { u32 interface; sockaddr_storage group (at 8) }
        ("group", g) => {
            buf[..4].copy_from_slice(&ifindex.to_ne_bytes());
            let (sa, _) = sockaddr(g, 0, 0);
            // SAFETY: sockaddr_storage is plain data of 128 bytes.
            let raw: [u8; 128] = unsafe { std::mem::transmute(sa) };
            buf[8..136].copy_from_slice(&raw);
            let level = if g.is_ipv4() {
                libc::IPPROTO_IP
            } else {
                libc::IPPROTO_IPV6
            };
            (level, libc::MCAST_JOIN_GROUP, 136)
        }
        // struct group_source_req { u32 interface; sockaddr_storage group (at 8), source (at
        // 136) }; the source is 192.0.2.99 / 2001:db8:a::99
        ("source-group", g) => {
            buf[..4].copy_from_slice(&ifindex.to_ne_bytes());
            let src: IpAddr = if g.is_ipv4() {
                "192.0.2.99".parse().unwrap()
            } else {
                "2001:db8:a::99".parse().unwrap()
            };
            for (at, a) in [(8, g), (136, src)] {
                let (sa, _) = sockaddr(a, 0, 0);
                // SAFETY: sockaddr_storage is plain data of 128 bytes.
                let raw: [u8; 128] = unsafe { std::mem::transmute(sa) };
                buf[at..at + 128].copy_from_slice(&raw);
            }
            let level = if g.is_ipv4() {
                libc::IPPROTO_IP
            } else {
                libc::IPPROTO_IPV6
            };
            (level, libc::MCAST_JOIN_SOURCE_GROUP, 264)
        }
        // struct group_filter { u32 interface; sockaddr_storage group (at 8); u32 fmode (136);
        // u32 numsrc (140); sockaddr_storage slist[1] (144) }: EXCLUDE nothing = join
        ("msfilter", g) => {
            buf[..4].copy_from_slice(&ifindex.to_ne_bytes());
            let (sa, _) = sockaddr(g, 0, 0);
            // SAFETY: sockaddr_storage is plain data of 128 bytes.
            let raw: [u8; 128] = unsafe { std::mem::transmute(sa) };
            buf[8..136].copy_from_slice(&raw);
            buf[136..140].copy_from_slice(&(libc::MCAST_EXCLUDE as u32).to_ne_bytes());
            let level = if g.is_ipv4() {
                libc::IPPROTO_IP
            } else {
                libc::IPPROTO_IPV6
            };
            (level, libc::MCAST_MSFILTER, 272)
        }
        // struct ip_msfilter { group, interface address (upA's, 192.0.2.1), fmode, numsrc,
        // slist[1] }: names the interface only by address
        ("ip-msfilter", IpAddr::V4(g)) => {
            buf[..4].copy_from_slice(&g.octets());
            buf[4..8].copy_from_slice(&[192, 0, 2, 1]);
            buf[8..12].copy_from_slice(&(libc::MCAST_EXCLUDE as u32).to_ne_bytes());
            (libc::IPPROTO_IP, libc::IP_MSFILTER, 20)
        }
        // struct ipv6_mreq { in6_addr group; int ifindex }
        ("mreq6", IpAddr::V6(g)) => {
            buf[..16].copy_from_slice(&g.octets());
            buf[16..20].copy_from_slice(&ifindex.to_ne_bytes());
            (libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, 20)
        }
        _ => panic!("unknown membership option {how} for {group}"),
    };
    // SAFETY: setsockopt on our own fd with a buffer of at least `len` bytes.
    let len = if long { 8192 } else { len };
    step(
        "join",
        unsafe { libc::setsockopt(fd, level, name, buf.as_ptr().cast(), len) } as _,
    );
    std::thread::sleep(Duration::from_millis(600));
}

/// socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP): prints `socket: ok` or the errno.
fn mptcp() {
    // SAFETY: plain socket(2) call; the fd is closed at exit.
    step(
        "socket(IPPROTO_MPTCP)",
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 262) } as _,
    );
}

/// One UDP datagram carrying `token`, after `how`: `somark N` (an SO_MARK cmsg, needs
/// CAP_NET_ADMIN) or `tos N` (setsockopt IP_TOS, unprivileged; it also sets the priority).
fn send_marked(how: &str, value: &str, addr: &str, port: &str, token: &str) {
    let value: u32 = value.parse().expect("VALUE");
    let ip: IpAddr = addr.parse().expect("ADDR");
    let sock = new_socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
    let fd = sock.as_raw_fd();
    let (sa, len) = sockaddr(ip, port.parse().expect("PORT"), 0);
    let msg = token.as_bytes();
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut _,
        iov_len: msg.len(),
    };
    // SAFETY: plain data, filled below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (&sa as *const libc::sockaddr_storage) as *mut _;
    hdr.msg_namelen = len;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(4) } as usize;
    let mut cbuf = vec![0u8; space];
    match how {
        "somark" => {
            hdr.msg_control = cbuf.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            // SAFETY: the control buffer holds one cmsg with 4 bytes of data.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SO_MARK;
                (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                std::ptr::write(libc::CMSG_DATA(c).cast(), value);
            }
        }
        "tos" => {
            let tos = value as i32;
            // SAFETY: setsockopt on our own fd with an int.
            step("setsockopt(IP_TOS)", unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_TOS,
                    (&tos as *const i32).cast(),
                    4,
                )
            } as _);
        }
        _ => panic!("unknown marking {how}"),
    }
    // SAFETY: sendmsg on our own fd with the header built above.
    let sent = step("sendmsg", unsafe { libc::sendmsg(fd, &hdr, 0) } as _);
    std::process::exit(i32::from(!sent));
}

/// Holds a UDP socket and a TCP listener on PORT for SECONDS (sockets made now, before any
/// binding a test adds later).
fn hold(port: &str, seconds: &str) {
    let any: SocketAddr = format!("0.0.0.0:{port}").parse().expect("PORT");
    let _udp = UdpSocket::bind(any).unwrap_or_else(|e| report(&e));
    let _tcp = std::net::TcpListener::bind(any).unwrap_or_else(|e| report(&e));
    println!("ready");
    std::thread::sleep(Duration::from_secs_f64(seconds.parse().expect("SECONDS")));
}

/// Moves a socket to a number above 100 and leaves an O_PATH fd of it at its old, lower number.
fn hide<T: std::os::fd::IntoRawFd + std::os::fd::FromRawFd>(s: T) -> T {
    let fd = s.into_raw_fd();
    // SAFETY: fcntl/open/dup3/close on fds this process owns; the O_PATH fd is left open.
    unsafe {
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
        let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        let p = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        assert!(high >= 0 && p >= 0, "{}", std::io::Error::last_os_error());
        libc::dup3(p, fd, libc::O_CLOEXEC);
        libc::close(p);
        T::from_raw_fd(high)
    }
}

fn held(kind: &str, addr: &str, port: &str, token: &str) {
    let dest = SocketAddr::new(addr.parse().expect("ADDR"), port.parse().expect("PORT"));
    let (token, k) = (token.to_string(), kind.to_string());
    let work = move || {
        if k == "thread" {
            // SAFETY: this thread gets its own copy of the fd table.
            if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
                report(&std::io::Error::last_os_error());
            }
        }
        let any: SocketAddr = if dest.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        let udp = UdpSocket::bind(any).unwrap_or_else(|e| report(&e));
        let tcp = TcpStream::connect_timeout(&dest, Duration::from_secs(3))
            .unwrap_or_else(|e| report(&e));
        let (udp, mut tcp) = if k == "opath" {
            (hide(udp), hide(tcp))
        } else {
            (udp, tcp)
        };
        println!("ready");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let udp_result = match udp.send_to(format!("{token}-udp").as_bytes(), dest) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("errno={}", e.raw_os_error().unwrap_or(0)),
        };
        let tcp_result = match tcp.write_all(format!("{token}-tcp").as_bytes()) {
            Ok(()) => "same".to_string(),
            Err(e) => {
                let again = TcpStream::connect_timeout(&dest, Duration::from_secs(3))
                    .and_then(|mut t| t.write_all(format!("{token}-tcp").as_bytes()));
                format!(
                    "new(old: errno={}, new: {again:?})",
                    e.raw_os_error().unwrap_or(0)
                )
            }
        };
        drop(tcp);
        println!("done udp={udp_result} tcp={tcp_result}");
        std::process::exit(0);
    };
    match kind {
        "plain" | "opath" => work(),
        "thread" => {
            let _ = std::thread::spawn(work).join();
        }
        "zombie" => {
            std::thread::spawn(work);
            // SAFETY: the leader thread exits (the raw syscall: glibc's pthread_exit unwinds,
            // which Rust's main aborts on); the process lives on in the other thread, which
            // exits it.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!()
        }
        _ => {
            eprintln!("held: unknown kind {kind}");
            std::process::exit(2);
        }
    }
}

/// socket()+close() (optionally with setsockopt(SO_BINDTODEVICE, DEV) in between) N times;
/// prints the mean nanoseconds per iteration.
fn bench_socket(family: &str, kind: &str, n: &str, bind_dev: Option<&str>) {
    let family = if family == "6" {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let kind = if kind == "tcp" {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    let n: u64 = n.parse().expect("N");
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: plain socket/setsockopt/close on the fd just made.
        unsafe {
            let fd = libc::socket(family, kind, 0);
            if fd < 0 {
                report(&std::io::Error::last_os_error());
            }
            if let Some(dev) = bind_dev {
                let _ = set_bindtodevice(fd, dev);
            }
            libc::close(fd);
        }
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / n as f64);
}

/// Passes a UDP socket to itself over an AF_UNIX socketpair (SCM_RIGHTS) N times, closing each
/// received copy; prints ns per pass (what the file_receive guard adds to, where it runs).
fn bench_passfd(n: &str) {
    let n: u64 = n.parse().expect("N");
    let (a, b) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair");
    let udp = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| report(&e));
    let fds = [udp.as_raw_fd()];
    let start = Instant::now();
    for _ in 0..n {
        let iov = [std::io::IoSlice::new(b"x")];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        let mut buf = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            b.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("recvmsg");
        for c in msg.cmsgs().expect("cmsgs") {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(got) = c {
                for fd in got {
                    // SAFETY: closing the fd we were just given.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / n as f64);
}

/// IP_ADD_MEMBERSHIP + IP_DROP_MEMBERSHIP (ip_mreq, no interface named) N times on one socket;
/// prints ns per join+leave (what the membership guard adds to).
fn bench_join(n: &str) {
    let n: u64 = n.parse().expect("N");
    let sock = new_socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
    let mreq: [u8; 8] = [239, 1, 1, 1, 0, 0, 0, 0];
    let start = Instant::now();
    for _ in 0..n {
        for opt in [libc::IP_ADD_MEMBERSHIP, libc::IP_DROP_MEMBERSHIP] {
            // SAFETY: setsockopt on our own fd with an 8-byte ip_mreq.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    opt,
                    mreq.as_ptr().cast(),
                    8,
                )
            };
            if rc != 0 {
                report(&std::io::Error::last_os_error());
            }
        }
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / n as f64);
}

/// N unconnected UDP sendto()s of 64 bytes from one socket; prints ns per datagram.
fn bench_send(addr: &str, port: &str, n: &str) {
    let dest = SocketAddr::new(addr.parse().expect("ADDR"), port.parse().expect("PORT"));
    let sock = UdpSocket::bind(if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .unwrap_or_else(|e| report(&e));
    let n: u64 = n.parse().expect("N");
    let payload = [0x5au8; 64];
    let start = Instant::now();
    for _ in 0..n {
        if let Err(e) = sock.send_to(&payload, dest) {
            report(&e);
        }
    }
    println!("{:.1}", start.elapsed().as_nanos() as f64 / n as f64);
}

/// Holds the lock of a UDP socket for as long as the process lives: with UDP_CORK set and a
/// datagram pending, udp_sendmsg copies the next chunk from user memory under lock_sock; that
/// memory is a userfaultfd-registered page whose fault nobody serves, so the copy (and the
/// lock) waits until the process is killed. SOCK_DESTROY of the socket waits as long.
fn lock_udp(addr: &str, port: &str) {
    let ip: IpAddr = addr.parse().expect("ADDR");
    let dest = SocketAddr::new(ip, port.parse().expect("PORT"));
    let any: SocketAddr = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .unwrap();
    let sock = UdpSocket::bind(any).unwrap_or_else(|e| report(&e));
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with an int on our socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_UDP,
            libc::UDP_CORK,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    if rc != 0 {
        report(&std::io::Error::last_os_error());
    }
    sock.send_to(b"corked", dest).unwrap_or_else(|e| report(&e));
    // userfaultfd(O_CLOEXEC), UFFDIO_API, then one anonymous page registered for missing faults.
    #[repr(C)]
    struct Api {
        api: u64,
        features: u64,
        ioctls: u64,
    }
    #[repr(C)]
    struct Register {
        start: u64,
        len: u64,
        mode: u64,
        ioctls: u64,
    }
    const UFFDIO_API: libc::Ioctl = 0xc018_aa3f_u32 as _;
    const UFFDIO_REGISTER: libc::Ioctl = 0xc020_aa00_u32 as _;
    // SAFETY: plain syscalls and ioctls with valid pointers; the page is ours.
    unsafe {
        let uffd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) as libc::c_int;
        if uffd < 0 {
            report(&std::io::Error::last_os_error());
        }
        let mut api = Api {
            api: 0xaa,
            features: 0,
            ioctls: 0,
        };
        if libc::ioctl(uffd, UFFDIO_API, &mut api) != 0 {
            report(&std::io::Error::last_os_error());
        }
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let mut reg = Register {
            start: page as u64,
            len: 4096,
            mode: 1, // UFFDIO_REGISTER_MODE_MISSING
            ioctls: 0,
        };
        if libc::ioctl(uffd, UFFDIO_REGISTER, &mut reg) != 0 {
            report(&std::io::Error::last_os_error());
        }
        println!("holding");
        let _ = std::io::stdout().flush();
        let (sa, len) = match dest {
            SocketAddr::V4(v4) => {
                let mut sin: libc::sockaddr_in = std::mem::zeroed();
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                let mut st: libc::sockaddr_storage = std::mem::zeroed();
                std::ptr::copy_nonoverlapping(
                    (&sin as *const libc::sockaddr_in).cast::<u8>(),
                    (&mut st as *mut libc::sockaddr_storage).cast::<u8>(),
                    std::mem::size_of::<libc::sockaddr_in>(),
                );
                (st, std::mem::size_of::<libc::sockaddr_in>())
            }
            SocketAddr::V6(_) => panic!("lock-udp: IPv4 only"),
        };
        let rc = libc::sendto(
            sock.as_raw_fd(),
            page,
            100,
            0,
            (&sa as *const libc::sockaddr_storage).cast(),
            len as u32,
        );
        println!("sendto returned {rc}");
    }
}

fn main() {
    // BG_PROBE_COMM: the process name (comm) the kernel reports for this process.
    if let Some(name) = std::env::var_os("BG_PROBE_COMM") {
        use std::os::unix::ffi::OsStrExt;
        let mut buf = name.as_bytes().to_vec();
        buf.truncate(15);
        buf.push(0);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["send", proto, addr, port, token] => send(proto, addr, port, token),
        ["sockinfo"] => sockinfo(),
        ["hold", port, secs] => hold(port, secs),
        ["held", kind, addr, port, token] => held(kind, addr, port, token),
        ["bench-socket", family, kind, n] => bench_socket(family, kind, n, None),
        ["bench-socket", family, kind, n, dev] => bench_socket(family, kind, n, Some(dev)),
        ["bench-send", addr, port, n] => bench_send(addr, port, n),
        ["bench-passfd", n] => bench_passfd(n),
        ["bench-join", n] => bench_join(n),
        ["loop", secs] => tight_loop(secs.parse().expect("SECONDS"), None),
        ["loop-until", path] => tight_loop(3600.0, Some(std::path::Path::new(path))),
        ["refuse-loop", secs, name] => refuse_loop(secs.parse().expect("SECONDS"), name),
        ["escape", kind, addr, port, token] => escape(kind, addr, port, token, None),
        ["mcast", how, group, ifindex] => mcast(how, group, ifindex),
        ["mptcp"] => mptcp(),
        ["marked", how, value, addr, port, token] => send_marked(how, value, addr, port, token),
        ["escape", kind, addr, port, token, arg] => escape(kind, addr, port, token, Some(arg)),
        ["lock-udp", addr, port] => lock_udp(addr, port),
        ["attack", kind, addr, port, token, rest @ ..] => {
            attack::attack(kind, addr, port, token, rest)
        }
        _ => {
            eprintln!("usage: bg-probe send udp|tcp ADDR PORT TOKEN | sockinfo | loop SECONDS");
            std::process::exit(2);
        }
    }
}
