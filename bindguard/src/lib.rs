//! bindguard: pin every socket of a cgroup to one network interface, enforced in the kernel.
//!
//! One module per kernel concept: [`cgroup`] (cgroup v2 paths and ids), [`netns`] and
//! [`netdev`] (namespaces, interfaces), [`pins`] (bpffs layout), [`link`] (bpf_link queries),
//! [`enforcer`] (load, attach, pin, update, detach) and [`status`] (read it all back).

pub mod audit;
pub mod btf;
pub mod cgroup;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod enforcer;
pub mod error;
pub mod escapes;
pub mod exec;
pub mod hooks;
pub mod link;
pub mod lsm;
pub mod monitor;
pub mod netdev;
pub mod netns;
pub mod oci;
pub mod pins;
pub mod policy;
pub mod probe;
pub mod progset;
pub mod reconcile;
pub mod sockopt;
pub mod sockreset;
pub mod status;
pub mod verify;
pub mod version;

pub use error::Error;
