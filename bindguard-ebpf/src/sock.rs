//! sock_create (cgroup/sock): the binding itself, and the storage holder linked while a
//! binding is made.

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_set_retval},
    macros::cgroup_sock,
    programs::SockContext,
};
use bindguard_common::{Counters, features, flags, hook};

use crate::{
    maps::{STATS, Task, count, kernel, policy, report},
    uapi::*,
};

const SOCK: Task = Task::Family(features::SOCK);

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
