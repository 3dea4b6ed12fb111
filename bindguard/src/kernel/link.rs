//! bpf_link calls made directly: creating cgroup links (always BPF_LINK_CREATE, never the
//! legacy BPF_PROG_ATTACH that unprivileged processes can detach on 6.5+), pinning them, and
//! reading which cgroup a pinned link is attached to (none once the cgroup was removed and
//! the kernel auto-detached it). aya 0.14 cannot pin every cgroup link type and hides the
//! link's cgroup id.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use std::os::fd::{AsFd, BorrowedFd};

use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_link_info};

/// What the kernel says about one pinned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub link_id: u32,
    pub program_id: u32,
    /// The cgroup the link is attached to; None when the cgroup is gone (link auto-detached).
    pub cgroup_id: Option<u64>,
}

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub(crate) fn sys_bpf<T>(cmd: bpf_cmd, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix for `cmd` of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// BPF_LINK_CREATE: attaches `prog` to `cgroup` at `attach_type`; detached when the last
/// reference (fd or pin) goes.
pub fn create_cgroup_link(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: bpf_attach_type,
) -> std::io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: attach_type as u32,
        flags: 0,
    };
    let fd = sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// BPF_LINK_DETACH (5.9) of the link pinned at `path`: the kernel detaches it from its cgroup
/// before returning. Unpinning alone drops the last reference, and the kernel frees (and so
/// detaches) a link from a workqueue: under load the programs ran on for a while after
/// `detach` had returned.
pub fn detach_pinned(path: &Path) -> std::io::Result<()> {
    let fd = open_pinned(path)?;
    let mut attr = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    sys_bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).map(|_| ())
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// BPF_OBJ_PIN: pins the object behind `fd` at `path` on bpffs.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c = c_path(path)?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// BPF_OBJ_GET: an fd for the object pinned at `path`.
pub fn open_pinned(path: &Path) -> std::io::Result<OwnedFd> {
    let c = c_path(path)?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_OBJ_GET_INFO_BY_FD: what the kernel says about the object behind `fd`, as `T`
/// (bpf_link_info, bpf_prog_info, bpf_map_info).
///
/// # Safety
/// `T` must be the plain-data info struct of the kind of object `fd` refers to.
pub unsafe fn info_by_fd<T>(fd: BorrowedFd<'_>) -> std::io::Result<T> {
    // SAFETY: the info structs are plain data; all-zero is a valid value.
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFdAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: (&mut info as *mut T) as u64,
    };
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// Reads the state of the link pinned at `path`.
pub fn pinned_state(path: &Path) -> std::io::Result<LinkState> {
    let fd = open_pinned(path)?;
    // SAFETY: a pinned link's fd, read as bpf_link_info.
    let info: bpf_link_info = unsafe { info_by_fd(fd.as_fd())? };
    // SAFETY: the kernel filled the cgroup member for cgroup links, the only kind we pin.
    let cgroup_id = unsafe { info.__bindgen_anon_1.cgroup.cgroup_id };
    Ok(LinkState {
        link_id: info.id,
        program_id: info.prog_id,
        cgroup_id: (cgroup_id != 0).then_some(cgroup_id),
    })
}
