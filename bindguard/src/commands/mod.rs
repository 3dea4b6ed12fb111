//! One-shot commands on top of bindings: [`attach`], [`detach`], [`status`], [`verify`],
//! [`monitor`], [`exec`], [`oci`] (the OCI hook) and [`doctor`]. Each reads what the kernel
//! holds and reports it, or drives [`crate::binding`] for one short-lived binding; `main`
//! hands each command's arguments to its own file here.
//!
//! May import: [`crate::binding`], [`crate::kernel`] to read (pins, links, the program set)
//! and [`crate::error`]. Never [`crate::service`]. Two cleanups still write below the binding
//! layer: `exec` and `oci` remove their own binding's pins with `pins::remove_dir` and
//! `progset::forget_user`, holding the pins lock (both take its token).

pub mod attach;
pub mod detach;
pub mod doctor;
pub mod exec;
pub mod monitor;
pub mod oci;
pub mod status;
pub mod verify;
