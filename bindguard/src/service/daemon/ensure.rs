//! Making one binding what the config says ([`Daemon::ensure`]): the attach path, which the
//! start, a reload, a cgroup or namespace that appears, repaired pins and link events that a
//! policy write cannot serve all take. [`reconcile::compare`] decides what to do, as for
//! `apply`.

use std::fs;

use tracing::{debug, error, info};

use super::Daemon;
use crate::error::one_line;
use crate::{
    Error,
    binding::{SocketPass, cgroup, enforcer, netdev::Interface, policy::Existing},
    kernel::pins,
    service::{
        config::OnRecreate,
        reconcile::{self, Action},
    },
};

impl Daemon {
    /// Makes binding `i` what the config says, with `iface` when the caller knows it (a link
    /// event), else resolved now. Returns whether the kernel was changed.
    pub(super) fn ensure(&mut self, i: usize, iface: Option<Interface>, cause: &str) -> bool {
        let b = self.config.bindings[i].clone();
        let cg = match cgroup::resolve(&b.cgroup) {
            Ok(cg) => cg,
            Err(e) if Error::is_cgroup_missing(&e) => {
                if b.create {
                    if let Err(e) = fs::create_dir_all(&b.cgroup) {
                        error!("cannot create cgroup {}: {e}", b.cgroup.display());
                        self.known
                            .fail(&b.cgroup, format!("cannot create the cgroup: {e}"));
                        return false;
                    }
                    info!("created cgroup {}", b.cgroup.display());
                    match cgroup::resolve(&b.cgroup) {
                        Ok(cg) => cg,
                        Err(e) => {
                            error!("{e:#}");
                            self.known.fail(&b.cgroup, one_line(&e));
                            return false;
                        }
                    }
                } else {
                    let waited = self.known.wait_for_cgroup(&b.cgroup);
                    self.release_gone(&b.cgroup);
                    if !waited {
                        info!(
                            "? waiting   {} (cgroup does not exist; bound when it appears)",
                            b.cgroup.display()
                        );
                    }
                    return false;
                }
            }
            Err(e) => {
                error!("binding at {}: {e:#}", b.origin());
                self.known.fail(&b.cgroup, one_line(&e));
                return false;
            }
        };
        let iface = match iface {
            Some(i) => i,
            None => match reconcile::desired_interface(&b, &mut self.namespaces) {
                Ok(i) => i,
                Err(e) => {
                    error!("binding at {}: {e:#}", b.origin());
                    self.known.fail(&b.cgroup, one_line(&e));
                    return false;
                }
            },
        };
        let dir = pins::binding_dir(cg.id);
        let before = enforcer::read_policy(&dir).ok();
        let (action, why) = reconcile::compare(&cg, &iface, &b);
        if action == Action::Unchanged {
            self.known.made_as(&b.cgroup, cg.id, iface.ifindex);
            if self.held.get(&cg.id) != Some(&b.cgroup) {
                self.hold(cg.id, &b.cgroup);
            }
            return false;
        }
        // The socket pass runs off the loop (below): a flap is not held up by a walk of /proc.
        let bound = match crate::binding::bind(&cg, &iface, &b.options, SocketPass::Later) {
            Ok(bound) => bound,
            Err(e) => {
                error!(
                    "{} {} -> {} failed: {e:#}",
                    action.symbol(),
                    cg.path.display(),
                    reconcile::describe(&iface)
                );
                self.known.fail(&b.cgroup, one_line(&e));
                return false;
            }
        };
        self.known.made_as(&b.cgroup, cg.id, iface.ifindex);
        if action != Action::Retarget {
            self.loaded = true;
            // A set may have been loaded anew (its old pins removed by someone): open it again.
            self.set = None;
        }
        let mut line = format!(
            "{} {} -> {} ({cause}",
            action.symbol(),
            cg.path.display(),
            reconcile::describe(&iface)
        );
        if !why.is_empty() {
            line.push_str("; ");
            line.push_str(&why);
        }
        if let Some(at) = self.event_at {
            line.push_str(&format!(
                ", {} us after the event",
                at.elapsed().as_micros()
            ));
        }
        line.push(')');
        // A link event says how many it changed in one line; each binding only at debug.
        if self.event_at.is_some() {
            debug!("{line}");
        } else {
            info!("{line}");
        }
        self.hold(cg.id, &b.cgroup);
        if b.options.existing == Existing::Destroy && iface.ifindex != 0 {
            let what = format!("ending the unbound sockets of {}", cg.path.display());
            self.off_loop(cg.path.clone(), what, move || {
                // What the pass could not end is an error (logged; `status` shows
                // sockets-unreached), the rest is done all the same.
                let ended = bound.end_existing()?.check()?;
                Ok(if ended == 0 {
                    String::new()
                } else {
                    format!(
                        "ended {ended} unbound socket(s) of {}",
                        bound.cgroup.path.display()
                    )
                })
            });
        }
        let recreated = iface.ifindex != 0 && before.is_some_and(|p| p.ifindex != iface.ifindex);
        if recreated && b.on_recreate == OnRecreate::ResetSockets {
            self.reset_sockets(i);
        }
        true
    }
}
