//! Desired state (the config) against what the kernel holds (pins and policies): a plan of
//! attach / retarget / replace / detach steps, and running it. A client of the enforcer, as the
//! CLI is; the kernel stays the only runtime state.

use std::{
    collections::HashMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use bindguard_common::{ABI_VERSION, Policy};

use crate::{
    Error,
    binding::{
        cgroup::{self, Cgroup},
        enforcer,
        netdev::{self, Interface},
        netns::Netns,
        policy::Maker,
    },
    kernel::pins,
    service::config::{Binding, Config},
};

/// What one step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No binding yet: create one (mkdir the cgroup first when `create = true`).
    Attach,
    /// Same programs, other policy: one map write, no unbound moment.
    Retarget,
    /// New programs beside the old ones, then the old removed (outdated programs, changed
    /// mode or namespace, missing or detached links, unreadable pins).
    Replace,
    /// The kernel already enforces exactly this.
    Unchanged,
    /// A binding from a config that the config no longer names (`--prune`).
    Detach,
    /// The cgroup does not exist and the config does not create it.
    WaitCgroup,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Attach => "+ attach",
            Action::Retarget => "~ retarget",
            Action::Replace => "~ replace",
            Action::Unchanged => "= unchanged",
            Action::Detach => "- detach",
            Action::WaitCgroup => "? waiting",
        }
    }

    /// Whether running the step changes the kernel.
    pub fn changes(self) -> bool {
        matches!(
            self,
            Action::Attach | Action::Retarget | Action::Replace | Action::Detach
        )
    }
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Step {
    pub action: Action,
    pub cgroup: PathBuf,
    /// None while the cgroup does not exist.
    pub cgroup_id: Option<u64>,
    /// Index of the config binding (None for Detach).
    pub binding: Option<usize>,
    /// The interface as resolved now (ifindex 0: closed, waiting for the interface).
    pub iface: Option<Interface>,
    /// Why, for people.
    pub why: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<11} {}", self.action.symbol(), self.cgroup.display())?;
        if let Some(i) = &self.iface {
            write!(f, " -> {}", describe(i))?;
        }
        if !self.why.is_empty() {
            write!(f, " ({})", self.why)?;
        }
        Ok(())
    }
}

/// `eth3 (ifindex 4)` or `eth3 (waiting-for-interface)`.
pub fn describe(i: &Interface) -> String {
    if i.ifindex == 0 {
        format!("{} (waiting-for-interface)", i.name)
    } else {
        format!("{} (ifindex {})", i.name, i.ifindex)
    }
}

/// Opens each network namespace the config names once.
#[derive(Default)]
pub struct Namespaces {
    open: HashMap<Option<PathBuf>, (Netns, u64)>,
    /// For one plan (interfaces do not change under it): each (namespace, name) resolved once
    /// (resolving enters the namespace on a thread of its own). None in the daemon, which
    /// follows interfaces by their events.
    interfaces: Option<HashMap<(Option<PathBuf>, String), Interface>>,
}

impl Namespaces {
    /// The namespace and its cookie.
    pub fn get(&mut self, path: Option<&Path>) -> anyhow::Result<&(Netns, u64)> {
        let key = path.map(Path::to_path_buf);
        if !self.open.contains_key(&key) {
            let ns = match path {
                Some(p) => Netns::open(p)?,
                None => Netns::current()?,
            };
            let cookie = ns.cookie()?;
            self.open.insert(key.clone(), (ns, cookie));
        }
        Ok(&self.open[&key])
    }

    /// Namespaces for one plan: interfaces are resolved once each.
    pub fn for_plan() -> Self {
        Self {
            interfaces: Some(HashMap::new()),
            ..Self::default()
        }
    }

    /// Resolves each interface once from now on (`true`), or every time again (`false`): for
    /// a pass over every binding, during which an interface that changes is seen by the
    /// link event that follows.
    pub fn cache_interfaces(&mut self, on: bool) {
        self.interfaces = on.then(HashMap::new);
    }

    /// Forgets a namespace (its path now names another one, or none).
    pub fn forget(&mut self, path: Option<&Path>) {
        self.open.remove(&path.map(Path::to_path_buf));
    }
}

/// Whether `b` names a network namespace path that does not exist (yet, or any more).
pub fn netns_missing(b: &Binding) -> bool {
    b.netns.as_ref().is_some_and(|p| !p.exists())
}

/// The interface `b` wants, resolved now: closed (ifindex 0) while it does not exist, and
/// closed in no namespace at all (cookie 0: every socket refused) while its network namespace
/// does not exist — a binding is never left open for want of its namespace.
pub fn desired_interface(b: &Binding, namespaces: &mut Namespaces) -> anyhow::Result<Interface> {
    if netns_missing(b) {
        namespaces.forget(b.netns.as_deref());
        return Ok(netdev::closed(&b.dev, 0, 0));
    }
    let key = (b.netns.clone(), b.dev.clone());
    if let Some(known) = namespaces.interfaces.as_ref().and_then(|m| m.get(&key)) {
        return Ok(known.clone());
    }
    let (ns, _) = namespaces.get(b.netns.as_deref())?;
    let iface = netdev::resolve_or_closed(&b.dev, ns)?;
    if let Some(m) = namespaces.interfaces.as_mut() {
        m.insert(key, iface.clone());
    }
    Ok(iface)
}

/// Whether every link of a binding is pinned and attached to its cgroup.
pub fn links_healthy(dir: &Path, policy: &Policy, cgroup_id: u64) -> bool {
    enforcer::links_complete(dir, cgroup_id, &enforcer::expected_hooks(dir, policy))
}

/// Compares one configured binding with the kernel.
pub fn plan_binding(
    index: usize,
    b: &Binding,
    namespaces: &mut Namespaces,
) -> anyhow::Result<Step> {
    let iface = desired_interface(b, namespaces)?;
    let mut step = Step {
        action: Action::Attach,
        cgroup: b.cgroup.clone(),
        cgroup_id: None,
        binding: Some(index),
        iface: Some(iface.clone()),
        why: String::new(),
    };
    let cg = match cgroup::resolve(&b.cgroup) {
        Ok(cg) => cg,
        Err(e) if Error::is_cgroup_missing(&e) => {
            if b.create {
                step.why = "creating the cgroup".into();
            } else {
                step.action = Action::WaitCgroup;
                step.iface = None;
                step.why = "cgroup does not exist; `create = true` makes it, and the daemon binds it when it appears".into();
            }
            return Ok(step);
        }
        Err(e) => return Err(e),
    };
    step.cgroup_id = Some(cg.id);
    (step.action, step.why) = compare(&cg, &iface, b);
    if iface.netns_cookie == 0
        && let Some(p) = &b.netns
    {
        step.why = format!("network namespace {} does not exist: closed", p.display());
    }
    Ok(step)
}

/// The rank of the build whose program set the binding in `dir` runs, if it is newer than this
/// build's (see [`progset::Rank`]): such a binding is left alone, so that two daemons of
/// different builds converge on the newer one's programs. Logged once per cgroup and build.
fn newer_build(dir: &std::path::Path, cgroup_id: u64) -> Option<crate::kernel::progset::Rank> {
    use crate::kernel::progset::{self, Rank};
    let rank = progset::rank_of_binding(cgroup_id)?;
    if rank <= Rank::own() {
        return None;
    }
    static LOGGED: std::sync::Mutex<Vec<(std::path::PathBuf, u64)>> =
        std::sync::Mutex::new(Vec::new());
    let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
    let key = (dir.to_path_buf(), rank.object_hash);
    if !logged.contains(&key) {
        logged.push(key);
        tracing::warn!(
            "{} runs the programs of a newer bindguard build ({rank}); this build ({}) leaves it to that one",
            dir.display(),
            Rank::own()
        );
    }
    Some(rank)
}

fn left_to(newer: crate::kernel::progset::Rank) -> String {
    format!("runs the programs of a newer bindguard build ({newer}): left to it")
}

/// How the policy the kernel holds stands against the one wanted. The rules [`compare`] and
/// the daemon's link events share: said once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The kernel holds the wanted policy (`unreached`, the last socket pass's result, aside:
    /// it is not something the config asks for).
    None,
    /// Same programs, mode and namespace; another interface or other options: one map write.
    Retarget,
    /// Only a new set of programs gives the wanted policy.
    Replace(Outdated),
}

/// Why a binding's programs must be replaced rather than its policy rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outdated {
    /// Another build's programs (or another policy layout).
    Programs,
    /// Strict and bind mode attach different programs.
    Mode,
    /// The programs check the namespace's cookie.
    Namespace,
}

impl Outdated {
    pub fn as_str(self) -> &'static str {
        match self {
            Outdated::Programs => "programs outdated",
            Outdated::Mode => "mode changed",
            Outdated::Namespace => "network namespace changed",
        }
    }
}

/// `have` (the kernel's) against `want` ([`policy_for`](crate::binding::policy::policy_for)
/// of the config). Pure: reads nothing.
pub fn drift(have: &Policy, want: &Policy) -> Drift {
    use crate::binding::policy::mode_of;
    if have.abi != ABI_VERSION || have.object_hash != want.object_hash {
        return Drift::Replace(Outdated::Programs);
    }
    if mode_of(have) != mode_of(want) {
        return Drift::Replace(Outdated::Mode);
    }
    if have.netns_cookie != want.netns_cookie {
        return Drift::Replace(Outdated::Namespace);
    }
    if (Policy {
        unreached: 0,
        ..*have
    }) == *want
    {
        return Drift::None;
    }
    Drift::Retarget
}

/// What the kernel holds for `cg` against what `b` wants, with `iface` resolved.
pub fn compare(cg: &Cgroup, iface: &Interface, b: &Binding) -> (Action, String) {
    let dir = pins::binding_dir(cg.id);
    if !pins::bpffs_mounted() || !dir.exists() {
        return (Action::Attach, String::new());
    }
    let Ok(have) = enforcer::read_policy(&dir) else {
        // A newer build's set may have a map layout this build cannot read.
        if let Some(newer) = newer_build(&dir, cg.id) {
            return (Action::Unchanged, left_to(newer));
        }
        return (Action::Replace, "pins unreadable".into());
    };
    // Whether the BPF LSM programs are part of the binding is the kernel's answer, not the
    // config's: compare with the same.
    let lsm = have.has(bindguard_common::flags::LSM);
    let want = crate::binding::policy::policy_for(iface, &b.options, cg.id, lsm);
    let drift = drift(&have, &want);
    if let Drift::Replace(why) = drift {
        if why == Outdated::Programs
            && let Some(newer) = newer_build(&dir, cg.id)
        {
            return (Action::Unchanged, left_to(newer));
        }
        return (Action::Replace, why.as_str().into());
    }
    if !links_healthy(&dir, &have, cg.id) {
        return (Action::Replace, "links missing: repairing".into());
    }
    if drift == Drift::None {
        return (Action::Unchanged, String::new());
    }
    let was = netdev::name_from_bytes(&have.ifname);
    let why = if have.ifindex != want.ifindex || was != iface.name {
        let old = Interface {
            name: was,
            ifindex: have.ifindex,
            ..iface.clone()
        };
        format!("was {}", describe(&old))
    } else {
        "options changed".into()
    };
    (Action::Retarget, why)
}

/// The plan for the whole config; with `prune`, also the detach of every binding made from a
/// config whose cgroup the config no longer names.
pub fn plan(config: &Config, prune: bool) -> anyhow::Result<Vec<Step>> {
    let mut namespaces = Namespaces::for_plan();
    let mut steps = Vec::new();
    for (i, b) in config.bindings.iter().enumerate() {
        let step = plan_binding(i, b, &mut namespaces)
            .with_context(|| format!("binding at {}", b.origin()))?;
        steps.push(step);
    }
    if prune {
        steps.extend(prunable(config, &steps));
    }
    Ok(steps)
}

/// Bindings with the FROM_CONFIG flag whose cgroup no configured binding names.
fn prunable(config: &Config, steps: &[Step]) -> Vec<Step> {
    if !pins::bpffs_mounted() {
        return Vec::new();
    }
    let wanted: std::collections::HashSet<u64> = steps.iter().filter_map(|s| s.cgroup_id).collect();
    // Each candidate's cgroup is named by file handle (no walk of every cgroup).
    let mut namer = cgroup::Namer::new();
    let configured: std::collections::HashSet<&Path> =
        config.bindings.iter().map(|b| b.cgroup.as_path()).collect();
    pins::list()
        .into_iter()
        .filter(|(id, _)| !wanted.contains(id))
        .filter_map(|(id, dir)| {
            if enforcer::maker(&dir) != Some(Maker::Config) {
                return None;
            }
            let path = namer.path(id)?;
            if configured.contains(path.as_path()) {
                return None;
            }
            Some(Step {
                action: Action::Detach,
                cgroup: path,
                cgroup_id: Some(id),
                binding: None,
                iface: None,
                why: "no longer in the config".into(),
            })
        })
        .collect()
}

/// Runs one step; returns what it did, for the log.
pub fn run_step(step: &Step, config: &Config) -> anyhow::Result<()> {
    match step.action {
        Action::Unchanged | Action::WaitCgroup => Ok(()),
        Action::Detach => {
            enforcer::detach(&step.cgroup)
                .with_context(|| format!("detaching {}", step.cgroup.display()))?;
            Ok(())
        }
        Action::Attach | Action::Retarget | Action::Replace => {
            let b = &config.bindings[step.binding.expect("a configured binding")];
            let iface = step.iface.as_ref().expect("a resolved interface");
            if step.cgroup_id.is_none() && b.create {
                fs::create_dir_all(&b.cgroup)
                    .with_context(|| format!("creating cgroup {}", b.cgroup.display()))?;
            }
            let cg = cgroup::resolve(&b.cgroup)?;
            // The door also repairs a binding missing links (make-before-break). What the
            // socket pass could not end is an error, logged and shown by `status`
            // (sockets-unreached); the binding stays.
            crate::binding::bind(&cg, iface, &b.options, crate::binding::SocketPass::Now)
                .and_then(|bound| bound.unreached())
                .with_context(|| format!("binding cgroup {} to {}", cg.path.display(), b.dev))?;
            Ok(())
        }
    }
}

/// What `apply` did: the steps, each with its error if it failed.
pub struct Outcome {
    pub steps: Vec<(Step, Option<anyhow::Error>)>,
}

impl Outcome {
    /// 0 when every step succeeded and no cgroup is waiting; otherwise the exit code of the
    /// first failure (as attach's), or 1 for a cgroup that does not exist.
    pub fn exit_code(&self) -> i32 {
        for (step, err) in &self.steps {
            if let Some(e) = err {
                return crate::error::exit_code(e);
            }
            if step.action == Action::WaitCgroup {
                return 1;
            }
        }
        0
    }
}

/// What the plan alone says `apply` will end with, before anything runs: None when no step is
/// known to fail; otherwise the exit code `apply` would give ([`Outcome::exit_code`] of the
/// plan with no step failed) and one line saying why. `apply --dry-run` exits with it.
pub fn foreseen_failure(steps: &[Step]) -> Option<(i32, String)> {
    let planned = Outcome {
        steps: steps.iter().map(|s| (s.clone(), None)).collect(),
    };
    let code = planned.exit_code();
    if code == 0 {
        return None;
    }
    let missing: Vec<String> = steps
        .iter()
        .filter(|s| s.action == Action::WaitCgroup)
        .map(|s| s.cgroup.display().to_string())
        .collect();
    let why = match missing.as_slice() {
        [one] => format!("cgroup {one} does not exist and its binding has no `create = true`"),
        many => format!(
            "cgroups {} do not exist and their bindings have no `create = true`",
            many.join(", ")
        ),
    };
    Some((code, format!("apply would exit {code}: {why}")))
}

/// Runs every step of `steps`, going on after a failure so one bad binding does not leave the
/// others unbound.
pub fn execute(steps: Vec<Step>, config: &Config) -> Outcome {
    let steps = steps
        .into_iter()
        .map(|s| {
            let err = run_step(&s, config).err();
            (s, err)
        })
        .collect();
    Outcome { steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: Action, cgroup: &str) -> Step {
        Step {
            action,
            cgroup: cgroup.into(),
            cgroup_id: None,
            binding: Some(0),
            iface: None,
            why: String::new(),
        }
    }

    fn policy(ifindex: u32, mode: crate::binding::policy::Mode) -> Policy {
        let iface = Interface {
            name: "eth3".into(),
            ifindex,
            netns_cookie: 4096,
            netns_ino: 4026531840,
        };
        let opts = crate::binding::policy::Options {
            mode,
            ..Default::default()
        };
        crate::binding::policy::policy_for(&iface, &opts, 77, false)
    }

    /// The rules `compare` and the daemon's link events share, one per branch.
    #[test]
    fn drift_says_unchanged_retarget_or_replace_and_why() {
        use crate::binding::policy::Mode::{Bind, Strict};
        let want = policy(4, Strict);
        assert_eq!(drift(&want, &want), Drift::None);
        // the last socket pass's result is not something the config asks for
        let unreached = Policy {
            unreached: 2,
            ..want
        };
        assert_eq!(drift(&unreached, &want), Drift::None);
        assert_eq!(drift(&policy(9, Strict), &want), Drift::Retarget);
        assert_eq!(drift(&policy(0, Strict), &want), Drift::Retarget);
        let mark = Policy { mark: 1, ..want };
        assert_eq!(drift(&mark, &want), Drift::Retarget);
        let other_build = Policy {
            object_hash: want.object_hash ^ 1,
            ..want
        };
        assert_eq!(
            drift(&other_build, &want),
            Drift::Replace(Outdated::Programs)
        );
        let other_abi = Policy {
            abi: ABI_VERSION + 1,
            ..want
        };
        assert_eq!(drift(&other_abi, &want), Drift::Replace(Outdated::Programs));
        // outdated programs win over every other difference
        let both = Policy {
            ifindex: 9,
            ..other_build
        };
        assert_eq!(drift(&both, &want), Drift::Replace(Outdated::Programs));
        assert_eq!(
            drift(&policy(4, Bind), &want),
            Drift::Replace(Outdated::Mode)
        );
        let other_ns = Policy {
            netns_cookie: 1,
            ..want
        };
        assert_eq!(drift(&other_ns, &want), Drift::Replace(Outdated::Namespace));
        assert_eq!(Outdated::Mode.as_str(), "mode changed");
    }

    /// `apply --dry-run` exits as `apply` would when the plan already shows the failure.
    #[test]
    fn a_missing_cgroup_without_create_is_foreseen_as_apply_s_exit_1() {
        assert_eq!(foreseen_failure(&[]), None);
        assert_eq!(
            foreseen_failure(&[
                step(Action::Attach, "/sys/fs/cgroup/a"),
                step(Action::Unchanged, "/sys/fs/cgroup/b"),
            ]),
            None
        );
        let steps = [
            step(Action::Attach, "/sys/fs/cgroup/a"),
            step(Action::WaitCgroup, "/sys/fs/cgroup/late"),
        ];
        let (code, why) = foreseen_failure(&steps).expect("foreseen");
        let run = Outcome {
            steps: steps.iter().map(|s| (s.clone(), None)).collect(),
        };
        assert_eq!(code, run.exit_code());
        assert_eq!(code, 1);
        assert!(why.contains("/sys/fs/cgroup/late"), "{why}");
        assert!(!why.contains("/sys/fs/cgroup/a "), "{why}");
        assert!(!why.contains('\n'), "{why}");
    }
}
