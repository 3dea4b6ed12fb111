//! The binding layer: what one binding is, and making, changing and removing it.
//!
//! - [`cgroup`], [`netns`], [`netdev`]: what a binding names (a cgroup, a namespace, an
//!   interface inside it), resolved from what the user typed.
//! - [`policy`]: the user's options ([`policy::Options`], [`policy::Mode`]), their parsers,
//!   and the policy value the programs read.
//! - [`annotations`]: the `io.bindguard.*` keys containers and pods ask with (oci-hook, nri).
//! - [`bind()`]: the one door a binding is made through; every caller renders its [`Bound`].
//! - [`enforcer`]: linking and pinning (behind [`bind()`]), detach, remove_stale; reading a
//!   binding's policy and counters.
//! - [`audit`], [`sockreset`]: sockets the programs never saw (listed, or destroyed).
//! - [`unbound`]: configured bindings the daemon could not make, for `status`.
//!
//! May import: [`crate::kernel`] and [`crate::error`]. Never `commands` or `service`.

pub mod annotations;
pub mod audit;
mod bind;
pub use bind::{Bound, SocketPass, bind};
pub mod cgroup;
pub mod enforcer;
pub mod netdev;
pub mod netns;
pub mod policy;
pub mod sockreset;
pub mod unbound;
