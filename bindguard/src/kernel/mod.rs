//! The kernel layer: bpf(2), bpffs, BTF and the program set, with no idea of what a binding
//! is for.
//!
//! - [`link`]: bpf(2) attributes, one function per command (link create, pin, info by fd).
//! - [`pins`]: bpffs: mounting it, the pins lock, staging directories; [`pins::names`]: every
//!   name bindguard writes there, formatted and parsed in one place.
//! - [`hooks`]: the hook table and the embedded eBPF object.
//! - [`progset`]: the program set, loaded and verified once per build and pinned.
//! - [`rawload`]: BPF_PROG_LOAD for the one program aya cannot load (cgroup/connect_unix).
//! - [`escapes`]: the escape table and which hooks close each row.
//! - [`coverage`]: what a loaded set leaves open on this kernel, in one line.
//! - [`btf`], [`lsm`], [`probe`]: what this kernel has (field offsets, the BPF LSM, features).
//! - [`sockopt`]: raw socket calls (SOL_SOCKET options, the netns cookie).
//! - [`error`]: [`Error`], one variant per kernel operation that failed, keeping its cause.
//!
//! May import: std, aya, bindguard-common and other external crates, siblings in this folder
//! and [`crate::error`]. Never `binding`, `commands` or `service`: arrows only point down.

pub mod btf;
pub mod coverage;
pub mod error;
pub mod escapes;
pub mod hooks;
pub mod link;
pub mod lsm;
pub mod pins;
pub mod probe;
pub mod progset;
pub mod rawload;
pub mod sockopt;

pub use error::Error;
