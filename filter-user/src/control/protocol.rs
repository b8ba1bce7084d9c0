//! The messages of the control socket: what the CLI asks ([`Request`]) and what the daemon
//! answers ([`Reply`]), every field typed. Framing is in [`super::frame`].

use std::{fmt, net::IpAddr, time::Duration};

use filter_common::{Action, Reason};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use super::{
    fleet_status::{FleetLink, FleetStatus},
    watch::{BalancerCheck, BalancerStatus, ExplainStatus},
};
use crate::{
    datapath::{FirstContact, attach::AttachedMode},
    net,
    reputation::{CanaryStatus, Nameserver, Stats},
};

/// What the CLI asks. Addresses are read as [`crate::net`] reads them everywhere (an
/// IPv4-mapped one is its IPv4 form), whoever wrote the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Add to the deny list (manual). `ttl_secs: None` = until unblocked.
    Block {
        #[serde(deserialize_with = "net::deserialize_net")]
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    },
    Unblock {
        #[serde(deserialize_with = "net::deserialize_net")]
        net: IpNet,
    },
    /// Add to the allow list (manual).
    Allow {
        #[serde(deserialize_with = "net::deserialize_net")]
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
    },
    Unallow {
        #[serde(deserialize_with = "net::deserialize_net")]
        net: IpNet,
    },
    /// Remove the engine's verdicts inside `net`, here and on the fleet, so the next SYN is
    /// evaluated afresh; `now`: evaluate the (single) address at once.
    Forget {
        net: IpNet,
        #[serde(default)]
        now: bool,
    },
    List {
        what: ListWhat,
    },
    Stats,
    Status,
    /// What the daemon holds for one address (allow/deny match, cached verdict).
    Lookup {
        #[serde(deserialize_with = "net::deserialize_ip")]
        ip: IpAddr,
    },
    /// Read a feed's file now; answered once the read is done. `force` loads it even if
    /// the feed's guard would keep the last good load (an emptied or truncated file).
    FeedReload {
        name: String,
        force: bool,
    },
}

/// Which entries `list` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ListWhat {
    Blocked,
    Allowed,
    Verdicts,
    All,
}

/// The daemon's answer: `Ok` with a body, or an error sentence for the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived reply per request; boxing buys nothing"
)]
pub enum Reply {
    Ok { body: Body },
    Error { message: String },
}

/// The answer to each request; the client turns it back into the request's own type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A change was applied (to the maps and the state file) before this reply was sent.
    Done {
        message: String,
    },
    /// One frame of a `list` answer; frames follow while `more` is set.
    List {
        entries: Vec<ListedEntry>,
        #[serde(default)]
        more: bool,
    },
    Stats(StatsReply),
    Status(StatusReply),
    Lookup(LookupReply),
}

/// Which table an entry of `list` is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListName {
    Blocked,
    Allowed,
    Verdict,
    /// A limit feed's entry: rate-limited like a `limit` verdict.
    Limited,
}

impl ListName {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Allowed => "allowed",
            Self::Verdict => "verdict",
            Self::Limited => "limited",
        }
    }
}

/// Where an entry comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An operator's `block` / `allow`.
    Manual,
    /// `lists.allow` / `lists.deny`.
    Config,
    /// One of the host's own addresses.
    #[serde(rename = "self")]
    Host,
    /// The loopback ranges.
    Loopback,
    /// The reputation engine's score.
    Reputation,
    /// A lenient, short-lived verdict made while DNS was failing.
    Tempfail,
    /// A blocklist feed file.
    Feed,
    /// A map entry whose reason mxscreen never writes.
    Unspecified,
}

impl Source {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Config => "config",
            Self::Host => "self",
            Self::Loopback => "loopback",
            Self::Reputation => "reputation",
            Self::Tempfail => "tempfail",
            Self::Feed => "feed",
            Self::Unspecified => "unspecified",
        }
    }
}

impl From<Reason> for Source {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Unspecified => Self::Unspecified,
            Reason::Manual => Self::Manual,
            Reason::Config => Self::Config,
            Reason::Reputation => Self::Reputation,
            Reason::Tempfail => Self::Tempfail,
            Reason::Feed => Self::Feed,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of `mxscreen list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListedEntry {
    pub list: ListName,
    pub net: IpNet,
    /// `pass`/`limit`/`drop` for verdicts; `drop`/`pass` for the lists.
    pub action: Action,
    pub source: Source,
    pub reason: Option<String>,
    /// Unix seconds, when known (manual entries).
    pub created: Option<u64>,
    /// Unix seconds; `None` = never.
    pub expires: Option<u64>,
    /// SYNs this entry decided (for a feed's entry: the whole feed's).
    pub hits: u64,
    /// The fleet host the entry was made on (manual entries and verdicts, when `[fleet]` is
    /// on); `None` for what is this host's alone (config, loopback, its own addresses) or
    /// when the fleet is off.
    #[serde(default)]
    pub origin: Option<String>,
    /// For a feed's entry: the feeds that list it (comma-separated, in load order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
}

/// `mxscreen stats`. Every count by name is a JSON object keyed by name, in this order
/// (`.datapath.dropped_verdict` in jq), see [`by_name`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    /// Datapath counters summed over CPUs, by name (`filter_common::Counter::name`).
    #[serde(with = "by_name")]
    pub datapath: Vec<(String, u64)>,
    /// Cached verdicts by action.
    #[serde(with = "by_name")]
    pub verdicts_by_action: Vec<(Action, u64)>,
    /// Cached verdicts by where they came from.
    #[serde(with = "by_name")]
    pub verdicts_by_reason: Vec<(Source, u64)>,
    /// The reputation engine's counters (lookups, answers, budget drops, error codes...).
    pub engine: Stats,
}

/// `mxscreen status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub version: String,
    pub uptime_secs: u64,
    pub config_file: Option<String>,
    pub observe: bool,
    pub first_contact: FirstContact,
    pub ports: Vec<u16>,
    /// Which backend screens (and why, with `auto`).
    #[serde(default)]
    pub backend: BackendStatus,
    pub interfaces: Vec<InterfaceStatus>,
    pub programs: Vec<ProgramStatus>,
    pub maps: Vec<MapFill>,
    pub resolver: ResolverStatus,
    /// SIGHUP reloads so far; `None` before the first.
    pub reload: Option<ReloadStatus>,
    /// The blocklist feeds, in config order.
    #[serde(default)]
    pub feeds: Vec<FeedStatus>,
    pub warnings: Vec<String>,
    /// The link to the fleet's Redis; `None` when `[fleet]` is off. (Boxed: replies
    /// stay small when the fleet is off.)
    #[serde(default)]
    pub fleet: Option<Box<FleetStatus>>,
    /// Whether something in front of the host rewrites the clients' addresses (a load
    /// balancer, SNAT, PROXY protocol), as the last windows measured it. (Boxed, like
    /// `fleet`: the reply enums stay small.)
    #[serde(default)]
    pub balancer: Box<BalancerStatus>,
    /// Explained refusals: on or off, and when the MTA last asked.
    #[serde(default)]
    pub explain: ExplainStatus,
}

/// How SIGHUP reloads went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Unix seconds of the last reload.
    pub at: u64,
    /// Reloads applied.
    pub ok: u64,
    /// Reloads refused (the running config stayed).
    pub failed: u64,
    /// Why the last reload failed; `None` if it succeeded.
    pub error: Option<String>,
    /// Keys the file changed that only a restart applies (running as at start until then).
    #[serde(default)]
    pub restart_pending: Vec<String>,
}

/// One feed in `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedStatus {
    pub name: String,
    pub path: String,
    /// `cidr`, `rbldnsd` or `spamhaus-drop`.
    pub format: String,
    /// `drop`, `limit` or `allow`.
    pub action: String,
    /// Prefixes in the datapath from its last load.
    pub entries: u64,
    /// Unix seconds of the last load; `None` = not loaded yet.
    pub last_load: Option<u64>,
    /// Lines skipped as malformed in the last load (each logged as file:line).
    pub errors: u64,
    /// Entries refused in the last load as wider than the feed's bound (`widest_v4`,
    /// `widest_v6`; each logged as file:line).
    #[serde(default)]
    pub refused: u64,
    /// Why the last read was not loaded (the file missing or unreadable, or held back as an
    /// emptied or truncated download), the last load's entries staying in force; `None` when
    /// it was loaded.
    pub problem: Option<String>,
    /// What is wrong with a load that was taken: it holds no entries (every line malformed,
    /// an empty file). `None` when the last load has entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// SYNs its entries decided.
    pub hits: u64,
}

/// Which backend screens, what the operator asked for, and why eBPF was not used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// `ebpf` or `nftables`.
    pub name: String,
    /// `datapath.backend`: `auto`, `ebpf` or `nftables`.
    pub requested: String,
    /// With `auto` and nftables: the kernel's reason the eBPF datapath could not be used, in
    /// one line.
    pub ebpf_error: Option<String>,
}

impl BackendStatus {
    pub fn new(b: crate::datapath::Backend) -> Self {
        Self {
            name: b.name().to_owned(),
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub mode: AttachedMode,
    /// Why nothing is screened there now (the interface is gone); absent while screening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<String>,
}

/// A loaded program and its kernel id (for `bpftool prog show id N`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramStatus {
    pub name: String,
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapFill {
    pub name: String,
    pub entries: u64,
    pub max_entries: u32,
}

/// The resolver the engine uses and how it is doing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResolverStatus {
    /// Empty: the system's resolvers (/etc/resolv.conf).
    pub nameservers: Vec<Nameserver>,
    /// The engine's counters; per zone, a non-zero `error_codes` means the list refuses our
    /// queries (public resolver, over quota): fix the resolver setup, not the policy.
    #[serde(flatten)]
    pub engine: Stats,
    /// The resolver canary's last result per source (a zone's display name, or `rdns`);
    /// empty before the first round or with the canary off.
    #[serde(default)]
    pub canary: std::collections::BTreeMap<String, CanaryStatus>,
}

/// `mxscreen check`: what the daemon holds for one address.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LookupReply {
    pub ip: Option<IpAddr>,
    pub allowed: Option<ListedEntry>,
    pub blocked: Option<ListedEntry>,
    pub verdict: Option<ListedEntry>,
    /// For a reputation `drop` with explained refusals on: Unix seconds from which the
    /// datapath lets the peer's next connection through to the MTA to be refused with the
    /// reason (now or earlier: its very next connection). `None`: never explained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain_next: Option<u64>,
    /// A limit feed's entry covering the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited: Option<ListedEntry>,
    /// A verdict for the address's whole network (IPv6 rotation), when it has none of its
    /// own or besides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_verdict: Option<ListedEntry>,
    /// Observe mode: what is held is counted, never enforced.
    #[serde(default)]
    pub observe: bool,
    /// For a reputation `drop`: whether the sender is one explained refusals go to
    /// (`policy.explain_to`: forward-confirmed rDNS by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explainable: Option<bool>,
    /// Explained refusals: on or off, and when the MTA last asked.
    #[serde(default)]
    pub explain: ExplainStatus,
    /// The config the daemon runs with: what `check` explains with when not given `-c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigInUse>,
}

/// The config a running daemon was started (or last reloaded) with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigInUse {
    /// Its file; `None`: the built-in defaults.
    pub file: Option<String>,
}

/// A reply of a known shape, taken out of a [`Body`]; `None` if the body is another kind.
pub trait FromBody: Sized {
    fn from_body(body: Body) -> Option<Self>;
}

/// `Done`: the daemon's sentence about what it changed.
impl FromBody for String {
    fn from_body(body: Body) -> Option<Self> {
        match body {
            Body::Done { message } => Some(message),
            _ => None,
        }
    }
}

/// One frame of a `list` answer.
pub struct ListChunk {
    pub entries: Vec<ListedEntry>,
    /// More frames follow.
    pub more: bool,
}

impl FromBody for ListChunk {
    fn from_body(body: Body) -> Option<Self> {
        match body {
            Body::List { entries, more } => Some(Self { entries, more }),
            _ => None,
        }
    }
}

impl FromBody for StatsReply {
    fn from_body(body: Body) -> Option<Self> {
        match body {
            Body::Stats(s) => Some(s),
            _ => None,
        }
    }
}

impl FromBody for StatusReply {
    fn from_body(body: Body) -> Option<Self> {
        match body {
            Body::Status(s) => Some(s),
            _ => None,
        }
    }
}

impl FromBody for LookupReply {
    fn from_body(body: Body) -> Option<Self> {
        match body {
            Body::Lookup(l) => Some(l),
            _ => None,
        }
    }
}

/// `(name, value)` lists on the wire: a JSON object keyed by name, in the list's order, so
/// `--json` output reads `.datapath.dropped_verdict` rather than a search through
/// `[name, value]` pairs. Reads the older pair lists too (a CLI newer than its daemon).
pub mod by_name {
    use std::{fmt, marker::PhantomData};

    use serde::{
        Deserialize, Deserializer, Serialize, Serializer,
        de::{MapAccess, SeqAccess, Visitor},
    };

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        rows: &[(K, V)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(rows.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<Vec<(K, V)>, D::Error>
    where
        K: Deserialize<'de>,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        d.deserialize_any(Rows(PhantomData))
    }

    struct Rows<K, V>(PhantomData<(K, V)>);

    impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Rows<K, V> {
        type Value = Vec<(K, V)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of counts by name")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut rows = Vec::with_capacity(m.size_hint().unwrap_or(0));
            while let Some(row) = m.next_entry()? {
                rows.push(row);
            }
            Ok(rows)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
            let mut rows = Vec::with_capacity(s.size_hint().unwrap_or(0));
            while let Some(row) = s.next_element()? {
                rows.push(row);
            }
            Ok(rows)
        }
    }
}

/// A TTL as the protocol carries it.
pub fn ttl_secs(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts by name are objects keyed by name, in order, and read back; the pair lists
    /// of older daemons still read.
    #[test]
    fn counts_by_name_are_objects() {
        let s = StatsReply {
            datapath: vec![("passed_new".into(), 3), ("dropped_verdict".into(), 7)],
            verdicts_by_action: vec![(Action::Drop, 2), (Action::Pass, 1)],
            verdicts_by_reason: vec![(Source::Reputation, 3)],
            engine: Stats::default(),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            text.starts_with(
                r#"{"datapath":{"passed_new":3,"dropped_verdict":7},"verdicts_by_action":{"drop":2,"pass":1},"verdicts_by_reason":{"reputation":3},"#
            ),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["datapath"]["dropped_verdict"], 7);
        assert_eq!(serde_json::from_str::<StatsReply>(&text).unwrap(), s);
        let old = text
            .replace(
                r#"{"passed_new":3,"dropped_verdict":7}"#,
                r#"[["passed_new",3],["dropped_verdict",7]]"#,
            )
            .replace(r#"{"drop":2,"pass":1}"#, r#"[["drop",2],["pass",1]]"#)
            .replace(r#"{"reputation":3}"#, r#"[["reputation",3]]"#);
        assert_ne!(old, text);
        assert_eq!(serde_json::from_str::<StatsReply>(&old).unwrap(), s);
    }

    /// A request naming an IPv4-mapped address means the IPv4 one, whoever wrote it.
    #[test]
    fn requests_take_mapped_addresses_as_ipv4() {
        let r: Request = serde_json::from_str(
            r#"{"cmd":"block","net":"::ffff:192.0.2.25/128","ttl_secs":null,"reason":null,"force":false}"#,
        )
        .unwrap();
        let want: IpNet = "192.0.2.25/32".parse().unwrap();
        assert!(
            matches!(r, Request::Block { net, .. } if net == want),
            "{r:?}"
        );
        let r: Request =
            serde_json::from_str(r#"{"cmd":"lookup","ip":"::ffff:192.0.2.25"}"#).unwrap();
        assert_eq!(
            r,
            Request::Lookup {
                ip: "192.0.2.25".parse().unwrap()
            }
        );
        let e = serde_json::from_str::<Request>(r#"{"cmd":"unblock","net":"::ffff:0:0/64"}"#);
        assert!(e.unwrap_err().to_string().contains("shorter than /96"));
        let round = Request::Unallow {
            net: "2001:db8::/32".parse().unwrap(),
        };
        let text = serde_json::to_string(&round).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), round);
    }
}
