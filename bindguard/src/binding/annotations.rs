//! The `io.bindguard.*` annotations a container or pod asks for a binding with: read by
//! `oci-hook` (OCI state) and by `bindguard nri` (pod and container annotations), with one
//! meaning for both.

use std::collections::HashMap;

use crate::{
    Error,
    binding::policy::{Mode, Options},
};

pub const DEV: &str = "io.bindguard.dev";
pub const MARK: &str = "io.bindguard.mark";
pub const PRIORITY: &str = "io.bindguard.priority";
pub const MODE: &str = "io.bindguard.mode";
pub const ALLOW_LOOPBACK: &str = "io.bindguard.allow-loopback";
/// Comma-separated socket families the container may create beyond unix, netlink, inet and
/// inet6 (strict mode), e.g. `packet`.
pub const ALLOW_FAMILY: &str = "io.bindguard.allow-family";

/// Every key above: the annotations a pod passes down to its containers.
pub const KEYS: &[&str] = &[DEV, MARK, PRIORITY, MODE, ALLOW_LOOPBACK, ALLOW_FAMILY];

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
    let allow_loopback = match annotations.get(ALLOW_LOOPBACK).map(|v| v.trim()) {
        None | Some("false" | "0" | "") => false,
        Some("true" | "1") => true,
        Some(other) => {
            return Err(invalid(format!(
                "annotation {ALLOW_LOOPBACK}: '{other}' is not true or false"
            )));
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
        allow_loopback,
        allow_families,
        ..Options::default()
    };
    opts.validate()?;
    Ok(opts)
}
