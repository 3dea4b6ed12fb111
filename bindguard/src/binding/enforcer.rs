//! Loading, filling, attaching and pinning one binding; changing and removing it.

use std::{
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    maps::{Array, Map, MapData, PerCpuArray},
    util::KernelVersion,
};
use bindguard_common::{Counters, Policy};

use crate::{
    Error,
    binding::{
        cgroup::Cgroup,
        netdev::Interface,
        policy::{Maker, Options, policy_for},
    },
    kernel::{
        hooks::{Hook, object_hash},
        pins::{self, names::LegacyPin},
        progset,
    },
};

/// What `attach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// A new binding was pinned at this directory.
    Created(PathBuf),
    /// The existing binding's policy was rewritten in place.
    Updated(PathBuf),
    /// The existing binding was replaced by a new set of programs (mode or namespace changed).
    Replaced(PathBuf),
}

/// What [`attach`] did, and with which programs.
pub(crate) struct Attachment {
    pub attached: Attached,
    /// The program set the binding's links run.
    pub set: progset::Set,
    /// What this call's load of the set left out (empty unless this call loaded it).
    pub loaded: Vec<progset::LeftOut>,
}

/// Finishes what killed commands left half-done: bindings being made or removed, then program
/// sets being loaded.
fn sweep_abandoned(lock: &pins::Lock) {
    pins::sweep_abandoned(lock);
    progset::sweep_abandoned(lock);
}

/// Refuses early, naming the capability, instead of failing deep inside bpf(2).
pub fn require_privileges(action: &'static str) -> Result<(), Error> {
    use caps::{CapSet, Capability};
    let eff = caps::read(None, CapSet::Effective).unwrap_or_default();
    let ok = eff.contains(&Capability::CAP_SYS_ADMIN)
        || (eff.contains(&Capability::CAP_BPF) && eff.contains(&Capability::CAP_NET_ADMIN));
    if ok {
        Ok(())
    } else {
        Err(Error::MissingPrivilege {
            action,
            caps: "CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN)",
        })
    }
}

/// Strict mode promises that no socket of the cgroup leaves by another interface; below a
/// delegation boundary its processes can walk out of the cgroup (escape row 19), so a strict
/// binding there is refused unless the caller accepts it (`--allow-delegated`). Bind mode
/// makes no such promise: its callers warn.
fn refuse_delegated(cgroup: &Cgroup, opts: &Options) -> Result<(), Error> {
    if opts.mode != crate::binding::policy::Mode::Strict || opts.allow_delegated {
        return Ok(());
    }
    match crate::binding::cgroup::delegation(&cgroup.path, &mut Default::default()) {
        Some(d) => Err(Error::Delegated {
            cgroup: cgroup.path.clone(),
            boundary: d.boundary,
            writer: d.writer.to_string(),
        }),
        None => Ok(()),
    }
}

/// Bindings are bpf_links (never legacy attachments, which unprivileged processes can detach
/// on 6.5+): probed, not read from the version.
fn require_bpf_link() -> Result<(), Error> {
    if crate::kernel::probe::have_cgroup_links() {
        return Ok(());
    }
    Err(Error::KernelTooOld {
        release: KernelVersion::current().map_or_else(|_| "unknown".into(), |v| v.to_string()),
    })
}

/// Binds every new socket of `cgroup` to `iface`. Re-attaching updates the binding without a
/// moment in which new sockets are unbound.
///
/// The programs come from the build's pinned set ([`progset`]); only the first attach
/// after an install or upgrade loads (and verifies) them. A binding is the set's programs
/// linked to the cgroup plus the cgroup's policy in the set's storage, written *before* any
/// enforcing program is linked ([`progset::Set::hold`]), so no socket ever meets a
/// zero policy.
///
/// Callers go through [`crate::binding::bind`], the one door, which adds what the binding
/// asks for beyond the links (the sockets already held) and reports.
pub(crate) fn attach(
    cgroup: &Cgroup,
    iface: &Interface,
    opts: &Options,
) -> anyhow::Result<Attachment> {
    opts.validate()?;
    crate::binding::cgroup::refuse_root(cgroup)?;
    refuse_delegated(cgroup, opts)?;
    require_privileges("attach")?;
    require_bpf_link()?;
    pins::ensure_bpffs()?;
    let lock = pins::lock()?;
    sweep_abandoned(&lock);
    let (set, loaded) = progset::current(&lock)?;
    let forced_off = crate::kernel::lsm::forced_unavailable();
    let hooks = opts
        .mode
        .hooks(|h| set.has(h) && !(h.is_lsm() && forced_off));
    let lsm = hooks.iter().any(|h| h.is_lsm());
    let policy = policy_for(iface, opts, cgroup.id, lsm);
    let dir = pins::binding_dir(cgroup.id);
    let cgroup_fd = cgroup.open_dir()?;
    let cgroup_fd = cgroup_fd.as_fd();
    let on = if dir.exists() {
        progset::set_of_binding(&dir)
    } else {
        None
    };
    if on.as_ref().is_some_and(|on| on.hash == set.hash) {
        // The binding already runs this set's programs: the policy is rewritten in place (one
        // map write: each new socket sees the old policy or the new one); links the mode no
        // longer uses are dropped first and missing ones added after, so an interrupted
        // command leaves at worst a missing link (`status`: link-missing), never an unlisted
        // extra one. The same program cannot be linked twice to one cgroup, so this path
        // never makes a second set of links.
        let have = progset::binding_links(&dir);
        let mut changed = false;
        for (name, _) in &have {
            if Hook::from_name(name).is_none_or(|h| !hooks.contains(&h)) {
                pins::unpin(&dir.join(pins::names::link(name)), &lock)?;
                changed = true;
            }
        }
        set.write_policy(cgroup.id, &policy)?;
        for &hook in &hooks {
            let linked = have
                .iter()
                .any(|(n, s)| n == hook.name() && s.cgroup_id == Some(cgroup.id));
            if linked {
                continue;
            }
            let pin = dir.join(pins::names::link(hook.name()));
            let _ = pins::unpin(&pin, &lock);
            let link = set
                .link(hook, cgroup_fd)
                .with_context(|| format!("cgroup {}", cgroup.path.display()))?;
            crate::kernel::link::pin(link.as_fd(), &pin)
                .map_err(|source| crate::kernel::Error::Pin { path: pin, source })?;
            changed = true;
        }
        set.add_user(cgroup.id)?;
        let attached = if changed {
            Attached::Replaced(dir)
        } else {
            Attached::Updated(dir)
        };
        return Ok(Attachment {
            attached,
            set,
            loaded,
        });
    }
    // A new binding, or one running other programs (another build's set, or per-binding
    // programs of an older bindguard): make before break. The new links are pinned in a
    // staging directory and swapped in; the old programs go only after, so every socket meets
    // at least one binding (the later-linked programs run last and win).
    let staging = pins::Staging::new(cgroup.id, &lock)?;
    {
        let _hold = set
            .hold(cgroup_fd)
            .with_context(|| format!("linking to cgroup {}", cgroup.path.display()))?;
        set.write_policy(cgroup.id, &policy)?;
        for &hook in &hooks {
            let link = set
                .link(hook, cgroup_fd)
                .with_context(|| format!("cgroup {}", cgroup.path.display()))?;
            let path = staging.dir.join(pins::names::link(hook.name()));
            crate::kernel::link::pin(link.as_fd(), &path)
                .map_err(|source| crate::kernel::Error::Pin { path, source })?;
        }
    }
    set.add_user(cgroup.id)?;
    let attached = if dir.exists() {
        let old = staging.exchange()?;
        pins::remove_dir(&old, &lock)?;
        if let Some(on) = on {
            release(&on, cgroup.id, &lock);
        }
        Attached::Replaced(dir)
    } else {
        Attached::Created(staging.publish()?)
    };
    Ok(Attachment {
        attached,
        set,
        loaded,
    })
}

/// The binding of cgroup `id` no longer runs `old`'s programs: the set is unpinned when no
/// binding uses it any more, unless it is the running build's own (kept so the next attach
/// loads nothing).
fn release(old: &progset::Set, id: u64, lock: &pins::Lock) {
    old.remove_user(id, lock);
    if old.hash != object_hash() && !old.in_use(lock) {
        if let Ok(set) = progset::Set::open(&old.dir) {
            let _ = set.remove(lock);
        }
        progset::forget();
    }
}

/// The running build's program set, if pinned.
pub fn current_set() -> anyhow::Result<progset::Set> {
    progset::Set::open(&progset::root().join(progset::dir_name(object_hash())))
}

/// The policy of cgroup `cgroup_id` in the running build's program set: what [`attach`] just
/// wrote (cheaper than [`read_policy`], which first finds the set a binding's links run).
pub fn current_policy(cgroup_id: u64) -> anyhow::Result<Policy> {
    let dir = progset::root().join(progset::dir_name(object_hash()));
    let set = progset::Set::open(&dir)?;
    set.read_policy(cgroup_id).with_context(|| {
        format!(
            "reading the policy of cgroup {cgroup_id} in {}",
            dir.display()
        )
    })
}

/// Records in the policy of the binding of `cgroup_id` how many sockets its last socket pass
/// could not end ([`Policy::unreached`]).
pub fn set_unreached(cgroup_id: u64, n: u32) -> anyhow::Result<()> {
    let dir = pins::binding_dir(cgroup_id);
    let set = progset::set_of_binding(&dir)
        .with_context(|| format!("no link in {} runs a pinned program set", dir.display()))?;
    let mut policy = set.read_policy(cgroup_id)?;
    if policy.unreached != n {
        policy.unreached = n;
        set.write_policy(cgroup_id, &policy)?;
    }
    Ok(())
}

/// Whether every link of `hooks` is pinned in `dir` and attached to cgroup `cgroup_id`.
pub fn links_complete(dir: &Path, cgroup_id: u64, hooks: &[Hook]) -> bool {
    hooks.iter().all(|h| {
        crate::kernel::link::pinned_state(&dir.join(pins::names::link(h.name())))
            .is_ok_and(|s| s.cgroup_id == Some(cgroup_id))
    })
}

fn pinned_map(path: &Path) -> anyhow::Result<Map> {
    let data =
        MapData::from_pin(path).with_context(|| format!("opening pin {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("reading map {}", path.display()))
}

/// Whether `dir` is a binding made by a bindguard that loaded programs per binding.
pub fn legacy_layout(dir: &Path) -> bool {
    dir.join(LegacyPin::Policy.to_string()).exists()
}

fn cgroup_id_of(dir: &Path) -> anyhow::Result<u64> {
    pins::cgroup_id_of(dir).with_context(|| format!("{} is not a binding directory", dir.display()))
}

/// The policy of the binding pinned at `dir` (a binding directory): read from the program set
/// its links run, by cgroup id.
pub fn read_policy(dir: &Path) -> anyhow::Result<Policy> {
    if legacy_layout(dir) {
        let map: Array<_, Policy> =
            Array::try_from(pinned_map(&dir.join(LegacyPin::Policy.to_string()))?)?;
        return map.get(&0, 0).context("reading the policy");
    }
    let id = cgroup_id_of(dir)?;
    let set = progset::set_of_binding(dir)
        .with_context(|| format!("no link in {} runs a pinned program set", dir.display()))?;
    set.read_policy(id)
        .with_context(|| format!("reading the policy of cgroup {id} in {}", set.dir.display()))
}

/// Who made the binding pinned at `dir` (None: no readable binding there).
pub fn maker(dir: &Path) -> Option<Maker> {
    read_policy(dir).ok().map(|p| Maker::of(&p))
}

/// The hooks the binding pinned at `dir`, whose policy is `policy`, should have linked: its
/// mode's, of those its program set holds (what the kernel could load when it was made),
/// the LSM ones only where the binding was made with them.
pub fn expected_hooks(dir: &Path, policy: &Policy) -> Vec<Hook> {
    hooks_of_binding(policy, progset::set_of_binding(dir).as_deref())
}

/// [`expected_hooks`] with the binding's set already found (None: a binding of programs
/// loaded per binding, or one whose set is gone: every hook of its mode).
pub fn hooks_of_binding(policy: &Policy, set: Option<&progset::Set>) -> Vec<Hook> {
    let lsm = policy.has(bindguard_common::flags::LSM);
    crate::binding::policy::mode_of(policy)
        .hooks(|h| set.is_none_or(|s| s.has(h)) && (!h.is_lsm() || lsm))
}

/// The binding's counters, summed over CPUs.
pub fn read_counters(dir: &Path) -> anyhow::Result<Counters> {
    if legacy_layout(dir) {
        let map: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(pinned_map(&dir.join(LegacyPin::Stats.to_string()))?)?;
        let per_cpu = map.get(&0, 0).context("reading the counters")?;
        return Ok(per_cpu.iter().fold(Counters::default(), |mut sum, c| {
            sum += *c;
            sum
        }));
    }
    let id = cgroup_id_of(dir)?;
    let set = progset::set_of_binding(dir)
        .with_context(|| format!("no link in {} runs a pinned program set", dir.display()))?;
    set.read_counters(id).with_context(|| {
        format!(
            "reading the counters of cgroup {id} in {}",
            set.dir.display()
        )
    })
}

/// What `detach` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detached {
    /// The binding of the cgroup was removed: the cgroup (absolute, symlinks resolved; `self`
    /// named) and the pin directory that held it.
    Removed { cgroup: PathBuf, pins: PathBuf },
    /// The cgroup no longer exists; this many bindings of deleted cgroups were cleaned up.
    Stale(usize),
}

/// Removes the binding of the cgroup at `arg`. If that cgroup no longer exists, removes the
/// leftovers of bindings whose cgroups were deleted (the kernel already detached them).
pub fn detach(arg: &Path) -> anyhow::Result<Detached> {
    require_privileges("detach")?;
    let cgroup = match crate::binding::cgroup::resolve(arg) {
        Ok(c) => c,
        Err(e) if Error::is_cgroup_missing(&e) => {
            let removed = remove_stale()?;
            return if removed > 0 {
                Ok(Detached::Stale(removed))
            } else {
                Err(e)
            };
        }
        Err(e) => return Err(e),
    };
    let dir = pins::binding_dir(cgroup.id);
    if !pins::bpffs_mounted() {
        return Err(Error::NotBound { path: cgroup.path }.into());
    }
    let lock = pins::lock()?;
    // Finishes an earlier attach or detach that was killed half-way.
    let interrupted = pins::abandoned_locked(&lock)
        .iter()
        .any(|(id, _)| *id == cgroup.id);
    sweep_abandoned(&lock);
    if !dir.exists() {
        if interrupted {
            return Ok(Detached::Removed {
                cgroup: cgroup.path,
                pins: dir,
            });
        }
        return Err(Error::NotBound { path: cgroup.path }.into());
    }
    let on = progset::set_of_binding(&dir);
    pins::remove_binding(&dir, &lock)?;
    if let Some(on) = on {
        release(&on, cgroup.id, &lock);
    }
    Ok(Detached::Removed {
        cgroup: cgroup.path,
        pins: dir,
    })
}

/// Removes every binding whose cgroup is gone; returns how many.
///
/// The kernel detaches a removed cgroup's links asynchronously (cgroup_bpf_release runs from a
/// workqueue, ~10 ms here), so a binding whose cgroup directory has just disappeared is given
/// up to 2 s to be detached. Only the kernel's word (detached links) removes pins. The daemon
/// takes the same path one binding at a time ([`release_stale`]) and waits with timers.
pub fn remove_stale() -> anyhow::Result<usize> {
    remove_stale_within(STALE_GRACE)
}

/// How long [`remove_stale`] gives a just-deleted cgroup's links to be detached.
pub const STALE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// [`remove_stale`], giving a just-deleted cgroup's links `grace` to be detached. With no
/// grace it removes what the kernel has already released, without waiting: what a
/// container's start can afford.
pub fn remove_stale_within(grace: std::time::Duration) -> anyhow::Result<usize> {
    if !pins::bpffs_mounted() {
        return Ok(0);
    }
    remove_stale_locked(grace, &pins::lock()?)
}

/// [`remove_stale_within`] for a caller that already holds the pins lock (taking it again
/// would wait for itself).
pub fn remove_stale_locked(grace: std::time::Duration, lock: &pins::Lock) -> anyhow::Result<usize> {
    sweep_abandoned(lock);
    let mut cgroups = crate::binding::cgroup::Namer::new();
    let deadline = std::time::Instant::now() + grace;
    let mut removed = 0;
    // Old sets whose last binding went with its cgroup go too (after the loop, below).
    for (id, _) in pins::list() {
        // A binding whose cgroup exists stays, decided without opening its links (poststop
        // runs this on every container stop, with thousands of bindings on the node).
        if cgroups.exists(id) {
            continue;
        }
        loop {
            match release_stale(id, lock)? {
                Stale::Removed => removed += 1,
                Stale::Attached if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Stale::Attached | Stale::NoPins => {}
            }
            break;
        }
    }
    if removed > 0 {
        progset::remove_unused_old_sets(lock);
    }
    Ok(removed)
}

/// What [`release_stale`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The kernel had detached every link: the pins are removed.
    Removed,
    /// Some link is still attached (the cgroup exists, or the kernel has not detached it yet):
    /// nothing was touched.
    Attached,
    /// No binding is pinned for that cgroup.
    NoPins,
}

/// Removes the pins of the binding of cgroup `id` if the kernel has auto-detached its links
/// (its cgroup was removed), and its entry in the program sets' users; never waits. The
/// caller sweeps old sets that lost their last user ([`progset::remove_unused_old_sets`]).
pub fn release_stale(id: u64, lock: &pins::Lock) -> anyhow::Result<Stale> {
    let dir = pins::binding_dir(id);
    if !dir.exists() {
        return Ok(Stale::NoPins);
    }
    if !cgroup_gone(&dir) {
        return Ok(Stale::Attached);
    }
    pins::remove_dir(&dir, lock)?;
    progset::forget_user(id, lock);
    Ok(Stale::Removed)
}

/// A binding's cgroup is gone when the kernel has auto-detached its links.
pub fn cgroup_gone(dir: &Path) -> bool {
    let links: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| pins::names::parse_link(n).is_some())
        })
        .collect();
    !links.is_empty()
        && links
            .iter()
            .all(|p| crate::kernel::link::pinned_state(p).is_ok_and(|s| s.cgroup_id.is_none()))
}
