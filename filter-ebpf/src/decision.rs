//! Applying a decision: the one place that turns a [`Decision`] into an outcome and does what
//! it costs — a list entry's hit, a verdict's hit, a token of a bucket. The cached path (on a
//! copy of a cache slot's decision), the fill of a slot and the slow path (on the source's
//! entry) all call [`act`]; none of them calls another for it.

use filter_common::{Counter, DatapathConfig, Decision, Peer};

use crate::{atomic, maps::hit};

/// A decision [`act`] applies, and where what it changes goes.
pub trait Cached {
    /// A [`Decision`] as u8.
    fn decision(&self) -> u8;
    /// `HITS` slot of the deciding list entry.
    fn hit_slot(&self) -> u32;
    /// Counts one hit of the source's verdict.
    fn bump(&mut self);
    /// The token bucket's TAT (ns).
    fn tat(&mut self) -> &mut u64;
}

/// The source's entry: its verdict's hits are shared with whichever CPU hands a cache slot's
/// hits back to it, so they are counted with an atomic add.
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
    fn bump(&mut self) {
        bump(&mut self.hits);
    }
    #[inline(always)]
    fn tat(&mut self) -> &mut u64 {
        &mut self.tat_ns
    }
}

/// A decision copied out of a cache slot or an entry, applied on this CPU's stack; the caller
/// publishes what it changed (`hits` counted, the bucket's `tat_ns`) where it belongs.
#[derive(Clone, Copy)]
pub struct Copied {
    pub decision: u8,
    pub hit_slot: u32,
    /// Verdict hits counted by this application (0 or 1).
    pub hits: u64,
    pub tat_ns: u64,
}

impl Cached for Copied {
    #[inline(always)]
    fn decision(&self) -> u8 {
        self.decision
    }
    #[inline(always)]
    fn hit_slot(&self) -> u32 {
        self.hit_slot
    }
    #[inline(always)]
    fn bump(&mut self) {
        self.hits += 1;
    }
    #[inline(always)]
    fn tat(&mut self) -> &mut u64 {
        &mut self.tat_ns
    }
}

/// Applies the decision cached in `c`, counting its hit: the outcome, and whether it drops;
/// `None` for a byte that is no decision (the slow path then makes one). `now` is read only
/// by a limit decision.
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
            c.bump();
            (Counter::PassedVerdict, false)
        }
        VERDICT_DROP => {
            c.bump();
            (Counter::DroppedVerdict, true)
        }
        VERDICT_LIMIT => {
            c.bump();
            limit(c.tat(), cfg, now())
        }
        UNKNOWN => (Counter::Unknown, false),
        HELD => (Counter::Held, true),
        _ => return None,
    })
}

/// Counts one hit of a verdict in its source's entry. An atomic add: the entry's hits are
/// also where another CPU hands back the hits a cache slot counted for the source, and a
/// plain add racing with that would lose them. (While the source is served from the cache,
/// its hits are counted in the slot's state word instead: `cache::count`.)
#[inline(always)]
pub fn bump(hits: &mut u64) {
    // SAFETY: `hits` is a field of a map value or of our stack, valid for this run.
    unsafe { atomic::add(hits, 1) };
}

/// Limit as GCRA: one timestamp per source (the theoretical arrival time, TAT). A SYN is
/// within the limit if TAT is at most `tolerance` ahead of now; each accepted SYN pushes TAT
/// one interval further. The caller owns `tat_ns` while it runs: a cache slot's bucket is
/// changed under the slot's lock; an entry's is changed in place (two CPUs deciding for one
/// source from its entry at the same instant may let one SYN more through).
///
/// TAT is never further ahead than `tolerance` plus one interval (a bucket just emptied):
/// under one config it cannot be, and after a faster `limit_rate` or a smaller burst the
/// debt a source ran up at the old rate is cut to that, so the new rate frees it within one
/// new interval (written back, so that the cut does not move with now).
#[inline(always)]
pub fn limit(tat_ns: &mut u64, cfg: &DatapathConfig, now: u64) -> (Counter, bool) {
    let ceiling = now
        .saturating_add(cfg.limit_tolerance_ns)
        .saturating_add(cfg.limit_interval_ns);
    if *tat_ns > ceiling {
        *tat_ns = ceiling;
    }
    let tat = if *tat_ns > now { *tat_ns } else { now };
    if tat - now > cfg.limit_tolerance_ns {
        return (Counter::Limited, true);
    }
    *tat_ns = tat + cfg.limit_interval_ns;
    (Counter::PassedLimit, false)
}
