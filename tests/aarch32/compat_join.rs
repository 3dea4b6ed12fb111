//! A 32-bit ARM (AArch32) client for the arm64 VM boots: row 7's 32-bit multicast join. On
//! arm64 a 64-bit process has no 32-bit syscall entry (x86 has int 0x80, which bg-probe uses);
//! a task makes compat syscalls only as an AArch32 program, and its thread_info.flags then
//! carries TIF_32BIT, what the BPF LSM program tests on arm64.
//!
//! Freestanding (no libc: this toolchain has no 32-bit ARM libc to link), raw EABI syscalls
//! (numbers from arch/arm64/include/asm/unistd32.h), built by `cargo xtask vmtest` with rustc
//! and rust-lld for armv7-unknown-linux-gnueabihf as a static executable.
//!
//! Usage, as bg-probe's: `compat-join attack compat-join GROUP PORT TOKEN IFINDEX`. Prints
//! `join: ok` or `join: error errno=N`, then holds the membership 600 ms.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

const NR_WRITE: usize = 4;
const NR_NANOSLEEP: usize = 162;
const NR_EXIT_GROUP: usize = 248;
const NR_SOCKET: usize = 281;
const NR_SETSOCKOPT: usize = 294;
const AF_INET: usize = 2;
const SOCK_DGRAM: usize = 2;
const SOL_IP: usize = 0;
const IP_ADD_MEMBERSHIP: usize = 35;

// The kernel starts us with sp at argc, then argv[].
global_asm!(
    ".globl _start",
    "_start:",
    "mov r0, sp",
    "bl start",
    "udf #0"
);

/// A raw EABI syscall: number in r7, arguments in r0-r4, result (or -errno) in r0.
unsafe fn syscall(nr: usize, a: usize, b: usize, c: usize, d: usize, e: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes arguments valid for syscall `nr`.
    unsafe {
        asm!("svc 0", in("r7") nr, inlateout("r0") a => ret, in("r1") b, in("r2") c,
             in("r3") d, in("r4") e, options(nostack));
    }
    ret
}

fn write(s: &[u8]) {
    // SAFETY: a buffer and its length.
    unsafe { syscall(NR_WRITE, 1, s.as_ptr() as usize, s.len(), 0, 0) };
}

fn exit(code: usize) -> ! {
    // SAFETY: exit_group does not return.
    unsafe { syscall(NR_EXIT_GROUP, code, 0, 0, 0, 0) };
    loop {}
}

/// The NUL-terminated string at `p`.
unsafe fn c_str<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: argv strings are NUL-terminated. Volatile: LLVM would make the loop a call to
    // strlen, which no libc provides here.
    unsafe {
        while core::ptr::read_volatile(p.add(n)) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

fn number(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u32::from(c - b'0')))
            .flatten()
    })
}

/// `a.b.c.d` in network byte order.
fn ipv4(s: &[u8]) -> Option<u32> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for o in &mut octets {
        *o = u8::try_from(number(parts.next()?)?).ok()?;
    }
    parts.next().is_none().then(|| u32::from_ne_bytes(octets))
}

#[unsafe(no_mangle)]
unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the initial stack holds argc and argc argv pointers.
    let args: [&[u8]; 7] = unsafe {
        if *sp != 7 {
            write(b"usage: compat-join attack compat-join GROUP PORT TOKEN IFINDEX\n");
            exit(2);
        }
        let argv = sp.add(1) as *const *const u8;
        core::array::from_fn(|i| c_str(*argv.add(i)))
    };
    let (Some(group), Some(ifindex)) = (ipv4(args[3]), number(args[6])) else {
        write(b"compat-join: bad group or ifindex\n");
        exit(2);
    };
    // struct ip_mreqn { imr_multiaddr, imr_address, imr_ifindex }
    let mreqn: [u32; 3] = [group, 0, ifindex];
    // SAFETY: socket, then setsockopt with a buffer of the size passed.
    let rc = unsafe {
        let fd = syscall(NR_SOCKET, AF_INET, SOCK_DGRAM, 0, 0, 0);
        if fd < 0 {
            write(b"socket: error\n");
            exit(1);
        }
        let opt = mreqn.as_ptr() as usize;
        syscall(
            NR_SETSOCKOPT,
            fd as usize,
            SOL_IP,
            IP_ADD_MEMBERSHIP,
            opt,
            12,
        )
    };
    if rc == 0 {
        write(b"join: ok\n");
    } else {
        let mut buf = *b"join: error errno=000\n";
        let e = (-rc) as usize;
        buf[18] = b'0' + (e / 100 % 10) as u8;
        buf[19] = b'0' + (e / 10 % 10) as u8;
        buf[20] = b'0' + (e % 10) as u8;
        // Without leading zeros, as bg-probe prints it.
        let digits = if e >= 100 {
            18
        } else if e >= 10 {
            19
        } else {
            20
        };
        write(&buf[..18]);
        write(&buf[digits..]);
    }
    // Hold the membership while the sniffer looks: timespec { 0 s, 600 ms }.
    let ts: [u32; 2] = [0, 600_000_000];
    // SAFETY: a valid timespec and no remainder.
    unsafe { syscall(NR_NANOSLEEP, ts.as_ptr() as usize, 0, 0, 0, 0) };
    exit(if rc == 0 { 0 } else { 1 })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(101)
}
