//! `bindguard apply`: the [`reconcile`] plan for the config, printed as it runs (+ attach,
//! ~ retarget, = unchanged, - detach), or only printed with `--dry-run`.

use std::path::Path;

use super::{config, reconcile};
use crate::binding::{cgroup, enforcer};

/// Applies the config at `path` (None: the default files); with `prune`, also detaches the
/// config-made bindings it no longer names. Returns the exit code: that of the first failed
/// step, 1 for a cgroup that does not exist, else 0 (`dry_run`: the code the run would give
/// when the plan already shows it).
pub fn run(path: Option<&Path>, dry_run: bool, prune: bool) -> anyhow::Result<u8> {
    let mount = cgroup::cgroup2_mount()?;
    let config = config::load(path, &mount)?;
    if !dry_run {
        enforcer::require_privileges("apply")?;
    }
    let steps = reconcile::plan(&config, prune)?;
    if steps.is_empty() {
        println!("no bindings in the config");
    }
    if dry_run {
        for s in &steps {
            println!("{s}");
        }
        // Exit as the run would when the plan already shows that it fails.
        if let Some((code, why)) = reconcile::foreseen_failure(&steps) {
            eprintln!("bindguard: {why}");
            return Ok(code as u8);
        }
        return Ok(0);
    }
    let outcome = reconcile::execute(steps, &config);
    for (step, err) in &outcome.steps {
        match err {
            None => println!("{step}"),
            Some(e) => {
                println!("{step}: FAILED");
                eprintln!("bindguard: {}", crate::error::one_line(e));
            }
        }
    }
    Ok(outcome.exit_code() as u8)
}
