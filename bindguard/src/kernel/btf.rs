//! The running kernel's type information (/sys/kernel/btf/vmlinux): where the fields the BPF
//! LSM programs follow live in this build of the kernel.
//!
//! Hand-written because the two parsers at hand do not fit: aya-obj keeps struct members
//! crate-private, and btf-rs is LGPL. Only what [`KernelLayout`] needs is read: struct
//! members by name, looking through anonymous structs and unions.

use anyhow::{Context as _, bail};
use bindguard_common::KernelLayout;

use crate::kernel::hooks::Hook;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits from the start of the enclosing struct.
    bits: u32,
}

/// One type's header; members are decoded from `data` only when asked for.
#[derive(Debug, Clone, Copy)]
struct Type {
    name: u32,
    info: u32,
    /// The referenced type for modifiers and typedefs.
    ty: u32,
    /// Where the kind-specific data after the header starts, in the type section.
    extra: usize,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
}

/// The parsed type section: an index of every type, enough to find member offsets.
pub struct Btf {
    data: Vec<u8>,
    /// Byte ranges of the type and string sections in `data`.
    types_at: usize,
    strings_at: (usize, usize),
    types: Vec<Type>,
}

fn u32_at(b: &[u8], at: usize) -> anyhow::Result<u32> {
    let bytes = b
        .get(at..at + 4)
        .context("BTF is truncated")?
        .try_into()
        .expect("4 bytes");
    Ok(u32::from_le_bytes(bytes))
}

impl Btf {
    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        Self::index(data.to_vec())
    }

    fn index(data: Vec<u8>) -> anyhow::Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
        let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
        let types_at = hdr_len + type_off;
        let types_raw = data
            .get(types_at..types_at + type_len)
            .context("BTF type section out of bounds")?;
        let strings_at = (hdr_len + str_off, hdr_len + str_off + str_len);
        data.get(strings_at.0..strings_at.1)
            .context("BTF string section out of bounds")?;
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            info: 0,
            ty: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < types_raw.len() {
            let t = Type {
                name: u32_at(types_raw, at)?,
                info: u32_at(types_raw, at + 4)?,
                ty: u32_at(types_raw, at + 8)?,
                extra: at + 12,
            };
            // Bytes that follow the common header, by kind (include/uapi/linux/btf.h).
            let extra = match t.kind() {
                1 | 14 | 17 => 4,                                    // INT, VAR, DECL_TAG
                3 => 12,                                             // ARRAY
                KIND_STRUCT | KIND_UNION | 15 | 19 => t.vlen() * 12, // + DATASEC, ENUM64
                6 | 13 => t.vlen() * 8,                              // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                other => bail!("unknown BTF kind {other}"),
            };
            at = t.extra + extra;
            types.push(t);
        }
        Ok(Self {
            data,
            types_at,
            strings_at,
            types,
        })
    }

    fn members(&self, t: &Type) -> Vec<Member> {
        let raw = &self.data[self.types_at..];
        let bitfields = t.info >> 31 == 1;
        (0..t.vlen())
            .filter_map(|i| {
                let m = t.extra + i * 12;
                let offset = u32_at(raw, m + 8).ok()?;
                Some(Member {
                    name: u32_at(raw, m).ok()?,
                    ty: u32_at(raw, m + 4).ok()?,
                    bits: if bitfields {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    },
                })
            })
            .collect()
    }

    /// The first struct called `name` that has members (forward declarations are skipped).
    fn struct_named(&self, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            let t = &self.types[id as usize];
            t.kind() == KIND_STRUCT && t.vlen() > 0 && self.string(t.name) == name
        })
    }

    pub fn from_sys_fs() -> anyhow::Result<Self> {
        let data = std::fs::read(VMLINUX).with_context(|| format!("reading {VMLINUX}"))?;
        Self::index(data).with_context(|| format!("parsing {VMLINUX}"))
    }

    fn string(&self, off: u32) -> &str {
        let strings = &self.data[self.strings_at.0..self.strings_at.1];
        let rest = strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind(),
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.ty
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `name` inside the struct or union `id`, searching anonymous members.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if depth > 8 || !matches!(t.kind(), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let members = self.members(t);
        for m in &members {
            if m.name != 0 && self.string(m.name) == name {
                return Some((m.bits / 8, m.ty));
            }
        }
        for m in members.iter().filter(|m| m.name == 0) {
            if let Some((off, ty)) = self.find_member(m.ty, name, depth + 1) {
                return Some((m.bits / 8 + off, ty));
            }
        }
        None
    }

    /// Byte offset of a dotted member path (`__sk_common.skc_family`) in `struct name`.
    pub fn offset(&self, strukt: &str, path: &str) -> Option<u32> {
        let mut id = self.struct_named(strukt)?;
        let mut total = 0;
        for part in path.split('.') {
            let (off, ty) = self.find_member(id, part, 0)?;
            total += off;
            id = ty;
        }
        Some(total)
    }

    /// Whether the kernel has cgroup/connect_unix (its context gained `uaddrlen` with it, in
    /// 6.7) with the layout the program reads: the address at 8, its length at 32.
    pub fn has_unix_sock_addr(&self) -> bool {
        self.offset("bpf_sock_addr_kern", "uaddr") == Some(8)
            && self.offset("bpf_sock_addr_kern", "uaddrlen") == Some(32)
    }

    /// The type id of the function `name` (kind FUNC), as BPF_PROG_LOAD's attach_btf_id.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        (1..self.types.len() as u32).find(|&id| {
            self.types[id as usize].kind() == 12
                && self.string(self.types[id as usize].name) == name
        })
    }

    /// Where the fields the LSM programs read live in this kernel. A missing field stays
    /// [`KernelLayout::MISSING`] (the programs then refuse: fail closed).
    pub fn kernel_layout(&self) -> KernelLayout {
        let get = |s: &str, p: &str| self.offset(s, p).unwrap_or(KernelLayout::MISSING);
        // thread_info is embedded in task_struct (CONFIG_THREAD_INFO_IN_TASK on x86 and arm64).
        let (field, compat_mask) = COMPAT_MARKER;
        let task_compat = match (
            self.offset("task_struct", "thread_info"),
            field.and_then(|f| self.offset("thread_info", f)),
        ) {
            (Some(a), Some(b)) => a + b,
            _ => KernelLayout::MISSING,
        };
        KernelLayout {
            file_f_inode: get("file", "f_inode"),
            file_private_data: get("file", "private_data"),
            inode_i_mode: get("inode", "i_mode"),
            socket_sk: get("socket", "sk"),
            sock_family: get("sock", "__sk_common.skc_family"),
            sock_bound_dev_if: get("sock", "__sk_common.skc_bound_dev_if"),
            sock_net: get("sock", "__sk_common.skc_net"),
            net_cookie: get("net", "net_cookie"),
            sock_cgroup: get("sock", "sk_cgrp_data.cgroup"),
            cgroup_level: get("cgroup", "level"),
            cgroup_ancestors: get("cgroup", "ancestors"),
            cgroup_kn: get("cgroup", "kn"),
            kernfs_node_id: get("kernfs_node", "id"),
            task_compat,
            compat_mask,
            uring_cmd_op: get("io_uring_cmd", "cmd_op"),
            uring_cmd_sqe: get("io_uring_cmd", "sqe"),
            sqe_level: get("io_uring_sqe", "level"),
            sqe_optname: get("io_uring_sqe", "optname"),
            task_cgroups: get("task_struct", "cgroups"),
            css_set_dfl_cgrp: get("css_set", "dfl_cgrp"),
            task_tgid: get("task_struct", "tgid"),
            features: 0,
        }
    }
}

/// The `thread_info` field and bits that mark a task in a 32-bit (compat) syscall on the
/// architecture this binary runs on (the kernel's, since bindguard runs natively):
/// x86's `status` & TS_COMPAT (arch/x86/include/asm/thread_info.h); arm64's `flags` &
/// TIF_32BIT, bit 22 in 6.1 and 6.12 (arch/arm64/include/asm/thread_info.h; `flags` is an
/// unsigned long, its low word first on little-endian). in_compat_syscall() tests exactly
/// these. Elsewhere unknown: the program then treats every caller as 32-bit (fail closed).
#[cfg(target_arch = "x86_64")]
const COMPAT_MARKER: (Option<&str>, u32) = (Some("status"), 0x0002);
#[cfg(target_arch = "aarch64")]
const COMPAT_MARKER: (Option<&str>, u32) = (Some("flags"), 1 << 22);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const COMPAT_MARKER: (Option<&str>, u32) = (None, 0);

/// The compat marker's name as `missing_fields` reports it.
#[cfg(target_arch = "aarch64")]
const COMPAT_FIELD: &str = "thread_info.flags";
#[cfg(not(target_arch = "aarch64"))]
const COMPAT_FIELD: &str = "thread_info.status";

/// The fields the LSM program of hook `hook` reads that this kernel's BTF does not have.
pub fn missing_fields_for(k: &KernelLayout, hook: Hook) -> Vec<&'static str> {
    let needs: &[&str] = match hook {
        Hook::LsmFileReceive => &[
            "file.f_inode",
            "file.private_data",
            "inode.i_mode",
            "socket.sk",
            "sock.skc_family",
            "sock.sk_cgrp_data.cgroup",
            "cgroup.level",
            "cgroup.ancestors",
            "cgroup.kn",
            "kernfs_node.id",
        ],
        Hook::LsmSetsockopt => &[COMPAT_FIELD],
        Hook::LsmPtrace => &[
            "task_struct.cgroups",
            "css_set.dfl_cgrp",
            "task_struct.tgid",
            "cgroup.level",
            "cgroup.ancestors",
            "cgroup.kn",
            "kernfs_node.id",
        ],
        Hook::LsmUringCmd => &[
            "io_uring_cmd.cmd_op",
            "io_uring_cmd.sqe",
            "io_uring_sqe.level",
            "io_uring_sqe.optname",
        ],
        // None of the fields `missing_fields` checks (the non-LSM ones are not BTF-typed).
        _ => &[],
    };
    missing_fields(k)
        .into_iter()
        .filter(|f| needs.contains(f))
        .collect()
}

/// The fields the LSM programs need that this kernel's BTF does not have.
pub fn missing_fields(k: &KernelLayout) -> Vec<&'static str> {
    let fields = [
        (COMPAT_FIELD, k.task_compat),
        ("file.f_inode", k.file_f_inode),
        ("file.private_data", k.file_private_data),
        ("inode.i_mode", k.inode_i_mode),
        ("socket.sk", k.socket_sk),
        ("sock.skc_family", k.sock_family),
        ("sock.sk_cgrp_data.cgroup", k.sock_cgroup),
        ("cgroup.level", k.cgroup_level),
        ("cgroup.ancestors", k.cgroup_ancestors),
        ("cgroup.kn", k.cgroup_kn),
        ("kernfs_node.id", k.kernfs_node_id),
        ("io_uring_cmd.cmd_op", k.uring_cmd_op),
        ("io_uring_cmd.sqe", k.uring_cmd_sqe),
        ("io_uring_sqe.level", k.sqe_level),
        ("io_uring_sqe.optname", k.sqe_optname),
        ("task_struct.cgroups", k.task_cgroups),
        ("css_set.dfl_cgrp", k.css_set_dfl_cgrp),
        ("task_struct.tgid", k.task_tgid),
    ];
    fields
        .iter()
        .filter(|(_, v)| *v == KernelLayout::MISSING)
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: struct inner { int a; int b; }; struct outer { int x; union { struct
    /// inner in; }; } — the anonymous union must be looked through.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0in\0".to_vec();
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int
        push(s("int"));
        push(1 << 24);
        push(4);
        push(32);
        // 2: struct inner { a@0, b@32 }
        push(s("inner"));
        push((4 << 24) | 2);
        push(8);
        push(s("a"));
        push(1);
        push(0);
        push(s("b"));
        push(1);
        push(32);
        // 3: union { in: inner }
        push(0);
        push((5 << 24) | 1);
        push(8);
        push(s("in"));
        push(2);
        push(0);
        // 4: struct outer { x@0, <anon>@64 }
        push(s("outer"));
        push((4 << 24) | 2);
        push(16);
        push(s("x"));
        push(1);
        push(0);
        push(0);
        push(3);
        push(64);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn members_are_found_through_anonymous_unions() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset("outer", "x"), Some(0));
        assert_eq!(btf.offset("outer", "in"), Some(8));
        assert_eq!(btf.offset("outer", "in.b"), Some(12));
        assert_eq!(btf.offset("outer", "nope"), None);
        assert_eq!(btf.offset("nope", "x"), None);
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn the_running_kernel_has_every_field() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let btf = match Btf::from_sys_fs() {
            Ok(btf) => btf,
            Err(e) if !ci => return eprintln!("SKIP: {e:#}"),
            Err(e) => panic!("CI=true and the kernel's BTF cannot be read: {e:#}"),
        };
        assert!(btf.func_id("bpf_lsm_socket_create").is_some());
        let k = btf.kernel_layout();
        assert_eq!(missing_fields(&k), Vec::<&str>::new(), "{k:?}");
        assert_eq!(k.task_compat % 4, 0, "{k:?}");
        assert_ne!(k.compat_mask, 0, "{k:?}");
    }
}
