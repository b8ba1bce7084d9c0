//! DNSBL/DNSWL lookups (RFC 5782): one A query per zone, the answer codes sorted into
//! listings, refusals and garbage, and the TXT reason fetched for a listing (waited for at
//! most [`TXT_WAIT`]: it is for people, and the verdict must not wait on it).
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use tracing::{info, warn};

use super::{
    canary,
    codes::{CodeClass, any_matches, classify, error_code_meaning},
    config::DnsblConfig,
    names::dnsbl_name,
    quota,
    resolver::{Dns, Outcome},
    stats::ZoneCounters,
    verdict::{Evidence, Finding, Listing},
};

/// How long a listing's TXT reason may delay the verdict once the A answer is in. The text
/// only explains (logs, `check`, the MTA's 5xx); a list whose TXT is slow or never answered
/// must not hold the verdict past `datapath.hold_max`, which would let the held SYN of a
/// listed sender through. A resolver that has the A answer usually has the TXT within a
/// round trip to the list; past this the listing is shown without its text.
pub const TXT_WAIT: Duration = Duration::from_millis(300);

/// A `[[dnsbl]]` entry ready to query.
#[derive(Debug)]
pub struct Zone {
    pub cfg: DnsblConfig,
    /// The zone as queried: lower-case, without the trailing dot. Only ever sent to the
    /// resolver (it may hold an access key).
    pub name: String,
    /// What the zone is shown and sent as everywhere else (`[[dnsbl]] name`).
    pub display: String,
    pub counters: Arc<ZoneCounters>,
}

/// Which weight class an answer code falls in: a `code_weights` index, or the zone's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Entry(usize),
    Zone,
}

impl Zone {
    pub fn new(cfg: DnsblConfig, counters: Arc<ZoneCounters>) -> Self {
        Self {
            name: cfg.query_zone(),
            display: cfg.display_name(),
            cfg,
            counters,
        }
    }

    pub fn source(&self) -> String {
        format!("dnsbl:{}", self.display)
    }

    /// The lowest and highest weight one answer from this zone can add.
    pub fn weight_range(&self) -> (i32, i32) {
        let weights = self
            .cfg
            .code_weights
            .iter()
            .map(|c| c.weight)
            .chain([self.cfg.weight]);
        let (lo, hi) = weights.fold((0, 0), |(lo, hi), w| (lo.min(w), hi.max(w)));
        (lo, hi)
    }

    fn class_of(&self, code: Ipv4Addr) -> Class {
        self.cfg
            .code_weights
            .iter()
            .position(|cw| any_matches(&cw.codes, code))
            .map_or(Class::Zone, Class::Entry)
    }

    fn class_weight(&self, class: Class) -> (i32, String) {
        match class {
            Class::Entry(i) => {
                let cw = &self.cfg.code_weights[i];
                let label = if cw.label.is_empty() {
                    cw.codes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                } else {
                    cw.label.clone()
                };
                (cw.weight, label)
            }
            Class::Zone => (self.cfg.weight, String::new()),
        }
    }

    /// The class's configured label (`SBL`), empty for the zone's own class or none set.
    fn class_label(&self, class: Class) -> &str {
        match class {
            Class::Entry(i) => &self.cfg.code_weights[i].label,
            Class::Zone => "",
        }
    }
}

/// What one zone said about one address.
pub struct ZoneResult {
    pub evidence: Vec<Evidence>,
    pub warnings: Vec<String>,
}

/// Queries `zone` about `ip`: the A query, its codes sorted, and for a listing its TXT reason
/// (within [`TXT_WAIT`]).
pub async fn check(dns: &Dns, ip: IpAddr, zone: &Zone) -> ZoneResult {
    if let Some(failing) = canary::zone_failing(zone) {
        return ZoneResult {
            evidence: vec![failing],
            warnings: Vec::new(),
        };
    }
    let q = Query::new(ip, zone);
    zone.counters.queries.inc();
    quota::count(zone);
    let (codes, ttl) = match q.ask(dns).await {
        Ok(answer) => answer,
        Err(not_listed) => {
            return ZoneResult {
                evidence: vec![not_listed],
                warnings: Vec::new(),
            };
        }
    };
    let sorted = q.sort(codes, ttl);
    let mut evidence = sorted.evidence;
    if !sorted.listed.is_empty() {
        zone.counters.listed.inc();
        let txt = tokio::time::timeout(TXT_WAIT, q.reason(dns))
            .await
            .unwrap_or_default();
        evidence.extend(q.listings(sorted.listed, ttl, &txt));
    }
    ZoneResult {
        evidence,
        warnings: sorted.warnings,
    }
}

/// One zone's question about one address.
struct Query<'a> {
    ip: IpAddr,
    zone: &'a Zone,
    qname: String,
    /// `QNAME A`, as the evidence shows it: with the display name for the zone.
    query: String,
    /// The lowest and highest weight an answer can add (what an unknown answer may hide).
    lo: i32,
    hi: i32,
}

/// A zone's answer codes sorted: the evidence of those that are no listing (refusals,
/// garbage, ignored codes), warnings for the operator, and the listing classes that hit.
#[derive(Default)]
struct Sorted {
    evidence: Vec<Evidence>,
    warnings: Vec<String>,
    /// Distinct classes with the codes that hit them, in answer order.
    listed: Vec<(Class, Vec<Ipv4Addr>)>,
}

impl<'a> Query<'a> {
    fn new(ip: IpAddr, zone: &'a Zone) -> Self {
        let qname = dnsbl_name(ip, &zone.name);
        let query = format!("{} A", dnsbl_name(ip, &zone.display));
        let (lo, hi) = zone.weight_range();
        Self {
            ip,
            zone,
            qname,
            query,
            lo,
            hi,
        }
    }

    /// The A query: its codes and TTL, or the evidence of a definite negative or a
    /// temporary failure.
    async fn ask(&self, dns: &Dns) -> Result<(Vec<Ipv4Addr>, Duration), Evidence> {
        let (zone, c) = (self.zone, &self.zone.counters);
        match dns.a(&zone.display, &self.qname).await {
            Outcome::Answer(codes, ttl) => Ok((codes, ttl)),
            Outcome::Negative { nxdomain, ttl } => {
                c.not_listed.inc();
                let what = if nxdomain { "NXDOMAIN" } else { "no A record" };
                Err(Evidence::new(zone.source(), Finding::NotListed, 0)
                    .query(self.query.clone())
                    .detail(what)
                    .ttl(ttl))
            }
            Outcome::TempFail(e) => {
                c.tempfail.inc();
                Err(Evidence::new(zone.source(), Finding::DnsTempfail, 0)
                    .query(self.query.clone())
                    .detail(e.replace(&zone.name, &zone.display))
                    .unknown(self.lo, self.hi))
            }
        }
    }

    /// Sorts the answer codes: refusals and garbage (warned about), codes the zone's
    /// `codes` leave out, and listings by weight class.
    fn sort(&self, codes: Vec<Ipv4Addr>, ttl: Duration) -> Sorted {
        let (zone, c) = (self.zone, &self.zone.counters);
        let mut s = Sorted::default();
        for code in codes {
            match classify(code, &zone.cfg.error_codes) {
                CodeClass::Error => {
                    c.error_codes.inc();
                    c.last_error_code
                        .store(u32::from(code), std::sync::atomic::Ordering::Relaxed);
                    let meaning = error_code_meaning(code);
                    let msg = format!(
                        "{} answered {code} ({meaning}): its answers are not used; query it \
                         through your own recursive resolver and within its usage terms",
                        zone.display
                    );
                    if c.may_warn() {
                        warn!(zone = %zone.display, %code, "DNSBL refused our query: {msg}");
                    }
                    s.warnings.push(msg);
                    s.evidence
                        .push(self.unusable(Finding::ErrorCode, format!("{code}: {meaning}")));
                }
                CodeClass::OutsideLoopback => {
                    c.outside_loopback.inc();
                    let msg = format!(
                        "{} answered {code}, outside 127.0.0.0/8: not a DNSBL answer (a \
                         resolver rewriting NXDOMAIN?)",
                        zone.display
                    );
                    if c.may_warn() {
                        warn!(zone = %zone.display, %code, "{msg}");
                    }
                    s.warnings.push(msg);
                    s.evidence
                        .push(self.unusable(Finding::OutsideLoopback, code.to_string()));
                }
                CodeClass::Listing
                    if !zone.cfg.codes.is_empty() && !any_matches(&zone.cfg.codes, code) =>
                {
                    c.code_ignored.inc();
                    s.evidence.push(
                        Evidence::new(zone.source(), Finding::CodeIgnored, 0)
                            .query(self.query.clone())
                            .detail(format!("{code} is not in the zone's codes"))
                            .ttl(Some(ttl)),
                    );
                }
                CodeClass::Listing => {
                    let class = zone.class_of(code);
                    match s.listed.iter_mut().find(|(k, _)| *k == class) {
                        Some((_, codes)) => codes.push(code),
                        None => s.listed.push((class, vec![code])),
                    }
                }
            }
        }
        s
    }

    /// The evidence of an answer that cannot be used: it may hide any weight.
    fn unusable(&self, finding: Finding, detail: String) -> Evidence {
        Evidence::new(self.zone.source(), finding, 0)
            .query(self.query.clone())
            .detail(detail)
            .unknown(self.lo, self.hi)
    }

    /// The listing's TXT reason, one bounded printable line. It is for people (logs,
    /// `check`); its failure changes nothing.
    async fn reason(&self, dns: &Dns) -> String {
        quota::count(self.zone);
        match dns.txt(&self.zone.display, &self.qname).await {
            Outcome::Answer(txts, _) => printable(&txts.join(" | "), 300),
            _ => String::new(),
        }
    }

    /// The evidence of each listing class that hit, logged.
    fn listings(
        &self,
        listed: Vec<(Class, Vec<Ipv4Addr>)>,
        ttl: Duration,
        txt: &str,
    ) -> Vec<Evidence> {
        let zone = self.zone;
        let mut evidence = Vec::new();
        for (class, codes) in listed {
            let (weight, label) = zone.class_weight(class);
            let listing = Listing {
                zone: zone.display.clone(),
                code: codes[0],
                label: zone.class_label(class).to_owned(),
                text: txt.to_owned(),
            };
            let codes = codes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut detail = if label.is_empty() {
                codes
            } else {
                format!("{codes} ({label})")
            };
            if !txt.is_empty() {
                detail.push_str(&format!(": {txt}"));
            }
            info!(ip = %self.ip, zone = %zone.display, weight, "listed: {detail}");
            evidence.push(
                Evidence::new(zone.source(), Finding::Listed, weight)
                    .query(self.query.clone())
                    .detail(detail)
                    .ttl(Some(ttl))
                    .listing(listing),
            );
        }
        evidence
    }
}

/// TXT data comes from the list's servers: keep it to one printable line of bounded length
/// before it reaches logs and reports.
fn printable(s: &str, max_chars: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(max_chars)
        .collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_is_one_bounded_printable_line() {
        assert_eq!(
            printable("listed\nFAKE LOG LINE\x1b[31m", 100),
            "listed?FAKE LOG LINE?[31m"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
    }
}
