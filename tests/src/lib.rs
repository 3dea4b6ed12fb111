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
pub mod run;
pub mod scenario;
pub mod topology;

pub use listener::{Listener, Peer};
pub use privilege::{require_root, skip};
pub use run::{Cmd, bindguard_bin, probe_bin};
pub use scenario::{FLOWS, Proto, Scenario};
pub use topology::{TestCgroup, Topology};

use std::sync::atomic::{AtomicU32, Ordering};

/// A short name unique to this process and call: `<prefix><pid><n>`, at most 15 bytes.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 1_000_000);
    assert!(name.len() <= 12, "name {name} too long for a suffix");
    name
}
