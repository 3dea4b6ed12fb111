//! connect, bind and sendmsg (cgroup/sock_addr, IPv4 and IPv6): the socket must still be bound
//! to the policy's interface, or be pinned now (`--allow-loopback`).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_setsockopt, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use bindguard_common::{features, flags, hook};

use crate::{
    maps::{Task, count, kernel, policy, report},
    uapi::*,
};

const SOCK_ADDR: Task = Task::Family(features::SOCK_ADDR);

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
