//! The slow path: a source without a usable cached decision (new, its entry replaced by a
//! verdict change, the lists changed since, or the decision ran out). The lists are walked in
//! order of precedence, then the source's verdict, then a prefix verdict, else the source is
//! unknown; the result is applied, and cached in the source's [`Peer`] entry (created here for
//! a new source) with the generation it was made under and the time it holds until.
//!
//! Everything that changes with time ends a cached decision through `until_jiffies` and
//! comes back here: an entry's or a verdict's expiry, the next explained refusal, the end of the
//! hold and dedup windows. The cached path never reads the clock for anything else.

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::BPF_NOEXIST, cty::c_void, helpers::bpf_loop};
use filter_common::{
    Action, Counter, DatapathConfig, Decision, EventWhy, FLAG_EXPLAIN, FLAG_HOLD, ListIndex,
    ListKey, ListValue, NEVER, NewPeerEvent, PEER_EXPLAIN, PEER_VERDICT, Peer, Reason, Table,
    earliest, live, seconds_up,
};

use crate::{
    churn, clock,
    decision::{act, bump},
    family::Family,
    maps::{self, Bucket, count},
    zeroed::zeroed,
};

/// Where a frame came in, read only when a new-peer event needs it (reading an XDP frame's
/// ifindex chases three pointers).
pub trait Ingress: Copy {
    fn ifindex(self) -> u32;
}

/// Decides for a source without a usable cached decision (`peer`: its entry, or null), and
/// caches the decision. Not inlined: a separate function keeps the cached path's registers
/// its own, and is verified once per family.
#[inline(never)]
pub fn decide<F: Family, I: Ingress>(
    peer: *mut Peer,
    addr: &F::Addr,
    dst_port: u16,
    ingress: I,
    cfg: &DatapathConfig,
) -> Counter {
    count(Counter::SlowPath);
    let now = clock::exact();
    let addr = *addr;
    let origin = Origin {
        dst_port,
        ifindex: ingress.ifindex(),
    };
    // The generation is read before the lists: a change landing while we walk bumps it after
    // its writes, so what we cache below is then already stale, never wrongly fresh.
    // SAFETY: a field of the config map value, valid for this run.
    let list_gen = unsafe { core::ptr::read_volatile(&cfg.list_gen) };
    // A new source's entry, made here and inserted at the end. All zero is `Peer::empty()`,
    // written without a byte-by-byte memset.
    let mut fresh = MaybeUninit::<Peer>::uninit();
    let p: &mut Peer = if peer.is_null() {
        churn::count_new(now);
        zeroed(&mut fresh)
    } else {
        // SAFETY: a pointer into the map value, valid for this program run.
        unsafe { &mut *peer }
    };
    let (listed, prefix) = match maps::LIST_INDEX.get(0) {
        Some(index) => walk::<F>(index, addr, now),
        None => (None, None),
    };
    let (outcome, lasts) = if let Some((table, v)) = listed {
        p.decision = match table {
            Table::Allow => Decision::Allow,
            Table::Deny if v.reason == Reason::Feed as u8 => Decision::DenyFeed,
            Table::Deny => Decision::Deny,
            _ => Decision::ListLimit,
        } as u8;
        cache_entry(p, &v, cfg, now)
    } else if p.flags & PEER_VERDICT != 0 && live(p.expires_ns, now) {
        verdict(p, cfg, now)
    } else if let Some(v) = prefix {
        p.decision = Decision::PrefixDrop as u8;
        cache_entry(p, &v, cfg, now)
    } else {
        unknown::<F>(p, addr, &origin, cfg, now)
    };
    // The decision's deadline in jiffies (what the cached path compares), worked out here
    // and published in one store: a reader on another CPU never meets a half-made one.
    let until_jiffies = match lasts {
        Until::Never => u64::MAX,
        Until::Now => 0,
        Until::At(ns) => cfg.jiffies_at(ns).unwrap_or(0),
    };
    // Published last, so a concurrent reader never pairs this generation with the decision
    // that was there before.
    // SAFETY: `p` points into a live map value or at our own stack copy.
    unsafe {
        core::ptr::write_volatile(&mut p.until_jiffies, until_jiffies);
        core::ptr::write_volatile(&mut p.list_gen, list_gen);
    }
    if peer.is_null() {
        // Into the datapath's own map: only userspace creates verdicts' entries, so a flood
        // of new sources cannot push a verdict out. Another CPU may have created it
        // meanwhile: theirs stays. (A verdict written meanwhile is looked up first.)
        // SAFETY: zeroed and filled above (`peer` is null).
        let fresh = unsafe { fresh.assume_init_ref() };
        let _ = F::seen().insert(addr, fresh, BPF_NOEXIST as u64);
    }
    outcome
}

/// The first live entry of each table covering `addr`, in order of precedence: the deciding
/// entry of allow, deny or limit; else a prefix verdict, if there is one.
#[inline(always)]
fn walk<F: Family>(
    index: &ListIndex,
    addr: F::Addr,
    now: u64,
) -> (Option<(Table, ListValue)>, Option<ListValue>) {
    for table in [Table::Allow, Table::Deny, Table::Limit] {
        if let Some(v) = find::<F>(index, table, addr, now) {
            return (Some((table, v)), None);
        }
    }
    let prefix = find::<F>(index, Table::PrefixVerdict, addr, now)
        .filter(|v| v.action == Action::Drop as u8);
    (None, prefix)
}

/// The live entry of `table` with the longest prefix covering `addr`: one hash probe per
/// length in use whose key the list filter does not rule out, longest first. The probes run
/// in `bpf_loop` (which the verifier inlines into a plain loop): its callback is verified
/// once, where an unrolled walk of up to 129 lengths in four tables and two families would
/// be verified once per iteration.
#[inline(always)]
fn find<F: Family>(index: &ListIndex, table: Table, addr: F::Addr, now: u64) -> Option<ListValue> {
    let (count, _) = F::lengths(index, table as usize);
    if count == 0 {
        return None;
    }
    // Zeroed a word at a time (no byte-by-byte memset of its padding and value); `value` is
    // read only once `found` says it was written.
    let mut probe = MaybeUninit::<Probe<F::Addr>>::uninit();
    let probe = zeroed(&mut probe);
    probe.addr = addr;
    probe.table = table as u8;
    probe.now = now;
    // SAFETY: the callback is a static function taking (index, ctx), and ctx points at
    // `probe`, which outlives the call.
    unsafe {
        bpf_loop(
            count as u32,
            probe_one::<F> as *const () as *mut c_void,
            (probe as *mut Probe<F::Addr>).cast(),
            0,
        )
    };
    (probe.found != 0).then_some(probe.value)
}

/// What one walk looks for, and what it found.
#[repr(C)]
struct Probe<A> {
    addr: A,
    table: u8,
    /// 1 once `value` holds the match.
    found: u8,
    _pad: [u8; 6],
    now: u64,
    value: ListValue,
}

/// The `i`-th longest length in use: probes the hash where the list filter says the key may
/// be there; returns 1 (stop) on a live match or past the last length, 0 to go on.
extern "C" fn probe_one<F: Family>(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Probe` that `find` handed to bpf_loop, on its stack.
    let probe = unsafe { &mut *ctx.cast::<Probe<F::Addr>>() };
    let Some(index) = maps::LIST_INDEX.get(0) else {
        return 1;
    };
    let (count, lens) = F::lengths(index, probe.table as usize);
    let i = i as usize;
    if i >= count {
        return 1;
    }
    let Some(&len) = lens.get(i) else {
        return 1;
    };
    let (net, bit) = F::masked(probe.addr, len, probe.table);
    // A clear bit: no such key. (No filter word, which cannot happen: probe.)
    if maps::LIST_FILTER
        .get(bit / 64)
        .is_some_and(|w| *w >> (bit % 64) & 1 == 0)
    {
        return 0;
    }
    let key = ListKey {
        table: probe.table,
        len,
        _pad: [0; 2],
        addr: net,
    };
    if let Some(v) = F::lists().get_ptr(key) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let v = unsafe { *v };
        if live(v.expires_ns, probe.now) {
            probe.value = v;
            probe.found = 1;
            return 1;
        }
    }
    0
}

/// How long a decision the slow path makes holds (before it is converted to jiffies).
#[derive(Clone, Copy)]
enum Until {
    Never,
    /// Not at all: the next SYN decides again.
    Now,
    /// Until this CLOCK_MONOTONIC_COARSE time (ns).
    At(u64),
}

/// Until an expiry ([`NEVER`] included).
#[inline(always)]
fn until(expires_ns: u64) -> Until {
    if expires_ns == NEVER {
        Until::Never
    } else {
        Until::At(expires_ns)
    }
}

/// Caches a list entry's decision (set by the caller) until the entry expires, and applies it.
#[inline(always)]
fn cache_entry(p: &mut Peer, v: &ListValue, cfg: &DatapathConfig, now: u64) -> (Counter, Until) {
    p.slot = v.slot;
    let outcome = act(p, cfg, || now).map_or(Counter::PassedNotSubject, |(c, _)| c);
    (outcome, until(v.expires_ns))
}

/// The source's own verdict. A reputation `drop` marked for explaining (`PEER_EXPLAIN`) lets
/// the first SYN after the verdict, then one per explain window, through to the MTA so it can
/// tell the sender why, but only while an MTA asks (`FLAG_EXPLAIN`); the cached drop
/// holds until the next one is due. Two CPUs may both let a SYN through at the window's turn;
/// one extra explained connection is harmless.
#[inline(always)]
fn verdict(p: &mut Peer, cfg: &DatapathConfig, now: u64) -> (Counter, Until) {
    p.slot = 0;
    p.decision = match Action::from_u8(p.action) {
        Some(Action::Drop) => Decision::VerdictDrop,
        Some(Action::Limit) => Decision::VerdictLimit,
        // Pass, or a value this program does not know: fail open.
        _ => Decision::VerdictPass,
    } as u8;
    let explained = p.action == Action::Drop as u8
        && p.reason == Reason::Reputation as u8
        && p.flags & PEER_EXPLAIN != 0
        && cfg.flags & FLAG_EXPLAIN != 0;
    let mut lasts = until(p.expires_ns);
    if explained && cfg.explain_window_ns != 0 {
        let due = now >= p.explain_at_s as u64 * 1_000_000_000;
        if due {
            p.explain_at_s = seconds_up(now + cfg.explain_window_ns);
        }
        lasts = until(earliest(
            p.expires_ns,
            p.explain_at_s as u64 * 1_000_000_000,
        ));
        if due {
            bump(&mut p.hits);
            return (Counter::Explained, lasts);
        }
    }
    let outcome = act(p, cfg, || now).map_or(Counter::PassedVerdict, |(c, _)| c);
    (outcome, lasts)
}

/// No decision for the source: report it to userspace (once per dedup window, and again at
/// a held source's retransmit) and pass, or hold (drop) it while the hold window runs so
/// that the retransmitted SYN finds the verdict.
#[inline(always)]
fn unknown<F: Family>(
    p: &mut Peer,
    addr: F::Addr,
    origin: &Origin,
    cfg: &DatapathConfig,
    now: u64,
) -> (Counter, Until) {
    p.slot = 0;
    // An earlier SYN of this source that was not reported (over the event budget).
    let seen_before = p.first_seen_ns != 0;
    if !seen_before {
        p.first_seen_ns = now;
    }
    let hold_end = p.first_seen_ns.saturating_add(cfg.hold_window_ns);
    // Not while new sources come too fast for the seen maps to remember a held source until
    // its hold ends: its hold could not be bounded (see `churn`). Fail open.
    let hold_asked = cfg.flags & FLAG_HOLD != 0 && now < hold_end;
    let holding = hold_asked && !churn::too_fast(cfg, now);
    let since = now.saturating_sub(p.last_event_ns);
    let why = if p.last_event_ns == 0 {
        if seen_before {
            EventWhy::Again
        } else {
            EventWhy::First
        }
    } else if since >= cfg.dedup_window_ns {
        EventWhy::Back
    } else {
        EventWhy::Again
    };
    // A held source is reported again at its retransmit: the engine may have let its first
    // SYN go unevaluated (a flood of first SYNs), and a second SYN proves a real TCP stack.
    let again = holding && p.last_event_ns != 0 && since >= AGAIN_AFTER_NS;
    let due = p.last_event_ns == 0 || since >= cfg.dedup_window_ns || again;
    let sent = if due {
        emit::<F>(addr, origin, cfg, now, why)
    } else {
        Emitted::Before
    };
    if sent == Emitted::Now {
        p.last_event_ns = now;
    }
    // Held while userspace knows of the source, or will at its next SYN (the event budget,
    // which only a live daemon sets: a stale heartbeat passes everything before this). Not
    // when the ring is full: the daemon is gone or drowning, and holding would drop mail with
    // nobody coming to decide. Fail open.
    let held = holding && sent != Emitted::Lost;
    if hold_asked && !held {
        count(Counter::Unheld);
    }
    let dedup_end = p.last_event_ns.saturating_add(cfg.dedup_window_ns);
    let again_at = p.last_event_ns.saturating_add(AGAIN_AFTER_NS);
    let lasts = if sent == Emitted::Lost {
        // Not told: try again on the next SYN.
        Until::Now
    } else if sent == Emitted::OverBudget {
        // Not told, but held: the next SYN tries again. (`Until::Now` with a held decision
        // leaves a register the verifier refuses to read uninitialized on this path.)
        Until::At(now)
    } else if held {
        until(earliest(earliest(dedup_end, hold_end), again_at))
    } else {
        until(dedup_end)
    };
    p.decision = if held {
        Decision::Held
    } else {
        Decision::Unknown
    } as u8;
    (
        if held {
            Counter::Held
        } else {
            Counter::Unknown
        },
        lasts,
    )
}

/// How soon after its last event a held source's SYN is reported again: below TCP's first
/// retransmit (1 s), so the retransmit is reported, and at most once per this while held.
const AGAIN_AFTER_NS: u64 = 800_000_000;

/// What the new-peer event will say about this SYN.
struct Origin {
    dst_port: u16,
    ifindex: u32,
}

/// What became of a source's report.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Emitted {
    /// Written now.
    Now,
    /// Not due: reported earlier.
    Before,
    /// Not written: this CPU's event budget for its class is spent; its next SYN tries again.
    OverBudget,
    /// Not written: the ring buffer is full.
    Lost,
}

/// Writes a new-peer event, unless this CPU's event budget for its class is spent or the
/// ring buffer is full (each counted): the source is then not reported, and its next SYN
/// tries again. First SYNs and the rest (retransmits, returning sources) have a bucket each,
/// so a flood of one-SYN spoofed sources cannot spend what real senders' retransmits need.
/// The record is submitted with no flag: the kernel wakes the reader only when this is the
/// first record it has not read (it had caught up, so it waits), never per record while it
/// is behind — a flood costs no wakeup per SYN (a wakeup costs more than the rest of the
/// SYN), and a lone new sender's report wakes the daemon at once, with no timer polling.
#[inline(always)]
fn emit<F: Family>(
    addr: F::Addr,
    origin: &Origin,
    cfg: &DatapathConfig,
    now: u64,
    why: EventWhy,
) -> Emitted {
    let Some(budget) = maps::EVENT_BUDGET.get_ptr_mut(0) else {
        return Emitted::Lost;
    };
    // SAFETY: this CPU's slot, and BPF programs are not preempted on a CPU mid-run.
    let budget = unsafe { &mut *budget };
    let bucket = if why == EventWhy::First {
        &mut budget.first
    } else {
        &mut budget.again
    };
    if !spend(bucket, cfg.events_per_s, now) {
        count(Counter::EventsOverBudget);
        return Emitted::OverBudget;
    }
    let Some(mut slot) = maps::EVENTS.reserve::<NewPeerEvent>(0) else {
        count(Counter::EventsLost);
        return Emitted::Lost;
    };
    slot.write(NewPeerEvent::new(
        F::wide(addr),
        F::FAMILY,
        origin.dst_port,
        origin.ifindex,
        now,
        why,
    ));
    slot.submit(0);
    count(Counter::EventsEmitted);
    Emitted::Now
}

/// Takes one event from the token bucket (`rate` per second, up to a second's worth
/// banked); `rate` 0 = unlimited.
#[inline(always)]
fn spend(b: &mut Bucket, rate: u32, now: u64) -> bool {
    if rate == 0 {
        return true;
    }
    let interval = 1_000_000_000 / rate as u64;
    let credit = b
        .credit_ns
        .saturating_add(now.saturating_sub(b.last_ns))
        .min(1_000_000_000);
    b.last_ns = now;
    if credit < interval {
        b.credit_ns = credit;
        return false;
    }
    b.credit_ns = credit - interval;
    true
}
