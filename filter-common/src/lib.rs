//! Everything the datapath (`filter-ebpf`) and userspace (`filter-user`) must agree on.
//!
//! Every type here is `#[repr(C)]` with its padding spelled out, because the kernel copies map
//! keys and values byte for byte: an implicit hole would carry stack garbage into a hash key
//! and make two equal keys differ. Addresses are stored in network byte order, exactly as they
//! appear in the packet, so the datapath never swaps bytes.
#![no_std]

/// The most destination ports the datapath screens (the `ports` array in [`DatapathConfig`]).
pub const MAX_PORTS: usize = 64;

/// Address family tags used in [`NewPeerEvent::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Names of the maps in the eBPF object. The eBPF statics carry exactly these names (a unit
/// test in filter-user checks the object against this list); userspace looks maps up, pins
/// them and sizes them by these names only.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const ALLOW_V4: &str = "ALLOW_V4";
    pub const ALLOW_V6: &str = "ALLOW_V6";
    pub const DENY_V4: &str = "DENY_V4";
    pub const DENY_V6: &str = "DENY_V6";
    pub const VERDICTS_V4: &str = "VERDICTS_V4";
    pub const VERDICTS_V6: &str = "VERDICTS_V6";
    pub const SEEN_V4: &str = "SEEN_V4";
    pub const SEEN_V6: &str = "SEEN_V6";
    pub const BUCKETS_V4: &str = "BUCKETS_V4";
    pub const BUCKETS_V6: &str = "BUCKETS_V6";

    /// Every map, in a stable order (pinning, status and the name check walk this).
    pub const ALL: [&str; 13] = [
        CONFIG,
        COUNTERS,
        EVENTS,
        ALLOW_V4,
        ALLOW_V6,
        DENY_V4,
        DENY_V6,
        VERDICTS_V4,
        VERDICTS_V6,
        SEEN_V4,
        SEEN_V6,
        BUCKETS_V4,
        BUCKETS_V6,
    ];
}

/// Names of the two entry points in the eBPF object.
pub mod program_names {
    pub const XDP: &str = "mxscreen_xdp";
    pub const TC: &str = "mxscreen_tc";
}

/// Compile-time default map sizes. Userspace overrides them at load time from its config;
/// these are what the object declares and what the tests load with.
pub mod default_sizes {
    pub const VERDICTS: u32 = 256 * 1024;
    /// Peers reported within one dedup window (30 s by default): 64k new peers in 30 s is a
    /// flood; beyond it the oldest are forgotten and merely reported again.
    pub const SEEN: u32 = 64 * 1024;
    pub const BUCKETS: u32 = 64 * 1024;
    pub const DENY: u32 = 1024 * 1024;
    pub const ALLOW: u32 = 64 * 1024;
    /// Ring buffer for new-peer events, bytes (a power of two, a multiple of the page size).
    pub const EVENTS_BYTES: u32 = 256 * 1024;
}

/// What the datapath does with a subject SYN whose source has a verdict.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Pass = 0,
    /// Token bucket per source: SYNs within rate and burst pass, the rest are dropped.
    Limit = 1,
    Drop = 2,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pass, Action::Limit, Action::Drop];

    /// The action called `name` (the inverse of [`Action::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Stable lower-case name for logs, `list` and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Limit => "limit",
            Self::Drop => "drop",
        }
    }

    /// The action the datapath applies for a stored byte: an unknown value passes.
    pub const fn from_u8_or_pass(v: u8) -> Self {
        match Self::from_u8(v) {
            Some(a) => a,
            None => Self::Pass,
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Pass),
            1 => Some(Self::Limit),
            2 => Some(Self::Drop),
            _ => None,
        }
    }
}

/// Why an entry is in a map. The datapath never looks at it; it is stored so that
/// `list`, `check` and the logs can say where a decision came from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Unspecified = 0,
    /// An operator's `block` / `allow` command.
    Manual = 1,
    /// `lists.allow` / `lists.deny` in the config file.
    Config = 2,
    /// The reputation engine's score (DNSBL/DNSWL/rDNS evidence).
    Reputation = 3,
    /// DNS trouble: a short-lived pass so the peer is asked again soon.
    Tempfail = 4,
    /// A blocklist feed file.
    Feed = 5,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Unspecified,
        Reason::Manual,
        Reason::Config,
        Reason::Reputation,
        Reason::Tempfail,
        Reason::Feed,
    ];

    /// The reason called `name` (the inverse of [`Reason::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Stable lower-case name for logs, `list` and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Manual => "manual",
            Self::Config => "config",
            Self::Reputation => "reputation",
            Self::Tempfail => "tempfail",
            Self::Feed => "feed",
        }
    }

    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Manual,
            2 => Self::Config,
            3 => Self::Reputation,
            4 => Self::Tempfail,
            5 => Self::Feed,
            _ => Self::Unspecified,
        }
    }
}

/// Value of the verdict maps (`VERDICTS_V4`/`_V6`), keyed by the full source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// An [`Action`] as u8 (an unknown value is treated as pass).
    pub action: u8,
    /// A [`Reason`] as u8.
    pub reason: u8,
    pub _pad: [u8; 6],
    /// CLOCK_MONOTONIC_COARSE nanoseconds after which the verdict no longer counts; 0 = never.
    pub expires_ns: u64,
    /// SYNs this verdict decided (bumped atomically by the datapath, read by `list`).
    pub hits: u64,
    /// For a reputation `drop`: CLOCK_MONOTONIC_COARSE ns from which the next SYN is let
    /// through to the MTA so it can explain the refusal (see
    /// [`DatapathConfig::explain_window_ns`]); 0 = the next SYN. The datapath moves it one
    /// window ahead each time it lets one through.
    pub explain_at_ns: u64,
}

impl Verdict {
    /// A fresh verdict (no hits yet) expiring at `expires_ns` (0 = never).
    pub const fn new(action: Action, reason: Reason, expires_ns: u64) -> Self {
        Self {
            action: action as u8,
            reason: reason as u8,
            _pad: [0; 6],
            expires_ns,
            hits: 0,
            explain_at_ns: 0,
        }
    }

    /// Whether the datapath lets one SYN per explain window through to the MTA: only a
    /// reputation `drop` is explained. Manual blocks, lists and feeds are the operator's
    /// word and are never explained.
    pub const fn is_explained(&self) -> bool {
        self.action == Action::Drop as u8 && self.reason == Reason::Reputation as u8
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

/// Value of the allow/deny LPM tries (`ALLOW_*`, `DENY_*`), keyed by prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// A [`Reason`] as u8.
    pub reason: u8,
    pub _pad: [u8; 7],
    /// CLOCK_MONOTONIC_COARSE nanoseconds after which the entry is ignored; 0 = never. The datapath
    /// honours it itself, so a timed block ends on time even if the daemon is busy.
    pub expires_ns: u64,
    /// SYNs this entry decided.
    pub hits: u64,
}

impl ListEntry {
    /// A fresh entry (no hits yet) expiring at `expires_ns` (0 = never).
    pub const fn new(reason: Reason, expires_ns: u64) -> Self {
        Self {
            reason: reason as u8,
            _pad: [0; 7],
            expires_ns,
            hits: 0,
        }
    }

    /// The stored reason.
    pub const fn reason(&self) -> Reason {
        Reason::from_u8(self.reason)
    }
}

/// Value of the "seen" LRU maps: which unknown peers were already reported to userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// When the peer's first subject SYN arrived; the hold window counts from here.
    pub first_seen_ns: u64,
    /// When the last new-peer event for it was emitted; the dedup window counts from here.
    pub last_event_ns: u64,
}

/// Runtime configuration: the single element of the `CONFIG` array. Userspace rewrites it
/// to change behaviour without reloading the program. An all-zero config (a fresh map, or a
/// daemon that never wrote it) screens no port at all: the datapath fails open.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Destination ports that make a SYN subject to screening, host byte order; only the
    /// first `port_count` are used.
    pub ports: [u16; MAX_PORTS],
    pub port_count: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Limit action, GCRA form of a token bucket: one SYN per `limit_interval_ns` on average
    /// (1e9 / rate) ...
    pub limit_interval_ns: u64,
    /// ... with bursts of up to `burst` SYNs: `(burst - 1) * limit_interval_ns`.
    pub limit_tolerance_ns: u64,
    /// An unknown peer is reported to userspace at most once per this window.
    pub dedup_window_ns: u64,
    /// With `FLAG_HOLD`, an unknown peer's SYNs are dropped for at most this long after its
    /// first SYN, so that TCP's retransmitted SYN meets the verdict.
    pub hold_window_ns: u64,
    /// A reputation `drop` lets one SYN through per this window (the first after the verdict,
    /// then one per window), so the MTA can tell the sender why it is refused. 0 = never.
    pub explain_window_ns: u64,
    /// CLOCK_MONOTONIC_COARSE ns of the daemon's last heartbeat.
    pub alive_ns: u64,
    /// Fail-open guard: when non-zero and the heartbeat is older than this, every subject SYN
    /// passes (counted as `passed_stale`). Covers a dead or hung daemon whatever the attach
    /// path, including a netlink tc filter that outlives its process. 0 = no guard (tests).
    pub stale_after_ns: u64,
}

/// Decide and count, but never drop or limit.
pub const FLAG_OBSERVE: u32 = 1 << 0;
/// `first_contact = hold`: drop unknown peers' SYNs for the hold window.
pub const FLAG_HOLD: u32 = 1 << 1;

impl DatapathConfig {
    /// A config that screens nothing (the fail-open state).
    pub const fn empty() -> Self {
        Self {
            ports: [0; MAX_PORTS],
            port_count: 0,
            flags: 0,
            limit_interval_ns: 0,
            limit_tolerance_ns: 0,
            dedup_window_ns: 0,
            hold_window_ns: 0,
            explain_window_ns: 0,
            alive_ns: 0,
            stale_after_ns: 0,
        }
    }

    /// Sets the screened ports; returns `false` (and changes nothing) when there are more
    /// than [`MAX_PORTS`].
    pub fn set_ports(&mut self, ports: &[u16]) -> bool {
        if ports.len() > MAX_PORTS {
            return false;
        }
        self.ports = [0; MAX_PORTS];
        self.ports[..ports.len()].copy_from_slice(ports);
        self.port_count = ports.len() as u32;
        true
    }

    /// Sets the limit action's rate (SYNs per minute, > 0) and burst (>= 1).
    pub fn set_limit(&mut self, per_minute: u32, burst: u32) {
        let per_minute = if per_minute == 0 { 1 } else { per_minute } as u64;
        let burst = if burst == 0 { 1 } else { burst } as u64;
        self.limit_interval_ns = 60_000_000_000 / per_minute;
        self.limit_tolerance_ns = (burst - 1) * self.limit_interval_ns;
    }
}

/// A new unknown peer, sent from the datapath to userspace over the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPeerEvent {
    /// Source address, network byte order; IPv4 uses the first 4 bytes, the rest are zero.
    pub addr: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    pub _pad: u8,
    /// Destination port of the SYN, host byte order.
    pub dst_port: u16,
    /// Interface the SYN arrived on.
    pub ifindex: u32,
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the SYN.
    pub ts_ns: u64,
}

impl NewPeerEvent {
    /// An event for a source address in the datapath's 16-byte form (IPv4 in the first four
    /// bytes, `family` saying which).
    pub const fn new(addr: [u8; 16], family: u8, dst_port: u16, ifindex: u32, ts_ns: u64) -> Self {
        Self {
            addr,
            family,
            _pad: 0,
            dst_port,
            ifindex,
            ts_ns,
        }
    }
}

/// Indexes of the per-CPU `COUNTERS` array: one per outcome, so every exit path of the
/// datapath is counted exactly once (plus the event counters, which come on top).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not a SYN to a screened port: other ports, SYN-ACK, established traffic, ARP, ICMP...
    PassedNotSubject = 0,
    /// Source in the allow list.
    PassedAllow = 1,
    /// Source has a pass verdict.
    PassedVerdict = 2,
    /// Source has a limit verdict and was within its rate.
    PassedLimit = 3,
    /// Source in the deny list.
    DroppedDeny = 4,
    /// Source has a drop verdict.
    DroppedVerdict = 5,
    /// Source has a limit verdict and was over its rate.
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
}

impl Counter {
    /// Number of counters (size of the `COUNTERS` array).
    pub const COUNT: u32 = 16;

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
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], contain only integers and byte arrays, and spell
    // out their padding, so every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::Verdict {}
    unsafe impl aya::Pod for super::ListEntry {}
    unsafe impl aya::Pod for super::Seen {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::NewPeerEvent {}
}

/// [`Action`] and [`Reason`] travel by their names (`"drop"`, `"manual"`), as `list --json`,
/// the logs and the control protocol show them.
#[cfg(feature = "user")]
mod names_serde {
    use core::{fmt, marker::PhantomData};

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

    use super::{Action, Reason};

    /// Reads a name into `T` through `from_name`, whether the string is borrowed or not.
    struct ByName<T>(fn(&str) -> Option<T>, &'static str, PhantomData<T>);

    impl<T> de::Visitor<'_> for ByName<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    impl Serialize for Action {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }

    impl<'de> Deserialize<'de> for Action {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(ByName(
                Action::from_name,
                "pass, limit or drop",
                PhantomData,
            ))
        }
    }

    impl Serialize for Reason {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }

    impl<'de> Deserialize<'de> for Reason {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(ByName(Reason::from_name, "a reason name", PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<Verdict>(), 1 + 1 + 6 + 8 + 8 + 8);
        assert_eq!(size_of::<ListEntry>(), 1 + 7 + 8 + 8);
        assert_eq!(size_of::<Seen>(), 16);
        assert_eq!(size_of::<DatapathConfig>(), 2 * MAX_PORTS + 4 + 4 + 7 * 8);
        assert_eq!(size_of::<NewPeerEvent>(), 16 + 1 + 1 + 2 + 4 + 8);
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
            assert_eq!(Action::from_u8(a as u8), Some(a));
        }
        for r in Reason::ALL {
            assert_eq!(Reason::from_name(r.name()), Some(r));
            assert_eq!(Reason::from_u8(r as u8), r);
        }
        // An unknown action byte passes, as the datapath treats it.
        assert_eq!(
            Verdict::new(Action::Drop, Reason::Manual, 0).action(),
            Action::Drop
        );
        let mut v = Verdict::new(Action::Drop, Reason::Manual, 0);
        v.action = 77;
        assert_eq!(v.action(), Action::Pass);
    }

    #[test]
    fn limit_is_gcra_of_rate_and_burst() {
        let mut c = DatapathConfig::empty();
        c.set_limit(6, 3);
        assert_eq!(c.limit_interval_ns, 10_000_000_000);
        assert_eq!(c.limit_tolerance_ns, 20_000_000_000);
        c.set_limit(0, 0);
        assert_eq!(c.limit_tolerance_ns, 0);
    }

    #[test]
    fn ports_are_bounded() {
        let mut c = DatapathConfig::empty();
        assert!(c.set_ports(&[25, 587]));
        assert_eq!((c.port_count, c.ports[0], c.ports[1]), (2, 25, 587));
        assert!(!c.set_ports(&[1; MAX_PORTS + 1]));
        assert_eq!(c.port_count, 2);
    }
}
