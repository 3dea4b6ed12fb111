//! The failures callers branch on. Each message is one line that names what was wrong and
//! what to do; [`Error::exit_code`] says whether it was bad input (2) or a failed operation (1).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- bad input: exit 2 -------------------------------------------------------------------
    #[error(
        "no cgroup2 filesystem is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2Mount,

    #[error(
        "cgroup {} does not exist; create it with `mkdir {}` or give an existing cgroup",
        quote_path(path),
        quote_path(path)
    )]
    CgroupMissing { path: PathBuf },

    #[error(
        "cgroup {} is not on a cgroup2 mount (found {found}); give a directory under {}",
        quote_path(path),
        mount.display()
    )]
    NotCgroup2 {
        path: PathBuf,
        found: String,
        mount: PathBuf,
    },

    #[error(
        "cgroup {} is not a directory; give a cgroup directory under {}",
        quote_path(path),
        mount.display()
    )]
    CgroupNotDirectory { path: PathBuf, mount: PathBuf },

    #[error(
        "interface name '{}' is {len} bytes long; Linux interface names are at most 15 bytes",
        quote(name)
    )]
    IfnameTooLong { name: String, len: usize },

    #[error("interface name '{}' is invalid: {why}", quote(name))]
    IfnameInvalid { name: String, why: &'static str },

    #[error(
        "no interface named '{}' in {netns}; list the interfaces there with `ip link`",
        quote(name)
    )]
    UnknownInterface { name: String, netns: String },

    #[error(
        "cgroup {} is the root of a cgroup2 hierarchy: binding it would bind every process there; give a child cgroup (e.g. {}/mgmt)",
        quote_path(path),
        quote_path(path)
    )]
    RootCgroup { path: PathBuf },

    #[error(
        "cgroup {} is escapable-by-migration ({writer} via {}): its processes can move out of the binding (mkdir, then their pid into the new cgroup's cgroup.procs) where no program sees them; bind {} itself (every process below it), run the workload in a cgroup they cannot leave, or pass --allow-delegated to accept this",
        quote_path(cgroup),
        quote_path(boundary),
        quote_path(boundary)
    )]
    Delegated {
        cgroup: PathBuf,
        boundary: PathBuf,
        writer: String,
    },

    #[error(
        "{what} is {len} bytes long, more than the {max} allowed: '{}'",
        quote(value)
    )]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
        max: usize,
    },

    #[error(
        "{} is not a network namespace ({why}); give /run/netns/NAME or /proc/PID/ns/net",
        quote_path(path)
    )]
    NotNetns { path: PathBuf, why: String },

    #[error(
        "cgroup {} has no bindguard binding; `bindguard status` lists the bindings",
        quote_path(path)
    )]
    NotBound { path: PathBuf },

    #[error("{what}")]
    InvalidInput { what: String },

    /// The daemon refused a user's request (no grant, not granted, bad request).
    #[error("the bindguard daemon refused: {why}")]
    Refused { why: String },

    /// A config file (`apply`, `daemon`) is wrong; nothing of it was applied.
    #[error("{}:{line}: {why}; fix the config and run again (nothing was applied)", file.display())]
    Config {
        file: PathBuf,
        line: usize,
        why: String,
    },

    // ---- operational failures: exit 1 ---------------------------------------------------------
    #[error("{action} needs {caps}; run bindguard as root")]
    MissingPrivilege {
        action: &'static str,
        caps: &'static str,
    },

    #[error(
        "bpffs is not mounted at {path} and mounting it failed ({source}); mount it with `mount -t bpf bpf {path}`"
    )]
    BpffsMount { path: PathBuf, source: nix::Error },

    #[error(
        "kernel {release} cannot attach cgroup programs with bpf_link (needs Linux 5.7 or newer)"
    )]
    KernelTooOld { release: String },

    #[error(
        "no bindguard daemon answers at {} ({why}); without root, exec asks the daemon: ask an admin to run `systemctl enable --now bindguard`",
        socket.display()
    )]
    NoDaemon { socket: PathBuf, why: String },
}

impl Error {
    /// The typed error `err` is, for a caller that branches on what the function it called
    /// said (`Error::is_cgroup_missing(&e)` and its siblings use it). Only `err` itself
    /// (or the error under its outermost context) is looked at, not every cause in its chain:
    /// [`find`] does that, for the exit code and message at the edge.
    pub fn of(err: &anyhow::Error) -> Option<&Error> {
        err.downcast_ref::<Error>()
    }

    /// Whether `err` says the cgroup does not exist ([`Error::CgroupMissing`]).
    pub fn is_cgroup_missing(err: &anyhow::Error) -> bool {
        matches!(Error::of(err), Some(Error::CgroupMissing { .. }))
    }

    /// Whether `err` says the cgroup has no binding ([`Error::NotBound`]).
    pub fn is_not_bound(err: &anyhow::Error) -> bool {
        matches!(Error::of(err), Some(Error::NotBound { .. }))
    }

    /// Whether `err` says no interface has the name ([`Error::UnknownInterface`]).
    pub fn is_unknown_interface(err: &anyhow::Error) -> bool {
        matches!(Error::of(err), Some(Error::UnknownInterface { .. }))
    }

    /// 2 for bad input the user can correct, 1 for an operation the system refused.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoCgroup2Mount
            | Error::CgroupMissing { .. }
            | Error::NotCgroup2 { .. }
            | Error::CgroupNotDirectory { .. }
            | Error::IfnameTooLong { .. }
            | Error::IfnameInvalid { .. }
            | Error::UnknownInterface { .. }
            | Error::NotNetns { .. }
            | Error::RootCgroup { .. }
            | Error::Delegated { .. }
            | Error::TooLong { .. }
            | Error::InvalidInput { .. }
            | Error::Config { .. }
            | Error::Refused { .. } => 2,
            Error::NotBound { .. }
            | Error::MissingPrivilege { .. }
            | Error::BpffsMount { .. }
            | Error::KernelTooOld { .. }
            | Error::NoDaemon { .. } => 1,
        }
    }
}

/// At most this many bytes of user input are repeated in a message; an error line stays one
/// readable line whatever was given.
pub const QUOTE_MAX: usize = 96;

/// `s`, cut to [`QUOTE_MAX`] bytes (on a character boundary) with its length said when cut.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return s.escape_debug().to_string();
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} bytes]", s[..end].escape_debug(), s.len())
}

/// A path as [`quote`] cuts it.
pub fn quote_path(p: &std::path::Path) -> String {
    quote(&p.to_string_lossy())
}

/// `s` for a line of text output, with every control character (ESC, CR, LF, ...) written as
/// an escape (`\x1b`, `\r`, `\n`) and a backslash as `\\`. Process names and cgroup names
/// are chosen by users; printed raw they could rewrite the terminal or forge lines. JSON
/// output keeps the real bytes (serde escapes them).
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Unicode's control characters are C0, DEL and C1 (U+0080..U+009F, e.g. CSI).
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A path as [`printable`] writes it.
pub fn printable_path(p: &std::path::Path) -> String {
    printable(&p.to_string_lossy())
}

/// The first error of type `E` in `err`'s chain, however deep under context (a
/// [`crate::kernel::Error`] under "attaching cgroup ...", this module's [`Error`] anywhere).
pub fn find<E>(err: &anyhow::Error) -> Option<&E>
where
    E: std::error::Error + 'static,
{
    err.chain().find_map(|e| e.downcast_ref::<E>())
}

/// The exit code for any error that reached the edge: typed errors know theirs, anything else
/// is an operation that failed.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    find::<Error>(err).map_or(1, Error::exit_code)
}

/// An error that reached the edge, as one line: a typed error's own message (it says what
/// to do), else the whole context chain.
pub fn one_line(err: &anyhow::Error) -> String {
    match find::<Error>(err) {
        Some(typed) => typed.to_string(),
        None => format!("{err:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_capped_and_one_line() {
        assert_eq!(quote("eth0"), "eth0");
        let long = "x".repeat(100_000_000 / 1000);
        let q = quote(&long);
        assert!(q.len() < QUOTE_MAX + 32, "{}", q.len());
        assert!(q.ends_with("[100000 bytes]"), "{q}");
        assert_eq!(quote("a\nb"), "a\\nb");
        assert_eq!(
            quote(&"é".repeat(60)).chars().filter(|&c| c == 'é').count(),
            48
        );
        let e = Error::IfnameTooLong {
            name: long.clone(),
            len: long.len(),
        };
        assert!(e.to_string().len() < 300);
    }

    #[test]
    fn typed_errors_are_found_under_context() {
        use anyhow::Context as _;
        let missing = || -> anyhow::Result<()> {
            Err(Error::CgroupMissing {
                path: "/sys/fs/cgroup/x".into(),
            }
            .into())
        };
        let e = missing().unwrap_err();
        assert!(Error::is_cgroup_missing(&e));
        assert!(!Error::is_not_bound(&e));
        let e = missing().context("attaching").unwrap_err();
        assert!(Error::is_cgroup_missing(&e));
        let e = missing().context("attaching").context("apply").unwrap_err();
        assert!(find::<Error>(&e).is_some());
        assert_eq!(exit_code(&e), 2);
        assert!(one_line(&e).starts_with("cgroup /sys/fs/cgroup/x does not exist"));
        let untyped = anyhow::anyhow!("EPERM").context("linking");
        assert!(Error::of(&untyped).is_none());
        assert_eq!(exit_code(&untyped), 1);
        assert_eq!(one_line(&untyped), "linking: EPERM");
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("eth0 /x/y é"), "eth0 /x/y é");
        assert_eq!(printable("a\x1b[2Jb\rc\nd"), "a\\x1b[2Jb\\rc\\nd");
        assert_eq!(printable("\x7f\u{9b}\\"), "\\x7f\\x9b\\\\");
    }
}
