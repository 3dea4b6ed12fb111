//! The hook table: every program of bindguard's eBPF object, how it is loaded and attached,
//! where its link is pinned and which escape rows it closes; and the object itself. It sits
//! below the program set (which loads the programs) and the enforcer (which links them), so
//! neither has to import the other for it.

use aya_obj::generated::bpf_attach_type::{self, self as A};

/// The eBPF object built from bindguard-ebpf by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bindguard"));

/// FNV-1a of [`EBPF_OBJECT`] (computed by build.rs): identifies the program set a binding
/// runs and names its pin directory.
pub const fn object_hash() -> u64 {
    include!(concat!(env!("OUT_DIR"), "/object_hash"))
}

/// Which aya program type loads a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sock,
    Sockopt,
    SockAddr,
    Skb,
    /// A BPF LSM program attached per cgroup (lsm_cgroup); the string is the LSM hook.
    Lsm(&'static str),
    /// cgroup/connect_unix (Linux 6.7): loaded by [`crate::kernel::rawload`], aya cannot.
    Unix,
}

/// One program of a binding and where its link is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// Pinned as `link_<name>`.
    pub name: &'static str,
    /// The function name in bindguard-ebpf.
    pub program: &'static str,
    pub kind: Kind,
    pub attach_type: bpf_attach_type,
    /// The rows of the escape table ([`crate::kernel::escapes::ESCAPES`]) this program closes.
    pub rows: &'static [u8],
}

const fn hook(
    name: &'static str,
    program: &'static str,
    kind: Kind,
    attach_type: bpf_attach_type,
    rows: &'static [u8],
) -> Hook {
    Hook {
        name,
        program,
        kind,
        attach_type,
        rows,
    }
}

impl Hook {
    /// A BPF LSM program (needs the BPF LSM active and lsm_cgroup, 6.0).
    pub fn is_lsm(&self) -> bool {
        matches!(self.kind, Kind::Lsm(_))
    }

    /// The hook a kernel must have for this program, where older supported kernels lack it.
    pub fn needs(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Unix => Some("cgroup/connect_unix (Linux 6.7)"),
            _ => None,
        }
    }
}

/// Every program, in attach order.
pub const HOOKS: &[Hook] = &[
    hook(
        "sock_create",
        "bind_sock_create",
        Kind::Sock,
        A::BPF_CGROUP_INET_SOCK_CREATE,
        &[11, 8],
    ),
    hook(
        "setsockopt",
        "guard_setsockopt",
        Kind::Sockopt,
        A::BPF_CGROUP_SETSOCKOPT,
        &[1, 6],
    ),
    hook(
        "connect4",
        "guard_connect4",
        Kind::SockAddr,
        A::BPF_CGROUP_INET4_CONNECT,
        &[2, 4, 27],
    ),
    hook(
        "connect6",
        "guard_connect6",
        Kind::SockAddr,
        A::BPF_CGROUP_INET6_CONNECT,
        &[2, 4, 27],
    ),
    hook(
        "bind4",
        "guard_bind4",
        Kind::SockAddr,
        A::BPF_CGROUP_INET4_BIND,
        &[2, 4],
    ),
    hook(
        "bind6",
        "guard_bind6",
        Kind::SockAddr,
        A::BPF_CGROUP_INET6_BIND,
        &[2, 4],
    ),
    hook(
        "sendmsg4",
        "guard_sendmsg4",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP4_SENDMSG,
        &[2, 4, 27],
    ),
    hook(
        "sendmsg6",
        "guard_sendmsg6",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP6_SENDMSG,
        &[2, 4, 27],
    ),
    // `--dns`: a redirected query's reply gets the source it asked for. They close no row
    // and refuse nothing; a binding without --dns links them all the same (they return at
    // once), so adding --dns later is a policy write, not new links.
    hook(
        "recvmsg4",
        "dns_reply4",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP4_RECVMSG,
        &[],
    ),
    hook(
        "recvmsg6",
        "dns_reply6",
        Kind::SockAddr,
        A::BPF_CGROUP_UDP6_RECVMSG,
        &[],
    ),
    // Strict mode: nss-resolve's varlink connect is refused, so glibc asks DNS (row 28).
    hook(
        "connect_unix",
        "refuse_resolved_unix",
        Kind::Unix,
        A::BPF_CGROUP_UNIX_CONNECT,
        &[28],
    ),
    hook(
        "egress",
        "filter_egress",
        Kind::Skb,
        A::BPF_CGROUP_INET_EGRESS,
        &[3, 5, 9, 10],
    ),
    hook(
        "ingress",
        "filter_ingress",
        Kind::Skb,
        A::BPF_CGROUP_INET_INGRESS,
        &[3, 5],
    ),
    // From here on: BPF LSM, attached only where the BPF LSM is active. The kernel keeps at
    // most CGROUP_LSM_NUM (10) distinct LSM hooks with per-cgroup programs system-wide: these
    // are nine of them (eight before 6.8, which has no file_ioctl_compat).
    hook(
        "lsm_socket_create",
        "lsm_socket_create",
        Kind::Lsm("socket_create"),
        A::BPF_LSM_CGROUP,
        &[14],
    ),
    hook(
        "lsm_file_receive",
        "lsm_file_receive",
        Kind::Lsm("file_receive"),
        A::BPF_LSM_CGROUP,
        &[12],
    ),
    hook(
        "lsm_setsockopt",
        "lsm_socket_setsockopt",
        Kind::Lsm("socket_setsockopt"),
        A::BPF_LSM_CGROUP,
        &[7],
    ),
    hook(
        "lsm_uring_cmd",
        "lsm_uring_cmd",
        Kind::Lsm("uring_cmd"),
        A::BPF_LSM_CGROUP,
        &[7],
    ),
    hook(
        "lsm_tun_open",
        "lsm_tun_open",
        Kind::Lsm("tun_dev_open"),
        A::BPF_LSM_CGROUP,
        &[20],
    ),
    hook(
        "lsm_tun_queue",
        "lsm_tun_queue",
        Kind::Lsm("tun_dev_attach_queue"),
        A::BPF_LSM_CGROUP,
        &[20],
    ),
    hook(
        "lsm_ptrace",
        "lsm_ptrace",
        Kind::Lsm("ptrace_access_check"),
        A::BPF_LSM_CGROUP,
        &[21],
    ),
    hook(
        "lsm_ioctl",
        "lsm_ioctl",
        Kind::Lsm("file_ioctl"),
        A::BPF_LSM_CGROUP,
        &[26],
    ),
    hook(
        "lsm_ioctl_compat",
        "lsm_ioctl_compat",
        Kind::Lsm("file_ioctl_compat"),
        A::BPF_LSM_CGROUP,
        &[26],
    ),
];

/// Index of the first BPF LSM hook in [`HOOKS`].
pub const LSM_HOOKS_START: usize = 13;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_hash_is_the_embedded_objects() {
        let h = EBPF_OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(h, object_hash());
    }

    #[test]
    fn lsm_hooks_come_last_and_every_row_exists() {
        assert!(HOOKS[LSM_HOOKS_START].is_lsm());
        assert!(!HOOKS[LSM_HOOKS_START - 1].is_lsm());
        // Every hook closes some row, and every row it names exists.
        for h in HOOKS {
            assert!(
                h.rows
                    .iter()
                    .all(|r| crate::kernel::escapes::row(*r).is_some()),
                "{}",
                h.name
            );
        }
    }
}
