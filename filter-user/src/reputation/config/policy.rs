//! `[rdns]`, `[policy]` and `[lists]`: how reverse DNS weighs, how a score becomes a verdict
//! and for how long, and the static lists.

use std::time::Duration;

use documented::DocumentedFields;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::feeds::{FeedConfig, validate_feeds};
use crate::{duration, invalid_key::InvalidKey};

/// The largest `limit_burst`: past it a bucket never empties in practice, and the burst must
/// fit what both datapaths keep (the eBPF one as nanoseconds of tolerance, nftables as a
/// 32-bit packet count).
const MAX_LIMIT_BURST: u32 = 1_000_000;

/// `[rdns]`: reverse DNS and forward-confirmed reverse DNS (FCrDNS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct RdnsConfig {
    /// Look up the peer's PTR at all. Default `true`.
    pub enabled: bool,
    /// Points when the address has no PTR (NXDOMAIN or no PTR record; never on a DNS
    /// failure). Default `5`, the limit threshold: every large receiver requires a PTR of
    /// sending servers, and hosts without one are overwhelmingly bots, but a legitimate
    /// misconfigured server should be slowed, not refused, on this alone.
    pub missing_ptr_weight: i32,
    /// Points when none of the PTR names resolves back to the address. Default `3`, below
    /// the limit threshold: generic or stale PTRs are common on legitimate servers, so this
    /// only adds to other evidence.
    pub fcrdns_mismatch_weight: i32,
    /// PTR names forward-resolved for FCrDNS. Default `3`: real servers have one; a peer
    /// with dozens of PTRs must not make us send dozens of queries.
    pub max_ptr_names: usize,
    /// The resolver canary's PTR: an address whose PTR must resolve (every
    /// `resolver.canary_every`). While it does not (NXDOMAIN, no PTR, timeouts: a resolver
    /// that lies or cannot reach the reverse tree), "no PTR" and FCrDNS do not count, so
    /// nobody is limited for a missing PTR the resolver made up. Default `"193.0.14.129"`,
    /// k.root-servers.net, whose PTR needs real recursion (a locally served 127.0.0.1
    /// would pass on a broken upstream); use an address of your own network if the MX may
    /// not reach the root servers' reverse zone. `""` turns it off.
    pub canary_ptr: String,
}

impl Default for RdnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            missing_ptr_weight: 5,
            fcrdns_mismatch_weight: 3,
            max_ptr_names: 3,
            canary_ptr: "193.0.14.129".to_owned(),
        }
    }
}

/// `[policy]`: from a score to a verdict, and how long the verdict lasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Score at or above which the peer is limited. Default `5`: one soft signal (PBL,
    /// missing PTR) slows a peer down.
    pub limit_threshold: i32,
    /// Score at or above which the peer is dropped. Default `10`: one hard listing (SBL, XBL,
    /// CSS, DROP) or two soft signals together.
    pub drop_threshold: i32,
    /// Score at or below which the peer is allowlisted, as postscreen's
    /// postscreen_dnsbl_allowlist_threshold: its pass verdict lives as long as the answers
    /// that allowlist it (negative weights, e.g. a DNSWL listing) say, within
    /// ttl_min..ttl_max, instead of pass_ttl — so for that long it is neither looked up nor,
    /// with first_contact = "hold", held again. Default `0`: off; set a negative score to
    /// turn it on (`-5`: any list.dnswl.org trust level of the built-in weights).
    pub allowlist_threshold: i32,
    /// Shortest life of a limit/drop verdict. Default `10m`: repeat connections from a listed
    /// host within that time cost no query, which keeps a busy MX within free-use quotas.
    #[serde(with = "duration")]
    pub ttl_min: Duration,
    /// Longest life of a limit/drop verdict, whatever the answers' TTLs say. Default `6h`: a
    /// host that gets delisted is screened again the same working day.
    #[serde(with = "duration")]
    pub ttl_max: Duration,
    /// Life of a pass verdict. Default `1h`: a clean peer is not looked up on every
    /// connection, but one that gets listed is noticed within the hour.
    #[serde(with = "duration")]
    pub pass_ttl: Duration,
    /// Life of a verdict made while DNS was failing. Default `2m`: short, so the peer is asked
    /// again soon, but long enough that a resolver outage is not hammered by every SYN.
    #[serde(with = "duration")]
    pub tempfail_ttl: Duration,
    /// What `limit` means in the datapath: SYNs per minute per source. Default `6`: one
    /// connection every ten seconds, the kernel form of the connect-time delays Exim
    /// operators use against bots (real MTAs retry; bots move on).
    pub limit_rate: u32,
    /// ... with bursts of up to this many SYNs (1 to 1000000). Default `3`: a real MTA
    /// delivering a few queued messages gets through at once.
    pub limit_burst: u32,
    /// Decide, resolve, log and count, but never drop or limit (also `mxscreen run
    /// --observe`). Default `false`. The way to try a policy first, as Exim admins use
    /// `warn` before `deny`.
    pub observe: bool,
    /// Explained refusals: a peer holding a reputation `drop` verdict gets its first SYN
    /// after the verdict, and then one SYN per this window, through to the MTA, which asks
    /// mxscreen and refuses that connection with a 5xx naming the list, code and text; every
    /// other SYN of the window is dropped in the kernel. A wrongly listed sender's operator
    /// learns why instead of retrying silently for days. Default "4h"; "0s" turns it off.
    /// Manual blocks, deny lists and feeds are never explained.
    #[serde(with = "duration")]
    pub explain_every: Duration,
    /// Who gets explained refusals: "fcrdns" (default), senders whose reverse DNS is
    /// forward-confirmed, as a mail server's is (a bot's is not: its refusal would reach no
    /// one who reads it, and letting its SYN through costs the MTA a process); or "all".
    /// Either way only while an MTA asks mxscreen (a question within the last
    /// `explain_every`): a connection let through to an MTA that does not ask would just be
    /// accepted. Needs `rdns.enabled` for "fcrdns".
    pub explain_to: ExplainTo,
    /// IPv6 sources rotate their address inside the network their provider gives them, so a
    /// verdict per address lets every new one through first. Once `v6_rotation_after`
    /// distinct addresses of one network of this prefix length hold reputation `drop`
    /// verdicts, the network itself gets a `drop` verdict (logged, listed, shown by `check`,
    /// expiring with the latest of them). An address with a verdict of its own keeps it.
    /// Default 64, the usual end-site allocation; 16 to 127.
    pub v6_rotation_prefix: u8,
    /// How many distinct addresses of one network must hold `drop` verdicts before the
    /// network does. Default 2: one listed address never takes its neighbours with it; two
    /// in one /64 is how a rotating sender shows. At least 2; 0 turns it off.
    pub v6_rotation_after: u32,
}

impl PolicyConfig {
    /// The longest a verdict made here lives, of any kind: how long a `forget` is
    /// remembered, and the most a verdict shared by another host is kept here.
    pub fn longest_verdict(&self) -> Duration {
        self.ttl_max.max(self.pass_ttl).max(self.tempfail_ttl)
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            limit_threshold: 5,
            drop_threshold: 10,
            allowlist_threshold: 0,
            ttl_min: Duration::from_secs(10 * 60),
            ttl_max: Duration::from_secs(6 * 3600),
            pass_ttl: Duration::from_secs(3600),
            tempfail_ttl: Duration::from_secs(120),
            limit_rate: 6,
            limit_burst: 3,
            observe: false,
            explain_every: Duration::from_secs(4 * 3600),
            explain_to: ExplainTo::Fcrdns,
            v6_rotation_prefix: 64,
            v6_rotation_after: 2,
        }
    }
}

/// `policy.explain_to`: which `drop` verdicts the datapath may explain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExplainTo {
    /// Senders with forward-confirmed reverse DNS.
    #[default]
    Fcrdns,
    /// Every reputation `drop`.
    All,
}

impl ExplainTo {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fcrdns => "fcrdns",
            Self::All => "all",
        }
    }
}

/// `[lists]`: static decisions made before, and instead of, any lookup. Allow wins over deny.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct ListsConfig {
    /// Always pass: your partners and relays, added to the built-in ranges
    /// (`allow_defaults`). Default: empty.
    #[serde(deserialize_with = "crate::net::deserialize_nets")]
    pub allow: Vec<IpNet>,
    /// Keep the built-in allow list beside `allow`: loopback, RFC 1918, CGNAT
    /// (100.64.0.0/10), link-local and IPv6 ULA. DNSBLs never list them and their reverse
    /// zones are answered NXDOMAIN locally, so evaluating them would only produce a false
    /// "no PTR"; they are the operator's own relays and clients. Default `true`; `false`
    /// screens them too (`config check` warns).
    pub allow_defaults: bool,
    /// Always drop. Default: empty.
    #[serde(deserialize_with = "crate::net::deserialize_nets")]
    pub deny: Vec<IpNet>,
    /// Blocklist feed files, one [[lists.feed]] table each: name, path, format ("cidr",
    /// "rbldnsd" or "spamhaus-drop") and action ("drop", "limit" or "allow"). Default: none.
    /// A feed is enforced as soon as it is read (a million-line one's time is in the
    /// project's BENCHMARKS.md); on every change of the file only the difference is written,
    /// and a listed address never passes meanwhile.
    /// A catch-all entry (wider than `widest_v4`/`widest_v6`) is refused, and a read that
    /// empties the feed or shrinks it beyond `max_shrink` keeps the last good load.
    pub feed: Vec<FeedConfig>,
}

impl Default for ListsConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            allow_defaults: true,
            deny: Vec::new(),
            feed: Vec::new(),
        }
    }
}

/// The built-in allow list (`lists.allow_defaults`).
pub fn builtin_allow() -> &'static [IpNet] {
    static BUILTIN: std::sync::LazyLock<Vec<IpNet>> = std::sync::LazyLock::new(|| {
        [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ]
        .iter()
        .map(|s| s.parse().expect("built-in CIDR"))
        .collect()
    });
    &BUILTIN
}

impl ListsConfig {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        validate_feeds(&self.feed)
    }

    /// Everything that always passes: the built-in ranges (unless `allow_defaults = false`),
    /// then `allow`.
    pub fn allowed(&self) -> impl Iterator<Item = &IpNet> {
        let builtin = if self.allow_defaults {
            builtin_allow()
        } else {
            &[]
        };
        builtin.iter().chain(&self.allow)
    }

    /// The allow-list entry covering `ip`, with the key it comes from (`lists.allow`, or
    /// `lists.allow_defaults` for a built-in range).
    pub fn allowing(&self, ip: &std::net::IpAddr) -> Option<(IpNet, &'static str)> {
        let builtin = builtin_allow()
            .iter()
            .filter(|_| self.allow_defaults)
            .map(|n| (n, "lists.allow_defaults"));
        builtin
            .chain(self.allow.iter().map(|n| (n, "lists.allow")))
            .find(|(n, _)| n.contains(ip))
            .map(|(n, key)| (*n, key))
    }

    /// [`ListsConfig::allowed`] as a list.
    pub fn allow_list(&self) -> Vec<IpNet> {
        self.allowed().copied().collect()
    }
}

impl RdnsConfig {
    /// The canary PTR's address, if the PTR canary is on. An IPv4-mapped address
    /// (`::ffff:192.0.2.1`) is the IPv4 one: its PTR is under in-addr.arpa, not ip6.arpa.
    pub fn canary_addr(&self) -> Option<std::net::IpAddr> {
        self.canary_ptr
            .parse()
            .ok()
            .map(crate::reputation::names::canonical)
    }

    pub fn validate(&self) -> Result<(), InvalidKey> {
        if !(1..=10).contains(&self.max_ptr_names) {
            return Err(InvalidKey::new(
                "rdns.max_ptr_names",
                "must be between 1 and 10",
            ));
        }
        if !self.canary_ptr.is_empty() && self.canary_ptr.parse::<std::net::IpAddr>().is_err() {
            return Err(InvalidKey::new(
                "rdns.canary_ptr",
                format!(
                    "{:?} is not an IP address: write one whose PTR resolves, or \"\" to turn the PTR canary off",
                    self.canary_ptr
                ),
            ));
        }
        Ok(())
    }
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.limit_rate == 0 {
            return Err(InvalidKey::new(
                "policy.limit_rate",
                "must be at least 1 (SYNs per minute)",
            ));
        }
        if self.limit_burst == 0 {
            return Err(InvalidKey::new("policy.limit_burst", "must be at least 1"));
        }
        if self.limit_burst > MAX_LIMIT_BURST {
            return Err(InvalidKey::new(
                "policy.limit_burst",
                format!("at most {MAX_LIMIT_BURST} SYNs: a larger burst is no limit"),
            ));
        }
        if self.limit_threshold <= 0 {
            return Err(InvalidKey::new(
                "policy.limit_threshold",
                "must be above 0, or a peer with no evidence at all would be limited",
            ));
        }
        if self.drop_threshold < self.limit_threshold {
            return Err(InvalidKey::new(
                "policy.drop_threshold",
                format!(
                    "{} is below policy.limit_threshold ({})",
                    self.drop_threshold, self.limit_threshold
                ),
            ));
        }
        if self.allowlist_threshold > 0 {
            return Err(InvalidKey::new(
                "policy.allowlist_threshold",
                format!(
                    "{} is above 0, where a peer with no evidence at all would be allowlisted; \
                     use a negative score, or 0 to turn it off",
                    self.allowlist_threshold
                ),
            ));
        }
        for (key, d) in [
            ("policy.ttl_min", self.ttl_min),
            ("policy.pass_ttl", self.pass_ttl),
            ("policy.tempfail_ttl", self.tempfail_ttl),
        ] {
            if d < Duration::from_secs(1) {
                return Err(InvalidKey::new(key, "must be at least 1s"));
            }
        }
        if !(16..=127).contains(&self.v6_rotation_prefix) {
            return Err(InvalidKey::new(
                "policy.v6_rotation_prefix",
                format!(
                    "/{} is no network a sender rotates in; 16 to 127 are allowed",
                    self.v6_rotation_prefix
                ),
            ));
        }
        if self.v6_rotation_after == 1 {
            return Err(InvalidKey::new(
                "policy.v6_rotation_after",
                "1 would let one listed address take its whole network; use at least 2, or 0 to turn it off",
            ));
        }
        if self.ttl_max < self.ttl_min {
            return Err(InvalidKey::new(
                "policy.ttl_max",
                format!(
                    "{} is below policy.ttl_min ({})",
                    duration::format(self.ttl_max),
                    duration::format(self.ttl_min)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_adds_to_the_builtin_ranges_unless_they_are_turned_off() {
        let partner: IpNet = "198.51.100.0/24".parse().unwrap();
        let private: std::net::IpAddr = "192.168.1.5".parse().unwrap();
        let mut l = ListsConfig {
            allow: vec![partner],
            ..ListsConfig::default()
        };
        assert!(l.allowed().any(|n| n.contains(&private)));
        assert!(l.allowed().any(|n| *n == partner));
        l.allow_defaults = false;
        assert!(!l.allowed().any(|n| n.contains(&private)));
        assert_eq!(l.allow_list(), vec![partner]);
    }

    #[test]
    fn a_mapped_canary_ptr_is_asked_as_ipv4() {
        let r = RdnsConfig {
            canary_ptr: "::ffff:192.0.2.1".into(),
            ..RdnsConfig::default()
        };
        assert_eq!(r.canary_addr(), Some("192.0.2.1".parse().unwrap()));
        let r = RdnsConfig {
            canary_ptr: "2001:db8::1".into(),
            ..RdnsConfig::default()
        };
        assert_eq!(r.canary_addr(), Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn the_allowlist_threshold_is_off_or_negative() {
        assert_eq!(PolicyConfig::default().allowlist_threshold, 0);
        for ok in [0, -1, -8] {
            let p = PolicyConfig {
                allowlist_threshold: ok,
                ..PolicyConfig::default()
            };
            assert!(p.validate().is_ok(), "{ok}");
        }
        let p = PolicyConfig {
            allowlist_threshold: 2,
            ..PolicyConfig::default()
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("policy.allowlist_threshold"), "{e}");
    }
}
