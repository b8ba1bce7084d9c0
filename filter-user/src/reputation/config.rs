//! The reputation engine's config sections: `[resolver]`, `[[dnsbl]]`, `[rdns]`, `[policy]` and
//! `[lists]`. Each is a plain struct with `#[serde(default, deny_unknown_fields)]`, so the
//! daemon's top-level config can embed them field by field; [`ReputationConfig`] bundles them
//! for `check` and the tests.
//!
//! Every default below says why it is what it is; an operator who runs with an empty config
//! gets a filter that is safe to put in front of a real MX.
use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    str::FromStr,
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de, de::DeserializeOwned};

use super::{codes::CodeSpec, duration};

/// All sections the reputation engine reads.
///
/// The daemon's config should embed the five sections as fields of its own struct (with
/// `#[serde(default)]`) rather than `#[serde(flatten)]` this one: serde cannot combine
/// `flatten` with `deny_unknown_fields`, and unknown keys must stay errors.
/// An embedding config must give its `dnsbl` field `#[serde(default = "default_dnsbls")]` and
/// use [`default_dnsbls`] in its `Default`, or an absent `[[dnsbl]]` means no lists at all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReputationConfig {
    pub resolver: ResolverConfig,
    /// The DNSBL/DNSWL zones. Absent: [`default_dnsbls`]. Writing any `[[dnsbl]]` replaces the
    /// defaults entirely (so a zone can be dropped); `dnsbl = []` queries no list at all.
    #[serde(default = "default_dnsbls")]
    pub dnsbl: Vec<DnsblConfig>,
    pub rdns: RdnsConfig,
    pub policy: PolicyConfig,
    pub lists: ListsConfig,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        Self {
            resolver: ResolverConfig::default(),
            dnsbl: default_dnsbls(),
            rdns: RdnsConfig::default(),
            policy: PolicyConfig::default(),
            lists: ListsConfig::default(),
        }
    }
}

/// `[resolver]`: how the engine talks DNS, and how much of it it may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Recursive resolvers to ask, as `"ip"` or `"ip:port"` (`"[v6]:port"`), UDP with TCP
    /// for truncated answers. Default: empty, meaning the system's `/etc/resolv.conf`.
    /// Point this at a recursive resolver of your own (unbound on the MX): DNSBLs refuse
    /// queries that arrive through public resolvers such as 8.8.8.8 (the engine warns).
    pub nameservers: Vec<Nameserver>,
    /// How long one query may take. Default `2s`: DNSBL mirrors and a local resolver answer in
    /// milliseconds; a peer's SYN is retransmitted after 1 s and 3 s, so a verdict that takes
    /// longer than that is late anyway, and it becomes a short-lived tempfail pass.
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
    /// Default `20`: about 100 queries/s with the default lists, so a flood of new peers
    /// cannot become a flood of DNS queries; Spamhaus' free use allows roughly 100k
    /// queries a day, so a busier site needs a Data Query Service key or local rsync mirror.
    pub max_lookups_per_sec: u32,
    /// Peers waiting for an evaluation slot; when full, new peers are rejected (they stay
    /// unknown, which passes, and are counted). Default `256`: at 20/s that is ~13 s of
    /// backlog, about as long as a sender keeps retransmitting its first SYN.
    pub queue_len: usize,
    /// Entries in hickory's own answer cache. Default `0`: verdicts are cached by the daemon
    /// (with their expiry) in the datapath's maps, so a second cache would only hold memory
    /// and serve stale listings.
    pub cache_size: u64,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 1,
            max_inflight: 64,
            max_lookups_per_sec: 20,
            queue_len: 256,
            cache_size: 0,
        }
    }
}

/// A nameserver address: an IP with an optional port (default 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nameserver(pub SocketAddr);

impl FromStr for Nameserver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Nameserver(SocketAddr::new(ip, 53)));
        }
        s.parse::<SocketAddr>().map(Nameserver).map_err(|_| {
            format!("invalid nameserver {s:?}: write \"ip\", \"ip:port\" or \"[ipv6]:port\"")
        })
    }
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

/// One `[[dnsbl]]` entry: a DNSBL (positive weight) or DNSWL (negative weight) zone.
///
/// An answer first has to be in 127.0.0.0/8 and not an error code (127.255.255.0/24 or
/// `error_codes`); then, if `codes` is set, match it; then it takes the weight of the first
/// `code_weights` entry that matches it, else `weight`. When a zone answers several codes,
/// each distinct class (a `code_weights` entry, or the zone's own weight) counts once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsblConfig {
    /// The list's zone, e.g. `"zen.spamhaus.org"`.
    pub zone: String,
    /// Points for a matching answer without a `code_weights` entry; negative for allowlists.
    pub weight: i32,
    /// Only answers matching one of these count (empty: any 127/8 code that is not an error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<CodeSpec>,
    /// Per-code weights, so one zone can weigh its sub-lists differently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_weights: Vec<CodeWeight>,
    /// Extra codes meaning "query refused", on top of 127.255.255.0/24.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<CodeSpec>,
}

/// A `[[dnsbl.code_weights]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeWeight {
    pub codes: Vec<CodeSpec>,
    pub weight: i32,
    /// A name for the class in evidence and logs (`"XBL"`); defaults to the codes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

fn codes(specs: &[&str]) -> Vec<CodeSpec> {
    specs
        .iter()
        .map(|s| s.parse().expect("built-in code spec parses"))
        .collect()
}

fn class(label: &str, specs: &[&str], weight: i32) -> CodeWeight {
    CodeWeight {
        codes: codes(specs),
        weight,
        label: label.to_owned(),
    }
}

/// The built-in lists, usable as they are by a small MX with its own recursive resolver.
///
/// - **zen.spamhaus.org**, the combined Spamhaus IP list, with the codes Spamhaus documents:
///   SBL (127.0.0.2, known spam sources), CSS (127.0.0.3, snowshoe spam), XBL (127.0.0.4-7,
///   hijacked and infected hosts) and DROP (127.0.0.9, hijacked netblocks) each weigh `10`,
///   the drop threshold: each is evidence that the host sends spam or is not under its
///   owner's control. PBL (127.0.0.10-11, end-user address space that should not talk SMTP
///   directly) weighs `5`, the limit threshold: legitimate small senders are sometimes there,
///   so they are slowed, not refused, unless more evidence adds up. Other codes are ignored.
/// - **list.dnswl.org**, the DNS allowlist, whose answers are 127.0.x.y with y the trust
///   level: high (3) `-15`, enough to outweigh one drop-class listing, because DNSWL-high
///   senders are large vetted providers whose shared IPs occasionally show up on a
///   blocklist and refusing them hurts far more than a spam that gets through to the
///   content filters; medium (2) `-10` cancels one listing; low (1) `-5` cancels a PBL
///   listing or a missing PTR; none (0) `0` (listed but unvetted). 127.0.0.255 is DNSWL's
///   "refused" answer and so an error code, never an allowlisting.
pub fn default_dnsbls() -> Vec<DnsblConfig> {
    vec![
        DnsblConfig {
            zone: "zen.spamhaus.org".to_owned(),
            weight: 10,
            codes: codes(&["127.0.0.2-127.0.0.11"]),
            code_weights: vec![
                class("SBL", &["127.0.0.2"], 10),
                class("CSS", &["127.0.0.3"], 10),
                class("XBL", &["127.0.0.4-127.0.0.7"], 10),
                class("DROP", &["127.0.0.9"], 10),
                class("PBL", &["127.0.0.10-127.0.0.11"], 5),
            ],
            error_codes: Vec::new(),
        },
        DnsblConfig {
            zone: "list.dnswl.org".to_owned(),
            weight: 0,
            codes: codes(&["127.0.0.0/16"]),
            code_weights: vec![
                class("DNSWL-high", &["127.0.*.3"], -15),
                class("DNSWL-med", &["127.0.*.2"], -10),
                class("DNSWL-low", &["127.0.*.1"], -5),
                class("DNSWL-none", &["127.0.*.0"], 0),
            ],
            error_codes: codes(&["127.0.0.255"]),
        },
    ]
}

/// `[rdns]`: reverse DNS and forward-confirmed reverse DNS (FCrDNS).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

impl Default for RdnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            missing_ptr_weight: 5,
            fcrdns_mismatch_weight: 3,
            max_ptr_names: 3,
        }
    }
}

/// `[policy]`: from a score to a verdict, and how long the verdict lasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Score at or above which the peer is limited. Default `5`: one soft signal (PBL,
    /// missing PTR) slows a peer down.
    pub limit_threshold: i32,
    /// Score at or above which the peer is dropped. Default `10`: one hard listing (SBL, XBL,
    /// CSS, DROP) or two soft signals together.
    pub drop_threshold: i32,
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
    /// ... with bursts of up to this many SYNs. Default `3`: a real MTA delivering a few
    /// queued messages gets through at once.
    pub limit_burst: u32,
    /// Decide, resolve, log and count, but never drop or limit (also `mxscreen run
    /// --observe`). Default `false`. The way to try a policy first, as Exim admins use
    /// `warn` before `deny`.
    pub observe: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            limit_threshold: 5,
            drop_threshold: 10,
            ttl_min: Duration::from_secs(10 * 60),
            ttl_max: Duration::from_secs(6 * 3600),
            pass_ttl: Duration::from_secs(3600),
            tempfail_ttl: Duration::from_secs(120),
            limit_rate: 6,
            limit_burst: 3,
            observe: false,
        }
    }
}

/// `[lists]`: static decisions made before, and instead of, any lookup. Allow wins over deny.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsConfig {
    /// Always pass. Default: loopback, RFC 1918, CGNAT (100.64.0.0/10), link-local and IPv6
    /// ULA. DNSBLs never list them and their reverse zones are answered NXDOMAIN locally, so
    /// evaluating them would only produce a false "no PTR"; they are the operator's own
    /// relays and clients. Set `allow = []` to screen them too.
    pub allow: Vec<IpNet>,
    /// Always drop. Default: empty.
    pub deny: Vec<IpNet>,
}

impl Default for ListsConfig {
    fn default() -> Self {
        let allow = [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ];
        Self {
            allow: allow
                .iter()
                .map(|s| s.parse().expect("built-in CIDR"))
                .collect(),
            deny: Vec::new(),
        }
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

/// Reads a config file's text, naming the file in the error.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// A config that cannot be used; the message names the file and line or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not `source`: the io error is part of this one-line message, not a cause to print again.
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// Parses any config struct from TOML text, turning toml's multi-line report into one line
/// `origin:line:column: message` (the message names the unknown or invalid key). Public so the
/// daemon's top-level config can share it.
pub fn parse_toml<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                (line, column)
            }
            None => (0, 0),
        };
        let message = e.message().trim().replace('\n', " ");
        ConfigError::Parse {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    })
}

impl ReputationConfig {
    /// Parses and validates TOML text; `origin` names it in errors (a path, or `"<test>"`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Self = parse_toml(text, origin)?;
        cfg.validate().map_err(|e| e.at(origin))?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_file(path)?, &path.display().to_string())
    }

    /// Checks what serde cannot: ranges, thresholds, duplicate zones.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        self.resolver.validate()?;
        validate_dnsbls(&self.dnsbl)?;
        self.rdns.validate()?;
        self.policy.validate()
    }

    /// Public resolvers among the configured nameservers (for the start-up warning).
    pub fn public_nameservers(&self) -> Vec<IpAddr> {
        public_resolvers(self.resolver.nameservers.iter().map(|n| n.0.ip()))
    }
}

/// The public resolvers among `ips`.
pub fn public_resolvers(ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    ips.into_iter()
        .filter(|ip| PUBLIC_RESOLVERS.contains(ip))
        .collect()
}

/// A semantic error in one key; [`InvalidKey::at`] adds where the config came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidKey {
    pub key: String,
    pub message: String,
}

impl InvalidKey {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn at(self, origin: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: origin.to_owned(),
            key: self.key,
            message: self.message,
        }
    }
}

impl ResolverConfig {
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

/// Checks the `[[dnsbl]]` entries: zone names valid and unique.
pub fn validate_dnsbls(zones: &[DnsblConfig]) -> Result<(), InvalidKey> {
    let mut seen = HashSet::new();
    for (i, z) in zones.iter().enumerate() {
        let key = format!("dnsbl[{i}].zone");
        let name = z.zone.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(InvalidKey::new(key, "must not be empty"));
        }
        if let Err(e) = hickory_proto::rr::Name::from_ascii(&name) {
            return Err(InvalidKey::new(
                key,
                format!("{:?} is not a DNS name: {e}", z.zone),
            ));
        }
        if !seen.insert(name) {
            return Err(InvalidKey::new(
                key,
                format!("{:?} is listed twice", z.zone),
            ));
        }
        for (j, cw) in z.code_weights.iter().enumerate() {
            if cw.codes.is_empty() {
                return Err(InvalidKey::new(
                    format!("dnsbl[{i}].code_weights[{j}].codes"),
                    "must name at least one code",
                ));
            }
        }
    }
    Ok(())
}

impl RdnsConfig {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if !(1..=10).contains(&self.max_ptr_names) {
            return Err(InvalidKey::new(
                "rdns.max_ptr_names",
                "must be between 1 and 10",
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
        for (key, d) in [
            ("policy.ttl_min", self.ttl_min),
            ("policy.pass_ttl", self.pass_ttl),
            ("policy.tempfail_ttl", self.tempfail_ttl),
        ] {
            if d < Duration::from_secs(1) {
                return Err(InvalidKey::new(key, "must be at least 1s"));
            }
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

    fn parse(text: &str) -> Result<ReputationConfig, ConfigError> {
        ReputationConfig::from_toml_str(text, "test.toml")
    }

    #[test]
    fn empty_config_is_the_documented_default() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg, ReputationConfig::default());
        assert_eq!(cfg.dnsbl.len(), 2);
        assert_eq!(cfg.policy.drop_threshold, 10);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&ReputationConfig::default()).unwrap();
        assert_eq!(parse(&text).unwrap(), ReputationConfig::default(), "{text}");
    }

    #[test]
    fn full_config_parses() {
        let cfg = parse(
            r#"
            [resolver]
            nameservers = ["127.0.0.1", "127.0.0.2:5353", "[::1]:53"]
            timeout = "500ms"
            attempts = 0
            [[dnsbl]]
            zone = "bl.example"
            weight = 7
            codes = ["127.0.0.2", "127.0.0.4/30", "127.0.0.10-127.0.0.11"]
            [[dnsbl.code_weights]]
            codes = ["127.0.0.10-127.0.0.11"]
            weight = 3
            label = "PBL"
            [rdns]
            enabled = false
            [policy]
            ttl_max = "1d"
            [lists]
            allow = ["192.0.2.0/24"]
            deny = ["2001:db8::/32"]
            "#,
        )
        .unwrap();
        assert_eq!(
            cfg.resolver.nameservers[1].0,
            "127.0.0.2:5353".parse().unwrap()
        );
        assert_eq!(cfg.resolver.nameservers[0].0.port(), 53);
        assert_eq!(cfg.resolver.timeout, Duration::from_millis(500));
        assert_eq!(cfg.dnsbl.len(), 1);
        assert_eq!(cfg.dnsbl[0].code_weights[0].label, "PBL");
        assert!(!cfg.rdns.enabled);
        assert_eq!(cfg.policy.ttl_max, Duration::from_secs(86_400));
        assert_eq!(cfg.lists.deny.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_line() {
        let err = parse("[policy]\ndrop_threshold = 12\ndrop_treshold = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:3:"), "{msg}");
        assert!(msg.contains("drop_treshold"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let msg = parse("[resolvr]\n").unwrap_err().to_string();
        assert!(
            msg.contains("resolvr") && msg.starts_with("test.toml:1:"),
            "{msg}"
        );
        let msg = parse("[[dnsbl]]\nzone = \"a.example\"\nweight = 1\nwieght = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("wieght") && msg.starts_with("test.toml:4:"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_name_the_line() {
        let msg = parse("[policy]\nttl_min = \"10\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("test.toml:2:") && msg.contains("missing unit"),
            "{msg}"
        );
        let msg = parse(
            "[[dnsbl]]\nzone = \"a.example\"\nweight = 1\ncodes = [\"127.0.0.9-127.0.0.2\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.starts_with("test.toml:4:") && msg.contains("range start"),
            "{msg}"
        );
        let msg = parse("[resolver]\nnameservers = [\"resolver.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("test.toml:2:") && msg.contains("invalid nameserver"),
            "{msg}"
        );
        let msg = parse("[lists]\nallow = [\"192.0.2.0/33\"]\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("test.toml:2:"), "{msg}");
        let msg = parse("[[dnsbl]]\nzone = \"a.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("weight"), "{msg}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            (
                "[policy]\nlimit_threshold = 8\ndrop_threshold = 6\n",
                "policy.drop_threshold",
            ),
            ("[policy]\nlimit_threshold = 0\n", "policy.limit_threshold"),
            (
                "[policy]\nttl_min = \"2h\"\nttl_max = \"1h\"\n",
                "policy.ttl_max",
            ),
            ("[policy]\ntempfail_ttl = \"0s\"\n", "policy.tempfail_ttl"),
            ("[resolver]\nmax_inflight = 0\n", "resolver.max_inflight"),
            ("[resolver]\ntimeout = \"0s\"\n", "resolver.timeout"),
            ("[rdns]\nmax_ptr_names = 0\n", "rdns.max_ptr_names"),
            (
                "[[dnsbl]]\nzone = \"a.example\"\nweight = 1\n[[dnsbl]]\nzone = \"A.example.\"\nweight = 2\n",
                "dnsbl[1].zone",
            ),
            ("[[dnsbl]]\nzone = \"\"\nweight = 1\n", "dnsbl[0].zone"),
        ];
        for (text, key) in cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("test.toml: {key}: ")),
                "{key}: {msg}"
            );
        }
    }

    #[test]
    fn empty_dnsbl_list_disables_lists() {
        assert!(parse("dnsbl = []\n").unwrap().dnsbl.is_empty());
    }

    #[test]
    fn public_resolvers_are_spotted() {
        let cfg = parse("[resolver]\nnameservers = [\"127.0.0.1\", \"8.8.8.8\", \"[2606:4700:4700::1111]:53\"]\n")
            .unwrap();
        assert_eq!(cfg.public_nameservers().len(), 2);
    }
}
