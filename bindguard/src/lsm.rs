//! Whether the BPF LSM is active: strict mode's caller-context guards (socket families,
//! sockets received from outside, 32-bit multicast joins) need it. A kernel built with
//! CONFIG_BPF_LSM still loads LSM programs when `bpf` is missing from `lsm=`; they just never
//! run, so the list of active LSMs is what counts.

use std::path::Path;

pub const SECURITYFS: &str = "/sys/kernel/security";
const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// What strict mode does not cover without the BPF LSM, and how to turn it on; shared by
/// attach's warning, status's problem and verify's WARN.
pub const UNAVAILABLE: &str = "the BPF LSM is not usable, so strict mode cannot refuse AF_PACKET/AF_XDP sockets, sockets received from outside the cgroup (SCM_RIGHTS, pidfd_getfd) or multicast joins by 32-bit setsockopt or io_uring; add `bpf` to the kernel's lsm= parameter (e.g. lsm=landlock,lockdown,yama,integrity,apparmor,bpf) and reboot, on a kernel that lets root load BPF LSM programs";

/// Whether strict mode's BPF LSM programs can run here: `bpf` is among the active LSMs *and*
/// the kernel loads an lsm_cgroup program (some hardened kernels list `bpf` but refuse every
/// BTF-attached program with EPERM). Mounts securityfs when `mount` is true and it is not
/// mounted (read-only commands pass false).
pub fn usable(mount: bool) -> bool {
    if let Ok(forced) = std::env::var("BINDGUARD_LSM_LIST") {
        // Tests: a list stands for what the kernel says, probe included.
        return lists_bpf(&forced);
    }
    bpf_lsm_active(mount) && probe_load().is_ok()
}

/// Whether BINDGUARD_LSM_LIST (the test hook for the "not active" path) says the BPF LSM is
/// off. Attach honours it when linking a program set that has LSM programs (the set was
/// loaded by an attach that did not have it).
pub fn forced_unavailable() -> bool {
    std::env::var("BINDGUARD_LSM_LIST").is_ok_and(|l| !lists_bpf(&l))
}

/// Loads (and at once closes) the smallest lsm_cgroup program, `return 1`, on socket_create.
pub fn probe_load() -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    static RESULT: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let result = RESULT.get_or_init(|| {
        let btf_id = crate::btf::Btf::from_sys_fs()
            .ok()
            .and_then(|b| b.func_id("bpf_lsm_socket_create"))
            .ok_or(libc::ENOENT)?;
        // r0 = 1; exit
        let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        let mut attr = [0u8; 128];
        let put = |attr: &mut [u8; 128], at: usize, v: u64, width: usize| {
            attr[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
        };
        put(&mut attr, 0, 29, 4); // prog_type = BPF_PROG_TYPE_LSM
        put(&mut attr, 4, 2, 4); // insn_cnt
        put(&mut attr, 8, insns.as_ptr() as u64, 8);
        put(&mut attr, 16, license.as_ptr() as u64, 8);
        put(&mut attr, 68, 43, 4); // expected_attach_type = BPF_LSM_CGROUP
        put(&mut attr, 108, u64::from(btf_id), 4); // attach_btf_id
        let fd = crate::link::sys_bpf(aya_obj::generated::bpf_cmd::BPF_PROG_LOAD, &mut attr)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        // SAFETY: the kernel returned a new fd we own; dropping it unloads the program.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        Ok(())
    });
    result.map_err(std::io::Error::from_raw_os_error)
}

/// Whether `bpf` is among the active LSMs.
fn bpf_lsm_active(mount: bool) -> bool {
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
    std::fs::read_to_string(LSM_LIST).is_ok_and(|l| lists_bpf(&l))
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
