//! Builds the eBPF object (bindguard-ebpf, nightly + bpf-linker) into OUT_DIR so the loader
//! can embed it. `cargo xtask setup` installs what this needs.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let workspace = Path::new(&manifest_dir).parent().expect("workspace root");
    let ebpf_dir = workspace.join("bindguard-ebpf");
    let common_dir = workspace.join("bindguard-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bindguard-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "building the eBPF programs failed ({e:#}); run `cargo xtask setup` to install \
             nightly rust-src and bpf-linker"
        )
    })
}
