//! Link events: what an interface appearing, going or being renamed means for each binding
//! ([`decide`], pure: unit-tested below), and doing it in one pass ([`Daemon::on_link`]).
//!
//! An interface that disappears closes its bindings at once (ifindex 0: every new socket is
//! refused, never left pointing at a dead ifindex another interface may reuse); one that
//! appears with the configured name, or is renamed to it, re-targets them in place (one map
//! write). Whether a policy write is enough or new programs are needed is
//! [`reconcile::drift`]'s rule, the one `apply` follows.

use std::{collections::HashMap, path::PathBuf, time::Instant};

use bindguard_common::Policy;
use tracing::{debug, info};

use super::{Daemon, state::State};
use crate::{
    binding::{
        netdev::{self, Interface},
        policy::policy_for,
    },
    service::{
        config::{Binding, OnRecreate},
        reconcile::{self, Drift},
    },
};

/// What a link event changed, against the last event seen for its ifindex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    New,
    Renamed,
    Deleted,
}

impl Change {
    /// The metrics' label.
    fn label(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Renamed => "renamed",
            Change::Deleted => "deleted",
        }
    }
}

/// One namespace's interfaces as the link events said: ifindex -> name.
#[derive(Debug, Default)]
pub(super) struct Seen(HashMap<u32, String>);

impl Seen {
    /// Records an RTM_NEWLINK (`new`) or RTM_DELLINK. None for an RTM_NEWLINK that changes
    /// neither name nor ifindex (up, down, carrier, MTU...: nothing a binding depends on).
    pub(super) fn observe(&mut self, new: bool, index: u32, name: &str) -> Option<Change> {
        if !new {
            self.0.remove(&index);
            return Some(Change::Deleted);
        }
        match self.0.insert(index, name.to_string()) {
            Some(was) if was == name => None,
            Some(_) => Some(Change::Renamed),
            None => Some(Change::New),
        }
    }
}

/// A link event, with the namespace it happened in.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkEvent<'a> {
    /// RTM_NEWLINK (appeared, renamed); false: RTM_DELLINK.
    pub new: bool,
    pub index: u32,
    pub name: &'a str,
    pub netns_cookie: u64,
    pub netns_ino: u64,
}

/// What a link event means for one binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Neither its interface's name nor the ifindex the daemon left it on.
    Untouched,
    /// Its cgroup does not exist: it is bound when the cgroup appears.
    WaitingForCgroup,
    /// The kernel holds what the event asks already.
    Unchanged,
    /// The kernel's binding had left the event's ifindex already (for `ifindex`): only the
    /// daemon's note of it changes.
    Moved { cgroup_id: u64, ifindex: u32 },
    /// One policy write in the running build's program set: closed (`target.ifindex` 0) or
    /// re-targeted, from ifindex `was`.
    Write {
        cgroup_id: u64,
        policy: Policy,
        target: Interface,
        was: u32,
    },
    /// Through the attach path ([`reconcile::compare`] decides) toward `target`: the daemon
    /// does not hold the binding whole on the running build's programs, its policy cannot be
    /// read there, or only new programs give what it wants.
    Attach(Interface),
}

/// What `event` means for binding `b`. `made` is the (cgroup id, ifindex) the daemon last made
/// or found the binding whole as, `waiting_for_cgroup` whether its cgroup is missing, and
/// `read` the kernel's policy for a cgroup id in the running build's set (None: unreadable, or
/// no set): the kernel's value decides, not the daemon's memory, and it is read only for a
/// binding the event concerns.
pub(super) fn decide(
    b: &Binding,
    event: &LinkEvent,
    made: Option<(u64, u32)>,
    waiting_for_cgroup: bool,
    read: impl FnOnce(u64) -> Option<Policy>,
) -> Step {
    let wanted = event.new && event.name == b.dev;
    // Only bindings this event can concern: those of the interface's name, and those the
    // daemon last left on this ifindex.
    if !wanted && made.is_none_or(|(_, at)| at != event.index || event.index == 0) {
        return Step::Untouched;
    }
    let target = if wanted {
        Interface {
            name: b.dev.clone(),
            ifindex: event.index,
            netns_cookie: event.netns_cookie,
            netns_ino: event.netns_ino,
        }
    } else {
        // Deleted, or renamed away from the configured name: close, never keep a dead
        // ifindex that root may give to another interface.
        netdev::closed(&b.dev, event.netns_cookie, event.netns_ino)
    };
    let Some((cgroup_id, _)) = made else {
        return if waiting_for_cgroup {
            Step::WaitingForCgroup
        } else {
            Step::Attach(target)
        };
    };
    let Some(have) = read(cgroup_id) else {
        return Step::Attach(target);
    };
    if !wanted && have.ifindex != event.index {
        return Step::Moved {
            cgroup_id,
            ifindex: have.ifindex,
        };
    }
    let lsm = have.has(bindguard_common::flags::LSM);
    let want = policy_for(&target, &b.options, cgroup_id, lsm);
    match reconcile::drift(&have, &want) {
        Drift::None => Step::Unchanged,
        Drift::Replace(_) => Step::Attach(target),
        Drift::Retarget => Step::Write {
            cgroup_id,
            policy: want,
            target,
            was: have.ifindex,
        },
    }
}

impl Daemon {
    /// A link event: every binding of the namespace that it concerns is closed or re-targeted
    /// in one pass, each by one policy write. Bindings the daemon has not made whole on the
    /// running build's programs go through [`Daemon::ensure`] (the attach path).
    pub(super) fn on_link(
        &mut self,
        ns: &Option<PathBuf>,
        new: bool,
        index: u32,
        name: &str,
        at: Instant,
    ) {
        let Some(change) = self
            .links
            .entry(ns.clone())
            .or_default()
            .observe(new, index, name)
        else {
            return;
        };
        if let Some(m) = &self.metrics {
            m.interface_event(change.label());
        }
        let (netns_cookie, netns_ino) = match self.namespaces.get(ns.as_deref()) {
            Ok((n, cookie)) => (*cookie, n.ino),
            Err(_) => return,
        };
        let event = LinkEvent {
            new,
            index,
            name,
            netns_cookie,
            netns_ino,
        };
        let set = self.current_set();
        let (mut closed, mut retargeted) = (0usize, 0usize);
        let mut slow: Vec<(usize, Interface)> = Vec::new();
        let mut resets: Vec<usize> = Vec::new();
        for i in 0..self.config.bindings.len() {
            let b = &self.config.bindings[i];
            if &b.netns != ns {
                continue;
            }
            let step = decide(
                b,
                &event,
                self.known.made(&b.cgroup),
                self.known.state(&b.cgroup) == Some(State::WaitingForCgroup),
                |id| set.as_ref()?.read_policy(id).ok(),
            );
            let (id, want, target, was) = match step {
                Step::Untouched | Step::WaitingForCgroup | Step::Unchanged => continue,
                Step::Moved { cgroup_id, ifindex } => {
                    self.known.moved(&b.cgroup, cgroup_id, ifindex);
                    continue;
                }
                Step::Attach(target) => {
                    slow.push((i, target));
                    continue;
                }
                Step::Write {
                    cgroup_id,
                    policy,
                    target,
                    was,
                } => (cgroup_id, policy, target, was),
            };
            // One map update: each new socket meets the old policy or the new one.
            let written = match &set {
                Some(set) => set.write_policy(id, &want).map_err(anyhow::Error::from),
                None => Err(anyhow::anyhow!("no program set")),
            };
            if let Err(e) = written {
                debug!("{}: {e:#}; through the attach path", b.cgroup.display());
                slow.push((i, target));
                continue;
            }
            debug!(
                "~ retarget  {} -> {} (was ifindex {was})",
                b.cgroup.display(),
                reconcile::describe(&target),
            );
            self.known.made_as(&b.cgroup, id, target.ifindex);
            if target.ifindex == 0 {
                closed += 1;
            } else {
                retargeted += 1;
                if was != target.ifindex && b.on_recreate == OnRecreate::ResetSockets {
                    resets.push(i);
                }
            }
        }
        let cause = if !new {
            format!("{name} (ifindex {index}) was deleted")
        } else if self
            .config
            .bindings
            .iter()
            .any(|b| &b.netns == ns && b.dev == name)
        {
            format!("{name} appeared (ifindex {index})")
        } else {
            format!("ifindex {index} was renamed to {name}")
        };
        let fast = closed + retargeted;
        let mut changed = fast > 0;
        let slow_count = slow.len();
        self.event_at = Some(at);
        for (i, t) in slow {
            changed |= self.ensure(i, Some(t), &cause);
        }
        self.event_at = None;
        if fast > 0 || slow_count > 0 {
            let mut what = Vec::new();
            if closed > 0 {
                what.push(format!("closed {closed} binding(s)"));
            }
            if retargeted > 0 {
                what.push(format!("re-targeted {retargeted} binding(s)"));
            }
            if slow_count > 0 {
                what.push(format!("{slow_count} through the attach path"));
            }
            info!(
                "{cause}: {} in {:.2} ms ({} us after the event)",
                what.join(", "),
                at.elapsed().as_secs_f64() * 1e3,
                at.elapsed().as_micros()
            );
        }
        for i in resets {
            self.reset_sockets(i);
        }
        if changed {
            self.publish_status();
            if slow_count > 0 {
                self.after_change();
            }
        }
        if let Some(m) = &self.metrics
            && (fast > 0 || slow_count > 0)
        {
            m.reconciled(at.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::policy::{Mode, Options};

    const COOKIE: u64 = 4096;
    const INO: u64 = 4026531840;
    const CGROUP: u64 = 77;

    fn binding(dev: &str) -> Binding {
        Binding {
            file: "/etc/bindguard/bindguard.toml".into(),
            line: 1,
            cgroup: "/sys/fs/cgroup/app".into(),
            create: false,
            dev: dev.into(),
            netns: None,
            options: Options::default(),
            on_recreate: OnRecreate::default(),
        }
    }

    fn event(new: bool, index: u32, name: &str) -> LinkEvent<'_> {
        LinkEvent {
            new,
            index,
            name,
            netns_cookie: COOKIE,
            netns_ino: INO,
        }
    }

    fn iface(name: &str, ifindex: u32) -> Interface {
        Interface {
            name: name.into(),
            ifindex,
            netns_cookie: COOKIE,
            netns_ino: INO,
        }
    }

    /// What the kernel would hold had the binding been made on `ifindex` by this build.
    fn held(b: &Binding, ifindex: u32) -> Policy {
        policy_for(&iface(&b.dev, ifindex), &b.options, CGROUP, false)
    }

    fn no_read(_: u64) -> Option<Policy> {
        panic!("the kernel is read only for a binding the event concerns")
    }

    #[test]
    fn the_table_tells_new_renamed_and_deleted_and_skips_what_changes_neither() {
        let mut seen = Seen::default();
        assert_eq!(seen.observe(true, 7, "upB"), Some(Change::New));
        // up, down, carrier: the same name on the same ifindex
        assert_eq!(seen.observe(true, 7, "upB"), None);
        assert_eq!(seen.observe(true, 7, "upC"), Some(Change::Renamed));
        assert_eq!(seen.observe(false, 7, "upC"), Some(Change::Deleted));
        // a deletion the table never saw appear still counts
        assert_eq!(seen.observe(false, 9, "x"), Some(Change::Deleted));
        assert_eq!(seen.observe(true, 7, "upC"), Some(Change::New));
        assert_eq!(Change::Renamed.label(), "renamed");
    }

    #[test]
    fn another_interface_or_another_ifindex_leaves_the_binding_untouched() {
        let b = binding("upB");
        let made = Some((CGROUP, 7));
        assert_eq!(
            decide(&b, &event(true, 8, "upA"), made, false, no_read),
            Step::Untouched
        );
        assert_eq!(
            decide(&b, &event(false, 8, "upA"), made, false, no_read),
            Step::Untouched
        );
        // RTM_DELLINK of the configured name: the binding is not on it
        assert_eq!(
            decide(&b, &event(false, 8, "upB"), made, false, no_read),
            Step::Untouched
        );
        // not made: only its own name concerns it
        assert_eq!(
            decide(&b, &event(false, 7, "upB"), None, false, no_read),
            Step::Untouched
        );
        // closed (ifindex 0) bindings are never "on" an event's ifindex 0
        assert_eq!(
            decide(&b, &event(false, 0, "x"), Some((CGROUP, 0)), false, no_read),
            Step::Untouched
        );
    }

    #[test]
    fn a_binding_the_daemon_does_not_hold_goes_through_the_attach_path_unless_its_cgroup_is_missing()
     {
        let b = binding("upB");
        assert_eq!(
            decide(&b, &event(true, 7, "upB"), None, true, no_read),
            Step::WaitingForCgroup
        );
        assert_eq!(
            decide(&b, &event(true, 7, "upB"), None, false, no_read),
            Step::Attach(iface("upB", 7))
        );
        // held, but its policy cannot be read in the running build's set (or there is none)
        assert_eq!(
            decide(
                &b,
                &event(false, 7, "upB"),
                Some((CGROUP, 7)),
                false,
                |_| None
            ),
            Step::Attach(iface("upB", 0))
        );
    }

    #[test]
    fn a_deleted_interface_closes_its_bindings() {
        let b = binding("upB");
        let step = decide(
            &b,
            &event(false, 7, "upB"),
            Some((CGROUP, 7)),
            false,
            |id| {
                assert_eq!(id, CGROUP);
                Some(held(&b, 7))
            },
        );
        assert_eq!(
            step,
            Step::Write {
                cgroup_id: CGROUP,
                policy: held(&b, 0),
                target: iface("upB", 0),
                was: 7,
            }
        );
    }

    #[test]
    fn renamed_away_from_the_configured_name_closes_and_renamed_to_it_retargets() {
        let b = binding("upB");
        let away = decide(
            &b,
            &event(true, 7, "upB-old"),
            Some((CGROUP, 7)),
            false,
            |_| Some(held(&b, 7)),
        );
        assert!(
            matches!(&away, Step::Write { target, was: 7, .. } if target.ifindex == 0),
            "{away:?}"
        );
        // A closed binding whose interface comes back under its name (a rename to it, or a
        // re-creation with a new ifindex).
        let back = decide(&b, &event(true, 9, "upB"), Some((CGROUP, 0)), false, |_| {
            Some(held(&b, 0))
        });
        assert_eq!(
            back,
            Step::Write {
                cgroup_id: CGROUP,
                policy: held(&b, 9),
                target: iface("upB", 9),
                was: 0,
            }
        );
    }

    #[test]
    fn the_kernel_s_value_decides_over_the_daemon_s_note() {
        let b = binding("upB");
        // The daemon thought ifindex 7; the kernel's binding is on 9 already.
        assert_eq!(
            decide(
                &b,
                &event(false, 7, "upB"),
                Some((CGROUP, 7)),
                false,
                |_| { Some(held(&b, 9)) }
            ),
            Step::Moved {
                cgroup_id: CGROUP,
                ifindex: 9
            }
        );
        // The apply already bound the interface the event announces.
        assert_eq!(
            decide(&b, &event(true, 9, "upB"), Some((CGROUP, 9)), false, |_| {
                Some(held(&b, 9))
            }),
            Step::Unchanged
        );
        // `unreached` is the last socket pass's result: the event leaves it for `status`.
        assert_eq!(
            decide(&b, &event(true, 9, "upB"), Some((CGROUP, 9)), false, |_| {
                Some(Policy {
                    unreached: 3,
                    ..held(&b, 9)
                })
            }),
            Step::Unchanged
        );
    }

    #[test]
    fn what_only_new_programs_give_goes_through_the_attach_path() {
        let b = binding("upB");
        let ev = event(true, 9, "upB");
        let made = Some((CGROUP, 0));
        let outdated = Policy {
            object_hash: held(&b, 0).object_hash ^ 1,
            ..held(&b, 0)
        };
        let other_ns = Policy {
            netns_cookie: COOKIE + 1,
            ..held(&b, 0)
        };
        let bind_mode = policy_for(
            &iface("upB", 0),
            &Options {
                mode: Mode::Bind,
                ..Options::default()
            },
            CGROUP,
            false,
        );
        assert_eq!(b.options.mode, Mode::Strict);
        for have in [outdated, other_ns, bind_mode] {
            assert_eq!(
                decide(&b, &ev, made, false, |_| Some(have)),
                Step::Attach(iface("upB", 9)),
                "{have:?}"
            );
        }
    }
}
