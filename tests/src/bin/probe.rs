//! bg-probe: a tiny client the tests run inside a cgroup and namespace.
//!
//!   bg-probe send udp|tcp ADDR PORT TOKEN   send TOKEN; prints `ok` or `error errno=N ...`
//!   bg-probe sockinfo                       per family/type: the new socket's ifindex, mark, priority
//!   bg-probe loop SECONDS                   make sockets in a tight loop; count their bindings
//!
//! Exit status: 0 when the operation succeeded, 1 when the kernel refused it.

use std::{
    collections::BTreeMap,
    io::Write,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

fn getsockopt_int(fd: i32, level: i32, opt: i32) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, pointer and length for an int option.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (&mut v as *mut i32).cast(), &mut len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

fn new_socket(family: i32, kind: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
        "tcp" => TcpStream::connect_timeout(&dest, Duration::from_secs(3)).and_then(|mut s| {
            s.write_all(token.as_bytes())?;
            s.shutdown(std::net::Shutdown::Write)
        }),
        _ => panic!("proto must be udp or tcp"),
    };
    match result {
        Ok(()) => println!("ok"),
        Err(e) => report(&e),
    }
}

fn sockinfo() {
    let mut failed = false;
    for (fname, family) in [("inet", libc::AF_INET), ("inet6", libc::AF_INET6)] {
        for (tname, kind) in [("udp", libc::SOCK_DGRAM), ("tcp", libc::SOCK_STREAM)] {
            match new_socket(family, kind) {
                Ok(s) => {
                    let fd = s.as_raw_fd();
                    let idx = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX);
                    let mark = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_MARK);
                    let prio = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY);
                    println!(
                        "{fname} {tname} ifindex={} mark={} priority={}",
                        idx.unwrap_or(-1),
                        mark.unwrap_or(-1),
                        prio.unwrap_or(-1)
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

fn tight_loop(seconds: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut by_ifindex: BTreeMap<i32, u64> = BTreeMap::new();
    let (mut total, mut errors) = (0u64, 0u64);
    while Instant::now() < deadline {
        total += 1;
        match new_socket(libc::AF_INET, libc::SOCK_DGRAM)
            .and_then(|s| getsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX))
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["send", proto, addr, port, token] => send(proto, addr, port, token),
        ["sockinfo"] => sockinfo(),
        ["loop", secs] => tight_loop(secs.parse().expect("SECONDS")),
        _ => {
            eprintln!("usage: bg-probe send udp|tcp ADDR PORT TOKEN | sockinfo | loop SECONDS");
            std::process::exit(2);
        }
    }
}
