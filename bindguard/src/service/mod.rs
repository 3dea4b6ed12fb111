//! The long-running side: the [`config`] of `apply` and `daemon`, the [`reconcile`] plan
//! (desired state against what the kernel holds) and the [`daemon`] that keeps it true; the
//! [`nri`] plugin, which binds the containers a container runtime announces.
//!
//! May import: [`crate::binding`], [`crate::kernel`] to hold link fds and watch bpffs, and
//! [`crate::error`]. Never [`crate::commands`].

pub mod config;
pub mod daemon;
pub mod nri;
pub mod reconcile;

/// The services' log on stderr: one line per event, INFO and above, no colours.
fn log_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}
