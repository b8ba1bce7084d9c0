//! The one decision function both entry points share: given a frame, pass or drop it and
//! count the outcome.
//!
//! For a subject SYN the source's [`Peer`] entry is looked up; when it holds a decision made
//! under the current generation of the lists (`DatapathConfig::list_gen`) that has not run
//! out (`until_jiffies`), that decision is applied: one hash lookup, two compares and two
//! per-CPU counters. Otherwise [`crate::slow`] walks the lists and the verdict in order of precedence
//! (allow → deny → limit → the source's verdict → a prefix verdict → unknown), applies the
//! result and caches it.

use filter_common::{Counter, DatapathConfig, Decision, FLAG_OBSERVE, Peer};

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

/// The source's cached decision if it still holds (made under this generation, before its
/// `until_jiffies`), else the slow path.
#[inline(always)]
fn decide<F: Family, I: Ingress>(
    addr: &F::Addr,
    dst_port: u16,
    ingress: I,
    cfg: &DatapathConfig,
    jiffies: u64,
) -> Fate {
    let peer = F::peers()
        .get_ptr_mut(addr)
        .unwrap_or(core::ptr::null_mut());
    if !peer.is_null() {
        // SAFETY: a pointer into the map value, valid for this program run.
        let p = unsafe { &mut *peer };
        if p.list_gen == cfg.list_gen
            && p.until_jiffies > jiffies
            && let Some((counter, drop)) = act(p, cfg, || clock::estimate(cfg, jiffies))
        {
            return finish(cfg, counter, drop);
        }
    }
    let counter = slow::decide::<F, I>(peer, addr, dst_port, ingress, cfg);
    finish(cfg, counter, drops(counter))
}

/// An entry counts while its expiry (CLOCK_MONOTONIC_COARSE ns, 0 = never) lies in the future.
#[inline(always)]
pub fn live(expires_ns: u64, now: u64) -> bool {
    expires_ns == 0 || expires_ns > now
}

/// Applies the decision cached in `p` and bumps its hit counter: the outcome, and whether
/// it drops; `None` for a byte that is no decision (the slow path then makes one). `now` is
/// read only by a limit decision.
#[inline(always)]
pub fn act(
    p: &mut Peer,
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
    Some(match p.decision {
        ALLOW => {
            hit(p.slot);
            (Counter::PassedAllow, false)
        }
        DENY => {
            hit(p.slot);
            (Counter::DroppedDeny, true)
        }
        DENY_FEED => {
            hit(p.slot);
            (Counter::DroppedFeed, true)
        }
        LIST_LIMIT => {
            hit(p.slot);
            limit(p, cfg, now())
        }
        PREFIX_DROP => {
            hit(p.slot);
            (Counter::DroppedVerdict, true)
        }
        VERDICT_PASS => {
            bump(&mut p.hits);
            (Counter::PassedVerdict, false)
        }
        VERDICT_DROP => {
            bump(&mut p.hits);
            (Counter::DroppedVerdict, true)
        }
        VERDICT_LIMIT => {
            bump(&mut p.hits);
            limit(p, cfg, now())
        }
        UNKNOWN => (Counter::Unknown, false),
        HELD => (Counter::Held, true),
        _ => return None,
    })
}

/// Bumps a verdict's hit counter. It lives in the source's own entry, so only SYNs of that
/// one source (spread over CPUs by RSS) ever share its cache line; a plain add, not an atomic
/// one: two CPUs bumping the same source at the same instant may lose one hit, which a
/// counter shown to operators can afford, and which saves a locked instruction per SYN.
#[inline(always)]
pub fn bump(hits: &mut u64) {
    *hits = hits.wrapping_add(1);
}

/// Limit as GCRA: one timestamp per source (the theoretical arrival time, TAT). A SYN is
/// within the limit if TAT is at most `tolerance` ahead of now; each accepted SYN pushes TAT
/// one interval further. Concurrent CPUs may race on TAT; the worst case lets a SYN or two
/// more through, which is harmless for a rate limit.
#[inline(always)]
pub fn limit(p: &mut Peer, cfg: &DatapathConfig, now: u64) -> (Counter, bool) {
    let tat = if p.tat_ns > now { p.tat_ns } else { now };
    if tat - now > cfg.limit_tolerance_ns {
        return (Counter::Limited, true);
    }
    p.tat_ns = tat + cfg.limit_interval_ns;
    (Counter::PassedLimit, false)
}
