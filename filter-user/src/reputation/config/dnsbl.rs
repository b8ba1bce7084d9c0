//! `[[dnsbl]]`: the DNSBL and DNSWL zones, their answer codes and weights, and the built-in
//! zones.

use std::collections::HashSet;

use documented::DocumentedFields;
use serde::{Deserialize, Serialize};

use crate::{
    invalid_key::InvalidKey,
    reputation::codes::{CodeSpec, LOOPBACK_V4},
};

/// The longest zone name (text, without the trailing dot): an IPv6 query name is 32 nibble
/// labels (64 octets on the wire) before the zone, and a DNS name holds 255 octets.
const MAX_ZONE_LEN: usize = 255 - 64 - 2;

/// One `[[dnsbl]]` entry: a DNSBL (positive weight) or DNSWL (negative weight) zone.
///
/// An answer first has to be in 127.0.0.0/8 and not an error code (127.255.255.0/24 or
/// `error_codes`); then, if `codes` is set, match it; then it takes the weight of the first
/// `code_weights` entry that matches it, else `weight`. When a zone answers several codes,
/// each distinct class (a `code_weights` entry, or the zone's own weight) counts once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(deny_unknown_fields)]
pub struct DnsblConfig {
    /// The list's zone, e.g. "zen.spamhaus.org". Each zone is written once: give its code
    /// groups different weights with [[dnsbl.code_weights]] tables. Only ever sent to the
    /// resolver: everything shown or sent elsewhere names the zone by `name`.
    pub zone: String,
    /// The name the zone goes by wherever it is shown or sent: the MTA's 5xx text, logs,
    /// Prometheus labels, fleet records, `check`, `status`, `stats`. Letters, digits, `.`,
    /// `-` and `_`, at most 63. Default: the zone without any label that looks like an
    /// access key (20 or more letters and digits, at least one a digit), so a Spamhaus DQS
    /// zone "KEY.zen.dq.spamhaus.net" shows as "zen.dq.spamhaus.net" and its key never
    /// leaves the config file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
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
    /// Check the zone with the resolver canary (RFC 5782 test points: 127.0.0.2 must be
    /// listed, 127.0.0.1 must not, every `resolver.canary_every`). While it fails, the
    /// zone's answers do not count. Default `true`; `false` for a zone of your own that
    /// lists no test point.
    #[serde(default = "yes")]
    pub canary: bool,
    /// Queries a day the list's terms allow you (0: no quota). `status` and the log warn
    /// once a day's queries (canary included) pass 80 % of it. The built-in zones carry
    /// their free-use terms: Spamhaus' free use is for non-commercial use by sites under
    /// 100,000 SMTP connections a day and 300,000 DNS queries a day (beyond that, or for
    /// commercial use, a Data Query Service key); DNSWL's free use is under 100,000
    /// queries a day.
    #[serde(default)]
    pub daily_query_quota: u64,
}

fn yes() -> bool {
    true
}

/// A `[[dnsbl.code_weights]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(deny_unknown_fields)]
pub struct CodeWeight {
    /// The answer codes of this class: addresses ("127.0.0.2"), CIDRs ("127.0.0.4/30"),
    /// ranges ("127.0.0.10-127.0.0.11") or patterns ("127.0.*.3").
    pub codes: Vec<CodeSpec>,
    /// Points a listing with one of these codes adds, instead of the zone's weight.
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
            name: String::new(),
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
            canary: true,
            daily_query_quota: 300_000,
        },
        DnsblConfig {
            zone: "list.dnswl.org".to_owned(),
            name: String::new(),
            weight: 0,
            codes: codes(&["127.0.0.0/16"]),
            code_weights: vec![
                class("DNSWL-high", &["127.0.*.3"], -15),
                class("DNSWL-med", &["127.0.*.2"], -10),
                class("DNSWL-low", &["127.0.*.1"], -5),
                class("DNSWL-none", &["127.0.*.0"], 0),
            ],
            error_codes: codes(&["127.0.0.255"]),
            canary: true,
            daily_query_quota: 100_000,
        },
    ]
}

impl DnsblConfig {
    /// A zone with a weight and every other key at its default.
    pub fn new(zone: &str, weight: i32) -> Self {
        Self {
            zone: zone.to_owned(),
            name: String::new(),
            weight,
            codes: Vec::new(),
            code_weights: Vec::new(),
            error_codes: Vec::new(),
            canary: true,
            daily_query_quota: 0,
        }
    }

    /// The zone as queried: lower-case, without the trailing dot.
    pub fn query_zone(&self) -> String {
        self.zone.trim_end_matches('.').to_ascii_lowercase()
    }

    /// The name shown and sent for the zone: `name`, or the zone without key-like labels.
    pub fn display_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let zone = self.query_zone();
        let labels: Vec<&str> = zone.split('.').collect();
        // Under Spamhaus' DQS domains the first label is the key, whatever it looks like.
        let keyed = zone.contains(".dq.spamhaus.");
        labels
            .iter()
            .enumerate()
            .filter(|&(i, l)| !(looks_like_key(l) || (keyed && i == 0 && labels.len() > 4)))
            .map(|(_, l)| *l)
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// An access key in a zone name (Spamhaus DQS, abusix): a long run of letters and digits,
/// as no list's own label is (hiding a long label that was not a key costs nothing).
fn looks_like_key(label: &str) -> bool {
    label.len() >= 20 && label.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `name` is safe as a display name: in a 5xx line, a log field, a metric label.
fn valid_display_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks the `[[dnsbl]]` entries: zone names valid and unique, display names safe and
/// unique.
pub fn validate_dnsbls(zones: &[DnsblConfig]) -> Result<(), InvalidKey> {
    let mut seen = HashSet::new();
    let mut names = HashSet::new();
    for (i, z) in zones.iter().enumerate() {
        let key = format!("dnsbl[{i}].zone");
        let name = z.zone.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(InvalidKey::new(
                key,
                "must not be empty: write the list's DNS zone, e.g. \"zen.spamhaus.org\"",
            ));
        }
        if name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(InvalidKey::new(
                key,
                format!(
                    "{:?} is not a DNS name: no spaces or control characters",
                    z.zone
                ),
            ));
        }
        if let Err(e) = hickory_proto::rr::Name::from_ascii(&name) {
            return Err(InvalidKey::new(
                key,
                format!("{:?} is not a DNS name: {e}", z.zone),
            ));
        }
        if name.contains('*') {
            return Err(InvalidKey::new(
                key,
                format!(
                    "{:?} is a wildcard, not a zone: write the list's zone itself",
                    z.zone
                ),
            ));
        }
        if name.len() > MAX_ZONE_LEN {
            return Err(InvalidKey::new(
                key,
                format!(
                    "{:?} is {} characters: an IPv6 query under it (32 nibble labels before the zone) would pass DNS's 255 octets; at most {MAX_ZONE_LEN}",
                    z.zone,
                    name.len()
                ),
            ));
        }
        if !seen.insert(name) {
            // postscreen and Exim configs list a zone once per code group; here a zone is
            // queried once and its groups are weighed inside it.
            return Err(InvalidKey::new(
                key,
                format!(
                    "{:?} is listed twice; write the zone once, with a [[dnsbl.code_weights]] \
                     table per code group, e.g. `[[dnsbl.code_weights]] codes = [\"127.0.0.2\"] \
                     weight = 10` and `[[dnsbl.code_weights]] codes = [\"127.0.0.10-127.0.0.11\"] \
                     weight = 5`",
                    z.zone
                ),
            ));
        }
        // After the zone check: a zone written twice (in another case, with a trailing dot)
        // is that, not a clash of display names.
        validate_name(i, z, &mut names)?;
        for (j, cw) in z.code_weights.iter().enumerate() {
            if cw.codes.is_empty() {
                return Err(InvalidKey::new(
                    format!("dnsbl[{i}].code_weights[{j}].codes"),
                    "must name at least one code",
                ));
            }
            in_loopback(&format!("dnsbl[{i}].code_weights[{j}].codes"), &cw.codes)?;
        }
        in_loopback(&format!("dnsbl[{i}].codes"), &z.codes)?;
        not_the_test_point(&format!("dnsbl[{i}].error_codes"), &z.error_codes)?;
    }
    Ok(())
}

/// RFC 5782's test point, which every list answers as listed: an error code covering it
/// (`127.0.0.0/8`, `127.*.*.*`) would turn every listing into "query refused", and the zone
/// would never list anyone (unnoticed with the canary off).
fn not_the_test_point(key: &str, specs: &[CodeSpec]) -> Result<(), InvalidKey> {
    let test_point = std::net::Ipv4Addr::new(127, 0, 0, 2);
    match specs.iter().find(|s| s.matches(test_point)) {
        Some(s) => Err(InvalidKey::new(
            key,
            format!(
                "{s} covers 127.0.0.2, the listing every DNSBL answers for its test point (RFC 5782): every listing would be taken for a refused query; error codes are the list's own (127.255.255.0/24 is built in)"
            ),
        )),
        None => Ok(()),
    }
}

/// Listing codes are in 127.0.0.0/8 (RFC 5782): a spec wholly outside it can never match an
/// answer that counts.
fn in_loopback(key: &str, specs: &[CodeSpec]) -> Result<(), InvalidKey> {
    match specs.iter().find(|s| s.loopback_ranges().is_empty()) {
        Some(s) => Err(InvalidKey::new(
            key,
            format!(
                "{s} is outside {LOOPBACK_V4}, where every DNSBL answer is (RFC 5782): it can never match; an answer outside it is never a listing"
            ),
        )),
        None => Ok(()),
    }
}

/// The display name of `dnsbl[i]`: safe, and unique among `names` (metric labels and the
/// per-zone counters are keyed by it).
fn validate_name(i: usize, z: &DnsblConfig, names: &mut HashSet<String>) -> Result<(), InvalidKey> {
    let name = z.display_name();
    let key = if z.name.is_empty() {
        format!("dnsbl[{i}].zone")
    } else {
        format!("dnsbl[{i}].name")
    };
    if !z.name.is_empty() && !valid_display_name(&name) {
        return Err(InvalidKey::new(
            key,
            format!("{name:?}: use 1 to 63 letters, digits, '.', '-' or '_'"),
        ));
    }
    if !names.insert(name.clone()) {
        return Err(InvalidKey::new(
            key,
            format!(
                "the display name {name:?} is used by another [[dnsbl]]: set `name` to tell them apart"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_the_zone_never_reaches_the_display_name() {
        let dqs = DnsblConfig::new("aip7yig6sahg6ehsohn5shco3z.zen.dq.spamhaus.net.", 10);
        assert_eq!(dqs.display_name(), "zen.dq.spamhaus.net");
        let plain = DnsblConfig::new("b.barracudacentral.org", 10);
        assert_eq!(plain.display_name(), "b.barracudacentral.org");
        let named = DnsblConfig {
            name: "spamhaus-zen".into(),
            ..DnsblConfig::new("bbbbbbbbbbbbbbbbbbbbbbbbb2.zen.dq.spamhaus.net", 10)
        };
        assert_eq!(named.display_name(), "spamhaus-zen");
        // A short key, or one without a digit, under a DQS domain.
        let short = DnsblConfig::new("shortkey.zen.dq.spamhaus.net", 10);
        assert_eq!(short.display_name(), "zen.dq.spamhaus.net");
        let letters = DnsblConfig::new("abcdefghijklmnopqrstuvwxyz.dbl.dq.spamhaus.net", 10);
        assert_eq!(letters.display_name(), "dbl.dq.spamhaus.net");
        assert!(validate_dnsbls(&[dqs.clone(), named]).is_ok());
        let twice = DnsblConfig::new("k0000000000000000000000000.zen.dq.spamhaus.net", 5);
        let e = validate_dnsbls(&[dqs, twice]).unwrap_err().to_string();
        assert!(
            e.contains("dnsbl[1].zone") && e.contains("display name"),
            "{e}"
        );
        let bad = DnsblConfig {
            name: "a b".into(),
            ..DnsblConfig::new("bl.example", 5)
        };
        assert!(validate_dnsbls(&[bad]).is_err());
    }

    #[test]
    fn zones_that_cannot_work_are_refused() {
        let err = |z: DnsblConfig| validate_dnsbls(&[z]).unwrap_err().to_string();
        let e = err(DnsblConfig::new("*.bl.test", 10));
        assert!(e.contains("wildcard"), "{e}");
        let labels = |n: usize| vec!["a".repeat(60); n].join(".");
        let long = format!("{}.test", labels(4));
        assert!(long.len() > MAX_ZONE_LEN && long.len() < 253);
        let e = err(DnsblConfig::new(&long, 10));
        assert!(e.contains("IPv6") && e.contains("189"), "{e}");
        let fits = format!("{}.test", labels(3));
        assert!(
            validate_dnsbls(&[DnsblConfig::new(&fits, 10)]).is_ok(),
            "{fits}"
        );
        let e = err(DnsblConfig {
            codes: vec!["127.0.0.2".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            ..DnsblConfig::new("bl.test", 10)
        });
        assert!(
            e.contains("dnsbl[0].codes") && e.contains("10.0.0.2"),
            "{e}"
        );
        let e = err(DnsblConfig {
            code_weights: vec![CodeWeight {
                codes: vec!["192.0.2.0/24".parse().unwrap()],
                weight: 5,
                label: String::new(),
            }],
            ..DnsblConfig::new("bl.test", 10)
        });
        assert!(e.contains("dnsbl[0].code_weights[0].codes"), "{e}");
        let e = err(DnsblConfig {
            error_codes: vec!["127.0.0.0/8".parse().unwrap()],
            ..DnsblConfig::new("bl.test", 10)
        });
        assert!(
            e.contains("dnsbl[0].error_codes") && e.contains("127.0.0.2"),
            "{e}"
        );
        // The same zone twice is named as such, not as a display-name clash.
        let e = validate_dnsbls(&[
            DnsblConfig::new("bl.test", 10),
            DnsblConfig::new("BL.test.", 5),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("listed twice") && !e.contains("display name"),
            "{e}"
        );
    }
}
