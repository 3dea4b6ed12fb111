//! `cargo xtask dist [--arch x86_64|aarch64|all]`: the static release binary, a tarball and a
//! .deb per architecture under dist/.
//!
//! The binary is built for x86_64- and aarch64-unknown-linux-musl as a static non-PIE
//! executable (see .cargo/config.toml: rust-lld links the arm64 one, no cross gcc) in the
//! stripped `dist` profile, so it runs on any distribution. Both architectures ship the same
//! files besides the binary: the man pages, completions and version are printed by the
//! x86_64 binary, which runs here (the eBPF object and the CLI are the same). The
//! .deb is assembled with dpkg-deb from a staged tree (no cargo-deb: it takes minutes to
//! install on a fresh machine and we need none of its Cargo.toml-driven features).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};

use crate::{cargo, run, workspace};

/// An architecture bindguard ships for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The Rust target of the static build.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The name the tarball and `--version` use (the kernel's `uname -m`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's name for it (the .deb's Architecture).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// `--arch`'s value: one architecture by either name, or `all`.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Arch>> {
        if s == "all" {
            return Ok(Arch::ALL.to_vec());
        }
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s || a.debian() == s)
            .map(|a| vec![a])
            .with_context(|| format!("--arch {s}: use x86_64, aarch64 or all"))
    }
}

/// The architecture whose binary runs here: it prints the man pages and completions.
pub const HOST: Arch = Arch::X86_64;
/// deploy/'s hooks.d entry (and unit) name the binary where a by-hand install puts it; the
/// package puts it in /usr/bin and rewrites them.
const LOCAL_BIN: &str = "/usr/local/bin/bindguard";
const PACKAGE_BIN: &str = "/usr/bin/bindguard";

/// Builds the static release binary for this machine; returns its path.
pub fn build_binary() -> anyhow::Result<PathBuf> {
    build_binary_for(HOST)
}

/// Builds the static release binary for `arch`; returns its path.
pub fn build_binary_for(arch: Arch) -> anyhow::Result<PathBuf> {
    run(cargo().args([
        "build",
        "--quiet",
        "--profile",
        "dist",
        "--target",
        arch.target(),
        "-p",
        "bindguard",
        "--bin",
        "bindguard",
    ]))
    .with_context(|| {
        format!(
            "building the static {} binary (`cargo xtask setup` adds the {} target)",
            arch.name(),
            arch.target()
        )
    })?;
    Ok(workspace()
        .join("target")
        .join(arch.target())
        .join("dist/bindguard"))
}

/// Builds every architecture's artefacts; returns the dist/ directory.
pub fn dist() -> anyhow::Result<PathBuf> {
    dist_for(&Arch::ALL)
}

/// Builds the artefacts of `arches`; returns the dist/ directory.
pub fn dist_for(arches: &[Arch]) -> anyhow::Result<PathBuf> {
    let root = workspace();
    // The host's binary prints what every package carries besides the binary.
    let host_bin = build_binary_for(HOST)?;
    let version = version(&host_bin)?;
    let dir = root.join("dist");
    fs::create_dir_all(&dir)?;
    let generated = Generated::new(&host_bin)?;
    for &arch in arches {
        let started = Instant::now();
        let bin = if arch == HOST {
            host_bin.clone()
        } else {
            build_binary_for(arch)?
        };
        let name = format!("bindguard-{version}-{}-linux-musl", arch.name());
        let tree = dir.join(&name);
        stage_tarball(&root, &bin, &generated, &tree)?;
        let tarball = dir.join(format!("{name}.tar.gz"));
        tar(&dir, &name, &tarball)?;

        let staging = dir.join(format!("deb-{}", arch.debian()));
        stage_deb(&root, &bin, &generated, &version, arch, &staging)?;
        let deb = dir.join(format!("bindguard_{version}_{}.deb", arch.debian()));
        // dpkg-deb clamps file times to SOURCE_DATE_EPOCH and stamps the ar members with it.
        run(Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", source_date_epoch())
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&staging)
            .arg(&deb)
            .stdout(std::process::Stdio::null()))?;

        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "dist: bindguard {version} {} static binary {} KiB; {} ({} KiB), {} ({} KiB) in {:.1} s",
            arch.name(),
            size(&bin) / 1024,
            tarball.display(),
            size(&tarball) / 1024,
            deb.display(),
            size(&deb) / 1024,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(dir)
}

/// `bindguard --version` is `bindguard 0.1.0 (commit …, ebpf …)`: the version is the second
/// word (the binary, not Cargo.toml, so the names always match what is packaged).
fn version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().nth(1) {
        Some(v) if out.status.success() => Ok(v.to_string()),
        _ => bail!("{} --version printed {text:?}", bin.display()),
    }
}

/// What the binary prints about itself: man pages and completions.
struct Generated {
    /// (file name, roff): bindguard.1 and one bindguard-SUBCOMMAND.1 per subcommand.
    manpages: Vec<(String, Vec<u8>)>,
    /// (shell, file name in the tarball, install path in the package)
    completions: Vec<(Vec<u8>, &'static str, &'static str)>,
}

impl Generated {
    fn new(bin: &Path) -> anyhow::Result<Self> {
        let print = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
            let out = Command::new(bin).args(args).output()?;
            if !out.status.success() || out.stdout.is_empty() {
                bail!("bindguard {} failed: {out:?}", args.join(" "));
            }
            Ok(out.stdout)
        };
        let mut completions = Vec::new();
        for (shell, file, path) in [
            (
                "bash",
                "bindguard.bash",
                "usr/share/bash-completion/completions/bindguard",
            ),
            (
                "zsh",
                "_bindguard",
                "usr/share/zsh/vendor-completions/_bindguard",
            ),
            (
                "fish",
                "bindguard.fish",
                "usr/share/fish/vendor_completions.d/bindguard.fish",
            ),
        ] {
            completions.push((print(&["completions", shell])?, file, path));
        }
        Ok(Self {
            manpages: manpages(bin)?,
            completions,
        })
    }
}

/// `bindguard manpage --dir`: every page, read back sorted by name.
fn manpages(bin: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = std::env::temp_dir().join(format!("bindguard-dist-man-{}", std::process::id()));
    fresh_dir(&dir)?;
    run(Command::new(bin)
        .arg("manpage")
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null()))?;
    let mut pages = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            pages.push((name, fs::read(&path)?));
        }
    }
    pages.sort();
    if !pages.iter().any(|(name, _)| name == "bindguard.1") || pages.len() < 2 {
        bail!(
            "bindguard manpage --dir wrote {:?}: expected bindguard.1 and a page per subcommand",
            pages.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    fs::remove_dir_all(&dir)?;
    Ok(pages)
}

/// Files of deploy/`sub` (none if it does not exist yet), sorted.
fn deploy_files(root: &Path, sub: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = root.join("deploy").join(sub);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.is_file());
    files.sort();
    Ok(files)
}

fn write(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let data = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &data, mode)
}

/// The README and, beside it, every file of docs/ (the pages the README links), into `to`.
fn copy_docs(root: &Path, to: &Path) -> anyhow::Result<()> {
    copy(&root.join("README.md"), &to.join("README.md"), 0o644)?;
    let docs = root.join("docs");
    for f in files_under(&docs)? {
        copy(&docs.join(&f), &to.join("docs").join(&f), 0o644)?;
    }
    Ok(())
}

fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

/// The unpacked tarball: also the build context of deploy/Containerfile.
fn stage_tarball(
    root: &Path,
    bin: &Path,
    generated: &Generated,
    tree: &Path,
) -> anyhow::Result<()> {
    fresh_dir(tree)?;
    copy(bin, &tree.join("bindguard"), 0o755)?;
    for (name, page) in &generated.manpages {
        write(&tree.join("man").join(name), page, 0o644)?;
    }
    for (script, file, _) in &generated.completions {
        write(&tree.join("completions").join(file), script, 0o644)?;
    }
    copy_docs(root, tree)?;
    copy(
        &root.join("deploy/Containerfile"),
        &tree.join("Containerfile"),
        0o644,
    )?;
    for sub in ["hooks.d", "systemd", "config", "kubernetes"] {
        for f in deploy_files(root, sub)? {
            copy(&f, &tree.join(sub).join(f.file_name().unwrap()), 0o644)?;
        }
    }
    Ok(())
}

/// The time every archived file carries: the commit's, so the same tree packs to the same
/// bytes (SOURCE_DATE_EPOCH if set, as reproducible-builds tools expect; 0 outside git).
fn source_date_epoch() -> String {
    std::env::var("SOURCE_DATE_EPOCH").ok().unwrap_or_else(|| {
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(workspace())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "0".into())
    })
}

/// GNU tar with fixed owners, order and times, so the same tree gives the same archive.
fn tar(dir: &Path, name: &str, tarball: &Path) -> anyhow::Result<()> {
    let mtime = source_date_epoch();
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            &format!("--mtime=@{mtime}"),
            "--use-compress-program=gzip -9n",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(tarball)
        .arg(name))
}

/// The files a unit or hooks entry points at live in /usr/bin in the package.
fn for_package(data: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(data)
        .replace(LOCAL_BIN, PACKAGE_BIN)
        .into_bytes()
}

fn stage_deb(
    root: &Path,
    bin: &Path,
    generated: &Generated,
    version: &str,
    arch: Arch,
    staging: &Path,
) -> anyhow::Result<()> {
    fresh_dir(staging)?;
    fs::set_permissions(staging, fs::Permissions::from_mode(0o755))?;
    copy(bin, &staging.join("usr/bin/bindguard"), 0o755)?;
    for (name, page) in &generated.manpages {
        write(
            &staging
                .join("usr/share/man/man1")
                .join(format!("{name}.gz")),
            &gzip(page)?,
            0o644,
        )?;
    }
    for (script, _, path) in &generated.completions {
        write(&staging.join(path), script, 0o644)?;
    }
    let hook = fs::read(root.join("deploy/hooks.d/bindguard.json"))?;
    let packaged = for_package(&hook);
    if !String::from_utf8_lossy(&packaged).contains(&format!("\"{PACKAGE_BIN}\"")) {
        bail!("deploy/hooks.d/bindguard.json does not name {LOCAL_BIN}: update dist.rs");
    }
    write(
        &staging.join("usr/share/containers/oci/hooks.d/bindguard.json"),
        &packaged,
        0o644,
    )?;
    let doc = staging.join("usr/share/doc/bindguard");
    copy_docs(root, &doc)?;
    write(
        &doc.join("copyright"),
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
          Upstream-Name: bindguard\n\nFiles: *\nLicense: MIT or Apache-2.0\n",
        0o644,
    )?;
    // Units go where systemd looks; anything else (drop-in examples) is documentation for
    // the admin to copy to /etc.
    let mut units = Vec::new();
    for f in deploy_files(root, "systemd")? {
        let name = f.file_name().unwrap();
        let to = if is_unit(&f) {
            units.push(name.to_string_lossy().into_owned());
            staging.join("usr/lib/systemd/system").join(name)
        } else {
            doc.join("examples/systemd").join(name)
        };
        write(&to, &for_package(&fs::read(&f)?), 0o644)?;
    }
    let mut conffiles = String::new();
    for f in deploy_files(root, "config")? {
        let name = f.file_name().unwrap();
        copy(&f, &staging.join("etc/bindguard").join(name), 0o644)?;
        conffiles += &format!("/etc/bindguard/{}\n", name.to_string_lossy());
    }

    let files = files_under(staging)?;
    let installed_kib: u64 = files
        .iter()
        .map(|f| fs::metadata(staging.join(f)).map(|m| m.len().div_ceil(1024)))
        .sum::<Result<u64, _>>()?;
    let debian = staging.join("DEBIAN");
    // No Depends: the binary is static and needs nothing from the system.
    let control = format!(
        "Package: bindguard\n\
         Version: {version}\n\
         Architecture: {}\n\
         Maintainer: bindguard developers <bindguard@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Section: net\n\
         Priority: optional\n\
         Description: pin every socket of a cgroup to one network interface (eBPF)\n \
         bindguard gives SO_BINDTODEVICE semantics to every socket of a cgroup v2,\n \
         enforced in the Linux kernel with eBPF, statically linked programs included.\n \
         In strict mode their traffic cannot leave or arrive by any other interface.\n \
         Includes the OCI hook (hooks.d) for podman and CRI-O. Static binary.\n",
        arch.debian()
    );
    write(&debian.join("control"), control.as_bytes(), 0o644)?;
    if !conffiles.is_empty() {
        write(&debian.join("conffiles"), conffiles.as_bytes(), 0o644)?;
    }
    let md5 = Command::new("md5sum")
        .args(&files)
        .current_dir(staging)
        .output()?;
    if !md5.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&md5.stderr));
    }
    write(&debian.join("md5sums"), &md5.stdout, 0o644)?;
    if !units.is_empty() {
        maintainer_scripts(&debian, &units)?;
    }
    // Directories made by create_dir_all follow the umask; a package's must be 0755.
    for d in dirs_under(staging)? {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// A systemd unit file by its type suffix (`bindguard.service`), not a drop-in or an example.
fn is_unit(path: &Path) -> bool {
    const TYPES: &[&str] = &["service", "socket", "timer", "path", "target", "mount"];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| TYPES.contains(&e))
}

/// systemd learns of installed and removed units, and a removed service is stopped. Units are
/// not enabled: which cgroups to bind is the admin's decision (bindings outlive the service).
/// Everything is skipped where systemd is not running (a container, a chroot).
fn maintainer_scripts(debian: &Path, units: &[String]) -> anyhow::Result<()> {
    let running = "[ -d /run/systemd/system ]";
    let reload = format!("if {running}; then systemctl daemon-reload || true; fi");
    let stop = units
        .iter()
        .map(|u| format!("    systemctl stop {u} || true"))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, body) in [
        (
            "postinst",
            format!("if [ \"$1\" = configure ]; then {reload}; fi"),
        ),
        (
            "prerm",
            format!("if [ \"$1\" = remove ] && {running}; then\n{stop}\nfi"),
        ),
        ("postrm", reload.clone()),
    ] {
        let script = format!("#!/bin/sh\nset -e\n{body}\nexit 0\n");
        write(&debian.join(name), script.as_bytes(), 0o755)?;
    }
    Ok(())
}

fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(data)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// Regular files under `root` (DEBIAN/ excluded), relative and sorted.
fn files_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(root, &mut |p| {
        if p.is_file() && !p.starts_with(root.join("DEBIAN")) {
            files.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
    })?;
    files.sort();
    Ok(files)
}

fn dirs_under(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    walk(root, &mut |p| {
        if p.is_dir() {
            dirs.push(p.to_path_buf());
        }
    })?;
    Ok(dirs)
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        f(&path);
        if path.is_dir() {
            walk(&path, f)?;
        }
    }
    Ok(())
}
