//! The lines of the `cidr` and `spamhaus-drop` formats, and what every format shares: a
//! prefix as written, masks, the feed's bound on how wide an entry may be ([`Widest`]), and
//! the [`Collector`] a file's prefixes are gathered in.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::file::quoted;
use crate::datapath::{Prefix, PrefixSet};

/// The widest prefix a feed may list, per family (`widest_v4`, `widest_v6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widest {
    pub v4: u8,
    pub v6: u8,
}

impl Widest {
    /// The bound `p` breaks, if it is wider than its family's.
    fn broken_by(self, p: Prefix) -> Option<u8> {
        match p {
            Prefix::V4(_, l) if l < self.v4 => Some(self.v4),
            Prefix::V6(_, l) if l < self.v6 => Some(self.v6),
            _ => None,
        }
    }
}

/// Collects prefixes (and rbldnsd's exclusions) while a file is read.
#[derive(Default)]
pub(super) struct Collector {
    pub(super) v4: Vec<u64>,
    pub(super) v6: Vec<(u128, u8)>,
    pub(super) excluded: Vec<Prefix>,
    /// Set by [`Collector::push`]: the current line lists a prefix wider than allowed.
    too_wide: Option<(Prefix, u8)>,
    widest: Option<Widest>,
}

impl Collector {
    /// A collector that refuses entries wider than `widest`.
    pub(super) fn bounded(widest: Widest) -> Self {
        Self {
            widest: Some(widest),
            ..Self::default()
        }
    }

    pub(super) fn push(&mut self, p: Prefix) {
        if let Some(bound) = self.widest.and_then(|w| w.broken_by(p)) {
            self.too_wide.get_or_insert((p, bound));
            return;
        }
        match p {
            Prefix::V4(a, l) => self.v4.push(PrefixSet::pack_v4(a, l)),
            Prefix::V6(a, l) => self.v6.push((a, l)),
        }
    }

    /// Where the prefixes collected so far end (to take back a refused line's).
    pub(super) fn mark(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// Ends a line: if it listed a prefix wider than allowed, everything it listed is taken
    /// back (a range is refused whole) and the offending prefix returned.
    pub(super) fn end_line(&mut self, mark: (usize, usize)) -> Option<(Prefix, u8)> {
        let wide = self.too_wide.take()?;
        self.v4.truncate(mark.0);
        self.v6.truncate(mark.1);
        Some(wide)
    }
}

/// The text before the first `#` or `;`, trimmed.
fn uncommented(line: &str) -> &str {
    line.split(['#', ';']).next().unwrap_or("").trim()
}

/// `ADDR` or `ADDR/LEN`, IPv4 or IPv6, host bits cleared; `None` for a blank or comment line.
pub(super) fn cidr_line(line: &str) -> Result<Option<Prefix>, String> {
    let text = uncommented(line);
    let Some(token) = text.split_whitespace().next() else {
        return Ok(None);
    };
    prefix(token).map(Some)
}

/// A DROP/EDROP/DROPv6 line (`192.0.2.0/24 ; SBL123`), or one of their JSON lines
/// (`{"cidr":"192.0.2.0/24","sblid":"SBL123",...}`; the metadata line is skipped).
pub(super) fn spamhaus_line(line: &str) -> Result<Option<Prefix>, String> {
    let t = line.trim();
    if t.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| format!("not a JSON object: {e}"))?;
        return match v.get("cidr").and_then(|c| c.as_str()) {
            Some(c) => prefix(c).map(Some),
            None if v.get("type").is_some() => Ok(None),
            None => Err("a JSON line without \"cidr\"".into()),
        };
    }
    cidr_line(line)
}

/// A prefix as written, host bits cleared (feeds write them set now and then).
pub(super) fn prefix(s: &str) -> Result<Prefix, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let bad = || format!("not an address or prefix: {}", quoted(s));
    if addr.contains(':') {
        let a: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let l = length(len, 128).ok_or_else(bad)?;
        v6(a.to_bits(), l)
    } else {
        let a = v4(addr).ok_or_else(bad)?;
        let l = length(len, 32).ok_or_else(bad)?;
        Ok(Prefix::V4(a & mask32(l), l))
    }
}

/// An IPv6 prefix, host bits cleared; an IPv4-mapped one (`::ffff:192.0.2.0/120`) is the
/// IPv4 prefix it means, as everywhere in mxscreen ([`crate::net::unmap`]).
pub(super) fn v6(addr: u128, len: u8) -> Result<Prefix, String> {
    Ok(match crate::net::unmap_bits(addr, len)? {
        Some((a, l)) => Prefix::V4(a & mask32(l), l),
        None => Prefix::V6(addr & mask128(len), len),
    })
}

fn length(len: Option<&str>, max: u8) -> Option<u8> {
    match len {
        None => Some(max),
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max),
    }
}

/// A dotted quad, without std's allocation-free but strict detour through a string check:
/// four decimal octets, nothing else.
pub(super) fn v4(s: &str) -> Option<u32> {
    s.parse::<Ipv4Addr>().ok().map(u32::from)
}

pub(super) fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

pub(super) fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        prefix(s).unwrap()
    }

    #[test]
    fn cidr_lines() {
        assert_eq!(cidr_line("192.0.2.7").unwrap(), Some(p("192.0.2.7/32")));
        assert_eq!(
            cidr_line("  198.51.100.9/24   # a comment\n").unwrap(),
            Some(p("198.51.100.0/24"))
        );
        assert_eq!(
            cidr_line("2001:db8::1/48 ; x").unwrap(),
            Some(p("2001:db8::/48"))
        );
        assert_eq!(cidr_line("# only a comment").unwrap(), None);
        assert_eq!(cidr_line("; too").unwrap(), None);
        assert_eq!(cidr_line("   \n").unwrap(), None);
        assert!(cidr_line("192.0.2.300").is_err());
        assert!(cidr_line("192.0.2.0/33").is_err());
        assert!(cidr_line("example.org").is_err());
        // IPv4-mapped lines are their IPv4 prefix; a mapped one shorter than /96 is no
        // IPv4 prefix and is refused.
        assert_eq!(
            cidr_line("::ffff:192.0.2.25").unwrap(),
            Some(p("192.0.2.25/32"))
        );
        assert_eq!(
            cidr_line("::ffff:198.51.100.9/120 # mapped").unwrap(),
            Some(p("198.51.100.0/24"))
        );
        let e = cidr_line("::ffff:192.0.2.0/88").unwrap_err();
        assert!(e.contains("shorter than /96"), "{e}");
    }

    #[test]
    fn spamhaus_lines() {
        assert_eq!(
            spamhaus_line("192.0.2.0/24 ; SBL123").unwrap(),
            Some(p("192.0.2.0/24"))
        );
        assert_eq!(
            spamhaus_line("; Spamhaus DROP List 2024/01/01 - (c) 2024 The Spamhaus Project")
                .unwrap(),
            None
        );
        assert_eq!(
            spamhaus_line(r#"{"cidr":"2001:db8::/32","sblid":"SBL1","rir":"ripencc"}"#).unwrap(),
            Some(p("2001:db8::/32"))
        );
        assert_eq!(
            spamhaus_line(r#"{"type":"metadata","timestamp":1700000000,"size":1}"#).unwrap(),
            None
        );
        assert!(spamhaus_line(r#"{"cidr":"nope"}"#).is_err());
    }
}
