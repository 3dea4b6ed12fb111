//! Which setsockopt calls change a multicast membership, and refusing one: the cgroup sockopt
//! guard and the BPF LSM guards (32-bit setsockopt, io_uring) share both.

use bindguard_common::hook;

use crate::{
    maps::{Task, count, report},
    uapi::*,
};

/// Where a membership option names its interface.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
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
pub(crate) fn membership(level: i32, name: i32) -> Membership {
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

/// Counts, reports and refuses a multicast membership change (`level`, `optname`).
#[inline(always)]
pub(crate) fn refuse_membership(level: i32, optname: i32, task: Task) -> i32 {
    count(|c| &mut c.multicast_refused);
    report(
        hook::MULTICAST,
        ((level as u32) << 16) | optname as u32,
        task,
    );
    REFUSE
}
