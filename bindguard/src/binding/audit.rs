//! The existing-socket audit: sockets held by the cgroup's processes that are not bound to the
//! binding's interface. Such sockets were created before the attach, before the process moved
//! in, or received over SCM_RIGHTS — each is an escape a binding made later cannot close.
//!
//! Which sockets a process holds comes from /proc/PID/fd (procfs); what each is bound to comes
//! from NETLINK_SOCK_DIAG, whose inet_diag replies carry the bound device (idiag_if), queried
//! inside the binding's network namespace.

use std::{
    collections::HashMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use bindguard_common::{Policy, flags};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use serde::Serialize;

use crate::binding::netns::Netns;

/// One socket of the namespace, as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub inode: u32,
    pub protocol: &'static str,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// idiag_if: the socket's bound device, 0 for none.
    pub bound_ifindex: u32,
    /// What SOCK_DESTROY needs to name exactly this socket.
    family: u8,
    protocol_number: u8,
    id: SocketId,
}

/// A socket held by a process of the cgroup that is not bound as the policy says.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnboundSocket {
    pub pid: i32,
    pub command: String,
    pub protocol: &'static str,
    pub local: String,
    pub remote: String,
    pub bound_ifindex: u32,
}

/// Every process in `cgroup` and its descendants.
pub fn pids(cgroup: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![cgroup.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    out
}

/// socket inode -> (pid, command) for every socket the processes hold.
fn socket_owners(pids: &[i32]) -> HashMap<u64, (i32, String, i32)> {
    let mut owners = HashMap::new();
    for &pid in pids {
        let Ok(proc) = procfs::process::Process::new(pid) else {
            continue;
        };
        let command = proc.stat().map(|s| s.comm).unwrap_or_default();
        for fd in proc.fd().into_iter().flatten().flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                owners.entry(inode).or_insert((pid, command.clone(), fd.fd));
            }
        }
    }
    owners
}

/// Dumps the TCP and UDP sockets (IPv4 and IPv6) of the calling thread's namespace.
pub fn dump_inet_sockets() -> anyhow::Result<Vec<DiagSocket>> {
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    for (family, v6) in [(AF_INET, false), (AF_INET6, true)] {
        for (protocol, name) in [(IPPROTO_TCP, "tcp"), (IPPROTO_UDP, "udp")] {
            let name: &'static str = match (name, v6) {
                ("tcp", false) => "tcp",
                ("tcp", true) => "tcp6",
                ("udp", false) => "udp",
                _ => "udp6",
            };
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let socket_id = if v6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            };
            let mut packet = NetlinkMessage::new(
                header,
                SockDiagMessage::InetRequest(InetRequest {
                    family,
                    protocol,
                    extensions: ExtensionFlags::empty(),
                    states: StateFlags::all(),
                    socket_id,
                })
                .into(),
            );
            packet.finalize();
            let mut buf = vec![0; packet.buffer_len()];
            packet.serialize(&mut buf);
            socket
                .send(&buf, 0)
                .context("sending the sock_diag request")?;
            receive(&socket, name, (family, protocol), &mut out)?;
        }
    }
    Ok(out)
}

fn receive(
    socket: &Socket,
    protocol: &'static str,
    (family, protocol_number): (u8, u8),
    out: &mut Vec<DiagSocket>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut buf[..], 0)
            .context("reading sock_diag replies")?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..size])
                .context("parsing a sock_diag reply")?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    out.push(DiagSocket {
                        inode: r.header.inode,
                        protocol,
                        local: std::net::SocketAddr::new(id.source_address, id.source_port),
                        remote: std::net::SocketAddr::new(
                            id.destination_address,
                            id.destination_port,
                        ),
                        bound_ifindex: id.interface_id,
                        family,
                        protocol_number,
                        id: id.clone(),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => anyhow::bail!("sock_diag: {e:?}"),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Whether a socket bound to `ifindex` obeys `policy`. With --allow-loopback sockets are pinned
/// on first use, so lo is fine and an unpinned socket is fine until it is connected.
pub fn conforms(policy: &Policy, bound: u32, remote: &std::net::SocketAddr) -> bool {
    if bound == policy.ifindex {
        return true;
    }
    policy.has(flags::ALLOW_LOOPBACK)
        && (bound == 1 || (bound == 0 && remote.port() == 0 && remote.ip().is_unspecified()))
}

fn unspecified(ip: IpAddr) -> bool {
    ip.is_unspecified()
}

/// The sockets of `cgroup`'s processes (in `netns`) that do not obey `policy`.
pub fn unbound_sockets(
    cgroup: &Path,
    policy: &Policy,
    netns: &Netns,
) -> anyhow::Result<Vec<UnboundSocket>> {
    Ok(unbound(cgroup, policy, netns)?
        .into_iter()
        .map(|(_, u, _)| u)
        .collect())
}

/// What `--existing=destroy` did to one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// SOCK_DESTROY (as `ss -K`): the owner sees ECONNABORTED and must make a new socket,
    /// which the binding governs.
    Destroyed,
    /// A UDP socket bound to a port: SOCK_DESTROY only reports an error on it and leaves it
    /// usable, so it is bound to the interface instead (through a copy of the owner's fd,
    /// pidfd_getfd).
    Bound,
}

/// Ends every socket [`unbound_sockets`] finds: TCP ones destroyed, UDP ones bound to the
/// policy's interface; returns them with what happened.
pub fn destroy_unbound(
    cgroup: &Path,
    policy: &Policy,
    netns: &Netns,
) -> anyhow::Result<Vec<(UnboundSocket, Fate)>> {
    let found = unbound(cgroup, policy, netns)?;
    let mut out = Vec::new();
    let mut tcp = Vec::new();
    for (held, u, d) in found {
        if u.protocol.starts_with("udp") {
            bind_held(held, policy.ifindex).with_context(|| {
                format!(
                    "binding {} {} of pid {} to ifindex {}",
                    u.protocol, u.local, u.pid, policy.ifindex
                )
            })?;
            out.push((u, Fate::Bound));
        } else {
            tcp.push(d);
            out.push((u, Fate::Destroyed));
        }
    }
    netns.run(move || destroy(&tcp))??;
    Ok(out)
}

/// `--existing=destroy` for a binding just made: [`destroy_unbound`] with the policy read back
/// from its pins, in the namespace of `iface`.
pub fn end_existing(
    cgroup: &crate::binding::cgroup::Cgroup,
    iface: &crate::binding::netdev::Interface,
) -> anyhow::Result<Vec<(UnboundSocket, Fate)>> {
    let policy =
        crate::binding::enforcer::read_policy(&crate::kernel::pins::binding_dir(cgroup.id))?;
    let Some(ns) = crate::binding::netns::find_by_ino(iface.netns_ino) else {
        // A closed binding of a namespace that does not exist: no socket there to end.
        return Ok(Vec::new());
    };
    destroy_unbound(&cgroup.path, &policy, &ns)
        .with_context(|| format!("ending the unbound sockets of {}", cgroup.path.display()))
}

/// Socket inodes held by the processes of `cgroup` and its descendants.
pub fn held_inodes(cgroup: &Path) -> std::collections::HashSet<u64> {
    socket_owners(&pids(cgroup)).into_keys().collect()
}

/// SO_BINDTOIFINDEX on a socket another process holds, through a duplicate of its fd.
fn bind_held(held: Held, ifindex: u32) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let sys = |r: libc::c_long| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: the kernel returned a new fd we own.
            Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
        }
    };
    // SAFETY: plain syscalls; the fds they return are owned above.
    let pidfd = sys(unsafe { libc::syscall(libc::SYS_pidfd_open, held.pid, 0) })?;
    let sock = sys(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), held.fd, 0) })?;
    let idx = ifindex as libc::c_int;
    // SAFETY: setsockopt with an int on the fd we own.
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

/// SOCK_DESTROY (as `ss -K`, CONFIG_INET_DIAG_DESTROY) of each socket, in the calling
/// thread's network namespace; returns how many were destroyed (a socket gone meanwhile is
/// not an error).
pub fn destroy(sockets: &[DiagSocket]) -> anyhow::Result<usize> {
    let mut destroyed = 0;
    use netlink_packet_core::NLM_F_ACK;
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    for s in sockets {
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            SockDiagMessage::InetRequest(InetRequest {
                family: s.family,
                protocol: s.protocol_number,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: s.id.clone(),
            })
            .into(),
        );
        packet.finalize();
        // The crate only builds SOCK_DIAG_BY_FAMILY requests; SOCK_DESTROY takes the same body.
        packet.header.message_type = netlink_packet_sock_diag::constants::SOCK_DESTROY;
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        socket.send(&buf, 0).context("sending SOCK_DESTROY")?;
        let mut reply = vec![0u8; 8192];
        let n = socket
            .recv(&mut &mut reply[..], 0)
            .context("reading the SOCK_DESTROY answer")?;
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&reply[..n])
            .context("parsing the SOCK_DESTROY answer")?;
        match msg.payload {
            NetlinkPayload::Error(e) if e.code.is_some_and(|c| c.get() == -libc::ENOENT) => {}
            NetlinkPayload::Error(e) if let Some(code) = e.code => anyhow::bail!(
                "destroying {} socket {} -> {}: {}",
                s.protocol,
                s.local,
                s.remote,
                std::io::Error::from_raw_os_error(-code.get())
            ),
            _ => destroyed += 1,
        }
    }
    Ok(destroyed)
}

/// Where a socket is held: process and fd number.
#[derive(Debug, Clone, Copy)]
struct Held {
    pid: i32,
    fd: i32,
}

fn unbound(
    cgroup: &Path,
    policy: &Policy,
    netns: &Netns,
) -> anyhow::Result<Vec<(Held, UnboundSocket, DiagSocket)>> {
    let owners = socket_owners(&pids(cgroup));
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let sockets = netns.run(dump_inet_sockets)??;
    let mut found: Vec<(Held, UnboundSocket, DiagSocket)> = sockets
        .into_iter()
        .filter(|s| !conforms(policy, s.bound_ifindex, &s.remote))
        .filter_map(|s| {
            let (pid, command, fd) = owners.get(&u64::from(s.inode))?.clone();
            let remote = if unspecified(s.remote.ip()) && s.remote.port() == 0 {
                "*".to_string()
            } else {
                s.remote.to_string()
            };
            Some((
                Held { pid, fd },
                UnboundSocket {
                    pid,
                    command,
                    protocol: s.protocol,
                    local: s.local.to_string(),
                    remote,
                    bound_ifindex: s.bound_ifindex,
                },
                s,
            ))
        })
        .collect();
    found.sort_by(|a, b| (a.1.pid, &a.1.local).cmp(&(b.1.pid, &b.1.local)));
    found.dedup_by(|a, b| a.1 == b.1);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ifindex: u32, f: u32) -> Policy {
        Policy {
            ifindex,
            flags: f,
            ..Policy::default()
        }
    }

    #[test]
    fn conformance_follows_the_mode() {
        let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
        let peer: std::net::SocketAddr = "192.0.2.1:53".parse().unwrap();
        let strict = policy(7, flags::STRICT);
        assert!(conforms(&strict, 7, &peer));
        assert!(!conforms(&strict, 0, &any), "unbound is an escape");
        assert!(!conforms(&strict, 1, &peer));
        let lo = policy(7, flags::STRICT | flags::ALLOW_LOOPBACK);
        assert!(conforms(&lo, 1, &peer), "pinned to lo");
        assert!(conforms(&lo, 0, &any), "not used yet");
        assert!(
            !conforms(&lo, 0, &peer),
            "connected yet unpinned: predates the binding"
        );
        assert!(!conforms(&lo, 3, &peer));
    }
}
