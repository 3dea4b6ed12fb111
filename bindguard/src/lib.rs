//! bindguard: pin every socket of a cgroup to one network interface, enforced in the kernel.
//!
//! Four layers; arrows only point down (`main → commands | service → binding → kernel`), and
//! [`error`] (user-facing errors, exit codes) and [`version`] are usable by all:
//!
//! - [`kernel`]: bpf(2), bpffs and the pin layout, the hook table, the shared program set,
//!   BTF, the BPF LSM and feature probes.
//! - [`binding`]: what one binding is: cgroup, namespace and interface, the policy, and the
//!   enforcer that attaches, updates and detaches it.
//! - [`commands`]: status, verify, monitor, exec, the OCI hook and doctor.
//! - [`service`]: the config, the reconcile plan and the daemon.

pub mod binding;
pub mod commands;
pub mod error;
pub mod kernel;
pub mod service;
pub mod version;

pub use error::Error;
