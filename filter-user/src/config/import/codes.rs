//! DNSBL answer-code sets as postscreen and Exim write them, and as mxscreen's
//! [`CodeSpec`]s: a [`Codes`] is a product of one set of values per octet — postscreen's
//! `127.0.0.[2..11]`, `127.0.[0..255].[2;3]`, an Exim address `127.0.0.2` or bitmask
//! `&0.0.0.2` are all of that form — which makes "is inside", "overlaps" and "how many"
//! exact and cheap.

use std::{fmt, net::Ipv4Addr};

use crate::reputation::codes::CodeSpec;

/// A set of octet values, one bit per value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Octets([u64; 4]);

impl Octets {
    pub const ALL: Self = Self([u64::MAX; 4]);
    pub const NONE: Self = Self([0; 4]);

    pub fn one(v: u8) -> Self {
        Self::range(v, v)
    }

    pub fn range(lo: u8, hi: u8) -> Self {
        let mut s = Self::NONE;
        for v in lo..=hi {
            s.0[usize::from(v / 64)] |= 1 << (v % 64);
        }
        s
    }

    pub fn contains(self, v: u8) -> bool {
        self.0[usize::from(v / 64)] & (1 << (v % 64)) != 0
    }

    pub fn union(self, o: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] | o.0[i]))
    }

    pub fn meet(self, o: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] & o.0[i]))
    }

    pub fn len(self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_empty(self) -> bool {
        self == Self::NONE
    }

    pub fn within(self, o: Self) -> bool {
        self.meet(o) == self
    }

    /// The values as inclusive runs.
    pub fn runs(self) -> Vec<(u8, u8)> {
        let mut out: Vec<(u8, u8)> = Vec::new();
        for v in 0..=255u8 {
            if !self.contains(v) {
                continue;
            }
            match out.last_mut() {
                Some((_, hi)) if u16::from(*hi) + 1 == u16::from(v) => *hi = v,
                _ => out.push((v, v)),
            }
        }
        out
    }

    fn values(self) -> impl Iterator<Item = u8> {
        (0..=255u8).filter(move |v| self.contains(*v))
    }
}

impl fmt::Debug for Octets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.runs())
    }
}

/// A product of octet sets: the codes whose every octet is in its set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Codes(pub [Octets; 4]);

/// More specs than this for one set of codes is no config anyone could read.
pub const MAX_SPECS: usize = 256;

impl Codes {
    pub fn address(a: Ipv4Addr) -> Self {
        Self(a.octets().map(Octets::one))
    }

    /// Exim's bitmask `&a.b.c.d`: every code with all of the mask's bits set.
    pub fn bitmask(mask: Ipv4Addr) -> Self {
        Self(mask.octets().map(|m| {
            let mut s = Octets::NONE;
            for v in 0..=255u8 {
                if v & m == m {
                    s = s.union(Octets::one(v));
                }
            }
            s
        }))
    }

    /// What of it mxscreen can ever see: answers in 127.0.0.0/8 (others are never a listing).
    pub fn in_loopback(self) -> Self {
        let mut c = self;
        c.0[0] = c.0[0].meet(Octets::one(127));
        c
    }

    pub fn is_empty(self) -> bool {
        self.0.iter().any(|o| o.is_empty())
    }

    pub fn within(self, o: Self) -> bool {
        self.is_empty() || self.0.iter().zip(o.0).all(|(a, b)| a.within(b))
    }

    pub fn overlaps(self, o: Self) -> bool {
        !self.meet(o).is_empty()
    }

    pub fn meet(self, o: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i].meet(o.0[i])))
    }

    pub fn size(self) -> u64 {
        self.0.iter().map(|o| u64::from(o.len())).product()
    }

    /// The codes in 127.0.0.0/8 as mxscreen specs (ranges, CIDRs and `*` patterns), the
    /// fewest of two ways of writing them; `None` past [`MAX_SPECS`].
    pub fn specs(self) -> Option<Vec<CodeSpec>> {
        let c = self.in_loopback();
        if c.is_empty() {
            return Some(Vec::new());
        }
        let last = (1..4).rev().find(|i| c.0[*i] != Octets::ALL);
        let Some(k) = last else {
            return Some(vec!["127.0.0.0/8".parse().expect("a CIDR")]);
        };
        // Ranges: every combination of the octets before k, then runs of octet k.
        let ranges = c.0[1..k]
            .iter()
            .map(|o| o.len() as usize)
            .product::<usize>()
            * c.0[k].runs().len();
        // Patterns: a full octet is `*`, every other one enumerated, up to octet k.
        let patterns = c.0[1..=k]
            .iter()
            .filter(|o| **o != Octets::ALL)
            .map(|o| o.len() as usize)
            .product::<usize>();
        if ranges.min(patterns) > MAX_SPECS {
            return None;
        }
        Some(if ranges <= patterns {
            range_specs(c, k)
        } else {
            pattern_specs(c, k)
        })
    }
}

/// Octets 1..k enumerated, octet k as runs, the octets after k whole.
fn range_specs(c: Codes, k: usize) -> Vec<CodeSpec> {
    let mut prefixes: Vec<u32> = vec![127 << 24];
    for i in 1..k {
        prefixes = prefixes
            .iter()
            .flat_map(|p| {
                c.0[i]
                    .values()
                    .map(move |v| p | (u32::from(v) << (24 - 8 * i)))
            })
            .collect();
    }
    let shift = 24 - 8 * k as u32;
    let tail = if shift == 0 { 0 } else { (1u32 << shift) - 1 };
    let mut out = Vec::new();
    for p in prefixes {
        for (lo, hi) in c.0[k].runs() {
            let a = Ipv4Addr::from(p | (u32::from(lo) << shift));
            let b = Ipv4Addr::from(p | (u32::from(hi) << shift) | tail);
            out.push(spec_for(a, b));
        }
    }
    out
}

/// The range `a..=b` as an address, a CIDR if it is one, else a range.
fn spec_for(a: Ipv4Addr, b: Ipv4Addr) -> CodeSpec {
    let size = u32::from(b) - u32::from(a) + 1;
    let text = if a == b {
        a.to_string()
    } else if size.is_power_of_two() && u32::from(a) % size == 0 {
        format!("{a}/{}", 32 - size.trailing_zeros())
    } else {
        format!("{a}-{b}")
    };
    text.parse().expect("a code spec")
}

/// Octets 1..=k as values or `*`, the octets after k `*`.
fn pattern_specs(c: Codes, k: usize) -> Vec<CodeSpec> {
    let mut patterns: Vec<[Option<u8>; 4]> = vec![[Some(127), None, None, None]];
    for i in 1..=k {
        if c.0[i] == Octets::ALL {
            continue;
        }
        patterns = patterns
            .iter()
            .flat_map(|p| {
                c.0[i].values().map(move |v| {
                    let mut p = *p;
                    p[i] = Some(v);
                    p
                })
            })
            .collect();
    }
    patterns.into_iter().map(CodeSpec::Pattern).collect()
}

/// Parses postscreen's reply filter (Postfix `ip_match`): four fields separated by `.`, each
/// a number or a `[...]` of `;`-separated numbers and `lo..hi` ranges, e.g.
/// `127.0.[0..255].[2;3]`.
pub fn parse_postscreen_filter(text: &str) -> Result<Codes, String> {
    let bad = |why: &str| format!("filter {text:?}: {why}");
    let mut fields = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (field, after) = if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').ok_or_else(|| bad("a `[` without `]`"))?;
            (Field::Set(&inner[..end]), &inner[end + 1..])
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            (Field::Number(&rest[..end]), &rest[end..])
        };
        fields.push(field);
        rest = match after.strip_prefix('.') {
            Some(r) if !r.is_empty() => r,
            Some(_) => return Err(bad("ends with `.`")),
            None if after.is_empty() => after,
            None => return Err(bad("a field must be a number or a [...] sequence")),
        };
    }
    if fields.len() != 4 {
        return Err(bad("four fields are needed"));
    }
    let mut octets = [Octets::NONE; 4];
    for (slot, field) in octets.iter_mut().zip(fields) {
        *slot = field.octets().map_err(|why| bad(&why))?;
    }
    Ok(Codes(octets))
}

enum Field<'a> {
    Number(&'a str),
    Set(&'a str),
}

impl Field<'_> {
    fn octets(&self) -> Result<Octets, String> {
        let number = |s: &str| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?} is not a number 0..255"));
            }
            s.parse::<u8>()
                .map_err(|_| format!("{s:?} is not a number 0..255"))
        };
        match self {
            Field::Number(n) => number(n).map(Octets::one),
            Field::Set(members) => {
                let mut set = Octets::NONE;
                for m in members.split(';') {
                    set = set.union(match m.split_once("..") {
                        Some((lo, hi)) => {
                            let (lo, hi) = (number(lo)?, number(hi)?);
                            if lo > hi {
                                return Err(format!("range {m:?} ends before it starts"));
                            }
                            Octets::range(lo, hi)
                        }
                        None => Octets::one(number(m)?),
                    });
                }
                Ok(set)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(filter: &str) -> Vec<String> {
        parse_postscreen_filter(filter)
            .unwrap()
            .specs()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn postscreen_filters_become_the_fewest_specs() {
        assert_eq!(specs("127.0.0.2"), ["127.0.0.2"]);
        assert_eq!(specs("127.0.0.[2..11]"), ["127.0.0.2-127.0.0.11"]);
        assert_eq!(specs("127.0.0.[4..7]"), ["127.0.0.4/30"]);
        assert_eq!(specs("127.0.0.[18;19;20]"), ["127.0.0.18-127.0.0.20"]);
        assert_eq!(specs("127.0.0.[2;4..5]"), ["127.0.0.2", "127.0.0.4/31"]);
        assert_eq!(specs("127.0.[0..255].[2..3]"), ["127.0.*.2", "127.0.*.3"]);
        assert_eq!(specs("127.[0..255].[0..255].0"), ["127.*.*.0"]);
        assert_eq!(specs("127.0.[0..255].[0..255]"), ["127.0.0.0/16"]);
        assert_eq!(
            specs("[0..255].[0..255].[0..255].[0..255]"),
            ["127.0.0.0/8"]
        );
        // Outside 127/8 nothing is ever a listing.
        assert!(specs("10.0.0.1").is_empty());
    }

    #[test]
    fn a_spread_filter_uses_patterns_or_refuses() {
        let c = parse_postscreen_filter("127.0.[2..15].0").unwrap();
        assert_eq!(c.specs().unwrap().len(), 14);
        let wide = parse_postscreen_filter("127.[0..255].[1;3;5;7;9].[1;3;5;7;9]").unwrap();
        assert!(wide.specs().is_some());
        let huge = parse_postscreen_filter("127.[0..100;102].[0..100;102].[1;3]").unwrap();
        assert!(huge.specs().is_none());
    }

    #[test]
    fn bad_filters_say_why() {
        for bad in [
            "127.0.0",
            "127.0.0.256",
            "127.0.0.[3..2]",
            "127.0.0.[1,2]",
            "127.0.0.x",
            "127.0.0.2.",
        ] {
            assert!(parse_postscreen_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sets_compare_exactly() {
        let f = |s| parse_postscreen_filter(s).unwrap();
        assert!(f("127.0.0.3").within(f("127.0.0.[2..11]")));
        assert!(f("127.0.0.[2..11]").within(Codes([Octets::ALL; 4])));
        assert!(!f("127.0.0.[2..11]").within(f("127.0.0.[2..10]")));
        assert!(f("127.0.0.[2..5]").overlaps(f("127.0.0.[5..9]")));
        assert!(!f("127.0.0.[2..4]").overlaps(f("127.0.0.[5..9]")));
        assert_eq!(f("127.0.[0..255].[2..3]").size(), 512);
        let m = Codes::bitmask("0.0.0.2".parse().unwrap());
        assert!(Codes::address("127.0.5.3".parse().unwrap()).within(m));
        assert!(!Codes::address("127.0.5.1".parse().unwrap()).within(m));
    }
}
