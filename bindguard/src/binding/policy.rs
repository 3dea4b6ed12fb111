//! What one binding enforces, as the user asks for it ([`Options`], [`Mode`]) and as the
//! programs read it ([`policy_for`]), and the parsing of the values behind the flags.

use bindguard_common::{ABI_VERSION, Policy, flags};

use crate::{
    Error,
    binding::netdev::{self, Interface},
    kernel::hooks::{Hook, object_hash},
};

/// What a binding enforces beyond SO_BINDTODEVICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The binding plus guards that close the known escapes (docs/modes-and-escapes.md).
    #[default]
    Strict,
    /// Exactly SO_BINDTODEVICE semantics: new sockets are bound, nothing else.
    Bind,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Bind => "bind",
        }
    }

    fn from_flags(flags: u32) -> Self {
        if flags & flags::STRICT != 0 {
            Mode::Strict
        } else {
            Mode::Bind
        }
    }

    /// Whether this mode uses the program of `hook`: strict mode every one, bind mode the
    /// required ones (sock_create, which makes the binding).
    pub fn wants(self, hook: Hook) -> bool {
        match self {
            Mode::Strict => true,
            Mode::Bind => hook.required(),
        }
    }

    /// The programs this mode attaches where `available` says the kernel has them (the
    /// program set holds what the kernel loaded; `doctor` says why the rest is missing), in
    /// attach order: sock_create first so that a binding exists before the guards that check
    /// it.
    pub fn hooks(self, available: impl Fn(Hook) -> bool) -> Vec<Hook> {
        Hook::ALL
            .into_iter()
            .filter(|&h| self.wants(h) && available(h))
            .collect()
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "strict" => Ok(Mode::Strict),
            "bind" => Ok(Mode::Bind),
            _ => Err(Error::InvalidInput {
                what: format!("mode '{s}' is not known; use --mode strict or --mode bind"),
            }),
        }
    }
}

/// Socket families `--allow-family` knows by name (include/linux/socket.h).
pub const FAMILIES: &[(&str, u32)] = &[
    ("ax25", 3),
    ("ipx", 4),
    ("appletalk", 5),
    ("x25", 9),
    ("key", 15),
    ("packet", 17),
    ("rds", 21),
    ("llc", 26),
    ("can", 29),
    ("tipc", 30),
    ("bluetooth", 31),
    ("rxrpc", 33),
    ("ieee802154", 36),
    ("alg", 38),
    ("vsock", 40),
    ("kcm", 41),
    ("qipcrtr", 42),
    ("smc", 43),
    ("xdp", 44),
    ("mctp", 45),
];

/// Parses one `--allow-family` value: a name from [`FAMILIES`] or a number from 1 to 63.
pub fn parse_family(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let family = match FAMILIES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
        Some((_, f)) => *f,
        None => match s.parse::<u32>() {
            Ok(n) if (1..64).contains(&n) => n,
            _ => {
                let names: Vec<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "'{}' is not a socket family; use one of {} or a number from 1 to 63",
                    crate::error::quote(s),
                    names.join(", ")
                ));
            }
        },
    };
    Ok(1u64 << family)
}

/// The names of the families in a `--allow-family` mask, for status.
pub fn family_names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|f| mask & (1u64 << f) != 0)
        .map(|f| {
            FAMILIES
                .iter()
                .find(|(_, n)| *n == f)
                .map_or_else(|| f.to_string(), |(n, _)| (*n).to_string())
        })
        .collect()
}

/// Parses a mark or priority: decimal or 0x hex, 0 to 2^32-1.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    parsed.map_err(|_| format!("'{s}' is not a number from 0 to 4294967295"))
}

/// What `attach` does with the sockets the cgroup's processes already hold (made before the
/// binding, or before they were moved in): the programs never see those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Leave them; `verify` reports them.
    #[default]
    Keep,
    /// Destroy (SOCK_DESTROY, as `ss -K`) every TCP/UDP socket not bound to the interface.
    Destroy,
}

impl std::str::FromStr for Existing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "keep" => Ok(Existing::Keep),
            "destroy" => Ok(Existing::Destroy),
            _ => Err(Error::InvalidInput {
                what: format!("--existing '{s}' is not known; use keep or destroy"),
            }),
        }
    }
}

/// The user's choices for a binding, before the interface is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub mark: Option<u32>,
    pub priority: Option<u32>,
    pub mode: Mode,
    pub allow_loopback: bool,
    /// Strict mode: extra socket families the cgroup may create (bit N = family N).
    pub allow_families: u64,
    pub existing: Existing,
    /// Strict mode: the cgroup may attach tun/tap devices (row 20 left open knowingly).
    pub allow_tun: bool,
    /// Strict mode: the cgroup may ptrace processes outside it (row 21 left open knowingly).
    pub allow_ptrace_out: bool,
    /// Strict mode below a delegation boundary, accepted knowingly (row 19 left open).
    pub allow_delegated: bool,
    /// Who makes the binding, recorded in the policy so each maker removes only its own.
    pub maker: Maker,
    /// Strict mode: the resolvers every DNS query of the cgroup is sent to (`--dns`).
    pub dns: Dns,
}

/// `--dns`: at most one resolver per address family. Every query of the cgroup to port 53
/// goes to the resolver of its socket's family (an IPv6 socket uses the IPv4 one, mapped,
/// when there is no IPv6 one), through the bound interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dns {
    pub v4: Option<std::net::Ipv4Addr>,
    pub v6: Option<std::net::Ipv6Addr>,
}

impl Dns {
    /// From the addresses the user gave: one per family, each one a resolver can have.
    pub fn from_addrs(addrs: &[std::net::IpAddr]) -> Result<Dns, Error> {
        use std::net::IpAddr;
        let mut dns = Dns::default();
        for a in addrs {
            if a.is_unspecified() || a.is_multicast() {
                return Err(Error::InvalidInput {
                    what: format!("--dns {a} is not a resolver's address; give a unicast address"),
                });
            }
            let taken = match a {
                IpAddr::V4(v4) => dns.v4.replace(*v4).is_some(),
                IpAddr::V6(v6) => dns.v6.replace(*v6).is_some(),
            };
            if taken {
                return Err(Error::InvalidInput {
                    what: "--dns takes at most one IPv4 and one IPv6 address".into(),
                });
            }
        }
        Ok(dns)
    }

    /// Parses `ADDR[,ADDR]` (config and annotations).
    pub fn parse(list: &str) -> Result<Dns, Error> {
        let addrs = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse().map_err(|_| Error::InvalidInput {
                    what: format!("--dns '{a}' is not an IP address; give ADDR[,ADDR]"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Dns::from_addrs(&addrs)
    }

    /// The addresses, IPv4 first.
    pub fn addrs(&self) -> Vec<std::net::IpAddr> {
        self.v4
            .map(std::net::IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(std::net::IpAddr::V6))
            .collect()
    }

    pub fn is_set(&self) -> bool {
        self.v4.is_some() || self.v6.is_some()
    }

    /// The resolvers a policy names.
    pub fn of(p: &Policy) -> Dns {
        Dns {
            v4: p
                .has(flags::DNS4)
                .then(|| std::net::Ipv4Addr::from(p.dns4.to_ne_bytes())),
            v6: p.has(flags::DNS6).then(|| {
                let mut b = [0u8; 16];
                for (i, w) in p.dns6.iter().enumerate() {
                    b[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
                }
                std::net::Ipv6Addr::from(b)
            }),
        }
    }
}

impl std::fmt::Display for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self
            .v4
            .map(|a| a.to_string())
            .into_iter()
            .chain(self.v6.map(|a| a.to_string()))
            .collect();
        f.write_str(&list.join(","))
    }
}

/// Who made a binding. Each maker that removes bindings on its own (`apply --prune`, the OCI
/// hook's poststop, the NRI plugin's Synchronize) removes only those it made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Maker {
    /// `attach` or `exec` from the command line.
    #[default]
    Command,
    /// A config file (`apply`, the daemon).
    Config,
    /// `oci-hook` at createRuntime.
    Oci,
    /// `bindguard nri`.
    Nri,
    /// The daemon, for a user's `bindguard exec` allowed by a grant.
    User,
}

impl Maker {
    /// The policy flag recording this maker (none for a command).
    pub fn flag(self) -> u32 {
        match self {
            Maker::Command => 0,
            Maker::Config => flags::FROM_CONFIG,
            Maker::Oci => flags::FROM_OCI,
            Maker::Nri => flags::FROM_NRI,
            Maker::User => flags::FROM_USER,
        }
    }

    /// Who made the binding whose policy is `p`.
    pub fn of(p: &Policy) -> Maker {
        [Maker::Config, Maker::Oci, Maker::Nri, Maker::User]
            .into_iter()
            .find(|m| p.has(m.flag()))
            .unwrap_or(Maker::Command)
    }
}

impl Options {
    /// Combinations that cannot mean what the user asked for.
    pub fn validate(&self) -> Result<(), Error> {
        if self.allow_families != 0 && self.mode == Mode::Bind {
            return Err(Error::InvalidInput {
                what: "--allow-family needs --mode strict (bind mode refuses no family)".into(),
            });
        }
        for (set, flag) in [
            (self.allow_tun, "--allow-tun"),
            (self.allow_ptrace_out, "--allow-ptrace-out"),
        ] {
            if set && self.mode == Mode::Bind {
                return Err(Error::InvalidInput {
                    what: format!(
                        "{flag} needs --mode strict (bind mode refuses neither tun devices nor ptrace)"
                    ),
                });
            }
        }
        if self.dns.is_set() && self.mode == Mode::Bind {
            return Err(Error::InvalidInput {
                what: "--dns needs --mode strict (its hooks are the strict ones)".into(),
            });
        }
        if self.allow_loopback && self.mode == Mode::Bind {
            return Err(Error::InvalidInput {
                what: "--allow-loopback needs --mode strict (its hooks move loopback connections to lo)"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The policy value the programs read for `iface` and `opts` on the cgroup with id `cgroup_id`.
/// `lsm`: the BPF LSM programs are attached too.
pub fn policy_for(iface: &Interface, opts: &Options, cgroup_id: u64, lsm: bool) -> Policy {
    let mut f = 0;
    if opts.mark.is_some() {
        f |= flags::SET_MARK;
    }
    if opts.priority.is_some() {
        f |= flags::SET_PRIORITY;
    }
    if opts.allow_loopback {
        f |= flags::ALLOW_LOOPBACK;
    }
    if opts.mode == Mode::Strict {
        f |= flags::STRICT;
    }
    f |= opts.maker.flag();
    if opts.dns.v4.is_some() {
        f |= flags::DNS4;
    }
    if opts.dns.v6.is_some() {
        f |= flags::DNS6;
    }
    // In memory as the programs' context holds addresses: network byte order.
    let dns4 = opts.dns.v4.map_or(0, |a| u32::from_ne_bytes(a.octets()));
    let mut dns6 = [0u32; 4];
    if let Some(a) = opts.dns.v6 {
        for (w, b) in dns6.iter_mut().zip(a.octets().chunks_exact(4)) {
            *w = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    if opts.allow_tun {
        f |= flags::ALLOW_TUN;
    }
    if opts.allow_ptrace_out {
        f |= flags::ALLOW_PTRACE_OUT;
    }
    if opts.allow_delegated {
        f |= flags::ALLOW_DELEGATED;
    }
    if lsm && opts.mode == Mode::Strict {
        f |= flags::LSM;
    }
    Policy {
        netns_cookie: iface.netns_cookie,
        netns_ino: iface.netns_ino,
        object_hash: object_hash(),
        abi: ABI_VERSION,
        ifindex: iface.ifindex,
        mark: opts.mark.unwrap_or(0),
        priority: opts.priority.unwrap_or(0),
        flags: f,
        unreached: 0,
        ifname: netdev::name_bytes(&iface.name),
        families: opts.allow_families,
        cgroup_id,
        dns4,
        dns6,
        _pad: 0,
    }
}

/// The mode recorded in a policy.
pub fn mode_of(policy: &Policy) -> Mode {
    Mode::from_flags(policy.flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_decimal_or_hex() {
        assert_eq!(parse_u32("42"), Ok(42));
        assert_eq!(parse_u32("0x2a"), Ok(42));
        assert_eq!(parse_u32("0X2A"), Ok(42));
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        for bad in ["", "-1", "4294967296", "0x", "x", "1.5", "0x1g"] {
            assert!(parse_u32(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn families_parse_by_name_or_number() {
        assert_eq!(parse_family("packet"), Ok(1 << 17));
        assert_eq!(parse_family("XDP"), Ok(1 << 44));
        assert_eq!(parse_family("40"), Ok(1 << 40));
        for bad in ["", "0", "64", "inet6x", "-1"] {
            assert!(parse_family(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(family_names((1 << 17) | (1 << 50)), ["packet", "50"]);
    }

    #[test]
    fn modes_parse_and_loopback_needs_strict() {
        assert_eq!("strict".parse::<Mode>().unwrap(), Mode::Strict);
        assert_eq!("bind".parse::<Mode>().unwrap(), Mode::Bind);
        assert_eq!("loose".parse::<Mode>().unwrap_err().exit_code(), 2);
        let opts = Options {
            mode: Mode::Bind,
            allow_loopback: true,
            ..Options::default()
        };
        assert!(opts.validate().is_err());
        assert!(Options::default().validate().is_ok());
        assert_eq!(Mode::Strict.hooks(|_| true), Hook::ALL);
        assert_eq!(
            Mode::Strict.hooks(|h| !h.is_lsm()).len(),
            Hook::ALL.iter().filter(|h| !h.is_lsm()).count()
        );
        assert_eq!(Mode::Bind.hooks(|_| true), [Hook::SockCreate]);
    }

    #[test]
    fn policy_carries_the_options() {
        let iface = Interface {
            name: "eth3".into(),
            ifindex: 7,
            netns_cookie: 11,
            netns_ino: 13,
        };
        let p = policy_for(
            &iface,
            &Options {
                mark: Some(5),
                priority: None,
                mode: Mode::Strict,
                allow_loopback: true,
                allow_families: parse_family("packet").unwrap(),
                ..Options::default()
            },
            99,
            true,
        );
        assert_eq!((p.cgroup_id, p.families), (99, 1 << 17));
        assert!(p.has(flags::LSM));
        assert_eq!(
            (p.ifindex, p.netns_cookie, p.netns_ino, p.mark),
            (7, 11, 13, 5)
        );
        assert!(p.has(flags::SET_MARK) && !p.has(flags::SET_PRIORITY));
        assert!(p.has(flags::STRICT) && p.has(flags::ALLOW_LOOPBACK));
        assert_eq!(mode_of(&p), Mode::Strict);
        assert_eq!(netdev::name_from_bytes(&p.ifname), "eth3");
        assert_eq!(p.object_hash, object_hash());
    }

    #[test]
    fn dns_round_trips_through_the_policy() {
        let iface = Interface {
            name: "wg0".into(),
            ifindex: 7,
            netns_cookie: 1,
            netns_ino: 1,
        };
        let dns = Dns::parse("10.1.2.3, 2001:db8::53").unwrap();
        let opts = Options {
            dns,
            ..Options::default()
        };
        let p = policy_for(&iface, &opts, 1, false);
        assert!(p.has(flags::DNS4) && p.has(flags::DNS6));
        // Network byte order in memory, as bpf_sock_addr.user_ip4 holds it.
        assert_eq!(p.dns4.to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(Dns::of(&p), dns);
        assert_eq!(dns.to_string(), "10.1.2.3,2001:db8::53");
        assert!(Dns::parse("10.0.0.1,10.0.0.2").is_err());
        assert!(Dns::parse("0.0.0.0").is_err());
        assert!(Dns::parse("resolver").is_err());
        let bind = Options {
            dns,
            mode: Mode::Bind,
            ..Options::default()
        };
        assert!(bind.validate().is_err());
    }
}
