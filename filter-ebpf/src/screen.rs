//! The one verdict function both entry points share: given a parsed packet, decide pass or
//! drop and count the outcome. Decision order for a subject SYN (by source address):
//! allow list → deny list → verdict map → unknown (report to userspace; pass or hold).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    maps::{LpmTrie, LruHashMap, lpm_trie::Key},
};
use filter_common::{
    Action, Counter, DatapathConfig, FAMILY_V4, FAMILY_V6, FLAG_HOLD, FLAG_OBSERVE, ListEntry,
    MAX_PORTS, NewPeerEvent, Seen, Verdict,
};

use crate::{
    maps::{self, count},
    parse::{Packet, Parsed, Source, parse},
};

/// The datapath's answer; each entry point maps it to its own return code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pass,
    Drop,
}

/// The maps of one address family, so the decision is written once for both.
struct FamilyMaps<K: 'static> {
    allow: &'static LpmTrie<K, ListEntry>,
    deny: &'static LpmTrie<K, ListEntry>,
    verdicts: &'static LruHashMap<K, Verdict>,
    seen: &'static LruHashMap<K, Seen>,
    buckets: &'static LruHashMap<K, u64>,
    prefix_bits: u32,
}

static V4: FamilyMaps<[u8; 4]> = FamilyMaps {
    allow: &maps::ALLOW_V4,
    deny: &maps::DENY_V4,
    verdicts: &maps::VERDICTS_V4,
    seen: &maps::SEEN_V4,
    buckets: &maps::BUCKETS_V4,
    prefix_bits: 32,
};

static V6: FamilyMaps<[u8; 16]> = FamilyMaps {
    allow: &maps::ALLOW_V6,
    deny: &maps::DENY_V6,
    verdicts: &maps::VERDICTS_V6,
    seen: &maps::SEEN_V6,
    buckets: &maps::BUCKETS_V6,
    prefix_bits: 128,
};

/// Screens one frame. Never drops anything that is not a SYN to a configured port.
#[inline(always)]
pub fn screen(data: usize, data_end: usize, ifindex: u32) -> Decision {
    let (src, dst_port) = match parse(&Packet::new(data, data_end)) {
        Parsed::Syn { src, dst_port } => (src, dst_port),
        Parsed::Other => return pass(Counter::PassedNotSubject),
        Parsed::Fragment => return pass(Counter::Fragment),
        Parsed::Malformed => return pass(Counter::Malformed),
    };
    let Some(cfg) = maps::CONFIG.get(0) else {
        return pass(Counter::PassedNotSubject);
    };
    if !is_screened_port(cfg, dst_port) {
        return pass(Counter::PassedNotSubject);
    }
    // The coarse clock: see filter-user's datapath::clock for why it is precise enough.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // The daemon stopped beating (dead, hung, or gone while a netlink tc filter stays
    // attached): decide nothing, pass everything. Mail flows unscreened rather than not at all.
    if cfg.stale_after_ns != 0 && now.saturating_sub(cfg.alive_ns) > cfg.stale_after_ns {
        return pass(Counter::PassedStale);
    }
    let (decision, counter) = match src {
        Source::V4(addr) => {
            let mut wide = [0u8; 16];
            wide[..4].copy_from_slice(&addr);
            let origin = Origin {
                addr: wide,
                family: FAMILY_V4,
                dst_port,
                ifindex,
            };
            decide(&V4, addr, &origin, cfg, now)
        }
        Source::V6(addr) => {
            let origin = Origin {
                addr,
                family: FAMILY_V6,
                dst_port,
                ifindex,
            };
            decide(&V6, addr, &origin, cfg, now)
        }
    };
    count(counter);
    if decision == Decision::Drop && cfg.flags & FLAG_OBSERVE != 0 {
        count(Counter::ObservePassed);
        return Decision::Pass;
    }
    decision
}

#[inline(always)]
fn pass(counter: Counter) -> Decision {
    count(counter);
    Decision::Pass
}

#[inline(always)]
fn is_screened_port(cfg: &DatapathConfig, port: u16) -> bool {
    let n = cfg.port_count as usize;
    for i in 0..MAX_PORTS {
        if i >= n {
            break;
        }
        if cfg.ports[i] == port {
            return true;
        }
    }
    false
}

/// An entry counts while its expiry (CLOCK_MONOTONIC_COARSE ns, 0 = never) lies in the future.
#[inline(always)]
fn live(expires_ns: u64, now: u64) -> bool {
    expires_ns == 0 || expires_ns > now
}

/// Bumps a hit counter shared between CPUs (a single atomic add in the map value).
#[inline(always)]
fn bump(hits: *mut u64) {
    // The bpf target has no compare-and-swap, so core's AtomicU64::fetch_add is missing; the
    // intrinsic lowers to the BPF atomic add instruction, which is all a counter needs.
    // SAFETY: `hits` points into a live map value; the kernel keeps it valid for this run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(hits, 1) };
}

/// What the new-peer event will say about this SYN, carried to where it is written.
#[derive(Clone, Copy)]
struct Origin {
    /// Source address; IPv4 in the first four bytes.
    addr: [u8; 16],
    family: u8,
    dst_port: u16,
    ifindex: u32,
}

#[inline(always)]
fn decide<K: Copy + 'static>(
    fam: &FamilyMaps<K>,
    addr: K,
    origin: &Origin,
    cfg: &DatapathConfig,
    now: u64,
) -> (Decision, Counter) {
    let key = Key::new(fam.prefix_bits, addr);
    // aya-ebpf hands trie values out as shared references, but they are the kernel's mutable
    // map memory (bpf_map_lookup_elem returns a plain pointer); the hit counter is bumped
    // through it with an atomic add, exactly as C programs do.
    if let Some(entry) = fam.allow.get(&key)
        && live(entry.expires_ns, now)
    {
        bump(core::ptr::from_ref(&entry.hits).cast_mut());
        return (Decision::Pass, Counter::PassedAllow);
    }
    if let Some(entry) = fam.deny.get(&key)
        && live(entry.expires_ns, now)
    {
        bump(core::ptr::from_ref(&entry.hits).cast_mut());
        return (Decision::Drop, Counter::DroppedDeny);
    }
    if let Some(v) = fam.verdicts.get_ptr_mut(addr) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let v = unsafe { &mut *v };
        if live(v.expires_ns, now) {
            bump(&mut v.hits);
            return match Action::from_u8(v.action) {
                Some(Action::Drop) if explain_now(v, cfg, now) => {
                    (Decision::Pass, Counter::Explained)
                }
                Some(Action::Drop) => (Decision::Drop, Counter::DroppedVerdict),
                Some(Action::Limit) => limit(fam, addr, cfg, now),
                // Pass, or a value this program does not know: fail open.
                _ => (Decision::Pass, Counter::PassedVerdict),
            };
        }
        // Expired: treated as unknown below (userspace removes it and re-resolves).
    }
    unknown(fam, addr, origin, cfg, now)
}

/// Whether this SYN of a dropped source goes through so the MTA can explain the refusal: the
/// first SYN after a reputation verdict, then one per explain window. Two CPUs may both let
/// a SYN through at the window's turn; one extra explained connection is harmless.
#[inline(always)]
fn explain_now(v: &mut Verdict, cfg: &DatapathConfig, now: u64) -> bool {
    if cfg.explain_window_ns == 0 || !v.is_explained() || now < v.explain_at_ns {
        return false;
    }
    v.explain_at_ns = now + cfg.explain_window_ns;
    true
}

/// Limit action as GCRA: one timestamp per source (the theoretical arrival time, TAT).
/// A SYN is within the limit if TAT is at most `tolerance` ahead of now; each accepted SYN
/// pushes TAT one interval further. Concurrent CPUs may race on TAT; the worst case lets
/// a SYN or two more through, which is harmless for a rate limit.
#[inline(always)]
fn limit<K: Copy + 'static>(
    fam: &FamilyMaps<K>,
    addr: K,
    cfg: &DatapathConfig,
    now: u64,
) -> (Decision, Counter) {
    let tat = match fam.buckets.get_ptr(addr) {
        // SAFETY: pointer into a live map value.
        Some(p) => unsafe { *p },
        None => now,
    };
    let tat = if tat > now { tat } else { now };
    if tat - now > cfg.limit_tolerance_ns {
        return (Decision::Drop, Counter::Limited);
    }
    // If the insert fails (map full of busy entries), the SYN still passes: fail open.
    let _ = fam.buckets.insert(addr, tat + cfg.limit_interval_ns, 0);
    (Decision::Pass, Counter::PassedLimit)
}

/// No verdict yet: tell userspace (once per dedup window) and pass, or hold (drop) the SYN
/// while the hold window runs so that the retransmitted SYN finds the verdict.
#[inline(always)]
fn unknown<K: Copy + 'static>(
    fam: &FamilyMaps<K>,
    addr: K,
    origin: &Origin,
    cfg: &DatapathConfig,
    now: u64,
) -> (Decision, Counter) {
    let (first_seen_ns, report) = match fam.seen.get_ptr(addr) {
        // SAFETY: pointer into a live map value.
        Some(p) => {
            let seen = unsafe { *p };
            (
                seen.first_seen_ns,
                now.saturating_sub(seen.last_event_ns) >= cfg.dedup_window_ns,
            )
        }
        None => (now, true),
    };
    let mut reported = !report;
    if report {
        reported = emit(origin, now);
        if reported {
            let seen = Seen {
                first_seen_ns,
                last_event_ns: now,
            };
            let _ = fam.seen.insert(addr, seen, 0);
        }
    }
    // Hold only while userspace has actually been told: if the ring is full (the daemon is
    // gone or drowning), holding would drop mail with nobody coming to decide. Fail open.
    if cfg.flags & FLAG_HOLD != 0 && reported && now - first_seen_ns < cfg.hold_window_ns {
        return (Decision::Drop, Counter::Held);
    }
    (Decision::Pass, Counter::Unknown)
}

/// Writes a new-peer event; returns false (and counts it) when the ring buffer is full.
#[inline(always)]
fn emit(origin: &Origin, now: u64) -> bool {
    match maps::EVENTS.reserve::<NewPeerEvent>(0) {
        Some(mut slot) => {
            slot.write(NewPeerEvent::new(
                origin.addr,
                origin.family,
                origin.dst_port,
                origin.ifindex,
                now,
            ));
            slot.submit(0);
            count(Counter::EventsEmitted);
            true
        }
        None => {
            count(Counter::EventsLost);
            false
        }
    }
}
