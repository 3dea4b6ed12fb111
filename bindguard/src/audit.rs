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

use crate::netns::Netns;

/// One socket of the namespace, as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub inode: u32,
    pub protocol: &'static str,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// idiag_if: the socket's bound device, 0 for none.
    pub bound_ifindex: u32,
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
fn socket_owners(pids: &[i32]) -> HashMap<u64, (i32, String)> {
    let mut owners = HashMap::new();
    for &pid in pids {
        let Ok(proc) = procfs::process::Process::new(pid) else {
            continue;
        };
        let command = proc.stat().map(|s| s.comm).unwrap_or_default();
        for fd in proc.fd().into_iter().flatten().flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                owners.entry(inode).or_insert((pid, command.clone()));
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
            receive(&socket, name, &mut out)?;
        }
    }
    Ok(out)
}

fn receive(
    socket: &Socket,
    protocol: &'static str,
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
    let owners = socket_owners(&pids(cgroup));
    if owners.is_empty() {
        return Ok(Vec::new());
    }
    let sockets = netns.run(dump_inet_sockets)??;
    let mut found: Vec<UnboundSocket> = sockets
        .into_iter()
        .filter(|s| !conforms(policy, s.bound_ifindex, &s.remote))
        .filter_map(|s| {
            let (pid, command) = owners.get(&u64::from(s.inode))?.clone();
            let remote = if unspecified(s.remote.ip()) && s.remote.port() == 0 {
                "*".to_string()
            } else {
                s.remote.to_string()
            };
            Some(UnboundSocket {
                pid,
                command,
                protocol: s.protocol,
                local: s.local.to_string(),
                remote,
                bound_ifindex: s.bound_ifindex,
            })
        })
        .collect();
    found.sort_by(|a, b| (a.pid, &a.local).cmp(&(b.pid, &b.local)));
    found.dedup();
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
