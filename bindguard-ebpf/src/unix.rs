//! connect on unix sockets (cgroup/connect_unix, Linux 6.7): strict mode refuses connects to
//! systemd-resolved's varlink socket, so glibc's nss-resolve reports UNAVAIL and falls back to
//! the `dns` module, whose queries the sock_addr programs keep on the binding (escape row 28).
//!
//! aya 0.14 cannot load this attach type, so the loader loads this program itself from the
//! raw instructions: it must stay self-contained — no maps, no globals, no calls, no data in
//! .rodata (the path is compared as immediates) — and the loader refuses it otherwise. The
//! section says connect4 only so that aya's parser accepts the object; the attach type given
//! at load is BPF_CGROUP_UNIX_CONNECT.
//!
//! The context of a connect_unix program is the kernel's `struct bpf_sock_addr_kern`, whose
//! second member is the kernel's copy of the address; the `bpf_sock_addr` fields a unix
//! program may read do not include the path. It is read with bpf_probe_read_kernel, which
//! the kernel gives CAP_PERFMON loaders only; without it the kernel refuses the program and
//! the row is reported open.
//! Fails open for anything it cannot read: the row is about a well-behaved resolver library,
//! and a refused connect of any other unix socket would break the workload.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::cgroup_sock_addr, programs::SockAddrContext,
};

use crate::uapi::{ALLOW, REFUSE};

/// "/run/systemd/resolve/io.systemd.Resolve\0" as little-endian words, after sun_family's two
/// bytes: the words at byte offsets 2, 10, 18, 26 and 34 of `struct sockaddr_un`.
const fn word(at: usize) -> u64 {
    const PATH: &[u8; 40] = b"/run/systemd/resolve/io.systemd.Resolve\0";
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 {
        // Bytes past the path's NUL: the 40-byte path ends exactly at word 4's end.
        w |= (PATH[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const W0: u64 = word(0);
const W1: u64 = word(8);
const W2: u64 = word(16);
const W3: u64 = word(24);
const W4: u64 = word(32);

/// sun_family (2 bytes), then the path's 40 bytes.
#[repr(C)]
struct Addr {
    family: u16,
    path: [u8; 40],
}

#[inline(always)]
fn le(b: &[u8; 40], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

/// The first five members of `struct bpf_sock_addr_kern` (Linux 6.7): sk, uaddr, tmp_reg,
/// t_ctx, and uaddrlen in the low half of the fifth word (little-endian targets only).
const HEAD_WORDS: usize = 5;

/// Strict mode: refuses a connect to systemd-resolved's varlink socket (nss-resolve).
#[cgroup_sock_addr(connect4)]
pub fn refuse_resolved_unix(ctx: SockAddrContext) -> i32 {
    // SAFETY: both reads go through bpf_probe_read_kernel, which fails cleanly on a bad
    // address; ctx is the kernel's struct bpf_sock_addr_kern.
    let Ok(head) = (unsafe { bpf_probe_read_kernel(ctx.sock_addr as *const [u64; HEAD_WORDS]) })
    else {
        return ALLOW;
    };
    let Ok(addr) = (unsafe { bpf_probe_read_kernel(head[1] as *const Addr) }) else {
        return ALLOW;
    };
    let len = head[4] as u32;
    let p = &addr.path;
    // The path's 39 bytes; then its end: the address ends there (no NUL passed), or a NUL
    // follows (the kernel's copy holds only `len` bytes: what lies past them is not the
    // caller's).
    const LOW7: u64 = 0x00ff_ffff_ffff_ffff;
    let same = le(p, 0) == W0
        && le(p, 8) == W1
        && le(p, 16) == W2
        && le(p, 24) == W3
        && le(p, 32) & LOW7 == W4
        && (len == 2 + 39 || (len > 2 + 39 && p[39] == 0));
    if same { REFUSE } else { ALLOW }
}
