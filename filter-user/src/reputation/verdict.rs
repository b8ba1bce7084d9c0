//! What the engine concludes about a peer: a [`Verdict`] and the [`Evidence`] behind it.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use filter_common::{Action, Reason};
use serde::{Serialize, Serializer};

/// The engine's decision about one peer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub ip: IpAddr,
    pub action: Action,
    /// Why, in the datapath's terms: `Config` (static lists), `Reputation` (the score) or
    /// `Tempfail` (DNS trouble left the verdict uncertain: a short-lived, lenient verdict).
    pub reason: Reason,
    /// Sum of the evidence weights.
    pub score: i32,
    /// How long the verdict holds; the daemon turns it into the map entry's expiry.
    #[serde(rename = "ttl_secs", serialize_with = "ser_secs")]
    pub ttl: Duration,
    pub evidence: Vec<Evidence>,
    /// Things the operator should fix (a list refusing our queries), for logs and `check`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Time the evaluation took.
    #[serde(rename = "elapsed_ms", serialize_with = "ser_millis")]
    pub elapsed: Duration,
}

/// One lookup (or static decision) and what it contributed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// `lists`, `rdns`, `fcrdns`, or `dnsbl:<zone>`.
    pub source: String,
    pub result: Finding,
    /// Points added to the score (negative for allowlists; 0 for anything that is not a
    /// definite answer).
    pub weight: i32,
    /// The DNS question asked (`2.2.0.192.zen.spamhaus.org. A`), empty for static lists.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// The answer or error, readable: codes, class labels, TXT reason, PTR names.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// TTL of the answer (or of the negative answer, from the SOA), when known.
    #[serde(
        rename = "ttl_secs",
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_secs"
    )]
    pub ttl: Option<Duration>,
    /// For a lookup that failed: the lowest and highest weight a real answer could have
    /// added. The policy uses it to keep a failure from ever making a verdict harsher.
    #[serde(skip)]
    pub(crate) unknown_range: Option<(i32, i32)>,
    /// For a zone's listing: its parts one by one, for the MTA (`detail` has them as prose).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
}

/// A DNSBL/DNSWL listing taken apart, so the MTA can name the list, the code, its label and
/// the list's own reason when it refuses a sender (`554 ... listed in zen.spamhaus.org`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The zone, lower-case, without the trailing dot.
    pub zone: String,
    /// The first answer code of the listing's weight class.
    pub code: Ipv4Addr,
    /// The class's `label` from `[[dnsbl.code_weights]]` (`SBL`), empty if it has none.
    pub label: String,
    /// The zone's TXT record for the address (one printable line, bounded), empty if none.
    pub text: String,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// In `lists.allow`.
    StaticAllow,
    /// In `lists.deny`.
    StaticDeny,
    /// The address has PTR names.
    Ptr,
    /// NXDOMAIN or no PTR record: a definite "no reverse DNS".
    NoPtr,
    /// A PTR name resolves back to the address.
    FcrdnsMatch,
    /// No PTR name (among those checked) resolves back to the address.
    FcrdnsMismatch,
    /// SERVFAIL, timeout, refused...: we do not know. Never adds weight.
    DnsTempfail,
    /// The zone lists the address with a code that counts.
    Listed,
    /// NXDOMAIN (or no A record) from the zone.
    NotListed,
    /// The zone answered with a code that its `codes` filter excludes.
    CodeIgnored,
    /// The zone answered 127.255.255.x (or one of its `error_codes`): it refused the query.
    ErrorCode,
    /// The zone answered an address outside 127.0.0.0/8: not a DNSBL answer.
    OutsideLoopback,
    /// Not asked: the resolver canary fails for this source, so its answers would not
    /// count (see `reputation::canary`). Never adds weight.
    CanaryFailed,
    /// Not waited for: the other answers already made the verdict a drop that this
    /// blocklist zone (its weights only add) could only confirm (see `reputation::gather`).
    /// Never adds weight.
    NotAwaited,
}

impl Finding {
    pub const fn name(self) -> &'static str {
        match self {
            Finding::StaticAllow => "static_allow",
            Finding::StaticDeny => "static_deny",
            Finding::Ptr => "ptr",
            Finding::NoPtr => "no_ptr",
            Finding::FcrdnsMatch => "fcrdns_match",
            Finding::FcrdnsMismatch => "fcrdns_mismatch",
            Finding::DnsTempfail => "dns_tempfail",
            Finding::Listed => "listed",
            Finding::NotListed => "not_listed",
            Finding::CodeIgnored => "code_ignored",
            Finding::ErrorCode => "error_code",
            Finding::OutsideLoopback => "outside_loopback",
            Finding::CanaryFailed => "canary_failed",
            Finding::NotAwaited => "not_awaited",
        }
    }

    /// Whether the lookup behind it gave no usable answer.
    pub const fn is_unknown(self) -> bool {
        matches!(
            self,
            Finding::DnsTempfail
                | Finding::ErrorCode
                | Finding::OutsideLoopback
                | Finding::CanaryFailed
        )
    }
}

impl Verdict {
    /// Whether the sender's reverse DNS is forward-confirmed: a PTR name of it resolves back
    /// to the address, as a mail server's does (`policy.explain_to = "fcrdns"`).
    pub fn forward_confirmed(&self) -> bool {
        self.evidence
            .iter()
            .any(|e| e.result == Finding::FcrdnsMatch)
    }

    /// The listing that weighed most towards this verdict (a blocklist's, never an
    /// allowlist's), if any: what the MTA names when it refuses the sender.
    pub fn strongest_listing(&self) -> Option<&Listing> {
        self.evidence
            .iter()
            .filter(|e| e.weight > 0)
            .filter_map(|e| e.listing.as_ref().map(|l| (e.weight, l)))
            .fold(None, |best: Option<(i32, &Listing)>, (w, l)| match best {
                Some((bw, _)) if bw >= w => best,
                _ => Some((w, l)),
            })
            .map(|(_, l)| l)
    }

    /// The evidence that moved the score (or could not be had), for the verdict log line:
    /// `source=result[detail](+w)` items separated by spaces, or `none`.
    pub fn reasons(&self) -> String {
        let parts = self.reason_parts();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }

    /// [`Verdict::reasons`] item by item (a DNSBL's TXT detail may hold spaces).
    pub fn reason_parts(&self) -> Vec<String> {
        self.evidence
            .iter()
            .filter(|e| e.weight != 0 || e.result.is_unknown())
            .map(|e| {
                let detail = if e.detail.is_empty() {
                    String::new()
                } else {
                    format!("[{}]", e.detail)
                };
                format!("{}={}{}({:+})", e.source, e.result.name(), detail, e.weight)
            })
            .collect()
    }
}

impl Evidence {
    pub(crate) fn new(source: impl Into<String>, result: Finding, weight: i32) -> Self {
        Self {
            source: source.into(),
            result,
            weight,
            query: String::new(),
            detail: String::new(),
            ttl: None,
            unknown_range: None,
            listing: None,
        }
    }

    pub(crate) fn listing(mut self, l: Listing) -> Self {
        self.listing = Some(l);
        self
    }

    pub(crate) fn query(mut self, q: impl Into<String>) -> Self {
        self.query = q.into();
        self
    }

    pub(crate) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }

    pub(crate) fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    pub(crate) fn unknown(mut self, lo: i32, hi: i32) -> Self {
        self.unknown_range = Some((lo.min(0), hi.max(0)));
        self
    }
}

fn ser_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn ser_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ser_opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}
