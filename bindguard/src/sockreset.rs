//! `on_recreate = "reset-sockets"`: after an interface was re-created (it has a new ifindex),
//! the cgroup's TCP/UDP sockets still bound to the old one only ever fail with ENODEV — a
//! connected client hangs until its own timeout. SOCK_DESTROY (as `ss -K`,
//! CONFIG_INET_DIAG_DESTROY) aborts them, so programs see the error at once and reconnect;
//! their new sockets are bound to the new interface.

use std::collections::HashSet;

use anyhow::Context as _;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::{
    audit::{self, DiagSocket},
    netns::Netns,
};

/// SOCK_DESTROY: the sock_diag message type of `ss -K` (linux/sock_diag.h).
const SOCK_DESTROY: u16 = 21;

/// Socket inodes held by the processes of `cgroup` and its descendants.
fn held_inodes(cgroup: &std::path::Path) -> HashSet<u64> {
    let mut out = HashSet::new();
    for pid in audit::pids(cgroup) {
        let Ok(proc) = procfs::process::Process::new(pid) else {
            continue;
        };
        for fd in proc.fd().into_iter().flatten().flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                out.insert(inode);
            }
        }
    }
    out
}

/// Destroys the TCP/UDP sockets of `cgroup`'s processes (in `netns`) that are bound to a
/// device other than `keep_ifindex`; returns how many. Unbound sockets (ifindex 0) are left
/// alone: they were never the binding's.
pub fn reset_sockets(
    cgroup: &std::path::Path,
    keep_ifindex: u32,
    netns: &Netns,
) -> anyhow::Result<usize> {
    let owned = held_inodes(cgroup);
    if owned.is_empty() {
        return Ok(0);
    }
    netns.run(move || -> anyhow::Result<usize> {
        let stale: Vec<DiagSocket> = audit::dump_inet_sockets()?
            .into_iter()
            .filter(|s| s.bound_ifindex != 0 && s.bound_ifindex != keep_ifindex)
            .filter(|s| owned.contains(&u64::from(s.inode)))
            .collect();
        let mut socket =
            Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let mut n = 0;
        for s in &stale {
            match destroy(&socket, s) {
                Ok(()) => n += 1,
                // Gone meanwhile (closed, or a TCP socket in TIME_WAIT): nothing to reset.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("SOCK_DESTROY of {} {} -> {}", s.protocol, s.local, s.remote)
                    });
                }
            }
        }
        Ok(n)
    })?
}

fn destroy(socket: &Socket, s: &DiagSocket) -> std::io::Result<()> {
    let v6 = s.local.is_ipv6();
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: if v6 { AF_INET6 } else { AF_INET },
            protocol: if s.protocol.starts_with("tcp") {
                IPPROTO_TCP
            } else {
                IPPROTO_UDP
            },
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: s.local.port(),
                destination_port: s.remote.port(),
                source_address: s.local.ip(),
                destination_address: s.remote.ip(),
                interface_id: s.bound_ifindex,
                // all 0xff: "no cookie", match by addresses and device
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    // The request body of SOCK_DESTROY is the same inet_diag_req_v2 as a lookup's.
    buf[4..6].copy_from_slice(&SOCK_DESTROY.to_ne_bytes());
    socket.send(&buf, 0)?;
    let mut reply = vec![0u8; 8192];
    let n = socket.recv(&mut &mut reply[..], 0)?;
    let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&reply[..n])
        .map_err(|e| std::io::Error::other(format!("parsing the SOCK_DESTROY reply: {e}")))?;
    match msg.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
        },
        _ => Ok(()),
    }
}
