//! Kernel ABI numbers the programs compare against (include/uapi/linux/*.h and friends), and
//! the two verdicts every cgroup program returns.

/// Return values of cgroup programs: 1 lets the operation (or packet) through; 0 refuses it
/// with EPERM (or drops the packet).
pub(crate) const ALLOW: i32 = 1;
pub(crate) const REFUSE: i32 = 0;

pub(crate) const SOL_SOCKET: i32 = 1;
pub(crate) const SO_PRIORITY: i32 = 12;
pub(crate) const SO_BINDTODEVICE: i32 = 25;
pub(crate) const SO_MARK: i32 = 36;
pub(crate) const SO_BINDTOIFINDEX: i32 = 62;
/// The loopback device has this ifindex in every network namespace.
pub(crate) const LOOPBACK_IFINDEX: u32 = 1;

pub(crate) const SOL_IP: i32 = 0;
pub(crate) const SOL_IPV6: i32 = 41;
pub(crate) const IP_ADD_MEMBERSHIP: i32 = 35;
pub(crate) const IP_DROP_MEMBERSHIP: i32 = 36;
pub(crate) const IP_ADD_SOURCE_MEMBERSHIP: i32 = 39;
/// MCAST_JOIN_GROUP .. MCAST_MSFILTER (RFC 3678), at SOL_IP and SOL_IPV6 alike.
pub(crate) const MCAST_FIRST: i32 = 42;
pub(crate) const MCAST_LAST: i32 = 48;
pub(crate) const IPV6_ADD_MEMBERSHIP: i32 = 20;
pub(crate) const IPV6_DROP_MEMBERSHIP: i32 = 21;
pub(crate) const IPV6_JOIN_ANYCAST: i32 = 27;
pub(crate) const IPV6_LEAVE_ANYCAST: i32 = 28;

pub(crate) const AF_UNIX: u32 = 1;
pub(crate) const AF_INET: u32 = 2;
pub(crate) const AF_INET6: u32 = 10;
pub(crate) const AF_NETLINK: u32 = 16;
pub(crate) const IPPROTO_MPTCP: u32 = 262;
pub(crate) const EPROTONOSUPPORT: i32 = 93;
pub(crate) const S_IFMT: u16 = 0o170000;
pub(crate) const S_IFSOCK: u16 = 0o140000;
/// io_uring_cmd.cmd_op for a socket setsockopt (include/uapi/linux/io_uring.h).
pub(crate) const SOCKET_URING_OP_SETSOCKOPT: u32 = 3;
/// include/uapi/asm-generic/ioctls.h: push a byte into a terminal's input; the console's
/// multiplexed ioctl (selection paste).
pub(crate) const TIOCSTI: u32 = 0x5412;
pub(crate) const TIOCLINUX: u32 = 0x541C;
