//! connect, bind and sendmsg (cgroup/sock_addr, IPv4 and IPv6): the socket must still be bound
//! to the policy's interface, or be pinned now (`--allow-loopback`). With `--dns`, connect and
//! sendmsg first send every DNS query to the binding's resolver, and recvmsg gives the reply
//! the source the program asked (resolvers check who answered).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_setsockopt},
    macros::{cgroup_sock_addr, map},
    maps::LruHashMap,
    programs::SockAddrContext,
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
///
/// A DNS query still headed for loopback (`stub`: the 127.0.0.53 stub, and no `--dns`
/// resolver of this family took it) is refused even with `--allow-loopback`: the local
/// resolver would send it by its own choice of interface (escape row 27).
#[inline(always)]
fn guard_address(ctx: &SockAddrContext, which: u32, addr: Addr, stub: bool) -> i32 {
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
    if stub && to_loopback {
        count(|c| &mut c.addr_refused);
        // The lookup would otherwise fail with a bare EPERM: say what to do.
        report(hook::DNS_STUB, which, SOCK_ADDR);
        return REFUSE;
    }
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

/// Whether a connect or send is a DNS query no `--dns` resolver of its family takes (`dns`:
/// the policy flags that would): see [`guard_address`].
#[inline(always)]
fn stub_query(ctx: &SockAddrContext, dns: u32) -> bool {
    let port = unsafe { (*ctx.sock_addr).user_port };
    port == DNS_PORT && policy().flags & dns == 0
}

/// An IPv6 socket's queries are taken by either resolver (the IPv4 one mapped).
const DNS_ANY: u32 = flags::DNS4 | flags::DNS6;

/// Port 53 as `bpf_sock_addr.user_port` holds it (network byte order in the low 16 bits).
const DNS_PORT: u32 = 53u16.to_be() as u32;

/// Where a redirected query asked to go, so the reply can come from there.
#[repr(C)]
#[derive(Clone, Copy)]
struct Asked {
    ip6: [u32; 4],
    ip4: u32,
    port: u32,
}

/// `--dns`: what each socket last asked for, by socket cookie. An LRU map: entries of closed
/// sockets age out, and a socket whose entry aged out gets the resolver's own address back
/// (its resolver may then drop that reply and retry, never send elsewhere).
#[map]
static DNS_ASKED: LruHashMap<u64, Asked> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn cookie(ctx: &SockAddrContext) -> u64 {
    unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut c_void) }
}

/// `--dns` for an IPv4 connect or unconnected send: a query to port 53 of any address (the
/// 127.0.0.53 stub included) goes to the binding's resolver instead.
#[inline(always)]
fn redirect_dns4(ctx: &SockAddrContext) {
    let policy = policy();
    let a = unsafe { &mut *ctx.sock_addr };
    if a.user_port != DNS_PORT || !policy.has(flags::DNS4) || a.user_ip4 == policy.dns4 {
        return;
    }
    let asked = Asked {
        ip6: [0; 4],
        ip4: a.user_ip4,
        port: a.user_port,
    };
    let _ = DNS_ASKED.insert(&cookie(ctx), &asked, 0);
    a.user_ip4 = policy.dns4;
    count(|c| &mut c.dns_redirected);
}

/// The address an IPv6 socket's queries go to: the IPv6 resolver, else the IPv4 one as a
/// mapped address (a dual-stack socket reaches it; a v6-only one fails, never leaks).
#[inline(always)]
fn dns_target6() -> Option<[u32; 4]> {
    let policy = policy();
    if policy.has(flags::DNS6) {
        Some(policy.dns6)
    } else if policy.has(flags::DNS4) {
        Some([0, 0, 0xffffu32.to_be(), policy.dns4])
    } else {
        None
    }
}

#[inline(always)]
fn redirect_dns6(ctx: &SockAddrContext) {
    if unsafe { (*ctx.sock_addr).user_port } != DNS_PORT {
        return;
    }
    let Some(to) = dns_target6() else { return };
    let ip = user_ip6(ctx);
    if ip == to {
        return;
    }
    let asked = Asked {
        ip6: ip,
        ip4: 0,
        port: DNS_PORT,
    };
    let _ = DNS_ASKED.insert(&cookie(ctx), &asked, 0);
    // The verifier takes user_ip6 one 32-bit word at a time.
    let a = unsafe { &mut *ctx.sock_addr };
    a.user_ip6[0] = to[0];
    a.user_ip6[1] = to[1];
    a.user_ip6[2] = to[2];
    a.user_ip6[3] = to[3];
    count(|c| &mut c.dns_redirected);
}

#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> [u32; 4] {
    let a = unsafe { &*ctx.sock_addr };
    [a.user_ip6[0], a.user_ip6[1], a.user_ip6[2], a.user_ip6[3]]
}

#[cgroup_sock_addr(connect4)]
pub fn guard_connect4(ctx: SockAddrContext) -> i32 {
    redirect_dns4(&ctx);
    let lo = classify4(unsafe { (*ctx.sock_addr).user_ip4 });
    guard_address(&ctx, hook::CONNECT4, lo, stub_query(&ctx, flags::DNS4))
}

#[cgroup_sock_addr(connect6)]
pub fn guard_connect6(ctx: SockAddrContext) -> i32 {
    redirect_dns6(&ctx);
    let lo = classify6(user_ip6(&ctx));
    guard_address(&ctx, hook::CONNECT6, lo, stub_query(&ctx, DNS_ANY))
}

#[cgroup_sock_addr(bind4)]
pub fn guard_bind4(ctx: SockAddrContext) -> i32 {
    let lo = classify4(unsafe { (*ctx.sock_addr).user_ip4 });
    guard_address(&ctx, hook::BIND4, lo, false)
}

#[cgroup_sock_addr(bind6)]
pub fn guard_bind6(ctx: SockAddrContext) -> i32 {
    let lo = classify6(user_ip6(&ctx));
    guard_address(&ctx, hook::BIND6, lo, false)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn guard_sendmsg4(ctx: SockAddrContext) -> i32 {
    redirect_dns4(&ctx);
    let lo = classify4(unsafe { (*ctx.sock_addr).user_ip4 });
    guard_address(&ctx, hook::SENDMSG4, lo, stub_query(&ctx, flags::DNS4))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn guard_sendmsg6(ctx: SockAddrContext) -> i32 {
    redirect_dns6(&ctx);
    let lo = classify6(user_ip6(&ctx));
    guard_address(&ctx, hook::SENDMSG6, lo, stub_query(&ctx, DNS_ANY))
}

/// `--dns`: a reply from the binding's IPv4 resolver gets the source its query asked for
/// (glibc, musl and Go drop answers from an address they did not ask). Never refuses.
#[cgroup_sock_addr(recvmsg4)]
pub fn dns_reply4(ctx: SockAddrContext) -> i32 {
    let policy = policy();
    let a = unsafe { &mut *ctx.sock_addr };
    if a.user_port == DNS_PORT && policy.has(flags::DNS4) && a.user_ip4 == policy.dns4 {
        if let Some(asked) = unsafe { DNS_ASKED.get(&cookie(&ctx)) } {
            if asked.ip4 != 0 {
                a.user_ip4 = asked.ip4;
                a.user_port = asked.port;
            }
        }
    }
    ALLOW
}

/// [`dns_reply4`] for IPv6 sockets (the resolver's IPv6 address, or the mapped IPv4 one).
#[cgroup_sock_addr(recvmsg6)]
pub fn dns_reply6(ctx: SockAddrContext) -> i32 {
    if unsafe { (*ctx.sock_addr).user_port } != DNS_PORT {
        return ALLOW;
    }
    let Some(from) = dns_target6() else {
        return ALLOW;
    };
    if user_ip6(&ctx) != from {
        return ALLOW;
    }
    if let Some(asked) = unsafe { DNS_ASKED.get(&cookie(&ctx)) } {
        if asked.ip4 == 0 {
            let ip = asked.ip6;
            let a = unsafe { &mut *ctx.sock_addr };
            a.user_ip6[0] = ip[0];
            a.user_ip6[1] = ip[1];
            a.user_ip6[2] = ip[2];
            a.user_ip6[3] = ip[3];
            a.user_port = asked.port;
        }
    }
    ALLOW
}
