//! What the daemon knows of each configured binding, and the reports made of it (sd_notify
//! STATUS, the "ready:" line, `status`'s list of unbound bindings, /metrics).
//!
//! Each binding is known by its cgroup: a config names each cgroup once, so the key stays
//! true across a reload that adds, drops or reorders bindings (an index would name another
//! binding after it).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use tracing::warn;

use super::{Daemon, notify};
use crate::{
    binding::unbound,
    service::{
        config::{Binding, Config},
        metrics,
    },
};

/// Where a configured binding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Enforcing,
    WaitingForInterface,
    WaitingForCgroup,
    Failed,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Enforcing => "enforcing",
            State::WaitingForInterface => "waiting-for-interface",
            State::WaitingForCgroup => "waiting-for-cgroup",
            State::Failed => "failed",
        }
    }

    /// Enforcing on `ifindex`, or closed while it is 0.
    pub(super) fn bound_to(ifindex: u32) -> Self {
        if ifindex == 0 {
            State::WaitingForInterface
        } else {
            State::Enforcing
        }
    }
}

/// What the daemon knows of one binding.
#[derive(Debug, Default)]
struct Entry {
    /// None until the binding is looked at (at start, and again after a reload).
    state: Option<State>,
    /// (cgroup id, ifindex) of the binding the daemon made or found whole on the running
    /// build's programs: the link events' fast path (one policy write each). Never set
    /// together with `failure`.
    made: Option<(u64, u32)>,
    /// Why it could not be made (for the readiness report).
    failure: Option<String>,
}

/// Every configured binding's [`Entry`], by cgroup path.
#[derive(Debug, Default)]
pub(super) struct Known(HashMap<PathBuf, Entry>);

impl Known {
    pub(super) fn state(&self, cgroup: &Path) -> Option<State> {
        self.0.get(cgroup).and_then(|e| e.state)
    }

    pub(super) fn made(&self, cgroup: &Path) -> Option<(u64, u32)> {
        self.0.get(cgroup).and_then(|e| e.made)
    }

    /// The binding of `cgroup` was made, or found whole, as cgroup `id` on `ifindex`.
    pub(super) fn made_as(&mut self, cgroup: &Path, id: u64, ifindex: u32) {
        let e = self.entry(cgroup);
        e.state = Some(State::bound_to(ifindex));
        e.made = Some((id, ifindex));
        e.failure = None;
    }

    /// The kernel says the binding of `cgroup` is on `ifindex`, not where the daemon thought.
    pub(super) fn moved(&mut self, cgroup: &Path, id: u64, ifindex: u32) {
        self.entry(cgroup).made = Some((id, ifindex));
    }

    /// The binding of `cgroup` could not be made: counted, and its reason kept for the report.
    pub(super) fn fail(&mut self, cgroup: &Path, why: String) {
        let e = self.entry(cgroup);
        e.state = Some(State::Failed);
        e.made = None;
        e.failure = Some(why);
    }

    /// The cgroup does not exist: the binding waits for it. Returns whether it waited already.
    pub(super) fn wait_for_cgroup(&mut self, cgroup: &Path) -> bool {
        let e = self.entry(cgroup);
        e.made = None;
        e.failure = None;
        e.state.replace(State::WaitingForCgroup) == Some(State::WaitingForCgroup)
    }

    /// A new config: what the bindings it no longer names is forgotten, and where the others
    /// stand (the apply that follows finds it again, and says so). What they were made as
    /// stays until then.
    pub(super) fn reload(&mut self, config: &Config) {
        let named: std::collections::HashSet<&Path> =
            config.bindings.iter().map(|b| b.cgroup.as_path()).collect();
        self.0.retain(|cgroup, _| named.contains(cgroup.as_path()));
        for e in self.0.values_mut() {
            e.state = None;
        }
    }

    fn count(&self, state: State) -> usize {
        self.0.values().filter(|e| e.state == Some(state)).count()
    }

    /// The failed bindings of `config` with their reason, in the config's order.
    fn failed<'a>(&'a self, config: &'a Config) -> impl Iterator<Item = (&'a Binding, &'a str)> {
        config.bindings.iter().filter_map(|b| {
            let e = self.0.get(&b.cgroup)?;
            match (e.state, &e.failure) {
                (Some(State::Failed), Some(why)) => Some((b, why.as_str())),
                _ => None,
            }
        })
    }

    fn entry(&mut self, cgroup: &Path) -> &mut Entry {
        if !self.0.contains_key(cgroup) {
            self.0.insert(cgroup.to_path_buf(), Entry::default());
        }
        self.0.get_mut(cgroup).expect("just inserted")
    }
}

impl Daemon {
    pub(super) fn counts(&self) -> String {
        let n = |s: State| self.known.count(s);
        let mut line = format!(
            "{} binding(s): {} enforcing, {} waiting for their interface, {} waiting for their cgroup, {} failed",
            self.config.bindings.len(),
            n(State::Enforcing),
            n(State::WaitingForInterface),
            n(State::WaitingForCgroup),
            n(State::Failed)
        );
        if n(State::Failed) > 0 {
            line.push_str(" (NOT bound: ");
            line.push_str(&self.failed_list());
            line.push(')');
        }
        line
    }

    /// The failed bindings, the first few with their reason.
    fn failed_list(&self) -> String {
        let failed: Vec<(&Binding, &str)> = self.known.failed(&self.config).collect();
        let mut out: Vec<String> = failed
            .iter()
            .take(3)
            .map(|(b, why)| format!("{}: {why}", b.cgroup.display()))
            .collect();
        if failed.len() > 3 {
            out.push(format!("and {} more", failed.len() - 3));
        }
        out.join("; ")
    }

    /// Whether some binding could not be made.
    pub(super) fn any_failed(&self) -> bool {
        self.known.failed(&self.config).next().is_some()
    }

    pub(super) fn publish_status(&mut self) {
        notify(&[sd_notify::NotifyState::Status(&self.counts())]);
        self.publish_unbound();
        self.publish_metrics();
    }

    /// What `/metrics` exposes: every configured binding by mode and state, and the kernel
    /// counters of those the daemon holds (labelled by their configured cgroup).
    fn publish_metrics(&self) {
        let Some(m) = &self.metrics else { return };
        let mut snap = metrics::Snapshot::default();
        for b in &self.config.bindings {
            let state = self.known.state(&b.cgroup).unwrap_or(State::Failed);
            *snap
                .bindings
                .entry((b.options.mode.as_str(), state.label()))
                .or_default() += 1;
            if matches!(state, State::Enforcing | State::WaitingForInterface)
                && let Some((id, _)) = self.known.made(&b.cgroup)
            {
                snap.bound.push(metrics::Bound {
                    cgroup_id: id,
                    labels: vec![("cgroup", b.cgroup.display().to_string())],
                });
            }
        }
        m.publish(snap);
    }

    /// Keeps `status`'s list of configured bindings that are not bound
    /// ([`crate::binding::unbound`]) equal to the failed ones.
    pub(super) fn publish_unbound(&mut self) {
        let mut now: Vec<unbound::Unbound> = self
            .known
            .failed(&self.config)
            .map(|(b, why)| unbound::Unbound {
                cgroup: b.cgroup.clone(),
                origin: b.origin(),
                why: why.to_string(),
            })
            .collect();
        now.sort_by(|a, b| a.origin.cmp(&b.origin));
        if now == self.unbound {
            return;
        }
        match unbound::publish(Path::new(unbound::PATH), &now) {
            Ok(()) => self.unbound = now,
            Err(e) => warn!("cannot write {}: {e}", unbound::PATH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cgroups: &[&str]) -> Config {
        Config {
            bindings: cgroups
                .iter()
                .map(|c| Binding {
                    file: "/etc/bindguard/bindguard.toml".into(),
                    line: 1,
                    cgroup: c.into(),
                    create: false,
                    dev: "eth0".into(),
                    netns: None,
                    options: Default::default(),
                    on_recreate: Default::default(),
                })
                .collect(),
            ..Config::default()
        }
    }

    /// A reload that drops and reorders bindings: each keeps what it was made as (by its
    /// cgroup, not its place), where it stands is found again, and a dropped one is forgotten.
    #[test]
    fn a_reload_keeps_each_binding_s_entry_by_cgroup_and_forgets_the_dropped() {
        let (a, b, c) = (Path::new("/cg/a"), Path::new("/cg/b"), Path::new("/cg/c"));
        let mut known = Known::default();
        known.made_as(a, 1, 7);
        known.fail(b, "no such device".into());
        known.made_as(c, 3, 0);
        assert_eq!(known.count(State::Enforcing), 1);
        assert_eq!(known.count(State::WaitingForInterface), 1);
        assert_eq!(known.count(State::Failed), 1);
        let old = config(&["/cg/a", "/cg/b", "/cg/c"]);
        assert_eq!(
            known
                .failed(&old)
                .map(|(b, w)| (b.cgroup.clone(), w))
                .collect::<Vec<_>>(),
            vec![(PathBuf::from("/cg/b"), "no such device")]
        );

        known.reload(&config(&["/cg/c", "/cg/a"]));
        assert_eq!(known.made(a), Some((1, 7)));
        assert_eq!(known.made(c), Some((3, 0)));
        assert_eq!(known.made(b), None);
        assert_eq!(known.state(a), None);
        assert_eq!(known.count(State::Failed), 0);
        assert_eq!(known.0.len(), 2);
    }

    /// Failing and waiting drop what the binding was made as: the link events' fast path
    /// never writes to a binding the daemon does not hold.
    #[test]
    fn failing_or_waiting_forgets_what_the_binding_was_made_as() {
        let a = Path::new("/cg/a");
        let mut known = Known::default();
        known.made_as(a, 1, 7);
        known.fail(a, "gone".into());
        assert_eq!(known.made(a), None);
        assert_eq!(known.state(a), Some(State::Failed));
        known.made_as(a, 1, 7);
        assert!(!known.wait_for_cgroup(a));
        assert!(known.wait_for_cgroup(a));
        assert_eq!(known.made(a), None);
        assert!(known.failed(&config(&["/cg/a"])).next().is_none());
        known.moved(a, 2, 9);
        assert_eq!(known.made(a), Some((2, 9)));
    }
}
