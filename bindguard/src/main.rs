//! The bindguard command line: parses arguments, calls the library, prints, maps exit codes.

use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use bindguard::{
    binding::{
        self, SocketPass, cgroup,
        enforcer::{self, Detached},
        netdev,
        netns::Netns,
        policy::{self, Mode, Options},
        sockreset,
    },
    commands::{exec, monitor, oci, status, verify},
    error::{self, printable, printable_path},
    service::{config, daemon, grants, nri, reconcile, userexec},
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

    fn netns(&self) -> anyhow::Result<Netns> {
        match &self.netns {
            Some(p) => Netns::open(p),
            None => Netns::current(),
        }
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
            netdev::validate_name(&binding.dev)?;
            let cg = cgroup::resolve(&cgroup::expand_self(&cgroup)?)?;
            let ns = binding.netns()?;
            let iface = netdev::resolve(&binding.dev, &ns)?;
            if let Some(w) = netdev::rp_filter(&iface.name, &ns)
                .ok()
                .and_then(|v| netdev::rp_filter_warning(&iface.name, v))
            {
                eprintln!("bindguard: warning: {w}");
            }
            let bound = binding::bind(&cg, &iface, &opts, SocketPass::Now).with_context(|| {
                format!(
                    "attaching cgroup {} to {}",
                    printable_path(&cg.path),
                    iface.name
                )
            })?;
            if let Some(w) = bound.open_rows() {
                eprintln!("bindguard: warning: {w}");
            }
            if verbose {
                for (program, log) in bound.refused_logs() {
                    eprintln!("--- verifier log of {program} ---\n{log}");
                }
            }
            if let Some(d) = bound.escapable() {
                eprintln!(
                    "bindguard: warning: cgroup {} is {}: its processes can move themselves out of the binding; bind {} itself to cover them",
                    printable_path(&cg.path),
                    d.describe(),
                    printable_path(&d.boundary)
                );
            }
            for (s, fate) in bound.sockets.iter().flat_map(|p| &p.ended) {
                let verb = match fate {
                    sockreset::Fate::Destroyed => "destroyed".to_string(),
                    sockreset::Fate::Bound => format!("bound to {}", iface.name),
                };
                eprintln!(
                    "bindguard: {verb}: {} {} -> {} of pid {} ({}), was on ifindex {}",
                    s.protocol,
                    s.local,
                    s.remote,
                    s.pid,
                    printable(&s.command),
                    s.bound_ifindex
                );
            }
            // A partial pass still reports: the binding stays (it governs every new socket,
            // and sockets already ended cannot be given back); the command fails after.
            let unreached = bound.sockets.as_ref().map_or(&[][..], |p| &p.unreached[..]);
            for u in unreached {
                eprintln!("bindguard: not ended: {u}");
            }
            println!("{}", bound.summary());
            if !unreached.is_empty() {
                anyhow::bail!(
                    "{} of the sockets cgroup {} already held could not be ended (listed above); the binding is in place and governs every new socket; `bindguard status` reports sockets-unreached until the next attach",
                    unreached.len(),
                    printable_path(&cg.path)
                );
            }
        }
        Command::Apply {
            config,
            dry_run,
            prune,
        } => return apply(config.as_deref(), dry_run, prune),
        Command::Daemon {
            config,
            socket,
            metrics,
        } => {
            daemon::run(config, socket.as_deref(), metrics)?;
        }
        Command::OciHook { stage } => match oci::hook(std::io::stdin().lock(), stage)? {
            oci::Outcome::NotAnnotated => {}
            oci::Outcome::Bound { cgroup, dev } => {
                eprintln!(
                    "bindguard: bound container cgroup {} to {dev}",
                    printable_path(&cgroup)
                )
            }
            oci::Outcome::Cleaned { removed } => {
                eprintln!("bindguard: removed {removed} container binding(s)")
            }
        },
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
            let mount = cgroup::cgroup2_mount()?;
            let config = config::load(config.as_deref(), &mount)?;
            let user = user.unwrap_or_else(|| nix::unistd::getuid().as_raw().to_string());
            let who = grants::Caller::lookup(&user)?;
            let theirs: Vec<&grants::Grant> =
                config.grants.iter().filter(|g| g.covers(&who)).collect();
            if json {
                let doc: Vec<serde_json::Value> = theirs
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "dev": g.dev,
                            "modes": g.modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                            "options": g.options.iter().map(|o| o.name()).collect::<Vec<_>>(),
                            "origin": format!("{}:{}", g.file.display(), g.line),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "uid": who.uid,
                        "grants": doc
                    }))?
                );
            } else if theirs.is_empty() {
                println!(
                    "uid {} has no grant: `bindguard exec` without root is refused",
                    who.uid
                );
            } else {
                for g in theirs {
                    let options: Vec<&str> = g.options.iter().map(|o| o.name()).collect();
                    println!(
                        "dev {}; modes {}; options {} ({}:{})",
                        g.dev.join(", "),
                        g.modes
                            .iter()
                            .map(|m| m.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if options.is_empty() {
                            "none".to_string()
                        } else {
                            options.join(", ")
                        },
                        g.file.display(),
                        g.line
                    );
                }
            }
        }
        Command::Sessions {
            end,
            move_pid,
            dev,
            dns,
            json,
        } => {
            let socket = std::env::var_os("BINDGUARD_SOCKET")
                .map_or_else(|| PathBuf::from(userexec::DEFAULT_SOCKET), PathBuf::from);
            if let Some(d) = &dev {
                netdev::validate_name(d)?;
            }
            let req = userexec::Request {
                op: if move_pid.is_some() {
                    userexec::Op::Move
                } else if end.is_some() {
                    userexec::Op::End
                } else {
                    userexec::Op::List
                },
                end: end.clone(),
                pid: move_pid,
                dev: dev.unwrap_or_default(),
                mode: Mode::Strict.as_str().into(),
                dns: policy::Dns::from_addrs(&dns)?.addrs(),
                ..Default::default()
            };
            let reply = userexec::ask(&socket, &req)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else if let Some(pid) = move_pid {
                println!(
                    "bound pid {pid} in {}",
                    reply.cgroup.as_deref().unwrap_or("?")
                );
            } else if let Some(name) = end {
                println!("ended {name}");
            } else if reply.sessions.is_empty() {
                println!("no exec bindings of yours");
            } else {
                println!("{:<24} {:<16} {:<7} PIDS", "NAME", "DEV", "MODE");
                for s in &reply.sessions {
                    let pids: Vec<String> = s.pids.iter().map(|p| p.to_string()).collect();
                    println!(
                        "{:<24} {:<16} {:<7} {}",
                        s.name,
                        s.dev,
                        s.mode,
                        pids.join(",")
                    );
                }
            }
        }
        Command::Detach { cgroup } => match enforcer::detach(&cgroup::expand_self(&cgroup)?)? {
            // The path detached, not the argument: `self` names the caller's cgroup.
            Detached::Removed { cgroup, pins } => {
                println!(
                    "detached {} (removed {})",
                    printable_path(&cgroup),
                    pins.display()
                )
            }
            Detached::Stale(n) => println!(
                "cgroup {} no longer exists; removed {n} binding(s) of deleted cgroups",
                printable_path(&cgroup)
            ),
        },
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
        Command::Status { json, links } => {
            // The pins root is root-only (0700): for anyone else "no bindings" would be a lie.
            if let Err(e) = std::fs::read_dir(bindguard::kernel::pins::root())
                && e.kind() == std::io::ErrorKind::PermissionDenied
            {
                eprintln!(
                    "bindguard: warning: cannot read {} ({e}), so bindings are not shown; run status as root",
                    bindguard::kernel::pins::root().display()
                );
            }
            let report = status::collect(status::Options { links });
            // Indented for a person at a terminal; compact otherwise, where programs read it
            // and indenting 10,000 bindings costs more than reading them.
            let pretty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                if pretty {
                    serde_json::to_writer_pretty(&mut out, &report)?;
                } else {
                    serde_json::to_writer(&mut out, &report)?;
                }
                writeln!(out)?;
            } else {
                out.write_all(status::render_table(&report).as_bytes())?;
            }
            out.flush()?;
            // The process ends here: freeing 10,000 bindings one allocation at a time would
            // only add to the command's time.
            std::mem::forget(report);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bindguard exec` without root: the daemon binds this process as a grant allows (only the
/// interface, mode, --allow-loopback and --dns are the user's to choose), then the command
/// replaces it: same uid, environment, directory and terminal, no root process in between.
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
    netdev::validate_name(&binding.dev)?;
    let socket = std::env::var_os("BINDGUARD_SOCKET")
        .map_or_else(|| PathBuf::from(userexec::DEFAULT_SOCKET), PathBuf::from);
    userexec::ask(
        &socket,
        &userexec::Request {
            dev: binding.dev.clone(),
            mode: opts.mode.as_str().into(),
            allow_loopback: opts.allow_loopback,
            dns: opts.dns.addrs(),
            ..Default::default()
        },
    )?;
    let (program, args) = command.split_first().context("no command given")?;
    use std::os::unix::process::CommandExt as _;
    let e = std::process::Command::new(program).args(args).exec();
    eprintln!(
        "bindguard: {}: {e}",
        std::path::Path::new(program).display()
    );
    Ok(ExitCode::from(
        if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        },
    ))
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

/// `bindguard apply`: the plan, printed as it runs.
fn apply(path: Option<&std::path::Path>, dry_run: bool, prune: bool) -> anyhow::Result<ExitCode> {
    let mount = cgroup::cgroup2_mount()?;
    let config = config::load(path, &mount)?;
    if !dry_run {
        enforcer::require_privileges("apply")?;
    }
    let steps = reconcile::plan(&config, prune)?;
    if steps.is_empty() {
        println!("no bindings in the config");
    }
    if dry_run {
        for s in &steps {
            println!("{s}");
        }
        // Exit as the run would when the plan already shows that it fails.
        if let Some((code, why)) = reconcile::foreseen_failure(&steps) {
            eprintln!("bindguard: {why}");
            return Ok(ExitCode::from(code as u8));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = reconcile::execute(steps, &config);
    for (step, err) in &outcome.steps {
        match err {
            None => println!("{step}"),
            Some(e) => {
                println!("{step}: FAILED");
                eprintln!("bindguard: {}", error::one_line(e));
            }
        }
    }
    Ok(ExitCode::from(outcome.exit_code() as u8))
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
