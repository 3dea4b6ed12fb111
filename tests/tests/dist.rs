//! What `cargo xtask dist` ships: the tarball's static binary (no interpreter, no dynamic
//! section, works from a chroot holding nothing else), the .deb (installs, lists its files,
//! runs, removes cleanly) and the hooks.d entry under a real podman.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use bindguard_tests::{
    Cmd, Peer, Scenario,
    dist::{Dist, ScratchDir, git_commit, mounts_under, workspace},
    listener::PORT,
    podman::Podman,
    root_or_skip,
    run::wait_output,
    scenario::{dest, token},
    topology::UPLINK_B,
};
use object::{
    Object as _,
    elf::{ET_EXEC, PT_DYNAMIC, PT_INTERP},
    read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _},
};

/// (ELF type, has PT_INTERP, has PT_DYNAMIC or a .dynamic section)
fn elf_linkage(bin: &Path) -> (u16, bool, bool) {
    let data = fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let elf = ElfFile64::<object::Endianness>::parse(&*data).expect("an ELF64 file");
    let endian = elf.endian();
    let types: Vec<u32> = elf
        .elf_program_headers()
        .iter()
        .map(|ph| ph.p_type(endian))
        .collect();
    (
        elf.elf_header().e_type(endian),
        types.contains(&PT_INTERP),
        types.contains(&PT_DYNAMIC) || elf.section_by_name(".dynamic").is_some(),
    )
}

/// Runs `cmd` to completion, killed (and failing the test) if it takes more than 2 minutes.
fn run(cmd: &mut Command) -> (i32, String, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let out = wait_output(child, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within 120 s"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bindguard --version` names this checkout's commit and the same eBPF object as the
/// library the tests link (the dist build embeds the very programs the tests exercise).
fn assert_version(bin: &Path) {
    let (code, out, err) = run(Command::new(bin).arg("--version"));
    assert_eq!(code, 0, "{err}");
    let expected = format!(
        "bindguard {} (commit {}, ebpf {:016x}, {})\n",
        bindguard::version::VERSION,
        git_commit(),
        bindguard::kernel::hooks::object_hash(),
        std::env::consts::ARCH
    );
    assert_eq!(out, expected, "stale dist/? run `cargo xtask dist`");
}

#[test]
fn tarball_holds_a_static_binary_and_what_goes_with_it() {
    let dist = Dist::find();
    let (_scratch, release) = dist.unpack();
    let bin = release.join("bindguard");
    assert_eq!(
        elf_linkage(&bin),
        (ET_EXEC, false, false),
        "a static non-PIE executable"
    );
    // The check can fail: the glibc build of the same program has both.
    let (_, interp, dynamic) = elf_linkage(&bindguard_tests::bindguard_bin());
    assert!(interp && dynamic, "the glibc build is dynamically linked");
    assert_version(&bin);

    let man = fs::read_to_string(release.join("man/bindguard.1")).unwrap();
    assert!(man.contains(".TH bindguard 1"), "{man}");
    // One page per subcommand, with its options.
    for sub in SUBCOMMANDS {
        let page = fs::read_to_string(release.join(format!("man/bindguard-{sub}.1")))
            .unwrap_or_else(|e| panic!("man/bindguard-{sub}.1: {e}"));
        assert!(page.contains("OPTIONS"), "bindguard-{sub}.1 has no options");
    }
    for (file, needle) in [
        ("completions/bindguard.bash", "_bindguard()"),
        ("completions/_bindguard", "#compdef bindguard"),
        ("completions/bindguard.fish", "complete -c bindguard"),
    ] {
        let text = fs::read_to_string(release.join(file)).unwrap();
        assert!(text.contains(needle), "{file}");
    }
    let mut shipped: Vec<(String, PathBuf)> = [
        ("README.md", "README.md"),
        ("Containerfile", "deploy/Containerfile"),
        ("hooks.d/bindguard.json", "deploy/hooks.d/bindguard.json"),
    ]
    .map(|(file, source)| (file.into(), workspace().join(source)))
    .to_vec();
    for sub in ["systemd", "config", "kubernetes"] {
        for f in deploy_files(sub) {
            let name = format!("{sub}/{}", f.file_name().unwrap().to_string_lossy());
            shipped.push((name, f));
        }
    }
    // The pages the README links, beside it.
    for f in docs_files() {
        shipped.push((
            format!("docs/{}", f.display()),
            workspace().join("docs").join(f),
        ));
    }
    for (file, source) in shipped {
        assert_eq!(
            fs::read(release.join(&file)).unwrap_or_default(),
            fs::read(&source).unwrap(),
            "{file} in the tarball is {}",
            source.display()
        );
    }
}

/// (e_machine, ELF type, has PT_INTERP, has PT_DYNAMIC or a .dynamic section)
fn elf_machine_and_linkage(bin: &Path) -> (u16, u16, bool, bool) {
    let data = fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let elf = ElfFile64::<object::Endianness>::parse(&*data).expect("an ELF64 file");
    let (ty, interp, dynamic) = elf_linkage(bin);
    (
        elf.elf_header().e_machine(elf.endian()),
        ty,
        interp,
        dynamic,
    )
}

/// Every regular file under `dir`, relative, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((p.strip_prefix(root).unwrap().into(), fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The arm64 tarball and .deb: a static aarch64 executable (no interpreter, no dynamic
/// section, EM_AARCH64) built from this checkout, and otherwise the very files the amd64
/// ones ship. Nothing here runs the binary: this machine is x86_64 (the VM matrix's arm64
/// boots run it).
#[test]
fn arm64_artefacts_hold_a_static_aarch64_binary_and_the_same_files() {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    let dist = Dist::find();
    let (_s64, amd64) = dist.unpack_for("x86_64");
    let (_sarm, arm64) = dist.unpack_for("aarch64");
    let bin = arm64.join("bindguard");
    assert_eq!(
        elf_machine_and_linkage(&bin),
        (EM_AARCH64, ET_EXEC, false, false),
        "a static non-PIE aarch64 executable"
    );
    // The check can fail: the amd64 binary is another machine's.
    assert_eq!(
        elf_machine_and_linkage(&amd64.join("bindguard")).0,
        EM_X86_64
    );
    // What --version prints is in the binary: this checkout, an eBPF object, aarch64. (The
    // object's hash differs from the amd64 build's: it is built with aya-ebpf's
    // bpf_target_arch set to the loader's architecture; docs/arm64.md.)
    let prefix = format!(
        "{} (commit {}, ebpf ",
        bindguard::version::VERSION,
        git_commit()
    );
    let data = fs::read(&bin).unwrap();
    let version_ok = data
        .windows(prefix.len() + 16 + ", aarch64)".len())
        .any(|w| {
            w.starts_with(prefix.as_bytes())
                && w[prefix.len()..prefix.len() + 16]
                    .iter()
                    .all(u8::is_ascii_hexdigit)
                && w.ends_with(b", aarch64)")
        });
    assert!(
        version_ok,
        "{} does not hold `{prefix}<hash>, aarch64)`: stale dist/? run `cargo xtask dist`",
        bin.display()
    );
    let others = |t: Vec<(PathBuf, Vec<u8>)>| -> Vec<(PathBuf, Vec<u8>)> {
        t.into_iter()
            .filter(|(p, _)| p != Path::new("bindguard"))
            .collect()
    };
    let (a, b) = (others(tree(&amd64)), others(tree(&arm64)));
    assert!(a.len() > 10, "{a:?}");
    assert_eq!(
        a.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        b.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{} differs between the amd64 and arm64 tarballs",
            p.display()
        );
    }

    let deb = dist.deb_for("arm64");
    let field = |deb: &Path, f: &str| {
        let (code, out, err) = run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(f));
        assert_eq!(code, 0, "dpkg-deb --field {f}: {err}");
        out.trim().to_string()
    };
    assert_eq!(field(&deb, "Architecture"), "arm64");
    for f in ["Package", "Version", "Description"] {
        assert_eq!(field(&deb, f), field(&dist.deb(), f), "{f}");
    }
    let unpacked = ScratchDir::new("bgarm");
    let (code, _, err) = run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked.path));
    assert_eq!(code, 0, "dpkg-deb -x: {err}");
    assert_eq!(
        elf_machine_and_linkage(&unpacked.path.join("usr/bin/bindguard")),
        (EM_AARCH64, ET_EXEC, false, false)
    );
    assert_eq!(
        fs::read(unpacked.path.join("usr/bin/bindguard")).unwrap(),
        data,
        "the .deb's binary is the tarball's"
    );
    let amd64_deb = ScratchDir::new("bgamd");
    let (code, _, err) = run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(dist.deb())
        .arg(&amd64_deb.path));
    assert_eq!(code, 0, "dpkg-deb -x: {err}");
    let (a, b) = (tree(&amd64_deb.path), tree(&unpacked.path));
    let paths = |t: &[(PathBuf, Vec<u8>)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        paths(&a),
        paths(&b),
        "the two packages install the same files"
    );
    for ((p, x), (_, y)) in a.iter().zip(&b) {
        if p != Path::new("usr/bin/bindguard") {
            assert!(
                x == y,
                "{} differs between the amd64 and arm64 packages",
                p.display()
            );
        }
    }
}

/// The subcommands with a man page of their own (`bindguard-SUB.1`).
const SUBCOMMANDS: [&str; 15] = [
    "attach",
    "apply",
    "daemon",
    "exec",
    "oci-hook",
    "nri",
    "grants",
    "sessions",
    "detach",
    "monitor",
    "verify",
    "completions",
    "manpage",
    "doctor",
    "status",
];

/// Files of deploy/`sub` that exist now (the daemon work adds systemd/ and config/).
fn deploy_files(sub: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(workspace().join("deploy").join(sub)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every file of docs/, relative to it (the README's pages, shipped beside it).
fn docs_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.is_file() {
                out.push(path.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let docs = workspace().join("docs");
    let mut files = Vec::new();
    walk(&docs, &docs, &mut files);
    files.sort();
    assert!(!files.is_empty(), "docs/ has no page");
    files
}

/// A root directory holding the static binary and the empty mount points for /proc and /sys.
struct Chroot {
    dir: ScratchDir,
}

impl Chroot {
    fn new(bin: &Path) -> Self {
        let dir = ScratchDir::new("bgr");
        fs::copy(bin, dir.path.join("bindguard")).unwrap();
        for d in ["proc", "sys"] {
            fs::create_dir(dir.path.join(d)).unwrap();
        }
        Self { dir }
    }

    /// `/bindguard ARGS` chrooted, in `netns`, with /proc, /sys (which holds the cgroup2
    /// mount) and the host's bpffs mounted inside — in a private mount namespace, so the
    /// mounts end with the command whatever happens to the test.
    fn bindguard(&self, netns: &Path, args: &[&str]) -> (i32, String, String) {
        const SCRIPT: &str = r#"set -e
root=$1 netns=$2; shift 2
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
exec nsenter --net="$netns" chroot "$root" /bindguard "$@""#;
        let cmd = Cmd::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                SCRIPT,
                "sh",
            ])
            .arg(&self.dir.path)
            .arg(netns)
            .args(args);
        cmd.run()
    }
}

#[test]
fn static_binary_binds_from_a_chroot_holding_only_itself() {
    root_or_skip!();
    let dist = Dist::find();
    let (_scratch, release) = dist.unpack();
    let s = Scenario::new();
    // The chroot sees the host's bpffs through /sys: make sure there is one to see.
    bindguard::kernel::pins::ensure_bpffs().expect("bpffs");
    let root = Chroot::new(&release.join("bindguard"));
    let mut inside: Vec<String> = fs::read_dir(&root.dir.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    assert_eq!(inside, ["bindguard", "proc", "sys"]);
    let netns = s.topo.host.path();
    let cgroup = s.cg.path.to_str().unwrap();

    let (code, out, err) =
        root.bindguard(&netns, &["attach", "--cgroup", cgroup, "--dev", UPLINK_B]);
    assert_eq!(code, 0, "attach from the chroot: {out}{err}");
    assert!(out.contains(&format!("to {UPLINK_B}")), "{out}");
    assert!(s.cg.pins().is_dir(), "pinned in the host's bpffs");
    assert_eq!(s.busybox_delivered(true, false, false), [Peer::B], "tcp");
    assert_eq!(s.busybox_delivered(true, true, false), [Peer::B], "udp");
    assert_eq!(
        s.busybox_delivered(false, false, false),
        [Peer::A],
        "unbound"
    );

    let status = |root: &Chroot| -> Option<serde_json::Value> {
        let (code, out, err) = root.bindguard(&netns, &["status", "--json", "--links"]);
        assert_eq!(code, 0, "status from the chroot: {err}");
        let doc: serde_json::Value = serde_json::from_str(&out).expect("status --json");
        doc["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["cgroup_id"] == s.cg.id)
            .cloned()
    };
    let entry = status(&root).expect("the binding is listed");
    assert_eq!(entry["cgroup"], cgroup);
    assert_eq!(entry["ifname"], UPLINK_B);
    assert_eq!(entry["mode"], "strict");
    let links = entry["links"].as_array().unwrap();
    assert!(
        !links.is_empty() && links.iter().all(|l| l["link_id"].is_u64()),
        "every link pinned and attached: {entry}"
    );
    // Healthy, as far as the binding goes; the host may add its own conditions (no BPF LSM),
    // so the chroot's report must match the host's, not an empty list.
    let kinds = |problems: &serde_json::Value| -> Vec<String> {
        problems
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let host = serde_json::to_value(bindguard::commands::status::collect(
        bindguard::commands::status::Options { links: true },
    ))
    .unwrap();
    let host_entry = host["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["cgroup_id"] == s.cg.id)
        .expect("the host lists it too")
        .clone();
    assert_eq!(
        kinds(&entry["problems"]),
        kinds(&host_entry["problems"]),
        "{entry}"
    );
    for kind in kinds(&entry["problems"]) {
        assert!(
            ![
                "interface-missing",
                "netns-gone",
                "cgroup-gone",
                "link-missing",
                "pins-unreadable",
                "programs-outdated"
            ]
            .contains(&kind.as_str()),
            "{entry}"
        );
    }

    let (code, out, err) = root.bindguard(&netns, &["detach", "--cgroup", cgroup]);
    assert_eq!(code, 0, "detach from the chroot: {out}{err}");
    assert!(status(&root).is_none(), "gone from status");
    assert!(!s.cg.pins().exists(), "pins removed");
    assert_eq!(
        s.busybox_delivered(true, false, false),
        [Peer::A],
        "unbound again"
    );
    assert_eq!(mounts_under(&root.dir.path), Vec::<String>::new());
}

/// dpkg's view of the package, e.g. "install ok installed"; empty if it knows none.
fn package_status() -> String {
    let (_, out, _) = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "bindguard"]));
    out
}

/// Purges the package on drop, so a failing test leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "bindguard"]).output();
    }
}

#[test]
fn deb_installs_lists_its_files_runs_and_purges() {
    root_or_skip!();
    let dist = Dist::find();
    // The package is machine-wide: suites running at once in other checkouts wait their turn
    // (the lock goes with the file when this test ends, however it ends).
    let lock = fs::File::create("/run/lock/bindguard-deb-test.lock").expect("lock file");
    let _turn = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    assert!(
        !package_status().contains("installed") && !Path::new("/usr/bin/bindguard").exists(),
        "bindguard is already installed here ({}); this test installs and purges its own \
         package: remove it first (`dpkg --purge bindguard`)",
        package_status()
    );
    let (code, field, _) = run(Command::new("dpkg-deb")
        .arg("--field")
        .arg(dist.deb())
        .arg("Depends"));
    assert_eq!(
        (code, field.trim()),
        (0, ""),
        "a static binary depends on nothing"
    );

    let _installed = Installed;
    let (code, out, err) = run(Command::new("dpkg").arg("--install").arg(dist.deb()));
    assert_eq!(code, 0, "dpkg -i: {out}{err}");
    assert_eq!(package_status(), "install ok installed");

    let mut expected: Vec<String> = [
        "/usr/bin/bindguard",
        "/usr/share/man/man1/bindguard.1.gz",
        "/usr/share/bash-completion/completions/bindguard",
        "/usr/share/zsh/vendor-completions/_bindguard",
        "/usr/share/fish/vendor_completions.d/bindguard.fish",
        "/usr/share/containers/oci/hooks.d/bindguard.json",
        "/usr/share/doc/bindguard/README.md",
    ]
    .map(String::from)
    .to_vec();
    expected.extend(
        docs_files()
            .iter()
            .map(|f| format!("/usr/share/doc/bindguard/docs/{}", f.display())),
    );
    expected.extend(
        SUBCOMMANDS
            .iter()
            .map(|sub| format!("/usr/share/man/man1/bindguard-{sub}.1.gz")),
    );
    let mut units = 0;
    for f in deploy_files("systemd") {
        let name = f.file_name().unwrap().to_string_lossy();
        let unit = ["service", "socket", "timer", "path", "target", "mount"];
        if f.extension().is_some_and(|e| unit.iter().any(|u| e == *u)) {
            units += 1;
            expected.push(format!("/usr/lib/systemd/system/{name}"));
        } else {
            expected.push(format!("/usr/share/doc/bindguard/examples/systemd/{name}"));
        }
    }
    let conffiles: Vec<String> = deploy_files("config")
        .iter()
        .map(|f| {
            format!(
                "/etc/bindguard/{}",
                f.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    expected.extend(conffiles.iter().cloned());
    let (code, listed, err) = run(Command::new("dpkg").args(["--listfiles", "bindguard"]));
    assert_eq!(code, 0, "{err}");
    for f in &expected {
        assert!(
            listed.lines().any(|l| l == f),
            "dpkg -L lacks {f}:\n{listed}"
        );
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    let (_, declared, _) =
        run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "bindguard"]));
    for f in &conffiles {
        assert!(
            declared.contains(f.as_str()),
            "{f} is not a conffile: {declared}"
        );
    }

    // With a unit, systemd is told of it (the scripts do nothing here: systemd is not PID 1).
    assert_eq!(
        Path::new("/var/lib/dpkg/info/bindguard.postinst").exists(),
        units > 0
    );
    assert_version(Path::new("/usr/bin/bindguard"));
    let hook: serde_json::Value = serde_json::from_slice(
        &fs::read("/usr/share/containers/oci/hooks.d/bindguard.json").unwrap(),
    )
    .unwrap();
    assert_eq!(hook["hook"]["path"], "/usr/bin/bindguard");
    let (code, man, _) =
        run(Command::new("gzip").args(["-dc", "/usr/share/man/man1/bindguard.1.gz"]));
    assert_eq!(code, 0);
    assert!(man.contains(".TH bindguard 1"));

    let (code, out, err) = run(Command::new("dpkg").args(["--remove", "bindguard"]));
    assert_eq!(code, 0, "dpkg -r: {out}{err}");
    for f in expected.iter().filter(|f| !conffiles.contains(f)) {
        assert!(!Path::new(f).exists(), "dpkg -r left {f}");
    }
    for f in &conffiles {
        assert!(Path::new(f).exists(), "dpkg -r keeps the conffile {f}");
    }
    let (code, out, err) = run(Command::new("dpkg").args(["--purge", "bindguard"]));
    assert_eq!(code, 0, "dpkg -P: {out}{err}");
    for f in &expected {
        assert!(!Path::new(f).exists(), "dpkg -P left {f}");
    }
    assert!(
        !Path::new("/etc/bindguard").exists(),
        "dpkg -P left /etc/bindguard"
    );
    assert_eq!(package_status(), "", "dpkg forgot the package");
}

/// Bindings whose namespace is `netns` (the test's own: nobody else's binding can name it).
fn bindings_in(netns: &Path) -> Vec<bindguard::commands::status::Binding> {
    let inode = fs::metadata(netns).unwrap().ino();
    bindguard::commands::status::collect(bindguard::commands::status::Options::default())
        .bindings
        .into_iter()
        .filter(|b| b.netns.inode == inode)
        .collect()
}

/// The unpacked release, a topology with listeners, and a podman whose hooks.d entry runs the
/// release's static binary.
fn podman_world() -> (ScratchDir, Scenario, Podman) {
    let (scratch, release) = Dist::find().unpack();
    let s = Scenario::new();
    let podman = Podman::new(&release.join("bindguard"));
    (scratch, s, podman)
}

#[test]
fn podman_runs_the_hooks_d_entry_for_annotated_containers() {
    root_or_skip!();
    // Dropped podman first (its hook runs the release binary), the release last.
    let (_release, s, podman) = podman_world();
    let tok = token("podman");
    let mut script = String::new();
    for v6 in [false, true] {
        script += &format!(
            "echo {tok}-tcp{v6} | nc -w1 {dest} {PORT}; tftp -g -r {tok}-udp{v6} -l /dev/null {dest} {PORT} & ",
            dest = dest(v6)
        );
    }
    script += "sleep 2";
    let run = podman.spawn(&s.topo.host, &[("io.bindguard.dev", UPLINK_B)], &script);
    for v6 in [false, true] {
        assert_eq!(
            s.receivers(&format!("{tok}-tcp{v6}")),
            [Peer::B],
            "tcp v6={v6}"
        );
        assert_eq!(
            s.receivers(&format!("{tok}-udp{v6}")),
            [Peer::B],
            "udp v6={v6}"
        );
    }
    let bound = bindings_in(&s.topo.host.path());
    assert_eq!(
        bound.len(),
        1,
        "one binding while the container runs: {bound:?}"
    );
    let cgroup = bound[0].cgroup.clone().expect("the container's cgroup");
    let parent = bindguard::binding::cgroup::cgroup2_mount()
        .unwrap()
        .join(&podman.cgroup_parent);
    assert!(
        cgroup.starts_with(&parent),
        "{} is podman's",
        cgroup.display()
    );
    assert_eq!(bound[0].ifname, UPLINK_B);
    let pins = bound[0].pins.clone();

    let out = wait_output(run, Duration::from_secs(60)).expect("podman run ended");
    assert!(out.status.success(), "{out:?}");
    assert!(
        bindings_in(&s.topo.host.path()).is_empty(),
        "poststop unbound it"
    );
    assert!(!pins.exists(), "poststop removed {}", pins.display());
    assert_eq!(podman.containers(), Vec::<String>::new(), "--rm removed it");
}

#[test]
fn podman_refuses_a_container_naming_an_unknown_interface() {
    root_or_skip!();
    // Dropped podman first (its hook runs the release binary), the release last.
    let (_release, s, podman) = podman_world();
    let tok = token("podman-bad");
    let run = podman.spawn(
        &s.topo.host,
        &[("io.bindguard.dev", "nosuch0")],
        &format!("echo {tok} | nc -w1 {} {PORT}", dest(false)),
    );
    let out = wait_output(run, Duration::from_secs(60)).expect("podman run ended");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "podman must refuse: {out:?}");
    assert!(err.contains("no interface named 'nosuch0'"), "{err}");
    assert!(
        s.listener
            .wait_for(&tok, Duration::from_millis(500))
            .is_empty(),
        "nothing was sent"
    );
    assert_eq!(
        (s.listener.packets(Peer::A), s.listener.packets(Peer::B)),
        (0, 0)
    );
    assert!(
        bindings_in(&s.topo.host.path()).is_empty(),
        "no binding left"
    );
    assert_eq!(podman.containers(), Vec::<String>::new(), "--rm removed it");
}

/// The init container's script in the DaemonSet: the block after `- |` in its command.
fn installer_script(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "- |");
    let start = lines.next().expect("a `- |` block in the DaemonSet");
    let indent = |l: &str| l.len() - l.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || indent(l) > indent(start))
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn containerfile_image_installs_the_static_binary_unchanged() {
    root_or_skip!();
    let dist = Dist::find();
    let (scratch, release) = dist.unpack();
    let podman = Podman::new(&release.join("bindguard"));
    // No registry is reachable: the Containerfile's base is made locally from busybox-static
    // with every applet linked, as in the busybox image, under the name it asks for.
    let base = scratch.path.join("base");
    bindguard_tests::container::busybox_rootfs(&base);
    let (_, applets, _) = run(Command::new("/bin/busybox").arg("--list"));
    for applet in applets.lines() {
        let _ = std::os::unix::fs::symlink("busybox", base.join("bin").join(applet));
    }
    let base_tar = scratch.path.join("base.tar");
    let (code, _, err) = run(Command::new("tar")
        .arg("-cf")
        .arg(&base_tar)
        .arg("-C")
        .arg(&base)
        .arg("."));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(podman
        .command()
        .arg("import")
        .arg(&base_tar)
        .arg("docker.io/library/busybox:stable"));
    assert_eq!(code, 0, "podman import: {out}{err}");
    let image = "localhost/bindguard-installer:test";
    let (code, out, err) = run(podman
        .command()
        .args(["build", "--pull=never", "-t", image, "-f"])
        .arg(workspace().join("deploy/Containerfile"))
        .arg(&release));
    assert_eq!(code, 0, "podman build: {out}{err}");

    // The DaemonSet's own script, with its volumes as directories here.
    let yaml =
        fs::read_to_string(workspace().join("deploy/kubernetes/bindguard-installer.yaml")).unwrap();
    let host = scratch.path.join("node");
    let mut cmd = podman.run();
    cmd.arg("--network=none");
    for mount in [
        "/host/usr/local/bin",
        "/host/usr/share/containers/oci/hooks.d",
        "/host/etc/containers/oci/hooks.d",
    ] {
        assert!(yaml.contains(&format!("mountPath: {mount}")), "{mount}");
        let dir = host.join(mount.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        cmd.arg("-v").arg(format!("{}:{mount}", dir.display()));
    }
    let script = installer_script(&yaml);
    assert!(script.contains("/opt/bindguard/bindguard"), "{script}");
    let (code, out, err) = run(cmd.args([image, "sh", "-c", &script]));
    assert_eq!(code, 0, "the installer script: {out}{err}");

    let installed = host.join("host/usr/local/bin/bindguard");
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(release.join("bindguard")).unwrap(),
        "the node gets the release binary byte for byte"
    );
    assert_version(&installed);
    let hook = fs::read(workspace().join("deploy/hooks.d/bindguard.json")).unwrap();
    for dir in [
        "usr/share/containers/oci/hooks.d",
        "etc/containers/oci/hooks.d",
    ] {
        let path = host.join("host").join(dir).join("bindguard.json");
        assert_eq!(fs::read(&path).unwrap(), hook, "{}", path.display());
    }
    // The hooks entry names the path the DaemonSet installs to (hostPath /usr/local/bin).
    let entry: serde_json::Value = serde_json::from_slice(&hook).unwrap();
    assert_eq!(entry["hook"]["path"], "/usr/local/bin/bindguard");
    assert!(yaml.contains("path: /usr/local/bin,"));
}
