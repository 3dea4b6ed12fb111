//! What `bindguard --version` prints: the crate version, the git commit it was built from and
//! the hash of the eBPF object it embeds (both set by build.rs), so a report names the exact
//! programs a binding runs.

/// `0.1.0 (commit abc1234, ebpf 0123456789abcdef, x86_64)`; clap prefixes the command name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BINDGUARD_GIT_COMMIT"),
    ", ebpf ",
    env!("BINDGUARD_EBPF_HASH"),
    ", ",
    env!("BINDGUARD_TARGET_ARCH"),
    ")"
);

/// The architecture this binary was built for (`x86_64`, `aarch64`): the one that runs.
pub const ARCH: &str = env!("BINDGUARD_TARGET_ARCH");

/// The crate version (what the package and tarball names carry).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit bindguard was built from ("unknown" when built outside a git checkout).
pub const COMMIT: &str = env!("BINDGUARD_GIT_COMMIT");

/// FNV-1a 64 of the embedded eBPF object, 16 hex digits, as build.rs computed it.
pub const EBPF_HASH: &str = env!("BINDGUARD_EBPF_HASH");

#[cfg(test)]
mod tests {
    #[test]
    fn the_architecture_is_the_one_built_for() {
        assert_eq!(super::ARCH, std::env::consts::ARCH);
        assert!(super::LONG.ends_with(&format!(", {})", std::env::consts::ARCH)));
    }

    #[test]
    fn build_rs_hash_agrees_with_object_hash() {
        assert_eq!(
            super::EBPF_HASH,
            format!("{:016x}", crate::kernel::hooks::object_hash())
        );
    }
}
