//! The hook table, as [`Hook`]: every program of bindguard's eBPF object, how it is loaded
//! and attached, where its link is pinned and which escape rows it closes; and the object
//! itself. It sits
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

/// One program of bindguard's eBPF object. Everything known about a program is one
/// exhaustive `match` below, so a new program is a compile error until every fact about it is
/// written down (and a unit test fails until it is in [`Hook::ALL`]). The discriminant is the
/// hook's bit in a [`u64`] set ([`Hook::bit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    SockCreate,
    Setsockopt,
    Connect4,
    Connect6,
    Bind4,
    Bind6,
    Sendmsg4,
    Sendmsg6,
    Recvmsg4,
    Recvmsg6,
    ConnectUnix,
    Egress,
    Ingress,
    LsmSocketCreate,
    LsmFileReceive,
    LsmSetsockopt,
    LsmUringCmd,
    LsmTunOpen,
    LsmTunQueue,
    LsmPtrace,
    LsmIoctl,
    LsmIoctlCompat,
    /// The storage holder: linked first to every cgroup a set binds, before the policy is
    /// written, and never pinned in a binding (`progset::Set::hold`). Not in [`Hook::ALL`].
    Hold,
}

impl Hook {
    /// Every enforcing program, in attach order: sock_create first, so that a binding exists
    /// before the guards that check it; the BPF LSM ones last. [`Hook::Hold`] is not one.
    pub const ALL: [Hook; 22] = [
        Hook::SockCreate,
        Hook::Setsockopt,
        Hook::Connect4,
        Hook::Connect6,
        Hook::Bind4,
        Hook::Bind6,
        Hook::Sendmsg4,
        Hook::Sendmsg6,
        Hook::Recvmsg4,
        Hook::Recvmsg6,
        Hook::ConnectUnix,
        Hook::Egress,
        Hook::Ingress,
        Hook::LsmSocketCreate,
        Hook::LsmFileReceive,
        Hook::LsmSetsockopt,
        Hook::LsmUringCmd,
        Hook::LsmTunOpen,
        Hook::LsmTunQueue,
        Hook::LsmPtrace,
        Hook::LsmIoctl,
        Hook::LsmIoctlCompat,
    ];

    /// Every program the program set loads, in load order: the holder, then [`Hook::ALL`].
    pub fn loaded() -> impl Iterator<Item = Hook> {
        std::iter::once(Hook::Hold).chain(Hook::ALL)
    }

    /// The hook named `name` (as [`Hook::name`] spells it), the one place a name is parsed.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::loaded().find(|h| h.name() == name)
    }

    /// The hook whose program reports events with code `code` (`bindguard_common::hook`);
    /// None for codes that name a reason rather than a program (mptcp, tun, ...).
    pub fn from_event(code: u32) -> Option<Hook> {
        Hook::loaded().find(|h| h.event() == Some(code))
    }

    /// The user-facing name: pinned as `link_<name>` and `prog_<name>`, shown by `status`,
    /// `doctor` and `monitor`.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::SockCreate => "sock_create",
            Hook::Setsockopt => "setsockopt",
            Hook::Connect4 => "connect4",
            Hook::Connect6 => "connect6",
            Hook::Bind4 => "bind4",
            Hook::Bind6 => "bind6",
            Hook::Sendmsg4 => "sendmsg4",
            Hook::Sendmsg6 => "sendmsg6",
            Hook::Recvmsg4 => "recvmsg4",
            Hook::Recvmsg6 => "recvmsg6",
            Hook::ConnectUnix => "connect_unix",
            Hook::Egress => "egress",
            Hook::Ingress => "ingress",
            Hook::LsmSocketCreate => "lsm_socket_create",
            Hook::LsmFileReceive => "lsm_file_receive",
            Hook::LsmSetsockopt => "lsm_setsockopt",
            Hook::LsmUringCmd => "lsm_uring_cmd",
            Hook::LsmTunOpen => "lsm_tun_open",
            Hook::LsmTunQueue => "lsm_tun_queue",
            Hook::LsmPtrace => "lsm_ptrace",
            Hook::LsmIoctl => "lsm_ioctl",
            Hook::LsmIoctlCompat => "lsm_ioctl_compat",
            Hook::Hold => "hold",
        }
    }

    /// The function name in bindguard-ebpf.
    pub const fn program(self) -> &'static str {
        match self {
            Hook::SockCreate => "bind_sock_create",
            Hook::Setsockopt => "guard_setsockopt",
            Hook::Connect4 => "guard_connect4",
            Hook::Connect6 => "guard_connect6",
            Hook::Bind4 => "guard_bind4",
            Hook::Bind6 => "guard_bind6",
            Hook::Sendmsg4 => "guard_sendmsg4",
            Hook::Sendmsg6 => "guard_sendmsg6",
            Hook::Recvmsg4 => "dns_reply4",
            Hook::Recvmsg6 => "dns_reply6",
            Hook::ConnectUnix => "refuse_resolved_unix",
            Hook::Egress => "filter_egress",
            Hook::Ingress => "filter_ingress",
            Hook::LsmSocketCreate => "lsm_socket_create",
            Hook::LsmFileReceive => "lsm_file_receive",
            Hook::LsmSetsockopt => "lsm_socket_setsockopt",
            Hook::LsmUringCmd => "lsm_uring_cmd",
            Hook::LsmTunOpen => "lsm_tun_open",
            Hook::LsmTunQueue => "lsm_tun_queue",
            Hook::LsmPtrace => "lsm_ptrace",
            Hook::LsmIoctl => "lsm_ioctl",
            Hook::LsmIoctlCompat => "lsm_ioctl_compat",
            Hook::Hold => "hold_storage",
        }
    }

    /// Which aya program type loads the program.
    pub const fn kind(self) -> Kind {
        match self {
            Hook::SockCreate | Hook::Hold => Kind::Sock,
            Hook::Setsockopt => Kind::Sockopt,
            Hook::Connect4
            | Hook::Connect6
            | Hook::Bind4
            | Hook::Bind6
            | Hook::Sendmsg4
            | Hook::Sendmsg6
            | Hook::Recvmsg4
            | Hook::Recvmsg6 => Kind::SockAddr,
            Hook::ConnectUnix => Kind::Unix,
            Hook::Egress | Hook::Ingress => Kind::Skb,
            Hook::LsmSocketCreate => Kind::Lsm("socket_create"),
            Hook::LsmFileReceive => Kind::Lsm("file_receive"),
            Hook::LsmSetsockopt => Kind::Lsm("socket_setsockopt"),
            Hook::LsmUringCmd => Kind::Lsm("uring_cmd"),
            Hook::LsmTunOpen => Kind::Lsm("tun_dev_open"),
            Hook::LsmTunQueue => Kind::Lsm("tun_dev_attach_queue"),
            Hook::LsmPtrace => Kind::Lsm("ptrace_access_check"),
            Hook::LsmIoctl => Kind::Lsm("file_ioctl"),
            Hook::LsmIoctlCompat => Kind::Lsm("file_ioctl_compat"),
        }
    }

    /// The attach type its link is created with.
    pub const fn attach_type(self) -> bpf_attach_type {
        match self {
            Hook::SockCreate | Hook::Hold => A::BPF_CGROUP_INET_SOCK_CREATE,
            Hook::Setsockopt => A::BPF_CGROUP_SETSOCKOPT,
            Hook::Connect4 => A::BPF_CGROUP_INET4_CONNECT,
            Hook::Connect6 => A::BPF_CGROUP_INET6_CONNECT,
            Hook::Bind4 => A::BPF_CGROUP_INET4_BIND,
            Hook::Bind6 => A::BPF_CGROUP_INET6_BIND,
            Hook::Sendmsg4 => A::BPF_CGROUP_UDP4_SENDMSG,
            Hook::Sendmsg6 => A::BPF_CGROUP_UDP6_SENDMSG,
            Hook::Recvmsg4 => A::BPF_CGROUP_UDP4_RECVMSG,
            Hook::Recvmsg6 => A::BPF_CGROUP_UDP6_RECVMSG,
            Hook::ConnectUnix => A::BPF_CGROUP_UNIX_CONNECT,
            Hook::Egress => A::BPF_CGROUP_INET_EGRESS,
            Hook::Ingress => A::BPF_CGROUP_INET_INGRESS,
            // The BPF LSM programs, as `kind` lists them (a unit test holds the two together).
            _ => A::BPF_LSM_CGROUP,
        }
    }

    /// The rows of the escape table ([`crate::kernel::escapes::ESCAPES`]) the program closes.
    pub const fn rows(self) -> &'static [u8] {
        match self {
            Hook::SockCreate => &[11, 8],
            Hook::Setsockopt => &[1, 6],
            Hook::Connect4 | Hook::Connect6 | Hook::Sendmsg4 | Hook::Sendmsg6 => &[2, 4, 27],
            Hook::Bind4 | Hook::Bind6 => &[2, 4],
            // `--dns`: a redirected query's reply gets the source it asked for. They close no
            // row and refuse nothing; a binding without --dns links them all the same (they
            // return at once), so adding --dns later is a policy write, not new links.
            Hook::Recvmsg4 | Hook::Recvmsg6 => &[],
            // Strict mode: nss-resolve's varlink connect is refused, so glibc asks DNS.
            Hook::ConnectUnix => &[28],
            Hook::Egress => &[3, 5, 9, 10],
            Hook::Ingress => &[3, 5],
            Hook::LsmSocketCreate => &[14],
            Hook::LsmFileReceive => &[12],
            Hook::LsmSetsockopt | Hook::LsmUringCmd => &[7],
            Hook::LsmTunOpen | Hook::LsmTunQueue => &[20],
            Hook::LsmPtrace => &[21],
            Hook::LsmIoctl | Hook::LsmIoctlCompat => &[26],
            Hook::Hold => &[],
        }
    }

    /// The event code (`bindguard_common::hook`) the program reports its own refusals with;
    /// None for programs that report none, or only with a reason code (mptcp, tun, ...).
    pub const fn event(self) -> Option<u32> {
        use bindguard_common::hook;
        match self {
            Hook::SockCreate => Some(hook::SOCK_CREATE),
            Hook::Setsockopt => Some(hook::SETSOCKOPT),
            Hook::Connect4 => Some(hook::CONNECT4),
            Hook::Connect6 => Some(hook::CONNECT6),
            Hook::Bind4 => Some(hook::BIND4),
            Hook::Bind6 => Some(hook::BIND6),
            Hook::Sendmsg4 => Some(hook::SENDMSG4),
            Hook::Sendmsg6 => Some(hook::SENDMSG6),
            Hook::Egress => Some(hook::EGRESS),
            Hook::Ingress => Some(hook::INGRESS),
            _ => None,
        }
    }

    /// Whether a program set is unusable without this program: the binding itself (and bind
    /// mode's only program) and the storage holder. The kernel may refuse any other one; the
    /// set then leaves it out and says why.
    pub const fn required(self) -> bool {
        matches!(self, Hook::SockCreate | Hook::Hold)
    }

    /// A BPF LSM program (needs the BPF LSM active and lsm_cgroup, 6.0). The kernel keeps at
    /// most CGROUP_LSM_NUM (10) distinct LSM hooks with per-cgroup programs system-wide:
    /// bindguard's are nine of them (eight before 6.8, which has no file_ioctl_compat).
    pub const fn is_lsm(self) -> bool {
        matches!(self.kind(), Kind::Lsm(_))
    }

    /// The hook a kernel must have for this program, where older supported kernels lack it.
    pub const fn needs(self) -> Option<&'static str> {
        match self.kind() {
            Kind::Unix => Some("cgroup/connect_unix (Linux 6.7)"),
            _ => None,
        }
    }

    /// The hook's bit in a set of hooks kept as a [`u64`].
    pub const fn bit(self) -> u64 {
        1 << self as u32
    }
}

// Every hook has a bit: `Hold` is the last variant.
const _: () = assert!((Hook::Hold as u32) < u64::BITS);

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
        let first_lsm = Hook::ALL.iter().position(|h| h.is_lsm()).unwrap();
        assert!(Hook::ALL[first_lsm..].iter().all(|h| h.is_lsm()));
        assert!(Hook::ALL[0].required());
        // Every row a hook names exists.
        for h in Hook::loaded() {
            assert!(
                h.rows()
                    .iter()
                    .all(|r| crate::kernel::escapes::row(*r).is_some()),
                "{}",
                h.name()
            );
        }
    }

    #[test]
    fn the_lsm_attach_type_is_the_lsm_programs_and_theirs_only() {
        for h in Hook::loaded() {
            assert_eq!(
                h.attach_type() == A::BPF_LSM_CGROUP,
                h.is_lsm(),
                "{}",
                h.name()
            );
        }
    }

    #[test]
    fn names_and_event_codes_parse_back() {
        let mut bits = 0;
        for (i, h) in Hook::loaded().enumerate() {
            assert_eq!(Hook::from_name(h.name()), Some(h));
            if let Some(code) = h.event() {
                assert_eq!(Hook::from_event(code), Some(h));
            }
            assert_eq!(bits & h.bit(), 0, "{} shares a bit", h.name());
            bits |= h.bit();
            // Hold loads first; the rest in ALL's order, whose positions are the bits.
            if i > 0 {
                assert_eq!(Hook::ALL[i - 1] as usize, i - 1);
            }
        }
        assert_eq!(Hook::from_name("link_connect4"), None);
        assert_eq!(Hook::from_event(bindguard_common::hook::MPTCP), None);
    }
}
