//! How fast new sources take entries in the seen maps, and whether a hold can still be
//! bounded. A held source is remembered by its entry there; under a flood of new sources the
//! LRU pushes the least recently seen out, and a held source pushed out before its hold ends
//! would be new again at its retransmit, held again, for as long as the flood lasts. So the
//! datapath counts new sources a tick of 1.07 s (`SEEN_RATE`, shared by every CPU) and holds
//! nobody while they come faster than `DatapathConfig::seen_new_per_tick_max`: first contact
//! then passes, as with `first_contact = "pass"`, counted as `unheld`.

use filter_common::{DatapathConfig, NewSources};

use crate::{atomic, maps};

/// Counts a source the seen maps take now (called once per source the slow path meets
/// without an entry). The first CPU into a new tick turns the count over; two CPUs racing at
/// the turn may lose a count or two, which a rate compared with half a map does not feel.
#[inline(always)]
pub fn count_new(now: u64) {
    let Some(r) = maps::SEEN_RATE.get_ptr_mut(0) else {
        return;
    };
    let tick = NewSources::tick_of(now);
    // SAFETY: `r` points into the map value, valid for this program run; its words are
    // changed only through atomics.
    unsafe {
        let was = core::ptr::read_volatile(&(*r).tick);
        if was != tick && atomic::cas(&raw mut (*r).tick, was, tick) == was {
            let this = atomic::swap(&raw mut (*r).this, 0);
            let last = if was + 1 == tick { this } else { 0 };
            core::ptr::write_volatile(&raw mut (*r).last, last);
        }
        atomic::add(&raw mut (*r).this, 1);
    }
}

/// Whether new sources come too fast for a hold to be bounded (see the module).
#[inline(always)]
pub fn too_fast(cfg: &DatapathConfig, now: u64) -> bool {
    if cfg.seen_new_per_tick_max == 0 {
        return false;
    }
    match maps::SEEN_RATE.get(0) {
        Some(r) => r.per_tick(now) > cfg.seen_new_per_tick_max,
        None => false,
    }
}
