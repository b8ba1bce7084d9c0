//! `[[dnsbl]]`: the DNSBL and DNSWL zones, their answer codes and weights, and the built-in
//! zones.

use std::collections::HashSet;

use documented::DocumentedFields;
use serde::{Deserialize, Serialize};

use crate::{invalid_key::InvalidKey, reputation::codes::CodeSpec};

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
    /// groups different weights with [[dnsbl.code_weights]] tables.
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

/// Checks the `[[dnsbl]]` entries: zone names valid and unique.
pub fn validate_dnsbls(zones: &[DnsblConfig]) -> Result<(), InvalidKey> {
    let mut seen = HashSet::new();
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
