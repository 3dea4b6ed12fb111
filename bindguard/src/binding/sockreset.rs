//! Ending the sockets of a cgroup that escape its binding — one implementation for both
//! paths that need it:
//! - `--existing destroy` (attach, and `existing = "destroy"` in the config): sockets made
//!   before the attach or brought in, not bound to the binding's interface;
//! - `on_recreate = "reset-sockets"`: after an interface was re-created (it has a new
//!   ifindex), sockets still bound to the old one only ever fail with ENODEV.
//!
//! TCP sockets are destroyed (SOCK_DESTROY, as `ss -K`, CONFIG_INET_DIAG_DESTROY): the owner
//! sees ECONNABORTED at once and makes a new socket, which the binding governs. UDP sockets
//! are bound to the interface instead, through a copy of a holder's fd (pidfd_getfd, then
//! SO_BINDTOIFINDEX): SOCK_DESTROY on UDP disconnects the socket and *clears* its bound
//! device, so a port-bound client would go on sending by the routing table's choice (bind
//! mode) or be refused forever (strict mode).
//!
//! A pass never stops at one socket: a holder fd that cannot be copied (an O_PATH fd of the
//! socket, a process gone) is skipped for the next one, and whatever could not be ended, or
//! could not be seen ([`audit::Blind`]), is returned in [`Pass::unreached`] — and recorded in
//! the binding's policy, so `status` shows it until the next attach or pass.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::Context as _;

use crate::binding::{
    audit::{self, Found, Holder, UnboundSocket},
    netns::Netns,
};

/// What a pass did to one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// SOCK_DESTROY: the owner sees ECONNABORTED and must make a new socket.
    Destroyed,
    /// A UDP socket bound to the interface through a copy of its holder's fd.
    Bound,
}

/// What one pass did and what it could not do.
#[derive(Debug, Default)]
pub struct Pass {
    pub ended: Vec<(UnboundSocket, Fate)>,
    /// One line per socket that could not be ended and per task whose sockets could not be
    /// seen.
    pub unreached: Vec<String>,
}

impl Pass {
    /// How many sockets were ended, or an error naming every socket and task the pass could
    /// not reach (the binding stays; the pass already did all it could).
    pub fn check(&self) -> anyhow::Result<usize> {
        if self.unreached.is_empty() {
            return Ok(self.ended.len());
        }
        anyhow::bail!(
            "{} socket(s) ended, but {} socket(s) or task(s) could not be reached: {}",
            self.ended.len(),
            self.unreached.len(),
            self.unreached.join("; ")
        )
    }
}

/// `--existing=destroy` for a binding just made: every socket of the cgroup that does not obey
/// the policy read back from its pins is ended, in the namespace of `iface`.
pub fn end_existing(
    cgroup: &crate::binding::cgroup::Cgroup,
    iface: &crate::binding::netdev::Interface,
) -> anyhow::Result<Pass> {
    let policy =
        crate::binding::enforcer::read_policy(&crate::kernel::pins::binding_dir(cgroup.id))?;
    let Some(ns) = crate::binding::netns::find_by_ino(iface.netns_ino) else {
        // A closed binding of a namespace that does not exist: no socket there to end.
        return Ok(Pass::default());
    };
    let pass = end(&cgroup.path, policy.ifindex, &ns, |s| {
        !audit::conforms(&policy, s.bound_ifindex, &s.remote)
    })
    .with_context(|| format!("ending the unbound sockets of {}", cgroup.path.display()))?;
    record(cgroup.id, &pass);
    Ok(pass)
}

/// `on_recreate = "reset-sockets"`: ends the TCP/UDP sockets of `cgroup` (in `netns`) bound to
/// a device other than `keep_ifindex`. Unbound sockets (ifindex 0) are left alone: they were
/// never the binding's.
pub fn reset_sockets(cgroup: &Path, keep_ifindex: u32, netns: &Netns) -> anyhow::Result<Pass> {
    use std::os::unix::fs::MetadataExt as _;
    let pass = end(cgroup, keep_ifindex, netns, |s| {
        s.bound_ifindex != 0 && s.bound_ifindex != keep_ifindex
    })?;
    if let Ok(m) = std::fs::metadata(cgroup) {
        // The cgroup id is its directory's inode.
        record(m.ino(), &pass);
    }
    Ok(pass)
}

/// Ends the sockets of `cgroup` (in `netns`) that `select` picks: TCP destroyed, UDP bound to
/// `ifindex`.
fn end(
    cgroup: &Path,
    ifindex: u32,
    netns: &Netns,
    select: impl Fn(&audit::DiagSocket) -> bool,
) -> anyhow::Result<Pass> {
    let survey = audit::survey(cgroup, netns)?;
    let mut pass = Pass {
        unreached: survey.blind.iter().map(|b| b.to_string()).collect(),
        ..Pass::default()
    };
    let mut tcp: Vec<Found> = Vec::new();
    for found in survey.sockets {
        if !select(&found.socket) {
            continue;
        }
        if found.socket.protocol.starts_with("tcp") {
            tcp.push(found);
            continue;
        }
        match bind_held(&found.holders, found.socket.inode, ifindex) {
            Ok(()) => pass.ended.push((found.describe(), Fate::Bound)),
            Err(e) => pass.unreached.push(format!(
                "{}: not bound to ifindex {ifindex}: {e}",
                show(&found)
            )),
        }
    }
    let sockets: Vec<audit::DiagSocket> = tcp.iter().map(|f| f.socket.clone()).collect();
    let results = netns.run(move || audit::destroy(&sockets))??;
    for (found, result) in tcp.iter().zip(results) {
        match result {
            Ok(true) => pass.ended.push((found.describe(), Fate::Destroyed)),
            Ok(false) => {}
            Err(e) => pass
                .unreached
                .push(format!("{}: not destroyed: {e}", show(found))),
        }
    }
    Ok(pass)
}

/// One line naming a socket and its holder.
fn show(found: &Found) -> String {
    let s = found.describe();
    let owner = if s.pid == 0 {
        "held by no task bindguard could read".to_string()
    } else {
        format!("of pid {} ({})", s.pid, crate::error::printable(&s.command))
    };
    format!(
        "{} {} -> {} {owner}, on ifindex {}",
        s.protocol, s.local, s.remote, s.bound_ifindex
    )
}

/// The number of unreached sockets and tasks of the last pass, in the binding's policy
/// (`status` shows it as a problem). Best effort: the pass already reported them.
fn record(cgroup_id: u64, pass: &Pass) {
    let n = pass.unreached.len().min(u32::MAX as usize) as u32;
    let _ = crate::binding::enforcer::set_unreached(cgroup_id, n);
}

/// SO_BINDTOIFINDEX on a socket other tasks hold, through a copy of one holder's fd: each
/// holder is tried in turn (an O_PATH fd of the socket cannot be copied, a task may be gone),
/// and a copy is used only if it is the socket `inode` (the fd may have been closed and its
/// number reused meanwhile).
fn bind_held(holders: &[Holder], inode: u32, ifindex: u32) -> std::io::Result<()> {
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    if holders.is_empty() {
        return Err(std::io::Error::other(
            "held by no task whose fds bindguard could read",
        ));
    }
    for h in holders {
        let copy = copy_fd(h).and_then(|sock| {
            let st = nix::sys::stat::fstat(&sock).map_err(std::io::Error::from)?;
            if st.st_ino != u64::from(inode) {
                return Err(std::io::Error::other(format!(
                    "fd {} of thread {} is no longer the socket",
                    h.fd, h.tid
                )));
            }
            Ok(sock)
        });
        match copy.and_then(|sock| bind_to(&sock, ifindex)) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn owned(r: libc::c_long) -> std::io::Result<OwnedFd> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: the kernel returned a new fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

/// A copy of the holder's fd. The pidfd names the holder's thread (PIDFD_THREAD, 6.9+): its fd
/// table may be its own (unshare(CLONE_FILES)), and a process whose leader exited has none
/// left under the leader. Older kernels only name processes.
fn copy_fd(h: &Holder) -> std::io::Result<OwnedFd> {
    const PIDFD_THREAD: libc::c_long = libc::O_EXCL as libc::c_long;
    // SAFETY: plain syscalls; the fds they return are owned.
    let pidfd = if h.tid != h.pid {
        owned(unsafe { libc::syscall(libc::SYS_pidfd_open, h.tid, PIDFD_THREAD) })
            .or_else(|_| owned(unsafe { libc::syscall(libc::SYS_pidfd_open, h.pid, 0) }))?
    } else {
        owned(unsafe { libc::syscall(libc::SYS_pidfd_open, h.pid, 0) })?
    };
    // SAFETY: as above.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), h.fd, 0) })
}

fn bind_to(sock: &OwnedFd, ifindex: u32) -> std::io::Result<()> {
    let idx = ifindex as libc::c_int;
    // SAFETY: setsockopt with an int on an fd we own.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTOIFINDEX,
            (&idx as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
