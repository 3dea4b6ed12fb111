//! Raw socket calls shared by `verify`'s probe and the test clients: making a socket and
//! reading or setting the SOL_SOCKET options a binding is about, and the network namespace
//! cookie (which the feature probes ask for too).

use std::os::fd::{FromRawFd, OwnedFd};

/// socket(2), close-on-exec.
pub fn new_socket(family: i32, kind: i32, proto: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An int-valued SOL_SOCKET option (SO_BINDTOIFINDEX, SO_MARK, SO_PRIORITY, ...).
pub fn get_int(fd: i32, opt: i32) -> std::io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid pointer and length for an int option; a bad fd is an error return.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v as u32)
}

/// setsockopt(SO_BINDTODEVICE, name); "" clears the binding.
pub fn set_bindtodevice(fd: i32, name: &str) -> std::io::Result<()> {
    // SAFETY: name's bytes and length; a bad fd is an error return.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SO_NETNS_COOKIE of a socket made on this thread (Linux 5.14+). An AF_UNIX socket is used
/// so that a bound cgroup, which refuses INET sockets in foreign namespaces, cannot interfere.
pub fn netns_cookie() -> std::io::Result<u64> {
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
