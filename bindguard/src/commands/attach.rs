//! `bindguard attach`: binds one cgroup to an interface, and says what that did: the
//! warnings (rp_filter, rows of the escape table left open, a delegated cgroup), each socket
//! the pass ended, what it could not end, and the binding's summary.

use std::path::Path;

use anyhow::Context as _;

use crate::{
    binding::{self, SocketPass, cgroup, netdev, netns::Netns, policy::Options, sockreset},
    error::{printable, printable_path},
};

/// Binds the cgroup at `path` (`self`: bindguard's own) to `dev` in network namespace `netns`
/// (None: bindguard's own) with `opts`. With `verbose`, the verifier's log of each program the
/// kernel refused. Fails after printing when the socket pass could not end every socket it
/// had to: the binding stays.
pub fn run(
    path: &Path,
    dev: &str,
    netns: Option<&Path>,
    opts: &Options,
    verbose: bool,
) -> anyhow::Result<()> {
    netdev::validate_name(dev)?;
    let cg = cgroup::resolve(&cgroup::expand_self(path)?)?;
    let ns = match netns {
        Some(p) => Netns::open(p)?,
        None => Netns::current()?,
    };
    let iface = netdev::resolve(dev, &ns)?;
    if let Some(w) = netdev::rp_filter(&iface.name, &ns)
        .ok()
        .and_then(|v| netdev::rp_filter_warning(&iface.name, v))
    {
        eprintln!("bindguard: warning: {w}");
    }
    let bound = binding::bind(&cg, &iface, opts, SocketPass::Now).with_context(|| {
        format!(
            "attaching cgroup {} to {}",
            printable_path(&cg.path),
            iface.name
        )
    })?;
    if let Some(w) = bound.open_rows() {
        eprintln!("bindguard: warning: {w}");
    }
    if verbose {
        for (program, log) in bound.refused_logs() {
            eprintln!("--- verifier log of {program} ---\n{log}");
        }
    }
    if let Some(d) = bound.escapable() {
        eprintln!(
            "bindguard: warning: cgroup {} is {}: its processes can move themselves out of the binding; bind {} itself to cover them",
            printable_path(&cg.path),
            d.describe(),
            printable_path(&d.boundary)
        );
    }
    for (s, fate) in bound.sockets.iter().flat_map(|p| &p.ended) {
        let verb = match fate {
            sockreset::Fate::Destroyed => "destroyed".to_string(),
            sockreset::Fate::Bound => format!("bound to {}", iface.name),
        };
        eprintln!(
            "bindguard: {verb}: {} {} -> {} of pid {} ({}), was on ifindex {}",
            s.protocol,
            s.local,
            s.remote,
            s.pid,
            printable(&s.command),
            s.bound_ifindex
        );
    }
    // A partial pass still reports: the binding stays (it governs every new socket,
    // and sockets already ended cannot be given back); the command fails after.
    let unreached = bound.sockets.as_ref().map_or(&[][..], |p| &p.unreached[..]);
    for u in unreached {
        eprintln!("bindguard: not ended: {u}");
    }
    println!("{}", bound.summary());
    if !unreached.is_empty() {
        anyhow::bail!(
            "{} of the sockets cgroup {} already held could not be ended (listed above); the binding is in place and governs every new socket; `bindguard status` reports sockets-unreached until the next attach",
            unreached.len(),
            printable_path(&cg.path)
        );
    }
    Ok(())
}
