//! BPF LSM programs (lsm_cgroup): they run in the *caller's* context, where the cgroup
//! programs (which run for the socket's cgroup) cannot see: socket families, sockets received
//! from outside, 32-bit and io_uring setsockopt.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task},
    macros::lsm_cgroup,
    programs::LsmContext,
};
use bindguard_common::{KernelLayout, Policy, flags, hook};

use crate::{
    maps::{Task, count, kernel, policy, report},
    membership::{Membership, membership, refuse_membership},
    uapi::*,
};

/// Deepest cgroup nesting the file_receive check walks (the kernel allows far more, but a
/// socket from deeper than this below the bound cgroup is refused: fail closed).
const MAX_CGROUP_DEPTH: u32 = 32;

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

/// Whether `cgroup` (a `struct cgroup *`) is the bound cgroup or below it.
#[inline(always)]
fn in_binding(k: &KernelLayout, cgroup: u64, bound: u64) -> bool {
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

/// Whether `sk` was made in the bound cgroup or below it (so this binding's programs govern it).
#[inline(always)]
fn made_in_binding(k: &KernelLayout, sk: u64, bound: u64) -> bool {
    read_at::<u64>(sk, k.sock_cgroup).is_some_and(|cgroup| in_binding(k, cgroup, bound))
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

/// 32-bit setsockopt skips the cgroup sockopt hook (and with it sockopt.rs's `guard_membership`); this LSM
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
    let compat = k.compat_mask == 0
        || read_at::<u32>(task, k.task_compat).is_none_or(|s| s & k.compat_mask != 0);
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

/// Refuses a tun/tap attach (`what`: 1 TUNSETIFF on an existing device, 2 TUNSETQUEUE) unless
/// the policy allows tun devices. What a process writes into a tun device is received on it
/// and forwarded by the host's routing table: no socket of the cgroup carries it, so no cgroup
/// program would see it.
#[inline(always)]
fn refuse_tun(what: u32) -> i32 {
    if policy().has(flags::ALLOW_TUN) {
        return ALLOW;
    }
    count(|c| &mut c.devices_refused);
    report(hook::TUN, what, Task::Lsm);
    REFUSE
}

/// TUNSETIFF naming an existing (persistent) device, which its owner may attach without
/// capabilities. Creating one needs CAP_NET_ADMIN over the namespace (a workload's own
/// user + network namespace leads nowhere: row 11). Runs for the calling task's cgroup.
#[lsm_cgroup(hook = "tun_dev_open")]
pub fn lsm_tun_open(_ctx: LsmContext) -> i32 {
    refuse_tun(1)
}

/// TUNSETQUEUE re-attaching a queue of a multi-queue device (a tun fd brought in already
/// attached once). Runs for the calling task's cgroup.
#[lsm_cgroup(hook = "tun_dev_attach_queue")]
pub fn lsm_tun_queue(_ctx: LsmContext) -> i32 {
    refuse_tun(2)
}

/// ptrace-level access to a process outside the binding's subtree: attach and seize,
/// process_vm_readv/writev, /proc/PID/mem (PTRACE_MODE_ATTACH), pidfd_getfd, and also the
/// read-mode checks (PTRACE_MODE_READ), because reopening /proc/PID/fd/N, /proc/PID/cwd or
/// /proc/PID/root of a process gives its pipes, FIFOs and files: writing into an outside
/// shell's stdin drives it just as well. The outside process would send from outside the
/// binding. Runs for the calling task's cgroup (a task of its own thread group never gets
/// here: ptrace_may_access allows those first).
#[lsm_cgroup(hook = "ptrace_access_check")]
pub fn lsm_ptrace(ctx: LsmContext) -> i32 {
    let child: u64 = ctx.arg(0);
    let policy = policy();
    if policy.has(flags::ALLOW_PTRACE_OUT) {
        return ALLOW;
    }
    let k = kernel();
    // Unknown layout or an unreadable task: refuse (fail closed).
    let inside = read_at::<u64>(child, k.task_cgroups)
        .and_then(|cset| read_at::<u64>(cset, k.css_set_dfl_cgrp))
        .is_some_and(|cgroup| in_binding(&k, cgroup, policy.cgroup_id));
    if inside {
        return ALLOW;
    }
    let pid = read_at::<i32>(child, k.task_tgid).unwrap_or(0) as u32;
    count(|c| &mut c.ptrace_refused);
    report(hook::PTRACE, pid, Task::Lsm);
    REFUSE
}

/// TIOCSTI (and TIOCLINUX, whose selection paste does the same) push input into a terminal:
/// a process sharing its controlling tty with a shell outside the binding (`bindguard exec`
/// from an interactive shell, a service started from one) types commands the shell runs
/// outside. Refused unless `--allow-ptrace-out` (the same door: driving a process outside);
/// 6.2+ can turn TIOCSTI off for everyone with dev.tty.legacy_tiocsti=0. Runs for the calling
/// task's cgroup.
#[inline(always)]
fn guard_ioctl(cmd: u32) -> i32 {
    if (cmd != TIOCSTI && cmd != TIOCLINUX) || policy().has(flags::ALLOW_PTRACE_OUT) {
        return ALLOW;
    }
    count(|c| &mut c.ptrace_refused);
    report(hook::TIOCSTI, cmd, Task::Lsm);
    REFUSE
}

#[lsm_cgroup(hook = "file_ioctl")]
pub fn lsm_ioctl(ctx: LsmContext) -> i32 {
    guard_ioctl(ctx.arg(1))
}

/// From 6.8 (and its stable backports) a 32-bit ioctl goes through file_ioctl_compat instead
/// of file_ioctl.
#[lsm_cgroup(hook = "file_ioctl_compat")]
pub fn lsm_ioctl_compat(ctx: LsmContext) -> i32 {
    guard_ioctl(ctx.arg(1))
}
