//! `oci-hook`: binds a container at createRuntime and cleans up at poststop.
//!
//! The runtime passes the OCI state on stdin. Only containers annotated `io.bindguard.dev`
//! are touched, so the hook can be installed for every container. At createRuntime the
//! container's init process exists in its cgroup and namespaces but user code has not started:
//! no socket can predate the binding. The interface is resolved inside the container's network
//! namespace. Every failure is an error, so the runtime refuses to start a container that asked
//! for a binding it cannot get.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use oci_spec::runtime::{ContainerState, Spec, State};

use crate::{
    Error,
    binding::{
        SocketPass,
        cgroup::{self, Cgroup},
        enforcer, netdev,
        netns::Netns,
        policy::{Maker, Options},
    },
    kernel::pins,
};

pub use crate::binding::annotations::{
    ALLOW_FAMILY, ALLOW_LOOPBACK, DEV, MARK, MODE, PRIORITY, options_from,
};
/// Larger state on stdin is refused: no runtime sends that much, and errors must not echo it.
const STATE_MAX: u64 = 1 << 20;

/// Which half of the hook runs (`--stage`, named as the OCI runtime spec names hooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Attach (also accepted: createContainer, prestart).
    #[value(name = "createRuntime", aliases = ["createContainer", "prestart"])]
    Create,
    /// Remove the pins.
    #[value(name = "poststop")]
    Poststop,
}

/// The names `--stage` takes (clap's), for callers that read a stage from text.
impl std::str::FromStr for Stage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        <Self as clap::ValueEnum>::from_str(s, false).map_err(|_| {
            invalid(format!(
                "stage '{s}' is not one bindguard runs at; use createRuntime or poststop"
            ))
        })
    }
}

/// What the hook did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No `io.bindguard.dev` annotation: nothing to do.
    NotAnnotated,
    Bound {
        cgroup: PathBuf,
        dev: String,
    },
    Cleaned {
        removed: usize,
    },
}

fn invalid(what: String) -> Error {
    Error::InvalidInput { what }
}

/// `bindguard oci-hook [--stage STAGE]`: runs the hook on the state on stdin, and says on
/// stderr what it did.
pub fn run(stage: Option<Stage>) -> anyhow::Result<()> {
    match hook(std::io::stdin().lock(), stage)? {
        Outcome::NotAnnotated => {}
        Outcome::Bound { cgroup, dev } => {
            eprintln!(
                "bindguard: bound container cgroup {} to {dev}",
                crate::error::printable_path(&cgroup)
            )
        }
        Outcome::Cleaned { removed } => {
            eprintln!("bindguard: removed {removed} container binding(s)")
        }
    }
    Ok(())
}

/// Runs the hook on the state read from `input`.
pub fn hook(input: impl Read, stage: Option<Stage>) -> anyhow::Result<Outcome> {
    let mut text = String::new();
    input
        .take(STATE_MAX + 1)
        .read_to_string(&mut text)
        .context("reading the OCI state from stdin")?;
    if text.len() as u64 > STATE_MAX {
        return Err(invalid(format!(
            "the OCI state on stdin is larger than {STATE_MAX} bytes; refusing it"
        ))
        .into());
    }
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("the OCI state on stdin is not valid JSON ({e})")))?;
    let has_status = raw.get("status").is_some();
    let state: State = serde_json::from_value(raw).map_err(|e| {
        invalid(format!(
            "the OCI state on stdin does not follow the runtime spec ({e})"
        ))
    })?;
    let annotations = match state.annotations() {
        Some(a) if a.contains_key(DEV) => a.clone(),
        _ => bundle_annotations(state.bundle()),
    };
    let Some(dev) = annotations.get(DEV).map(|d| d.trim().to_string()) else {
        return Ok(Outcome::NotAnnotated);
    };
    let stage = match stage {
        Some(s) => s,
        None if !has_status => {
            return Err(invalid(
                "the OCI state has no status, so the stage is unknown; pass --stage createRuntime or --stage poststop".into(),
            )
            .into());
        }
        None => match state.status() {
            ContainerState::Creating | ContainerState::Created => Stage::Create,
            ContainerState::Stopped => Stage::Poststop,
            ContainerState::Running => {
                return Err(invalid(
                    "the container is already running: its processes may hold unbound sockets; run the hook at createRuntime".into(),
                )
                .into());
            }
        },
    };
    match stage {
        Stage::Create => create(&state, &dev, &annotations),
        Stage::Poststop => poststop(&state),
    }
}

fn bundle_annotations(bundle: &Path) -> HashMap<String, String> {
    Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|s| s.annotations().clone())
        .unwrap_or_default()
}

fn create(
    state: &State,
    dev: &str,
    annotations: &HashMap<String, String>,
) -> anyhow::Result<Outcome> {
    let opts = Options {
        maker: Maker::Oci,
        ..options_from(annotations)?
    };
    netdev::validate_name(dev)?;
    let pid = state.pid().filter(|p| *p > 0).ok_or_else(|| {
        invalid(format!(
            "the OCI state of container {} has no pid",
            state.id()
        ))
    })?;
    let path = cgroup::of_process(pid)?;
    // The container's cgroup must be below the runtime's, never the runtime's own or one of
    // its ancestors: binding that would bind the runtime (and whatever else lives there).
    if let Ok(own) = cgroup::of_process(std::process::id() as i32)
        && own.starts_with(&path)
    {
        return Err(invalid(format!(
            "container {} has no cgroup v2 of its own ({} contains the runtime's {}); refusing to bind the runtime",
            crate::error::quote(state.id()),
            path.display(),
            own.display()
        ))
        .into());
    }
    let cg: Cgroup = cgroup::resolve(&path)?;
    let ns = Netns::open(Path::new(&format!("/proc/{pid}/ns/net")))?;
    let iface = netdev::resolve(dev, &ns)?;
    crate::binding::bind(&cg, &iface, &opts, SocketPass::Now)
        .and_then(|bound| bound.unreached())
        .with_context(|| format!("binding container {} to {dev}", state.id()))?;
    // A container that failed after its createRuntime hook never reaches poststop, so its
    // binding outlives its cgroup: each start sweeps such leftovers (those the kernel already
    // released, without waiting), or a node collects them. The container is bound whatever
    // the sweep finds.
    if let Err(e) = enforcer::remove_stale_within(std::time::Duration::ZERO) {
        eprintln!("bindguard: warning: sweeping bindings of deleted cgroups: {e:#}");
    }
    Ok(Outcome::Bound {
        cgroup: cg.path,
        dev: dev.to_string(),
    })
}

fn poststop(state: &State) -> anyhow::Result<Outcome> {
    if !pins::bpffs_mounted() {
        return Ok(Outcome::Cleaned { removed: 0 });
    }
    // One lock for both steps: the sweep below is given it rather than taking it again (a
    // second flock of the root from this process would wait for this one forever).
    let lock = pins::lock()?;
    let mut removed = 0;
    // The runtime may remove the container's cgroup before poststop (runc does): the kernel
    // then detached the programs and the pins are leftovers, removed with every other such.
    // If the cgroup still exists (named by linux.cgroupsPath, or runc's default /<id>), its
    // binding is removed directly — only if this hook made it: the state (id, bundle) comes
    // from whoever runs the runtime, and may name a cgroup `attach` or the config bound.
    let config = Spec::load(state.bundle().join("config.json")).ok();
    let cgroups_path = config
        .as_ref()
        .and_then(|c| c.linux().as_ref())
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(state.id()));
    if let Ok(mount) = cgroup::cgroup2_mount() {
        let candidate = mount.join(cgroups_path.strip_prefix("/").unwrap_or(&cgroups_path));
        if let Ok(cg) = cgroup::resolve(&candidate) {
            let dir = pins::binding_dir(cg.id);
            if dir.exists() && enforcer::maker(&dir) == Some(Maker::Oci) {
                pins::remove_dir(&dir, &lock)?;
                crate::kernel::progset::forget_user(cg.id, &lock);
                removed += 1;
            }
        }
    }
    removed += enforcer::remove_stale_locked(enforcer::STALE_GRACE, &lock)?;
    Ok(Outcome::Cleaned { removed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::policy::Mode;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_become_options() {
        let o = options_from(&ann(&[
            (DEV, "eth1"),
            (MARK, "0x10"),
            (PRIORITY, "6"),
            (MODE, "strict"),
            (ALLOW_LOOPBACK, "true"),
        ]))
        .unwrap();
        assert_eq!(
            o,
            Options {
                mark: Some(16),
                priority: Some(6),
                mode: Mode::Strict,
                allow_loopback: true,
                ..Options::default()
            }
        );
        assert_eq!(
            options_from(&ann(&[(DEV, "eth1")])).unwrap(),
            Options::default()
        );
        for bad in [
            (MARK, "x"),
            (PRIORITY, "-1"),
            (MODE, "loose"),
            (ALLOW_LOOPBACK, "yes"),
            (ALLOW_FAMILY, "packet,nonsense"),
        ] {
            let e = options_from(&ann(&[bad])).unwrap_err();
            assert!(e.to_string().contains(bad.0), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
        assert!(options_from(&ann(&[(MODE, "bind"), (ALLOW_LOOPBACK, "1")])).is_err());
    }

    #[test]
    fn unannotated_containers_are_left_alone() {
        let state = r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":1,"bundle":"/nonexistent"}"#;
        assert_eq!(hook(state.as_bytes(), None).unwrap(), Outcome::NotAnnotated);
    }

    #[test]
    fn bad_state_is_refused() {
        for (input, needle) in [
            ("not json", "not valid JSON"),
            (
                r#"{"id":"c","bundle":"/x","annotations":{"io.bindguard.dev":"eth0"}}"#,
                "no status",
            ),
            (
                r#"{"id":"c","status":"creating","bundle":"/x","annotations":{"io.bindguard.dev":"eth0"}}"#,
                "has no pid",
            ),
            (
                r#"{"id":"c","status":"running","pid":1,"bundle":"/x","annotations":{"io.bindguard.dev":"eth0"}}"#,
                "already running",
            ),
            (
                r#"{"id":"c","status":"creating","pid":1,"bundle":"/x","annotations":{"io.bindguard.dev":"eth0","io.bindguard.mark":"z"}}"#,
                "io.bindguard.mark",
            ),
        ] {
            let e = hook(input.as_bytes(), None).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{input}: {e:#}");
            assert_eq!(crate::error::exit_code(&e), 2, "{input}");
        }
        assert_eq!("poststop".parse::<Stage>().unwrap(), Stage::Poststop);
        for create in ["createRuntime", "createContainer", "prestart"] {
            assert_eq!(create.parse::<Stage>().unwrap(), Stage::Create);
        }
        assert_eq!("poststart".parse::<Stage>().unwrap_err().exit_code(), 2);
    }
}
