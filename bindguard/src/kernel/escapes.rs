//! The escape table (docs/modes-and-escapes.md) as data: each row, and what
//! closes it — programs of the hook table ([`Hook::ALL`], whose [`Hook::rows`] name them),
//! bindguard's own userspace, or nothing bindguard can attach (then what to deny instead). `attach`, `status`, `verify` and `doctor` read coverage from
//! here, so they cannot disagree about which rows a kernel leaves open.

use crate::kernel::hooks::Hook;

/// What closes a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// The programs of the hook table naming this row.
    Hooks,
    /// bindguard's own userspace: how.
    Userspace(&'static str),
    /// Nothing bindguard can attach: what keeps it shut, and what to deny the workload. Such
    /// a row is never "open" (no kernel would close it); `doctor` lists it with the advice.
    Outside(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escape {
    pub row: u8,
    pub what: &'static str,
    pub closed_by: Closer,
    /// Where the hooks cannot run: what an admin can do instead.
    pub workaround: Option<&'static str>,
}

const fn hooks(row: u8, what: &'static str) -> Escape {
    Escape {
        row,
        what,
        closed_by: Closer::Hooks,
        workaround: None,
    }
}

const fn hooks_or(row: u8, what: &'static str, workaround: &'static str) -> Escape {
    Escape {
        row,
        what,
        closed_by: Closer::Hooks,
        workaround: Some(workaround),
    }
}

const fn userspace(row: u8, what: &'static str, how: &'static str) -> Escape {
    Escape {
        row,
        what,
        closed_by: Closer::Userspace(how),
        workaround: None,
    }
}

const fn outside(row: u8, what: &'static str, advice: &'static str) -> Escape {
    Escape {
        row,
        what,
        closed_by: Closer::Outside(advice),
        workaround: None,
    }
}

pub const ESCAPES: &[Escape] = &[
    hooks(
        1,
        "setsockopt SO_BINDTODEVICE/SO_BINDTOIFINDEX moves or clears the binding",
    ),
    hooks(2, "UDP connect(AF_UNSPEC) resets the binding"),
    hooks(3, "an IP_PKTINFO cmsg names another interface"),
    hooks(4, "an IPv6 bind to fe80::x%other overwrites the binding"),
    hooks(5, "a UDPv6 sendto fe80::x%other picks the device"),
    hooks(6, "a multicast join names another interface"),
    hooks(7, "a multicast join by 32-bit setsockopt or io_uring"),
    hooks(8, "MPTCP subflows are kernel sockets"),
    hooks(9, "an SO_MARK cmsg or 32-bit setsockopt changes the mark"),
    hooks(10, "IP_TOS/IPV6_TCLASS change the priority"),
    hooks(11, "a new user + network namespace"),
    hooks(12, "a socket received by SCM_RIGHTS or pidfd_getfd"),
    userspace(
        13,
        "sockets held before the attach",
        "--existing destroy ends them; verify lists them",
    ),
    hooks(
        14,
        "AF_PACKET/AF_XDP and families that tunnel through kernel sockets",
    ),
    userspace(15, "binding the root cgroup", "refused by attach"),
    userspace(
        16,
        "an attach or detach killed half-way",
        "finished by the next command",
    ),
    userspace(
        17,
        "detaching the program",
        "bpf_links, never legacy attach",
    ),
    userspace(
        18,
        "squatting or locking the pins directory",
        "only a root-owned 0700 directory is used",
    ),
    userspace(
        19,
        "a process moves itself out of a delegated subtree (cgroup.procs, clone3 CLONE_INTO_CGROUP)",
        "strict attach refuses a cgroup below a delegation boundary; status, verify and doctor name one",
    ),
    hooks_or(
        20,
        "a tun/tap device the workload's user owns injects packets the host forwards",
        "take write access to /dev/net/tun away from the workload's user, or own no persistent tun device by it",
    ),
    hooks_or(
        21,
        "ptrace, process_vm_writev, /proc/PID/mem or /proc/PID/fd drive a process outside the binding",
        "run the workload as a uid of its own; kernel.yama.ptrace_scope >= 1 stops ptrace attach, not /proc/PID/fd",
    ),
    outside(
        22,
        "a macvtap/ipvtap device node (/dev/tapN) writes frames onto its lower device",
        "the node is root's (0600) unless an admin hands it out: never give it to the workload's user",
    ),
    outside(
        23,
        "/dev/vhost-net sends through a tap device",
        "it drives only a tun/tap fd the process already has (row 20); the node is root:kvm 0660: keep the workload's user out of group kvm",
    ),
    outside(
        24,
        "/dev/ppp sends through a PPP channel",
        "opening it needs CAP_NET_ADMIN (ppp_open): a workload granted that is outside any binding's promise",
    ),
    outside(
        25,
        "a service outside the cgroup sends for the workload (systemd --user, cron, at, sshd, D-Bus activation, systemd-resolved)",
        "bindguard binds a cgroup, not a user: deny the workload the user bus, crontab, at and ssh to localhost (docs/modes-and-escapes.md, Threat model)",
    ),
    hooks_or(
        26,
        "TIOCSTI types into a terminal shared with a shell outside the binding",
        "set dev.tty.legacy_tiocsti to 0 (Linux 6.2+), or give the workload a terminal of its own",
    ),
    hooks(
        27,
        "a lookup through the local DNS stub (127.0.0.53) is sent by the host's resolver, by its own choice of interface",
    ),
    hooks_or(
        28,
        "nss-resolve asks systemd-resolved over its varlink socket (/run/systemd/resolve/io.systemd.Resolve), which sends the lookup by its own choice of interface",
        "give the workload a mount namespace whose nsswitch.conf hosts line has no `resolve` (`bindguard exec --dns` does; glibc then reads resolv.conf, and --dns applies), or a host without systemd-resolved",
    ),
];

pub fn row(n: u8) -> Option<&'static Escape> {
    ESCAPES.iter().find(|e| e.row == n)
}

/// The programs that close `row`.
pub fn hooks_of(row: u8) -> impl Iterator<Item = Hook> {
    Hook::ALL
        .into_iter()
        .filter(move |h| h.rows().contains(&row))
}

/// The rows strict mode leaves open when only the hooks `available` says are there attach:
/// each with the hooks it lacks. A row is covered when every program naming it is there.
pub fn open_rows(available: impl Fn(Hook) -> bool) -> Vec<(&'static Escape, Vec<Hook>)> {
    ESCAPES
        .iter()
        .filter(|e| e.closed_by == Closer::Hooks)
        .filter_map(|e| {
            let missing: Vec<_> = hooks_of(e.row).filter(|&h| !available(h)).collect();
            (!missing.is_empty()).then_some((e, missing))
        })
        .collect()
}

/// "7, 12, 14": the row numbers of `open`, for one-line messages.
pub fn row_list(open: &[(&Escape, Vec<Hook>)]) -> String {
    open.iter()
        .map(|(e, _)| e.row.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_closed_by_something() {
        for e in ESCAPES {
            assert_eq!(
                e.closed_by == Closer::Hooks,
                hooks_of(e.row).next().is_some(),
                "row {}: a hooks row needs hooks, and only it",
                e.row
            );
        }
        // Numbered 1, 2, ... with no gap: docs/modes-and-escapes.md and doctor's JSON name them.
        for (i, e) in ESCAPES.iter().enumerate() {
            assert_eq!(usize::from(e.row), i + 1);
        }
    }

    #[test]
    fn without_the_lsm_programs_rows_7_12_14_20_21_are_open() {
        let open = open_rows(|h| !h.is_lsm());
        assert_eq!(row_list(&open), "7, 12, 14, 20, 21, 26");
        assert!(open_rows(|_| true).is_empty());
    }
}
