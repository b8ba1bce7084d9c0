//! [`Counter`]: the per-CPU outcome counters.

/// Indexes of the per-CPU `COUNTERS` array: one per outcome, so every exit path of the
/// datapath is counted exactly once (plus the event and slow-path counters, which come on
/// top).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not a SYN to a screened port: other ports, SYN-ACK, established traffic, ARP, ICMP...
    PassedNotSubject = 0,
    /// Source in the allow list.
    PassedAllow = 1,
    /// Source has a pass verdict.
    PassedVerdict = 2,
    /// Source has a limit verdict (or is in a limit feed) and was within its rate.
    PassedLimit = 3,
    /// Source in the deny list (manual or config entry).
    DroppedDeny = 4,
    /// Source has a drop verdict (its own, or its network's).
    DroppedVerdict = 5,
    /// Source has a limit verdict (or is in a limit feed) and was over its rate.
    Limited = 6,
    /// Unknown source, dropped during the first-contact hold window.
    Held = 7,
    /// Unknown source, passed.
    Unknown = 8,
    /// New-peer events written to the ring buffer.
    EventsEmitted = 9,
    /// New-peer events lost because the ring buffer was full.
    EventsLost = 10,
    /// Truncated or invalid headers (always passed).
    Malformed = 11,
    /// IP fragments (always passed: a non-first fragment has no TCP header to judge).
    Fragment = 12,
    /// Would have been dropped or limited, passed because observe mode is on.
    ObservePassed = 13,
    /// Subject SYN passed without a decision: the daemon's heartbeat is stale (fail-open).
    PassedStale = 14,
    /// A reputation-dropped source's SYN let through (once per explain window) so the MTA
    /// can explain the refusal.
    Explained = 15,
    /// Source in a drop feed.
    DroppedFeed = 16,
    /// Subject SYNs whose source had no decision cached for the current lists, so the lists
    /// were walked (on top of the outcome). High under a flood of new sources, and once per
    /// source after every list change.
    SlowPath = 17,
    /// New-peer events not written because this CPU's event budget
    /// ([`crate::DatapathConfig::events_per_s`]) was spent; the source is not marked as
    /// reported, so its next SYN tries again.
    EventsOverBudget = 18,
    /// Decisions for an unknown source that passed it where `first_contact = "hold"` would
    /// have held it, because the datapath could not have bounded the hold: new sources
    /// arrive faster than the seen maps can remember a held one for its hold window
    /// ([`crate::DatapathConfig::seen_new_per_tick_max`]; the pass is then cached as `unknown`
    /// for the dedup window), or (with `events_lost`, at every SYN) nobody is reading the
    /// reports. On top of `unknown`.
    Unheld = 19,
}

impl Counter {
    /// Number of counters (size of the `COUNTERS` array).
    pub const COUNT: u32 = 20;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::PassedNotSubject,
        Counter::PassedAllow,
        Counter::PassedVerdict,
        Counter::PassedLimit,
        Counter::DroppedDeny,
        Counter::DroppedVerdict,
        Counter::Limited,
        Counter::Held,
        Counter::Unknown,
        Counter::EventsEmitted,
        Counter::EventsLost,
        Counter::Malformed,
        Counter::Fragment,
        Counter::ObservePassed,
        Counter::PassedStale,
        Counter::Explained,
        Counter::DroppedFeed,
        Counter::SlowPath,
        Counter::EventsOverBudget,
        Counter::Unheld,
    ];

    /// Stable snake_case name for stats output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PassedNotSubject => "passed_not_subject",
            Counter::PassedAllow => "passed_allow",
            Counter::PassedVerdict => "passed_verdict",
            Counter::PassedLimit => "passed_limit",
            Counter::DroppedDeny => "dropped_deny",
            Counter::DroppedVerdict => "dropped_verdict",
            Counter::Limited => "limited",
            Counter::Held => "held",
            Counter::Unknown => "unknown",
            Counter::EventsEmitted => "events_emitted",
            Counter::EventsLost => "events_lost",
            Counter::Malformed => "malformed",
            Counter::Fragment => "fragment",
            Counter::ObservePassed => "observe_passed",
            Counter::PassedStale => "passed_stale",
            Counter::Explained => "explained",
            Counter::DroppedFeed => "dropped_feed",
            Counter::SlowPath => "slow_path",
            Counter::EventsOverBudget => "events_over_budget",
            Counter::Unheld => "unheld",
        }
    }
}
