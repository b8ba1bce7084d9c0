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
