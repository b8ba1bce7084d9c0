//! DNSBL return codes (the A records a list answers with) and the patterns that match them.
//!
//! A [`CodeSpec`] is written in config as one of:
//! - a single address: `"127.0.0.2"`;
//! - a CIDR: `"127.0.0.4/30"`;
//! - an inclusive range: `"127.0.0.4-127.0.0.7"`;
//! - an octet pattern with `*` for "any value": `"127.0.*.3"`. This is not in the list,
//!   but list.dnswl.org encodes the trust level in the last octet and the category in the
//!   third (127.0.x.y), and "trust 3 in any category" is neither a CIDR nor a range.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A set of IPv4 return codes; see the module docs for the syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSpec {
    Net(Ipv4Net),
    Range(Ipv4Addr, Ipv4Addr),
    /// `None` octets match anything.
    Pattern([Option<u8>; 4]),
}

impl CodeSpec {
    pub fn matches(&self, code: Ipv4Addr) -> bool {
        match *self {
            CodeSpec::Net(net) => net.contains(&code),
            CodeSpec::Range(lo, hi) => lo <= code && code <= hi,
            CodeSpec::Pattern(p) => p
                .iter()
                .zip(code.octets())
                .all(|(p, o)| p.is_none_or(|p| p == o)),
        }
    }
}

/// Whether any spec in `specs` matches `code`.
pub fn any_matches(specs: &[CodeSpec], code: Ipv4Addr) -> bool {
    specs.iter().any(|s| s.matches(code))
}

/// Why a code spec did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid DNSBL code {input:?}: {why} (write an IPv4 address \"127.0.0.2\", a CIDR \
     \"127.0.0.4/30\", a range \"127.0.0.4-127.0.0.7\" or a pattern \"127.0.*.3\")"
)]
pub struct ParseCodeError {
    input: String,
    why: &'static str,
}

impl FromStr for CodeSpec {
    type Err = ParseCodeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| ParseCodeError {
            input: input.to_owned(),
            why,
        };
        let s = input.trim();
        if let Some((lo, hi)) = s.split_once('-') {
            let lo: Ipv4Addr = lo
                .trim()
                .parse()
                .map_err(|_| err("range start is not an address"))?;
            let hi: Ipv4Addr = hi
                .trim()
                .parse()
                .map_err(|_| err("range end is not an address"))?;
            if lo > hi {
                return Err(err("range start is after its end"));
            }
            return Ok(CodeSpec::Range(lo, hi));
        }
        if s.contains('/') {
            let net: Ipv4Net = s.parse().map_err(|_| err("not a valid CIDR"))?;
            if net.trunc() != net {
                return Err(err("CIDR has host bits set"));
            }
            return Ok(CodeSpec::Net(net));
        }
        if s.contains('*') {
            let mut octets = [None; 4];
            let mut parts = s.split('.');
            for slot in &mut octets {
                let part = parts
                    .next()
                    .ok_or_else(|| err("a pattern needs four octets"))?;
                *slot = match part {
                    "*" => None,
                    n => Some(n.parse().map_err(|_| err("octet is not 0-255 or *"))?),
                };
            }
            if parts.next().is_some() {
                return Err(err("a pattern needs four octets"));
            }
            return Ok(CodeSpec::Pattern(octets));
        }
        let addr: Ipv4Addr = s.parse().map_err(|_| err("not an IPv4 address"))?;
        Ok(CodeSpec::Net(Ipv4Net::from(addr)))
    }
}

impl fmt::Display for CodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeSpec::Net(net) if net.prefix_len() == 32 => write!(f, "{}", net.addr()),
            CodeSpec::Net(net) => write!(f, "{net}"),
            CodeSpec::Range(lo, hi) => write!(f, "{lo}-{hi}"),
            CodeSpec::Pattern(p) => {
                for (i, o) in p.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    match o {
                        Some(o) => write!(f, "{o}")?,
                        None => f.write_str("*")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl Serialize for CodeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CodeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// What a DNSBL answer code means before any zone-specific filter is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeClass {
    /// In 127.0.0.0/8 and not an error code: a candidate listing.
    Listing,
    /// 127.255.255.0/24 (Spamhaus: .252 typing error, .254 public/open resolver, .255 excessive
    /// queries) or a zone's own `error_codes`: the list refused to answer. Never a listing.
    Error,
    /// Outside 127.0.0.0/8: not a DNSBL answer at all, usually a resolver that rewrites
    /// NXDOMAIN into an advertising page's address. Never a listing.
    OutsideLoopback,
}

/// The block RFC 5782 answers come from.
pub const LOOPBACK_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
/// Spamhaus' (and others') "your query was refused" codes.
pub const ERROR_CODES: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 255, 255, 0), 24);

/// Classifies an answer code; `zone_errors` are the zone's own extra error codes.
pub fn classify(code: Ipv4Addr, zone_errors: &[CodeSpec]) -> CodeClass {
    if !LOOPBACK_V4.contains(&code) {
        CodeClass::OutsideLoopback
    } else if ERROR_CODES.contains(&code) || any_matches(zone_errors, code) {
        CodeClass::Error
    } else {
        CodeClass::Listing
    }
}

/// A readable meaning for the well-known error codes, for logs and `check`.
pub fn error_code_meaning(code: Ipv4Addr) -> &'static str {
    match code.octets() {
        [127, 255, 255, 252] => "typing error in the DNSBL name",
        [127, 255, 255, 254] => "query via a public/open resolver: the list refuses it",
        [127, 255, 255, 255] => "excessive number of queries: over the free-use quota",
        [127, 0, 0, 255] => "query refused (list.dnswl.org: over quota or public resolver)",
        _ => "the list refused the query",
    }
}

/// What to do about a zone's error codes, by the last one: each code has its own cause.
fn error_code_advice(code: Ipv4Addr) -> &'static str {
    match code.octets() {
        [127, 255, 255, 252] => "check the zone's name ([[dnsbl]] zone) for a typing error",
        [127, 255, 255, 254] => {
            "query it through a recursive resolver of your own, not a public one (resolver.nameservers)"
        }
        [127, 255, 255, 255] => {
            "the queries are over the list's free-use quota: lower them or get a subscription"
        }
        _ => {
            "check that resolver.nameservers is a recursive resolver of your own and that the queries are within the list's usage terms"
        }
    }
}

/// `status`'s line about a zone that answered `count` queries with error codes, the last
/// being `last` (`None` from a daemon that did not keep it).
pub fn refusal_warning(zone: &str, count: u64, last: Option<Ipv4Addr>) -> String {
    let (which, advice) = match last {
        Some(code) => (
            format!("the last {code}: {}", error_code_meaning(code)),
            error_code_advice(code),
        ),
        None => (
            "error codes".to_owned(),
            error_code_advice(Ipv4Addr::UNSPECIFIED),
        ),
    };
    format!(
        "{zone} refused {count} queries ({which}): those peers were not screened by it; {advice}"
    )
}

impl CodeSpec {
    /// The codes of this spec inside 127.0.0.0/8, as inclusive ranges (a pattern's free
    /// octets expanded; within 127/8 at most 65536 ranges). Empty: it can never match an
    /// answer that counts.
    pub fn loopback_ranges(&self) -> Vec<(u32, u32)> {
        let (lo8, hi8) = (
            u32::from(LOOPBACK_V4.network()),
            u32::from(LOOPBACK_V4.broadcast()),
        );
        let clip = |lo: u32, hi: u32| (lo <= hi8 && hi >= lo8).then(|| (lo.max(lo8), hi.min(hi8)));
        match *self {
            CodeSpec::Net(n) => clip(n.network().into(), n.broadcast().into())
                .into_iter()
                .collect(),
            CodeSpec::Range(lo, hi) => clip(lo.into(), hi.into()).into_iter().collect(),
            CodeSpec::Pattern(p) => {
                if p[0].is_some_and(|o| o != 127) {
                    return Vec::new();
                }
                // Trailing free octets are one range; the others are expanded.
                let fixed = p
                    .iter()
                    .rposition(Option::is_some)
                    .map_or(1, |i| i + 1)
                    .max(1);
                let mut prefixes: Vec<u32> = vec![127];
                for octet in &p[1..fixed] {
                    prefixes = prefixes
                        .iter()
                        .flat_map(|&v| match octet {
                            Some(o) => vec![v << 8 | u32::from(*o)],
                            None => (0..=255u32).map(|o| v << 8 | o).collect(),
                        })
                        .collect();
                }
                let free = 8 * (4 - fixed as u32);
                prefixes
                    .into_iter()
                    .map(|v| {
                        let lo = v.checked_shl(free).unwrap_or(0);
                        (lo, lo | ((1u64 << free) - 1) as u32)
                    })
                    .collect()
            }
        }
    }
}

/// Whether some code matches both a spec of `a` and one of `b` (within 127/8).
pub fn overlap(a: &[CodeSpec], b: &[CodeSpec]) -> bool {
    let b: Vec<(u32, u32)> = b.iter().flat_map(CodeSpec::loopback_ranges).collect();
    a.iter()
        .flat_map(CodeSpec::loopback_ranges)
        .any(|(lo, hi)| b.iter().any(|&(l, h)| lo <= h && l <= hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_each_form() {
        let single: CodeSpec = "127.0.0.2".parse().unwrap();
        assert!(single.matches(ip("127.0.0.2")) && !single.matches(ip("127.0.0.3")));
        let cidr: CodeSpec = "127.0.0.4/30".parse().unwrap();
        assert!(cidr.matches(ip("127.0.0.7")) && !cidr.matches(ip("127.0.0.8")));
        let range: CodeSpec = "127.0.0.10-127.0.0.11".parse().unwrap();
        assert!(range.matches(ip("127.0.0.10")) && range.matches(ip("127.0.0.11")));
        assert!(!range.matches(ip("127.0.0.9")) && !range.matches(ip("127.0.0.12")));
        let pat: CodeSpec = "127.0.*.3".parse().unwrap();
        assert!(pat.matches(ip("127.0.15.3")) && !pat.matches(ip("127.0.15.2")));
        assert!(!pat.matches(ip("127.1.15.3")));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "127.0.0.2",
            "127.0.0.4/30",
            "127.0.0.4-127.0.0.7",
            "127.0.*.3",
            "*.*.*.*",
        ] {
            assert_eq!(s.parse::<CodeSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_specs() {
        for bad in [
            "",
            "127.0.0",
            "127.0.0.9-127.0.0.2",
            "127.0.0.1/24",
            "127.0.0.256",
            "127.*.0",
            "::1",
        ] {
            assert!(bad.parse::<CodeSpec>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn specs_are_placed_in_loopback() {
        let spec = |s: &str| s.parse::<CodeSpec>().unwrap();
        assert!(spec("10.0.0.1").loopback_ranges().is_empty());
        assert!(spec("128.0.0.0/8").loopback_ranges().is_empty());
        assert!(spec("10.*.*.*").loopback_ranges().is_empty());
        assert_eq!(spec("*.*.*.*").loopback_ranges().len(), 1);
        assert_eq!(spec("127.0.*.3").loopback_ranges().len(), 256);
        assert_eq!(
            spec("0.0.0.0/0").loopback_ranges(),
            vec![(0x7f00_0000, 0x7fff_ffff)]
        );
        let specs = |s: &[&str]| s.iter().map(|s| spec(s)).collect::<Vec<_>>();
        assert!(overlap(&specs(&["127.0.*.3"]), &specs(&["127.0.0.0/16"])));
        assert!(overlap(
            &specs(&["127.0.0.4-127.0.0.7"]),
            &specs(&["127.0.0.2-127.0.0.11"])
        ));
        assert!(!overlap(
            &specs(&["127.0.0.20"]),
            &specs(&["127.0.0.2-127.0.0.11"])
        ));
        assert!(!overlap(&specs(&["127.1.*.3"]), &specs(&["127.0.0.0/16"])));
    }

    #[test]
    fn refusal_warnings_name_the_cause_of_their_code() {
        let w = refusal_warning("bl.test", 3, Some(ip("127.255.255.252")));
        assert!(
            w.contains("typing error") && !w.contains("nameservers"),
            "{w}"
        );
        let w = refusal_warning("wl.test", 1, Some(ip("127.0.0.255")));
        assert!(
            w.contains("127.0.0.255") && !w.contains("127.255.255.x"),
            "{w}"
        );
        let w = refusal_warning("bl.test", 1, Some(ip("127.255.255.254")));
        assert!(w.contains("resolver.nameservers"), "{w}");
    }

    #[test]
    fn classifies_codes() {
        assert_eq!(classify(ip("127.0.0.2"), &[]), CodeClass::Listing);
        assert_eq!(classify(ip("127.255.255.254"), &[]), CodeClass::Error);
        assert_eq!(classify(ip("127.255.255.252"), &[]), CodeClass::Error);
        assert_eq!(classify(ip("10.0.0.1"), &[]), CodeClass::OutsideLoopback);
        assert_eq!(classify(ip("192.0.2.1"), &[]), CodeClass::OutsideLoopback);
        let dnswl_err = ["127.0.0.255".parse().unwrap()];
        assert_eq!(classify(ip("127.0.0.255"), &dnswl_err), CodeClass::Error);
        assert_eq!(classify(ip("127.0.0.255"), &[]), CodeClass::Listing);
    }
}
