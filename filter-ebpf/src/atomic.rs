//! The three atomic instructions the datapath uses, on words of map values shared between
//! CPUs: compare-and-swap and exchange (BPF_CMPXCHG, BPF_XCHG: fully ordered) and an add
//! whose result is not read (BPF_ADD without BPF_FETCH, the one atomic the default BPF CPU
//! version has kept since the first). Core's `AtomicU64` has no read-modify-write on this
//! target (its spec declares no compare-and-swap), so these call the compiler's intrinsics.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd, atomic_xchg};

/// Writes `new` to `*word` if it holds `old`; returns what it held (equal to `old` on success).
///
/// # Safety
/// `word` points into a map value valid for this program run.
#[inline(always)]
pub unsafe fn cas(word: *mut u64, old: u64, new: u64) -> u64 {
    // SAFETY: the caller's.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, old, new)
            .0
    }
}

/// Writes `new` to `*word`; returns what it held.
///
/// # Safety
/// As [`cas`].
#[inline(always)]
pub unsafe fn swap(word: *mut u64, new: u64) -> u64 {
    // SAFETY: the caller's.
    unsafe { atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(word, new) }
}

/// Adds `n` to `*word` (one locked add; nothing is read back).
///
/// # Safety
/// As [`cas`].
#[inline(always)]
pub unsafe fn add(word: *mut u64, n: u64) {
    // SAFETY: the caller's. The result stays unread, so this is BPF_ADD without BPF_FETCH.
    let _ = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(word, n) };
}
