//! `--metrics ADDR`: the services' Prometheus endpoint, `/healthz` and `/readyz`.
//!
//! The services say what they hold ([`Metrics::publish`]: one [`Bound`] per binding, with the
//! labels that name it, and a count of bindings by mode and state); nothing is counted per
//! packet or per event here. The kernel's counters are read when Prometheus scrapes: one map
//! lookup per binding in the running build's program set. A binding that goes is no longer
//! published, and its series go with it (label cardinality: one series set per binding).
//!
//! The listener is hyper (HTTP/1) on a current-thread tokio runtime in a thread of its own:
//! both services' loops do blocking work (the daemon's apply of thousands of bindings, the
//! plugin's socket reads), and a liveness probe that waits for them would restart a healthy
//! agent. A scrape reads the kernel from that thread, never the services' state but what
//! they published. Three paths, GET only:
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | the exposition: OpenMetrics text when the client accepts it (Prometheus asks for it), else the classic text format 0.0.4 (curl, `promtool check metrics`) |
//! | `/healthz` | 200 while the process serves (a wedged runtime answers nothing) |
//! | `/readyz`  | 200 once the service said it is ready (daemon: config applied; nri: registered and synchronized), else 503 |
//!
//! Nothing below `service` knows about metrics.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use bindguard_common::Counters;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::{
    binding::{enforcer, policy::Mode},
    kernel::pins,
};

/// The port the DaemonSet and the docs use (`--metrics 0.0.0.0:9477`).
pub const DEFAULT_PORT: u16 = 9477;

/// One binding as the service knows it: its cgroup and the labels that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub cgroup_id: u64,
    /// `cgroup` for the daemon; `namespace`, `pod`, `container` for NRI bindings.
    pub labels: Vec<(&'static str, String)>,
}

/// What a service publishes after each change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// (mode, state) → how many bindings.
    pub bindings: BTreeMap<(&'static str, &'static str), u64>,
    /// The bindings whose kernel counters are exposed.
    pub bound: Vec<Bound>,
}

/// The states of `bindguard_bindings`.
pub const STATES: &[&str] = &[
    "enforcing",
    "waiting-for-interface",
    "waiting-for-cgroup",
    "failed",
    "unbound",
];

/// One kernel counter of a binding.
type Read = fn(&Counters) -> u64;

/// The refusal counters by the hook family that refuses (the `hook` label).
const REFUSALS: &[(&str, Read)] = &[
    ("sock_create", |c| c.sockets_refused_netns),
    ("setsockopt", |c| c.sockopt_refused),
    ("sock_addr", |c| c.addr_refused),
    ("mptcp", |c| c.mptcp_refused),
    ("socket_family", |c| c.families_refused),
    ("fd_receive", |c| c.fds_refused),
    ("multicast", |c| c.multicast_refused),
    ("tun", |c| c.devices_refused),
    ("ptrace", |c| c.ptrace_refused),
];

/// Packets dropped: (direction, reason).
const DROPS: &[(&str, &str, Read)] = &[
    ("egress", "interface", |c| c.egress_dropped),
    ("ingress", "interface", |c| c.ingress_dropped),
    ("egress", "mark", |c| c.mark_dropped),
];

/// A service's metrics; clones share them.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    ready: AtomicBool,
    snapshot: Arc<Mutex<Snapshot>>,
    interface_events: Family<Vec<(String, String)>, Counter>,
    reconcile: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let interface_events = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "bindguard_interface_events",
            "Interface events that concerned bindings (new, deleted, renamed)",
            interface_events.clone(),
        );
        // From a one-map-write link event (~0.1 ms) to a start that loads programs (~1 s).
        let reconcile = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        registry.register_with_unit(
            "bindguard_reconcile_duration",
            "How long one reconcile pass took (start, reload, link event; NRI Synchronize)",
            prometheus_client::registry::Unit::Seconds,
            reconcile.clone(),
        );
        registry.register_collector(Box::new(Kernel {
            snapshot: snapshot.clone(),
        }));
        Self(Arc::new(Inner {
            registry,
            ready: AtomicBool::new(false),
            snapshot,
            interface_events,
            reconcile,
        }))
    }

    /// Replaces what the service holds (after each change).
    pub fn publish(&self, snapshot: Snapshot) {
        *self.0.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::SeqCst);
    }

    pub fn interface_event(&self, kind: &str) {
        self.0
            .interface_events
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
    }

    pub fn reconciled(&self, took: Duration) {
        self.0.reconcile.observe(took.as_secs_f64());
    }

    /// The exposition in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a collector's error would be a bug in this file.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// Binds `addr` now (so that a port in use fails the start) and serves it on the current
    /// tokio runtime.
    async fn serve(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for --metrics"))?;
        tracing::info!("metrics, /healthz and /readyz on http://{addr}");
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // EMFILE and the like: wait rather than spin.
                        tracing::warn!("metrics: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, Infallible>(me.answer(&req)) }
                    });
                    // A client that goes away mid-request is not worth a log line.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(())
    }

    /// Binds `addr` now and serves it from a thread of its own.
    pub fn serve_on_thread(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the metrics runtime")?;
        rt.block_on(self.serve(addr))?;
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .context("starting the metrics thread")?;
        Ok(())
    }

    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, kind: &str, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", kind)
                .body(Full::new(Bytes::from(body)))
                .expect("a response of constant parts")
        };
        const TEXT: &str = "text/plain; charset=utf-8";
        if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                let openmetrics = req
                    .headers()
                    .get_all(hyper::header::ACCEPT)
                    .iter()
                    .any(|v| {
                        v.to_str()
                            .is_ok_and(|v| v.contains("application/openmetrics-text"))
                    });
                if openmetrics {
                    reply(
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        self.encode(),
                    )
                } else {
                    reply(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        classic(&self.encode()),
                    )
                }
            }
            "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" if self.0.ready.load(Ordering::SeqCst) => {
                reply(StatusCode::OK, TEXT, "ready\n".into())
            }
            "/readyz" => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n".into()),
            _ => reply(
                StatusCode::NOT_FOUND,
                TEXT,
                "bindguard serves /metrics, /healthz and /readyz\n".into(),
            ),
        }
    }
}

/// OpenMetrics text → the classic Prometheus text format (0.0.4), which names a counter's
/// family with its `_total` suffix, has no info type (a gauge of 1 named `_info`), and no
/// `# UNIT` or `# EOF` lines. Samples are the same in both.
fn classic(openmetrics: &str) -> String {
    let kinds: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let renamed = |name: &str| match kinds.get(name) {
        Some(&"counter") => (format!("{name}_total"), "counter"),
        Some(&"info") => (format!("{name}_info"), "gauge"),
        Some(&"unknown") => (name.to_string(), "untyped"),
        Some(kind) => (name.to_string(), *kind),
        None => (name.to_string(), "untyped"),
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|l| l.split_once(' ')) {
            out += &format!("# HELP {} {help}\n", renamed(name).0);
        } else if let Some((name, _)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' '))
        {
            let (name, kind) = renamed(name);
            out += &format!("# TYPE {name} {kind}\n");
        } else {
            out += line;
            out.push('\n');
        }
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What is read at scrape time: the published bindings' kernel counters, the open escape rows
/// and the build.
#[derive(Debug)]
struct Kernel {
    snapshot: Arc<Mutex<Snapshot>>,
}

type Labels = Vec<(&'static str, String)>;

impl Kernel {
    /// Each published binding with its counters (one lookup each in the running build's set;
    /// a binding on another build's set is read through its pins).
    fn counters(snapshot: &Snapshot) -> Vec<(Labels, Counters)> {
        let set = enforcer::current_set().ok();
        snapshot
            .bound
            .iter()
            .filter_map(|b| {
                let c = set
                    .as_ref()
                    .and_then(|s| s.read_counters(b.cgroup_id).ok())
                    .or_else(|| enforcer::read_counters(&pins::binding_dir(b.cgroup_id)).ok())?;
                Some((b.labels.clone(), c))
            })
            .collect()
    }

    /// The escape rows strict mode leaves open with the running build's programs on this
    /// kernel (as `attach` warns about them).
    fn open_rows() -> Option<usize> {
        let set = enforcer::current_set().ok()?;
        let forced_off = crate::kernel::lsm::forced_unavailable();
        Some(set.open_rows(|h| !(h.is_lsm() && forced_off)).len())
    }
}

impl Collector for Kernel {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();

        let mut m = encoder.encode_descriptor(
            "bindguard_bindings",
            "Configured or announced bindings by mode and state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        // Both modes and every state, 0 when none: a dashboard or an alert on failed > 0 has
        // its series from the first scrape (ten series in all).
        for mode in [Mode::Strict, Mode::Bind].map(Mode::as_str) {
            for state in STATES {
                let n = snapshot.bindings.get(&(mode, state)).copied().unwrap_or(0);
                ConstGauge::new(n as i64)
                    .encode(m.encode_family(&[("mode", mode), ("state", state)])?)?;
            }
        }

        let counters = Self::counters(&snapshot);
        let mut m = encoder.encode_descriptor(
            "bindguard_refusals",
            "Calls the binding's programs refused, by hook family",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, c) in &counters {
            for (hook, get) in REFUSALS {
                let mut l = vec![("hook", (*hook).to_string())];
                l.extend(labels.iter().cloned());
                ConstCounter::new(get(c)).encode(m.encode_family(&l)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "bindguard_packets_dropped",
            "Packets the binding's skb filters dropped (strict mode)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, c) in &counters {
            for (direction, reason, get) in DROPS {
                let mut l = vec![
                    ("direction", (*direction).to_string()),
                    ("reason", (*reason).to_string()),
                ];
                l.extend(labels.iter().cloned());
                ConstCounter::new(get(c)).encode(m.encode_family(&l)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "bindguard_events_dropped",
            "Refusal events not sent to monitor (rate limit or full ring); the refusals are counted",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, c) in &counters {
            ConstCounter::new(c.events_dropped).encode(m.encode_family(labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "bindguard_dns_redirected",
            "DNS queries sent to the binding's resolver instead of the address named (--dns)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, c) in &counters {
            ConstCounter::new(c.dns_redirected).encode(m.encode_family(labels)?)?;
        }
        let mut m = encoder.encode_descriptor(
            "bindguard_sockets_bound",
            "Sockets the binding's sock_create program bound to its interface",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (labels, c) in &counters {
            ConstCounter::new(c.sockets_bound).encode(m.encode_family(labels)?)?;
        }

        if let Some(open) = Self::open_rows() {
            let m = encoder.encode_descriptor(
                "bindguard_escape_rows_open",
                "Escape rows strict mode cannot close on this kernel (bindguard doctor says which and why)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(open as i64).encode(m)?;
        }

        let mut m = encoder.encode_descriptor(
            "bindguard_build",
            "The running build",
            None,
            prometheus_client::metrics::MetricType::Info,
        )?;
        m.encode_info(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("BINDGUARD_GIT_COMMIT")),
            ("ebpf", env!("BINDGUARD_EBPF_HASH")),
        ])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_the_service_and_paths_are_fixed() {
        let m = Metrics::new();
        let get = |path: &str| {
            m.answer(&Request::get(path).body(()).unwrap())
                .status()
                .as_u16()
        };
        assert_eq!(get("/readyz"), 503);
        assert_eq!(get("/healthz"), 200);
        m.set_ready(true);
        assert_eq!(get("/readyz"), 200);
        assert_eq!(get("/nope"), 404);
        let post = m.answer(&Request::post("/metrics").body(()).unwrap());
        assert_eq!(post.status().as_u16(), 405);
        let kind = |accept: &str| {
            let r = m.answer(
                &Request::get("/metrics")
                    .header("accept", accept)
                    .body(())
                    .unwrap(),
            );
            r.headers()["content-type"].to_str().unwrap().to_string()
        };
        assert!(
            kind("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
                .starts_with("application/openmetrics-text")
        );
        assert!(kind("*/*").starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn the_classic_format_names_counter_families_with_total_and_drops_eof() {
        let om = "# HELP a_refusals Calls refused.\n# TYPE a_refusals counter\na_refusals_total{hook=\"x\"} 3\n# HELP a_build The build.\n# TYPE a_build info\na_build_info{v=\"1\"} 1\n# HELP a_d Secs.\n# TYPE a_d histogram\n# UNIT a_d seconds\na_d_count 0\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_refusals_total Calls refused.\n# TYPE a_refusals_total counter\na_refusals_total{hook=\"x\"} 3\n# HELP a_build_info The build.\n# TYPE a_build_info gauge\na_build_info{v=\"1\"} 1\n# HELP a_d Secs.\n# TYPE a_d histogram\na_d_count 0\n"
        );
    }

    #[test]
    fn the_exposition_names_states_units_and_build() {
        let m = Metrics::new();
        let mut s = Snapshot::default();
        s.bindings.insert(("strict", "enforcing"), 2);
        m.publish(s);
        m.reconciled(Duration::from_millis(3));
        m.interface_event("deleted");
        let text = m.encode();
        for want in [
            "bindguard_bindings{mode=\"strict\",state=\"enforcing\"} 2",
            "bindguard_bindings{mode=\"strict\",state=\"failed\"} 0",
            "bindguard_bindings{mode=\"bind\",state=\"enforcing\"} 0",
            "# TYPE bindguard_reconcile_duration_seconds histogram",
            "bindguard_reconcile_duration_seconds_count 1",
            "bindguard_interface_events_total{kind=\"deleted\"} 1",
            "bindguard_build_info{version=",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
