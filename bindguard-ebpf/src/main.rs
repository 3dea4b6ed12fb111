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
//!   `filter_ingress` (any packet on another interface, or with another mark), and three BPF
//!   LSM programs that run in the *caller's* context, where the cgroup programs above (which
//!   run for the socket's cgroup) cannot see: `lsm_socket_create` (AF_PACKET, AF_XDP, ...),
//!   `lsm_file_receive` (sockets brought in by SCM_RIGHTS or pidfd_getfd) and
//!   `lsm_socket_setsockopt` (32-bit setsockopt, which skips the cgroup sockopt hook).
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_map_def,
    helpers::generated::bpf_get_local_storage,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_get_netns_cookie, bpf_set_retval, bpf_setsockopt},
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt, lsm_cgroup, map},
    maps::RingBuf,
    programs::{LsmContext, SkBuffContext, SockAddrContext, SockContext, SockoptContext},
};
use bindguard_common::{Counters, Event, KernelLayout, Policy, features, flags, hook};

/// Return values of cgroup programs: 1 lets the operation (or packet) through; 0 refuses it
/// with EPERM (or drops the packet).
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

const SOL_SOCKET: i32 = 1;
const SO_PRIORITY: i32 = 12;
const SO_BINDTODEVICE: i32 = 25;
const SO_MARK: i32 = 36;
const SO_BINDTOIFINDEX: i32 = 62;
/// The loopback device has this ifindex in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const IP_ADD_MEMBERSHIP: i32 = 35;
const IP_DROP_MEMBERSHIP: i32 = 36;
const IP_ADD_SOURCE_MEMBERSHIP: i32 = 39;
/// MCAST_JOIN_GROUP .. MCAST_MSFILTER (RFC 3678), at SOL_IP and SOL_IPV6 alike.
const MCAST_FIRST: i32 = 42;
const MCAST_LAST: i32 = 48;
const IPV6_ADD_MEMBERSHIP: i32 = 20;
const IPV6_DROP_MEMBERSHIP: i32 = 21;
const IPV6_JOIN_ANYCAST: i32 = 27;
const IPV6_LEAVE_ANYCAST: i32 = 28;

const AF_UNIX: u32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_NETLINK: u32 = 16;
const IPPROTO_MPTCP: u32 = 262;
const EPROTONOSUPPORT: i32 = 93;
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
/// io_uring_cmd.cmd_op for a socket setsockopt (include/uapi/linux/io_uring.h).
const SOCKET_URING_OP_SETSOCKOPT: u32 = 3;
/// x86's thread_info.status bit for "this is a 32-bit syscall".
const TS_COMPAT: u32 = 0x0002;
/// Deepest cgroup nesting the file_receive check walks (the kernel allows far more, but a
/// socket from deeper than this below the bound cgroup is refused: fail closed).
const MAX_CGROUP_DEPTH: u32 = 32;

/// Filled in by the loader from the running kernel's BTF (a read-only global, so the verifier
/// sees constants). The sentinel keeps it in .rodata.
#[unsafe(no_mangle)]
static KERNEL: KernelLayout = KernelLayout::UNKNOWN;

#[inline(always)]
fn kernel() -> KernelLayout {
    // SAFETY: a plain read of our own global; volatile so the loader's value is used.
    unsafe { core::ptr::read_volatile(&KERNEL) }
}

/// A legacy map definition in the `maps` section for a cgroup storage map keyed by a bare
/// `u64` cgroup id. aya-ebpf's `CgroupStorage` uses the 16-byte `bpf_cgroup_storage_key`,
/// which makes the kernel keep one value per (cgroup, attach type); an 8-byte key makes one
/// value per cgroup, shared by all of a binding's programs, so userspace writes the policy once.
#[repr(transparent)]
struct SharedStorage(core::cell::UnsafeCell<bpf_map_def>);

// SAFETY: the definition is only read by the loader; programs pass its address to a helper.
unsafe impl Sync for SharedStorage {}

const BPF_MAP_TYPE_CGROUP_STORAGE: u32 = 19;
const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: u32 = 21;

impl SharedStorage {
    const fn new<V>(map_type: u32) -> Self {
        Self(core::cell::UnsafeCell::new(bpf_map_def {
            type_: map_type,
            key_size: 8,
            value_size: core::mem::size_of::<V>() as u32,
            max_entries: 0,
            map_flags: 0,
            id: 0,
            pinning: 0,
        }))
    }

    /// The value of the cgroup this program is attached to. Never null: the kernel creates the
    /// storage (zeroed) when the first program using the map is linked to the cgroup.
    #[inline(always)]
    fn get<V>(&self) -> *mut V {
        unsafe { bpf_get_local_storage(self.0.get().cast(), 0) }.cast()
    }
}

/// The binding's [`Policy`]. All zero until userspace writes it, and all zero refuses every
/// socket (fail closed).
#[unsafe(link_section = "maps")]
#[unsafe(export_name = "POLICY")]
static POLICY: SharedStorage = SharedStorage::new::<Policy>(BPF_MAP_TYPE_CGROUP_STORAGE);

/// The binding's [`Counters`], one copy per CPU.
#[unsafe(link_section = "maps")]
#[unsafe(export_name = "STATS")]
static STATS: SharedStorage = SharedStorage::new::<Counters>(BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// A build-time variant (BINDGUARD_EBPF_VARIANT) whose object differs from the normal one, for
/// the upgrade test: a second bindguard build with really different programs.
#[cfg(bindguard_variant)]
#[unsafe(no_mangle)]
static VARIANT: u32 = 1;

const SOCK: Task = Task::Family(features::SOCK);
const SOCK_ADDR: Task = Task::Family(features::SOCK_ADDR);
const SOCKOPT: Task = Task::Family(features::SOCKOPT);
const SKB: Task = Task::Family(features::SKB);

#[inline(always)]
fn policy() -> &'static Policy {
    // SAFETY: the storage outlives the program run; the kernel never frees it under us.
    unsafe { &*POLICY.get::<Policy>() }
}

#[inline(always)]
fn count(field: fn(&mut Counters) -> &mut u64) {
    // Per-CPU slot and programs do not nest on one CPU here: a plain add is race-free.
    unsafe { *field(&mut *STATS.get::<Counters>()) += 1 };
}

/// Whose context a program runs in, for the task fields of an event.
#[derive(Clone, Copy)]
enum Task {
    /// Softirq (ingress): no task.
    None,
    /// A cgroup program family: the task helpers the kernel allows it (KERNEL.features).
    Family(u32),
    /// BPF LSM programs may call every task helper.
    Lsm,
}

impl Task {
    #[inline(always)]
    fn allows(self, helper: u32) -> bool {
        match self {
            Task::None => false,
            Task::Family(shift) => (kernel().features >> shift) & helper != 0,
            Task::Lsm => true,
        }
    }
}

/// Records a refusal for `bindguard monitor`. A full ring buffer loses the event, never the
/// enforcement. Task fields a kernel does not let this program type read stay 0.
#[inline(always)]
fn report(hook: u32, value: u32, task: Task) {
    #[cfg(bindguard_variant)]
    let _ = unsafe { core::ptr::read_volatile(&VARIANT) };
    let pid = if task.allows(features::PID_TGID) {
        (bpf_get_current_pid_tgid() >> 32) as u32
    } else {
        0
    };
    let cgroup_id = if task.allows(features::CGROUP_ID) {
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        0
    };
    let comm = if task.allows(features::COMM) {
        bpf_get_current_comm().unwrap_or([0; 16])
    } else {
        [0; 16]
    };
    let event = Event {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        pid,
        hook,
        value,
        _pad: 0,
        comm,
        binding: policy().cgroup_id,
    };
    let _ = EVENTS.output::<Event>(&event, 0);
}

/// Binds every new AF_INET/AF_INET6 socket of the cgroup to the policy's interface.
///
/// Fails closed: a socket made in another network namespace (where the ifindex means some
/// other device or nothing) and any socket seen while the policy is empty is refused.
#[cgroup_sock(sock_create)]
pub fn bind_sock_create(ctx: SockContext) -> i32 {
    let policy = policy();
    let sk = ctx.sock;
    if unsafe { (*sk).protocol } == IPPROTO_MPTCP {
        // MPTCP's subflows are kernel sockets this hook never sees, so a binding written here
        // would not reach them: refuse in a way programs treat as "no MPTCP here" and fall
        // back to TCP.
        // Without bpf_set_retval here (before 6.1) the caller gets EPERM: still refused.
        if kernel().features & features::SOCK_SET_RETVAL != 0 {
            unsafe { bpf_set_retval(-EPROTONOSUPPORT) };
        }
        count(|c| &mut c.mptcp_refused);
        report(hook::MPTCP, IPPROTO_MPTCP, SOCK);
        return REFUSE;
    }
    let cookie = unsafe { bpf_get_netns_cookie(sk.cast()) };
    if policy.ifindex == 0 || cookie != policy.netns_cookie {
        count(|c| &mut c.sockets_refused_netns);
        report(hook::SOCK_CREATE, 0, SOCK);
        return REFUSE;
    }
    unsafe {
        // With --allow-loopback the address hooks pin the socket on first use instead, to lo
        // or to the interface by destination: the kernel lets an unbound socket be bound
        // without CAP_NET_RAW, but not a bound one be moved.
        if !policy.has(flags::ALLOW_LOOPBACK) {
            (*sk).bound_dev_if = policy.ifindex;
        }
        if policy.has(flags::SET_MARK) {
            (*sk).mark = policy.mark;
        }
        if policy.has(flags::SET_PRIORITY) {
            (*sk).priority = policy.priority;
        }
    }
    count(|c| &mut c.sockets_bound);
    ALLOW
}

/// Never attached for long: linked first (by fd only) when a binding is made or moved to this
/// set, so that the kernel creates the cgroup's `POLICY` and `STATS` storage and userspace
/// can write the policy *before* any enforcing program is linked — no socket ever meets a
/// zero policy. The storage stays with the cgroup after this link is dropped.
///
/// A sock_create program (it lets every socket through, unbound, as the cgroup had before):
/// every binding links that hook anyway, so linking and dropping this one never turns the
/// kernel's per-hook static key on or off — which patches kernel text and interrupts every
/// CPU — except for the first binding on the machine.
#[cgroup_sock(sock_create)]
pub fn hold_storage(_ctx: SockContext) -> i32 {
    let p = policy();
    let _ = unsafe { core::ptr::read_volatile(&p.abi) };
    let _ = STATS.get::<Counters>();
    ALLOW
}

/// Refuses setsockopt calls that would move or clear the binding (SO_BINDTODEVICE,
/// SO_BINDTOIFINDEX), or change the mark/priority the policy sets — even with CAP_NET_RAW.
/// Setting the binding to the interface it already has stays allowed (`ping -I dev`).
/// Multicast membership changes are kept on the bound interface (see [`guard_membership`]).
#[cgroup_sockopt(setsockopt)]
pub fn guard_setsockopt(ctx: SockoptContext) -> i32 {
    let opt = unsafe { &*ctx.sockopt };
    if opt.level == SOL_IP || opt.level == SOL_IPV6 {
        return guard_membership(&ctx);
    }
    if opt.level != SOL_SOCKET {
        return ALLOW;
    }
    let policy = policy();
    let start = unsafe { opt.__bindgen_anon_2.optval } as *const u8;
    let end = unsafe { opt.__bindgen_anon_3.optval_end } as *const u8;
    let unchanged = match opt.optname {
        SO_BINDTOIFINDEX => read_u32(start, end) == Some(policy.ifindex),
        SO_BINDTODEVICE => same_name(start, end, opt.optlen, &policy.ifname),
        SO_MARK if policy.has(flags::SET_MARK) => read_u32(start, end) == Some(policy.mark),
        SO_PRIORITY if policy.has(flags::SET_PRIORITY) => {
            read_u32(start, end) == Some(policy.priority)
        }
        _ => return ALLOW,
    };
    if unchanged {
        return ALLOW;
    }
    count(|c| &mut c.sockopt_refused);
    report(hook::SETSOCKOPT, opt.optname as u32, SOCKOPT);
    REFUSE
}

/// Where a membership option names its interface.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Membership {
    /// Not a membership change.
    None,
    /// ip_mreq / ip_mreqn: the index is at byte 8 of an ip_mreqn; an 8-byte ip_mreq (which
    /// names the interface by address, or not at all) is extended to one.
    Mreqn,
    /// group_req, group_source_req, group_filter: a u32 index at byte 0.
    Group,
    /// ipv6_mreq: an int index at byte 16.
    Ipv6Mreq,
    /// ip_mreq_source (IP_ADD_SOURCE_MEMBERSHIP): an address only, and no room to add an
    /// index; refused (MCAST_JOIN_SOURCE_GROUP with an interface index does the same job).
    AddressOnly,
}

#[inline(always)]
fn membership(level: i32, name: i32) -> Membership {
    match (level, name) {
        (SOL_IP, IP_ADD_MEMBERSHIP | IP_DROP_MEMBERSHIP) => Membership::Mreqn,
        (SOL_IP, IP_ADD_SOURCE_MEMBERSHIP) => Membership::AddressOnly,
        (SOL_IP | SOL_IPV6, MCAST_FIRST..=MCAST_LAST) => Membership::Group,
        (
            SOL_IPV6,
            IPV6_ADD_MEMBERSHIP | IPV6_DROP_MEMBERSHIP | IPV6_JOIN_ANYCAST | IPV6_LEAVE_ANYCAST,
        ) => Membership::Ipv6Mreq,
        _ => Membership::None,
    }
}

/// A multicast join makes the kernel send IGMP/MLD reports on the interface it names; no
/// socket carries them, so the packet filters never see them. An option naming another
/// interface is refused. One naming none (index 0, INADDR_ANY) would get the routing table's
/// choice for the group — the socket's binding plays no part — so the bound interface's index
/// is written into it. Removing or filtering memberships only acts on memberships the socket
/// has, all of which are on the bound interface.
#[inline(always)]
fn guard_membership(ctx: &SockoptContext) -> i32 {
    let opt = unsafe { &mut *ctx.sockopt };
    let kind = membership(opt.level, opt.optname);
    if kind == Membership::None {
        return ALLOW;
    }
    let policy = policy();
    let start = unsafe { opt.__bindgen_anon_2.optval } as *mut u8;
    let end = unsafe { opt.__bindgen_anon_3.optval_end } as *mut u8;
    // The kernel shows the program at most a page. For a longer option it ignores the
    // program's buffer and copies the option from user memory again, where another thread can
    // have changed the index meanwhile: such an option is refused whatever this copy says.
    // (Real membership options are at most 264 bytes.)
    if (end as usize - start as usize) < opt.optlen as usize {
        return refuse_membership(opt.level, opt.optname, SOCKOPT);
    }
    let ok = match kind {
        Membership::Mreqn => {
            if opt.optlen >= 12 {
                pin_index::<8>(start, end, policy.ifindex)
            } else if opt.optlen >= 8 && unsafe { start.add(12) } <= end {
                unsafe { (start.add(8) as *mut u32).write_unaligned(policy.ifindex) };
                opt.optlen = 12;
                true
            } else {
                // Too short: the kernel refuses it with EINVAL.
                true
            }
        }
        Membership::Group => pin_index::<0>(start, end, policy.ifindex),
        Membership::Ipv6Mreq => pin_index::<16>(start, end, policy.ifindex),
        Membership::AddressOnly | Membership::None => false,
    };
    if ok {
        return ALLOW;
    }
    refuse_membership(opt.level, opt.optname, SOCKOPT)
}

/// Counts, reports and refuses a multicast membership change (`level`, `optname`).
#[inline(always)]
fn refuse_membership(level: i32, optname: i32, task: Task) -> i32 {
    count(|c| &mut c.multicast_refused);
    report(
        hook::MULTICAST,
        ((level as u32) << 16) | optname as u32,
        task,
    );
    REFUSE
}

/// The interface index at byte `AT` of a membership option: another interface's is refused;
/// 0 ("any") is replaced by the bound interface's.
#[inline(always)]
fn pin_index<const AT: usize>(start: *mut u8, end: *mut u8, ifindex: u32) -> bool {
    let p = unsafe { start.add(AT) };
    if unsafe { p.add(4) } > end {
        // Shorter than the structure: the kernel refuses it with EINVAL.
        return true;
    }
    match unsafe { (p as *const u32).read_unaligned() } {
        i if i == ifindex => true,
        0 => {
            unsafe { (p as *mut u32).write_unaligned(ifindex) };
            true
        }
        _ => false,
    }
}

#[inline(always)]
fn read_u32(start: *const u8, end: *const u8) -> Option<u32> {
    if unsafe { start.add(4) } > end {
        return None;
    }
    Some(unsafe { (start as *const u32).read_unaligned() })
}

/// Whether the SO_BINDTODEVICE argument names `want` (the kernel reads at most 15 bytes and
/// stops at a NUL).
#[inline(always)]
fn same_name(start: *const u8, end: *const u8, optlen: i32, want: &[u8; 16]) -> bool {
    let mut ended = false;
    for i in 0..16usize {
        let given = if ended || i >= 15 || i as i32 >= optlen {
            0
        } else {
            let p = unsafe { start.add(i) };
            if unsafe { p.add(1) } > end {
                return false;
            }
            unsafe { *p }
        };
        ended |= given == 0;
        if given != want[i] {
            return false;
        }
    }
    true
}

/// What an address hook's address is, as far as pinning is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addr {
    Loopback,
    Wildcard,
    Other,
}

#[inline(always)]
fn classify4(ip_be: u32) -> Addr {
    if ip_be == 0 {
        Addr::Wildcard
    } else if loopback4(ip_be) {
        Addr::Loopback
    } else {
        Addr::Other
    }
}

#[inline(always)]
fn classify6(ip: [u32; 4]) -> Addr {
    if ip == [0; 4] {
        Addr::Wildcard
    } else if loopback6(ip) {
        Addr::Loopback
    } else {
        Addr::Other
    }
}

/// Loopback destinations: 127.0.0.0/8 (network byte order in the context).
#[inline(always)]
fn loopback4(ip_be: u32) -> bool {
    u32::from_be(ip_be) >> 24 == 127
}

/// ::1 and ::ffff:127.0.0.0/104.
#[inline(always)]
fn loopback6(ip: [u32; 4]) -> bool {
    let [a, b, c, d] = ip;
    a == 0
        && b == 0
        && ((c == 0 && u32::from_be(d) == 1) || (u32::from_be(c) == 0xffff && loopback4(d)))
}

/// Shared by the address hooks: the socket must still be bound to the policy's interface.
///
/// With `--allow-loopback`, sockets start unbound and the first connect, bind or sendto pins
/// them: to `lo` for 127.0.0.0/8 and ::1, to the policy's interface for everything else. A
/// socket already pinned cannot be moved (the kernel wants CAP_NET_RAW for that, also from
/// BPF), so such an attempt is refused. For a first unconnected sendto the kernel has already
/// routed that datagram when this hook runs: it leaves only if the route is the interface
/// (the egress filter drops it otherwise); later datagrams use the pin.
#[inline(always)]
fn guard_address(ctx: &SockAddrContext, which: u32, addr: Addr) -> i32 {
    let to_loopback = addr == Addr::Loopback;
    let policy = policy();
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    let bound = unsafe { (*sk).bound_dev_if };
    let allow_lo = policy.has(flags::ALLOW_LOOPBACK);
    let want = if allow_lo && to_loopback {
        LOOPBACK_IFINDEX
    } else {
        policy.ifindex
    };
    // Without --allow-loopback the packet filters would drop loopback traffic anyway; refusing
    // here gives the program EPERM at once instead of a connect that times out.
    if bound == want && (allow_lo || !to_loopback) {
        return ALLOW;
    }
    // Whether this hook may call bpf_setsockopt on this kernel (probed by the loader).
    let may_pin = kernel().features
        & match which {
            hook::CONNECT4 | hook::CONNECT6 => features::ADDR_SETSOCKOPT_CONNECT,
            hook::BIND4 | hook::BIND6 => features::ADDR_SETSOCKOPT_BIND,
            _ => features::ADDR_SETSOCKOPT_SENDMSG,
        }
        != 0;
    if allow_lo && bound == 0 && addr == Addr::Wildcard {
        // bind(0.0.0.0 / ::) says nothing about where traffic goes: pin at connect or send.
        return ALLOW;
    }
    if allow_lo && bound == 0 && may_pin {
        let mut ifindex = want as i32;
        let rc = unsafe {
            bpf_setsockopt(
                ctx.sock_addr as *mut c_void,
                SOL_SOCKET,
                SO_BINDTOIFINDEX,
                (&mut ifindex as *mut i32).cast(),
                4,
            )
        };
        if rc == 0 {
            return ALLOW;
        }
        // bpf_setsockopt takes SO_BINDTOIFINDEX from 6.0; before, the device's name.
        let mut name = if want == LOOPBACK_IFINDEX {
            *b"lo\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
        } else {
            policy.ifname
        };
        let rc = unsafe {
            bpf_setsockopt(
                ctx.sock_addr as *mut c_void,
                SOL_SOCKET,
                SO_BINDTODEVICE,
                name.as_mut_ptr().cast(),
                16,
            )
        };
        if rc == 0 && unsafe { (*sk).bound_dev_if } == want {
            return ALLOW;
        }
    }
    count(|c| &mut c.addr_refused);
    report(which, bound, SOCK_ADDR);
    REFUSE
}

#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    let a = unsafe { &*ctx.sock_addr };
    [a.user_ip6[0], a.user_ip6[1], a.user_ip6[2], a.user_ip6[3]]
}

#[cgroup_sock_addr(connect4)]
pub fn guard_connect4(ctx: SockAddrContext) -> i32 {
    let lo = classify4(unsafe { (*ctx.sock_addr).user_ip4 });
    guard_address(&ctx, hook::CONNECT4, lo)
}

#[cgroup_sock_addr(connect6)]
pub fn guard_connect6(ctx: SockAddrContext) -> i32 {
    let lo = classify6(user_ip6(&ctx));
    guard_address(&ctx, hook::CONNECT6, lo)
}

#[cgroup_sock_addr(bind4)]
pub fn guard_bind4(ctx: SockAddrContext) -> i32 {
    let lo = classify4(unsafe { (*ctx.sock_addr).user_ip4 });
    guard_address(&ctx, hook::BIND4, lo)
}

#[cgroup_sock_addr(bind6)]
pub fn guard_bind6(ctx: SockAddrContext) -> i32 {
    let lo = classify6(user_ip6(&ctx));
    guard_address(&ctx, hook::BIND6, lo)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn guard_sendmsg4(ctx: SockAddrContext) -> i32 {
    let lo = classify4(unsafe { (*ctx.sock_addr).user_ip4 });
    guard_address(&ctx, hook::SENDMSG4, lo)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn guard_sendmsg6(ctx: SockAddrContext) -> i32 {
    let lo = classify6(user_ip6(&ctx));
    guard_address(&ctx, hook::SENDMSG6, lo)
}

/// The backstop for every escape the hooks above cannot see (IP_PKTINFO, IPv6 scope ids,
/// MPTCP subflows, 32-bit setsockopt): a packet of the cgroup on any other interface is
/// dropped. Like systemd's RestrictNetworkInterfaces, it checks skb->ifindex.
#[inline(always)]
fn filter(ctx: &SkBuffContext, which: u32, in_task: bool) -> i32 {
    let task = if in_task { SKB } else { Task::None };
    let policy = policy();
    let skb = ctx.skb.skb;
    let ifindex = unsafe { (*skb).ifindex };
    if ifindex == policy.ifindex
        || (ifindex == LOOPBACK_IFINDEX && policy.has(flags::ALLOW_LOOPBACK))
    {
        if !in_task {
            return ALLOW;
        }
        // The mark is set at socket creation and guarded at setsockopt, but an SO_MARK cmsg
        // (CAP_NET_ADMIN) or a 32-bit setsockopt bypasses those: such a packet was routed and
        // filtered under another mark, so it does not leave.
        let mark = unsafe { (*skb).mark };
        if policy.has(flags::SET_MARK) && mark != policy.mark {
            count(|c| &mut c.mark_dropped);
            report(hook::MARK, mark, task);
            return REFUSE;
        }
        // IP_TOS and IPV6_TCLASS (unprivileged; ssh sets them) rewrite the priority as a side
        // effect. The priority matters to the qdisc and VLAN egress mapping, which run after
        // this hook, so it is set back instead of dropping the packet.
        if policy.has(flags::SET_PRIORITY) && unsafe { (*skb).priority } != policy.priority {
            unsafe { (*skb).priority = policy.priority };
            count(|c| &mut c.priority_restored);
        }
        return ALLOW;
    }
    if in_task {
        count(|c| &mut c.egress_dropped);
    } else {
        count(|c| &mut c.ingress_dropped);
    }
    report(which, ifindex, task);
    REFUSE
}

#[cgroup_skb(egress)]
pub fn filter_egress(ctx: SkBuffContext) -> i32 {
    filter(&ctx, hook::EGRESS, true)
}

#[cgroup_skb(ingress)]
pub fn filter_ingress(ctx: SkBuffContext) -> i32 {
    filter(&ctx, hook::INGRESS, false)
}

/// Whether the policy lets the cgroup hold sockets of `family`.
#[inline(always)]
fn family_allowed(policy: &Policy, family: u32) -> bool {
    matches!(family, AF_UNIX | AF_INET | AF_INET6 | AF_NETLINK)
        || (family < 64 && policy.families & (1u64 << family) != 0)
}

/// socket() of a family that reaches a device directly (AF_PACKET, AF_XDP, ...) or tunnels
/// through kernel sockets no hook binds (AF_SMC, AF_RXRPC, AF_RDS, ...) is refused. Runs for the
/// calling task's cgroup (the hook's first argument is not a socket).
#[lsm_cgroup(hook = "socket_create")]
pub fn lsm_socket_create(ctx: LsmContext) -> i32 {
    let family: i32 = ctx.arg(0);
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return ALLOW;
    }
    let policy = policy();
    if family_allowed(policy, family as u32) {
        return ALLOW;
    }
    count(|c| &mut c.families_refused);
    report(hook::SOCKET_FAMILY, family as u32, Task::Lsm);
    REFUSE
}

#[inline(always)]
fn read_at<T>(base: u64, offset: u32) -> Option<T> {
    if offset == KernelLayout::MISSING || base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

/// Whether `sk` was made in the bound cgroup or below it (so this binding's programs govern it).
#[inline(always)]
fn made_in_binding(k: &KernelLayout, sk: u64, bound: u64) -> bool {
    let Some(cgroup) = read_at::<u64>(sk, k.sock_cgroup) else {
        return false;
    };
    let Some(level) = read_at::<i32>(cgroup, k.cgroup_level) else {
        return false;
    };
    if k.cgroup_ancestors == KernelLayout::MISSING {
        return false;
    }
    for i in 0..=MAX_CGROUP_DEPTH {
        if i as i32 > level {
            break;
        }
        let Some(ancestor) = read_at::<u64>(cgroup, k.cgroup_ancestors + i * 8) else {
            return false;
        };
        let Some(kn) = read_at::<u64>(ancestor, k.cgroup_kn) else {
            return false;
        };
        if read_at::<u64>(kn, k.kernfs_node_id) == Some(bound) {
            return true;
        }
    }
    false
}

/// A socket fd arriving from outside (SCM_RIGHTS, pidfd_getfd — both go through
/// security_file_receive, which runs in the receiving task's context): the binding's programs
/// never run for a socket made in another cgroup, so an INET socket is accepted only if it was
/// made in the bound cgroup or below; other families as socket() would allow them.
#[lsm_cgroup(hook = "file_receive")]
pub fn lsm_file_receive(ctx: LsmContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let k = kernel();
    let policy = policy();
    let Some(inode) = read_at::<u64>(file, k.file_f_inode) else {
        return REFUSE;
    };
    let Some(mode) = read_at::<u16>(inode, k.inode_i_mode) else {
        return REFUSE;
    };
    if mode & S_IFMT != S_IFSOCK {
        return ALLOW;
    }
    // An O_PATH fd of a socket inode has no socket behind it and cannot carry traffic.
    let socket = read_at::<u64>(file, k.file_private_data).unwrap_or(0);
    if socket == 0 {
        return ALLOW;
    }
    let sk = read_at::<u64>(socket, k.socket_sk).unwrap_or(0);
    if sk == 0 {
        return ALLOW;
    }
    let family = u32::from(read_at::<u16>(sk, k.sock_family).unwrap_or(u16::MAX));
    let allowed = match family {
        AF_UNIX | AF_NETLINK => true,
        AF_INET | AF_INET6 => made_in_binding(&k, sk, policy.cgroup_id),
        other => family_allowed(policy, other),
    };
    if allowed {
        return ALLOW;
    }
    count(|c| &mut c.fds_refused);
    report(hook::FILE_RECEIVE, family, Task::Lsm);
    REFUSE
}

/// 32-bit setsockopt skips the cgroup sockopt hook (and with it [`guard_membership`]); this LSM
/// hook runs for both, before it, but cannot read the option, so a 32-bit multicast membership
/// change is refused outright.
#[lsm_cgroup(hook = "socket_setsockopt")]
pub fn lsm_socket_setsockopt(ctx: LsmContext) -> i32 {
    let level: i32 = ctx.arg(1);
    let optname: i32 = ctx.arg(2);
    if membership(level, optname) == Membership::None {
        return ALLOW;
    }
    let k = kernel();
    let task = unsafe { bpf_get_current_task() };
    // Unknown layout: treat as 32-bit (refuse), never as a call the sockopt hook will see.
    let compat = read_at::<u32>(task, k.task_status).is_none_or(|s| s & TS_COMPAT != 0);
    if !compat {
        return ALLOW;
    }
    refuse_membership(level, optname, Task::Lsm)
}

/// io_uring's setsockopt (IORING_OP_URING_CMD, SOCKET_URING_OP_SETSOCKOPT) skips the cgroup
/// sockopt hook on a ring set up by a 32-bit syscall, and the issuing task is then not in a
/// 32-bit syscall, so [`lsm_socket_setsockopt`] cannot tell. Membership changes through
/// io_uring are refused outright (nothing real needs them).
#[lsm_cgroup(hook = "uring_cmd")]
pub fn lsm_uring_cmd(ctx: LsmContext) -> i32 {
    let cmd: u64 = ctx.arg(0);
    let k = kernel();
    let Some(op) = read_at::<u32>(cmd, k.uring_cmd_op) else {
        return REFUSE;
    };
    if op != SOCKET_URING_OP_SETSOCKOPT {
        return ALLOW;
    }
    let Some(sqe) = read_at::<u64>(cmd, k.uring_cmd_sqe) else {
        return REFUSE;
    };
    let level = read_at::<u32>(sqe, k.sqe_level).unwrap_or(u32::MAX) as i32;
    let optname = read_at::<u32>(sqe, k.sqe_optname).unwrap_or(u32::MAX) as i32;
    if level != -1 && optname != -1 && membership(level, optname) == Membership::None {
        return ALLOW;
    }
    refuse_membership(level, optname, Task::Lsm)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
