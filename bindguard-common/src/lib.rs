//! Types shared by the bindguard eBPF programs and the userspace loader.
//!
//! Everything here is `#[repr(C)]` plain data: the kernel copies it between map values and the
//! programs, and the userspace side reads the same bytes back from pinned maps.
#![no_std]

/// Bumped whenever [`Policy`], [`Counters`] or [`Event`] change layout, so a newer loader never
/// misreads pins left by an older one.
pub const ABI_VERSION: u32 = 6;

/// Maximum interface name length in bytes, without the NUL (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The policy's `flags`.
pub mod flags {
    /// Write `Policy::mark` into every new socket's SO_MARK.
    pub const SET_MARK: u32 = 1 << 0;
    /// Write `Policy::priority` into every new socket's SO_PRIORITY.
    pub const SET_PRIORITY: u32 = 1 << 1;
    /// Strict mode: the guards are attached as well.
    pub const STRICT: u32 = 1 << 2;
    /// Strict mode lets traffic over the loopback device through.
    pub const ALLOW_LOOPBACK: u32 = 1 << 3;
    /// The binding was made from a config file (`apply`, `daemon`): only such bindings are
    /// pruned when the config stops naming them.
    pub const FROM_CONFIG: u32 = 1 << 4;
    /// Strict mode's BPF LSM programs are attached (the BPF LSM is active).
    pub const LSM: u32 = 1 << 5;
    /// The binding was made by `oci-hook` at createRuntime: only such bindings are removed by
    /// its poststop, which names a cgroup from state any caller of the runtime controls.
    /// (A new bit, no new layout: [`ABI_VERSION`](super::ABI_VERSION) stays; older loaders
    /// ignore it, and a container bound by one is cleaned up with its deleted cgroup.)
    pub const FROM_OCI: u32 = 1 << 6;
    /// The binding was made by `bindguard nri` for a container: only such bindings are
    /// removed by its Synchronize (stale) and RemoveContainer. (A new bit, no new layout.)
    pub const FROM_NRI: u32 = 1 << 7;
    /// Strict mode lets the cgroup attach tun/tap devices (`--allow-tun`: the workload is
    /// itself a VPN client or tunnel that must open one). (A new bit, no new layout.)
    pub const ALLOW_TUN: u32 = 1 << 8;
    /// Strict mode lets the cgroup ptrace processes outside it (`--allow-ptrace-out`: a
    /// debugger inside attaching to something outside). (A new bit, no new layout.)
    pub const ALLOW_PTRACE_OUT: u32 = 1 << 9;
    /// Strict mode was asked knowingly below a delegation boundary (`--allow-delegated`):
    /// read by userspace only, so `status` says it was a choice. (A new bit, no new layout.)
    pub const ALLOW_DELEGATED: u32 = 1 << 10;
    /// The binding was made by the daemon for a user's `bindguard exec` (a grant): removed
    /// by the daemon when its cgroup empties. (A new bit, no new layout.)
    pub const FROM_USER: u32 = 1 << 13;
    /// `--dns` named an IPv4 resolver: `Policy::dns4`.
    pub const DNS4: u32 = 1 << 11;
    /// `--dns` named an IPv6 resolver: `Policy::dns6`.
    pub const DNS6: u32 = 1 << 12;
}

/// The whole policy of one binding: its cgroup's value in the program set's `policy` cgroup
/// storage map.
///
/// A zero `ifindex` or a zero `netns_cookie` never matches a real socket, so an all-zero
/// policy refuses every socket: that is what the programs see if the map was never filled.
/// A policy with a name but ifindex 0 is a *closed* binding: its interface does not exist
/// (yet, or any more), and every new socket is refused until it is re-targeted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Cookie of the network namespace the interface lives in (bpf_get_netns_cookie).
    pub netns_cookie: u64,
    /// Inode of that namespace; userspace uses it to find the namespace again for `status`.
    pub netns_ino: u64,
    /// Hash of the eBPF object the programs were loaded from: a re-attach by a bindguard with
    /// other programs replaces them instead of only rewriting the policy.
    pub object_hash: u64,
    /// [`ABI_VERSION`] of the loader that wrote this policy.
    pub abi: u32,
    /// The interface every socket is bound to, in the namespace above.
    pub ifindex: u32,
    pub mark: u32,
    pub priority: u32,
    pub flags: u32,
    /// Written by userspace only, never read by the programs: how many sockets (or tasks
    /// whose sockets could not be seen) the last `--existing destroy` or `reset-sockets` pass
    /// could not end. `status` reports a non-zero count; the next attach writes 0. (The
    /// former padding: older loaders write 0 there.)
    pub unreached: u32,
    /// The interface's name when the binding was made, NUL-padded.
    pub ifname: [u8; 16],
    /// Strict mode: socket families beyond AF_UNIX, AF_NETLINK, AF_INET and AF_INET6 that the
    /// cgroup may still create (bit N = address family N, `--allow-family`).
    pub families: u64,
    /// The bound cgroup's id: a socket received by a process of the cgroup is governed by the
    /// binding only if it was made in this cgroup or below it.
    pub cgroup_id: u64,
    /// `--dns`: every query of the cgroup to port 53 goes to this IPv4 resolver (network byte
    /// order; with [`flags::DNS4`]), and IPv6 sockets' queries too when there is no
    /// [`Policy::dns6`] (as ::ffff:dns4).
    pub dns4: u32,
    /// `--dns`: the IPv6 resolver (the four words as in `bpf_sock_addr.user_ip6`; with
    /// [`flags::DNS6`]).
    pub dns6: [u32; 4],
    pub _pad: u32,
}

impl Policy {
    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// Per-CPU counters of one binding: its cgroup's value in the set's per-CPU `stats` cgroup
/// storage map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct Counters {
    /// Sockets that sock_create bound to the interface.
    pub sockets_bound: u64,
    /// Sockets refused because they were made in a network namespace other than the policy's.
    pub sockets_refused_netns: u64,
    /// setsockopt calls refused because they would change the binding (strict mode).
    pub sockopt_refused: u64,
    /// bind/connect/sendmsg calls refused because the socket's binding no longer matches.
    pub addr_refused: u64,
    /// Packets dropped leaving by another interface (strict mode).
    pub egress_dropped: u64,
    /// Packets dropped arriving by another interface (strict mode).
    pub ingress_dropped: u64,
    /// MPTCP sockets refused with EPROTONOSUPPORT (programs fall back to TCP).
    pub mptcp_refused: u64,
    /// socket() calls refused for their family (AF_PACKET, AF_XDP, ...; strict mode, BPF LSM).
    pub families_refused: u64,
    /// Socket fds from outside the cgroup refused on receipt (SCM_RIGHTS, pidfd_getfd; strict
    /// mode, BPF LSM).
    pub fds_refused: u64,
    /// Multicast membership changes refused because they named another interface.
    pub multicast_refused: u64,
    /// Packets dropped because their mark differed from the policy's.
    pub mark_dropped: u64,
    /// Packets whose priority (changed by IP_TOS, IPV6_TCLASS or a cmsg) was set back to the
    /// policy's.
    pub priority_restored: u64,
    /// Refusal events not sent to `monitor`: over the binding's rate limit ([`EVENT_BURST`],
    /// [`EVENT_REFILL_NS`]), or the shared ring buffer was full. The refusals themselves
    /// happened and are counted above.
    pub events_dropped: u64,
    /// The binding's event token bucket on this CPU (the programs' state, not a count).
    #[cfg_attr(feature = "user", serde(skip))]
    pub event_tokens: u64,
    /// bpf_ktime_get_ns() up to which tokens were added to the bucket.
    #[cfg_attr(feature = "user", serde(skip))]
    pub event_refill_ns: u64,
    /// Attaches to tun/tap devices refused (TUNSETIFF on an existing device, TUNSETQUEUE;
    /// strict mode, BPF LSM).
    pub devices_refused: u64,
    /// ptrace, process_vm_readv/writev, /proc/PID/mem, /proc/PID/fd and pidfd_getfd access
    /// to a process outside the binding refused, and TIOCSTI/TIOCLINUX into a terminal
    /// (strict mode, BPF LSM): ways to drive a process outside.
    pub ptrace_refused: u64,
    /// DNS queries sent to the binding's resolver instead of the address the program named
    /// (`--dns`): one per connect or unconnected send to port 53.
    pub dns_redirected: u64,
}

/// Each binding may send at most this many events at once per CPU to the ring buffer all
/// bindings share: one binding's flood cannot hide the others' events.
pub const EVENT_BURST: u64 = 64;
/// ... and one more every this many nanoseconds (100 per second per CPU).
pub const EVENT_REFILL_NS: u64 = 10_000_000;

impl core::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Self) {
        self.sockets_bound += o.sockets_bound;
        self.sockets_refused_netns += o.sockets_refused_netns;
        self.sockopt_refused += o.sockopt_refused;
        self.addr_refused += o.addr_refused;
        self.egress_dropped += o.egress_dropped;
        self.ingress_dropped += o.ingress_dropped;
        self.mptcp_refused += o.mptcp_refused;
        self.families_refused += o.families_refused;
        self.fds_refused += o.fds_refused;
        self.multicast_refused += o.multicast_refused;
        self.mark_dropped += o.mark_dropped;
        self.priority_restored += o.priority_restored;
        self.events_dropped += o.events_dropped;
        self.devices_refused += o.devices_refused;
        self.ptrace_refused += o.ptrace_refused;
        self.dns_redirected += o.dns_redirected;
    }
}

/// Where a refusal happened; `Event::hook`.
pub mod hook {
    pub const SOCK_CREATE: u32 = 1;
    pub const SETSOCKOPT: u32 = 2;
    pub const BIND4: u32 = 3;
    pub const BIND6: u32 = 4;
    pub const CONNECT4: u32 = 5;
    pub const CONNECT6: u32 = 6;
    pub const SENDMSG4: u32 = 7;
    pub const SENDMSG6: u32 = 8;
    pub const EGRESS: u32 = 9;
    pub const INGRESS: u32 = 10;
    /// sock_create refused an MPTCP socket (value: the protocol).
    pub const MPTCP: u32 = 11;
    /// BPF LSM socket_create refused a family (value: the family).
    pub const SOCKET_FAMILY: u32 = 12;
    /// BPF LSM file_receive refused a socket (value: its family).
    pub const FILE_RECEIVE: u32 = 13;
    /// A multicast membership change was refused (value: level << 16 | optname).
    pub const MULTICAST: u32 = 14;
    /// The egress filter dropped a packet with another mark (value: the packet's mark).
    pub const MARK: u32 = 15;
    /// BPF LSM refused attaching a tun/tap device (value: 1 TUNSETIFF, 2 TUNSETQUEUE).
    pub const TUN: u32 = 16;
    /// BPF LSM refused ptrace-level access to a process outside the binding (value: its pid).
    pub const PTRACE: u32 = 17;
    /// BPF LSM refused TIOCSTI or TIOCLINUX (value: the ioctl).
    pub const TIOCSTI: u32 = 18;
    /// A DNS query to a loopback resolver (the 127.0.0.53 stub) was refused in strict mode
    /// without `--dns` (value: the address hook, [`CONNECT4`] .. [`SENDMSG6`]).
    pub const DNS_STUB: u32 = 19;
}

/// Offsets into kernel structures, read from the running kernel's BTF when the programs are
/// loaded (the BPF LSM programs follow pointers the context does not describe). A field the
/// BTF does not have is [`KernelLayout::MISSING`]; the programs then fail closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub file_f_inode: u32,
    pub file_private_data: u32,
    pub inode_i_mode: u32,
    pub socket_sk: u32,
    pub sock_family: u32,
    pub sock_bound_dev_if: u32,
    pub sock_net: u32,
    pub net_cookie: u32,
    pub sock_cgroup: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// Offset from the task_struct of the 32-bit word that marks a 32-bit (compat) syscall,
    /// and the bits of it that do: x86's `thread_info.status` & TS_COMPAT, arm64's
    /// `thread_info.flags` & TIF_32BIT (the low word on little-endian). Filled by the
    /// loader for the architecture it runs on; the eBPF object is the same for all of them.
    pub task_compat: u32,
    pub compat_mask: u32,
    pub uring_cmd_op: u32,
    pub uring_cmd_sqe: u32,
    pub sqe_level: u32,
    pub sqe_optname: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp` and `task_struct.tgid`: the cgroup (v2) of
    /// the process a ptrace-level access names.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub task_tgid: u32,
    /// What the running kernel lets each program type do ([`features`]), probed by the loader.
    /// A program reads it as a constant (the verifier prunes the branches it rules out), so a
    /// helper the kernel refuses for that type is never called.
    pub features: u32,
}

impl KernelLayout {
    pub const MISSING: u32 = u32::MAX;
    pub const UNKNOWN: Self = Self {
        file_f_inode: Self::MISSING,
        file_private_data: Self::MISSING,
        inode_i_mode: Self::MISSING,
        socket_sk: Self::MISSING,
        sock_family: Self::MISSING,
        sock_bound_dev_if: Self::MISSING,
        sock_net: Self::MISSING,
        net_cookie: Self::MISSING,
        sock_cgroup: Self::MISSING,
        cgroup_level: Self::MISSING,
        cgroup_ancestors: Self::MISSING,
        cgroup_kn: Self::MISSING,
        kernfs_node_id: Self::MISSING,
        task_compat: Self::MISSING,
        compat_mask: 0,
        uring_cmd_op: Self::MISSING,
        uring_cmd_sqe: Self::MISSING,
        sqe_level: Self::MISSING,
        sqe_optname: Self::MISSING,
        task_cgroups: Self::MISSING,
        css_set_dfl_cgrp: Self::MISSING,
        task_tgid: Self::MISSING,
        features: 0,
    };
}

/// Bits of [`KernelLayout::features`]. The task helpers come three bits per program family,
/// at the family's shift: bpf_get_current_comm reaches cgroup_sockopt in 6.1 and cgroup_skb
/// only in 6.16, for example.
pub mod features {
    pub const PID_TGID: u32 = 1 << 0;
    pub const CGROUP_ID: u32 = 1 << 1;
    pub const COMM: u32 = 1 << 2;
    /// Shifts of the families (cgroup_sock, cgroup_sock_addr, cgroup_sockopt, cgroup_skb).
    pub const SOCK: u32 = 0;
    pub const SOCK_ADDR: u32 = 4;
    pub const SOCKOPT: u32 = 8;
    pub const SKB: u32 = 12;
    /// bpf_set_retval from cgroup_sock (6.1): MPTCP is refused with EPROTONOSUPPORT rather
    /// than EPERM.
    pub const SOCK_SET_RETVAL: u32 = 1 << 16;
    /// bpf_setsockopt from the connect, bind and sendmsg address hooks (`--allow-loopback`
    /// pins a socket's device there; 5.10 allows it in connect hooks only).
    pub const ADDR_SETSOCKOPT_CONNECT: u32 = 1 << 17;
    pub const ADDR_SETSOCKOPT_BIND: u32 = 1 << 18;
    pub const ADDR_SETSOCKOPT_SENDMSG: u32 = 1 << 19;
}

/// One refusal or drop, sent to user space through the program set's `events` ring buffer
/// (only on the refusal path: allowed sockets and packets cost no event).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// cgroup of the current task (0 for packets received in softirq context).
    pub cgroup_id: u64,
    /// Thread-group id of the current task (0 when not in process context).
    pub pid: u32,
    /// One of [`hook`].
    pub hook: u32,
    /// sock_create: 0; setsockopt: the option; address hooks: the socket's bound ifindex;
    /// packet filters: the interface the packet used.
    pub value: u32,
    pub _pad: u32,
    /// The task's command name, NUL-padded.
    pub comm: [u8; 16],
    /// The binding whose program refused: the cgroup id from its policy (the ring buffer is
    /// shared by every binding of a program set). After the older fields, so an older,
    /// shorter event reads 0 here and below.
    pub binding: u64,
    /// What a refused setsockopt asked for: SO_BINDTODEVICE's name (NUL-padded, as the kernel
    /// would read it), SO_BINDTOIFINDEX's, SO_MARK's or SO_PRIORITY's value as a little-endian
    /// u32 in the first four bytes. Zero for other events.
    pub asked: [u8; 16],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), contain only integers and have no padding the kernel could
    // leave uninitialised (Policy's padding is an explicit field).
    unsafe impl aya::Pod for super::Policy {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::KernelLayout {}
}
