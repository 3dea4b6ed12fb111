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
        "cgroup {path} does not exist; create it with `mkdir {path}` or give an existing cgroup"
    )]
    CgroupMissing { path: PathBuf },

    #[error(
        "cgroup {path} is not on a cgroup2 mount (found {found}); give a directory under {mount}"
    )]
    NotCgroup2 {
        path: PathBuf,
        found: String,
        mount: PathBuf,
    },

    #[error("cgroup {path} is not a directory; give a cgroup directory under {mount}")]
    CgroupNotDirectory { path: PathBuf, mount: PathBuf },

    #[error(
        "interface name '{name}' is {len} bytes long; Linux interface names are at most 15 bytes"
    )]
    IfnameTooLong { name: String, len: usize },

    #[error("interface name '{name}' is invalid: {why}")]
    IfnameInvalid { name: String, why: &'static str },

    #[error("no interface named '{name}' in {netns}; list the interfaces there with `ip link`")]
    UnknownInterface { name: String, netns: String },

    #[error("{path} is not a network namespace ({why}); give /run/netns/NAME or /proc/PID/ns/net")]
    NotNetns { path: PathBuf, why: String },

    #[error("cgroup {path} has no bindguard binding; `bindguard status` lists the bindings")]
    NotBound { path: PathBuf },

    #[error("{what}")]
    InvalidInput { what: String },

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
}

impl Error {
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
            | Error::InvalidInput { .. }
            | Error::Config { .. } => 2,
            Error::NotBound { .. }
            | Error::MissingPrivilege { .. }
            | Error::BpffsMount { .. }
            | Error::KernelTooOld { .. } => 1,
        }
    }
}

/// The exit code for any error that reached the edge: typed errors know theirs, anything else
/// is an operation that failed.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map_or(1, Error::exit_code)
}
