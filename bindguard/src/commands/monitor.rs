//! `monitor`: streams every refusal and drop of every binding as it happens.
//!
//! The programs write an [`Event`] to their program set's `events` ring buffer, only on the
//! refusal path; each event names its binding (the cgroup id from the binding's policy). The
//! monitor waits on the ring buffer of every live set at once (tokio, one task per buffer; a
//! binding made by an older bindguard has a buffer of its own), picks up sets and bindings
//! created while it runs, and prints a line (or a JSON object) per event.
//!
//! Each binding may send only so many events (a per-CPU token bucket in the programs, see
//! `bindguard_common::EVENT_BURST`): one binding's refusal flood cannot hide the others'. What
//! a binding's programs did not send is counted in its `events_dropped` counter; once a second
//! the monitor reports the growth of that counter for every binding it has seen events from
//! (a [`Dropped`] record).

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{Map, MapData, RingBuf};
use bindguard_common::{Event, hook};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    binding::{enforcer, netdev},
    error::{printable, printable_path},
    kernel::{
        hooks::Hook,
        pins::{
            self,
            names::{LegacyPin, SetMap},
        },
        progset,
    },
};

/// One event as `monitor --json` prints it (one object per line).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// The binding (cgroup id) whose program refused.
    pub binding: u64,
    /// The cgroup of the task, when the event happened in a task (0 for received packets).
    pub cgroup_id: u64,
    /// Path of that cgroup (or of the binding's cgroup when the task's is unknown).
    #[serde(serialize_with = "crate::binding::cgroup::serialize_lossy_opt")]
    pub cgroup: Option<PathBuf>,
    pub pid: u32,
    pub command: String,
    /// sock_create, setsockopt, bind4, bind6, connect4, connect6, sendmsg4, sendmsg6, egress,
    /// ingress, mptcp, socket_family, file_receive, multicast, mark.
    pub hook: &'static str,
    pub reason: String,
}

/// Events of one binding its programs did not send since the last report, as `monitor --json`
/// prints it: `{"time", "binding", "cgroup", "events_dropped"}`.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub time: String,
    pub binding: u64,
    #[serde(serialize_with = "crate::binding::cgroup::serialize_lossy_opt")]
    pub cgroup: Option<PathBuf>,
    pub events_dropped: u64,
}

/// The `events_dropped` counter of the binding of cgroup `id` (0 when it cannot be read).
fn events_dropped(id: u64) -> u64 {
    enforcer::read_counters(&pins::binding_dir(id)).map_or(0, |c| c.events_dropped)
}

/// The name an event code shows as: the hook's whose program reports it
/// ([`Hook::from_event`]), or the reason's.
fn hook_name(h: u32) -> &'static str {
    if let Some(hook) = Hook::from_event(h) {
        return hook.name();
    }
    match h {
        hook::MPTCP => "mptcp",
        hook::SOCKET_FAMILY => "socket_family",
        hook::FILE_RECEIVE => "file_receive",
        hook::MULTICAST => "multicast",
        hook::MARK => "mark",
        hook::TUN => "tun",
        hook::PTRACE => "ptrace",
        hook::TIOCSTI => "tiocsti",
        hook::DNS_STUB => "dns_stub",
        _ => "unknown",
    }
}

fn option_name(opt: u32) -> String {
    match opt as i32 {
        libc::SO_BINDTODEVICE => "SO_BINDTODEVICE".into(),
        libc::SO_BINDTOIFINDEX => "SO_BINDTOIFINDEX".into(),
        libc::SO_MARK => "SO_MARK".into(),
        libc::SO_PRIORITY => "SO_PRIORITY".into(),
        other => format!("option {other}"),
    }
}

/// [`Event::asked`] of an event from an older build's programs, which did not carry it.
const ASKED_UNKNOWN: [u8; 16] = [0xff; 16];

/// Says why `event` happened, for a binding to `dev` (ifindex `ifindex`).
pub fn reason(event: &Event, dev: &str, ifindex: u32) -> String {
    match event.hook {
        hook::SOCK_CREATE => "socket created in another network namespace: refused (EPERM)".into(),
        hook::SETSOCKOPT => {
            let option = option_name(event.value);
            let number = u32::from_le_bytes([
                event.asked[0],
                event.asked[1],
                event.asked[2],
                event.asked[3],
            ]);
            match event.value as i32 {
                _ if event.asked == ASKED_UNKNOWN => match event.value as i32 {
                    libc::SO_BINDTODEVICE | libc::SO_BINDTOIFINDEX => format!(
                        "setsockopt({option}) asked for another interface than {dev} (ifindex {ifindex}), or none: refused (EPERM); the binding to {dev} holds"
                    ),
                    _ => format!(
                        "setsockopt({option}) asked for another value than the policy's: refused (EPERM); the policy's holds"
                    ),
                },
                libc::SO_BINDTODEVICE => {
                    let asked = crate::binding::netdev::name_from_bytes(&event.asked);
                    let asked = if asked.is_empty() {
                        "no interface".to_string()
                    } else {
                        format!("'{}'", crate::error::quote(&asked))
                    };
                    format!(
                        "setsockopt({option}) asked for {asked}, not {dev} (ifindex {ifindex}): refused (EPERM); the binding to {dev} holds"
                    )
                }
                libc::SO_BINDTOIFINDEX => format!(
                    "setsockopt({option}) asked for ifindex {number}, not {dev} (ifindex {ifindex}): refused (EPERM); the binding to {dev} holds"
                ),
                _ => format!(
                    "setsockopt({option}) asked for {number}, not the policy's value: refused (EPERM); the policy's holds"
                ),
            }
        }
        hook::EGRESS => format!(
            "packet leaving by ifindex {} instead of {dev} (ifindex {ifindex}): dropped",
            event.value
        ),
        hook::INGRESS => format!(
            "packet arriving on ifindex {} instead of {dev} (ifindex {ifindex}): dropped",
            event.value
        ),
        hook::MPTCP => {
            "MPTCP socket refused with EPROTONOSUPPORT (its subflows cannot be bound; TCP works)"
                .into()
        }
        hook::SOCKET_FAMILY => format!(
            "socket() of family {} refused (EPERM); --allow-family allows it",
            event.value
        ),
        hook::FILE_RECEIVE => format!(
            "a family-{} socket made outside the cgroup was refused on receipt (SCM_RIGHTS or pidfd_getfd)",
            event.value
        ),
        hook::MULTICAST => format!(
            "multicast membership change (level {}, option {}) on an interface other than {dev}: refused (EPERM)",
            event.value >> 16,
            event.value & 0xffff
        ),
        hook::MARK => format!(
            "packet with mark {} instead of the policy's: dropped",
            event.value
        ),
        hook::TUN => format!(
            "attaching a tun/tap device ({}) refused (EPERM): its packets would be forwarded outside the binding; --allow-tun allows it",
            if event.value == 2 {
                "TUNSETQUEUE"
            } else {
                "TUNSETIFF"
            }
        ),
        hook::PTRACE => format!(
            "ptrace-level access to pid {} outside the binding refused (EPERM): it would send from outside; --allow-ptrace-out allows it",
            event.value
        ),
        hook::TIOCSTI => format!(
            "ioctl {:#x} refused (EPERM): typing into a terminal drives whatever reads it, outside the binding",
            event.value
        ),
        hook::DNS_STUB => format!(
            "DNS to the local stub (loopback port 53, by {}) refused (EPERM): the local resolver would send the query by its own interface; use --dns to send lookups through {dev}",
            hook_name(event.value)
        ),
        _ if event.value == ifindex => {
            format!(
                "{} to loopback without --allow-loopback: refused (EPERM)",
                hook_name(event.hook)
            )
        }
        _ if event.value == 0 => format!(
            "{}: the socket's binding to {dev} was reset (connect(AF_UNSPEC)?): refused (EPERM)",
            hook_name(event.hook)
        ),
        _ => format!(
            "{}: the socket is bound to ifindex {} instead of {dev}: refused (EPERM)",
            hook_name(event.hook),
            event.value
        ),
    }
}

fn monotonic_now() -> Duration {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// Turns bpf_ktime_get_ns() into wall-clock time.
fn wall_time(ktime_ns: u64) -> SystemTime {
    let age = monotonic_now().saturating_sub(Duration::from_nanos(ktime_ns));
    SystemTime::now() - age
}

/// Where a ring buffer's events come from.
enum Source {
    /// A program set's buffer, shared by all its bindings: each event's binding is looked up.
    Set(std::sync::Arc<progset::Set>),
    /// A binding made by an older bindguard, with a buffer of its own.
    Binding { id: u64, dev: String, ifindex: u32 },
}

struct Ring {
    source: Source,
    ring: RingBuf<MapData>,
}

fn open_ring(path: &Path) -> anyhow::Result<RingBuf<MapData>> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(RingBuf::try_from(Map::from_map_data(data)?)?)
}

fn open_set(dir: &Path) -> anyhow::Result<Ring> {
    Ok(Ring {
        ring: open_ring(&dir.join(SetMap::Events.to_string()))?,
        source: Source::Set(std::sync::Arc::new(progset::Set::open(dir)?)),
    })
}

fn open_legacy(id: u64, dir: &Path) -> anyhow::Result<Ring> {
    let policy = enforcer::read_policy(dir)?;
    Ok(Ring {
        ring: open_ring(&dir.join(LegacyPin::Events.to_string()))?,
        source: Source::Binding {
            id,
            dev: netdev::name_from_bytes(&policy.ifname),
            ifindex: policy.ifindex,
        },
    })
}

/// Drains one ring buffer forever, forwarding events newer than `since`.
async fn watch(r: Ring, since: u64, tx: mpsc::UnboundedSender<(u64, String, u32, Event)>) {
    let Ring { source, ring } = r;
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf.
    let Ok(mut fd) =
        (unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) })
    else {
        return;
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            // An event of an older layout is shorter (no `binding`): the missing tail reads 0.
            let mut event = Event::default();
            let n = item.len().min(std::mem::size_of::<Event>());
            // SAFETY: Event is plain data; at most size_of::<Event>() bytes are copied into it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    item.as_ptr(),
                    (&mut event as *mut Event).cast::<u8>(),
                    n,
                )
            };
            if n < std::mem::size_of::<Event>() {
                // An older build's programs did not say what was asked.
                event.asked = ASKED_UNKNOWN;
            }
            if event.ktime_ns < since {
                continue;
            }
            let (id, dev, ifindex) = match &source {
                Source::Binding { id, dev, ifindex } => (*id, dev.clone(), *ifindex),
                Source::Set(set) => {
                    let id = if event.binding != 0 {
                        event.binding
                    } else {
                        event.cgroup_id
                    };
                    // The policy at the time the event is read: a re-target since the refusal
                    // names the new device.
                    let p = set.read_policy(id).unwrap_or_default();
                    (id, netdev::name_from_bytes(&p.ifname), p.ifindex)
                }
            };
            if tx.send((id, dev, ifindex, event)).is_err() {
                return;
            }
        }
        guard.clear_ready();
    }
}

/// Streams events to `out` until interrupted (SIGINT/SIGTERM) or `duration` passes.
pub fn run(json: bool, duration: Option<Duration>, out: &mut dyn Write) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(stream(json, duration, out))
}

async fn stream(json: bool, duration: Option<Duration>, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = monotonic_now().as_nanos() as u64;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let scan = |watched: &mut HashSet<PathBuf>| -> usize {
        for dir in progset::list() {
            if !watched.contains(&dir)
                && let Ok(r) = open_set(&dir)
            {
                watched.insert(dir);
                tokio::spawn(watch(r, since, tx.clone()));
            }
        }
        for (id, dir) in pins::list() {
            if !watched.contains(&dir)
                && enforcer::legacy_layout(&dir)
                && let Ok(r) = open_legacy(id, &dir)
            {
                watched.insert(dir);
                tokio::spawn(watch(r, since, tx.clone()));
            }
        }
        watched.len()
    };
    let n = scan(&mut watched);
    eprintln!(
        "bindguard monitor: watching {n} event buffer(s) (one per program set); new ones are picked up as they appear"
    );
    // Cgroups are named by file handle as events name them (one lookup per new id, not a
    // walk of every cgroup: a flood of events from unknown ids stays cheap).
    let mut namer = crate::binding::cgroup::Namer::new();
    let mut paths: std::collections::HashMap<u64, Option<std::path::PathBuf>> =
        std::collections::HashMap::new();
    // events_dropped of every binding when the monitor started (drops before it are not
    // reported), then as last reported, for the bindings events came from.
    let mut dropped: std::collections::HashMap<u64, u64> = pins::list()
        .into_iter()
        .map(|(id, _)| (id, events_dropped(id)))
        .collect();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            Some((binding, dev, ifindex, event)) = rx.recv() => {
                seen.insert(binding);
                let cgroup_id = if event.cgroup_id != 0 { event.cgroup_id } else { binding };
                let cgroup = paths
                    .entry(cgroup_id)
                    .or_insert_with(|| namer.path(cgroup_id))
                    .clone();
                let record = Record {
                    time: humantime::format_rfc3339_millis(wall_time(event.ktime_ns)).to_string(),
                    binding,
                    cgroup_id: event.cgroup_id,
                    cgroup,
                    pid: event.pid,
                    command: netdev::name_from_bytes(&event.comm),
                    hook: hook_name(event.hook),
                    reason: reason(&event, &dev, ifindex),
                };
                let cg = record.cgroup.as_deref().map_or("?".into(), printable_path);
                let text = format!(
                    "{} cgroup={} pid={} comm={} hook={} {}",
                    record.time,
                    cg,
                    record.pid,
                    printable(&record.command),
                    record.hook,
                    record.reason
                );
                emit(out, json, &record, &text)?;
            }
            _ = rescan.tick() => {
                scan(&mut watched);
                for &binding in &seen {
                    let now = events_dropped(binding);
                    let last = dropped.entry(binding).or_insert(0);
                    if now <= *last {
                        continue;
                    }
                    let record = Dropped {
                        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                        binding,
                        cgroup: paths.entry(binding).or_insert_with(|| namer.path(binding)).clone(),
                        events_dropped: now - *last,
                    };
                    *last = now;
                    let cg = record.cgroup.as_deref().map_or("?".into(), printable_path);
                    let text = format!(
                        "{} cgroup={cg} dropped {} event(s) of this binding (over its rate limit, or the ring buffer was full)",
                        record.time, record.events_dropped
                    );
                    emit(out, json, &record, &text)?;
                }
            }
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    Ok(())
}

/// One line: `record` as JSON, or `text`.
fn emit(
    out: &mut dyn Write,
    json: bool,
    record: &impl Serialize,
    text: &str,
) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(record)?)?;
    } else {
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(hook: u32, value: u32) -> Event {
        Event {
            hook,
            value,
            ..Event::default()
        }
    }

    fn asked(hook: u32, value: u32, asked: &[u8]) -> Event {
        let mut e = event(hook, value);
        e.asked[..asked.len()].copy_from_slice(asked);
        e
    }

    /// `monitor --json`'s `hook` for every event code (docs/status-and-monitor.md): the
    /// hook's own name where a program reports it, the reason's otherwise.
    #[test]
    fn every_event_code_has_its_documented_name() {
        let names = [
            "unknown",
            "sock_create",
            "setsockopt",
            "bind4",
            "bind6",
            "connect4",
            "connect6",
            "sendmsg4",
            "sendmsg6",
            "egress",
            "ingress",
            "mptcp",
            "socket_family",
            "file_receive",
            "multicast",
            "mark",
            "tun",
            "ptrace",
            "tiocsti",
            "dns_stub",
            "unknown",
        ];
        for (code, name) in names.into_iter().enumerate() {
            assert_eq!(hook_name(code as u32), name, "code {code}");
        }
    }

    /// A refused rebind names what was asked and what holds (issue 31: "asked for another
    /// interface than vB" did not say which).
    #[test]
    fn a_refused_rebind_names_what_was_asked_and_what_holds() {
        let r = reason(
            &asked(hook::SETSOCKOPT, libc::SO_BINDTODEVICE as u32, b"vA"),
            "vB",
            7,
        );
        assert!(r.contains("asked for 'vA', not vB (ifindex 7)"), "{r}");
        assert!(
            r.ends_with("refused (EPERM); the binding to vB holds"),
            "{r}"
        );
        let r = reason(
            &asked(hook::SETSOCKOPT, libc::SO_BINDTODEVICE as u32, b""),
            "vB",
            7,
        );
        assert!(r.contains("asked for no interface, not vB"), "{r}");
        let r = reason(
            &asked(
                hook::SETSOCKOPT,
                libc::SO_BINDTOIFINDEX as u32,
                &5u32.to_le_bytes(),
            ),
            "vB",
            7,
        );
        assert!(r.contains("asked for ifindex 5, not vB (ifindex 7)"), "{r}");
        let r = reason(
            &asked(hook::SETSOCKOPT, libc::SO_MARK as u32, &9u32.to_le_bytes()),
            "vB",
            7,
        );
        assert!(
            r.starts_with("setsockopt(SO_MARK) asked for 9, not the policy's"),
            "{r}"
        );
        assert!(!r.contains("vB"), "a mark is not the binding: {r}");
    }

    /// An older build's event does not carry what was asked: say what holds, nothing more.
    #[test]
    fn an_older_event_names_what_holds() {
        let mut e = event(hook::SETSOCKOPT, libc::SO_BINDTODEVICE as u32);
        e.asked = ASKED_UNKNOWN;
        let r = reason(&e, "vB", 7);
        assert!(
            r.contains("another interface than vB (ifindex 7), or none"),
            "{r}"
        );
    }
}
