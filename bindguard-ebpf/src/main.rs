//! The programs of one bindguard binding. Each attach loads a fresh instance of this object,
//! so every binding has its own `POLICY` and `STATS` maps.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie,
    macros::{cgroup_sock, map},
    maps::{Array, PerCpuArray},
    programs::SockContext,
};
use bindguard_common::{Counters, Policy, flags};

/// Return values of cgroup programs: 1 lets the operation proceed, 0 fails it with EPERM.
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[map]
static POLICY: Array<Policy> = Array::with_max_entries(1, 0);

#[map]
static STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn count(field: fn(&mut Counters) -> &mut u64) {
    if let Some(counters) = STATS.get_ptr_mut(0) {
        // Per-CPU slot and programs do not nest on one CPU here: a plain add is race-free.
        unsafe { *field(&mut *counters) += 1 };
    }
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
        return REFUSE;
    }
    unsafe {
        (*sk).bound_dev_if = policy.ifindex;
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
