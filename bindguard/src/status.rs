//! `status`: every binding, read back from its pins, with what is wrong with it.

use std::path::{Path, PathBuf};

use bindguard_common::{Counters, Policy, flags};
use serde::Serialize;

use crate::{enforcer, link, netdev, netns, pins, progset};

/// Version of the JSON document `status --json` prints; bumped on incompatible changes.
pub const JSON_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub bindings: Vec<Binding>,
}

#[derive(Debug, Serialize)]
pub struct Binding {
    /// Path of the cgroup, or null if it was deleted.
    pub cgroup: Option<PathBuf>,
    pub cgroup_id: u64,
    pub pins: PathBuf,
    pub ifname: String,
    pub ifindex: u32,
    pub netns: NetnsInfo,
    pub mark: Option<u32>,
    pub priority: Option<u32>,
    pub mode: String,
    pub allow_loopback: bool,
    /// Socket families allowed beyond unix, netlink, inet and inet6 (`--allow-family`).
    pub allow_families: Vec<String>,
    /// Whether strict mode's BPF LSM programs are attached.
    pub lsm: bool,
    pub links: Vec<LinkInfo>,
    pub counters: Counters,
    /// Empty when the binding is healthy.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct NetnsInfo {
    pub cookie: u64,
    pub inode: u64,
    /// A path that names the namespace now ("current" for bindguard's own), if one was found.
    pub path: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LinkInfo {
    pub hook: String,
    pub link_id: Option<u32>,
    pub program_id: Option<u32>,
}

#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One of: cgroup-gone, interface-missing, interface-renamed, netns-gone, link-missing,
    /// pins-unreadable, programs-outdated (the links run another build's program set, or
    /// programs an older bindguard loaded for this binding alone), lsm-unavailable,
    /// stray-programs, waiting-for-interface (a closed binding).
    pub kind: &'static str,
    pub message: String,
}

/// Reads every binding. Read-only: never mounts bpffs or changes a pin.
pub fn collect() -> Report {
    let mut bindings = Vec::new();
    if pins::bpffs_mounted() {
        let mount = crate::cgroup::cgroup2_mount()
            .ok()
            .and_then(|m| std::fs::File::open(m).ok());
        // Bindings often share a namespace and an interface; each is looked up (a /proc scan,
        // a thread in the namespace) once.
        let mut cache = Cache {
            abandoned: pins::abandoned(),
            ..Cache::default()
        };
        // What the kernel says about each binding (its links, its policy and counters, its
        // cgroup's path: ~35 system calls, most of them opening link pins) is read by a few
        // threads at once; the rest is computed from that.
        let list = pins::list();
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(list.len().div_ceil(64).max(1));
        let chunk = list.len().div_ceil(workers).max(1);
        let raws: Vec<Raw> = std::thread::scope(|scope| {
            let handles: Vec<_> = list
                .chunks(chunk)
                .map(|part| {
                    let mount = mount.as_ref();
                    scope.spawn(move || {
                        part.iter()
                            .map(|(id, dir)| Raw::read(*id, dir, mount))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for raw in raws {
            bindings.push(read_binding(raw, &mut cache));
        }
        // An attach or detach killed half-way on a cgroup with no binding (any more): its
        // programs still run, so it is listed too.
        let bound: std::collections::HashSet<u64> = bindings.iter().map(|b| b.cgroup_id).collect();
        for (id, dir) in cache.abandoned.clone() {
            if !bound.contains(&id) && attached_links(&dir, id) > 0 {
                let raw = Raw::read(id, &dir, mount.as_ref());
                bindings.push(read_binding(raw, &mut cache));
            }
        }
    }
    Report {
        version: JSON_VERSION,
        bindings,
    }
}

/// What `collect` looks up once for all bindings.
#[derive(Default)]
struct Cache {
    namespaces: std::collections::HashMap<u64, Option<netns::Netns>>,
    names: std::collections::HashMap<(u64, u32), anyhow::Result<Option<String>>>,
    abandoned: Vec<(u64, PathBuf)>,
}

/// What the kernel holds for one binding.
struct Raw {
    cgroup_id: u64,
    dir: PathBuf,
    cgroup: Option<PathBuf>,
    pinned: Vec<(String, link::LinkState)>,
    policy: anyhow::Result<Policy>,
    counters: Counters,
    set_hash: Option<u64>,
}

impl Raw {
    fn read(cgroup_id: u64, dir: &Path, mount: Option<&std::fs::File>) -> Self {
        // One directory listing and one info query per link; the maps are the set's.
        let (pinned, legacy) = progset::read_binding_dir(dir);
        let (policy, counters, set_hash) = policy_and_counters(cgroup_id, dir, &pinned, legacy);
        Self {
            cgroup_id,
            dir: dir.to_path_buf(),
            cgroup: mount.and_then(|m| crate::cgroup::path_of_id(m, cgroup_id)),
            pinned,
            policy,
            counters,
            set_hash,
        }
    }
}

/// The policy and counters of one binding: by cgroup id from the set its links run (one map
/// lookup each, through the set's map fds opened once per process), or from the binding's own
/// pins when an older bindguard made it.
fn policy_and_counters(
    cgroup_id: u64,
    dir: &Path,
    links: &[(String, link::LinkState)],
    legacy: bool,
) -> (anyhow::Result<Policy>, Counters, Option<u64>) {
    if legacy {
        let policy = enforcer::read_policy(dir);
        return (
            policy,
            enforcer::read_counters(dir).unwrap_or_default(),
            None,
        );
    }
    let Some(set) = links
        .iter()
        .find_map(|(_, s)| progset::set_of_program(s.program_id))
    else {
        return (
            Err(anyhow::anyhow!(
                "no link in {} runs a pinned program set",
                dir.display()
            )),
            Counters::default(),
            None,
        );
    };
    let policy = set
        .read_policy(cgroup_id)
        .map_err(|e| anyhow::anyhow!("{e} (cgroup {cgroup_id} in {})", set.dir.display()));
    let counters = set.read_counters(cgroup_id).unwrap_or_default();
    (policy, counters, Some(set.hash))
}

fn read_binding(raw: Raw, cache: &mut Cache) -> Binding {
    let Raw {
        cgroup_id,
        dir,
        cgroup,
        pinned,
        policy,
        counters,
        set_hash,
    } = raw;
    let dir = dir.as_path();
    let mut problems = Vec::new();
    let policy = policy.unwrap_or_else(|e| {
        problems.push(Problem {
            kind: "pins-unreadable",
            message: format!("policy cannot be read ({e:#})"),
        });
        Policy::default()
    });
    let mode = enforcer::mode_of(&policy);
    let mut links = Vec::new();
    let mut detached = false;
    for hook in mode.hooks(policy.has(flags::LSM)) {
        let path = dir.join(pins::link_name(hook.name));
        let state = pinned
            .iter()
            .find(|(n, _)| n == hook.name)
            .map(|(_, s)| *s)
            .ok_or("not pinned");
        match state {
            Ok(s) => {
                detached |= s.cgroup_id.is_none();
                links.push(LinkInfo {
                    hook: hook.name.into(),
                    link_id: Some(s.link_id),
                    program_id: Some(s.program_id),
                });
            }
            Err(e) => {
                problems.push(Problem {
                    kind: "link-missing",
                    message: format!(
                        "{} cannot be opened ({e}): this hook is not enforced; re-attach",
                        path.display()
                    ),
                });
                links.push(LinkInfo {
                    hook: hook.name.into(),
                    link_id: None,
                    program_id: None,
                });
            }
        }
    }
    if detached || cgroup.is_none() {
        problems.push(Problem {
            kind: "cgroup-gone",
            message: format!(
                "cgroup {cgroup_id} was deleted; `bindguard detach --cgroup <its old path>` removes these pins"
            ),
        });
    }
    let stray: usize = cache
        .abandoned
        .iter()
        .filter(|(id, _)| *id == cgroup_id)
        .map(|(_, d)| attached_links(d, cgroup_id))
        .sum();
    // An orphaned directory listed on its own counts its links as stray, not as the binding's.
    let stray = if dir
        .file_name()
        .is_some_and(|n| n.to_string_lossy().parse::<u64>().is_err())
    {
        stray.max(1)
    } else {
        stray
    };
    if stray > 0 {
        problems.push(Problem {
            kind: "stray-programs",
            message: format!(
                "{stray} program(s) left by an interrupted attach or detach are attached besides this binding's own; the next attach or detach removes them"
            ),
        });
    }
    if set_hash != Some(enforcer::object_hash()) && problems.is_empty() {
        problems.push(Problem {
            kind: "programs-outdated",
            message: "the binding runs programs from another bindguard build; attach again to replace them".into(),
        });
    }
    if mode == enforcer::Mode::Strict && !policy.has(flags::LSM) {
        problems.push(Problem {
            kind: "lsm-unavailable",
            message: crate::lsm::UNAVAILABLE.into(),
        });
    }
    let ifname = netdev::name_from_bytes(&policy.ifname);
    let ns = cache
        .namespaces
        .entry(policy.netns_ino)
        .or_insert_with(|| netns::find_by_ino(policy.netns_ino));
    match &*ns {
        None => problems.push(Problem {
            kind: "netns-gone",
            message: format!(
                "network namespace (inode {}) no longer exists: sockets are refused (fail-closed)",
                policy.netns_ino
            ),
        }),
        Some(_) if policy.ifindex == 0 && !ifname.is_empty() => problems.push(Problem {
            kind: "waiting-for-interface",
            message: format!(
                "interface {ifname} does not exist: every new socket is refused (fail-closed) until it appears and the binding is re-targeted"
            ),
        }),
        Some(ns) => match cache
            .names
            .entry((policy.netns_ino, policy.ifindex))
            .or_insert_with(|| netdev::name_of(policy.ifindex, ns))
        {
            Ok(None) => problems.push(Problem {
                kind: "interface-missing",
                message: format!(
                    "interface {ifname} (ifindex {}) is gone: sends fail with ENODEV (fail-closed); re-attach to use a new interface",
                    policy.ifindex
                ),
            }),
            Ok(Some(now)) if *now != ifname => problems.push(Problem {
                kind: "interface-renamed",
                message: format!(
                    "ifindex {} is now named {now} (was {ifname}); sockets still use ifindex {}",
                    policy.ifindex, policy.ifindex
                ),
            }),
            _ => {}
        },
    }
    Binding {
        cgroup,
        cgroup_id,
        pins: dir.to_path_buf(),
        ifname,
        ifindex: policy.ifindex,
        netns: NetnsInfo {
            cookie: policy.netns_cookie,
            inode: policy.netns_ino,
            path: ns.as_ref().map(|n| {
                n.path
                    .as_ref()
                    .map_or_else(|| "current".to_string(), |p| p.display().to_string())
            }),
        },
        mark: policy.has(flags::SET_MARK).then_some(policy.mark),
        priority: policy.has(flags::SET_PRIORITY).then_some(policy.priority),
        mode: mode.as_str().into(),
        allow_loopback: policy.has(flags::ALLOW_LOOPBACK),
        allow_families: enforcer::family_names(policy.families),
        lsm: policy.has(flags::LSM),
        links,
        counters,
        problems,
    }
}

/// How many links pinned in `dir` are attached to cgroup `cgroup_id`.
fn attached_links(dir: &Path, cgroup_id: u64) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| link::pinned_state(&e.path()).is_ok_and(|s| s.cgroup_id == Some(cgroup_id)))
        .count()
}

/// The table `status` prints for people: one row per binding.
pub fn render_table(report: &Report) -> String {
    use std::fmt::Write as _;
    if report.bindings.is_empty() {
        return "no bindings\n".into();
    }
    let mut rows = vec![
        [
            "CGROUP", "ID", "DEV", "IFINDEX", "NETNS", "MODE", "MARK", "PRIO", "LINKS", "BOUND",
            "REFUSED", "DROPPED", "PROBLEMS",
        ]
        .map(String::from),
    ];
    for b in &report.bindings {
        let opt = |v: Option<u32>| v.map_or("-".into(), |v| v.to_string());
        let up = b.links.iter().filter(|l| l.link_id.is_some()).count();
        let links = format!("{up}/{}", b.links.len());
        let refused =
            b.counters.sockets_refused_netns + b.counters.sockopt_refused + b.counters.addr_refused;
        let problems = if b.problems.is_empty() {
            "ok".to_string()
        } else {
            b.problems
                .iter()
                .map(|p| p.kind)
                .collect::<Vec<_>>()
                .join(",")
        };
        rows.push([
            b.cgroup
                .as_ref()
                .map_or("(deleted)".into(), |p| p.display().to_string()),
            b.cgroup_id.to_string(),
            b.ifname.clone(),
            b.ifindex.to_string(),
            b.netns.path.clone().unwrap_or_else(|| "(gone)".into()),
            b.mode.clone(),
            opt(b.mark),
            opt(b.priority),
            links,
            b.counters.sockets_bound.to_string(),
            refused.to_string(),
            (b.counters.egress_dropped + b.counters.ingress_dropped).to_string(),
            problems,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for b in &report.bindings {
        let links: Vec<String> = b
            .links
            .iter()
            .map(|l| match (l.link_id, l.program_id) {
                (Some(link), Some(prog)) => format!("{}={link}/{prog}", l.hook),
                _ => format!("{}=MISSING", l.hook),
            })
            .collect();
        let _ = writeln!(
            out,
            "cgroup {} links (link/program): {}",
            b.cgroup_id,
            links.join(" ")
        );
        for p in &b.problems {
            let _ = writeln!(out, "cgroup {}: {}", b.cgroup_id, p.message);
        }
    }
    out
}
