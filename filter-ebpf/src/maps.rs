//! Every map of the datapath. Names match `filter_common::map_names` (checked by a
//! filter-user unit test); sizes are the defaults, which userspace overrides at load time.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use filter_common::{
    CacheCtl, CacheSlot, Counter, DatapathConfig, LIST_FILTER_WORDS, ListIndex, ListKey, ListValue,
    NewSources, Peer, default_sizes,
};

/// Runtime configuration, one element; all-zero means "screen nothing".
#[map(name = "CONFIG")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

/// Per-CPU outcome counters indexed by [`Counter`].
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Per-CPU hit counters of list entries, indexed by `ListValue::slot`: a counter per CPU never
/// bounces a cache line between CPUs, however many sources one wide prefix covers.
#[map(name = "HITS")]
pub static HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(default_sizes::HITS, 0);

/// New unknown peers, for the daemon to resolve.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(default_sizes::EVENTS_BYTES, 0);

/// This CPU's new-peer event budget (see `slow::emit`).
#[map(name = "EVENT_BUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

/// One CPU's event budget: a token bucket for first SYNs and one for the rest
/// (retransmits, returning sources).
#[repr(C)]
pub struct EventBudget {
    pub first: Bucket,
    pub again: Bucket,
}

/// A token bucket kept as credit time.
#[repr(C)]
pub struct Bucket {
    /// Credit in ns of the event interval (at most a second's worth).
    pub credit_ns: u64,
    /// When the credit was last topped up (CLOCK_MONOTONIC ns).
    pub last_ns: u64,
}

/// The prefix lengths each list uses, longest first (one element).
#[map(name = "LIST_INDEX")]
pub static LIST_INDEX: Array<ListIndex> = Array::with_max_entries(1, 0);

/// The list filter (see `filter_common::LIST_FILTER_BITS`): which list keys may be present.
#[map(name = "LIST_FILTER")]
pub static LIST_FILTER: Array<u64> = Array::with_max_entries(LIST_FILTER_WORDS, 0);

// The lists: one hash per family keyed by (table, length, network). Allocated on use, so a
// large maximum costs only the bucket array while empty.
#[map(name = "LISTS_V4")]
pub static LISTS_V4: HashMap<ListKey<[u8; 4]>, ListValue> =
    HashMap::with_max_entries(default_sizes::LISTS, BPF_F_NO_PREALLOC);
#[map(name = "LISTS_V6")]
pub static LISTS_V6: HashMap<ListKey<[u8; 16]>, ListValue> =
    HashMap::with_max_entries(default_sizes::LISTS, BPF_F_NO_PREALLOC);

// One entry per source with a verdict: the verdict, the decision cached from it, its token
// bucket. Only userspace creates them (the datapath writes into them in place), so no flood
// of new sources can push a verdict out. LRU: more verdicts than room push out the least
// recently seen, whose next SYN is then looked up again.
#[map(name = "PEERS_V4")]
pub static PEERS_V4: LruHashMap<[u8; 4], Peer> =
    LruHashMap::with_max_entries(default_sizes::PEERS, 0);
#[map(name = "PEERS_V6")]
pub static PEERS_V6: LruHashMap<[u8; 16], Peer> =
    LruHashMap::with_max_entries(default_sizes::PEERS, 0);

// One entry per source without a verdict that the datapath keeps state for: unknown or held
// (first contact, last report), decided by a list (the cached decision, a limit feed's token
// bucket). Only the datapath creates them. LRU: a flood of new sources pushes out the least
// recently seen; what bounds a hold then is `SEEN_RATE` (see `churn`).
#[map(name = "SEEN_V4")]
pub static SEEN_V4: LruHashMap<[u8; 4], Peer> =
    LruHashMap::with_max_entries(default_sizes::SEEN, 0);
#[map(name = "SEEN_V6")]
pub static SEEN_V6: LruHashMap<[u8; 16], Peer> =
    LruHashMap::with_max_entries(default_sizes::SEEN, 0);

/// New sources the seen maps took, this second and the last (one element, every CPU).
#[map(name = "SEEN_RATE")]
pub static SEEN_RATE: Array<NewSources> = Array::with_max_entries(1, 0);

/// The decision cache (see `filter_common::cache`). Mmapable only for the layout that brings:
/// the values start on a page, so every 64-byte slot is exactly one cache line.
#[map(name = "CACHE")]
pub static CACHE: Array<CacheSlot> = Array::with_max_entries(default_sizes::PEERS, BPF_F_MMAPABLE);

/// The cache's generation and size, one element; all-zero (before userspace writes it)
/// means no cache.
#[map(name = "CACHE_CTL")]
pub static CACHE_CTL: Array<CacheCtl> = Array::with_max_entries(1, 0);

/// Bumps one outcome counter on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and BPF programs are not preempted on a CPU mid-run.
        unsafe { *slot += 1 };
    }
}

/// Bumps a list entry's hit counter on this CPU.
#[inline(always)]
pub fn hit(slot: u32) {
    if let Some(c) = HITS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, as above.
        unsafe { *c += 1 };
    }
}
