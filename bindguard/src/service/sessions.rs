//! The caller's side of the daemon's socket for users ([`super::userexec`] answers it):
//! `bindguard exec` without root, which has the daemon bind this process and then runs the
//! command in place, and `bindguard sessions`, which lists, ends or makes such bindings.
//! Never another user's: the daemon checks who asks by the connection's credentials.

use std::{ffi::OsString, net::IpAddr, path::PathBuf};

use anyhow::Context as _;

use super::userexec::{DEFAULT_SOCKET, Op, Request, ask};
use crate::binding::{
    netdev,
    policy::{Dns, Mode, Options},
};

/// Where the daemon answers: $BINDGUARD_SOCKET, else [`DEFAULT_SOCKET`].
fn socket() -> PathBuf {
    std::env::var_os("BINDGUARD_SOCKET")
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// `bindguard exec` without root, once the options that need root were refused: the daemon
/// binds this process as a grant allows (only the interface, mode, --allow-loopback and
/// --dns are the user's to choose), then `command` replaces it: same uid, environment,
/// directory and terminal, no root process in between. Returns only if it could not be run:
/// with 127 (not found) or 126, as a shell does.
pub fn exec(dev: &str, opts: &Options, command: &[OsString]) -> anyhow::Result<u8> {
    netdev::validate_name(dev)?;
    ask(
        &socket(),
        &Request {
            dev: dev.to_string(),
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
    Ok(if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}

/// `bindguard sessions`: lists the caller's exec bindings, ends one (`end`), or binds running
/// process `move_pid` to `dev` (with `dns`) in a new one; prints the daemon's answer (as
/// JSON with `json`).
pub fn sessions(
    end: Option<String>,
    move_pid: Option<i32>,
    dev: Option<String>,
    dns: &[IpAddr],
    json: bool,
) -> anyhow::Result<()> {
    let socket = socket();
    if let Some(d) = &dev {
        netdev::validate_name(d)?;
    }
    let req = Request {
        op: if move_pid.is_some() {
            Op::Move
        } else if end.is_some() {
            Op::End
        } else {
            Op::List
        },
        end: end.clone(),
        pid: move_pid,
        dev: dev.unwrap_or_default(),
        mode: Mode::Strict.as_str().into(),
        dns: Dns::from_addrs(dns)?.addrs(),
        ..Default::default()
    };
    let reply = ask(&socket, &req)?;
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
    Ok(())
}
