//! `[resolver]`: which recursive resolvers the engine asks, and how much DNS it may do.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use documented::DocumentedFields;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::{duration, invalid_key::InvalidKey, reputation::dnsbl::TXT_WAIT};

/// `[resolver]`: how the engine talks DNS, and how much of it it may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Recursive resolvers to ask, as `"ip"` or `"ip:port"` (`"[v6]:port"`), UDP with TCP
    /// for truncated answers. Default: empty, meaning the system's `/etc/resolv.conf`.
    /// Point this at a recursive resolver of your own (unbound on the MX): DNSBLs refuse
    /// queries that arrive through public resolvers such as 8.8.8.8 (the engine warns).
    pub nameservers: Vec<Nameserver>,
    /// How long one try of a query may take. Default `1s`: DNSBL mirrors and a local resolver
    /// answer in milliseconds, and a cold lookup through a recursive resolver well within a
    /// second. With `attempts` a query's worst case is 2 s, plus up to 300 ms for a
    /// listing's TXT reason: within `datapath.hold_max` (3 s), so a held first SYN gets its
    /// verdict even while a list times out (`config check` warns when the sum is longer).
    /// A query that fails becomes a short-lived tempfail pass.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Retries after a failed attempt (timeout, SERVFAIL). Default `1`: rides over a lost UDP
    /// packet without tripling the query load while a resolver is down.
    pub attempts: usize,
    /// Evaluations (peers) being resolved at once. Default `64`: each evaluation is at most
    /// `1 + rdns.max_ptr_names + 2 × zones` queries, so a few hundred queries in flight to a
    /// local resolver, well within what unbound serves, and memory stays small.
    pub max_inflight: usize,
    /// New evaluations started per second (token bucket with one second of burst).
    /// Default `200`: about 1 000 queries/s with the default lists to a local caching
    /// resolver — a small share of what the engine and a local resolver sustain on a 2-CPU
    /// host (thousands of evaluations a second), enough for a burst of a few hundred new
    /// senders a second to be evaluated before their SYN is retransmitted, and a flood of
    /// new peers still cannot become a flood of DNS queries. Senders proven real (a
    /// retransmitted SYN, a returning source, one the MTA asked about) are evaluated
    /// before first SYNs. Spamhaus' free use is for non-commercial sites under 100,000 SMTP
    /// connections and 300,000 DNS queries a day (see each zone's `daily_query_quota`); a
    /// busier or commercial site needs a Data Query Service key.
    pub max_lookups_per_sec: u32,
    /// Proven-real peers waiting for an evaluation slot (first SYNs wait in a queue of
    /// their own of one second's budget, newest first); when full, new peers are rejected
    /// (counted; a held one is released). Default `512`: at 200/s about 2.5 s of backlog,
    /// so a queued sender still gets its verdict within hold_max (3 s).
    pub queue_len: usize,
    /// Entries in hickory's own answer cache. Default `0`: verdicts are cached by the daemon
    /// (with their expiry) in the datapath's maps, so a second cache would only hold memory
    /// and serve stale listings.
    pub cache_size: u64,
    /// How often the resolver canary runs (and once at start): each `[[dnsbl]]` zone's
    /// RFC 5782 test points (127.0.0.2 listed, 127.0.0.1 not) and `rdns.canary_ptr`. A zone
    /// whose canary fails (a resolver answering NXDOMAIN, or 127.0.0.2, for everything; a
    /// list refusing us; timeouts) counts for nothing until it passes again, and `status`,
    /// the metrics and the log say so. Default `5m`: a few queries per zone, noticed
    /// within minutes. "0s" turns the canary off.
    #[serde(with = "duration")]
    pub canary_every: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(1),
            attempts: 1,
            max_inflight: 64,
            max_lookups_per_sec: 200,
            queue_len: 512,
            cache_size: 0,
            canary_every: Duration::from_secs(300),
        }
    }
}

/// A nameserver address: an IP with an optional port (default 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nameserver(pub SocketAddr);

impl FromStr for Nameserver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr = if let Ok(ip) = s.parse::<IpAddr>() {
            // "::1:53" is the address ::1:53, and reads as ::1 port 53: refuse the guess.
            if let Some((head, port)) = s.rsplit_once(':')
                && ip.is_ipv6()
                && port.bytes().all(|b| b.is_ascii_digit())
                && head.parse::<Ipv6Addr>().is_ok()
            {
                return Err(format!(
                    "nameserver {s:?} is ambiguous: write \"[{head}]:{port}\" for {head} port {port}, or \"[{s}]\" for the address {s}"
                ));
            }
            SocketAddr::new(ip, 53)
        } else if let Some(v6) = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|r| r.parse::<Ipv6Addr>().ok())
        {
            SocketAddr::new(IpAddr::V6(v6), 53)
        } else {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("invalid nameserver {s:?}: write \"ip\", \"ip:port\" or \"[ipv6]:port\"")
            })?
        };
        usable(addr).map_err(|why| format!("nameserver {s:?} {why}"))?;
        Ok(Nameserver(addr))
    }
}

/// Why no resolver can answer at `addr`, if none can.
fn usable(addr: SocketAddr) -> Result<(), &'static str> {
    let ip = addr.ip();
    if addr.port() == 0 {
        return Err("has port 0, where nothing answers: leave the port out for 53");
    }
    if ip.is_unspecified() {
        return Err("is the unspecified address: name the resolver's own, e.g. 127.0.0.1");
    }
    if ip.is_multicast() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err("is a multicast or broadcast address: name one resolver");
    }
    Ok(())
}

impl fmt::Display for Nameserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.port() == 53 {
            write!(f, "{}", self.0.ip())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for Nameserver {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Nameserver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// Well-known public resolvers. DNSBLs (Spamhaus, DNSWL, ...) answer queries arriving from
/// them with an error code or not at all, so using them silently disables the lists.
pub const PUBLIC_RESOLVERS: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(1, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)),
    IpAddr::V4(Ipv4Addr::new(149, 112, 112, 112)),
    IpAddr::V4(Ipv4Addr::new(208, 67, 222, 222)),
    IpAddr::V4(Ipv4Addr::new(208, 67, 220, 220)),
    IpAddr::V4(Ipv4Addr::new(64, 6, 64, 6)),
    IpAddr::V4(Ipv4Addr::new(64, 6, 65, 6)),
    IpAddr::V4(Ipv4Addr::new(94, 140, 14, 14)),
    IpAddr::V4(Ipv4Addr::new(94, 140, 15, 15)),
    IpAddr::V4(Ipv4Addr::new(185, 228, 168, 9)),
    IpAddr::V4(Ipv4Addr::new(76, 76, 2, 0)),
    IpAddr::V4(Ipv4Addr::new(76, 76, 10, 0)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8844)),
    IpAddr::V6(Ipv6Addr::new(0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111)),
    IpAddr::V6(Ipv6Addr::new(0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1001)),
    IpAddr::V6(Ipv6Addr::new(0x2620, 0xfe, 0, 0, 0, 0, 0, 0xfe)),
    IpAddr::V6(Ipv6Addr::new(0x2620, 0xfe, 0, 0, 0, 0, 0, 0x9)),
    IpAddr::V6(Ipv6Addr::new(0x2620, 0x119, 0x35, 0, 0, 0, 0, 0x35)),
    IpAddr::V6(Ipv6Addr::new(0x2620, 0x119, 0x53, 0, 0, 0, 0, 0x53)),
];

/// The public resolvers among `ips`.
pub fn public_resolvers(ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    ips.into_iter()
        .filter(|ip| PUBLIC_RESOLVERS.contains(ip))
        .collect()
}

impl ResolverConfig {
    /// The longest one query takes to fail: `1 + attempts` tries of `timeout` each.
    pub fn query_worst_case(&self) -> Duration {
        let tries = u32::try_from(self.attempts.saturating_add(1)).unwrap_or(u32::MAX);
        self.timeout.saturating_mul(tries)
    }

    /// The longest one evaluation waits for DNS: a query's worst case (a DNSBL's A query;
    /// rDNS's forward lookups share the PTR's, see `rdns::check`), plus a listing's TXT
    /// reason ([`TXT_WAIT`]).
    pub fn evaluation_worst_case(&self) -> Duration {
        self.query_worst_case().saturating_add(TXT_WAIT)
    }

    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(30) {
            return Err(InvalidKey::new(
                "resolver.timeout",
                "must be between 1ms and 30s",
            ));
        }
        if self.attempts > 5 {
            return Err(InvalidKey::new("resolver.attempts", "at most 5 retries"));
        }
        if self.max_inflight == 0 || self.max_inflight > 4096 {
            return Err(InvalidKey::new(
                "resolver.max_inflight",
                "must be between 1 and 4096",
            ));
        }
        if self.max_lookups_per_sec == 0 {
            return Err(InvalidKey::new(
                "resolver.max_lookups_per_sec",
                "must be at least 1",
            ));
        }
        if self.queue_len == 0 || self.queue_len > 1 << 20 {
            return Err(InvalidKey::new(
                "resolver.queue_len",
                "must be between 1 and 1048576",
            ));
        }
        if self.cache_size > 1 << 20 {
            return Err(InvalidKey::new("resolver.cache_size", "at most 1048576"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_that_cannot_answer_are_refused() {
        let ns = |s: &str| s.parse::<Nameserver>().map(|n| n.0);
        assert_eq!(ns("127.0.0.1"), Ok("127.0.0.1:53".parse().unwrap()));
        assert_eq!(ns("127.0.0.1:5353"), Ok("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(ns("[::1]:53"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(ns("[::1:53]"), Ok("[::1:53]:53".parse().unwrap()));
        assert_eq!(ns("2001:db8::53"), Ok("[2001:db8::53]:53".parse().unwrap()));
        let e = ns("::1:53").unwrap_err();
        assert!(e.contains("\"[::1]:53\"") && e.contains("ambiguous"), "{e}");
        for bad in [
            "127.0.0.1:0",
            "0.0.0.0",
            "[::]:53",
            "224.0.0.251",
            "255.255.255.255",
            "[ff02::fb]:53",
        ] {
            assert!(ns(bad).is_err(), "{bad}");
        }
    }
}
