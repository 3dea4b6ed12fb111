//! Grants: which users may have the daemon bind their own programs, to which interfaces, in
//! which modes, with which options (`[[grant]]` in the config). No grant, no binding: the
//! default config grants nothing.
//!
//! ```toml
//! [[grant]]
//! groups = ["vpn"]           # and/or users = ["alice", 1001]
//! dev = ["wg0", "tun*"]      # names or globs, matched when a request names an interface
//! mode = ["strict"]          # the modes they may ask for (default: strict only)
//! options = ["allow-loopback", "dns"]   # the options they may use (default: none)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::{Error, binding::policy::Mode};

/// An option a granted request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOption {
    AllowLoopback,
    Dns,
}

impl GrantOption {
    pub const ALL: [(&'static str, GrantOption); 2] = [
        ("allow-loopback", GrantOption::AllowLoopback),
        ("dns", GrantOption::Dns),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One validated `[[grant]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub file: PathBuf,
    pub line: usize,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    /// Interface names or globs.
    pub dev: Vec<String>,
    pub modes: Vec<Mode>,
    pub options: Vec<GrantOption>,
}

/// Who asks: the kernel's word (SO_PEERCRED, and the process's supplementary groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// What a request asks for, as far as grants are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked<'a> {
    pub dev: &'a str,
    pub mode: Mode,
    pub options: Vec<GrantOption>,
}

impl Grant {
    /// Whether the grant names the caller (their uid, primary group or a supplementary one).
    pub fn covers(&self, who: &Caller) -> bool {
        self.users.contains(&who.uid)
            || self
                .groups
                .iter()
                .any(|g| *g == who.gid || who.groups.contains(g))
    }

    fn allows_dev(&self, dev: &str) -> bool {
        self.dev.iter().any(|pattern| {
            glob::Pattern::new(pattern).is_ok_and(|p| {
                p.matches_with(
                    dev,
                    glob::MatchOptions {
                        case_sensitive: true,
                        require_literal_separator: true,
                        require_literal_leading_dot: false,
                    },
                )
            })
        })
    }
}

impl Caller {
    /// A user as the system knows them (name or uid): uid, primary group and the groups
    /// /etc/group gives them, which a login session of theirs has.
    pub fn lookup(user: &str) -> Result<Caller, Error> {
        let found = match user.parse::<u32>() {
            Ok(uid) => match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
                Ok(Some(u)) => Ok(Some(u)),
                // A uid without a passwd entry is still a uid: no group is known for it.
                _ => {
                    return Ok(Caller {
                        uid,
                        gid: u32::MAX,
                        groups: Vec::new(),
                    });
                }
            },
            Err(_) => nix::unistd::User::from_name(user),
        };
        let u = found.ok().flatten().ok_or_else(|| Error::InvalidInput {
            what: format!(
                "user '{}' does not exist; give a user name or uid",
                crate::error::quote(user)
            ),
        })?;
        let name = std::ffi::CString::new(u.name.as_bytes()).map_err(|_| Error::InvalidInput {
            what: "a user name with a NUL byte".into(),
        })?;
        let groups = nix::unistd::getgrouplist(&name, u.gid)
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Caller {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
        })
    }
}

/// The grant that allows `who` to ask `asked`, or one line saying why none does (what the
/// user may ask instead, or that they have no grant at all).
pub fn check<'g>(grants: &'g [Grant], who: &Caller, asked: &Asked) -> Result<&'g Grant, String> {
    let theirs: Vec<&Grant> = grants.iter().filter(|g| g.covers(who)).collect();
    if theirs.is_empty() {
        return Err(format!(
            "uid {} has no grant: ask an admin for a [[grant]] in the bindguard config naming the user or one of their groups",
            who.uid
        ));
    }
    if let Some(g) = theirs.iter().find(|g| {
        g.allows_dev(asked.dev)
            && g.modes.contains(&asked.mode)
            && asked.options.iter().all(|o| g.options.contains(o))
    }) {
        return Ok(g);
    }
    let devs: Vec<&str> = theirs
        .iter()
        .flat_map(|g| g.dev.iter().map(String::as_str))
        .collect();
    if !theirs.iter().any(|g| g.allows_dev(asked.dev)) {
        return Err(format!(
            "uid {} is not granted interface {}; granted: {}",
            who.uid,
            asked.dev,
            devs.join(", ")
        ));
    }
    let with_dev: Vec<&&Grant> = theirs.iter().filter(|g| g.allows_dev(asked.dev)).collect();
    if !with_dev.iter().any(|g| g.modes.contains(&asked.mode)) {
        return Err(format!(
            "uid {} is not granted mode {} on {}; granted: {}",
            who.uid,
            asked.mode.as_str(),
            asked.dev,
            with_dev
                .iter()
                .flat_map(|g| g.modes.iter().map(|m| m.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let missing: Vec<&str> = asked
        .options
        .iter()
        .filter(|o| !with_dev.iter().any(|g| g.options.contains(o)))
        .map(|o| o.name())
        .collect();
    Err(format!(
        "uid {} is not granted --{} on {}",
        who.uid,
        missing.join(", --"),
        asked.dev
    ))
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    grant: Vec<Spanned<RawGrant>>,
}

/// A user or group: a name, or a numeric id.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(u32),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    #[serde(default)]
    users: Vec<Id>,
    #[serde(default)]
    groups: Vec<Id>,
    dev: Vec<String>,
    mode: Option<Vec<String>>,
    #[serde(default)]
    options: Vec<String>,
}

/// The `[[grant]]` tables of one config file (its `[[binding]]` tables are config.rs's).
/// Users and groups are resolved to ids now: a name that does not exist is an error, not a
/// grant to nobody.
pub fn parse_file(file: &Path, text: &str) -> Result<Vec<Grant>, Error> {
    let line_of = |offset: usize| {
        text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    };
    let err_at = |offset: usize, why: String| Error::Config {
        file: file.to_path_buf(),
        line: line_of(offset),
        why,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        err_at(
            e.span().map_or(0, |s| s.start),
            e.message().trim().replace('\n', " "),
        )
    })?;
    let mut out = Vec::new();
    for table in raw.grant {
        let start = table.span().start;
        let raw = table.into_inner();
        let bad = |why: String| err_at(start, format!("grant: {why}"));
        let users = raw
            .users
            .iter()
            .map(|u| match u {
                Id::Number(n) => Ok(*n),
                Id::Name(name) => nix::unistd::User::from_name(name)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
                    .ok_or_else(|| bad(format!("user '{name}' does not exist"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let groups = raw
            .groups
            .iter()
            .map(|g| match g {
                Id::Number(n) => Ok(*n),
                Id::Name(name) => nix::unistd::Group::from_name(name)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw())
                    .ok_or_else(|| bad(format!("group '{name}' does not exist"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if users.is_empty() && groups.is_empty() {
            return Err(bad("names no users and no groups".into()));
        }
        if raw.dev.is_empty() {
            return Err(bad("names no interface (dev = [\"wg0\"])".into()));
        }
        for d in &raw.dev {
            glob::Pattern::new(d).map_err(|e| bad(format!("dev '{d}' is not a glob ({e})")))?;
        }
        let modes = match raw.mode {
            None => vec![Mode::Strict],
            Some(list) => list
                .iter()
                .map(|m| {
                    m.parse::<Mode>()
                        .map_err(|_| bad(format!("mode '{m}' is not strict or bind")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let options = raw
            .options
            .iter()
            .map(|o| {
                GrantOption::ALL
                    .iter()
                    .find(|(n, _)| n == o)
                    .map(|(_, opt)| *opt)
                    .ok_or_else(|| {
                        bad(format!(
                            "option '{o}' is not known; grantable: allow-loopback, dns"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Grant {
            file: file.to_path_buf(),
            line: line_of(start),
            users,
            groups,
            dev: raw.dev,
            modes,
            options,
        });
    }
    Ok(out)
}

/// `bindguard grants`: which of `grants` cover `user` (name or uid; None: the caller), printed
/// one line each, or as one JSON document with `json`.
pub fn print(grants: &[Grant], user: Option<&str>, json: bool) -> anyhow::Result<()> {
    let user = user.map_or_else(
        || nix::unistd::getuid().as_raw().to_string(),
        str::to_string,
    );
    let who = Caller::lookup(&user)?;
    let theirs: Vec<&Grant> = grants.iter().filter(|g| g.covers(&who)).collect();
    if json {
        let doc: Vec<serde_json::Value> = theirs
            .iter()
            .map(|g| {
                serde_json::json!({
                    "dev": g.dev,
                    "modes": g.modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "options": g.options.iter().map(|o| o.name()).collect::<Vec<_>>(),
                    "origin": format!("{}:{}", g.file.display(), g.line),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "uid": who.uid,
                "grants": doc
            }))?
        );
    } else if theirs.is_empty() {
        println!(
            "uid {} has no grant: `bindguard exec` without root is refused",
            who.uid
        );
    } else {
        for g in theirs {
            let options: Vec<&str> = g.options.iter().map(|o| o.name()).collect();
            println!(
                "dev {}; modes {}; options {} ({}:{})",
                g.dev.join(", "),
                g.modes
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if options.is_empty() {
                    "none".to_string()
                } else {
                    options.join(", ")
                },
                g.file.display(),
                g.line
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(text: &str) -> Vec<Grant> {
        parse_file(Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn a_grant_allows_what_it_names_and_nothing_else() {
        let g = grants(
            "[[grant]]\nusers = [1000]\ngroups = [2000]\ndev = [\"wg0\", \"tun*\"]\noptions = [\"dns\"]\n",
        );
        let alice = Caller {
            uid: 1000,
            gid: 1000,
            groups: vec![],
        };
        let bob_in_vpn = Caller {
            uid: 1001,
            gid: 1001,
            groups: vec![2000],
        };
        let eve = Caller {
            uid: 1002,
            gid: 1002,
            groups: vec![],
        };
        let ask = |dev, mode, options| Asked { dev, mode, options };
        assert!(check(&g, &alice, &ask("wg0", Mode::Strict, vec![])).is_ok());
        assert!(
            check(
                &g,
                &bob_in_vpn,
                &ask("tun3", Mode::Strict, vec![GrantOption::Dns])
            )
            .is_ok()
        );
        let no = check(&g, &eve, &ask("wg0", Mode::Strict, vec![])).unwrap_err();
        assert!(no.contains("has no grant"), "{no}");
        let no = check(&g, &alice, &ask("eth0", Mode::Strict, vec![])).unwrap_err();
        assert!(
            no.contains("not granted interface eth0; granted: wg0, tun*"),
            "{no}"
        );
        let no = check(&g, &alice, &ask("wg0", Mode::Bind, vec![])).unwrap_err();
        assert!(no.contains("not granted mode bind"), "{no}");
        let no = check(
            &g,
            &alice,
            &ask("wg0", Mode::Strict, vec![GrantOption::AllowLoopback]),
        )
        .unwrap_err();
        assert!(no.contains("--allow-loopback"), "{no}");
        // A glob matches names, not paths or prefixes alone.
        assert!(check(&g, &alice, &ask("wg0x", Mode::Strict, vec![])).is_err());
    }

    #[test]
    fn bad_grants_are_refused_with_their_line() {
        for (text, says) in [
            ("[[grant]]\ndev = [\"wg0\"]\n", "no users and no groups"),
            ("[[grant]]\nusers = [1]\ndev = []\n", "names no interface"),
            (
                "[[grant]]\nusers = [\"no-such-user-bg\"]\ndev = [\"wg0\"]\n",
                "does not exist",
            ),
            (
                "[[grant]]\nusers = [1]\ndev = [\"wg0\"]\nmode = [\"loose\"]\n",
                "mode 'loose'",
            ),
            (
                "[[grant]]\nusers = [1]\ndev = [\"wg0\"]\noptions = [\"mark\"]\n",
                "grantable",
            ),
            (
                "[[grant]]\nusers = [1]\ndev = [\"wg0\"]\ncgroup = \"x\"\n",
                "unknown field",
            ),
        ] {
            let e = parse_file(Path::new("t.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(e.contains("t.toml:"), "{e}");
        }
    }
}
