//! The escape table (README, "Modes and the escapes they close") as data: each row, and what
//! closes it — programs of the hook table ([`super::hooks::HOOKS`], whose `rows` name them) or
//! bindguard's own userspace. `attach`, `status`, `verify` and `doctor` read coverage from
//! here, so they cannot disagree about which rows a kernel leaves open.

use crate::kernel::hooks::{HOOKS, Hook};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escape {
    pub row: u8,
    pub what: &'static str,
    /// Closed by userspace (not by a program): how. None: by the hooks naming this row.
    pub by_userspace: Option<&'static str>,
}

const fn hooks(row: u8, what: &'static str) -> Escape {
    Escape {
        row,
        what,
        by_userspace: None,
    }
}

const fn userspace(row: u8, what: &'static str, how: &'static str) -> Escape {
    Escape {
        row,
        what,
        by_userspace: Some(how),
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
];

pub fn row(n: u8) -> Option<&'static Escape> {
    ESCAPES.iter().find(|e| e.row == n)
}

/// The programs that close `row`.
pub fn hooks_of(row: u8) -> impl Iterator<Item = &'static Hook> {
    HOOKS.iter().filter(move |h| h.rows.contains(&row))
}

/// The rows strict mode leaves open when only the hooks `available` says are there attach:
/// each with the hooks it lacks. A row is covered when every program naming it is there.
pub fn open_rows(available: impl Fn(&Hook) -> bool) -> Vec<(&'static Escape, Vec<&'static Hook>)> {
    ESCAPES
        .iter()
        .filter(|e| e.by_userspace.is_none())
        .filter_map(|e| {
            let missing: Vec<_> = hooks_of(e.row).filter(|h| !available(h)).collect();
            (!missing.is_empty()).then_some((e, missing))
        })
        .collect()
}

/// "7, 12, 14": the row numbers of `open`, for one-line messages.
pub fn row_list(open: &[(&Escape, Vec<&Hook>)]) -> String {
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
            assert!(
                e.by_userspace.is_some() || hooks_of(e.row).next().is_some(),
                "row {} is closed by nothing",
                e.row
            );
        }
        assert_eq!(ESCAPES.len(), 18);
    }

    #[test]
    fn without_the_lsm_programs_rows_7_12_14_are_open() {
        let open = open_rows(|h| !h.is_lsm());
        assert_eq!(row_list(&open), "7, 12, 14");
        assert!(open_rows(|_| true).is_empty());
    }
}
