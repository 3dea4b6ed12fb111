//! The `io.bindguard.*` annotations a container or pod asks for a binding with: read by
//! `oci-hook` (OCI state) and by `bindguard nri` (pod and container annotations), with one
//! meaning for both.

use std::collections::HashMap;

use crate::{
    Error,
    binding::policy::{Dns, Mode, Options},
};

pub const DEV: &str = "io.bindguard.dev";
pub const MARK: &str = "io.bindguard.mark";
pub const PRIORITY: &str = "io.bindguard.priority";
pub const MODE: &str = "io.bindguard.mode";
pub const ALLOW_LOOPBACK: &str = "io.bindguard.allow-loopback";
/// Comma-separated socket families the container may create beyond unix, netlink, inet and
/// inet6 (strict mode), e.g. `packet`.
pub const ALLOW_FAMILY: &str = "io.bindguard.allow-family";
pub const ALLOW_TUN: &str = "io.bindguard.allow-tun";
pub const ALLOW_PTRACE_OUT: &str = "io.bindguard.allow-ptrace-out";
pub const ALLOW_DELEGATED: &str = "io.bindguard.allow-delegated";
/// `ADDR[,ADDR]`: the resolvers every DNS query of the container goes to (strict mode).
pub const DNS: &str = "io.bindguard.dns";

/// Every key above: the annotations a pod passes down to its containers.
pub const KEYS: &[&str] = &[
    DEV,
    MARK,
    PRIORITY,
    MODE,
    ALLOW_LOOPBACK,
    ALLOW_FAMILY,
    ALLOW_TUN,
    ALLOW_PTRACE_OUT,
    ALLOW_DELEGATED,
    DNS,
];

fn invalid(what: String) -> Error {
    Error::InvalidInput { what }
}

/// The binding options an annotation set asks for.
pub fn options_from(annotations: &HashMap<String, String>) -> Result<Options, Error> {
    let number = |key: &str| -> Result<Option<u32>, Error> {
        annotations
            .get(key)
            .map(|v| {
                crate::binding::policy::parse_u32(v.trim())
                    .map_err(|e| invalid(format!("annotation {key}: {e}")))
            })
            .transpose()
    };
    let mode = match annotations.get(MODE) {
        Some(m) => m
            .trim()
            .parse::<Mode>()
            .map_err(|_| invalid(format!("annotation {MODE}: '{m}' is not strict or bind")))?,
        None => Mode::default(),
    };
    let boolean = |key: &str| -> Result<bool, Error> {
        match annotations.get(key).map(|v| v.trim()) {
            None | Some("false" | "0" | "") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(invalid(format!(
                "annotation {key}: '{other}' is not true or false"
            ))),
        }
    };
    let mut allow_families = 0;
    for family in annotations
        .get(ALLOW_FAMILY)
        .map(|v| {
            v.split(',')
                .filter(|f| !f.trim().is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        allow_families |= crate::binding::policy::parse_family(family)
            .map_err(|e| invalid(format!("annotation {ALLOW_FAMILY}: {e}")))?;
    }
    let opts = Options {
        mark: number(MARK)?,
        priority: number(PRIORITY)?,
        mode,
        allow_loopback: boolean(ALLOW_LOOPBACK)?,
        allow_families,
        allow_tun: boolean(ALLOW_TUN)?,
        allow_ptrace_out: boolean(ALLOW_PTRACE_OUT)?,
        allow_delegated: boolean(ALLOW_DELEGATED)?,
        dns: match annotations.get(DNS) {
            Some(list) => Dns::parse(list).map_err(|e| {
                invalid(format!(
                    "annotation {DNS}: {}",
                    e.to_string().replace("--dns ", "")
                ))
            })?,
            None => Dns::default(),
        },
        ..Options::default()
    };
    opts.validate()?;
    Ok(opts)
}
