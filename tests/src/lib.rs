//! Test harness: throwaway network topologies, cgroups and listeners, each a guard that removes
//! what it made when dropped (also on panic), with names unique per process and call so tests
//! run in parallel.
//!
//! The topology is the seed scenario: a `host` namespace with two uplinks and two default
//! routes (metric 0 via A, metric 1 via B); peers A and B each own the destination addresses,
//! so *which peer received a datagram or connection* tells which interface it left by.

pub mod container;
pub mod containerd;
pub mod dist;
pub mod listener;
pub mod podman;
pub mod privilege;
pub mod prometheus;
pub mod run;
pub mod scenario;
pub mod topology;

pub use listener::{Listener, Peer};
pub use privilege::{require_root, skip};
pub use run::{Cmd, bindguard_bin, probe_bin};
pub use scenario::{FLOWS, Proto, Scenario};
pub use topology::{TestCgroup, Topology};

use std::sync::atomic::{AtomicU32, Ordering};

/// The capabilities the shipped systemd unit grants (its CapabilityBoundingSet), in setpriv's
/// names: the daemon tests run the service with exactly these.
pub fn unit_caps() -> Vec<String> {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd/bindguard.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// The first two letters of every namespace, cgroup and directory the harness makes:
/// $BINDGUARD_TEST_PREFIX, else `bg`. Engineers who share a machine each set their own, so
/// that what one run leaves or removes is never another's.
pub fn name_prefix() -> String {
    match std::env::var("BINDGUARD_TEST_PREFIX") {
        Ok(p) if p.len() == 2 && p.bytes().all(|b| b.is_ascii_lowercase()) => p,
        Ok(p) => panic!("BINDGUARD_TEST_PREFIX={p:?}: give two lowercase letters"),
        Err(_) => "bg".into(),
    }
}

/// A short name unique to this process and call: `<prefix><pid><n>`, at most 15 bytes.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 1_000_000);
    assert!(name.len() <= 12, "name {name} too long for a suffix");
    name
}
