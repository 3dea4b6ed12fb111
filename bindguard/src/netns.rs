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

    /// The namespace's cookie, as bpf_get_netns_cookie() reports it in programs.
    pub fn cookie(&self) -> anyhow::Result<u64> {
        self.run(cookie_of_current_thread)?
            .with_context(|| format!("reading the cookie of {}", self.label))
    }
}

/// SO_NETNS_COOKIE of a socket made on this thread (Linux 5.14+). An AF_UNIX socket is used
/// so that a bound cgroup, which refuses INET sockets in foreign namespaces, cannot interfere.
pub fn cookie_of_current_thread() -> std::io::Result<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointer and length for SO_NETNS_COOKIE's u64.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
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
