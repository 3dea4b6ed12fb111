//! Whether the BPF LSM is active: strict mode's caller-context guards (socket families,
//! sockets received from outside, 32-bit multicast joins) need it. A kernel built with
//! CONFIG_BPF_LSM still loads LSM programs when `bpf` is missing from `lsm=`; they just never
//! run, so the list of active LSMs is what counts.

use std::path::Path;

pub const SECURITYFS: &str = "/sys/kernel/security";
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Whether strict mode's BPF LSM programs can run here, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Usable,
    /// `bpf` is not in the active LSM list (the list as the kernel gave it).
    NotListed(String),
    /// `bpf` is listed, but the kernel has no per-cgroup BPF LSM programs (lsm_cgroup, 6.0).
    NoLsmCgroup,
    /// `bpf` is listed and lsm_cgroup exists, but the kernel refuses the program (some
    /// hardened kernels refuse every BTF-attached program).
    Refused(String),
}

impl State {
    /// One sentence: what is wrong and how to change it.
    pub fn describe(&self) -> String {
        match self {
            State::Usable => "the BPF LSM is active".into(),
            State::NotListed(list) => {
                let list = list.trim();
                let example = if list.is_empty() {
                    "bpf".to_string()
                } else {
                    format!("{list},bpf")
                };
                format!(
                    "the BPF LSM is not active (lsm={list}): add `bpf` to the kernel's lsm= boot parameter (e.g. lsm={example}) and reboot"
                )
            }
            State::NoLsmCgroup => "the kernel has no per-cgroup BPF LSM programs (BPF_LSM_CGROUP): Linux 6.0 or later has them".into(),
            State::Refused(e) => format!(
                "`bpf` is an active LSM but the kernel refuses to load BPF LSM programs ({e}; a lockdown or hardening setting): boot a kernel that allows them"
            ),
        }
    }
}

/// The BPF LSM's state here: the active list, then a test load of an lsm_cgroup program.
/// Mounts securityfs when `mount` is true and it is not mounted (read-only commands pass
/// false).
pub fn state(mount: bool) -> State {
    if let Ok(forced) = std::env::var("BINDGUARD_LSM_LIST") {
        // Tests: a list stands for what the kernel says, probe included.
        return if lists_bpf(&forced) {
            State::Usable
        } else {
            State::NotListed(forced)
        };
    }
    let list = active_list(mount);
    if !lists_bpf(&list) {
        return State::NotListed(list);
    }
    match probe_load() {
        Ok(()) => State::Usable,
        // No such attach type (or no such LSM hook function in the BTF): before 6.0.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
            State::NoLsmCgroup
        }
        Err(e) => State::Refused(match e.raw_os_error() {
            Some(libc::EPERM) => "EPERM".into(),
            Some(libc::EACCES) => "EACCES".into(),
            _ => e.to_string(),
        }),
    }
}

impl State {
    /// The state as a bpffs name (no dots there), recorded with a program set that had to
    /// leave the LSM programs out, so `attach` can say why without probing again (a probe
    /// parses the whole vmlinux BTF: ~10 ms). A `NotListed` state is recorded without its
    /// list, which is read again (cheaply) when it is told.
    pub fn code(&self) -> String {
        match self {
            State::Usable => "lsm-usable".into(),
            State::NotListed(_) => "lsm-not-listed".into(),
            State::NoLsmCgroup => "lsm-no-cgroup".into(),
            State::Refused(e) => format!(
                "lsm-refused-{}",
                e.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect::<String>()
            ),
        }
    }

    /// The state [`State::code`] recorded; None for a name that is not one.
    pub fn from_code(code: &str, mount: bool) -> Option<Self> {
        Some(match code {
            "lsm-usable" => State::Usable,
            "lsm-not-listed" => State::NotListed(active_list(mount)),
            "lsm-no-cgroup" => State::NoLsmCgroup,
            _ => State::Refused(code.strip_prefix("lsm-refused-")?.to_string()),
        })
    }
}

/// Whether strict mode's BPF LSM programs can run here.
pub fn usable(mount: bool) -> bool {
    state(mount) == State::Usable
}

/// Whether BINDGUARD_LSM_LIST (the test hook for the "not active" path) says the BPF LSM is
/// off. Attach honours it when linking a program set that has LSM programs (the set was
/// loaded by an attach that did not have it).
pub fn forced_unavailable() -> bool {
    std::env::var("BINDGUARD_LSM_LIST").is_ok_and(|l| !lists_bpf(&l))
}

/// Loads (and at once closes) the smallest lsm_cgroup program, `return 1`, on socket_create.
pub fn probe_load() -> std::io::Result<()> {
    static RESULT: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let result = RESULT.get_or_init(|| {
        let btf_id = crate::kernel::btf::Btf::from_sys_fs()
            .ok()
            .and_then(|b| b.func_id("bpf_lsm_socket_create"))
            .ok_or(libc::ENOENT)?;
        // BPF_PROG_TYPE_LSM, BPF_LSM_CGROUP
        crate::kernel::probe::load(29, 43, &crate::kernel::probe::RETURN_1, btf_id)
            .map(drop)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    result.map_err(std::io::Error::from_raw_os_error)
}

/// The active LSMs as the kernel lists them ("" if securityfs cannot be read).
pub fn active_list(mount: bool) -> String {
    if !Path::new(LSM_LIST).exists() && mount {
        let _ = nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
    std::fs::read_to_string(LSM_LIST)
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

fn lists_bpf(list: &str) -> bool {
    list.trim().split(',').any(|l| l == "bpf")
}

#[cfg(test)]
mod tests {
    #[test]
    fn bpf_must_be_listed() {
        assert!(super::lists_bpf("lockdown,capability,landlock,bpf\n"));
        assert!(!super::lists_bpf("lockdown,capability,apparmor"));
        assert!(!super::lists_bpf("bpfx"));
    }
}
