//! The one decision function both entry points share: given a frame, pass or drop it and
//! count the outcome.
//!
//! For a subject SYN the source's slot in the decision cache is read first ([`crate::cache`]);
//! when it holds this source's decision, whole, under the cache's current generation and
//! before its deadline, that decision is applied. Otherwise the source's [`Peer`] entry is
//! looked up (its verdict's in `PEERS`, else the datapath's own in `SEEN`); when it holds a
//! decision made under the current generation of the lists (`DatapathConfig::list_gen`) that
//! has not run out (`until_jiffies`), that decision is applied and copied into the cache
//! slot. Otherwise [`crate::slow`] walks the lists and the
//! verdict in order of precedence (allow → deny → limit → the source's verdict → a prefix
//! verdict → unknown), applies the result and caches it in the entry. Every path applies a
//! decision through [`crate::decision::act`].

use filter_common::{Counter, DatapathConfig, FAMILY_V4, FLAG_OBSERVE, cacheable_v6};

use crate::{
    cache::{self, Slot},
    clock,
    decision::act,
    family::{Family, V4, V6},
    maps::{self, count},
    parse::{Parsed, Source},
    slow::{self, Ingress},
};

/// What happens to the frame; each entry point maps it to its own return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Pass,
    Drop,
}

/// Screens one frame, as its header walk found it ([`crate::parse::parse`]). Never drops
/// anything that is not a SYN to a configured port.
#[inline(always)]
pub fn screen<I: Ingress>(parsed: Parsed, ingress: I) -> Fate {
    let (src, dst_port) = match parsed {
        Parsed::Syn { src, dst_port } => (src, dst_port),
        Parsed::Other => return pass(Counter::PassedNotSubject),
        Parsed::Fragment => return pass(Counter::Fragment),
        Parsed::Malformed => return pass(Counter::Malformed),
    };
    let Some(cfg) = maps::CONFIG.get(0) else {
        return pass(Counter::PassedNotSubject);
    };
    if !cfg.screens(dst_port) {
        return pass(Counter::PassedNotSubject);
    }
    let jiffies = clock::jiffies(cfg);
    // The daemon stopped beating (dead, hung, or gone while a netlink tc filter stays
    // attached): decide nothing, pass everything. Mail flows unscreened rather than not at all.
    if clock::stale(cfg, jiffies) {
        return pass(Counter::PassedStale);
    }
    // The address is copied out of the frame here: from then on, every path the parser took
    // to it looks the same to the verifier, which walks what follows once, not once per path
    // (a third of the instructions it walked when the decision read the frame).
    match src {
        // SAFETY: the address lies inside the frame (checked by the parser).
        Source::V4(addr) => decide::<V4, I>(unsafe { *addr }, dst_port, ingress, cfg, jiffies),
        Source::V6(addr) => decide::<V6, I>(unsafe { *addr }, dst_port, ingress, cfg, jiffies),
    }
}

/// Counts the outcome and returns what it does with the frame (observe mode passes what
/// would be dropped, and counts that too). `drop` is a constant where the outcome is, so
/// the cached path tests nothing to know it.
#[inline(always)]
fn finish(cfg: &DatapathConfig, counter: Counter, drop: bool) -> Fate {
    count(counter);
    if !drop {
        return Fate::Pass;
    }
    if cfg.flags & FLAG_OBSERVE != 0 {
        count(Counter::ObservePassed);
        return Fate::Pass;
    }
    Fate::Drop
}

/// The outcomes that drop the frame; every other passes it.
const DROPS: u32 = 1 << Counter::DroppedDeny as u32
    | 1 << Counter::DroppedVerdict as u32
    | 1 << Counter::DroppedFeed as u32
    | 1 << Counter::Limited as u32
    | 1 << Counter::Held as u32;

#[inline(always)]
fn drops(counter: Counter) -> bool {
    DROPS >> (counter as u32) & 1 != 0
}

#[inline(always)]
fn pass(counter: Counter) -> Fate {
    count(counter);
    Fate::Pass
}

/// The source's cached decision if it still holds — from the cache slot, else from its
/// entry (copied into the slot then) — else the slow path.
#[inline(always)]
fn decide<F: Family, I: Ingress>(
    addr: F::Addr,
    dst_port: u16,
    ingress: I,
    cfg: &DatapathConfig,
    jiffies: u64,
) -> Fate {
    let key = F::cache_key(addr);
    let addr = &addr;
    // An IPv4-mapped IPv6 source would share its IPv4 twin's slot: it goes without.
    let slot = Slot::find(key, F::FAMILY == FAMILY_V4 || cacheable_v6(key));
    let mut holds_source = false;
    if let Some(slot) = &slot {
        let seen = slot.read();
        if let Some((counter, drop)) = slot.apply::<F>(&seen, addr, cfg, jiffies) {
            return finish(cfg, counter, drop);
        }
        holds_source = slot.names_source(&seen);
    }
    // A verdict's entry first; without one, the entry the datapath keeps for the source.
    let peer = F::peers()
        .get_ptr_mut(addr)
        .or_else(|| F::seen().get_ptr_mut(addr))
        .unwrap_or(core::ptr::null_mut());
    if !peer.is_null() {
        // SAFETY: a pointer into the map value, valid for this program run.
        let p = unsafe { &*peer };
        if p.list_gen == cfg.list_gen && p.until_jiffies > jiffies {
            // With a slot, the decision is applied as it is copied there (this SYN's hit and
            // token count in the slot), after what the slot held went back to its owner.
            let filled = match &slot {
                Some(slot) => cache::fill(slot, peer, cfg, jiffies),
                None => None,
            };
            // SAFETY: as above.
            let applied = filled
                .or_else(|| act(unsafe { &mut *peer }, cfg, || clock::estimate(cfg, jiffies)));
            if let Some((counter, drop)) = applied {
                return finish(cfg, counter, drop);
            }
        }
    }
    // Deciding again: what the slot kept for the source (hits, its bucket) goes back to the
    // entry first, so the slow path limits against the bucket as it is.
    if let (true, Some(slot)) = (holds_source, &slot) {
        cache::vacate(slot);
    }
    let counter = slow::decide::<F, I>(peer, addr, dst_port, ingress, cfg);
    finish(cfg, counter, drops(counter))
}
