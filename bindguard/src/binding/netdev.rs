//! Network interfaces: validating names and resolving name <-> ifindex inside a namespace.

use anyhow::Context as _;

use crate::{Error, binding::netns::Netns};
use bindguard_common::IFNAME_MAX;

/// An interface resolved inside one namespace: what a binding records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub netns_cookie: u64,
    pub netns_ino: u64,
}

/// The kernel's own rules for interface names (dev_valid_name), checked before anything else.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let invalid = |why| Error::IfnameInvalid {
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > IFNAME_MAX {
        return Err(Error::IfnameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are not interface names"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return Err(invalid("it contains '/', ':', whitespace or NUL"));
    }
    Ok(())
}

/// Resolves `name` inside `netns`.
pub fn resolve(name: &str, netns: &Netns) -> anyhow::Result<Interface> {
    validate_name(name)?;
    let owned = name.to_string();
    let ifindex = netns.run(move || nix::net::if_::if_nametoindex(owned.as_str()).unwrap_or(0))?;
    if ifindex == 0 {
        return Err(Error::UnknownInterface {
            name: name.to_string(),
            netns: netns.label.clone(),
        }
        .into());
    }
    Ok(Interface {
        name: name.to_string(),
        ifindex,
        netns_cookie: netns.cookie()?,
        netns_ino: netns.ino,
    })
}

/// The current name of `ifindex` in `netns`, or None if no such interface exists there.
pub fn name_of(ifindex: u32, netns: &Netns) -> anyhow::Result<Option<String>> {
    netns
        .run(move || {
            let mut buf = [0u8; libc::IF_NAMESIZE];
            // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
            let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
            if p.is_null() {
                None
            } else {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                Some(String::from_utf8_lossy(&buf[..end]).into_owned())
            }
        })
        .with_context(|| format!("looking up ifindex {ifindex} in {}", netns.label))
}

/// The effective IPv4 reverse-path filter of `name` in `netns` (the larger of `all` and the
/// device's own setting: 0 off, 1 strict, 2 loose).
pub fn rp_filter(name: &str, netns: &Netns) -> anyhow::Result<u8> {
    let dev = name.to_string();
    netns.run(move || -> anyhow::Result<u8> {
        let read = |which: &str| -> anyhow::Result<u8> {
            let path = format!("/proc/sys/net/ipv4/conf/{which}/rp_filter");
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            Ok(text.trim().parse().unwrap_or(0))
        };
        Ok(read("all")?.max(read(&dev)?))
    })?
}

/// Why strict rp_filter matters for a binding, or None when it does not apply.
pub fn rp_filter_warning(name: &str, value: u8) -> Option<String> {
    (value == 1).then(|| {
        format!(
            "rp_filter is strict (1) on {name}: replies arriving on {name} are dropped when the best route back to their source points elsewhere; set net.ipv4.conf.{name}.rp_filter=2 (loose)"
        )
    })
}

/// `name` as the NUL-padded array a policy stores.
pub fn name_bytes(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(IFNAME_MAX);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The name stored in a policy.
pub fn name_from_bytes(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Resolves `name` inside `netns`, or returns the *closed* interface (ifindex 0) when no
/// interface has that name there: a binding to it refuses every new socket until the
/// interface appears and the binding is re-targeted.
pub fn resolve_or_closed(name: &str, netns: &Netns) -> anyhow::Result<Interface> {
    match resolve(name, netns) {
        Err(e) if Error::is_unknown_interface(&e) => Ok(closed(name, netns.cookie()?, netns.ino)),
        other => other,
    }
}

/// The closed interface: the name and namespace of a binding, no device.
pub fn closed(name: &str, netns_cookie: u64, netns_ino: u64) -> Interface {
    Interface {
        name: name.to_string(),
        ifindex: 0,
        netns_cookie,
        netns_ino,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kernel_rules() {
        assert!(validate_name("eth0").is_ok());
        assert!(validate_name("a-very-long-nm").is_ok());
        assert!(validate_name("exactly15bytes_").is_ok());
        let e = validate_name("sixteen-bytes-xx").unwrap_err();
        assert!(matches!(e, Error::IfnameTooLong { len: 16, .. }), "{e}");
        assert!(e.to_string().contains("15 bytes"));
        for bad in ["", ".", "..", "a/b", "a b", "a:b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn name_bytes_round_trip() {
        assert_eq!(name_from_bytes(&name_bytes("vethB")), "vethB");
        assert_eq!(
            name_from_bytes(&name_bytes("exactly15bytes_")),
            "exactly15bytes_"
        );
    }
}
