//! `on_recreate = "reset-sockets"`: after an interface was re-created (it has a new ifindex),
//! the cgroup's TCP/UDP sockets still bound to the old one only ever fail with ENODEV — a
//! connected client hangs until its own timeout. SOCK_DESTROY (as `ss -K`,
//! CONFIG_INET_DIAG_DESTROY) aborts them, so programs see the error at once and reconnect;
//! their new sockets are bound to the new interface.

use crate::binding::{
    audit::{self, DiagSocket},
    netns::Netns,
};

/// Destroys the TCP/UDP sockets of `cgroup`'s processes (in `netns`) that are bound to a
/// device other than `keep_ifindex`; returns how many. Unbound sockets (ifindex 0) are left
/// alone: they were never the binding's.
pub fn reset_sockets(
    cgroup: &std::path::Path,
    keep_ifindex: u32,
    netns: &Netns,
) -> anyhow::Result<usize> {
    let owned = audit::held_inodes(cgroup);
    if owned.is_empty() {
        return Ok(0);
    }
    netns.run(move || -> anyhow::Result<usize> {
        let stale: Vec<DiagSocket> = audit::dump_inet_sockets()?
            .into_iter()
            .filter(|s| s.bound_ifindex != 0 && s.bound_ifindex != keep_ifindex)
            .filter(|s| owned.contains(&u64::from(s.inode)))
            .collect();
        audit::destroy(&stale)
    })?
}
