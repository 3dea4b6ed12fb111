//! Whether the BPF LSM is active: strict mode's caller-context guards (socket families,
//! sockets received from outside, 32-bit multicast joins) need it. A kernel built with
//! CONFIG_BPF_LSM still loads LSM programs when `bpf` is missing from `lsm=`; they just never
//! run, so the list of active LSMs is what counts.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

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
    /// The kernel loads lsm_cgroup programs but cannot link one (BPF_LINK_CREATE: ENOTSUPP):
    /// its BPF trampoline cannot attach to kernel functions (arm64 before ftrace direct
    /// calls, as Debian 12's 6.1; see docs/arm64.md).
    Unlinkable,
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
            State::Unlinkable => "`bpf` is an active LSM and the kernel loads BPF LSM programs but cannot attach them (BPF_LINK_CREATE: ENOTSUPP, os error 524; its BPF trampoline cannot attach to kernel functions, as on arm64 kernels without ftrace direct calls such as Debian 12's 6.1): boot a newer kernel (Debian 13's arm64 6.12 attaches them)".into(),
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
    match probe() {
        Ok(()) => State::Usable,
        Err(Probe::Link(ENOTSUPP | libc::EOPNOTSUPP)) => State::Unlinkable,
        // Any other link failure (no cgroup v2 to link to, ...) is the real attach's to say:
        // the programs load, which is all this probe could tell.
        Err(Probe::Link(_)) => State::Usable,
        Err(Probe::Load(e)) => load_state(std::io::Error::from_raw_os_error(e)),
    }
}

/// The state a failed test load means.
fn load_state(e: std::io::Error) -> State {
    match e.raw_os_error() {
        // No such attach type (or no such LSM hook function in the BTF): before 6.0.
        Some(libc::EINVAL) | Some(libc::ENOENT) => State::NoLsmCgroup,
        Some(libc::EPERM) => State::Refused("EPERM".into()),
        Some(libc::EACCES) => State::Refused("EACCES".into()),
        _ => State::Refused(e.to_string()),
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
            State::Unlinkable => "lsm-no-link".into(),
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
            "lsm-no-link" => State::Unlinkable,
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

/// The kernel's ENOTSUPP (include/linux/errno.h; not a userspace errno, so not in libc).
const ENOTSUPP: i32 = 524;

/// Which step of the probe failed, with the kernel's errno.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Load(i32),
    Link(i32),
}

/// Loads the smallest lsm_cgroup program, `return 1`, on socket_create, then links it for
/// a moment to this process's own cgroup: some kernels load lsm_cgroup programs but cannot
/// link them (arm64 6.1: ENOTSUPP), and strict mode must know before it attaches. The link
/// allows every socket and is dropped at once. Without a cgroup v2 to link to, only the
/// load is tested.
fn probe() -> Result<(), Probe> {
    static RESULT: std::sync::OnceLock<Result<(), Probe>> = std::sync::OnceLock::new();
    *RESULT.get_or_init(|| {
        let btf_id = crate::kernel::btf::Btf::from_sys_fs()
            .ok()
            .and_then(|b| b.func_id("bpf_lsm_socket_create"))
            .ok_or(Probe::Load(libc::ENOENT))?;
        // BPF_PROG_TYPE_LSM, BPF_LSM_CGROUP
        let prog = crate::kernel::probe::load(29, 43, &crate::kernel::probe::RETURN_1, btf_id)
            .map_err(|e| Probe::Load(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let Some(cgroup) = own_cgroup() else {
            return Ok(());
        };
        crate::kernel::link::create_cgroup_link(
            prog.as_fd(),
            cgroup.as_fd(),
            aya_obj::generated::bpf_attach_type::BPF_LSM_CGROUP,
        )
        .map(drop)
        .map_err(|e| Probe::Link(e.raw_os_error().unwrap_or(libc::EIO)))
    })
}

/// Loads (and at once closes) the smallest lsm_cgroup program and links it for a moment
/// (see [`probe`]); the error is the kernel's errno of the step that failed.
pub fn probe_load() -> std::io::Result<()> {
    probe().map_err(|(Probe::Load(e) | Probe::Link(e))| std::io::Error::from_raw_os_error(e))
}

/// This process's cgroup (v2), or the cgroup v2 root when that cannot be opened.
fn own_cgroup() -> Option<OwnedFd> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // `id parent maj:min root mountpoint options ... - fstype source super-options`
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then_some(())?;
        left.split_whitespace().nth(4).map(str::to_string)
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        })
        .unwrap_or_default();
    let open = |p: &Path| {
        std::fs::File::open(p)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_dir()))
            .map(OwnedFd::from)
    };
    let root = Path::new(&mount);
    open(&root.join(own.trim_start_matches('/'))).or_else(|| open(root))
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

    #[test]
    fn every_recorded_state_reads_back() {
        use super::State;
        for s in [
            State::Usable,
            State::NoLsmCgroup,
            State::Unlinkable,
            State::Refused("EPERM".into()),
        ] {
            assert_eq!(State::from_code(&s.code(), false), Some(s.clone()), "{s:?}");
        }
        assert!(State::Unlinkable.describe().contains("524"));
    }
}
