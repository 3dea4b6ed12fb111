//! Network namespaces: opening them, running code inside one, and their cookies.
//!
//! An ifindex only means something inside one namespace; the eBPF side identifies namespaces by
//! cookie (bpf_get_netns_cookie), userspace finds them again by inode.

use std::{
    fs::{self, File},
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

use crate::Error;

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    /// How to name it in messages: the path it was opened from.
    pub label: String,
    /// Inode of the namespace (stable while it lives; shown by `ls -iL /proc/PID/ns/net`).
    pub ino: u64,
    /// The path it was opened from; None for the caller's own namespace.
    pub path: Option<PathBuf>,
}

impl Netns {
    /// The caller's namespace.
    pub fn current() -> anyhow::Result<Self> {
        let path = Path::new("/proc/thread-self/ns/net");
        let file = File::open(path).context("opening /proc/thread-self/ns/net")?;
        let ino = file.metadata()?.ino();
        Ok(Self {
            file,
            label: "the current network namespace".into(),
            ino,
            path: None,
        })
    }

    /// A namespace named by a path such as /run/netns/NAME or /proc/PID/ns/net.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let not_netns = |why: String| Error::NotNetns {
            path: path.to_path_buf(),
            why,
        };
        let file = File::open(path).map_err(|e| not_netns(e.to_string()))?;
        // NS_GET_NSTYPE (Linux 4.11) answers for nsfs files only, with the namespace's kind.
        const NS_GET_NSTYPE: libc::Ioctl = 0xb703; // c_ulong on glibc, c_int on musl
        // SAFETY: ioctl on an fd we own; NS_GET_NSTYPE takes no argument.
        let kind = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), NS_GET_NSTYPE) };
        if kind < 0 {
            return Err(not_netns("it is not a namespace file".into()).into());
        }
        if kind != libc::CLONE_NEWNET {
            return Err(not_netns("it is a namespace of another kind".into()).into());
        }
        let ino = file.metadata()?.ino();
        Ok(Self {
            file,
            label: format!("network namespace {}", path.display()),
            ino,
            path: Some(path.to_path_buf()),
        })
    }

    /// Runs `f` on a thread that has entered this namespace; the calling thread is untouched.
    /// Another handle on the same namespace (for work on another thread).
    pub fn try_clone(&self) -> anyhow::Result<Self> {
        Ok(Self {
            file: self
                .file
                .try_clone()
                .with_context(|| format!("duplicating the fd of {}", self.label))?,
            label: self.label.clone(),
            ino: self.ino,
            path: self.path.clone(),
        })
    }

    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        if Netns::current().is_ok_and(|me| me.ino == self.ino) {
            return Ok(f());
        }
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<T> {
                setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering {}", self.label))?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.label))?
        })
    }

    /// The namespace's cookie, as bpf_get_netns_cookie() reports it in programs: from
    /// SO_NETNS_COOKIE, or where the kernel has no such option (before 5.14) from a program
    /// that sees a socket made there ([`cookie_from_a_program`]).
    pub fn cookie(&self) -> anyhow::Result<u64> {
        if crate::kernel::probe::have_netns_cookie_sockopt() {
            return self
                .run(crate::kernel::sockopt::netns_cookie)?
                .with_context(|| format!("reading the cookie of {}", self.label));
        }
        static KNOWN: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, cookie)) = known.iter().find(|(ino, _)| *ino == self.ino) {
            return Ok(*cookie);
        }
        let cookie = cookie_from_a_program(self).with_context(|| {
            format!(
                "finding the cookie of {} (this kernel has no SO_NETNS_COOKIE: a throwaway cgroup and program read it)",
                self.label
            )
        })?;
        known.push((self.ino, cookie));
        Ok(cookie)
    }
}

/// Finds a live namespace by inode: the caller's, a named one in /run/netns, or any process's.
pub fn find_by_ino(ino: u64) -> Option<Netns> {
    if let Ok(me) = Netns::current()
        && me.ino == ino
    {
        return Some(me);
    }
    let named = fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let procs = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    named
        .chain(procs)
        .find(|p: &PathBuf| fs::metadata(p).is_ok_and(|m| m.ino() == ino))
        .and_then(|p| Netns::open(&p).ok())
}

/// The cookie of `netns` as a cgroup program sees it, for kernels without SO_NETNS_COOKIE: a
/// sock_create program that stores bpf_get_netns_cookie() in a one-slot array is linked to a
/// throwaway cgroup, and a forked child joins that cgroup and `netns` and makes one socket.
/// (Before 5.14 a namespace's cookie is only handed out to BPF.)
fn cookie_from_a_program(netns: &Netns) -> anyhow::Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use aya_obj::generated::bpf_func_id as F;

    use crate::kernel::{
        Error as KernelError,
        probe::{ADD64_IMM, CALL, EXIT, MOV64_IMM, MOV64_REG, insn, load},
    };
    crate::kernel::probe::raise_memlock();
    // BPF_MAP_CREATE: array, 4-byte key, 8-byte value, one entry.
    let mut map_attr = [2u32, 4, 8, 1, 0, 0, 0, 0];
    let map =
        crate::kernel::link::sys_bpf(aya_obj::generated::bpf_cmd::BPF_MAP_CREATE, &mut map_attr)
            .map_err(|source| KernelError::CreateMap {
                map: "a one-slot array map",
                source,
            })?;
    // SAFETY: a new fd the kernel gave us.
    let map = unsafe { OwnedFd::from_raw_fd(map as i32) };
    let fd = map.as_raw_fd();
    let insns = [
        insn(MOV64_REG, 6, 1, 0, 0),
        insn(MOV64_REG, 1, 6, 0, 0),
        insn(CALL, 0, 0, 0, 122),  // bpf_get_netns_cookie(ctx)
        insn(0x7b, 10, 0, -8, 0),  // *(u64 *)(fp - 8) = r0
        insn(0x62, 10, 0, -12, 0), // *(u32 *)(fp - 12) = 0
        insn(0x18, 1, 1, 0, fd),   // r1 = the map (ld_imm64, BPF_PSEUDO_MAP_FD)
        0,
        insn(MOV64_REG, 2, 10, 0, 0),
        insn(ADD64_IMM, 2, 0, 0, -12),
        insn(MOV64_REG, 3, 10, 0, 0),
        insn(ADD64_IMM, 3, 0, 0, -8),
        insn(MOV64_IMM, 4, 0, 0, 0),
        insn(CALL, 0, 0, 0, F::BPF_FUNC_map_update_elem as i32),
        insn(MOV64_IMM, 0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ];
    let prog = load(9, 2, &insns, 0).map_err(|source| KernelError::LoadInsns {
        program: "the cookie reader",
        source,
    })?;
    let dir = crate::binding::cgroup::cgroup2_mount()?
        .join(format!("bindguard-cookie-{}", std::process::id()));
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = fs::remove_dir(self.0);
        }
    }
    let _remove = Remove(&dir);
    let cgroup = File::open(&dir)?;
    let _link = crate::kernel::link::create_cgroup_link(
        prog.as_fd(),
        cgroup.as_fd(),
        aya_obj::generated::bpf_attach_type::BPF_CGROUP_INET_SOCK_CREATE,
    )
    .map_err(|source| KernelError::Link {
        program: "the cookie reader",
        source,
    })?;
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    let (procs, ns) = (procs.as_raw_fd(), netns.file.as_raw_fd());
    // SAFETY: the child only makes system calls (async-signal-safe) and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: plain system calls on fds the parent opened.
        unsafe {
            let ok = libc::write(procs, b"0".as_ptr().cast(), 1) == 1
                && libc::setns(ns, libc::CLONE_NEWNET) == 0
                && libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) >= 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        anyhow::bail!("the child that makes a socket in {} failed", netns.label);
    }
    let (key, mut value) = (0u32, 0u64);
    #[repr(C)]
    struct Elem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let mut attr = Elem {
        map_fd: fd as u32,
        _pad: 0,
        key: (&key as *const u32) as u64,
        value: (&mut value as *mut u64) as u64,
        flags: 0,
    };
    crate::kernel::link::sys_bpf(aya_obj::generated::bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr)
        .map_err(|source| KernelError::ReadMap {
            map: "the cookie reader's map",
            source,
        })?;
    if value == 0 {
        anyhow::bail!("the cookie reader saw no socket");
    }
    Ok(value)
}
