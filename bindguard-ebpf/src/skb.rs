//! Egress and ingress (cgroup/skb): the backstop that drops any packet on another interface.

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};
use bindguard_common::{features, flags, hook};

use crate::{
    maps::{Task, count, policy, report},
    uapi::*,
};

const SKB: Task = Task::Family(features::SKB);

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
