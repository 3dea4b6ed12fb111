//! Listeners in the peer namespaces: they record every UDP datagram and TCP stream that
//! arrives, and count every TCP/UDP packet sent to their port (SYNs included), so
//! a test can say which uplink traffic left by — and that nothing left by the other.

use std::{
    io::Read,
    net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

use crate::topology::{NetnsGuard, Topology};

/// The port every listener uses (each topology has its own namespaces, so no clashes).
pub const PORT: u16 = 7000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    A,
    B,
}

/// Membership-report frames, by the peer that received them.
type Reports = Mutex<Vec<(Peer, Vec<u8>)>>;

#[derive(Debug, Clone)]
pub struct Hit {
    pub peer: Peer,
    pub data: String,
}

/// Both peers' listeners; stopped and joined on drop.
pub struct Listener {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// IGMP and MLD frames (group membership reports) each peer received.
    reports: Arc<Reports>,
    /// Every frame carrying a test token (`bgtok-`), whatever its protocol (ICMP, raw IP, ...).
    frames: Arc<Reports>,
    packets_a: Arc<AtomicU64>,
    packets_b: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listener {
    pub fn start(topo: &Topology) -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let packets_a = Arc::new(AtomicU64::new(0));
        let packets_b = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for (peer, ns, packets) in [
            (Peer::A, &topo.peer_a, &packets_a),
            (Peer::B, &topo.peer_b, &packets_b),
        ] {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let sockets = open_in(ns, || {
                let (udp, tcp) = bind_any(PORT);
                (udp, tcp, packet_socket("eth0"))
            });
            let hits = hits.clone();
            let reports = reports.clone();
            let frames = frames.clone();
            let stop = stop.clone();
            let packets = packets.clone();
            threads.push(std::thread::spawn(move || {
                let (udp, tcp, raw) = sockets;
                let _ = ready_tx.send(());
                let seen = Seen {
                    hits: &hits,
                    reports: &reports,
                    frames: &frames,
                    packets: &packets,
                };
                serve(peer, udp, tcp, raw, &seen, &stop);
            }));
            ready_rx.recv().expect("listener thread started");
        }
        Self {
            hits,
            reports,
            frames,
            packets_a,
            packets_b,
            stop,
            threads,
        }
    }

    /// Peers that received `token`, waiting up to `timeout` for the first one.
    pub fn wait_for(&self, token: &str, timeout: Duration) -> Vec<Peer> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.peers_with(token);
            if !got.is_empty() || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peers that have received `token` so far.
    pub fn peers_with(&self, token: &str) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.data.contains(token))
            .map(|h| h.peer)
            .collect();
        peers.sort_by_key(|p| *p as u8);
        peers.dedup();
        peers
    }

    /// Whether `peer` received an IGMP or MLD report naming `group` (its address bytes appear
    /// in the frame), waiting up to `timeout`.
    pub fn report_for(&self, peer: Peer, group: std::net::IpAddr, timeout: Duration) -> bool {
        let bytes = match group {
            std::net::IpAddr::V4(g) => g.octets().to_vec(),
            std::net::IpAddr::V6(g) => g.octets().to_vec(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self
                .reports
                .lock()
                .unwrap()
                .iter()
                .any(|(p, f)| *p == peer && f.windows(bytes.len()).any(|w| w == bytes));
            if seen || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a frame carrying `token` (any protocol: ICMP echo, raw IP, a datagram no socket
    /// took) reached `peer`'s eth0, waiting up to `timeout`.
    pub fn frame_with(&self, peer: Peer, token: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen =
                self.frames.lock().unwrap().iter().any(|(p, f)| {
                    *p == peer && f.windows(token.len()).any(|w| w == token.as_bytes())
                });
            if seen || Instant::now() >= deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// TCP/UDP packets to the listeners' port that reached a peer's eth0, to any address.
    pub fn packets(&self, peer: Peer) -> u64 {
        match peer {
            Peer::A => self.packets_a.load(Ordering::SeqCst),
            Peer::B => self.packets_b.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs `open` on a thread that entered `ns`; sockets keep the namespace they were made in.
fn open_in<T: Send + 'static>(ns: &NetnsGuard, open: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.path();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
        open()
    })
    .join()
    .expect("listener setup")
}

/// Non-blocking UDP and TCP sockets on [::]:`port`; with IPV6_V6ONLY off (the default) they
/// take IPv4 as mapped addresses too.
fn bind_any(port: u16) -> (UdpSocket, TcpListener) {
    let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let udp = UdpSocket::bind(any).expect("bind udp");
    udp.set_nonblocking(true).unwrap();
    let tcp = TcpListener::bind(any).expect("bind tcp");
    tcp.set_nonblocking(true).unwrap();
    (udp, tcp)
}

/// Takes every waiting datagram (echoed back when `echo`) and connection (read to its end),
/// passing each payload to `record`; returns whether there was anything.
fn drain(
    udp: &UdpSocket,
    tcp: &TcpListener,
    echo: bool,
    buf: &mut [u8],
    record: impl Fn(&[u8]),
) -> bool {
    let mut busy = false;
    while let Ok((n, from)) = udp.recv_from(buf) {
        busy = true;
        if echo {
            let _ = udp.send_to(&buf[..n], from);
        }
        record(&buf[..n]);
    }
    while let Ok((mut conn, _)) = tcp.accept() {
        busy = true;
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut data = Vec::new();
        let _ = conn.read_to_end(&mut data);
        record(&data);
    }
    busy
}

/// An AF_PACKET socket that sees every frame arriving on `ifname`.
fn packet_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto as i32,
        )
    };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ifindex = nix::net::if_::if_nametoindex(ifname).expect("peer eth0");
    // SAFETY: sockaddr_ll is plain data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: binding our fd to a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
    fd
}

/// Whether a frame carries TCP or UDP to the listeners' port, to any address (SYNs, datagrams
/// to link-local addresses and escapes by odd routes all count).
fn to_listener_port(frame: &[u8]) -> bool {
    let (proto, l4) = match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            let ihl = usize::from(frame.get(14).map_or(5, |b| b & 0x0f)) * 4;
            (frame.get(23).copied(), 14 + ihl)
        }
        Some([0x86, 0xdd]) => (frame.get(20).copied(), 54),
        _ => return false,
    };
    matches!(proto, Some(6 | 17)) && frame.get(l4 + 2..l4 + 4) == Some(&PORT.to_be_bytes()[..])
}

/// IGMP (IPv4 protocol 2) and MLD (ICMPv6 behind a hop-by-hop header) frames.
fn is_membership_report(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.get(23) == Some(&2),
        Some([0x86, 0xdd]) => matches!(frame.get(20), Some(0 | 58)),
        _ => false,
    }
}

/// Where one peer's listener records what it saw.
struct Seen<'a> {
    hits: &'a Mutex<Vec<Hit>>,
    reports: &'a Reports,
    frames: &'a Reports,
    packets: &'a AtomicU64,
}

fn serve(
    peer: Peer,
    udp: UdpSocket,
    tcp: TcpListener,
    raw: OwnedFd,
    seen: &Seen,
    stop: &AtomicBool,
) {
    let Seen {
        hits,
        reports,
        frames,
        packets,
    } = *seen;
    let mut buf = vec![0u8; 65536];
    let record = |data: &[u8]| {
        hits.lock().unwrap().push(Hit {
            peer,
            data: String::from_utf8_lossy(data).into_owned(),
        })
    };
    while !stop.load(Ordering::SeqCst) {
        let mut idle = true;
        loop {
            // SAFETY: reading into our buffer from our fd.
            let n = unsafe { libc::recv(raw.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            idle = false;
            let frame = &buf[..n as usize];
            if frame.windows(6).any(|w| w == b"bgtok-") {
                frames.lock().unwrap().push((peer, frame.to_vec()));
            }
            if to_listener_port(frame) {
                packets.fetch_add(1, Ordering::SeqCst);
            } else if is_membership_report(frame) {
                reports.lock().unwrap().push((peer, frame.to_vec()));
            }
        }
        idle &= !drain(&udp, &tcp, false, &mut buf, record);
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// TCP and UDP listeners on 127.0.0.1/::1 (one dual-stack [::] socket each) inside `ns`, for
/// the loopback tests. UDP datagrams are echoed back so connected clients see a reply.
pub struct LoopbackListener {
    payloads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub const LOOPBACK_PORT: u16 = 7001;

impl LoopbackListener {
    pub fn start(ns: &NetnsGuard) -> Self {
        let (udp, tcp) = open_in(ns, || bind_any(LOOPBACK_PORT));
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, st) = (payloads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let record = |data: &[u8]| {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(data).into_owned())
            };
            while !st.load(Ordering::SeqCst) {
                if !drain(&udp, &tcp, true, &mut buf, record) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Self {
            payloads,
            stop,
            thread: Some(thread),
        }
    }

    /// Whether `token` arrived, waiting up to `timeout`.
    pub fn got(&self, token: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .payloads
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.contains(token))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoopbackListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
