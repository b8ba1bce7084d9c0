//! The one decision function both entry points share: given a frame, pass or drop it and
//! count the outcome.
//!
//! For a subject SYN the source's slot in the decision cache is read first (one line; see
//! `filter_common::cache`); when it holds this source's decision, sealed, under the cache's
//! current generation and before its deadline, that decision is applied. Otherwise the
//! source's [`Peer`] entry is looked up; when it holds a decision made under the current
//! generation of the lists (`DatapathConfig::list_gen`) that has not run out
//! (`until_jiffies`), that decision is applied and copied into the cache slot. Otherwise
//! [`crate::slow`] walks the lists and the verdict in order of precedence (allow → deny →
//! limit → the source's verdict → a prefix verdict → unknown), applies the result and caches
//! it in the entry.

use filter_common::{
    CacheCtl, CacheSlot, Counter, DatapathConfig, Decision, FAMILY_V4, FLAG_OBSERVE, Peer,
    cache_index, cache_key_as_v4, cache_key_as_v6, cacheable_v6,
};

use crate::{
    clock,
    family::{Family, V4, V6},
    maps::{self, count, hit},
    parse::{Packet, Parsed, Source, parse},
    slow,
};

/// What happens to the frame; each entry point maps it to its own return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Pass,
    Drop,
}

/// Where a frame came in, read only when a new-peer event needs it (reading an XDP frame's
/// ifindex chases three pointers).
pub trait Ingress: Copy {
    fn ifindex(self) -> u32;
}

/// Screens one frame. Never drops anything that is not a SYN to a configured port.
#[inline(always)]
pub fn screen<I: Ingress>(data: usize, data_end: usize, ingress: I) -> Fate {
    let (src, dst_port) = match parse(&Packet::new(data, data_end)) {
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
    match src {
        // SAFETY: the address lies inside the frame (checked by the parser).
        Source::V4(addr) => decide::<V4, I>(unsafe { &*addr }, dst_port, ingress, cfg, jiffies),
        Source::V6(addr) => decide::<V6, I>(unsafe { &*addr }, dst_port, ingress, cfg, jiffies),
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
    addr: &F::Addr,
    dst_port: u16,
    ingress: I,
    cfg: &DatapathConfig,
    jiffies: u64,
) -> Fate {
    let key = F::cache_key(*addr);
    // The generation is read before the entry, so a copy of an entry that userspace replaces
    // meanwhile carries the generation its replacement ends.
    let ctl = match maps::CACHE_CTL.get_ptr(0) {
        // SAFETY: a pointer into the map value, valid for this program run.
        Some(c) => unsafe { core::ptr::read_volatile(c) },
        None => CacheCtl::default(),
    };
    // An IPv4-mapped IPv6 source would share its IPv4 twin's slot: it goes without.
    let cacheable = F::FAMILY == FAMILY_V4 || cacheable_v6(key);
    let slot = if ctl.shift == 0 || !cacheable {
        core::ptr::null_mut()
    } else {
        maps::CACHE
            .get_ptr_mut(cache_index(key, ctl.shift))
            .unwrap_or_default()
    };
    if !slot.is_null() {
        // SAFETY: a pointer into the map value, valid for this program run.
        let s = unsafe { &mut *slot };
        if s.key[0] == key[0]
            && s.key[1] == key[1]
            && s.generation() == ctl.generation
            && s.until_jiffies > jiffies
            && s.sealed()
            && let Some((counter, drop)) = act(s, cfg, || clock::estimate(cfg, jiffies))
        {
            return finish(cfg, counter, drop);
        }
    }
    let peer = F::peers()
        .get_ptr_mut(addr)
        .unwrap_or(core::ptr::null_mut());
    if !peer.is_null() {
        // SAFETY: a pointer into the map value, valid for this program run.
        let p = unsafe { &mut *peer };
        if p.list_gen == cfg.list_gen && p.until_jiffies > jiffies {
            let now = || clock::estimate(cfg, jiffies);
            // With a slot, the copy becomes the live state at once (this SYN's hit and token
            // count there), after what the slot held went back to its owner.
            let applied = if slot.is_null() {
                act(p, cfg, now)
            } else {
                // SAFETY: as above.
                let s = unsafe { &mut *slot };
                fill(s, key, ctl.generation, p);
                act(s, cfg, now)
            };
            if let Some((counter, drop)) = applied {
                return finish(cfg, counter, drop);
            }
        }
    }
    let counter = slow::decide::<F, I>(peer, addr, dst_port, ingress, cfg);
    finish(cfg, counter, drops(counter))
}

/// Copies `p`'s decision into the cache slot `s`, after giving what the slot's previous
/// decision owes (a verdict's hits, a token bucket) back to its source's entry. Stores go
/// seal first (cleared) and seal last, so a reader on another CPU meets either a slot that
/// fails its seal or a whole one. Not inlined: inlined into each family's path of each entry
/// point, its lookups in both families' maps more than doubled what the verifier walks
/// (225k instructions per program against 97k before the cache, a second per load; 105k
/// as a call).
#[inline(never)]
fn fill(s: &mut CacheSlot, key: [u64; 2], generation: u32, p: &mut Peer) {
    let old = *s;
    if old.owes_state() && old.sealed() {
        give_back(&old);
    }
    // Read after giving back: `p` may be the entry that just got the hits.
    let new = CacheSlot::new(
        key,
        generation,
        p.decision,
        p.slot,
        p.until_jiffies,
        p.tat_ns,
    );
    // SAFETY: every pointer is a field of the slot, a map value valid for this run.
    unsafe {
        core::ptr::write_volatile(&mut s.seal, 0);
        core::ptr::write_volatile(&mut s.key, new.key);
        core::ptr::write_volatile(&mut s.meta, new.meta);
        core::ptr::write_volatile(&mut s.until_jiffies, new.until_jiffies);
        core::ptr::write_volatile(&mut s.hits, 0);
        core::ptr::write_volatile(&mut s.tat_ns, new.tat_ns);
        core::ptr::write_volatile(&mut s.seal, new.seal);
    }
}

/// Adds a slot's pending verdict hits to its source's entry, and moves the entry's token
/// bucket on to the slot's if that is further (if the entry is gone, so is what it owed).
#[inline(always)]
fn give_back(old: &CacheSlot) {
    let p = match cache_key_as_v4(old.key) {
        Some(a) => V4::peers().get_ptr_mut(a),
        None => V6::peers().get_ptr_mut(cache_key_as_v6(old.key)),
    };
    if let Some(p) = p {
        // SAFETY: a pointer into the map value, valid for this program run.
        let p = unsafe { &mut *p };
        p.hits = p.hits.wrapping_add(old.hits);
        if old.tat_ns > p.tat_ns {
            p.tat_ns = old.tat_ns;
        }
    }
}

/// An entry counts while its expiry (CLOCK_MONOTONIC_COARSE ns, 0 = never) lies in the future.
#[inline(always)]
pub fn live(expires_ns: u64, now: u64) -> bool {
    expires_ns == 0 || expires_ns > now
}

/// A cached decision [`act`] applies: the source's entry, or its copy in a cache slot.
pub trait Cached {
    /// A [`Decision`] as u8.
    fn decision(&self) -> u8;
    /// `HITS` slot of the deciding list entry.
    fn hit_slot(&self) -> u32;
    /// The verdict's hit counter.
    fn hits(&mut self) -> &mut u64;
    /// The token bucket's TAT (ns).
    fn tat(&mut self) -> &mut u64;
}

impl Cached for Peer {
    #[inline(always)]
    fn decision(&self) -> u8 {
        self.decision
    }
    #[inline(always)]
    fn hit_slot(&self) -> u32 {
        self.slot
    }
    #[inline(always)]
    fn hits(&mut self) -> &mut u64 {
        &mut self.hits
    }
    #[inline(always)]
    fn tat(&mut self) -> &mut u64 {
        &mut self.tat_ns
    }
}

impl Cached for CacheSlot {
    #[inline(always)]
    fn decision(&self) -> u8 {
        CacheSlot::decision(self)
    }
    #[inline(always)]
    fn hit_slot(&self) -> u32 {
        CacheSlot::hit_slot(self)
    }
    #[inline(always)]
    fn hits(&mut self) -> &mut u64 {
        &mut self.hits
    }
    #[inline(always)]
    fn tat(&mut self) -> &mut u64 {
        &mut self.tat_ns
    }
}

/// Applies the decision cached in `c` and bumps its hit counter: the outcome, and whether
/// it drops; `None` for a byte that is no decision (the slow path then makes one). `now` is
/// read only by a limit decision.
#[inline(always)]
pub fn act<C: Cached>(
    c: &mut C,
    cfg: &DatapathConfig,
    now: impl FnOnce() -> u64,
) -> Option<(Counter, bool)> {
    const ALLOW: u8 = Decision::Allow as u8;
    const DENY: u8 = Decision::Deny as u8;
    const DENY_FEED: u8 = Decision::DenyFeed as u8;
    const LIST_LIMIT: u8 = Decision::ListLimit as u8;
    const PREFIX_DROP: u8 = Decision::PrefixDrop as u8;
    const VERDICT_PASS: u8 = Decision::VerdictPass as u8;
    const VERDICT_DROP: u8 = Decision::VerdictDrop as u8;
    const VERDICT_LIMIT: u8 = Decision::VerdictLimit as u8;
    const UNKNOWN: u8 = Decision::Unknown as u8;
    const HELD: u8 = Decision::Held as u8;
    Some(match c.decision() {
        ALLOW => {
            hit(c.hit_slot());
            (Counter::PassedAllow, false)
        }
        DENY => {
            hit(c.hit_slot());
            (Counter::DroppedDeny, true)
        }
        DENY_FEED => {
            hit(c.hit_slot());
            (Counter::DroppedFeed, true)
        }
        LIST_LIMIT => {
            hit(c.hit_slot());
            limit(c.tat(), cfg, now())
        }
        PREFIX_DROP => {
            hit(c.hit_slot());
            (Counter::DroppedVerdict, true)
        }
        VERDICT_PASS => {
            bump(c.hits());
            (Counter::PassedVerdict, false)
        }
        VERDICT_DROP => {
            bump(c.hits());
            (Counter::DroppedVerdict, true)
        }
        VERDICT_LIMIT => {
            bump(c.hits());
            limit(c.tat(), cfg, now())
        }
        UNKNOWN => (Counter::Unknown, false),
        HELD => (Counter::Held, true),
        _ => return None,
    })
}

/// Bumps a verdict's hit counter. It lives in the source's own entry (or, while the source
/// is served from the decision cache, in its slot), so only SYNs of that one source (spread
/// over CPUs by RSS) ever share its cache line; a plain add, not an atomic one: two CPUs
/// bumping the same source at the same instant may lose one hit, which a counter shown to
/// operators can afford, and which saves a locked instruction per SYN.
#[inline(always)]
pub fn bump(hits: &mut u64) {
    *hits = hits.wrapping_add(1);
}

/// Limit as GCRA: one timestamp per source (the theoretical arrival time, TAT). A SYN is
/// within the limit if TAT is at most `tolerance` ahead of now; each accepted SYN pushes TAT
/// one interval further. Concurrent CPUs may race on TAT; the worst case lets a SYN or two
/// more through, which is harmless for a rate limit.
#[inline(always)]
pub fn limit(tat_ns: &mut u64, cfg: &DatapathConfig, now: u64) -> (Counter, bool) {
    let tat = if *tat_ns > now { *tat_ns } else { now };
    if tat - now > cfg.limit_tolerance_ns {
        return (Counter::Limited, true);
    }
    *tat_ns = tat + cfg.limit_interval_ns;
    (Counter::PassedLimit, false)
}
