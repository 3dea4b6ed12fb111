//! `bindguard doctor`: what this kernel and its boot parameters let strict mode cover, as the
//! escape table's rows — covered or not, why, and the fix. It needs no binding: it loads
//! bindguard's programs (unpinned, dropped at exit) exactly as the program set would, so its
//! answer is the kernel's, not a guess from a version number.

use serde::Serialize;

use crate::kernel::{
    escapes::{Closer, ESCAPES, hooks_of},
    hooks::Hook,
    lsm,
    progset::{self, KernelTypes, LeftOut, Why},
};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// The architecture bindguard runs on (`x86_64`, `aarch64`).
    pub arch: String,
    /// The active LSM list (`/sys/kernel/security/lsm`).
    pub lsm_list: String,
    pub bpf_lsm: String,
    /// Whether strict mode covers every row the programs close on this kernel.
    pub complete: bool,
    pub rows: Vec<Row>,
    /// Kernel features bindguard adapts to, beyond the rows.
    pub notes: Vec<String>,
    /// Bindings whose processes can walk out of them (row 19): `status`'s escapable-by-migration.
    pub escapable: Vec<Escapable>,
    /// Each program that did not load, with the verifier's log (shown with --verbose).
    #[serde(skip)]
    pub logs: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub row: u8,
    pub escape: &'static str,
    /// "covered", "open", "not-applicable" (the kernel has nothing there to guard) or
    /// "outside" (nothing bindguard can attach closes it: `why` says what to deny instead).
    pub state: &'static str,
    /// The programs (or userspace mechanism) that close it.
    pub by: String,
    /// Why it is open or not applicable, and how to close it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Escapable {
    pub cgroup: String,
    pub mode: String,
    /// Attached with --allow-delegated.
    pub allowed: bool,
    pub message: String,
}

/// Probes everything strict mode needs. Needs the privileges `attach` needs.
pub fn run() -> anyhow::Result<Report> {
    crate::binding::enforcer::require_privileges("doctor")?;
    let kernel = KernelTypes::probe();
    let left_out = progset::load_programs(None, &kernel)?;
    let mut r = report(&kernel, &left_out);
    r.escapable = crate::commands::status::collect(Default::default())
        .bindings
        .into_iter()
        .filter_map(|b| {
            let p = b
                .problems
                .iter()
                .find(|p| p.kind == crate::commands::status::ProblemKind::EscapableByMigration)?;
            Some(Escapable {
                cgroup: b.cgroup.as_ref()?.display().to_string(),
                mode: b.mode.clone(),
                allowed: b.allow_delegated,
                message: p.message.clone(),
            })
        })
        .collect();
    Ok(r)
}

fn report(kernel: &KernelTypes, left_out: &[LeftOut]) -> Report {
    let absent = |h: Hook| left_out.iter().find(|l| l.hook == h);
    let mut rows = Vec::new();
    for e in ESCAPES {
        let (state, by, why) = match e.closed_by {
            Closer::Userspace(how) => ("covered", how.to_string(), None),
            Closer::Outside(advice) => ("outside", String::new(), Some(advice.to_string())),
            Closer::Hooks => {
                let hooks: Vec<Hook> = hooks_of(e.row).collect();
                let by = hooks
                    .iter()
                    .map(|h| h.name())
                    .collect::<Vec<_>>()
                    .join(", ");
                let missing: Vec<&LeftOut> = hooks.iter().filter_map(|&h| absent(h)).collect();
                if missing.is_empty() {
                    ("covered", by, None)
                } else if missing.iter().all(|l| l.why == Why::NotNeeded) {
                    ("not-applicable", by, Some(missing[0].detail.clone()))
                } else {
                    let why: Vec<String> = missing
                        .iter()
                        .filter(|l| l.why != Why::NotNeeded)
                        .map(|l| format!("{}: {}", l.hook.name(), l.detail))
                        .collect();
                    let mut why = crate::kernel::coverage::join_reasons(why);
                    if let Some(w) = e.workaround {
                        why += &format!("; meanwhile: {w}");
                    }
                    if e.row == 21 {
                        why += &format!("; {}", yama());
                    }
                    ("open", by, Some(why))
                }
            }
        };
        rows.push(Row {
            row: e.row,
            escape: e.what,
            state,
            by,
            why,
        });
    }
    let f = kernel.layout.features;
    let mut notes = Vec::new();
    if f & bindguard_common::features::SOCK_SET_RETVAL == 0 {
        notes.push("row 8: MPTCP sockets are refused with EPERM, not EPROTONOSUPPORT (bpf_set_retval in cgroup_sock programs arrived in 6.1): programs that would fall back to TCP on EPROTONOSUPPORT fail instead".into());
    }
    use bindguard_common::features as F;
    for (shift, family) in [(F::SOCKOPT, "setsockopt"), (F::SKB, "egress filter")] {
        if (f >> shift) & F::COMM == 0 {
            notes.push(format!(
                "monitor: events of the {family} carry no process name on this kernel (bpf_get_current_comm is not allowed there)"
            ));
        }
        if (f >> shift) & F::PID_TGID == 0 {
            notes.push(format!(
                "monitor: events of the {family} carry no pid on this kernel"
            ));
        }
    }
    if f & F::ADDR_SETSOCKOPT_SENDMSG == 0 || f & F::ADDR_SETSOCKOPT_BIND == 0 {
        notes.push("--allow-loopback: this kernel lets only connect() pin a socket (bpf_setsockopt in bind and sendmsg hooks is newer): an unconnected sendto or a bind to a specific address from a socket not yet pinned is refused".into());
    }
    if !crate::kernel::probe::have_netns_cookie_sockopt() {
        notes.push("no SO_NETNS_COOKIE (5.14): a namespace's cookie is read by a throwaway program when a binding is made".into());
    }
    let complete = rows.iter().all(|r| r.state != "open");
    Report {
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        arch: crate::version::ARCH.into(),
        lsm_list: lsm::active_list(true),
        bpf_lsm: kernel.lsm.describe(),
        complete,
        rows,
        notes,
        escapable: Vec::new(),
        logs: left_out
            .iter()
            .filter_map(|l| Some((l.hook.program().to_string(), l.log.clone()?)))
            .collect(),
    }
}

/// What Yama lets a process trace here (row 21 without the BPF LSM): the sysctl's value in
/// words.
fn yama() -> String {
    let scope = match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Ok(v) if v.trim() == "0" => {
            "kernel.yama.ptrace_scope is 0 here: ptrace reaches every process of the uid"
                .to_string()
        }
        Ok(v) => format!(
            "kernel.yama.ptrace_scope is {} here: ptrace reaches only descendants",
            v.trim()
        ),
        Err(_) => "Yama is not active here: ptrace reaches every process of the uid".into(),
    };
    format!("{scope}; /proc/PID/fd reaches them whatever Yama says")
}

/// The text form: one line per row, then the notes.
pub fn render(r: &Report, verbose: bool) -> String {
    let mut out = format!(
        "kernel {} ({}); LSMs: {}\n{}\n\nROW  STATE           ESCAPE\n",
        r.kernel,
        r.arch,
        if r.lsm_list.is_empty() {
            "(unknown)"
        } else {
            &r.lsm_list
        },
        r.bpf_lsm
    );
    for row in &r.rows {
        let state = match row.state {
            "covered" => "covered",
            "open" => "NOT COVERED",
            "outside" => "outside",
            _ => "n/a",
        };
        out += &format!("{:>3}  {state:<15} {}\n", row.row, row.escape);
        if let Some(why) = &row.why {
            out += &format!("     {:<15} {}\n", "", why);
        }
    }
    for n in &r.notes {
        out += &format!("note: {n}\n");
    }
    for e in &r.escapable {
        out += &format!(
            "binding {} ({}{}): {}\n",
            e.cgroup,
            e.mode,
            if e.allowed { ", --allow-delegated" } else { "" },
            e.message
        );
    }
    let open: Vec<String> = r
        .rows
        .iter()
        .filter(|r| r.state == "open")
        .map(|r| r.row.to_string())
        .collect();
    if open.is_empty() {
        out += "strict mode covers every row on this kernel\n";
    } else {
        out += &format!(
            "strict mode does not cover rows {} on this kernel\n",
            open.join(", ")
        );
    }
    if verbose {
        for (program, log) in &r.logs {
            out += &format!("\n--- verifier log of {program} ---\n{log}\n");
        }
    }
    out
}
