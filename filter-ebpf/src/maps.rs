//! Every map of the datapath. Names match `filter_common::map_names` (checked by a
//! filter-user unit test); sizes are the defaults, which userspace overrides at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use filter_common::{Counter, DatapathConfig, ListEntry, Seen, Verdict, default_sizes};

/// Runtime configuration, one element; all-zero means "screen nothing".
#[map(name = "CONFIG")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

/// Per-CPU outcome counters indexed by [`Counter`].
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// New unknown peers, for the daemon to resolve.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(default_sizes::EVENTS_BYTES, 0);

// Allow and deny lists are LPM tries so one entry can cover a CIDR; they are allocated on
// use (BPF_F_NO_PREALLOC, which the trie type requires), so a large max costs nothing idle.
#[map(name = "ALLOW_V4")]
pub static ALLOW_V4: LpmTrie<[u8; 4], ListEntry> =
    LpmTrie::with_max_entries(default_sizes::ALLOW, 0);
#[map(name = "ALLOW_V6")]
pub static ALLOW_V6: LpmTrie<[u8; 16], ListEntry> =
    LpmTrie::with_max_entries(default_sizes::ALLOW, 0);
#[map(name = "DENY_V4")]
pub static DENY_V4: LpmTrie<[u8; 4], ListEntry> = LpmTrie::with_max_entries(default_sizes::DENY, 0);
#[map(name = "DENY_V6")]
pub static DENY_V6: LpmTrie<[u8; 16], ListEntry> =
    LpmTrie::with_max_entries(default_sizes::DENY, 0);

// Verdicts, seen-peers and token buckets are LRU hashes: under a flood of new sources the
// oldest entries are evicted instead of inserts failing. Losing a verdict only costs a
// re-lookup; losing a bucket only resets that source's rate.
#[map(name = "VERDICTS_V4")]
pub static VERDICTS_V4: LruHashMap<[u8; 4], Verdict> =
    LruHashMap::with_max_entries(default_sizes::VERDICTS, 0);
#[map(name = "VERDICTS_V6")]
pub static VERDICTS_V6: LruHashMap<[u8; 16], Verdict> =
    LruHashMap::with_max_entries(default_sizes::VERDICTS, 0);
#[map(name = "SEEN_V4")]
pub static SEEN_V4: LruHashMap<[u8; 4], Seen> =
    LruHashMap::with_max_entries(default_sizes::SEEN, 0);
#[map(name = "SEEN_V6")]
pub static SEEN_V6: LruHashMap<[u8; 16], Seen> =
    LruHashMap::with_max_entries(default_sizes::SEEN, 0);
/// GCRA "theoretical arrival time" per limited source.
#[map(name = "BUCKETS_V4")]
pub static BUCKETS_V4: LruHashMap<[u8; 4], u64> =
    LruHashMap::with_max_entries(default_sizes::BUCKETS, 0);
#[map(name = "BUCKETS_V6")]
pub static BUCKETS_V6: LruHashMap<[u8; 16], u64> =
    LruHashMap::with_max_entries(default_sizes::BUCKETS, 0);

/// Bumps one outcome counter on this CPU.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and BPF programs are not preempted on a CPU mid-run.
        unsafe { *slot += 1 };
    }
}
