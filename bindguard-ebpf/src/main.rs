//! bindguard's programs. One instance of this object is loaded per bindguard build and pinned
//! as a shared program set; every binding links the same programs to its cgroup. What differs
//! per binding lives in cgroup storage (`POLICY`, per-CPU `STATS`): the kernel gives each
//! program the value of the cgroup it is *attached* to, also when it runs for a descendant,
//! so a binding and its ancestor's each see their own policy. `EVENTS` is one ring buffer per
//! set; every event names its binding.
//!
//! - `bind_sock_create` (both modes): binds every new INET socket to the interface and refuses
//!   MPTCP (its subflows are kernel sockets the hook never sees) with EPROTONOSUPPORT;
//! - strict mode adds guards that close the escapes a plain binding leaves open:
//!   `guard_setsockopt` (changing the binding, multicast joins on another interface),
//!   `guard_*` address hooks (a binding that was reset or moved), `filter_egress`/
//!   `filter_ingress` (any packet on another interface, or with another mark), and BPF
//!   LSM programs that run in the *caller's* context, where the cgroup programs above (which
//!   run for the socket's cgroup) cannot see: `lsm_socket_create` (AF_PACKET, AF_XDP, ...),
//!   `lsm_file_receive` (sockets brought in by SCM_RIGHTS or pidfd_getfd),
//!   `lsm_socket_setsockopt` (32-bit setsockopt, which skips the cgroup sockopt hook) and
//!   `lsm_uring_cmd` (setsockopt through io_uring), `lsm_tun_open`/`lsm_tun_queue` (tun/tap
//!   devices, whose packets belong to no socket) and `lsm_ptrace` (driving a process outside
//!   the binding).
//!
//! One file per hook family (sock, sockopt, sock_addr, skb, lsm), each with thin entry points;
//! families share only [`maps`] (globals, maps, count/report), [`uapi`] (constants, verdicts)
//! and [`membership`], never each other. The loader finds programs by function name and maps
//! by their exported names, not by file.
#![no_std]
#![no_main]

mod lsm;
mod maps;
mod membership;
mod skb;
mod sock;
mod sock_addr;
mod sockopt;
mod uapi;
mod unix;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
