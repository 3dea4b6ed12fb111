//! The bindguard command line: parses arguments, calls the library, prints, maps exit codes.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use bindguard::{
    binding::{
        cgroup, enforcer,
        policy::{self, Mode, Options},
    },
    commands::{attach, detach, exec, monitor, oci, status, verify},
    error,
    service::{apply, config, daemon, grants, nri, sessions},
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bindguard",
    version = bindguard::version::LONG,
    about = "Pin every socket of a cgroup to one network interface, enforced in the kernel with eBPF"
)]
struct Cli {
    /// Show the kernel verifier's log when it refuses a program (never the only message).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bind every new socket of a cgroup to an interface; the binding stays after bindguard exits.
    Attach {
        /// The cgroup: absolute, or relative to the cgroup2 mount (`mgmt`); `self` is
        /// bindguard's own cgroup (a systemd ExecStartPre=+ binds its service).
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Make the kernel hold what the config says: print the plan (+ attach, ~ retarget,
    /// = unchanged, - detach) and run it. Idempotent.
    Apply {
        /// A config file, or a directory of them (default: /etc/bindguard/bindguard.toml and
        /// /etc/bindguard/bindings.d/*.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also detach bindings made from a config that the config no longer names.
        #[arg(long)]
        prune: bool,
    },
    /// Apply the config, then keep it true: follow interfaces by name (closed while missing),
    /// bind cgroups when they appear, repair removed pins. SIGHUP reloads the config.
    Daemon {
        /// A config file, or a directory of them (default as for apply).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Where users' `bindguard exec` asks (mode 0666; the config's [[grant]]s decide).
        /// Default: /run/bindguard/bindguard.sock.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Serve Prometheus metrics on /metrics, and /healthz and /readyz, at this address
        /// (e.g. 127.0.0.1:9477; overrides the config's `metrics` key; default: off).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Run a command with every socket bound to an interface, in a transient cgroup that is
    /// removed when the command ends. Exits with the command's status. Without root, the
    /// daemon binds it as the config's [[grant]]s allow, and the command runs in place.
    Exec {
        #[command(flatten)]
        binding: BindingArgs,
        /// As root: run the command as this user (name or uid), with their groups.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// OCI runtime hook: reads the container state on stdin; binds containers annotated
    /// io.bindguard.dev at createRuntime and removes their pins at poststop.
    OciHook {
        /// The stage (default: from the state's status: creating/created = createRuntime,
        /// stopped = poststop).
        #[arg(long, value_name = "STAGE", value_enum)]
        stage: Option<oci::Stage>,
    },
    /// NRI plugin for containerd 2.x and CRI-O: binds pods and containers annotated
    /// io.bindguard.dev before their first instruction runs; refuses those it cannot bind.
    Nri {
        /// The runtime's NRI socket.
        #[arg(long, value_name = "PATH", default_value = nri::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// The name the plugin registers with.
        #[arg(long, value_name = "NAME", default_value = "bindguard")]
        name: String,
        /// The plugin's two-digit index (plugins are called in ascending order).
        #[arg(long, value_name = "NN", default_value = "10")]
        index: String,
        /// Serve Prometheus metrics on /metrics, and /healthz and /readyz (ready once
        /// registered and synchronized), at this address (e.g. 0.0.0.0:9477; default: off).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// What the config's [[grant]]s let a user bind without root (default: you).
    Grants {
        /// A config file, or a directory of them (default as for apply).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// The user (name or uid).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// One JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Without root: list the bindings the daemon made for your `bindguard exec`s, or end one
    /// (its programs are killed and the binding removed). Never another user's.
    Sessions {
        /// End this one (a NAME from the list).
        #[arg(long, value_name = "NAME", conflicts_with = "move_pid")]
        end: Option<String>,
        /// Bind this running process of yours (and what it starts from now on) in a new
        /// binding to --dev; the sockets it holds that do not obey it are ended.
        #[arg(long = "move", value_name = "PID", requires = "dev")]
        move_pid: Option<i32>,
        /// The interface, with --move.
        #[arg(long, value_name = "IFNAME")]
        dev: Option<String>,
        /// With --move: send its DNS queries to this resolver (as the grant allows).
        #[arg(
            long,
            value_name = "ADDR[,ADDR]",
            value_delimiter = ',',
            requires = "move_pid"
        )]
        dns: Vec<std::net::IpAddr>,
        /// One JSON document (the daemon's answer).
        #[arg(long)]
        json: bool,
    },
    /// Remove the binding of a cgroup.
    Detach {
        /// The cgroup: absolute, or relative to the cgroup2 mount; `self` is bindguard's own.
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
    },
    /// Stream every refusal and drop of every binding as it happens (Ctrl-C to stop).
    Monitor {
        /// One JSON object per line (schema in docs/status-and-monitor.md).
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
    },
    /// Prove a binding: a probe inside the cgroup checked against SO_BINDTODEVICE, and an
    /// audit of the sockets the cgroup's processes already hold. Exit 0 only if all pass.
    Verify {
        /// The cgroup: absolute, or relative to the cgroup2 mount; `self` is bindguard's own.
        #[arg(long, value_name = "PATH")]
        cgroup: PathBuf,
        /// Compare the route to this address (default: 203.0.113.1 and 2001:db8::1). Nothing
        /// is sent: a UDP connect() only looks the route up.
        #[arg(long, value_name = "ADDR")]
        to: Option<std::net::IpAddr>,
        /// Print the JSON report described in docs/status-and-monitor.md.
        #[arg(long)]
        json: bool,
    },
    #[command(name = "__verify-probe", hide = true)]
    VerifyProbe,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `bindguard manpage > bindguard.1`; with --dir,
    /// write it and one page per subcommand (bindguard-attach.1, ...) there.
    Manpage {
        /// Write bindguard.1 and bindguard-SUBCOMMAND.1 into this directory (made if missing)
        /// and print their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// What this kernel lets strict mode cover, row by row of the escape table, with the fix
    /// for each row it cannot; needs no binding. Exits 1 when some row is not covered.
    Doctor {
        /// Print the JSON document described in docs/status-and-monitor.md.
        #[arg(long)]
        json: bool,
    },
    /// List every binding with its policy, links, counters and problems.
    Status {
        /// Print the stable JSON document described in docs/status-and-monitor.md.
        #[arg(long)]
        json: bool,
        /// Also ask the kernel about every link pin (link id, program, attached cgroup), as
        /// `verify` does. By default `status` trusts the pins and maps (bpffs, cgroup storage,
        /// cgroupfs: still all kernel state) and opens no link, which keeps it fast with
        /// thousands of bindings.
        #[arg(long)]
        links: bool,
    },
}

#[derive(Args)]
struct BindingArgs {
    /// The interface every socket is bound to (resolved in --netns).
    #[arg(long, value_name = "IFNAME")]
    dev: String,
    /// Set SO_MARK on every new socket (decimal or 0x hex).
    #[arg(long, value_name = "N", value_parser = policy::parse_u32, allow_hyphen_values = true)]
    mark: Option<u32>,
    /// Set SO_PRIORITY on every new socket (decimal or 0x hex).
    #[arg(long, value_name = "N", value_parser = policy::parse_u32, allow_hyphen_values = true)]
    priority: Option<u32>,
    /// strict: the binding plus guards that close the known escapes; bind: exactly
    /// SO_BINDTODEVICE semantics.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Mode::Strict)]
    mode: Mode,
    /// Strict mode: let TCP and UDP to 127.0.0.0/8 and ::1 work (sockets are pinned on first
    /// use: to lo for loopback, to --dev for everything else).
    #[arg(long)]
    allow_loopback: bool,
    /// The network namespace the interface lives in (default: bindguard's own).
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Strict mode: let the cgroup create sockets of this family too (packet, xdp, vsock, ...;
    /// repeatable). By default only unix, netlink, inet and inet6 sockets may be made.
    #[arg(long, value_name = "FAMILY", value_parser = policy::parse_family)]
    allow_family: Vec<u64>,
    /// What to do with sockets the cgroup's processes already hold (made before the binding,
    /// or before they moved in): keep them (verify lists them) or destroy those not bound to
    /// the interface, as `ss -K` does.
    #[arg(long, value_name = "WHAT", value_enum, default_value_t = policy::Existing::Keep)]
    existing: policy::Existing,
    /// Strict mode: let the cgroup attach tun/tap devices (a VPN client or tunnel that must
    /// open its own). What it writes there is forwarded by the host, outside the binding.
    #[arg(long)]
    allow_tun: bool,
    /// Strict mode: let the cgroup ptrace processes outside it (a debugger inside attaching
    /// out). A traced process sends from outside the binding.
    #[arg(long)]
    allow_ptrace_out: bool,
    /// Strict mode: send every DNS query of the cgroup (UDP and TCP to port 53 of any
    /// address, the 127.0.0.53 stub included) to this resolver, through the interface. One
    /// IPv4 and one IPv6 address at most; replies keep the source the program asked.
    #[arg(long, value_name = "ADDR[,ADDR]", value_delimiter = ',')]
    dns: Vec<std::net::IpAddr>,
    /// Strict mode: bind a cgroup below a delegation boundary anyway (its processes can move
    /// themselves out of it). `status` and `verify` keep saying so.
    #[arg(long)]
    allow_delegated: bool,
}

impl BindingArgs {
    fn options(&self) -> anyhow::Result<Options> {
        Ok(Options {
            mark: self.mark,
            priority: self.priority,
            mode: self.mode,
            allow_loopback: self.allow_loopback,
            allow_families: self.allow_family.iter().fold(0, |m, f| m | f),
            existing: self.existing,
            allow_tun: self.allow_tun,
            allow_ptrace_out: self.allow_ptrace_out,
            allow_delegated: self.allow_delegated,
            dns: policy::Dns::from_addrs(&self.dns)?,
            ..Options::default()
        })
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let verbose = cli.verbose;
    match cli.command {
        Command::Exec {
            binding,
            user,
            command,
        } => {
            let opts = binding.options()?;
            if !nix::unistd::geteuid().is_root() {
                return exec_as_user(&binding, &opts, user.as_deref(), &command);
            }
            let as_user = user.as_deref().map(exec::lookup_user).transpose()?;
            let code = exec::exec(
                &binding.dev,
                binding.netns.as_deref(),
                &opts,
                as_user.as_ref(),
                &command,
            )?;
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        Command::Attach { cgroup, binding } => {
            let opts = binding.options()?;
            attach::run(
                &cgroup,
                &binding.dev,
                binding.netns.as_deref(),
                &opts,
                verbose,
            )?;
        }
        Command::Apply {
            config,
            dry_run,
            prune,
        } => {
            return Ok(ExitCode::from(apply::run(
                config.as_deref(),
                dry_run,
                prune,
            )?));
        }
        Command::Daemon {
            config,
            socket,
            metrics,
        } => {
            daemon::run(config, socket.as_deref(), metrics)?;
        }
        Command::OciHook { stage } => oci::run(stage)?,
        Command::Nri {
            socket,
            name,
            index,
            metrics,
        } => nri::run(&nri::Settings {
            socket,
            name,
            index,
            metrics,
        })?,
        Command::Grants { config, user, json } => {
            let config = config::load(config.as_deref(), &cgroup::cgroup2_mount()?)?;
            grants::print(&config.grants, user.as_deref(), json)?;
        }
        Command::Sessions {
            end,
            move_pid,
            dev,
            dns,
            json,
        } => sessions::sessions(end, move_pid, dev, &dns, json)?,
        Command::Detach { cgroup } => detach::run(&cgroup)?,
        Command::Monitor { json, duration } => {
            enforcer::require_privileges("monitor")?;
            monitor::run(
                json,
                duration.map(std::time::Duration::from_secs),
                &mut std::io::stdout().lock(),
            )?;
        }
        Command::Verify { cgroup, to, json } => {
            let report = verify::verify(&cgroup::expand_self(&cgroup)?, to)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", verify::render(&report));
            }
            if !report.ok {
                return Ok(ExitCode::from(1));
            }
        }
        Command::VerifyProbe => {
            let input: verify::ProbeInput = serde_json::from_reader(std::io::stdin().lock())?;
            println!("{}", serde_json::to_string(&verify::probe(&input))?);
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bindguard",
                &mut std::io::stdout(),
            );
        }
        Command::Manpage { dir: None } => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
        }
        Command::Manpage { dir: Some(dir) } => {
            for page in write_manpages(&dir)? {
                println!("{}", page.display());
            }
        }
        Command::Doctor { json } => {
            let report = bindguard::commands::doctor::run()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", bindguard::commands::doctor::render(&report, verbose));
            }
            if !report.complete {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Status { json, links } => status::print(json, status::Options { links })?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `bindguard exec` without root: refuses the options only root may use (only the interface,
/// mode, --allow-loopback and --dns are the user's to choose, as a grant allows), then has
/// the daemon bind this process and runs the command in place ([`sessions::exec`]).
fn exec_as_user(
    binding: &BindingArgs,
    opts: &Options,
    user: Option<&str>,
    command: &[std::ffi::OsString],
) -> anyhow::Result<ExitCode> {
    let root_only = [
        ("--user", user.is_some()),
        ("--netns", binding.netns.is_some()),
        ("--mark", binding.mark.is_some()),
        ("--priority", binding.priority.is_some()),
        ("--allow-family", !binding.allow_family.is_empty()),
        ("--allow-tun", binding.allow_tun),
        ("--allow-ptrace-out", binding.allow_ptrace_out),
        ("--allow-delegated", binding.allow_delegated),
        (
            "--existing destroy",
            opts.existing == policy::Existing::Destroy,
        ),
    ];
    if let Some((flag, _)) = root_only.iter().find(|(_, set)| *set) {
        return Err(bindguard::Error::InvalidInput {
            what: format!(
                "{flag} needs root; without root, exec takes --dev, --mode, --allow-loopback and --dns (as the admin's grant allows)"
            ),
        }
        .into());
    }
    Ok(ExitCode::from(sessions::exec(&binding.dev, opts, command)?))
}

/// Writes bindguard.1 and a bindguard-SUBCOMMAND.1 for every subcommand but the hidden ones
/// into `dir`; returns the files written.
fn write_manpages(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cli = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its display name, `bindguard-attach`: the page's name and title.
    cli.build();
    let subcommands: Vec<clap::Command> = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    std::iter::once(cli)
        .chain(subcommands)
        .map(|cmd| {
            // Every page's footer names the build, as the main page's does by default.
            let man = clap_mangen::Man::new(cmd)
                .source(format!("bindguard {}", bindguard::version::LONG));
            man.generate_to(dir)
                .with_context(|| format!("writing {}", dir.join(man.get_filename()).display()))
        })
        .collect()
}

fn main() -> ExitCode {
    // Like other filters, end quietly when the reader of stdout goes away (`status | head`);
    // Rust's runtime ignores SIGPIPE, which turns that into errors and panics.
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            // One line: clap's message up to its usage block; --help shows the rest.
            let rendered = e.render().to_string();
            let message = rendered
                .split("\n\n")
                .next()
                .unwrap_or("invalid arguments")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("bindguard: {message} (see `bindguard --help`)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bindguard: {}", error::one_line(&e));
            ExitCode::from(error::exit_code(&e) as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `manpage --dir`: one page per subcommand, with its options, named as man(1) looks
    /// them up; none for the hidden probe or for `help`.
    #[test]
    fn manpage_dir_writes_a_page_per_subcommand() {
        let dir = std::env::temp_dir().join(format!("bindguard-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = write_manpages(&dir).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(written.len(), names.len());
        // Every subcommand but the hidden probe (and no `help`), and the main page.
        use clap::CommandFactory as _;
        let mut want = vec!["bindguard.1".to_string()];
        want.extend(
            Cli::command()
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| format!("bindguard-{}.1", s.get_name())),
        );
        want.sort();
        assert_eq!(names, want);
        assert!(names.len() > 10, "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.contains("probe") || n.contains("help"))
        );
        let attach = std::fs::read_to_string(dir.join("bindguard-attach.1")).unwrap();
        assert!(attach.contains(".TH bindguard-attach 1"), "{attach}");
        assert!(attach.contains(bindguard::version::LONG), "{attach}");
        for option in ["\\-\\-cgroup", "\\-\\-dev", "\\-\\-allow\\-loopback"] {
            assert!(
                attach.contains(option),
                "{option} not in bindguard-attach.1"
            );
        }
        let main = std::fs::read_to_string(dir.join("bindguard.1")).unwrap();
        assert!(main.contains("bindguard\\-attach(1)"), "{main}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
