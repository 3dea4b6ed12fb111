//! Privileged tests never skip silently: under CI=true a missing privilege fails the test.

/// Returns true when the test may run. Without root: panics under CI=true, otherwise prints
/// why it skips and returns false.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci {
        panic!("{test}: needs root (cgroups, bpffs, netns); CI=true so this is a failure");
    }
    eprintln!("SKIP {test}: needs root (cgroups, bpffs, netns)");
    false
}

/// Returns from the test (after saying why) when it may not run; see [`require_root`].
#[macro_export]
macro_rules! root_or_skip {
    () => {
        if !$crate::require_root(module_path!()) {
            return;
        }
    };
}

/// Says that `test` cannot run on this kernel and why: on stderr, and appended to
/// $BINDGUARD_SKIP_LOG (libtest hides a passing test's output; `cargo xtask test` and the VM
/// matrix list these lines by name in their summaries).
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
    if let Some(path) = std::env::var_os("BINDGUARD_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// io_uring features some attacks need, as the running kernel's BTF shows them (the loader
/// reads the same BTF): IORING_OP_SOCKET (5.19) and SOCKET_URING_OP_SETSOCKOPT (6.7).
#[derive(Debug, Clone, Copy)]
pub struct Uring {
    pub socket: bool,
    pub setsockopt: bool,
}

pub fn uring() -> Uring {
    let btf = bindguard::kernel::btf::Btf::from_sys_fs().ok();
    let has = |s: &str, f: &str| btf.as_ref().is_some_and(|b| b.offset(s, f).is_some());
    Uring {
        socket: has("io_socket", "domain"),
        setsockopt: has("io_uring_sqe", "optname"),
    }
}

/// Whether the kernel under test must have cgroup/connect_unix (Linux 6.7, escape row 28).
/// In the VM matrix the boot's name says it (so a kernel that quietly lost the hook fails);
/// on the host the kernel's BTF, as the loader reads it.
pub fn unix_connect_expected() -> bool {
    match std::env::var("BINDGUARD_VM").as_deref() {
        Ok(vm) if !vm.is_empty() => vm.contains("6.12"),
        _ => bindguard::kernel::btf::Btf::from_sys_fs().is_ok_and(|b| b.has_unix_sock_addr()),
    }
}

/// The escape rows strict mode leaves open on this kernel when the BPF LSM programs are
/// absent, as attach, status and verify list them ("7, 12, 14, 20, 21, 26").
pub fn rows_open_without_lsm() -> &'static str {
    if unix_connect_expected() {
        "7, 12, 14, 20, 21, 26"
    } else {
        "7, 12, 14, 20, 21, 26, 28"
    }
}

/// How many programs strict mode links on this kernel when the BPF LSM ones are absent.
pub fn strict_programs_without_lsm() -> usize {
    let non_lsm = bindguard::kernel::hooks::Hook::ALL
        .iter()
        .filter(|h| !h.is_lsm())
        .count();
    non_lsm - usize::from(!unix_connect_expected())
}
