//! The existing-socket audit: sockets of the cgroup that are not bound to the binding's
//! interface. Such sockets were created before the attach, before the process moved in, or
//! received over SCM_RIGHTS — each is an escape a binding made later cannot close.
//!
//! Sockets are found the two ways the kernel knows them ([`survey`]):
//! - NETLINK_SOCK_DIAG filtered by cgroup (`INET_DIAG_BC_CGROUP_COND`, 5.9+): every TCP/UDP
//!   socket *created* in the cgroup or below, whoever holds it now, with its cookie and its
//!   bound device (idiag_if);
//! - the fd table of every task (`/proc/PID/task/TID/fd`: a thread that called
//!   `unshare(CLONE_FILES)` has its own, and a process whose leader exited has none left
//!   under `/proc/PID/fd`), for sockets created elsewhere and brought in.
//!
//! A task whose fds cannot be read (another uid's without CAP_DAC_READ_SEARCH) is reported as
//! [`Blind`], never skipped silently.

use std::{
    collections::HashMap,
    fs,
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

/// Where a socket is held: the thread whose fd table holds it, and the fd number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Thread-group id (the process).
    pub pid: i32,
    /// The thread whose fd table was read (a table can be one thread's own).
    pub tid: i32,
    pub fd: i32,
}

/// A task of the cgroup whose fds could not be read: the sockets it holds are unknown.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Blind {
    pub pid: i32,
    pub tid: i32,
    pub uid: u32,
    pub command: String,
    pub error: String,
}

impl std::fmt::Display for Blind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read the fds of pid {} (thread {}, uid {}): {}",
            self.pid, self.tid, self.uid, self.error
        )?;
        if self.error.contains("denied") {
            write!(
                f,
                " (another uid's /proc/PID/fd needs CAP_DAC_READ_SEARCH, and CAP_SYS_PTRACE)"
            )?;
        }
        Ok(())
    }
}

/// The fd tables of every task of a cgroup subtree.
#[derive(Debug, Default)]
pub struct Tasks {
    /// socket inode -> every (thread, fd) holding it, in the order found.
    pub holders: HashMap<u64, Vec<Holder>>,
    /// pid -> command name.
    pub commands: HashMap<i32, String>,
    pub blind: Vec<Blind>,
}

/// `cgroup` and every cgroup below it.
pub fn subtree(cgroup: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![cgroup.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        out.push(dir);
    }
    out
}

fn ids_in(file: &Path) -> Vec<i32> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .collect()
}

/// Every process in `cgroup` and its descendants.
pub fn pids(cgroup: &Path) -> Vec<i32> {
    subtree(cgroup)
        .iter()
        .flat_map(|d| ids_in(&d.join("cgroup.procs")))
        .collect()
}

/// Every thread of the cgroup subtree as (pid, tid): the threads of every process in
/// `cgroup.procs` and every thread in `cgroup.threads` (which still lists the threads of a
/// process whose leader has exited; `cgroup.procs` may not).
fn threads(cgroup: &Path) -> Vec<(i32, i32)> {
    let mut out = std::collections::BTreeSet::new();
    let mut seen = std::collections::HashSet::new();
    for dir in subtree(cgroup) {
        for pid in ids_in(&dir.join("cgroup.procs")) {
            for tid in fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            {
                seen.insert(tid);
                out.insert((pid, tid));
            }
        }
        for tid in ids_in(&dir.join("cgroup.threads")) {
            if seen.insert(tid)
                && let Some(pid) = tgid_of(tid)
            {
                out.insert((pid, tid));
            }
        }
    }
    out.into_iter().collect()
}

fn tgid_of(tid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether threads `a` and `b` share one fd table (kcmp KCMP_FILES; None if it cannot tell).
fn same_files(a: i32, b: i32) -> Option<bool> {
    const KCMP_FILES: libc::c_long = 2;
    // SAFETY: kcmp compares kernel pointers of two tasks; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILES, 0, 0) };
    (r >= 0).then_some(r == 0)
}

/// Reads the fd table of every task of `cgroup` and its descendants. Threads sharing a table
/// are read once; a task that exited meanwhile is skipped; a table that cannot be read is
/// recorded in [`Tasks::blind`].
pub fn tasks(cgroup: &Path) -> Tasks {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Tasks::default();
    // Per process: the threads whose tables were read.
    let mut read: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, tid) in threads(cgroup) {
        let reps = read.entry(pid).or_default();
        if reps.iter().any(|&r| same_files(r, tid) == Some(true)) {
            continue;
        }
        let task = PathBuf::from(format!("/proc/{pid}/task/{tid}"));
        let command = fs::read_to_string(task.join("comm"))
            .map(|c| c.trim_end_matches('\n').to_string())
            .unwrap_or_default();
        out.commands.entry(pid).or_insert_with(|| command.clone());
        let blind = |e: std::io::Error| Blind {
            pid,
            tid,
            uid: fs::metadata(&task).map(|m| m.uid()).unwrap_or(u32::MAX),
            command: command.clone(),
            error: e.to_string(),
        };
        let entries = match fs::read_dir(task.join("fd")) {
            Ok(entries) => entries,
            Err(e) if gone(&e) => continue,
            Err(e) => {
                out.blind.push(blind(e));
                continue;
            }
        };
        reps.push(tid);
        let mut unreadable = None;
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            match fs::read_link(entry.path()) {
                Ok(target) => {
                    if let Some(inode) = target
                        .to_str()
                        .and_then(|t| t.strip_prefix("socket:["))
                        .and_then(|t| t.strip_suffix(']'))
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        out.holders
                            .entry(inode)
                            .or_default()
                            .push(Holder { pid, tid, fd });
                    }
                }
                // Closed meanwhile: skip it and go on.
                Err(e) if gone(&e) => {}
                Err(e) => unreadable = Some(e),
            }
        }
        if let Some(e) = unreadable {
            out.blind.push(blind(e));
        }
    }
    out
}

fn gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

/// INET_DIAG_REQ_BYTECODE: the request attribute carrying a filter program.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
/// inet_diag.h, 5.9+: true when the socket was created in the cgroup with this id.
const INET_DIAG_BC_CGROUP_COND: u8 = 13;
/// How many cgroup ids one request carries (each costs 16 bytes of a u16-sized attribute).
const CGROUPS_PER_REQUEST: usize = 1024;

/// An inet_diag filter program true for a socket created in any of `ids` (as `ss` builds
/// "A or B": each condition falls through to a jump to the end on success, or to the next
/// condition on failure; the last one fails past the end).
fn cgroup_bytecode(ids: &[u64]) -> Vec<u8> {
    let op = |code: u8, yes: u8, no: u16| {
        let mut b = vec![code, yes];
        b.extend_from_slice(&no.to_ne_bytes());
        b
    };
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        // This condition (12 bytes), then, unless it is the last, a jump (4 bytes).
        out.extend(op(INET_DIAG_BC_CGROUP_COND, 12, 16));
        out.extend_from_slice(&id.to_ne_bytes());
        let rest = (ids.len() - i - 1) * 16;
        if rest > 0 {
            // Reached on success: skip every remaining condition (the JMP always takes `no`).
            out.extend(op(INET_DIAG_BC_JMP, 4, rest as u16));
        }
    }
    out
}

/// Dumps the TCP and UDP sockets (IPv4 and IPv6) of the calling thread's namespace, only those
/// `bytecode` (an inet_diag filter program) accepts when given.
///
/// netlink-packet-sock-diag 0.5 builds the request header but has no request attributes, so
/// the filter (INET_DIAG_REQ_BYTECODE) is appended to its bytes here.
fn dump(bytecode: Option<&[u8]>) -> anyhow::Result<Vec<DiagSocket>> {
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
            if let Some(bc) = bytecode {
                let len = u16::try_from(4 + bc.len()).context("sock_diag filter too long")?;
                buf.extend_from_slice(&len.to_ne_bytes());
                buf.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
                buf.extend_from_slice(bc);
                let total = buf.len() as u32;
                buf[..4].copy_from_slice(&total.to_ne_bytes());
            }
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

/// A socket of the cgroup as the kernel knows it, and where its holders keep it.
#[derive(Debug, Clone)]
pub struct Found {
    pub socket: DiagSocket,
    /// Every (thread, fd) holding it that could be read; empty when only sock_diag knows it
    /// (held by a task whose fds could not be read, or by a process outside the cgroup).
    pub holders: Vec<Holder>,
    /// The first holder's pid and command (0 and "" when none is known).
    pub pid: i32,
    pub command: String,
}

impl Found {
    /// The socket as `verify` and `attach` show it.
    pub fn describe(&self) -> UnboundSocket {
        let s = &self.socket;
        let remote = if s.remote.ip().is_unspecified() && s.remote.port() == 0 {
            "*".to_string()
        } else {
            s.remote.to_string()
        };
        UnboundSocket {
            pid: self.pid,
            command: self.command.clone(),
            protocol: s.protocol,
            local: s.local.to_string(),
            remote,
            bound_ifindex: s.bound_ifindex,
        }
    }
}

/// Every TCP/UDP socket of `cgroup` and its descendants in `netns` (see the module comment),
/// and the tasks whose fds could not be read.
#[derive(Debug, Default)]
pub struct Survey {
    pub sockets: Vec<Found>,
    pub blind: Vec<Blind>,
}

/// Finds the sockets of `cgroup`'s subtree in `netns`: those created there (sock_diag by
/// cgroup) and those its tasks hold (every task's fd table).
pub fn survey(cgroup: &Path, netns: &Netns) -> anyhow::Result<Survey> {
    use std::os::unix::fs::MetadataExt as _;
    let tasks = tasks(cgroup);
    let ids: Vec<u64> = subtree(cgroup)
        .iter()
        .filter_map(|d| fs::metadata(d).ok().map(|m| m.ino()))
        .collect();
    let held: std::collections::HashSet<u64> = tasks.holders.keys().copied().collect();
    let sockets = netns.run(move || -> anyhow::Result<Vec<DiagSocket>> {
        let mut out = Vec::new();
        let by_cgroup = ids
            .chunks(CGROUPS_PER_REQUEST)
            .map(|chunk| dump(Some(&cgroup_bytecode(chunk))))
            .collect::<anyhow::Result<Vec<_>>>();
        let mut seen = std::collections::HashSet::new();
        // A kernel without the cgroup condition (before 5.9) refuses the filter: the fd
        // tables alone then say which sockets are the cgroup's.
        if let Ok(found) = by_cgroup {
            for s in found.into_iter().flatten() {
                if s.inode != 0 && seen.insert(u64::from(s.inode)) {
                    out.push(s);
                }
            }
        }
        if held.iter().any(|i| !seen.contains(i)) {
            for s in dump(None)? {
                if held.contains(&u64::from(s.inode)) && seen.insert(u64::from(s.inode)) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    })??;
    let mut found: Vec<Found> = sockets
        .into_iter()
        .map(|socket| {
            let holders = tasks
                .holders
                .get(&u64::from(socket.inode))
                .cloned()
                .unwrap_or_default();
            let pid = holders.first().map_or(0, |h| h.pid);
            let command = tasks.commands.get(&pid).cloned().unwrap_or_default();
            Found {
                socket,
                holders,
                pid,
                command,
            }
        })
        .collect();
    found.sort_by(|a, b| {
        (a.pid, a.socket.protocol, a.socket.local).cmp(&(b.pid, b.socket.protocol, b.socket.local))
    });
    Ok(Survey {
        sockets: found,
        blind: tasks.blind,
    })
}

/// The sockets of `cgroup`'s processes (in `netns`) that do not obey `policy`, and the tasks
/// whose sockets could not be seen.
pub fn unbound_sockets(
    cgroup: &Path,
    policy: &Policy,
    netns: &Netns,
) -> anyhow::Result<(Vec<UnboundSocket>, Vec<Blind>)> {
    let survey = survey(cgroup, netns)?;
    Ok((
        survey
            .sockets
            .iter()
            .filter(|f| !conforms(policy, f.socket.bound_ifindex, &f.socket.remote))
            .map(Found::describe)
            .collect(),
        survey.blind,
    ))
}

/// SOCK_DESTROY (as `ss -K`, CONFIG_INET_DIAG_DESTROY) of each socket, in the calling
/// thread's network namespace; returns what happened to each, in order: Ok(true) destroyed,
/// Ok(false) gone meanwhile, Err the kernel's refusal (the others are still tried).
pub fn destroy(sockets: &[DiagSocket]) -> anyhow::Result<Vec<std::io::Result<bool>>> {
    use netlink_packet_core::NLM_F_ACK;
    let mut socket =
        Socket::new(NETLINK_SOCK_DIAG).context("opening a NETLINK_SOCK_DIAG socket")?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
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
        out.push(match msg.payload {
            NetlinkPayload::Error(e) if e.code.is_some_and(|c| c.get() == -libc::ENOENT) => {
                Ok(false)
            }
            NetlinkPayload::Error(e) if let Some(code) = e.code => {
                Err(std::io::Error::from_raw_os_error(-code.get()))
            }
            _ => Ok(true),
        });
    }
    Ok(out)
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

    /// Walks a filter program as inet_diag_bc_run does, for a socket of cgroup `id`.
    fn run(bc: &[u8], id: u64) -> bool {
        let mut at = 0usize;
        let mut len = bc.len() as isize;
        while len > 0 {
            let (code, yes, no) = (
                bc[at],
                bc[at + 1] as usize,
                u16::from_ne_bytes([bc[at + 2], bc[at + 3]]) as usize,
            );
            let hit = match code {
                INET_DIAG_BC_CGROUP_COND => {
                    u64::from_ne_bytes(bc[at + 4..at + 12].try_into().unwrap()) == id
                }
                INET_DIAG_BC_JMP => false,
                other => panic!("op {other}"),
            };
            let step = if hit { yes } else { no };
            at += step;
            len -= step as isize;
        }
        len == 0
    }

    #[test]
    fn the_cgroup_filter_accepts_exactly_its_cgroups() {
        for ids in [vec![7u64], vec![7, 8, 9]] {
            let bc = cgroup_bytecode(&ids);
            assert_eq!(bc.len(), ids.len() * 16 - 4);
            for id in &ids {
                assert!(run(&bc, *id), "{id} of {ids:?}");
            }
            assert!(!run(&bc, 1), "1 of {ids:?}");
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
