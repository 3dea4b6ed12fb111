//! What this kernel can do, found by trying it, never by its version: each probe loads (and
//! at once drops) the smallest program that uses the feature, with the program type and
//! attach type the real program has, and remembers the answer for the life of the process.
//! A distribution kernel backports and configures features independently of its version
//! number (RHEL 9's 5.14 has parts of 6.x; Debian 11's 5.10 has MPTCP off).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::OnceLock,
};

use aya_obj::generated::bpf_cmd;
use bindguard_common::features;

use crate::kernel::link::sys_bpf;

// Program and attach types (include/uapi/linux/bpf.h).
const PROG_CGROUP_SKB: u32 = 8;
const PROG_CGROUP_SOCK: u32 = 9;
const PROG_CGROUP_SOCK_ADDR: u32 = 18;
const PROG_CGROUP_SOCKOPT: u32 = 25;
const ATTACH_INET_EGRESS: u32 = 1;
const ATTACH_INET_SOCK_CREATE: u32 = 2;
const ATTACH_INET4_CONNECT: u32 = 10;
const ATTACH_SETSOCKOPT: u32 = 22;

// Helper ids.
use aya_obj::generated::bpf_func_id as F;
const GET_CURRENT_PID_TGID: i32 = F::BPF_FUNC_get_current_pid_tgid as i32;
const GET_CURRENT_COMM: i32 = F::BPF_FUNC_get_current_comm as i32;
const GET_CURRENT_CGROUP_ID: i32 = F::BPF_FUNC_get_current_cgroup_id as i32;
const SET_RETVAL: i32 = F::BPF_FUNC_set_retval as i32;
const SETSOCKOPT: i32 = F::BPF_FUNC_setsockopt as i32;
const ATTACH_INET4_BIND: u32 = 8;
const ATTACH_UDP4_SENDMSG: u32 = 14;

/// One eBPF instruction.
pub(crate) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64) << 8)
        | ((src as u64) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

pub(crate) const MOV64_IMM: u8 = 0xb7;
pub(crate) const MOV64_REG: u8 = 0xbf;
pub(crate) const ADD64_IMM: u8 = 0x07;
pub(crate) const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;
/// r0 = 1; exit
pub(crate) const RETURN_1: [u64; 2] = [insn(MOV64_IMM, 0, 0, 0, 1), insn(EXIT, 0, 0, 0, 0)];

/// BPF_PROG_LOAD of `insns` (GPL): the program's fd, or the kernel's errno.
pub(crate) fn load(
    prog_type: u32,
    attach_type: u32,
    insns: &[u64],
    attach_btf_id: u32,
) -> std::io::Result<OwnedFd> {
    // Before 5.11 a load is charged to RLIMIT_MEMLOCK (against every BPF object the user
    // already holds): without this a probe fails with EPERM and reads as "missing".
    raise_memlock();
    let license = c"GPL";
    let mut attr = [0u8; 128];
    let mut put = |at: usize, v: u64, width: usize| {
        attr[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    };
    put(0, u64::from(prog_type), 4);
    put(4, insns.len() as u64, 4);
    put(8, insns.as_ptr() as u64, 8);
    put(16, license.as_ptr() as u64, 8);
    put(68, u64::from(attach_type), 4); // expected_attach_type
    put(108, u64::from(attach_btf_id), 4);
    let fd = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel returned a new fd that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A program family of bindguard's: its program and attach type, and its shift in
/// [`features`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Sock,
    SockAddr,
    Sockopt,
    Skb,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Sock, Family::SockAddr, Family::Sockopt, Family::Skb];

    fn types(self) -> (u32, u32) {
        match self {
            Family::Sock => (PROG_CGROUP_SOCK, ATTACH_INET_SOCK_CREATE),
            Family::SockAddr => (PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_CONNECT),
            Family::Sockopt => (PROG_CGROUP_SOCKOPT, ATTACH_SETSOCKOPT),
            Family::Skb => (PROG_CGROUP_SKB, ATTACH_INET_EGRESS),
        }
    }

    fn shift(self) -> u32 {
        match self {
            Family::Sock => features::SOCK,
            Family::SockAddr => features::SOCK_ADDR,
            Family::Sockopt => features::SOCKOPT,
            Family::Skb => features::SKB,
        }
    }
}

/// Whether a `family` program may call `helper` (loads `call helper; return 1`).
fn allows(family: Family, helper: i32) -> bool {
    let (prog_type, attach_type) = family.types();
    let mut insns = Vec::new();
    match helper {
        // bpf_get_current_comm(buf = fp - 16, 16)
        GET_CURRENT_COMM => {
            insns.push(insn(MOV64_REG, 1, 10, 0, 0));
            insns.push(insn(ADD64_IMM, 1, 0, 0, -16));
            insns.push(insn(MOV64_IMM, 2, 0, 0, 16));
        }
        // bpf_set_retval(-EPROTONOSUPPORT)
        SET_RETVAL => insns.push(insn(MOV64_IMM, 1, 0, 0, -93)),
        _ => {}
    }
    insns.push(insn(CALL, 0, 0, 0, helper));
    insns.extend(RETURN_1);
    load(prog_type, attach_type, &insns, 0).is_ok()
}

/// Whether a cgroup_sock_addr program of `attach_type` may call bpf_setsockopt (loads
/// `bpf_setsockopt(ctx, SOL_SOCKET, SO_BINDTODEVICE, <16 zero bytes>, 16); return 1`).
fn addr_setsockopt(attach_type: u32) -> bool {
    const ST_DW: u8 = 0x7a; // *(u64 *)(dst + off) = imm
    let insns = [
        insn(ST_DW, 10, 0, -16, 0),
        insn(ST_DW, 10, 0, -8, 0),
        insn(MOV64_IMM, 2, 0, 0, 1),
        insn(MOV64_IMM, 3, 0, 0, 25),
        insn(MOV64_REG, 4, 10, 0, 0),
        insn(ADD64_IMM, 4, 0, 0, -16),
        insn(MOV64_IMM, 5, 0, 0, 16),
        insn(CALL, 0, 0, 0, SETSOCKOPT),
        RETURN_1[0],
        RETURN_1[1],
    ];
    load(PROG_CGROUP_SOCK_ADDR, attach_type, &insns, 0).is_ok()
}

/// The [`features`] bits of this kernel, for the programs' `KERNEL.features`.
pub fn features() -> u32 {
    static BITS: OnceLock<u32> = OnceLock::new();
    *BITS.get_or_init(|| {
        let mut bits = 0;
        for family in Family::ALL {
            for (helper, bit) in [
                (GET_CURRENT_PID_TGID, features::PID_TGID),
                (GET_CURRENT_CGROUP_ID, features::CGROUP_ID),
                (GET_CURRENT_COMM, features::COMM),
            ] {
                if allows(family, helper) {
                    bits |= bit << family.shift();
                }
            }
        }
        if allows(Family::Sock, SET_RETVAL) {
            bits |= features::SOCK_SET_RETVAL;
        }
        for (attach_type, bit) in [
            (ATTACH_INET4_CONNECT, features::ADDR_SETSOCKOPT_CONNECT),
            (ATTACH_INET4_BIND, features::ADDR_SETSOCKOPT_BIND),
            (ATTACH_UDP4_SENDMSG, features::ADDR_SETSOCKOPT_SENDMSG),
        ] {
            if addr_setsockopt(attach_type) {
                bits |= bit;
            }
        }
        bits
    })
}

/// Before 5.11 the kernel charges BPF maps, programs and every cgroup's storage to the
/// caller's RLIMIT_MEMLOCK (64 KiB by default on those kernels: a few bindings); later kernels
/// account them to the memory cgroup and ignore it. Raised once per process, to infinity where
/// allowed (CAP_SYS_RESOURCE), else the soft limit to the hard one; the shipped unit sets
/// LimitMEMLOCK=infinity.
pub fn raise_memlock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let inf = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit/getrlimit with valid pointers to rlimit structs.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) != 0 {
                let mut now = inf;
                if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut now) == 0 {
                    now.rlim_cur = now.rlim_max;
                    libc::setrlimit(libc::RLIMIT_MEMLOCK, &now);
                }
            }
        }
    });
}

/// Whether cgroup bpf_links can be made (5.7): BPF_LINK_CREATE with a real program and a
/// target that is not a cgroup (the program's own fd: no file system needed, bindguard may run
/// in a bare chroot) answers EBADF where links exist, EINVAL where the command or the attach
/// type is unknown (cilium's HaveAttachCgroup does the same with /dev/null).
pub fn have_cgroup_links() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        let Ok(prog) = load(PROG_CGROUP_SOCK, ATTACH_INET_SOCK_CREATE, &RETURN_1, 0) else {
            return false;
        };
        let mut attr = [0u32; 4];
        attr[0] = prog.as_raw_fd() as u32;
        attr[1] = prog.as_raw_fd() as u32;
        attr[2] = ATTACH_INET_SOCK_CREATE;
        match sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr) {
            Ok(fd) => {
                // SAFETY: an fd the kernel just gave us (it should not have).
                drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
                true
            }
            Err(e) => e.raw_os_error() == Some(libc::EBADF),
        }
    })
}

/// Whether getsockopt(SO_NETNS_COOKIE) exists (5.14; Debian 11's 5.10 lacks it).
pub fn have_netns_cookie_sockopt() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        !matches!(crate::kernel::sockopt::netns_cookie(),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_ids_are_the_kernels() {
        // A wrong id probes another helper (42 is get_numa_node_id, allowed everywhere).
        assert_eq!((GET_CURRENT_COMM, SETSOCKOPT, SET_RETVAL), (16, 49, 187));
    }

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r0 = 1; exit — what lsm.rs's probe used to spell by hand.
        assert_eq!(RETURN_1, [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095]);
        // r1 += -16
        assert_eq!(insn(ADD64_IMM, 1, 0, 0, -16), 0xffff_fff0_0000_0107);
        // r1 = r10
        assert_eq!(insn(MOV64_REG, 1, 10, 0, 0), 0xa1bf);
    }
}
