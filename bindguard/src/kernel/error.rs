//! The kernel operations that fail: one variant per bpf(2) step, naming the program, map or
//! pin it was about and keeping the kernel's (or aya's) error as its source. The message is
//! the step; the cause follows it in an error chain (`{:#}`), as `bindguard: ...` prints it.
//! A verifier log stays inside [`Error::Load`]'s source, where `refused` finds it for
//! `--verbose`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// aya could not parse or relocate bindguard's embedded eBPF object (maps are created
    /// here).
    #[error("loading bindguard's eBPF object")]
    Object(#[source] aya::EbpfError),

    /// BPF_PROG_LOAD through aya: the verifier (or the kernel) refused the program.
    #[error("loading {program}")]
    Load {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    /// An LSM program, with no kernel BTF to find its hook in.
    #[error("loading {program}: the LSM programs need the kernel's BTF")]
    NoBtf { program: &'static str },

    /// BPF_PROG_LOAD of instructions bindguard wrote itself (the netns cookie reader).
    #[error("loading {program}")]
    LoadInsns {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// BPF_PROG_LOAD of a program of the object that aya cannot load (cgroup/connect_unix).
    #[error("loading {program}")]
    LoadRaw {
        program: &'static str,
        #[source]
        source: crate::kernel::rawload::LoadError,
    },

    /// BPF_MAP_CREATE.
    #[error("creating {map}")]
    CreateMap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// BPF_LINK_CREATE of a program to a cgroup.
    #[error("linking {program}")]
    Link {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// BPF_OBJ_PIN of a program or link.
    #[error("pinning {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Pinning one of the object's maps (through aya).
    #[error("pinning {}", path.display())]
    PinMap {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },

    /// Removing a pin (the last reference to a link: its program is detached).
    #[error("unpinning {}", path.display())]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// BPF_OBJ_GET of a pinned program, map or link.
    #[error("opening {}", path.display())]
    OpenPin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// BPF_OBJ_GET_INFO_BY_FD of a pinned object.
    #[error("reading {}", path.display())]
    Info {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A map pinned by a bindguard with another value layout (never read into ours).
    #[error(
        "{} has key/value sizes {found:?}, not (8, {value}): a set of a bindguard with another policy layout",
        path.display()
    )]
    MapLayout {
        path: PathBuf,
        found: (u32, u32),
        value: u32,
    },

    /// BPF_MAP_UPDATE_ELEM of a binding's policy.
    #[error("writing the policy of cgroup {cgroup_id} into {}", set.display())]
    WritePolicy {
        cgroup_id: u64,
        set: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// BPF_MAP_LOOKUP_ELEM.
    #[error("reading {map}")]
    ReadMap {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The verifier's log, when this is a program the verifier refused (for `--verbose`).
    pub fn verifier_log(&self) -> Option<String> {
        match self {
            Error::Load {
                source: aya::programs::ProgramError::LoadError { verifier_log, .. },
                ..
            } => Some(verifier_log.to_string()).filter(|l| !l.trim().is_empty()),
            Error::LoadRaw {
                source: crate::kernel::rawload::LoadError::Refused { log, .. },
                ..
            } => Some(log.clone()).filter(|l| !l.trim().is_empty()),
            _ => None,
        }
    }

    /// The innermost cause's message (the kernel's or aya's words).
    pub fn root_cause(&self) -> String {
        let mut cause: &dyn std::error::Error = self;
        while let Some(next) = cause.source() {
            cause = next;
        }
        cause.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eperm() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EPERM)
    }

    /// The message names the step and the program; the kernel's words follow in the chain.
    #[test]
    fn messages_name_the_step_and_keep_the_cause() {
        let e = anyhow::Error::from(Error::Link {
            program: "guard_connect4",
            source: eperm(),
        })
        .context("attaching cgroup /sys/fs/cgroup/x to eth0");
        let line = format!("{e:#}");
        assert_eq!(
            line,
            format!(
                "attaching cgroup /sys/fs/cgroup/x to eth0: linking guard_connect4: {}",
                eperm()
            )
        );
        assert!(matches!(
            crate::error::find::<Error>(&e),
            Some(Error::Link {
                program: "guard_connect4",
                ..
            })
        ));
        let pin = Error::Pin {
            path: "/sys/fs/bpf/bindguard/1/link_connect4".into(),
            source: eperm(),
        };
        assert_eq!(
            pin.to_string(),
            "pinning /sys/fs/bpf/bindguard/1/link_connect4"
        );
        assert_eq!(pin.root_cause(), eperm().to_string());
    }

    /// The verifier's log is kept for --verbose; a refusal without one has none.
    #[test]
    fn the_verifier_log_is_kept_apart() {
        let refused = Error::Load {
            program: "lsm_socket_create",
            source: aya::programs::ProgramError::LoadError {
                io_error: eperm(),
                verifier_log: aya_obj::VerifierLog::new("0: R1=ctx\nR0 !read_ok\n".into()),
            },
        };
        assert_eq!(
            refused.verifier_log().as_deref(),
            Some("0: R1=ctx\nR0 !read_ok\n")
        );
        assert_eq!(refused.to_string(), "loading lsm_socket_create");
        let no_log = Error::Load {
            program: "lsm_socket_create",
            source: aya::programs::ProgramError::LoadError {
                io_error: eperm(),
                verifier_log: aya_obj::VerifierLog::new(" \n".into()),
            },
        };
        assert_eq!(no_log.verifier_log(), None);
        let unlinked = Error::Link {
            program: "guard_connect4",
            source: eperm(),
        };
        assert_eq!(unlinked.verifier_log(), None);
    }
}
