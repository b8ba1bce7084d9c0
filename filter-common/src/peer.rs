//! Everything the datapath knows about one source address, in one hash entry ([`Peer`], the
//! value of `PEERS_V4`/`_V6`): the daemon's verdict, the decision cached for the source, and
//! the datapath's own per-source state (first contact, last report, token bucket).
//!
//! [`PeerVerdict`] and [`Seen`] are the views userspace reads and writes; they are not map values
//! themselves any more, `DatapathMaps` converts.

use crate::{Action, Reason};

/// A cached verdict as userspace sees it: what the daemon decided for one address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerVerdict {
    /// An [`Action`] as u8 (an unknown value is treated as pass).
    pub action: u8,
    /// A [`Reason`] as u8.
    pub reason: u8,
    /// `VERDICT_*` bits.
    pub flags: u8,
    pub _pad: [u8; 5],
    /// CLOCK_MONOTONIC_COARSE nanoseconds after which the verdict no longer counts;
    /// [`crate::NEVER`]: never.
    pub expires_ns: u64,
    /// SYNs this verdict decided (bumped by the datapath, read by `list`).
    pub hits: u64,
    /// For a reputation `drop`: CLOCK_MONOTONIC_COARSE ns from which the next SYN is let
    /// through to the MTA so it can explain the refusal (see
    /// [`crate::DatapathConfig::explain_window_ns`]); 0 = the next SYN. The datapath moves it
    /// one window ahead each time it lets one through, and keeps it in whole seconds
    /// (rounded up).
    pub explain_at_ns: u64,
}

impl PeerVerdict {
    /// A fresh verdict (no hits yet) expiring at `expires_ns` ([`crate::NEVER`]: never).
    pub const fn new(action: Action, reason: Reason, expires_ns: u64) -> Self {
        Self {
            action: action as u8,
            reason: reason as u8,
            flags: 0,
            _pad: [0; 5],
            expires_ns,
            hits: 0,
            explain_at_ns: 0,
        }
    }

    /// Whether the datapath may let one SYN per explain window through to the MTA (while
    /// [`crate::FLAG_EXPLAIN`] is set): only a reputation `drop` whose writer marked the
    /// sender as one to explain to ([`VERDICT_EXPLAIN`]). Manual blocks, lists and feeds are
    /// the operator's word and are never explained.
    pub const fn is_explained(&self) -> bool {
        self.action == Action::Drop as u8
            && self.reason == Reason::Reputation as u8
            && self.flags & VERDICT_EXPLAIN != 0
    }

    /// The stored action as the datapath applies it (an unknown byte passes).
    pub const fn action(&self) -> Action {
        Action::from_u8_or_pass(self.action)
    }

    /// The stored reason.
    pub const fn reason(&self) -> Reason {
        Reason::from_u8(self.reason)
    }
}

/// [`PeerVerdict::flags`]: the sender looks like a mail server whose operator can read an
/// explained refusal (forward-confirmed rDNS, or `policy.explain_to = "all"`).
pub const VERDICT_EXPLAIN: u8 = 1 << 0;

/// When an unknown peer was first seen and last reported to userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// When the peer's first subject SYN arrived; the hold window counts from here.
    pub first_seen_ns: u64,
    /// When the last new-peer event for it was emitted; the dedup window counts from here.
    pub last_event_ns: u64,
}

const NS_PER_S: u64 = 1_000_000_000;

/// New sources the seen maps took, a tick (2^30 ns, 1.07 s: a shift, where a division by 1e9
/// would cost every new source's SYN a divide) at a time: the value of `SEEN_RATE`, one
/// element every CPU counts into. What bounds a hold
/// ([`crate::DatapathConfig::seen_new_per_tick_max`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewSources {
    /// The tick of CLOCK_MONOTONIC_COARSE that `this` counts.
    pub tick: u64,
    /// New sources in `tick`.
    pub this: u64,
    /// New sources in the tick before it (0 if it saw none counted).
    pub last: u64,
}

impl NewSources {
    /// Nanoseconds of a tick, as a shift.
    pub const TICK_SHIFT: u32 = 30;

    /// The tick `now_ns` falls in.
    pub const fn tick_of(now_ns: u64) -> u64 {
        now_ns >> Self::TICK_SHIFT
    }

    /// New sources a tick as of `now_ns`: the busier of this tick and the last (a tick just
    /// begun has counted little yet).
    pub const fn per_tick(&self, now_ns: u64) -> u64 {
        let t = Self::tick_of(now_ns);
        if t == self.tick {
            if self.this > self.last {
                self.this
            } else {
                self.last
            }
        } else if t == self.tick + 1 {
            self.this
        } else {
            0
        }
    }
}

/// Nanoseconds in whole seconds, rounded up (saturating at the u32 range, 136 years).
pub const fn seconds_up(ns: u64) -> u32 {
    let s = ns.div_ceil(NS_PER_S);
    if s > u32::MAX as u64 {
        u32::MAX
    } else {
        s as u32
    }
}

/// [`Peer::flags`]: the entry holds a verdict from userspace.
pub const PEER_VERDICT: u8 = 1 << 0;
/// The verdict carries [`VERDICT_EXPLAIN`].
pub const PEER_EXPLAIN: u8 = 1 << 1;

/// What a subject SYN from a source meets, cached in its [`Peer`] entry so that the next SYN
/// costs one hash lookup. Each names exactly one outcome counter and one hit counter.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing cached: the lists are walked (the slow path).
    None = 0,
    /// An allow entry: pass. Hits counted in the entry's slot.
    Allow = 1,
    /// A deny entry (manual, config): drop.
    Deny = 2,
    /// A drop feed's entry: drop, counted apart (`dropped_feed`).
    DenyFeed = 3,
    /// A limit feed's entry: the source's token bucket.
    ListLimit = 4,
    /// A prefix verdict (an IPv6 network whose addresses rotate): drop.
    PrefixDrop = 5,
    /// The source's own verdict, pass. Hits counted in the verdict.
    VerdictPass = 6,
    /// The source's own verdict, drop.
    VerdictDrop = 7,
    /// The source's own verdict, limit: its token bucket.
    VerdictLimit = 8,
    /// Unknown and reported: pass until the dedup window ends.
    Unknown = 9,
    /// Unknown, reported, inside the hold window: drop.
    Held = 10,
}

/// The value of `PEERS_V4`/`_V6`, keyed by the full source address (network byte order).
///
/// The fields read on every SYN come first, next to the key: a cached decision is one hash
/// lookup, a generation compare, a jiffies compare and a counter. Userspace writes the verdict
/// fields and zeroes `list_gen` (a write replaces the whole entry, so no cached decision survives a
/// verdict change); the datapath writes the rest in place.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `DatapathConfig::list_gen` when `decision` was made; 0 = nothing cached.
    pub list_gen: u32,
    /// A [`Decision`] as u8.
    pub decision: u8,
    /// The verdict's [`Action`] (valid with [`PEER_VERDICT`]).
    pub action: u8,
    /// The verdict's [`Reason`].
    pub reason: u8,
    /// `PEER_*` bits.
    pub flags: u8,
    /// `HITS` slot of the list entry that decided (list decisions only).
    pub slot: u32,
    /// [`PeerVerdict::explain_at_ns`] in whole seconds of the same clock, rounded up (explain
    /// windows are hours; the entry stays 64 bytes, so with its key it fills exactly two
    /// cache lines).
    pub explain_at_s: u32,
    /// The cached decision holds while jiffies are below this: the first expiry, window end
    /// or explanation due among what made it, converted with the config's clock calibration
    /// and rounded down (a decision ends early, never late). `u64::MAX`: no time limit; 0:
    /// nothing cached.
    pub until_jiffies: u64,
    /// SYNs the verdict decided.
    pub hits: u64,
    /// The verdict's expiry; [`crate::NEVER`]: never.
    pub expires_ns: u64,
    /// First subject SYN of an unknown source (0: not seen as unknown).
    pub first_seen_ns: u64,
    /// Last new-peer event for it (0: never reported).
    pub last_event_ns: u64,
    /// GCRA theoretical arrival time of its token bucket (limit decisions).
    pub tat_ns: u64,
}

impl Peer {
    /// An entry with nothing in it.
    pub const fn empty() -> Self {
        Self {
            list_gen: 0,
            decision: Decision::None as u8,
            action: 0,
            reason: 0,
            flags: 0,
            slot: 0,
            explain_at_s: 0,
            until_jiffies: 0,
            hits: 0,
            expires_ns: 0,
            first_seen_ns: 0,
            last_event_ns: 0,
            tat_ns: 0,
        }
    }

    /// The verdict this entry holds, if any.
    pub const fn verdict(&self) -> Option<PeerVerdict> {
        if self.flags & PEER_VERDICT == 0 {
            return None;
        }
        Some(PeerVerdict {
            action: self.action,
            reason: self.reason,
            flags: if self.flags & PEER_EXPLAIN != 0 {
                VERDICT_EXPLAIN
            } else {
                0
            },
            _pad: [0; 5],
            expires_ns: self.expires_ns,
            hits: self.hits,
            explain_at_ns: self.explain_at_s as u64 * NS_PER_S,
        })
    }

    /// Sets the verdict and drops whatever decision was cached.
    pub const fn set_verdict(&mut self, v: &PeerVerdict) {
        self.action = v.action;
        self.reason = v.reason;
        self.expires_ns = v.expires_ns;
        self.hits = v.hits;
        self.explain_at_s = seconds_up(v.explain_at_ns);
        self.flags |= PEER_VERDICT;
        if v.flags & VERDICT_EXPLAIN != 0 {
            self.flags |= PEER_EXPLAIN;
        } else {
            self.flags &= !PEER_EXPLAIN;
        }
        self.forget_decision();
    }

    /// Removes the verdict (the per-source state stays) and the cached decision.
    pub const fn clear_verdict(&mut self) {
        self.action = 0;
        self.reason = 0;
        self.expires_ns = 0;
        self.hits = 0;
        self.explain_at_s = 0;
        self.flags &= !(PEER_VERDICT | PEER_EXPLAIN);
        self.forget_decision();
    }

    /// Nothing cached: the next SYN walks the lists.
    pub const fn forget_decision(&mut self) {
        self.list_gen = 0;
        self.decision = Decision::None as u8;
        self.until_jiffies = 0;
    }

    /// First contact and last report, if the source was ever seen as unknown.
    pub const fn seen(&self) -> Option<Seen> {
        if self.first_seen_ns == 0 && self.last_event_ns == 0 {
            return None;
        }
        Some(Seen {
            first_seen_ns: self.first_seen_ns,
            last_event_ns: self.last_event_ns,
        })
    }
}
