//! `bindguard detach`: removes the binding of one cgroup and says what went.

use std::path::Path;

use crate::{
    binding::{
        cgroup,
        enforcer::{self, Detached},
    },
    error::printable_path,
};

/// Detaches the binding of the cgroup at `path` (`self`: bindguard's own); when the cgroup is
/// gone, the bindings of every deleted cgroup.
pub fn run(path: &Path) -> anyhow::Result<()> {
    match enforcer::detach(&cgroup::expand_self(path)?)? {
        // The path detached, not the argument: `self` names the caller's cgroup.
        Detached::Removed { cgroup, pins } => {
            println!(
                "detached {} (removed {})",
                printable_path(&cgroup),
                pins.display()
            )
        }
        Detached::Stale(n) => println!(
            "cgroup {} no longer exists; removed {n} binding(s) of deleted cgroups",
            printable_path(path)
        ),
    }
    Ok(())
}
