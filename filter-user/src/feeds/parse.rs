//! Reading a feed file into a [`PrefixSet`], line by line, in any of the three formats. A
//! line that does not parse is recorded with its number and skipped; the rest loads.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use super::rbldnsd;
use crate::{
    datapath::{Prefix, PrefixSet},
    reputation::config::FeedFormat,
};

/// Malformed lines kept with their message (the count goes on): enough to show in the log.
pub const KEPT_ERRORS: usize = 20;

/// A file read into prefixes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub set: PrefixSet,
    /// Non-blank, non-comment lines.
    pub lines: u64,
    /// Lines that did not parse.
    pub malformed: u64,
    /// The first [`KEPT_ERRORS`] of them: line number and what is wrong.
    pub errors: Vec<(u64, String)>,
}

/// Collects prefixes (and rbldnsd's exclusions) while a file is read.
#[derive(Default)]
pub(super) struct Collector {
    pub(super) v4: Vec<u64>,
    pub(super) v6: Vec<(u128, u8)>,
    pub(super) excluded: Vec<Prefix>,
}

impl Collector {
    pub(super) fn push(&mut self, p: Prefix) {
        match p {
            Prefix::V4(a, l) => self.v4.push(PrefixSet::pack_v4(a, l)),
            Prefix::V6(a, l) => self.v6.push((a, l)),
        }
    }
}

/// Reads `path` in `format`.
pub fn read(path: &Path, format: FeedFormat) -> io::Result<Parsed> {
    let file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut out = Parsed::default();
    let mut found = Collector::default();
    let mut line = Vec::with_capacity(256);
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let text = String::from_utf8_lossy(&line);
        let result = match format {
            FeedFormat::Cidr => cidr_line(&text),
            FeedFormat::SpamhausDrop => spamhaus_line(&text),
            FeedFormat::Rbldnsd => rbldnsd::line(&text, &mut found),
        };
        match result {
            Ok(None) => {}
            Ok(Some(p)) => {
                out.lines += 1;
                found.push(p);
            }
            Err(why) => {
                out.lines += 1;
                out.malformed += 1;
                if out.errors.len() < KEPT_ERRORS {
                    out.errors.push((number, why));
                }
            }
        }
    }
    let excluded = std::mem::take(&mut found.excluded);
    let mut set = PrefixSet::from_unsorted(found.v4, found.v6);
    if !excluded.is_empty() {
        set = rbldnsd::exclude(set, &excluded);
    }
    out.set = set;
    Ok(out)
}

/// The text before the first `#` or `;`, trimmed.
fn uncommented(line: &str) -> &str {
    line.split(['#', ';']).next().unwrap_or("").trim()
}

/// `ADDR` or `ADDR/LEN`, IPv4 or IPv6, host bits cleared; `None` for a blank or comment line.
fn cidr_line(line: &str) -> Result<Option<Prefix>, String> {
    let text = uncommented(line);
    let Some(token) = text.split_whitespace().next() else {
        return Ok(None);
    };
    prefix(token).map(Some)
}

/// A DROP/EDROP/DROPv6 line (`192.0.2.0/24 ; SBL123`), or one of their JSON lines
/// (`{"cidr":"192.0.2.0/24","sblid":"SBL123",...}`; the metadata line is skipped).
fn spamhaus_line(line: &str) -> Result<Option<Prefix>, String> {
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
    let bad = || format!("not an address or prefix: {s:?}");
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

    #[test]
    fn a_file_loads_around_its_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.txt");
        std::fs::write(
            &path,
            "# header\n192.0.2.1\n192.0.2.1\nbogus line\n198.51.100.0/24\n\n2001:db8::/32\n",
        )
        .unwrap();
        let r = read(&path, FeedFormat::Cidr).unwrap();
        assert_eq!((r.lines, r.malformed, r.set.len()), (5, 1, 3));
        assert_eq!(
            r.errors,
            vec![(4, "not an address or prefix: \"bogus\"".into())]
        );
        assert!(read(&dir.path().join("missing"), FeedFormat::Cidr).is_err());
    }
}
