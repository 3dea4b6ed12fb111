//! The long-running side: the [`config`] of [`apply`] and `daemon`, the [`reconcile`] plan
//! (desired state against what the kernel holds) and the [`daemon`] that keeps it true; the
//! [`nri`] plugin, which binds the containers a container runtime announces; the [`grants`]
//! that let users have the daemon bind their own programs, the daemon's socket that answers
//! them ([`userexec`]) and the users' side of it ([`sessions`]); the [`metrics`] endpoint
//! both services serve (`--metrics ADDR`).
//!
//! May import: [`crate::binding`], [`crate::kernel`] to hold link fds and watch bpffs, and
//! [`crate::error`]. Never [`crate::commands`].

pub mod apply;
pub mod config;
pub mod daemon;
pub mod grants;
pub mod metrics;
pub mod nri;
pub mod reconcile;
pub mod sessions;
pub mod userexec;

/// The services' log on stderr: one line per event, INFO and above, no colours.
fn log_to_stderr() {
    // BINDGUARD_LOG=debug adds a line per binding (per socket-reset, per container event).
    let level = match std::env::var("BINDGUARD_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .try_init();
}
