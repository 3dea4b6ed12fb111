//! What every program shares: the loader-filled `KERNEL` global, the maps the loader finds by
//! name (`POLICY`, `STATS`, `EVENTS`), and counting and reporting a refusal.

use aya_ebpf::{
    bindings::bpf_map_def,
    helpers::generated::bpf_get_local_storage,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::RingBuf,
};
use bindguard_common::{
    Counters, EVENT_BURST, EVENT_REFILL_NS, Event, KernelLayout, Policy, features,
};

/// Filled in by the loader from the running kernel's BTF (a read-only global, so the verifier
/// sees constants). The sentinel keeps it in .rodata.
#[unsafe(no_mangle)]
static KERNEL: KernelLayout = KernelLayout::UNKNOWN;

#[inline(always)]
pub(crate) fn kernel() -> KernelLayout {
    // SAFETY: a plain read of our own global; volatile so the loader's value is used.
    unsafe { core::ptr::read_volatile(&KERNEL) }
}

/// A legacy map definition in the `maps` section for a cgroup storage map keyed by a bare
/// `u64` cgroup id. aya-ebpf's `CgroupStorage` uses the 16-byte `bpf_cgroup_storage_key`,
/// which makes the kernel keep one value per (cgroup, attach type); an 8-byte key makes one
/// value per cgroup, shared by all of a binding's programs, so userspace writes the policy once.
#[repr(transparent)]
pub(crate) struct SharedStorage(core::cell::UnsafeCell<bpf_map_def>);

// SAFETY: the definition is only read by the loader; programs pass its address to a helper.
unsafe impl Sync for SharedStorage {}

const BPF_MAP_TYPE_CGROUP_STORAGE: u32 = 19;
const BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: u32 = 21;

impl SharedStorage {
    const fn new<V>(map_type: u32) -> Self {
        Self(core::cell::UnsafeCell::new(bpf_map_def {
            type_: map_type,
            key_size: 8,
            value_size: core::mem::size_of::<V>() as u32,
            max_entries: 0,
            map_flags: 0,
            id: 0,
            pinning: 0,
        }))
    }

    /// The value of the cgroup this program is attached to. Never null: the kernel creates the
    /// storage (zeroed) when the first program using the map is linked to the cgroup.
    #[inline(always)]
    pub(crate) fn get<V>(&self) -> *mut V {
        unsafe { bpf_get_local_storage(self.0.get().cast(), 0) }.cast()
    }
}

/// The binding's [`Policy`]. All zero until userspace writes it, and all zero refuses every
/// socket (fail closed).
#[unsafe(link_section = "maps")]
#[unsafe(export_name = "POLICY")]
pub(crate) static POLICY: SharedStorage = SharedStorage::new::<Policy>(BPF_MAP_TYPE_CGROUP_STORAGE);

/// The binding's [`Counters`], one copy per CPU.
#[unsafe(link_section = "maps")]
#[unsafe(export_name = "STATS")]
pub(crate) static STATS: SharedStorage =
    SharedStorage::new::<Counters>(BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// A build-time variant (BINDGUARD_EBPF_VARIANT) whose object differs from the normal one, for
/// the upgrade test: a second bindguard build with really different programs.
#[cfg(bindguard_variant)]
#[unsafe(no_mangle)]
static VARIANT: u32 = 1;

#[inline(always)]
pub(crate) fn policy() -> &'static Policy {
    // SAFETY: the storage outlives the program run; the kernel never frees it under us.
    unsafe { &*POLICY.get::<Policy>() }
}

#[inline(always)]
pub(crate) fn count(field: fn(&mut Counters) -> &mut u64) {
    // Per-CPU slot and programs do not nest on one CPU here: a plain add is race-free.
    unsafe { *field(&mut *STATS.get::<Counters>()) += 1 };
}

/// Whose context a program runs in, for the task fields of an event.
#[derive(Clone, Copy)]
pub(crate) enum Task {
    /// Softirq (ingress): no task.
    None,
    /// A cgroup program family: the task helpers the kernel allows it (KERNEL.features).
    Family(u32),
    /// BPF LSM programs may call every task helper.
    Lsm,
}

impl Task {
    #[inline(always)]
    fn allows(self, helper: u32) -> bool {
        match self {
            Task::None => false,
            Task::Family(shift) => (kernel().features >> shift) & helper != 0,
            Task::Lsm => true,
        }
    }
}

/// Takes a token from the binding's per-CPU event bucket ([`EVENT_BURST`] deep, one more every
/// [`EVENT_REFILL_NS`]); counts the event as dropped when there is none.
#[inline(always)]
fn admit(now: u64) -> bool {
    // Per-CPU slot; a softirq interrupting a task's program on this CPU can at worst lose one
    // refill or let one extra event through.
    let c = unsafe { &mut *STATS.get::<Counters>() };
    let elapsed = now.wrapping_sub(c.event_refill_ns);
    if elapsed >= EVENT_BURST * EVENT_REFILL_NS {
        c.event_tokens = EVENT_BURST;
        c.event_refill_ns = now;
    } else {
        let add = elapsed / EVENT_REFILL_NS;
        if add > 0 {
            let tokens = c.event_tokens + add;
            c.event_tokens = if tokens > EVENT_BURST {
                EVENT_BURST
            } else {
                tokens
            };
            c.event_refill_ns += add * EVENT_REFILL_NS;
        }
    }
    if c.event_tokens == 0 {
        c.events_dropped += 1;
        return false;
    }
    c.event_tokens -= 1;
    true
}

/// Records a refusal for `bindguard monitor`, within the binding's rate limit ([`admit`]). A
/// full ring buffer loses the event, never the enforcement; either loss is counted in
/// `events_dropped`. Task fields a kernel does not let this program type read stay 0.
#[inline(always)]
pub(crate) fn report(hook: u32, value: u32, task: Task) {
    report_asked(hook, value, task, [0; 16]);
}

/// [`report`], with what the refused call asked for ([`Event::asked`]).
#[inline(always)]
pub(crate) fn report_asked(hook: u32, value: u32, task: Task, asked: [u8; 16]) {
    #[cfg(bindguard_variant)]
    let _ = unsafe { core::ptr::read_volatile(&VARIANT) };
    let now = unsafe { bpf_ktime_get_ns() };
    if !admit(now) {
        return;
    }
    let pid = if task.allows(features::PID_TGID) {
        (bpf_get_current_pid_tgid() >> 32) as u32
    } else {
        0
    };
    let cgroup_id = if task.allows(features::CGROUP_ID) {
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        0
    };
    let comm = if task.allows(features::COMM) {
        bpf_get_current_comm().unwrap_or([0; 16])
    } else {
        [0; 16]
    };
    let event = Event {
        ktime_ns: now,
        cgroup_id,
        pid,
        hook,
        value,
        _pad: 0,
        comm,
        binding: policy().cgroup_id,
        asked,
    };
    if EVENTS.output::<Event>(&event, 0).is_err() {
        count(|c| &mut c.events_dropped);
    }
}
