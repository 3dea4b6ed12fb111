//! The programs of one bindguard binding. Each attach loads a fresh instance of this object,
//! so every binding has its own `POLICY`, `STATS` and `EVENTS` maps.
//!
//! - `bind_sock_create` (both modes): binds every new INET socket to the interface;
//! - strict mode adds guards that close the escapes a plain binding leaves open:
//!   `guard_setsockopt` (changing the binding), `guard_*` address hooks (a binding that was
//!   reset or moved), and `filter_egress`/`filter_ingress` (any packet on another interface).
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns,
        generated::{bpf_get_netns_cookie, bpf_setsockopt},
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{SkBuffContext, SockAddrContext, SockContext, SockoptContext},
};
use bindguard_common::{Counters, Event, Policy, flags, hook};

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

#[map]
static POLICY: Array<Policy> = Array::with_max_entries(1, 0);

#[map]
static STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[inline(always)]
fn count(field: fn(&mut Counters) -> &mut u64) {
    if let Some(counters) = STATS.get_ptr_mut(0) {
        // Per-CPU slot and programs do not nest on one CPU here: a plain add is race-free.
        unsafe { *field(&mut *counters) += 1 };
    }
}

/// Records a refusal for `bindguard monitor`. A full ring buffer loses the event, never the
/// enforcement.
#[inline(always)]
fn report(hook: u32, value: u32, in_task: bool) {
    let (pid, cgroup_id, comm) = if in_task {
        (
            (bpf_get_current_pid_tgid() >> 32) as u32,
            unsafe { bpf_get_current_cgroup_id() },
            bpf_get_current_comm().unwrap_or([0; 16]),
        )
    } else {
        (0, 0, [0; 16])
    };
    let event = Event {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        pid,
        hook,
        value,
        _pad: 0,
        comm,
    };
    let _ = EVENTS.output::<Event>(&event, 0);
}

/// Binds every new AF_INET/AF_INET6 socket of the cgroup to the policy's interface.
///
/// Fails closed: a socket made in another network namespace (where the ifindex means some
/// other device or nothing) and any socket seen while the policy is empty is refused.
#[cgroup_sock(sock_create)]
pub fn bind_sock_create(ctx: SockContext) -> i32 {
    let Some(policy) = POLICY.get(0) else {
        return REFUSE;
    };
    let sk = ctx.sock;
    let cookie = unsafe { bpf_get_netns_cookie(sk.cast()) };
    if policy.ifindex == 0 || cookie != policy.netns_cookie {
        count(|c| &mut c.sockets_refused_netns);
        report(hook::SOCK_CREATE, 0, true);
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

/// Refuses setsockopt calls that would move or clear the binding (SO_BINDTODEVICE,
/// SO_BINDTOIFINDEX), or change the mark/priority the policy sets — even with CAP_NET_RAW.
/// Setting the binding to the interface it already has stays allowed (`ping -I dev`).
#[cgroup_sockopt(setsockopt)]
pub fn guard_setsockopt(ctx: SockoptContext) -> i32 {
    let opt = unsafe { &*ctx.sockopt };
    if opt.level != SOL_SOCKET {
        return ALLOW;
    }
    let Some(policy) = POLICY.get(0) else {
        return REFUSE;
    };
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
    report(hook::SETSOCKOPT, opt.optname as u32, true);
    REFUSE
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
    let Some(policy) = POLICY.get(0) else {
        return REFUSE;
    };
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
    if allow_lo && bound == 0 {
        // bind(0.0.0.0 / ::) says nothing about where traffic goes: pin at connect or send.
        if addr == Addr::Wildcard {
            return ALLOW;
        }
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
    }
    count(|c| &mut c.addr_refused);
    report(which, bound, true);
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
    let Some(policy) = POLICY.get(0) else {
        return REFUSE;
    };
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if ifindex == policy.ifindex
        || (ifindex == LOOPBACK_IFINDEX && policy.has(flags::ALLOW_LOOPBACK))
    {
        return ALLOW;
    }
    if in_task {
        count(|c| &mut c.egress_dropped);
    } else {
        count(|c| &mut c.ingress_dropped);
    }
    report(which, ifindex, in_task);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
