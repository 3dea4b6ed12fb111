//! setsockopt (cgroup/sockopt): the binding, mark and priority cannot be changed, and multicast
//! memberships stay on the bound interface.

use aya_ebpf::{macros::cgroup_sockopt, programs::SockoptContext};
use bindguard_common::{features, flags, hook};

use crate::{
    maps::{Task, count, policy, report, report_asked},
    membership::{Membership, membership, refuse_membership},
    uapi::*,
};

const SOCKOPT: Task = Task::Family(features::SOCKOPT);

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
    let guarded = match opt.optname {
        SO_BINDTOIFINDEX | SO_BINDTODEVICE => true,
        SO_MARK => policy.has(flags::SET_MARK),
        SO_PRIORITY => policy.has(flags::SET_PRIORITY),
        _ => false,
    };
    if !guarded {
        return ALLOW;
    }
    let start = unsafe { opt.__bindgen_anon_2.optval } as *const u8;
    let end = unsafe { opt.__bindgen_anon_3.optval_end } as *const u8;
    // As for membership options (see [`guard_membership`]): the program sees at most a page,
    // and for a longer option the kernel reads the user's buffer again, where another thread
    // can have changed the name or value meanwhile. Such an option is refused whatever this
    // copy says (a real one is at most IFNAMSIZ bytes, or an int).
    let unchanged = (end as usize - start as usize) >= opt.optlen as usize
        && match opt.optname {
            SO_BINDTOIFINDEX => read_u32(start, end) == Some(policy.ifindex),
            SO_BINDTODEVICE => same_name(start, end, opt.optlen, &policy.ifname),
            SO_MARK => read_u32(start, end) == Some(policy.mark),
            _ => read_u32(start, end) == Some(policy.priority),
        };
    if unchanged {
        return ALLOW;
    }
    count(|c| &mut c.sockopt_refused);
    let asked = match opt.optname {
        SO_BINDTODEVICE => name_asked(start, end, opt.optlen),
        _ => {
            let mut v = [0u8; 16];
            if let Some(n) = read_u32(start, end) {
                v[..4].copy_from_slice(&n.to_le_bytes());
            }
            v
        }
    };
    report_asked(hook::SETSOCKOPT, opt.optname as u32, SOCKOPT, asked);
    REFUSE
}

/// The name an SO_BINDTODEVICE argument asks for, as the kernel reads it (at most 15 bytes,
/// up to a NUL); what lies past the program's copy of the page reads as NUL.
#[inline(always)]
fn name_asked(start: *const u8, end: *const u8, optlen: i32) -> [u8; 16] {
    let mut name = [0u8; 16];
    for (i, slot) in name.iter_mut().enumerate().take(15) {
        if i as i32 >= optlen {
            break;
        }
        let p = unsafe { start.add(i) };
        if unsafe { p.add(1) } > end {
            break;
        }
        let b = unsafe { *p };
        if b == 0 {
            break;
        }
        *slot = b;
    }
    name
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
