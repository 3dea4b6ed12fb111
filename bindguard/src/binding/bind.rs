//! The one door a binding is made through. `attach`, `apply`, the daemon, `exec`, the OCI
//! hook and the NRI plugin each resolve what they were asked for into a cgroup, an
//! interface and options, call [`bind`], and render the [`Bound`] it returns; none of them
//! links programs or ends sockets on its own.

use anyhow::Context as _;

use crate::binding::{
    cgroup::{self, Cgroup, Delegation},
    enforcer::{self, Attached},
    netdev::Interface,
    policy::{Existing, Mode, Options},
    sockreset::{self, Pass},
};
use crate::kernel::progset::{LeftOut, Set};

/// When the sockets the cgroup's processes already hold are dealt with (`--existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketPass {
    /// In [`bind`], before it returns.
    Now,
    /// By the caller, later ([`Bound::end_existing`]): the daemon runs the pass off its
    /// event loop, so an interface flap is not held up by a walk of /proc.
    Later,
}

/// What [`bind`] did.
pub struct Bound {
    pub cgroup: Cgroup,
    pub iface: Interface,
    pub mode: Mode,
    pub attached: Attached,
    /// The pass over the sockets already held: None when `existing` is keep, or the pass was
    /// left for later.
    pub sockets: Option<Pass>,
    set: Set,
    loaded: Vec<LeftOut>,
    accepted_delegation: bool,
}

/// Binds every new socket of `cgroup` to `iface` with `opts`, then, with `--existing
/// destroy` and [`SocketPass::Now`], ends the sockets its processes already hold that do not
/// obey the binding. A pass that cannot end every socket is no error here: the binding stays
/// (it governs every new socket) and [`Bound::unreached`] says what is left.
pub fn bind(
    cgroup: &Cgroup,
    iface: &Interface,
    opts: &Options,
    pass: SocketPass,
) -> anyhow::Result<Bound> {
    let made = enforcer::attach(cgroup, iface, opts)?;
    let mut bound = Bound {
        cgroup: cgroup.clone(),
        iface: iface.clone(),
        mode: opts.mode,
        attached: made.attached,
        sockets: None,
        set: made.set,
        loaded: made.loaded,
        accepted_delegation: opts.allow_delegated,
    };
    if pass == SocketPass::Now && opts.existing == Existing::Destroy {
        bound.sockets = Some(bound.end_existing()?);
    }
    Ok(bound)
}

impl Bound {
    /// Ends the sockets the cgroup's processes hold that do not obey the binding (what
    /// [`SocketPass::Later`] leaves to the caller). Needs nothing of `self` but the cgroup and
    /// interface, so a clone can run it on another thread.
    pub fn end_existing(&self) -> anyhow::Result<Pass> {
        sockreset::end_existing(&self.cgroup, &self.iface)
    }

    /// The escape rows strict mode leaves open on this kernel with the binding's programs,
    /// and why, in one line (None in bind mode, or when every row is covered). Read from
    /// what the loader recorded: no probe.
    pub fn open_rows(&self) -> Option<String> {
        if self.mode != Mode::Strict {
            return None;
        }
        crate::kernel::coverage::open_rows_warning(&self.set, &self.loaded)
    }

    /// The verifier's logs of the programs this call loaded and the kernel refused: (program,
    /// log), for `--verbose`.
    pub fn refused_logs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.loaded
            .iter()
            .filter_map(|l| Some((l.hook.program(), l.log.as_deref()?)))
    }

    /// The delegation boundary the cgroup's processes can cross (row 19) where the binding
    /// allows it to matter: bind mode, or strict with `--allow-delegated` (a strict binding
    /// below a boundary is refused otherwise, so there is nothing to walk).
    pub fn escapable(&self) -> Option<Delegation> {
        if self.mode == Mode::Strict && !self.accepted_delegation {
            return None;
        }
        cgroup::delegation(&self.cgroup.path, &mut Default::default())
    }

    /// The sockets the pass could not end, as an error naming each (the binding stays);
    /// Ok when the pass ended every one, or none was asked for.
    pub fn unreached(&self) -> anyhow::Result<()> {
        if let Some(pass) = &self.sockets {
            pass.check()
                .context("bound; ending the sockets it already held")?;
        }
        Ok(())
    }

    /// One line: what was bound to what.
    pub fn summary(&self) -> String {
        let verb = match self.attached {
            Attached::Created(_) => "bound",
            Attached::Updated(_) => "re-bound (policy updated in place)",
            Attached::Replaced(_) => "re-bound (programs replaced)",
        };
        format!(
            "{verb} cgroup {} (id {}) to {} (ifindex {}), mode {}",
            crate::error::printable_path(&self.cgroup.path),
            self.cgroup.id,
            self.iface.name,
            self.iface.ifindex,
            self.mode.as_str()
        )
    }
}
