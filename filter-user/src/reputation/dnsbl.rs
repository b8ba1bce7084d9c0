//! DNSBL/DNSWL lookups (RFC 5782): one A query per zone, the answer codes sorted into
//! listings, refusals and garbage, and the TXT reason fetched for a listing.
use std::{net::IpAddr, sync::Arc};

use tracing::{info, warn};

use super::{
    codes::{CodeClass, any_matches, classify, error_code_meaning},
    config::DnsblConfig,
    names::dnsbl_name,
    resolver::{Dns, Outcome},
    stats::ZoneCounters,
    verdict::{Evidence, Finding, Listing},
};

/// A `[[dnsbl]]` entry ready to query.
#[derive(Debug)]
pub struct Zone {
    pub cfg: DnsblConfig,
    /// Lower-case, without the trailing dot.
    pub name: String,
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
        let name = cfg.zone.trim_end_matches('.').to_ascii_lowercase();
        Self {
            cfg,
            name,
            counters,
        }
    }

    pub fn source(&self) -> String {
        format!("dnsbl:{}", self.name)
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

    fn class_of(&self, code: std::net::Ipv4Addr) -> Class {
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

/// Queries `zone` about `ip`.
pub async fn check(dns: &Dns, ip: IpAddr, zone: &Zone) -> ZoneResult {
    let qname = dnsbl_name(ip, &zone.name);
    let query = format!("{qname} A");
    let (lo, hi) = zone.weight_range();
    let c = &zone.counters;
    c.queries.inc();
    let mut warnings = Vec::new();
    let (codes, ttl) = match dns.a(&zone.name, &qname).await {
        Outcome::Answer(codes, ttl) => (codes, ttl),
        Outcome::Negative { nxdomain, ttl } => {
            c.not_listed.inc();
            let what = if nxdomain { "NXDOMAIN" } else { "no A record" };
            let ev = Evidence::new(zone.source(), Finding::NotListed, 0)
                .query(query)
                .detail(what)
                .ttl(ttl);
            return ZoneResult {
                evidence: vec![ev],
                warnings,
            };
        }
        Outcome::TempFail(e) => {
            c.tempfail.inc();
            let ev = Evidence::new(zone.source(), Finding::DnsTempfail, 0)
                .query(query)
                .detail(e)
                .unknown(lo, hi);
            return ZoneResult {
                evidence: vec![ev],
                warnings,
            };
        }
    };

    let mut evidence = Vec::new();
    // Distinct classes with the codes that hit them, in answer order.
    let mut listed: Vec<(Class, Vec<std::net::Ipv4Addr>)> = Vec::new();
    for code in codes {
        match classify(code, &zone.cfg.error_codes) {
            CodeClass::Error => {
                c.error_codes.inc();
                let meaning = error_code_meaning(code);
                let msg = format!(
                    "{} answered {code} ({meaning}): its answers are not used; query it through \
                     your own recursive resolver and within its usage terms",
                    zone.name
                );
                if c.may_warn() {
                    warn!(zone = %zone.name, %code, "DNSBL refused our query: {msg}");
                }
                warnings.push(msg);
                evidence.push(
                    Evidence::new(zone.source(), Finding::ErrorCode, 0)
                        .query(query.clone())
                        .detail(format!("{code}: {meaning}"))
                        .unknown(lo, hi),
                );
            }
            CodeClass::OutsideLoopback => {
                c.outside_loopback.inc();
                let msg = format!(
                    "{} answered {code}, outside 127.0.0.0/8: not a DNSBL answer (a resolver \
                     rewriting NXDOMAIN?)",
                    zone.name
                );
                if c.may_warn() {
                    warn!(zone = %zone.name, %code, "{msg}");
                }
                warnings.push(msg);
                evidence.push(
                    Evidence::new(zone.source(), Finding::OutsideLoopback, 0)
                        .query(query.clone())
                        .detail(code.to_string())
                        .unknown(lo, hi),
                );
            }
            CodeClass::Listing
                if !zone.cfg.codes.is_empty() && !any_matches(&zone.cfg.codes, code) =>
            {
                c.code_ignored.inc();
                evidence.push(
                    Evidence::new(zone.source(), Finding::CodeIgnored, 0)
                        .query(query.clone())
                        .detail(format!("{code} is not in the zone's codes"))
                        .ttl(Some(ttl)),
                );
            }
            CodeClass::Listing => {
                let class = zone.class_of(code);
                match listed.iter_mut().find(|(k, _)| *k == class) {
                    Some((_, codes)) => codes.push(code),
                    None => listed.push((class, vec![code])),
                }
            }
        }
    }

    if !listed.is_empty() {
        c.listed.inc();
        // The TXT reason is for people (logs, `check`); its failure changes nothing.
        let txt = match dns.txt(&zone.name, &qname).await {
            Outcome::Answer(txts, _) => printable(&txts.join(" | "), 300),
            _ => String::new(),
        };
        for (class, codes) in listed {
            let (weight, label) = zone.class_weight(class);
            let listing = Listing {
                zone: zone.name.clone(),
                code: codes[0],
                label: zone.class_label(class).to_owned(),
                text: txt.clone(),
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
            info!(%ip, zone = %zone.name, weight, "listed: {detail}");
            evidence.push(
                Evidence::new(zone.source(), Finding::Listed, weight)
                    .query(query.clone())
                    .detail(detail)
                    .ttl(Some(ttl))
                    .listing(listing),
            );
        }
    }
    ZoneResult { evidence, warnings }
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
