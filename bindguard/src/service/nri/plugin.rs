//! The NRI events bindguard acts on, one method each (containerd/nri's plugin shape: a struct
//! that implements only the events it needs).
//!
//! | event | what happens |
//! |---|---|
//! | Configure | subscribe to the events below |
//! | Synchronize | bind every annotated running container that is not bound; remove NRI-made bindings no container wants |
//! | CreateContainer | check the annotations and that the interface exists in the pod's namespace; refuse the container otherwise |
//! | StartContainer | bind the container's cgroup (its task exists, its first instruction has not run); refuse the start if that fails |
//! | RemoveContainer, StopPodSandbox, RemovePodSandbox | hand the pins of deleted cgroups to the cleaner thread |

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::mpsc::Sender,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use prost::Message as _;

use super::{
    api::{self, Container, ContainerState, Event, PodSandbox},
    ttrpc::{Request, Response, Status, code},
};
use crate::{
    Error,
    binding::{
        SocketPass, annotations, cgroup, enforcer, netdev,
        netns::Netns,
        policy::{Existing, Maker, Options},
        unbound,
    },
    error::quote,
    kernel::pins,
    service::metrics::{self, Metrics},
};

pub const SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";

/// The events the plugin subscribes to. NRI's mask has bit `event - 1` for each event.
pub fn events() -> i32 {
    [
        Event::StopPodSandbox,
        Event::RemovePodSandbox,
        Event::CreateContainer,
        Event::StartContainer,
        Event::RemoveContainer,
    ]
    .iter()
    .fold(0, |mask, e| mask | 1 << (*e as i32 - 1))
}

/// Work that may wait on the kernel (a deleted cgroup's links detach from a workqueue): done
/// by the cleaner thread, never on the loop that answers the runtime within its 2 s timeout.
pub enum Cleanup {
    /// A container that had an NRI-made binding on cgroup `id` was removed.
    Container(u64),
    /// A pod went: remove the pins of every deleted cgroup.
    Sweep,
}

/// The `io.bindguard.*` annotations a container is bound with: its pod's, overridden key by
/// key by its own. `None` when neither names an interface.
pub fn wanted(pod: Option<&PodSandbox>, ctr: &Container) -> Option<HashMap<String, String>> {
    let mut merged = HashMap::new();
    for source in [pod.map(|p| &p.annotations), Some(&ctr.annotations)]
        .into_iter()
        .flatten()
    {
        for key in annotations::KEYS {
            if let Some(v) = source.get(*key) {
                merged.insert(key.to_string(), v.clone());
            }
        }
    }
    merged.contains_key(annotations::DEV).then_some(merged)
}

/// Who a message is about: `container NAME (ID) of pod NAMESPACE/NAME`.
fn who(pod: Option<&PodSandbox>, ctr: &Container) -> String {
    let short = &ctr.id[..ctr.id.len().min(12)];
    match pod {
        Some(p) => format!(
            "container '{}' ({short}) of pod {}/{}",
            quote(&ctr.name),
            quote(&p.namespace),
            quote(&p.name)
        ),
        None => format!("container '{}' ({short})", quote(&ctr.name)),
    }
}

/// The options and interface name the annotations ask for; bad values are refused here.
fn options(ann: &HashMap<String, String>, existing: Existing) -> Result<(Options, String), Error> {
    let opts = Options {
        maker: Maker::Nri,
        existing,
        ..annotations::options_from(ann)?
    };
    let dev = ann[annotations::DEV].trim().to_string();
    netdev::validate_name(&dev)?;
    Ok((opts, dev))
}

/// The pod's network namespace: its sandbox process's, else the one NRI names; a pod with
/// neither shares the node's (hostNetwork), which is the plugin's own (the DaemonSet runs
/// with hostNetwork).
fn pod_netns(pod: Option<&PodSandbox>) -> anyhow::Result<Netns> {
    if let Some(p) = pod {
        if p.pid > 0 {
            return Netns::open(Path::new(&format!("/proc/{}/ns/net", p.pid)));
        }
        let named = p.linux.as_ref().and_then(|l| {
            l.namespaces
                .iter()
                .find(|n| n.r#type == "network" && !n.path.is_empty())
        });
        if let Some(ns) = named {
            return Netns::open(Path::new(&ns.path));
        }
    }
    Netns::current()
}

/// A container the plugin bound: its cgroup, its mode and the labels its series carry.
struct Bound {
    cgroup_id: u64,
    mode: &'static str,
    labels: Vec<(&'static str, String)>,
}

/// The labels of a container's series: `namespace`, `pod`, `container`.
fn labels(pod: Option<&PodSandbox>, ctr: &Container) -> Vec<(&'static str, String)> {
    vec![
        (
            "namespace",
            pod.map(|p| p.namespace.clone()).unwrap_or_default(),
        ),
        ("pod", pod.map(|p| p.name.clone()).unwrap_or_default()),
        ("container", ctr.name.clone()),
    ]
}

pub struct Plugin {
    /// Container id → the binding this plugin made for it.
    bound: HashMap<String, Bound>,
    /// Container id → (mode, entry for `status`) of annotated running containers Synchronize
    /// could not bind.
    unbound: HashMap<String, (&'static str, unbound::Unbound)>,
    /// The list last written to [`unbound::NRI_PATH`].
    published: Vec<unbound::Unbound>,
    /// Set once the first Synchronize was handled (with `/readyz`).
    pub synchronized: bool,
    metrics: Option<Metrics>,
    /// Synchronize requests marked `more`, collected until the last one.
    pending: Option<(Vec<PodSandbox>, Vec<Container>)>,
    cleanup: Sender<Cleanup>,
}

/// A refusal the runtime is told about: the container is not created or not started.
fn refuse(what: impl std::fmt::Display) -> Status {
    Status {
        code: code::FAILED_PRECONDITION,
        message: format!("bindguard: {what}"),
    }
}

impl Plugin {
    pub fn new(cleanup: Sender<Cleanup>, metrics: Option<Metrics>) -> Self {
        Self {
            bound: HashMap::new(),
            unbound: HashMap::new(),
            published: Vec::new(),
            synchronized: false,
            metrics,
            pending: None,
            cleanup,
        }
    }

    /// What `/metrics` exposes: the bindings this plugin made (labelled by namespace, pod and
    /// container) and the annotated containers that run unbound; those also for `status`.
    fn publish(&mut self) {
        let mut now: Vec<unbound::Unbound> =
            self.unbound.values().map(|(_, u)| u.clone()).collect();
        now.sort_by(|a, b| a.origin.cmp(&b.origin));
        if now != self.published {
            match unbound::publish(Path::new(unbound::NRI_PATH), &now) {
                Ok(()) => self.published = now,
                Err(e) => tracing::warn!("cannot write {}: {e}", unbound::NRI_PATH),
            }
        }
        let Some(m) = &self.metrics else { return };
        let mut snap = metrics::Snapshot::default();
        for b in self.bound.values() {
            *snap.bindings.entry((b.mode, "enforcing")).or_default() += 1;
            snap.bound.push(metrics::Bound {
                cgroup_id: b.cgroup_id,
                labels: b.labels.clone(),
            });
        }
        for (mode, _) in self.unbound.values() {
            *snap.bindings.entry((mode, "unbound")).or_default() += 1;
        }
        m.publish(snap);
    }

    /// Answers one request of the runtime.
    pub fn handle(&mut self, req: &Request) -> Response {
        let result = if req.service != SERVICE {
            Err(Status {
                code: code::UNIMPLEMENTED,
                message: format!("bindguard serves {SERVICE}, not {}", quote(&req.service)),
            })
        } else {
            self.dispatch(&req.method, &req.payload)
        };
        match result {
            Ok(payload) => Response {
                status: None,
                payload: payload.into(),
            },
            Err(status) => Response {
                status: Some(status),
                payload: Default::default(),
            },
        }
    }

    fn dispatch(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, Status> {
        fn decode<M: prost::Message + Default>(p: &[u8]) -> Result<M, Status> {
            M::decode(p).map_err(|e| Status {
                code: code::INVALID_ARGUMENT,
                message: format!("bindguard: undecodable request ({e})"),
            })
        }
        match method {
            "Configure" => {
                let req: api::ConfigureRequest = decode(payload)?;
                tracing::info!(
                    "configured by {} {} (request timeout {} ms)",
                    req.runtime_name,
                    req.runtime_version,
                    req.request_timeout
                );
                Ok(api::ConfigureResponse { events: events() }.encode_to_vec())
            }
            "Synchronize" => {
                let req: api::SynchronizeRequest = decode(payload)?;
                let (pods, ctrs) = self.pending.get_or_insert_default();
                pods.extend(req.pods);
                ctrs.extend(req.containers);
                if !req.more {
                    let (pods, ctrs) = self.pending.take().unwrap_or_default();
                    let started = Instant::now();
                    self.synchronize(&pods, &ctrs);
                    self.synchronized = true;
                    if let Some(m) = &self.metrics {
                        m.reconciled(started.elapsed());
                    }
                }
                Ok(api::SynchronizeResponse {
                    update: Vec::new(),
                    more: req.more,
                }
                .encode_to_vec())
            }
            "Shutdown" => Ok(api::Empty {}.encode_to_vec()),
            "CreateContainer" => {
                let req: api::CreateContainerRequest = decode(payload)?;
                self.create_container(req.pod.as_ref(), req.container.as_ref())?;
                Ok(api::CreateContainerResponse::default().encode_to_vec())
            }
            "UpdateContainer" => Ok(api::UpdateContainerResponse::default().encode_to_vec()),
            "StopContainer" => Ok(api::StopContainerResponse::default().encode_to_vec()),
            "StateChange" => {
                let evt: api::StateChangeEvent = decode(payload)?;
                self.state_change(evt)?;
                Ok(api::Empty {}.encode_to_vec())
            }
            other => Err(Status {
                code: code::UNIMPLEMENTED,
                message: format!("bindguard does not serve {}", quote(other)),
            }),
        }
    }

    /// Refuses a container whose binding cannot be made: bad annotations, or an interface the
    /// pod's network namespace lacks. Nothing is bound yet (no task, no cgroup).
    fn create_container(
        &mut self,
        pod: Option<&PodSandbox>,
        ctr: Option<&Container>,
    ) -> Result<(), Status> {
        let Some(ctr) = ctr else { return Ok(()) };
        let Some(ann) = wanted(pod, ctr) else {
            return Ok(());
        };
        let started = Instant::now();
        let check = || -> anyhow::Result<String> {
            let (_, dev) = options(&ann, Existing::Keep)?;
            netdev::resolve(&dev, &pod_netns(pod)?)?;
            Ok(dev)
        };
        let dev = check().map_err(|e| {
            let msg = format!("{}: {}", who(pod, ctr), crate::error::one_line(&e));
            tracing::warn!("refused {msg}");
            refuse(msg)
        })?;
        tracing::info!(
            "admitted {}: {dev} exists in its pod's namespace (checked in {:.1} ms)",
            who(pod, ctr),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    fn state_change(&mut self, evt: api::StateChangeEvent) -> Result<(), Status> {
        let pod = evt.pod.as_ref();
        match Event::try_from(evt.event) {
            Ok(Event::StartContainer) => {
                let Some(ctr) = evt.container.as_ref() else {
                    return Ok(());
                };
                let Some(ann) = wanted(pod, ctr) else {
                    return Ok(());
                };
                self.bind(pod, ctr, &ann, Existing::Keep).map_err(|e| {
                    let msg = format!("{}: {}", who(pod, ctr), crate::error::one_line(&e));
                    tracing::warn!("refused the start of {msg}");
                    refuse(msg)
                })
            }
            Ok(Event::RemoveContainer) => {
                if let Some(c) = &evt.container {
                    self.unbound.remove(&c.id);
                    if let Some(b) = self.bound.remove(&c.id) {
                        let _ = self.cleanup.send(Cleanup::Container(b.cgroup_id));
                    }
                    self.publish();
                }
                Ok(())
            }
            Ok(Event::StopPodSandbox | Event::RemovePodSandbox) => {
                let _ = self.cleanup.send(Cleanup::Sweep);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Binds the cgroup of `ctr`'s first process to the annotated interface of its network
    /// namespace. A binding someone else made there (a config, an OCI hook) is left alone.
    fn bind(
        &mut self,
        pod: Option<&PodSandbox>,
        ctr: &Container,
        ann: &HashMap<String, String>,
        existing: Existing,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let (opts, dev) = options(ann, existing)?;
        if ctr.pid == 0 {
            return Err(Error::InvalidInput {
                what: "the runtime names no process for the container; it cannot be bound".into(),
            }
            .into());
        }
        let pid = ctr.pid as i32;
        let path = cgroup::of_process(pid)?;
        // Never the plugin's own cgroup or one above it: that would bind the node agent.
        if let Ok(own) = cgroup::self_path()
            && own.starts_with(&path)
        {
            return Err(Error::InvalidInput {
                what: format!(
                    "the container has no cgroup of its own ({} contains bindguard's {})",
                    path.display(),
                    own.display()
                ),
            }
            .into());
        }
        let cg = cgroup::resolve(&path)?;
        let dir = pins::binding_dir(cg.id);
        if dir.exists() && enforcer::maker(&dir) != Some(Maker::Nri) {
            tracing::info!(
                "{}: cgroup {} already has a binding bindguard nri did not make; left as it is",
                who(pod, ctr),
                path.display()
            );
            return Ok(());
        }
        let ns = Netns::open(Path::new(&format!("/proc/{pid}/ns/net")))?;
        let iface = netdev::resolve(&dev, &ns)?;
        let bound = crate::binding::bind(&cg, &iface, &opts, SocketPass::Now)
            .with_context(|| format!("binding cgroup {} to {dev}", path.display()))?;
        for (s, _) in bound.sockets.iter().flat_map(|p| &p.ended) {
            tracing::warn!(
                "{}: ended socket {} {} -> {} made while it ran unbound",
                who(pod, ctr),
                s.protocol,
                s.local,
                s.remote
            );
        }
        // The binding stays (it governs every new socket); what could not be reached is an
        // error the caller logs, and status shows sockets-unreached.
        bound
            .unreached()
            .with_context(|| format!("ending the sockets {} made unbound", who(pod, ctr)))?;
        self.bound.insert(
            ctr.id.clone(),
            Bound {
                cgroup_id: cg.id,
                mode: opts.mode.as_str(),
                labels: labels(pod, ctr),
            },
        );
        self.unbound.remove(&ctr.id);
        self.publish();
        tracing::info!(
            "bound {} (cgroup {}) to {dev} in {:.1} ms",
            who(pod, ctr),
            path.display(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// The plugin (re)connected: every annotated container that runs gets its binding (sockets
    /// it made while unbound are destroyed), and NRI-made bindings of cgroups no annotated
    /// container lives in are removed. Nothing else is touched.
    fn synchronize(&mut self, pods: &[PodSandbox], ctrs: &[Container]) {
        let pods: HashMap<&str, &PodSandbox> = pods.iter().map(|p| (p.id.as_str(), p)).collect();
        self.bound.clear();
        self.unbound.clear();
        let mut keep = HashSet::new();
        let live = [
            ContainerState::ContainerCreated,
            ContainerState::ContainerRunning,
            ContainerState::ContainerPaused,
        ];
        for ctr in ctrs {
            if !live.iter().any(|s| *s as i32 == ctr.state) || ctr.pid == 0 {
                continue;
            }
            let pod = pods.get(ctr.pod_sandbox_id.as_str()).copied();
            let Some(ann) = wanted(pod, ctr) else {
                continue;
            };
            let bound_before = cgroup::of_process(ctr.pid as i32)
                .ok()
                .and_then(|p| cgroup::resolve(&p).ok())
                .map(|cg| (cg.id, pins::binding_dir(cg.id).exists()));
            let existing = match bound_before {
                Some((_, true)) => Existing::Keep,
                _ => Existing::Destroy,
            };
            match self.bind(pod, ctr, &ann, existing) {
                Ok(()) => {}
                // A running container cannot be refused; it stays as it is, and says so (log,
                // and bindguard_bindings{state="unbound"}).
                Err(e) => {
                    tracing::error!(
                        "{} runs UNBOUND: {}",
                        who(pod, ctr),
                        crate::error::one_line(&e)
                    );
                    let mode =
                        annotations::options_from(&ann).map_or("strict", |o| o.mode.as_str());
                    let entry = unbound::Unbound {
                        cgroup: cgroup::of_process(ctr.pid as i32).unwrap_or_default(),
                        origin: format!("nri: {}", who(pod, ctr)),
                        why: crate::error::one_line(&e),
                    };
                    self.unbound.insert(ctr.id.clone(), (mode, entry));
                }
            }
            if let Some((id, _)) = bound_before {
                keep.insert(id);
            }
        }
        keep.extend(self.bound.values().map(|b| b.cgroup_id));
        self.publish();
        let mut namer = cgroup::Namer::new();
        for (id, dir) in pins::list() {
            if keep.contains(&id) || enforcer::maker(&dir) != Some(Maker::Nri) {
                continue;
            }
            // A deleted cgroup's pins go with the cleaner's sweep.
            let Some(path) = namer.path(id) else { continue };
            match enforcer::detach(&path) {
                Ok(_) => tracing::info!(
                    "removed the binding of {}: no annotated container lives there",
                    path.display()
                ),
                Err(e) => tracing::warn!(
                    "removing the stale binding of {}: {}",
                    path.display(),
                    crate::error::one_line(&e)
                ),
            }
        }
        let _ = self.cleanup.send(Cleanup::Sweep);
    }
}

/// The cleaner thread: removes the pins of bindings whose cgroups were deleted. It first waits,
/// without the pins lock, for the kernel to detach their links (so `remove_stale`, which holds
/// the lock that `attach` on the event loop needs, finds them detached and is quick).
pub fn cleaner(jobs: std::sync::mpsc::Receiver<Cleanup>) {
    for job in jobs {
        if let Cleanup::Container(id) = job {
            let mut namer = cgroup::Namer::new();
            if let Some(path) = namer.path(id) {
                // The cgroup outlived its container (runc removes it at delete): the binding
                // is removed if this plugin made it.
                let ours = enforcer::maker(&pins::binding_dir(id)) == Some(Maker::Nri);
                if ours && let Err(e) = enforcer::detach(&path) {
                    tracing::warn!(
                        "detaching {}: {}",
                        path.display(),
                        crate::error::one_line(&e)
                    );
                }
            }
        }
        wait_detached(Duration::from_secs(3));
        match enforcer::remove_stale() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} binding(s) of deleted cgroups"),
            Err(e) => tracing::warn!("removing stale bindings: {}", crate::error::one_line(&e)),
        }
    }
}

/// Waits until every binding whose cgroup is gone has been detached by the kernel, or `limit`.
fn wait_detached(limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut namer = cgroup::Namer::new();
    let waiting: Vec<PathBuf> = pins::list()
        .into_iter()
        .filter(|(id, _)| !namer.exists(*id))
        .map(|(_, dir)| dir)
        .collect();
    for dir in waiting {
        while !enforcer::cgroup_gone(&dir) && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn container_annotations_override_the_pods() {
        let pod = PodSandbox {
            annotations: map(&[
                (annotations::DEV, "eth1"),
                (annotations::MODE, "bind"),
                ("other", "x"),
            ]),
            ..Default::default()
        };
        let ctr = Container {
            annotations: map(&[(annotations::MODE, "strict")]),
            ..Default::default()
        };
        let got = wanted(Some(&pod), &ctr).unwrap();
        assert_eq!(
            got,
            map(&[(annotations::DEV, "eth1"), (annotations::MODE, "strict")])
        );
        assert!(wanted(None, &ctr).is_none());
        assert!(wanted(Some(&PodSandbox::default()), &Container::default()).is_none());
    }

    #[test]
    fn the_event_mask_has_bit_event_minus_one() {
        let m = events();
        for e in [4, 6, 11, 2, 3] {
            assert_ne!(m & (1 << (e - 1)), 0, "event {e}");
        }
        assert_eq!(m & (1 << (Event::PostStartContainer as i32 - 1)), 0);
    }

    #[test]
    fn bad_annotations_refuse_the_container_at_create() {
        let (tx, _rx) = std::sync::mpsc::channel();
        let mut p = Plugin::new(tx, None);
        let ctr = Container {
            name: "c".into(),
            id: "0123456789abcdef".into(),
            annotations: map(&[(annotations::DEV, "eth1"), (annotations::MARK, "lots")]),
            ..Default::default()
        };
        let req = Request {
            service: SERVICE.into(),
            method: "CreateContainer".into(),
            payload: api::CreateContainerRequest {
                pod: None,
                container: Some(ctr),
            }
            .encode_to_vec()
            .into(),
            ..Default::default()
        };
        let status = p.handle(&req).status.unwrap();
        assert_eq!(status.code, code::FAILED_PRECONDITION);
        assert!(
            status.message.contains("io.bindguard.mark")
                && status.message.contains("container 'c' (0123456789ab)"),
            "{}",
            status.message
        );
        let unannotated = Request {
            payload: api::CreateContainerRequest::default()
                .encode_to_vec()
                .into(),
            ..req
        };
        assert!(p.handle(&unannotated).status.is_none());
    }
}
