//! The sets of the table and what their elements look like: which set a prefix goes into, its
//! key, the chains a verdict map's elements send packets to, and the names of the dynamic
//! sets the rules fill with per-source state.
//!
//! Prefixes are kept as the eBPF datapath keeps them: one hash set per table, family and
//! prefix length in use, keyed by the masked address, and one rule per set that masks the
//! source and looks it up (longest length first). A SYN costs one hash lookup per length in
//! use, whatever the number of prefixes; an interval set (an rbtree) would cost a walk of
//! about 2·log2(n) nodes, each a cache miss, and refuses overlapping prefixes, which feeds and
//! operators' entries have (BENCHMARKS.md, "nftables backend").

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use ipnet::IpNet;

use super::ruleset::Shape;

/// An address family, as the ruleset spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// `4` or `6`, as set names end.
    pub const fn digit(self) -> &'static str {
        match self {
            Self::V4 => "4",
            Self::V6 => "6",
        }
    }

    /// The protocol keyword of its header (`ip`, `ip6`).
    pub const fn proto(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// What keeps a non-first fragment out of the subject rule: for IPv4, a fragment
    /// offset of 0 (the kernel's fast payload read would take a later fragment's data for a
    /// TCP header, `nft_payload_fast_eval` checking no offset); IPv6 needs nothing (its
    /// header walk gives a later fragment no transport header to read).
    pub const fn not_a_later_fragment(self) -> &'static str {
        match self {
            Self::V4 => " ip frag-off & 0x1fff == 0",
            Self::V6 => "",
        }
    }

    /// The key type of its address sets.
    pub const fn addr_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    pub const fn bits(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// The netmask of a prefix length, as an address.
    pub fn mask(self, len: u8) -> String {
        match self {
            Self::V4 => {
                let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Ipv4Addr::from(m).to_string()
            }
            Self::V6 => {
                let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Ipv6Addr::from(m).to_string()
            }
        }
    }

    /// The source address as a rule matches it against sets of prefix length `len`.
    pub fn source(self, len: u8) -> String {
        if len == self.bits() {
            format!("{} saddr", self.proto())
        } else {
            format!("{} saddr & {}", self.proto(), self.mask(len))
        }
    }
}

/// The kinds of prefix sets, in the order the rules look them up (the datapath's precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Operators', config and host allow entries (a set with a counter per element).
    OwnAllow,
    /// Allow feeds (a verdict map: each prefix to its feed's chain).
    FeedAllow,
    /// Operators' and config deny entries.
    OwnDeny,
    /// Drop feeds.
    FeedDeny,
    /// Limit feeds.
    FeedLimit,
    /// Network verdicts (a verdict map: each prefix to its action's chain, a counter each).
    Network,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::OwnAllow,
        Kind::FeedAllow,
        Kind::OwnDeny,
        Kind::FeedDeny,
        Kind::FeedLimit,
        Kind::Network,
    ];

    const fn stem(self) -> &'static str {
        match self {
            Self::OwnAllow => "allow",
            Self::FeedAllow => "feed_allow",
            Self::OwnDeny => "deny",
            Self::FeedDeny => "feed_deny",
            Self::FeedLimit => "feed_limit",
            Self::Network => "net",
        }
    }

    /// Whether its elements carry a chain (a verdict map), not only a key.
    pub const fn is_map(self) -> bool {
        !matches!(self, Self::OwnAllow | Self::OwnDeny)
    }

    /// Whether each element counts its hits (entries shown one by one; feeds count per feed).
    pub const fn counts(self) -> bool {
        matches!(self, Self::OwnAllow | Self::OwnDeny | Self::Network)
    }

    /// Whether its elements can expire (operators' entries and network verdicts).
    pub const fn expires(self) -> bool {
        self.counts()
    }

    /// The set holding its prefixes of one family and length.
    pub fn set(self, family: Family, len: u8) -> String {
        format!("{}{}_{len}", self.stem(), family.digit())
    }
}

/// The key of a prefix in its length's set: the network address, in network byte order.
pub fn key(net: IpNet) -> Vec<u8> {
    match net.trunc() {
        IpNet::V4(n) => n.network().octets().to_vec(),
        IpNet::V6(n) => n.network().octets().to_vec(),
    }
}

/// The key of one address.
pub fn addr_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The address a key holds.
pub fn key_addr(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(key).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(key).ok()?)),
        _ => None,
    }
}

/// The set of source verdicts of one family.
pub fn verdict_set(family: Family) -> String {
    format!("verdict{}", family.digit())
}

/// The map of one family deciding, in one lookup, every source an exact element decides.
pub fn decide_set(family: Family) -> String {
    format!("decide{}", family.digit())
}

/// The set of one family's sources that have an exact element (a /32 or /128 entry, or a
/// verdict) which their decision element may not decide: none (a shorter prefix of a table
/// looked up before outranks it, and may expire first), a limit verdict's (under its rate the
/// element does not match), or one of several (the deciding one may expire first). Only
/// their SYNs take the whole walk (`walk4/6`); every other source's walk skips the exact
/// sets and the verdict map, which cannot hold it: for a new source's first SYN, one small
/// lookup instead of one per exact set (`decide.rs`).
pub fn exact_set(family: Family) -> String {
    format!("exact{}", family.digit())
}

/// The chain of the whole walk, for the sources of [`exact_set`].
pub const fn walk_chain(family: Family) -> &'static str {
    match family {
        Family::V4 => "walk4",
        Family::V6 => "walk6",
    }
}

/// `d` as an `nft` script writes a timeout: days, hours, minutes, seconds and milliseconds
/// (`1d3h46m40s`), as [`crate::duration::format`] writes the config's durations. Never a
/// bare count of milliseconds: `nft` refuses any one number of 10^8 or more (`value too
/// large`), so `100000000ms` (27.8 h) fails where the same time in units loads, and a rules
/// script that fails stops the heartbeat with it.
pub fn nft_time(d: Duration) -> String {
    // A timeout is at least a millisecond (`format` writes zero as `0s`).
    crate::duration::format(d.max(Duration::from_millis(1)))
}

/// The dynamic sets' names carry their timeout, so a new window is a new set (an existing
/// set's timeout cannot change) and the old one goes with the rules that used it.
pub fn seen(f: Family, s: &Shape) -> String {
    format!("seen{}_{}", f.digit(), s.dedup.as_millis())
}

/// How long a source refilled into the known cache stays there (one from a first contact
/// stays as long as its report): short, since it may outlive the report by that much, and
/// long enough that the walk it saves is paid once in a while.
pub fn known_refill(dedup: Duration) -> Duration {
    (dedup / 8).clamp(Duration::from_millis(1), Duration::from_secs(10))
}

pub fn holding(f: Family, hold: Duration) -> String {
    format!("holding{}_{}", f.digit(), hold.as_millis())
}

pub fn explained(f: Family, every: Duration) -> String {
    format!("explained{}_{}", f.digit(), every.as_millis())
}

pub fn meter(f: Family, s: &Shape) -> String {
    format!(
        "meter{}_{}_{}",
        f.digit(),
        s.limit_per_minute,
        s.limit_burst
    )
}

/// How soon after its last report a held source's SYN is reported again (the eBPF datapath's
/// `AGAIN_AFTER_NS`): below TCP's first retransmit (1 s), so the retransmit is reported.
pub const AGAIN_AFTER: Duration = Duration::from_millis(800);

/// Held sources reported within [`AGAIN_AFTER`].
pub fn recent(f: Family) -> String {
    format!("recent{}", f.digit())
}

/// Sources over the event budget at their first SYN: their next SYN within the dedup window
/// (without `hold`; with it, once their hold is over) is reported as a real sender's.
pub fn tried(f: Family, s: &Shape) -> String {
    format!("tried{}_{}", f.digit(), s.dedup.as_millis())
}

/// How long a reported source is remembered as one: its next report after the dedup window
/// says it is back (a sender with a real TCP stack, which the engine evaluates from the
/// budget of retransmits, not of first SYNs). The eBPF datapath remembers a source until its
/// table is full; a dynamic set cannot evict, so it forgets instead: a day covers MTAs'
/// retries, and a flood of spoofed sources that fills the set is out of it a day later.
pub const REMEMBERED: Duration = Duration::from_secs(24 * 3600);

/// Sources reported within [`REMEMBERED`].
pub fn returning(f: Family) -> String {
    format!("returning{}", f.digit())
}

/// The dynamic sets holding per-source reports of one family, with their timeouts:
/// reported, cached as unknown, reported before, held and reported just now (or over the
/// budget), explained. (The token buckets' meter is per source too, but outlives a forgotten
/// source.)
pub fn source_sets_timed(s: &Shape, f: Family) -> Vec<(String, Duration)> {
    let mut v = vec![
        (seen(f, s), s.dedup),
        (known_set(s, f), s.dedup),
        (returning(f), REMEMBERED),
    ];
    if let Some(h) = s.hold {
        v.extend([(holding(f, h), h), (recent(f), AGAIN_AFTER)]);
    }
    if s.events_per_s != 0 {
        v.push((tried(f, s), s.dedup));
    }
    v.extend(s.explain.map(|e| (explained(f, e), e)));
    v
}

/// The names of [`source_sets_timed`].
pub fn source_sets(s: &Shape, f: Family) -> Vec<String> {
    source_sets_timed(s, f)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// The cache of sources known to be unknown and already reported, of one family (see
/// [`known_refill`]), flushed whenever a list changes.
pub fn known_set(s: &Shape, f: Family) -> String {
    format!("known{}_{}", f.digit(), s.dedup.as_millis())
}

/// The set of sources whose refusal was explained within the explain window.
pub fn explained_set(s: &Shape, f: Family) -> Option<String> {
    s.explain.map(|e| explained(f, e))
}

/// The set whose one element is the daemon's heartbeat.
pub const ALIVE: &str = "alive";
/// The key of that element: `tcp` (every subject SYN's `meta l4proto`).
pub const ALIVE_KEY: u8 = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_written_in_units_nft_reads_whatever_its_length() {
        for (ms, want) in [
            (0, "1ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (30_000, "30s"),
            (99_999_999, "1d3h46m39s999ms"),
            (100_000_000, "1d3h46m40s"),
            (172_800_000, "2d"),
            (86_400_000 * 1000 + 61_001, "1000d1m1s1ms"),
        ] {
            assert_eq!(nft_time(Duration::from_millis(ms)), want, "{ms} ms");
        }
    }

    #[test]
    fn masks_and_sources() {
        assert_eq!(Family::V4.mask(24), "255.255.255.0");
        assert_eq!(Family::V4.mask(0), "0.0.0.0");
        assert_eq!(Family::V6.mask(64), "ffff:ffff:ffff:ffff::");
        assert_eq!(Family::V4.source(32), "ip saddr");
        assert_eq!(Family::V6.source(56), "ip6 saddr & ffff:ffff:ffff:ff00::");
    }

    #[test]
    fn keys_are_networks() {
        let net: IpNet = "192.0.2.77/24".parse().unwrap();
        assert_eq!(key(net), vec![192, 0, 2, 0]);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(key_addr(&addr_key(ip)), Some(ip));
        assert_eq!(Kind::FeedDeny.set(Family::V6, 64), "feed_deny6_64");
    }
}
