//! BPF_PROG_LOAD made directly, for the one program aya 0.14 cannot load: cgroup/connect_unix
//! (Linux 6.7), which its object parser and program types do not know. The program is taken
//! from the embedded object as aya-obj parses it, unrelocated: it must be self-contained (no
//! maps, globals or calls; bindguard-ebpf's `unix.rs` says so), and [`self_contained`] checks
//! the instructions before they reach the kernel, so a program that is not fails here by name
//! instead of running with a null map.

use std::{
    ffi::CString,
    os::fd::{FromRawFd, OwnedFd},
};

use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_insn, bpf_prog_type};

use crate::kernel::link::sys_bpf;

/// Why a program could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("program {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error("parsing the eBPF object: {0}")]
    Parse(String),
    #[error(
        "program {0} is not self-contained (a map, global or call): bindguard loads it without aya"
    )]
    NotSelfContained(&'static str),
    /// The kernel refused it; `log` is the verifier's (empty when the kernel refused the
    /// attach type itself).
    #[error("BPF_PROG_LOAD of {program}: {source}")]
    Refused {
        program: &'static str,
        #[source]
        source: std::io::Error,
        log: String,
    },
}

/// The prefix of `union bpf_attr` BPF_PROG_LOAD reads, up to expected_attach_type.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The instructions of `program` (a function name) in `object`.
pub fn instructions(object: &[u8], program: &'static str) -> Result<Vec<bpf_insn>, LoadError> {
    let obj = aya_obj::Object::parse(object).map_err(|e| LoadError::Parse(e.to_string()))?;
    let p = obj
        .programs
        .get(program)
        .ok_or(LoadError::Missing(program))?;
    let f = obj
        .functions
        .get(&p.function_key())
        .ok_or(LoadError::Missing(program))?;
    Ok(f.instructions.clone())
}

/// No call (BPF_PSEUDO_CALL or a kfunc) and no 64-bit load that would need a map's or a
/// global's address filled in (unrelocated, those read as `lddw rX, 0`).
pub fn self_contained(insns: &[bpf_insn]) -> bool {
    const CALL: u8 = 0x85;
    const LDDW: u8 = 0x18;
    insns.iter().enumerate().all(|(i, insn)| match insn.code {
        CALL => insn.src_reg() == 0,
        LDDW => {
            let next = insns.get(i + 1).map_or(0, |n| n.imm);
            insn.src_reg() == 0 && (insn.imm != 0 || next != 0)
        }
        _ => true,
    })
}

/// Loads `program` of `object` as a cgroup/sock_addr program of `attach_type`. On a refusal
/// loads it again with the verifier's log, for `--verbose`.
pub fn load_sock_addr(
    object: &[u8],
    program: &'static str,
    attach_type: bpf_attach_type,
) -> Result<OwnedFd, LoadError> {
    let insns = instructions(object, program)?;
    if !self_contained(&insns) {
        return Err(LoadError::NotSelfContained(program));
    }
    // bpf_probe_read_kernel is GPL-only.
    let license = CString::from(c"GPL");
    let mut name = [0u8; 16];
    for (d, s) in name.iter_mut().zip(program.bytes().take(15)) {
        *d = s;
    }
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR as u32,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: attach_type as u32,
        };
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    match load(&mut []) {
        // SAFETY: the kernel returned a new fd we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = load(&mut buf);
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            Err(LoadError::Refused {
                program,
                source,
                log: String::from_utf8_lossy(&buf[..end]).into_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_program_is_self_contained() {
        let insns = instructions(crate::kernel::hooks::EBPF_OBJECT, "refuse_resolved_unix")
            .expect("the program is in the object");
        assert!(insns.len() > 10);
        assert!(self_contained(&insns));
    }

    #[test]
    fn a_map_load_or_a_call_is_not_self_contained() {
        let insn = |code: u8, src: u8, imm: i32| {
            let mut i: bpf_insn = unsafe { std::mem::zeroed() };
            i.code = code;
            i.set_src_reg(src);
            i.imm = imm;
            i
        };
        let exit = insn(0x95, 0, 0);
        assert!(self_contained(&[insn(0x18, 0, 7), insn(0, 0, 0), exit]));
        assert!(!self_contained(&[insn(0x18, 0, 0), insn(0, 0, 0), exit]));
        assert!(!self_contained(&[insn(0x18, 1, 5), insn(0, 0, 0), exit]));
        assert!(self_contained(&[insn(0x85, 0, 113), exit]));
        assert!(!self_contained(&[insn(0x85, 1, 3), exit]));
    }
}
