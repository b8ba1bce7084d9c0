//! The datapath's side of the decision cache (docs/decision-cache.md): finding a source's
//! slot, applying the decision the slot holds, filling the slot with the decision of the
//! source's entry, and taking the source's hits and bucket back out of it before the slow
//! path decides again.
//!
//! What is checked — key, generation, deadline, seal — is a copy of the slot read once, and
//! what is applied is that copy, never the slot read again. Every change of a slot (a fill,
//! its bucket, emptying it) is made under the slot's lock, taken by a compare-and-swap of its
//! state word; a verdict hit is counted by a compare-and-swap from the state word read with
//! the decision, so it lands in that fill or goes to the source's entry.

use core::ptr::{read_volatile, write_volatile};

use filter_common::{
    CacheCtl, CacheSlot, Counter, DatapathConfig, Peer, SlotState, cache_index, cache_key_as_v4,
    cache_key_as_v6, cache_meta, has_bucket, is_verdict, seal,
};

use crate::{
    atomic, clock,
    decision::{Copied, act, bump},
    family::{Family, V4, V6},
    maps,
};

/// Reads of a locked slot a limit decision waits through while another CPU takes a token
/// from the same bucket (a few instructions under the lock).
const LOCK_TRIES: usize = 8;

/// A source's slot in the cache, and the cache's generation read before the source's entry:
/// a copy of an entry that userspace replaces meanwhile then carries the generation its
/// replacement ends.
pub struct Slot {
    ptr: *mut CacheSlot,
    ctl: *const CacheCtl,
    generation: u32,
    /// The source's key.
    key: [u64; 2],
}

/// A slot as [`Slot::read`] read it: the decision fields and the state word (the bucket is
/// read under the lock, by whoever changes it).
pub struct Seen {
    key: [u64; 2],
    /// As `CacheSlot::meta`: generation, decision, hit slot.
    meta: u64,
    until_jiffies: u64,
    seal: u64,
    state: SlotState,
}

impl Slot {
    /// The slot of the source `key`, unless the cache is off or the source may not use it.
    #[inline(always)]
    pub fn find(key: [u64; 2], cacheable: bool) -> Option<Self> {
        let ctl = maps::CACHE_CTL.get_ptr(0)?;
        // SAFETY: a pointer into the map value, valid for this program run.
        let (generation, shift) = unsafe {
            (
                read_volatile(&(*ctl).generation),
                read_volatile(&(*ctl).shift),
            )
        };
        if shift == 0 || !cacheable {
            return None;
        }
        let ptr = maps::CACHE.get_ptr_mut(cache_index(key, shift))?;
        Some(Self {
            ptr,
            ctl,
            generation,
            key,
        })
    }

    /// The slot's decision fields and state word, each read once.
    #[inline(always)]
    pub fn read(&self) -> Seen {
        let s = self.ptr;
        // SAFETY: fields of a map value, valid for this program run.
        unsafe {
            Seen {
                key: [read_volatile(&(*s).key[0]), read_volatile(&(*s).key[1])],
                meta: read_volatile(&(*s).meta),
                until_jiffies: read_volatile(&(*s).until_jiffies),
                seal: read_volatile(&(*s).seal),
                state: SlotState(read_volatile(&(*s).state)),
            }
        }
    }

    /// Whether `seen` (read by [`Slot::read`]) names the source (whatever else it holds).
    #[inline(always)]
    pub fn names_source(&self, seen: &Seen) -> bool {
        seen.key[0] == self.key[0] && seen.key[1] == self.key[1]
    }

    /// Applies the decision `seen` (read by [`Slot::read`]) holds, if it is the source's
    /// (`addr`), current, in time and whole: the outcome, and whether it drops.
    #[inline(always)]
    pub fn apply<F: Family>(
        &self,
        seen: &Seen,
        addr: &F::Addr,
        cfg: &DatapathConfig,
        jiffies: u64,
    ) -> Option<(Counter, bool)> {
        // A locked slot's fields may be changing, but a copy that passes its seal under the
        // tag of its state word is one whole fill: its decision is the source's.
        // SAFETY: the control word is a map value, valid for this program run.
        let seal_key = unsafe { &(*self.ctl).seal_key };
        let usable = self.names_source(seen)
            && seen.meta as u32 == self.generation
            && seen.until_jiffies > jiffies
            && seen.seal
                == seal(
                    seen.key,
                    seen.meta,
                    seen.until_jiffies,
                    seen.state.tag(),
                    seal_key,
                );
        if !usable {
            return None;
        }
        let decision = (seen.meta >> 32) as u8;
        if has_bucket(decision) {
            // A bucket's outcome is one of two.
            return take_token(self, seen.state, seen.meta, cfg, jiffies).map(|over| match over {
                true => (Counter::Limited, true),
                false => (Counter::PassedLimit, false),
            });
        }
        // A verdict's hit goes into the fill it was decided by, or to the source's entry if
        // the slot has moved on since (counted before the decision is applied, so that the
        // verifier walks the outcomes once).
        if is_verdict(decision) && !self.count(seen.state) {
            hit_to_entry::<F>(addr);
        }
        let mut c = Copied {
            decision,
            hit_slot: (seen.meta >> 40) as u32,
            hits: 0,
            tat_ns: 0,
        };
        act(&mut c, cfg, || clock::estimate(cfg, jiffies))
    }

    /// Counts one verdict hit in the fill `seen` (the state word read with the decision):
    /// false if the slot is locked or has moved on since (another fill, or another CPU
    /// counted a hit of the same source in between), or the count is full.
    #[inline(always)]
    fn count(&self, seen: SlotState) -> bool {
        if seen.locked() || seen.hits() == SlotState::MAX_HITS {
            return false;
        }
        // SAFETY: a field of a map value, valid for this program run.
        let was = unsafe { atomic::cas(&raw mut (*self.ptr).state, seen.0, seen.counted(1).0) };
        was == seen.0
    }

    /// Takes the slot's lock from the fill `seen`, waiting a little while another CPU holds
    /// it for the same fill; the unlocked state it was taken from, or `None` if the slot
    /// moved on to another fill or stays locked.
    #[inline(always)]
    fn lock(&self, seen: SlotState) -> Option<SlotState> {
        let mut now = seen;
        for _ in 0..LOCK_TRIES {
            if now.tag() != seen.tag() {
                return None;
            }
            if now.locked() {
                // SAFETY: as in `count`.
                now = SlotState(unsafe { read_volatile(&(*self.ptr).state) });
                continue;
            }
            // SAFETY: as in `count`.
            let was = unsafe { atomic::cas(&raw mut (*self.ptr).state, now.0, now.lock().0) };
            if was == now.0 {
                return Some(now);
            }
            now = SlotState(was);
        }
        None
    }

    /// Takes the slot's lock if nobody holds it, whatever fill it holds: the unlocked state
    /// it was taken from.
    #[inline(always)]
    fn try_lock(&self) -> Option<SlotState> {
        // SAFETY: as in `count`.
        unsafe {
            let from = SlotState(read_volatile(&(*self.ptr).state));
            let taken = !from.locked()
                && atomic::cas(&raw mut (*self.ptr).state, from.0, from.lock().0) == from.0;
            taken.then_some(from)
        }
    }

    /// Releases the lock with the slot in state `to` (unlocked).
    #[inline(always)]
    fn release(&self, to: SlotState) {
        // SAFETY: as in `count`.
        unsafe { atomic::swap(&raw mut (*self.ptr).state, to.0) };
    }
}

/// A limit decision from the slot (state word and `meta` as read with it): whether this SYN
/// is over the limit, `None` if the slot moved on. The bucket is the slot's, changed only
/// under its lock. Not inlined: limits are rare, and the waiting loop stays out of the path
/// every other cached decision takes.
#[inline(never)]
fn take_token(
    slot: &Slot,
    seen: SlotState,
    meta: u64,
    cfg: &DatapathConfig,
    jiffies: u64,
) -> Option<bool> {
    let from = slot.lock(seen)?;
    let mut c = Copied {
        decision: (meta >> 32) as u8,
        hit_slot: (meta >> 40) as u32,
        hits: 0,
        // SAFETY: a field of a map value, valid for this program run; ours while locked.
        tat_ns: unsafe { read_volatile(&(*slot.ptr).tat_ns) },
    };
    let over = act(&mut c, cfg, || clock::estimate(cfg, jiffies)).is_some_and(|(_, drop)| drop);
    // SAFETY: as above.
    unsafe { write_volatile(&raw mut (*slot.ptr).tat_ns, c.tat_ns) };
    let full = from.hits() + c.hits > SlotState::MAX_HITS;
    slot.release(from.counted(if full { 0 } else { c.hits }));
    if full && let Some(p) = entry_of(slot.key) {
        // SAFETY: a pointer into the map value, valid for this program run.
        bump(unsafe { &mut (*p).hits });
    }
    Some(over)
}

/// Takes the slot over for its source and fills it with the decision of its entry `p`
/// (one the caller found current), applying that decision to this SYN on the way: what the
/// SYN changes (its hit, a token) is published with the fill. `None` when another CPU holds
/// the slot (the caller then applies the entry itself), or the entry holds no decision.
///
/// What the slot held goes back to its source's entry first. Not inlined: inlined into each
/// family's path of each entry point, its lookups in both families' maps multiplied what the
/// verifier walks (BENCHMARKS.md, datapath section).
#[inline(never)]
pub fn fill(
    slot: &Slot,
    p: *mut Peer,
    cfg: &DatapathConfig,
    jiffies: u64,
) -> Option<(Counter, bool)> {
    let from = slot.try_lock()?;
    let s = slot.ptr;
    // SAFETY: `s` and `p` point into map values, valid for this program run; the slot's
    // fields are ours to write until the release.
    unsafe {
        give_back(s, from);
        // Read after giving back: `p` may be the entry that just got the hits and bucket.
        let mut c = Copied {
            decision: read_volatile(&(*p).decision),
            hit_slot: read_volatile(&(*p).slot),
            hits: 0,
            tat_ns: read_volatile(&(*p).tat_ns),
        };
        let until = read_volatile(&(*p).until_jiffies);
        let outcome = act(&mut c, cfg, || clock::estimate(cfg, jiffies));
        // A byte that is no decision is not copied: the slot is left empty.
        let (key, meta) = match outcome {
            Some(_) => (
                slot.key,
                cache_meta(slot.generation, c.decision, c.hit_slot),
            ),
            None => ([0, 0], 0),
        };
        let next = from.refilled(c.hits);
        write_volatile(&raw mut (*s).key[0], key[0]);
        write_volatile(&raw mut (*s).key[1], key[1]);
        write_volatile(&raw mut (*s).meta, meta);
        write_volatile(&raw mut (*s).until_jiffies, until);
        write_volatile(&raw mut (*s).tat_ns, c.tat_ns);
        let sealed = seal(key, meta, until, next.tag(), &(*slot.ctl).seal_key);
        write_volatile(&raw mut (*s).seal, sealed);
        slot.release(next);
        outcome
    }
}

/// Before the slow path decides for the slot's source again: if the slot holds it, its hits
/// and bucket go back to its entry (the slow path's bucket is then the one the slot kept) and
/// the slot is emptied. Not inlined, as [`fill`].
#[inline(never)]
pub fn vacate(slot: &Slot) {
    let Some(from) = slot.try_lock() else { return };
    let (s, key) = (slot.ptr, slot.key);
    // SAFETY: as in `fill`.
    unsafe {
        if read_volatile(&(*s).key[0]) != key[0] || read_volatile(&(*s).key[1]) != key[1] {
            // Another source's by now: left as it was.
            slot.release(from);
            return;
        }
        give_back(s, from);
        write_volatile(&raw mut (*s).key[0], 0);
        write_volatile(&raw mut (*s).key[1], 0);
        write_volatile(&raw mut (*s).meta, 0);
        write_volatile(&raw mut (*s).until_jiffies, 0);
        write_volatile(&raw mut (*s).seal, 0);
    }
    slot.release(from.refilled(0));
}

/// Adds the verdict hits the slot counted (`from`, its state when locked) to its source's
/// entry, and moves the entry's token bucket on to the slot's if that is further. The lock is
/// held: the slot's fields are those its last holder released. (If the entry is gone, so is
/// what it was owed.)
///
/// # Safety
/// `s` points into the cache map, locked by the caller.
#[inline(always)]
unsafe fn give_back(s: *mut CacheSlot, from: SlotState) {
    // SAFETY: the caller's.
    unsafe {
        let meta = read_volatile(&(*s).meta);
        let bucket = has_bucket((meta >> 32) as u8);
        if from.hits() == 0 && !bucket {
            return;
        }
        let key = [read_volatile(&(*s).key[0]), read_volatile(&(*s).key[1])];
        let Some(p) = entry_of(key) else { return };
        if from.hits() != 0 {
            atomic::add(&raw mut (*p).hits, from.hits());
        }
        let tat = read_volatile(&(*s).tat_ns);
        if bucket && tat > (*p).tat_ns {
            (*p).tat_ns = tat;
        }
    }
}

/// The entry of the source with cache key `key`, of either family: its verdict's, else the
/// one the datapath keeps (a limit feed's source has its bucket there).
#[inline(always)]
fn entry_of(key: [u64; 2]) -> Option<*mut Peer> {
    match cache_key_as_v4(key) {
        Some(a) => V4::peers()
            .get_ptr_mut(a)
            .or_else(|| V4::seen().get_ptr_mut(a)),
        None => {
            let a = cache_key_as_v6(key);
            V6::peers()
                .get_ptr_mut(a)
                .or_else(|| V6::seen().get_ptr_mut(a))
        }
    }
}

/// A verdict hit the slot could not take, counted in the source's verdict entry (if it still
/// has one; only `PEERS` holds verdicts).
#[inline(always)]
fn hit_to_entry<F: Family>(addr: &F::Addr) {
    if let Some(p) = F::peers().get_ptr_mut(addr) {
        // SAFETY: a pointer into the map value, valid for this program run.
        bump(unsafe { &mut (*p).hits });
    }
}
