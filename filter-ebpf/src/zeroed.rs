//! Zeroed values written a word at a time. A plain zero-initialisation (`Peer::empty()`, a
//! struct with `_pad: [0; 6]`) is merged by LLVM into a `memset`, and bpf-linker asks LLVM to
//! expand only `memcpy` inline (in order, for the verifier): a `memset` stays a call to the
//! compiler's generic one, a loop of byte stores — 64 iterations for a `Peer`, on the path
//! of every new source. Volatile stores are never merged into one.

use core::mem::{MaybeUninit, align_of, size_of};

/// Zeroes `v` in place and returns it, initialised. `T` must be whole 8-byte words (checked
/// when built) and valid all-zero (plain integers, as every map value type here). In place,
/// not returned by value: a zeroed value moved into its variable was merged back into a
/// `memset` of that variable.
#[inline(always)]
pub fn zeroed<T>(v: &mut MaybeUninit<T>) -> &mut T {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let words = v.as_mut_ptr().cast::<u64>();
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: word `i` lies inside `v`, which is aligned for u64 (checked above).
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte was written, and an all-zero `T` is valid (the caller's promise).
    unsafe { v.assume_init_mut() }
}
