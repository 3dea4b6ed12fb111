//! Debian's stock kernels for the VM matrix: pinned in `xtask/kernels.pins`, fetched with
//! `apt-get download` under a private apt configuration (the host's sources are untouched),
//! unpacked under target/vmtest/, and given a boot initramfs that mounts the host's root over
//! virtio-9p.
//!
//! Why our own initramfs and not virtme-ng: a busybox init that loads the 9p modules and
//! switches to the host's root boots a Debian kernel to the test script in ~5 s under TCG here;
//! virtme-ng took ~30 s per boot for the same, and it is one more tool a fresh machine must
//! install from PyPI.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{run, workspace};

/// One pinned kernel package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The series users know it by: "5.10", "6.1", "6.12".
    pub series: String,
    /// Debian release that ships it (bullseye, bookworm, trixie).
    pub suite: String,
    pub package: String,
    pub version: String,
    /// Debian's architecture of the package (`amd64` unless the line names one).
    pub arch: String,
}

/// The pins, one per line: `series suite package version [arch]` (# comments).
pub fn pins_file() -> PathBuf {
    workspace().join("xtask/kernels.pins")
}

pub fn read_pins() -> anyhow::Result<Vec<Pin>> {
    let path = pins_file();
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let pin = |series: &str, suite: &str, package: &str, version: &str, arch: &str| Pin {
                series: series.into(),
                suite: suite.into(),
                package: package.into(),
                version: version.into(),
                arch: arch.into(),
            };
            match f[..] {
                [series, suite, package, version] => {
                    Ok(pin(series, suite, package, version, "amd64"))
                }
                [series, suite, package, version, arch] => {
                    Ok(pin(series, suite, package, version, arch))
                }
                _ => bail!(
                    "{}: '{l}' is not `series suite package version [arch]`",
                    path.display()
                ),
            }
        })
        .collect()
}

/// Where everything the matrix downloads or builds lives (git-ignored).
pub fn vmtest_dir() -> PathBuf {
    workspace().join("target/vmtest")
}

/// The Debian archive this machine's apt already uses (its `.../debian` URI).
fn host_mirror() -> String {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    for e in fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path()
            .extension()
            .is_some_and(|x| x == "sources" || x == "list")
        {
            texts.push(fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    texts
        .iter()
        .flat_map(|t| t.split_whitespace())
        .map(|w| w.trim_end_matches('/'))
        .find(|w| w.starts_with("http") && w.ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_string()
}

/// apt-get/apt-cache with a configuration of our own: the three suites (and their security
/// updates) of the archive the host uses, lists and cache under target/vmtest/apt (amd64)
/// or target/vmtest/apt-<arch>.
pub(crate) struct Apt {
    dir: PathBuf,
    arch: String,
}

impl Apt {
    fn new(suites: &[&str], arch: &str) -> anyhow::Result<Self> {
        let dir = if arch == "amd64" {
            vmtest_dir().join("apt")
        } else {
            vmtest_dir().join(format!("apt-{arch}"))
        };
        let mut apt = Self::at(dir, suites, true)?;
        apt.arch = arch.into();
        Ok(apt)
    }

    /// The same in `dir` (amd64); `security`: add each suite's security updates (unstable
    /// has none).
    pub(crate) fn at(dir: PathBuf, suites: &[&str], security: bool) -> anyhow::Result<Self> {
        for d in [
            "etc/apt/preferences.d",
            "etc/apt/apt.conf.d",
            "lists/partial",
            "cache/archives/partial",
        ] {
            fs::create_dir_all(dir.join(d))?;
        }
        let mirror = host_mirror();
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut sources = String::new();
        for s in suites {
            sources += &format!("deb [signed-by={keyring}] {mirror} {s} main\n");
            if security {
                sources +=
                    &format!("deb [signed-by={keyring}] {mirror}-security {s}-security main\n");
            }
        }
        fs::write(dir.join("etc/apt/sources.list"), sources)?;
        fs::write(dir.join("status"), "")?;
        Ok(Self {
            dir,
            arch: "amd64".into(),
        })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc={d}/etc/apt"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            format!("Dir::State::status={d}/status"),
            format!("APT::Architecture={}", self.arch),
            "Debug::NoLocking=1".into(),
            // Downloads land in a root-owned directory: no _apt sandbox user.
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    pub(crate) fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options());
        c
    }

    pub(crate) fn update(&self) -> anyhow::Result<()> {
        run(self.cmd("apt-get").args(["update", "-qq"]))
            .context("apt-get update (private configuration)")
    }

    fn output(&self, tool: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cmd(tool).args(args).output()?;
        if !out.status.success() {
            bail!(
                "{tool} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Rewrites xtask/kernels.pins with the newest stock kernel of each pinned series and
/// architecture.
pub fn update_pins() -> anyhow::Result<()> {
    let old = read_pins()?;
    let suites: Vec<&str> = old.iter().map(|p| p.suite.as_str()).collect();
    let mut out = String::from(
        "# Debian's stock kernels the VM matrix boots: series suite package version [arch, amd64\n\
         # if absent]. `cargo xtask vmtest --update-pins` rewrites this file with each series'\n\
         # newest build.\n",
    );
    let mut apts: Vec<(String, Apt)> = Vec::new();
    for pin in &old {
        if !apts.iter().any(|(a, _)| *a == pin.arch) {
            let apt = Apt::new(&suites, &pin.arch)?;
            apt.update()?;
            apts.push((pin.arch.clone(), apt));
        }
        let apt = &apts
            .iter()
            .find(|(a, _)| *a == pin.arch)
            .expect("made above")
            .1;
        let meta = format!("linux-image-{}", pin.arch);
        // linux-image-<arch> of the suite depends on exactly its current kernel package.
        let madison = apt.output("apt-cache", &["madison", &meta])?;
        let version = madison
            .lines()
            .filter(|l| {
                l.contains(&format!(" {}/", pin.suite))
                    || l.contains(&format!(" {}-security/", pin.suite))
            })
            .filter_map(|l| l.split('|').nth(1).map(str::trim))
            .find(|v| v.starts_with(&pin.series))
            .with_context(|| format!("no {meta} {} in {}", pin.series, pin.suite))?
            .to_string();
        let show = apt.output("apt-cache", &["show", &format!("{meta}={version}")])?;
        let package = show
            .lines()
            .find_map(|l| l.strip_prefix("Depends: "))
            .and_then(|d| d.split([' ', ',']).next())
            .with_context(|| format!("{meta} names no kernel package"))?
            .to_string();
        eprintln!(
            "vmtest: {} {} {}: {package} {version}",
            pin.series, pin.suite, pin.arch
        );
        let arch = if pin.arch == "amd64" {
            String::new()
        } else {
            format!(" {}", pin.arch)
        };
        out += &format!("{} {} {package} {version}{arch}\n", pin.series, pin.suite);
    }
    fs::write(pins_file(), out)?;
    Ok(())
}

/// The Debian release whose packages make a foreign architecture's guest userland.
const USERLAND_SUITE: &str = "bookworm";
/// What the tests run besides their own static binaries (tests/src/run.rs, topology.rs): ip,
/// nsenter, unshare, setpriv, setsid, modprobe; busybox for the shell and the rest.
const USERLAND: &[&str] = &["busybox-static", "iproute2", "kmod", "util-linux"];
/// busybox applets the stage-2 script and the tests call, linked where no package put one.
const APPLETS: &[&str] = &[
    "sh", "mount", "umount", "mkdir", "rmdir", "sed", "printf", "chmod", "cat", "sync", "sleep",
    "echo", "ls", "rm", "grep", "true", "false", "ln", "id", "env", "uname", "poweroff", "mknod",
    "tail", "head", "cp", "mv", "test", "[", "kill", "ps", "touch", "wc", "tr", "timeout", "stat",
    "readlink", "dirname", "basename", "awk", "cut", "sort", "dd",
];

/// A root filesystem for `arch` guests (the host's own root serves amd64 ones): Debian's
/// packages for that architecture (`apt-get install --download-only` under the private
/// configuration, then `dpkg-deb -x`), cached under target/vmtest/userland-<arch>/root.
/// The workspace is mounted over it at its host path by the stage-2 script.
pub fn userland(arch: &str) -> anyhow::Result<PathBuf> {
    let dir = vmtest_dir().join(format!("userland-{arch}"));
    let root = dir.join("root");
    let done = dir.join(".ready");
    let stamp = format!("{USERLAND_SUITE} {}", USERLAND.join(" "));
    if fs::read_to_string(&done).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(root);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&root)?;
    eprintln!("vmtest: building the {arch} userland from Debian {USERLAND_SUITE}: {stamp}");
    let apt = Apt::new(&[USERLAND_SUITE], arch)?;
    apt.update()?;
    // An empty dpkg status: apt resolves and fetches every dependency down to libc6.
    run(apt
        .cmd("apt-get")
        .args([
            "install",
            "--download-only",
            "-y",
            "-qq",
            "--no-install-recommends",
        ])
        .args(USERLAND))
    .with_context(|| format!("downloading the {arch} userland's packages"))?;
    let archives = apt.dir.join("cache/archives");
    let mut debs: Vec<PathBuf> = fs::read_dir(&archives)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    for deb in &debs {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))
            .with_context(|| format!("unpacking {}", deb.display()))?;
    }
    if !root.join("bin/busybox").is_file() {
        if !root.join("usr/bin/busybox").is_file() {
            bail!("busybox-static put no busybox in bin/ or usr/bin/");
        }
        // Relative: the host reads it through this link for the initramfs.
        std::os::unix::fs::symlink("../usr/bin/busybox", root.join("bin/busybox"))?;
    }
    for applet in APPLETS {
        let exists = ["bin", "sbin", "usr/bin", "usr/sbin"]
            .iter()
            .any(|d| root.join(d).join(applet).symlink_metadata().is_ok());
        if !exists {
            std::os::unix::fs::symlink("/bin/busybox", root.join("bin").join(applet))?;
        }
    }
    // Mount points the stage-2 script needs on the read-only share, and the workspace's.
    for d in ["proc", "sys", "dev", "tmp", "run", "var/tmp", "root"] {
        fs::create_dir_all(root.join(d))?;
    }
    let ws = workspace();
    fs::create_dir_all(root.join(ws.strip_prefix("/").unwrap_or(&ws)))?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(&done, stamp)?;
    Ok(root)
}

/// The root a guest of Debian architecture `arch` boots on and the stage-2 script's path
/// there: the host's root for amd64; for another architecture its [`userland`], with
/// xtask/src/vm-init.sh copied in (the workspace is not mounted yet when stage 2 starts).
pub fn guest_root(arch: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let stage2 = workspace().join("xtask/src/vm-init.sh");
    if arch == "amd64" {
        return Ok(("/".into(), stage2));
    }
    let root = userland(arch)?;
    // Two boots of this process may install it at once: each through its own file.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = root.join(format!(".bg-vm-init.sh.{}.{n}", std::process::id()));
    fs::copy(&stage2, &tmp)?;
    fs::rename(&tmp, root.join("bg-vm-init.sh"))?;
    Ok((root, "/bg-vm-init.sh".into()))
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` inside it.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    /// The root `modprobe -d` takes (it holds lib/modules/<release>).
    pub modules_root: PathBuf,
}

/// Downloads (once), unpacks and indexes the pinned kernel; builds its initramfs.
pub fn prepare(pin: &Pin) -> anyhow::Result<Kernel> {
    let dir = vmtest_dir().join("kernels").join(&pin.package);
    let done = dir.join(".ready");
    if fs::read_to_string(&done).ok().as_deref() != Some(pin.version.as_str()) {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let deb = download(pin)?;
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")))
        .with_context(|| format!("unpacking {}", deb.display()))?;
        let (modules_root, release) = find_modules(&dir.join("root"))?;
        // Debian runs depmod at install time; the package itself has no modules.dep.
        run(Command::new("depmod")
            .arg("-b")
            .arg(&modules_root)
            .arg(&release))?;
        let busybox = if pin.arch == "amd64" {
            PathBuf::from("/bin/busybox")
        } else {
            userland(&pin.arch)?.join("bin/busybox")
        };
        build_initramfs(
            &modules_root,
            &release,
            &busybox,
            &dir.join("initramfs.cpio"),
        )?;
        fs::write(&done, &pin.version)?;
    }
    let root = dir.join("root");
    let (modules_root, release) = find_modules(&root)?;
    Ok(Kernel {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        initramfs: dir.join("initramfs.cpio"),
        release,
        modules_root,
    })
}

fn download(pin: &Pin) -> anyhow::Result<PathBuf> {
    let debs = vmtest_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let name = format!(
        "{}_{}_{}.deb",
        pin.package,
        pin.version.replace(':', "%3a"),
        pin.arch
    );
    let path = debs.join(&name);
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "vmtest: downloading {} {} from Debian {}",
        pin.package, pin.version, pin.suite
    );
    let apt = Apt::new(&[pin.suite.as_str()], &pin.arch)?;
    apt.update()?;
    let status = apt
        .cmd("apt-get")
        .args([
            "download",
            "-qq",
            &format!("{}={}", pin.package, pin.version),
        ])
        .current_dir(&debs)
        .status()?;
    if !status.success() || !path.exists() {
        bail!(
            "{} {} is no longer in Debian {} (the archive keeps only current builds): \
             run `cargo xtask vmtest --update-pins` and commit xtask/kernels.pins",
            pin.package,
            pin.version,
            pin.suite
        );
    }
    Ok(path)
}

/// The directory `modprobe -d` takes (`root` or `root/usr`: trixie ships modules under
/// /usr/lib) and the kernel release.
fn find_modules(root: &Path) -> anyhow::Result<(PathBuf, String)> {
    for base in [root.to_path_buf(), root.join("usr")] {
        if let Some(e) = fs::read_dir(base.join("lib/modules"))
            .into_iter()
            .flatten()
            .flatten()
            .next()
        {
            return Ok((base, e.file_name().to_string_lossy().into_owned()));
        }
    }
    bail!("{} holds no lib/modules", root.display())
}

/// The modules the initramfs loads to reach the 9p root, dependencies first (from modules.dep).
fn boot_modules(modules_root: &Path, release: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = modules_root.join("lib/modules").join(release);
    let dep = fs::read_to_string(dir.join("modules.dep"))?;
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            module_name(path),
            (
                path.to_string(),
                rest.split_whitespace().map(module_name).collect(),
            ),
        );
    }
    fn visit(m: &str, deps: &HashMap<String, (String, Vec<String>)>, out: &mut Vec<String>) {
        let Some((path, ds)) = deps.get(m) else {
            return;
        };
        if out.contains(path) {
            return;
        }
        for d in ds {
            visit(d, deps, out);
        }
        out.push(path.clone());
    }
    let mut order = Vec::new();
    // virtio_pci is built in on trixie (absent from modules.dep: nothing to load).
    for m in ["virtio_pci", "9pnet_virtio", "9p"] {
        visit(m, &deps, &mut order);
    }
    if !order.iter().any(|p| module_name(p) == "9p") {
        bail!("{} has no 9p module", dir.display());
    }
    Ok(order.into_iter().map(|p| dir.join(p)).collect())
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// A module's bytes, decompressed (busybox insmod takes plain ELF).
fn module_bytes(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return Ok(fs::read(path)?);
    };
    let out = Command::new(tool).arg("-dc").arg(path).output()?;
    if !out.status.success() {
        bail!("{tool} -dc {name} failed");
    }
    Ok(out.stdout)
}

/// The initramfs's /init: load the 9p chain, mount the host's root read-only and switch to
/// it; `xtask/src/vm-init.sh` (on that root) takes over as PID 1, so the kernel's module
/// loader (which runs in PID 1's root) finds the host's modprobe.
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in /modules/*.ko; do $B insmod "$m" || echo "vm-init: insmod $m failed"; done
$B mkdir -p /newroot
if ! $B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose root /newroot; then
    echo "vm-init: mounting the host's root over 9p failed"; $B dmesg | $B tail -20
    echo "bindguard-vm: exit=125"; $B poweroff -f
fi
stage2=$($B sed -n 's/.*bg\.stage2=\([^ ]*\).*/\1/p' /proc/cmdline)
$B umount /proc /sys /dev
exec $B switch_root /newroot /bin/sh "$stage2"
"#;

fn build_initramfs(
    modules_root: &Path,
    release: &str,
    busybox: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "modules", "newroot"] {
        cpio.dir(d);
    }
    cpio.file("init", 0o755, INIT.as_bytes());
    cpio.file(
        "bin/busybox",
        0o755,
        &fs::read(busybox)
            .with_context(|| format!("reading {} (busybox-static)", busybox.display()))?,
    );
    for (i, m) in boot_modules(modules_root, release)?.iter().enumerate() {
        let name = format!("modules/{i:02}-{}.ko", module_name(&m.to_string_lossy()));
        cpio.file(&name, 0o644, &module_bytes(m)?);
    }
    let mut f = fs::File::create(out)?;
    f.write_all(&cpio.finish())?;
    fs::set_permissions(out, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A newc ("070701") archive, the format the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            body.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        self.entry(name, 0o100000 | perm, body);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.data
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_names_drop_paths_suffixes_and_dashes() {
        assert_eq!(
            super::module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(super::module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(super::module_name("virtio-pci.ko"), "virtio_pci");
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = super::Cpio::default();
        c.file("init", 0o755, b"abc");
        let data = c.finish();
        assert!(data.starts_with(b"070701"));
        assert_eq!(data.len() % 4, 0);
        assert!(data.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
