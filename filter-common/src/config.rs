//! [`DatapathConfig`]: the runtime configuration the datapath reads for every subject SYN.

use crate::MAX_PORTS;

/// Runtime configuration: the single element of the `CONFIG` array. Userspace rewrites it
/// to change behaviour without reloading the program. An all-zero config (a fresh map, or a
/// daemon that never wrote it) screens no port at all: the datapath fails open.
///
/// `list_gen` and the clock calibration (`clock_*`, `tick_ns`) belong to `DatapathMaps`,
/// which fills them in on every write: callers leave them as they read them, or zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Destination ports that make a SYN subject to screening, host byte order; only the
    /// first `port_count` are used. (What userspace shows; the datapath reads `port_bits`.)
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
    /// Generation of the lists and of everything a cached decision depends on: a source's
    /// cached decision ([`crate::Peer::list_gen`]) counts only while it equals this. Never 0.
    pub list_gen: u32,
    /// New-peer events each CPU may write per second (a token bucket holding up to a
    /// second's worth); 0 = unlimited. Set from the daemon's evaluation budget: events it
    /// could never evaluate would only cost the datapath their ring writes.
    pub events_per_s: u32,
    /// Clock calibration. The datapath reads jiffies (an inlined load) instead of calling
    /// the coarse-clock helper (a call per SYN; BENCHMARKS.md has the cost) and converts:
    /// `now = clock_ns + (jiffies - clock_jiffies) * tick_ns`. Userspace samples both clocks
    /// together on every config write. `tick_ns` 0: not calibrated: nothing is cached, and
    /// the coarse clock is read for everything.
    pub clock_jiffies: u64,
    pub clock_ns: u64,
    pub tick_ns: u64,
    /// `alive_ns + stale_after_ns` in jiffies by the same calibration (`DatapathMaps` fills it;
    /// 0 with no guard): the cached path's stale check is one compare.
    pub stale_jiffies: u64,
    /// The same ports as a bitmap (bit `p % 64` of word `p / 64`): one load and a shift per
    /// SYN, whatever the number of ports. Written together with `ports` by `set_ports`.
    pub port_bits: [u64; PORT_WORDS],
    /// The most new sources a tick (counted in [`crate::NewSources`], 2^30 ns) the seen maps
    /// take while every source held stays in them for its whole hold window: half a map per
    /// hold window (the kernel's LRU is approximate). Above it, this tick or the last,
    /// nothing is held (counted as `unheld`): a held source the LRU forgot would be new again
    /// at its retransmit, and held again, for as long as the flood lasts. `DatapathMaps`
    /// fills it from the map's real size; 0 = no bound.
    pub seen_new_per_tick_max: u64,
}

/// Words of [`DatapathConfig::port_bits`]: one bit per port.
pub const PORT_WORDS: usize = 65536 / 64;

/// Decide and count, but never drop or limit.
pub const FLAG_OBSERVE: u32 = 1 << 0;
/// `first_contact = hold`: drop unknown peers' SYNs for the hold window.
pub const FLAG_HOLD: u32 = 1 << 1;
/// An MTA asks: the daemon sets this while the MTA's last question is within
/// `policy.explain_every`. Without it no drop is explained.
pub const FLAG_EXPLAIN: u32 = 1 << 2;

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
            list_gen: 0,
            events_per_s: 0,
            clock_jiffies: 0,
            clock_ns: 0,
            tick_ns: 0,
            stale_jiffies: 0,
            port_bits: [0; PORT_WORDS],
            seen_new_per_tick_max: 0,
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
        self.port_bits = [0; PORT_WORDS];
        for p in ports {
            self.port_bits[usize::from(*p) / 64] |= 1 << (p % 64);
        }
        true
    }

    /// The last jiffy at which the calibrated clock has not passed `ns` (rounded down, in
    /// the past too); `None` uncalibrated. A cached deadline holds while jiffies are below it;
    /// the heartbeat is stale once they are above it.
    pub const fn jiffies_at(&self, ns: u64) -> Option<u64> {
        let tick = self.tick_ns;
        if tick == 0 {
            return None;
        }
        if ns >= self.clock_ns {
            return Some(self.clock_jiffies + (ns - self.clock_ns) / tick);
        }
        // Before the calibration: floor of a negative offset (no signed division here: the
        // datapath's target lacks it).
        let behind = (self.clock_ns - ns).div_ceil(tick);
        Some(self.clock_jiffies.saturating_sub(behind))
    }

    /// Whether SYNs to `port` are screened.
    #[inline(always)]
    pub fn screens(&self, port: u16) -> bool {
        match self.port_bits.get(usize::from(port) / 64) {
            Some(word) => word >> (port % 64) & 1 != 0,
            None => false,
        }
    }

    /// Sets the limit action's rate (SYNs per minute, > 0) and burst (>= 1).
    pub fn set_limit(&mut self, per_minute: u32, burst: u32) {
        let per_minute = if per_minute == 0 { 1 } else { per_minute } as u64;
        let burst = if burst == 0 { 1 } else { burst } as u64;
        self.limit_interval_ns = 60_000_000_000 / per_minute;
        self.limit_tolerance_ns = (burst - 1).saturating_mul(self.limit_interval_ns);
    }

    /// Whether decisions cached under `self` may differ under `other`: the windows and the
    /// hold and explain flags shape them (the limit rate and observe are applied live, not
    /// cached). FLAG_EXPLAIN changes at most twice per `explain_every` (on at the first
    /// question, off after a window without one), so re-deciding every cached source then
    /// costs one slow-path pass per source per toggle: cheap, and a toggle takes effect on
    /// the next SYN.
    pub const fn shapes_decisions_unlike(&self, other: &Self) -> bool {
        const SHAPING: u32 = FLAG_HOLD | FLAG_EXPLAIN;
        self.flags & SHAPING != other.flags & SHAPING
            || self.dedup_window_ns != other.dedup_window_ns
            || self.hold_window_ns != other.hold_window_ns
            || self.explain_window_ns != other.explain_window_ns
    }
}
