//! The config of `apply` and `daemon`: which cgroups should be bound to which interfaces.
//!
//! Desired state only. What is bound *now* is read back from the kernel (pins and policies);
//! nothing here is written anywhere at run time.
//!
//! ```toml
//! [[binding]]
//! cgroup = "mgmt.slice"     # absolute, or relative to the cgroup2 mount
//! create = true             # mkdir the cgroup if it is missing (default false)
//! dev = "eth3"
//! netns = "/run/netns/mgmt" # default: bindguard's own network namespace
//! mode = "strict"           # or "bind"
//! allow_loopback = false
//! mark = 0x2a               # or "0x2a"
//! priority = 3
//! existing = "keep"         # or "destroy"
//! allow_family = ["packet"]
//! allow_tun = false         # strict mode: let the cgroup attach tun/tap devices
//! allow_ptrace_out = false  # strict mode: let the cgroup ptrace processes outside it
//! allow_delegated = false   # strict mode below a delegation boundary, accepted knowingly
//! dns = ["10.8.0.1"]        # strict mode: every DNS query goes to this resolver (one per family)
//! on_recreate = "keep-sockets"  # or "reset-sockets"
//! ```
//!
//! One top-level key, outside `[[binding]]`, in at most one file:
//!
//! ```toml
//! metrics = "127.0.0.1:9477"  # `daemon` serves /metrics, /healthz, /readyz here (default: off)
//! ```
//!
//! Files: `/etc/bindguard/bindguard.toml`, then `/etc/bindguard/bindings.d/*.toml` in name
//! order. Any error in any file rejects the whole config, naming file:line.

use std::{
    collections::HashMap,
    fs,
    path::{Component, Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    Error,
    binding::{
        netdev,
        policy::{Dns, Existing, Maker, Mode, Options},
    },
};

/// The default config file.
pub const DEFAULT_FILE: &str = "/etc/bindguard/bindguard.toml";
/// The default drop-in directory, read after [`DEFAULT_FILE`] in name order.
pub const DEFAULT_DIR: &str = "/etc/bindguard/bindings.d";

/// What to do with the cgroup's sockets when its interface is re-created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRecreate {
    /// Leave them: sockets bound to the old ifindex keep failing with ENODEV until the
    /// program makes new ones.
    #[default]
    KeepSockets,
    /// Destroy (SOCK_DESTROY) TCP/UDP sockets still bound to the old interface, so programs
    /// see an error at once and reconnect over the new one.
    ResetSockets,
}

/// One validated binding of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Where it was written, for messages.
    pub file: PathBuf,
    pub line: usize,
    /// Absolute cgroup path (joined under the cgroup2 mount when written relative).
    pub cgroup: PathBuf,
    pub create: bool,
    pub dev: String,
    /// None: bindguard's own network namespace.
    pub netns: Option<PathBuf>,
    pub options: Options,
    pub on_recreate: OnRecreate,
}

impl Binding {
    /// `file:line`, for messages.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The whole desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    pub bindings: Vec<Binding>,
    /// Who may have the daemon bind their own programs ([`super::grants`]).
    pub grants: Vec<super::grants::Grant>,
    /// Where `daemon` serves its metrics and probes (`metrics = "ADDR:PORT"`; None: off).
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    binding: Vec<Spanned<RawBinding>>,
    /// Read by [`super::grants::parse_file`]; named here so the file's other keys stay
    /// checked.
    #[serde(default, rename = "grant")]
    _grant: Vec<toml::Value>,
    metrics: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinding {
    cgroup: Spanned<String>,
    #[serde(default)]
    create: bool,
    dev: Spanned<String>,
    netns: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    allow_loopback: bool,
    mark: Option<Spanned<Number>>,
    priority: Option<Spanned<Number>>,
    existing: Option<Spanned<String>>,
    allow_family: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    allow_tun: bool,
    #[serde(default)]
    allow_ptrace_out: bool,
    #[serde(default)]
    allow_delegated: bool,
    dns: Option<Spanned<Vec<String>>>,
    on_recreate: Option<Spanned<String>>,
}

/// The files a config path names: a file is itself; a directory is its `bindguard.toml` (if
/// any), then its `bindings.d/*.toml`, then its other `*.toml`, each group in name order.
pub fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = fs::metadata(path).map_err(|e| Error::InvalidInput {
        what: format!(
            "config {} cannot be read ({e}); give a TOML file or a directory of them",
            path.display()
        ),
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let main = path.join("bindguard.toml");
    if named(&main) {
        files.push(main.clone());
    }
    files.extend(toml_files(&path.join("bindings.d"))?);
    files.extend(toml_files(path)?.into_iter().filter(|f| *f != main));
    Ok(files)
}

/// Whether a directory entry of this name exists, whatever it is: a dangling symlink or a
/// directory named like a config file is listed, and [`load`] refuses it as unreadable
/// rather than dropping its bindings unseen.
fn named(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The `*.toml` entries of `dir` in name order (none if `dir` does not exist).
fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let unreadable = |e: std::io::Error| Error::Config {
        file: dir.to_path_buf(),
        line: 1,
        why: format!("cannot be listed ({e})"),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let p = entry.map_err(unreadable)?.path();
        if p.extension().is_some_and(|e| e == "toml") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The default files: /etc/bindguard/bindguard.toml and /etc/bindguard/bindings.d/*.toml
/// (none of them need exist: no file = no bindings).
pub fn default_files() -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    if named(Path::new(DEFAULT_FILE)) {
        files.push(PathBuf::from(DEFAULT_FILE));
    }
    files.extend(toml_files(Path::new(DEFAULT_DIR))?);
    Ok(files)
}

/// Reads and validates the config at `path` (None: the default files). Relative cgroup
/// paths are joined under `cgroup_mount`.
pub fn load(path: Option<&Path>, cgroup_mount: &Path) -> anyhow::Result<Config> {
    let files = match path {
        Some(p) => files_of(p)?,
        None => default_files()?,
    };
    let mut texts = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).map_err(|e| Error::Config {
            file: f.clone(),
            line: 1,
            why: format!("cannot be read ({e})"),
        })?;
        texts.push((f.clone(), text));
    }
    let mut config = parse_all(&texts, cgroup_mount)?;
    config.files = files;
    Ok(config)
}

/// Parses and validates several files as one config.
pub fn parse_all(files: &[(PathBuf, String)], cgroup_mount: &Path) -> Result<Config, Error> {
    let mut bindings = Vec::new();
    let mut grants = Vec::new();
    let mut metrics: Option<(std::net::SocketAddr, PathBuf)> = None;
    for (file, text) in files {
        bindings.extend(parse_file(file, text, cgroup_mount)?);
        grants.extend(super::grants::parse_file(file, text)?);
        if let Some((addr, line)) = parse_metrics(file, text)? {
            if let Some((_, first)) = &metrics {
                return Err(Error::Config {
                    file: file.clone(),
                    line,
                    why: format!(
                        "metrics is already set in {}; set it in one file",
                        first.display()
                    ),
                });
            }
            metrics = Some((addr, file.clone()));
        }
    }
    let mut seen: HashMap<&Path, &Binding> = HashMap::new();
    for b in &bindings {
        if let Some(first) = seen.insert(&b.cgroup, b) {
            return Err(Error::Config {
                file: b.file.clone(),
                line: b.line,
                why: format!(
                    "cgroup {} is already bound at {}; one cgroup has one binding",
                    b.cgroup.display(),
                    first.origin()
                ),
            });
        }
    }
    Ok(Config {
        files: files.iter().map(|(f, _)| f.clone()).collect(),
        bindings,
        grants,
        metrics: metrics.map(|(a, _)| a),
    })
}

/// The file's `metrics` key, if set: the address and its line.
fn parse_metrics(file: &Path, text: &str) -> Result<Option<(std::net::SocketAddr, usize)>, Error> {
    // parse_file has read the same text without error.
    let Ok(RawFile {
        metrics: Some(m), ..
    }) = toml::from_str::<RawFile>(text)
    else {
        return Ok(None);
    };
    let line = line_of(text, m.span().start);
    let addr = m.get_ref().parse().map_err(|_| Error::Config {
        file: file.to_path_buf(),
        line,
        why: format!(
            "metrics '{}' is not an address and port such as 127.0.0.1:9477 or [::]:9477",
            crate::error::quote(m.get_ref())
        ),
    })?;
    Ok(Some((addr, line)))
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parses one file.
pub fn parse_file(file: &Path, text: &str, cgroup_mount: &Path) -> Result<Vec<Binding>, Error> {
    let err_at = |offset: usize, why: String| Error::Config {
        file: file.to_path_buf(),
        line: line_of(text, offset),
        why,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        err_at(offset, e.message().trim().replace('\n', " "))
    })?;
    let mut out = Vec::new();
    for table in raw.binding {
        let start = table.span().start;
        let raw = table.into_inner();
        let at = |s: std::ops::Range<usize>, why: String| err_at(s.start, why);

        let cg_text = raw.cgroup.get_ref();
        let cgroup = cgroup_path(cg_text, cgroup_mount).map_err(|w| at(raw.cgroup.span(), w))?;

        let dev = raw.dev.get_ref().clone();
        netdev::validate_name(&dev).map_err(|e| at(raw.dev.span(), e.to_string()))?;

        let netns = match &raw.netns {
            None => None,
            Some(n) if Path::new(n.get_ref()).is_absolute() => Some(PathBuf::from(n.get_ref())),
            Some(n) => {
                return Err(at(
                    n.span(),
                    format!(
                        "netns '{}' is not an absolute path; give /run/netns/NAME",
                        n.get_ref()
                    ),
                ));
            }
        };

        let mode = match &raw.mode {
            None => Mode::default(),
            Some(m) => m.get_ref().parse::<Mode>().map_err(|_| {
                at(
                    m.span(),
                    format!(
                        "mode '{}' is not known; use \"strict\" or \"bind\"",
                        m.get_ref()
                    ),
                )
            })?,
        };
        let number = |n: &Option<Spanned<Number>>, what: &str| -> Result<Option<u32>, Error> {
            let Some(n) = n else { return Ok(None) };
            let parsed = match n.get_ref() {
                Number::Int(i) => u32::try_from(*i)
                    .map_err(|_| format!("'{i}' is not a number from 0 to 4294967295")),
                Number::Text(t) => crate::binding::policy::parse_u32(t),
            };
            parsed
                .map(Some)
                .map_err(|why| at(n.span(), format!("{what}: {why}")))
        };
        let mark = number(&raw.mark, "mark")?;
        let priority = number(&raw.priority, "priority")?;
        let existing = match &raw.existing {
            None => Existing::default(),
            Some(x) => x.get_ref().parse::<Existing>().map_err(|_| {
                at(
                    x.span(),
                    format!(
                        "existing '{}' is not known; use \"keep\" or \"destroy\"",
                        x.get_ref()
                    ),
                )
            })?,
        };
        let mut allow_families = 0u64;
        if let Some(list) = &raw.allow_family {
            for name in list.get_ref() {
                allow_families |=
                    crate::binding::policy::parse_family(name).map_err(|w| at(list.span(), w))?;
            }
        }
        let on_recreate = match raw.on_recreate.as_ref().map(|s| (s.get_ref().as_str(), s)) {
            None | Some(("keep-sockets", _)) => OnRecreate::KeepSockets,
            Some(("reset-sockets", _)) => OnRecreate::ResetSockets,
            Some((other, s)) => {
                return Err(at(
                    s.span(),
                    format!(
                        "on_recreate '{other}' is not known; use \"keep-sockets\" or \"reset-sockets\""
                    ),
                ));
            }
        };
        let dns = match &raw.dns {
            None => Dns::default(),
            Some(list) => Dns::parse(&list.get_ref().join(","))
                .map_err(|e| at(list.span(), e.to_string().replace("--dns", "dns")))?,
        };
        let options = Options {
            mark,
            priority,
            mode,
            allow_loopback: raw.allow_loopback,
            allow_families,
            existing,
            allow_tun: raw.allow_tun,
            allow_ptrace_out: raw.allow_ptrace_out,
            allow_delegated: raw.allow_delegated,
            maker: Maker::Config,
            dns,
        };
        options.validate().map_err(|e| {
            err_at(
                start,
                e.to_string()
                    .replace("--allow-loopback", "allow_loopback")
                    .replace("--allow-tun", "allow_tun")
                    .replace("--allow-ptrace-out", "allow_ptrace_out")
                    .replace("--dns", "dns")
                    .replace("--mode strict", "mode = \"strict\""),
            )
        })?;
        out.push(Binding {
            file: file.to_path_buf(),
            line: line_of(text, start),
            cgroup,
            create: raw.create,
            dev,
            netns,
            options,
            on_recreate,
        });
    }
    Ok(out)
}

/// The absolute, lexically normalised path of a configured cgroup (it may not exist yet).
fn cgroup_path(text: &str, mount: &Path) -> Result<PathBuf, String> {
    if text == "self" {
        return Err(
            "cgroup \"self\" means bindguard's own cgroup and is for the command line only; name the cgroup".into(),
        );
    }
    let joined = crate::binding::cgroup::join_under_mount(mount, Path::new(text))
        .map_err(|e| e.to_string())?;
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "cgroup path '{text}' contains '..'; give it without"
                ));
            }
            other => out.push(other),
        }
    }
    if !out.starts_with(mount) || out == mount {
        return Err(format!(
            "cgroup '{text}' is not a cgroup below the cgroup2 mount {}; give a path under it",
            mount.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNT: &str = "/sys/fs/cgroup";

    fn parse(text: &str) -> Result<Vec<Binding>, Error> {
        parse_file(
            Path::new("/etc/bindguard/bindguard.toml"),
            text,
            Path::new(MOUNT),
        )
    }

    fn line(e: &Error) -> usize {
        match e {
            Error::Config { line, .. } => *line,
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn metrics_is_one_address_in_one_file() {
        let files = |a: &str, b: &str| {
            parse_all(
                &[
                    (PathBuf::from("/etc/a.toml"), a.to_string()),
                    (PathBuf::from("/etc/b.toml"), b.to_string()),
                ],
                Path::new(MOUNT),
            )
        };
        let c = files("metrics = \"127.0.0.1:9477\"\n", "").unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9477".parse().unwrap()));
        assert_eq!(files("", "").unwrap().metrics, None);
        let e = files("\nmetrics = \"localhost\"\n", "").unwrap_err();
        assert_eq!(line(&e), 2);
        assert!(e.to_string().contains("not an address and port"), "{e}");
        let e = files("metrics = \"[::]:1\"", "metrics = \"[::]:2\"").unwrap_err();
        assert!(e.to_string().contains("already set in /etc/a.toml"), "{e}");
    }

    #[test]
    fn a_full_binding_parses() {
        let b = parse(
            r#"
# comment
[[binding]]
cgroup = "mgmt"
create = true
dev = "eth3"
netns = "/run/netns/x"
mode = "strict"
allow_loopback = true
mark = 0x2a
priority = "3"
existing = "destroy"
allow_family = ["packet", "vsock"]
on_recreate = "reset-sockets"

[[binding]]
cgroup = "/sys/fs/cgroup/app.slice/x.service"
dev = "tun0"
mode = "bind"
"#,
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].line, 3);
        assert_eq!(b[0].cgroup, PathBuf::from("/sys/fs/cgroup/mgmt"));
        assert!(b[0].create);
        assert_eq!(b[0].options.mark, Some(42));
        assert_eq!(b[0].options.priority, Some(3));
        assert_eq!(b[0].options.existing, Existing::Destroy);
        assert_eq!(b[0].options.allow_families, (1 << 17) | (1 << 40));
        assert_eq!(b[0].options.maker, Maker::Config);
        assert_eq!(b[0].on_recreate, OnRecreate::ResetSockets);
        assert_eq!(b[1].line, 16);
        assert_eq!(b[1].options.mode, Mode::Bind);
        assert_eq!(b[1].netns, None);
        assert_eq!(b[1].on_recreate, OnRecreate::KeepSockets);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"eth0\"\ncolour = 1\n",
                4,
                "colour",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"eth0\"\nmode = \"loose\"\n",
                4,
                "loose",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\n\ndev = \"sixteen-bytes-xx\"\n",
                4,
                "15 bytes",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"e\"\nmark = -1\n",
                4,
                "mark",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"e\"\nmark = \"0x1g\"\n",
                4,
                "mark",
            ),
            ("[[binding]]\ncgroup = \"../a\"\ndev = \"e\"\n", 2, ".."),
            ("[[binding]]\ncgroup = \"self\"\ndev = \"e\"\n", 2, "self"),
            ("[[binding]]\ncgroup = \"a\"\n", 1, "dev"),
            (
                "\n[[binding]]\ncgroup = \"a\"\ndev = \"e\"\nallow_family = [\"nonsense\"]\n",
                5,
                "nonsense",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"e\"\non_recreate = \"x\"\n",
                4,
                "on_recreate",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"e\"\nexisting = \"x\"\n",
                4,
                "existing",
            ),
            (
                "[[binding]]\ncgroup = \"a\"\ndev = \"e\"\nnetns = \"x\"\n",
                4,
                "absolute",
            ),
            (
                "\n\n[[binding]]\ncgroup = \"a\"\ndev = \"e\"\nmode = \"bind\"\nallow_loopback = true\n",
                3,
                "allow_loopback",
            ),
            ("[[binding]\n", 1, ""),
            ("bindings = 1\n", 1, "bindings"),
        ];
        for (text, want, word) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(line(&e), *want, "{text:?}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(word), "{text:?}: {msg}");
            assert!(msg.starts_with("/etc/bindguard/bindguard.toml:"), "{msg}");
            assert_eq!(e.exit_code(), 2);
            assert!(!msg.contains('\n'), "one line: {msg:?}");
        }
    }

    #[test]
    fn one_cgroup_one_binding_across_files() {
        let files = vec![
            (
                PathBuf::from("/a.toml"),
                "[[binding]]\ncgroup = \"x\"\ndev = \"e\"\n".to_string(),
            ),
            (
                PathBuf::from("/b.toml"),
                "\n[[binding]]\ncgroup = \"/sys/fs/cgroup/./x\"\ndev = \"f\"\n".to_string(),
            ),
        ];
        let e = parse_all(&files, Path::new(MOUNT)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/b.toml:2:"), "{msg}");
        assert!(msg.contains("/a.toml:1"), "{msg}");
    }

    /// The conffile the package installs binds nothing until edited: every example is
    /// commented out, and each one parses once uncommented.
    #[test]
    fn the_shipped_conffile_binds_nothing_and_its_examples_parse() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/config/bindguard.toml"
        );
        let text = fs::read_to_string(path).expect("deploy/config/bindguard.toml");
        let parsed = parse_file(Path::new(path), &text, Path::new(MOUNT)).expect("it parses");
        assert_eq!(parsed, Vec::new(), "the shipped config binds something");
        // A commented-out line of TOML is `#` then the text; prose is `# ` then the text.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with([' ', '#']) && !rest.is_empty() => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let examples = parse_file(Path::new(path), &uncommented, Path::new(MOUNT))
            .unwrap_or_else(|e| panic!("an example does not parse: {e}"));
        assert_eq!(examples.len(), 3, "{uncommented}");
        assert!(examples.iter().all(|b| b.cgroup.starts_with(MOUNT)));
    }

    #[test]
    fn empty_config_is_no_bindings() {
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing\n").unwrap().is_empty());
    }
}
