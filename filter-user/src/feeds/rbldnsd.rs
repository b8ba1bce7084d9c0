//! rbldnsd's ip4set, ip4trie and ip6trie data (see rbldnsd(8)): one entry per line, then an
//! optional A/TXT value (ignored here: mxscreen only needs to know what is listed).
//!
//! IPv4 entries may be abbreviated (`192.0.2` is 192.0.2.0/24, `10/8` is 10.0.0.0/8) or
//! ranges of such prefixes (`192.0.2.0-192.0.2.127`, `192.0.2.0-127`: a one-octet end
//! replaces the last octet written of the start); IPv6 entries may leave out trailing groups
//! (`2001:db8:1` is 2001:db8:1::/48). `!` marks an exclusion: that range is not listed even
//! inside a listed one. Lines starting with `#`, `;`, `:` (default values) or `$` (SOA, NS,
//! TTL...) carry no entry.

use std::net::Ipv6Addr;

use super::{
    file::quoted,
    parse::{Collector, mask32, prefix, v6},
};
use crate::datapath::{Prefix, PrefixSet};

/// One line: the entry it lists (ranges and exclusions go to `found` directly).
pub(super) fn line(line: &str, found: &mut Collector) -> Result<Option<Prefix>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with(['#', ';', ':', '$']) {
        return Ok(None);
    }
    let (exclusion, t) = match t.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t),
    };
    let token = t
        .split(|c: char| c.is_whitespace() || c == '#' || c == ';')
        .next()
        .unwrap_or("");
    let prefixes = if token.contains(':') {
        vec![v6_entry(token)?]
    } else {
        v4_entry(token)?
    };
    if exclusion {
        found.excluded.extend(prefixes);
        return Ok(None);
    }
    match prefixes.as_slice() {
        [one] => Ok(Some(*one)),
        many => {
            many.iter().for_each(|p| found.push(*p));
            Ok(None)
        }
    }
}

/// Dotted octets, 1 to 4 of them: the address (missing octets zero) and how many were given.
fn octets(s: &str) -> Option<(u32, u8)> {
    let mut addr = 0u32;
    let mut n = 0u8;
    for part in s.split('.') {
        if n == 4 || part.is_empty() || part.len() > 3 {
            return None;
        }
        let o: u32 = part.parse().ok().filter(|o| *o <= 255)?;
        addr |= o << (24 - 8 * u32::from(n));
        n += 1;
    }
    Some((addr, n))
}

fn v4_entry(token: &str) -> Result<Vec<Prefix>, String> {
    let bad = || format!("not an IPv4 entry: {}", quoted(token));
    if let Some((start, end)) = token.split_once('-') {
        let (a, n) = octets(start).ok_or_else(bad)?;
        let b = match octets(end).ok_or_else(bad)? {
            // One octet: it replaces the last octet written of the start.
            (b, 1) if n > 1 => {
                let shift = 32 - 8 * u32::from(n);
                (a & !(0xff << shift)) | (b >> 24 << shift) | !mask32(8 * n)
            }
            (b, m) => b | !mask32(8 * m),
        };
        if b < a {
            return Err(format!("range ends before it starts: {}", quoted(token)));
        }
        return Ok(range(a, b));
    }
    let (addr, len) = match token.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (token, None),
    };
    let (a, n) = octets(addr).ok_or_else(bad)?;
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= 32).ok_or_else(bad)?,
        None => 8 * n,
    };
    Ok(vec![Prefix::V4(a & mask32(len), len)])
}

/// The fewest prefixes covering exactly `a..=b`.
fn range(a: u32, b: u32) -> Vec<Prefix> {
    let (mut start, end) = (u64::from(a), u64::from(b));
    let mut out = Vec::new();
    while start <= end {
        let mut bits = if start == 0 {
            32
        } else {
            start.trailing_zeros().min(32)
        };
        while (1u64 << bits) > end - start + 1 {
            bits -= 1;
        }
        out.push(Prefix::V4(start as u32, 32 - bits as u8));
        start += 1u64 << bits;
    }
    out
}

/// An IPv6 entry; without `::`, missing trailing groups are zero and the length defaults to
/// the groups written (`2001:db8:1` is a /48).
fn v6_entry(token: &str) -> Result<Prefix, String> {
    let (addr, len) = match token.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (token, None),
    };
    let groups = addr.split(':').count();
    if addr.contains("::") || groups == 8 {
        return prefix(token);
    }
    let bad = || format!("not an IPv6 entry: {}", quoted(token));
    if groups > 8 {
        return Err(bad());
    }
    let full: Ipv6Addr = format!("{addr}::").parse().map_err(|_| bad())?;
    let len = match len {
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= 128).ok_or_else(bad)?,
        None => 16 * groups as u8,
    };
    v6(full.to_bits(), len)
}

/// `set` without the addresses of `excluded`: a listed prefix that an exclusion lies inside
/// is split around it, one an exclusion covers is dropped.
pub(super) fn exclude(set: PrefixSet, excluded: &[Prefix]) -> PrefixSet {
    let mut ex4: Vec<(u128, u8)> = Vec::new();
    let mut ex6: Vec<(u128, u8)> = Vec::new();
    for p in excluded {
        match *p {
            Prefix::V4(a, l) => ex4.push((u128::from(a), l)),
            Prefix::V6(a, l) => ex6.push((a, l)),
        }
    }
    ex4.sort_unstable();
    ex6.sort_unstable();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for p in set.iter() {
        match p {
            Prefix::V4(a, l) => {
                let mut out = Vec::new();
                carve(u128::from(a), l, 32, &ex4, &mut out);
                v4.extend(out.iter().map(|(a, l)| PrefixSet::pack_v4(*a as u32, *l)));
            }
            Prefix::V6(a, l) => carve(a, l, 128, &ex6, &mut v6),
        }
    }
    PrefixSet::from_unsorted(v4, v6)
}

/// Pushes what of `net/len` (in a `width`-bit family) no exclusion covers.
fn carve(net: u128, len: u8, width: u8, excl: &[(u128, u8)], out: &mut Vec<(u128, u8)>) {
    let size = |l: u8| 1u128.checked_shl(u32::from(width - l)).unwrap_or(0);
    let last = net.wrapping_add(size(len)).wrapping_sub(1);
    let mask =
        |l: u8| u128::MAX.checked_shl(u32::from(128 - l)).unwrap_or(0) >> (128 - u32::from(width));
    if excl
        .iter()
        .any(|(e, el)| *el <= len && net & mask(*el) == *e & mask(*el))
    {
        return;
    }
    let from = excl.partition_point(|(e, _)| *e < net);
    let inside = &excl[from..excl.partition_point(|(e, _)| *e <= last)];
    if inside.is_empty() || len == width {
        out.push((net, len));
        return;
    }
    let half = size(len + 1);
    carve(net, len + 1, width, inside, out);
    carve(net + half, len + 1, width, inside, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(lines: &[&str]) -> Vec<String> {
        let mut c = Collector::default();
        for l in lines {
            if let Some(p) = line(l, &mut c).unwrap() {
                c.push(p);
            }
        }
        let excluded = std::mem::take(&mut c.excluded);
        let set = exclude(PrefixSet::from_unsorted(c.v4, c.v6), &excluded);
        set.iter().map(|p| p.net().to_string()).collect()
    }

    #[test]
    fn ip4set_forms_of_one_network() {
        for form in [
            "127.0.0.0/24",
            "127.0.0",
            "127/24",
            "127-127.0.0",
            "127.0.0.0-127.0.0.255",
            "127.0.0.1-255",
        ] {
            let want = if form == "127.0.0.1-255" {
                vec![
                    "127.0.0.1/32",
                    "127.0.0.2/31",
                    "127.0.0.4/30",
                    "127.0.0.8/29",
                    "127.0.0.16/28",
                    "127.0.0.32/27",
                    "127.0.0.64/26",
                    "127.0.0.128/25",
                ]
            } else {
                vec!["127.0.0.0/24"]
            };
            assert_eq!(listed(&[form]), want, "{form}");
        }
        for form in [
            "127.16.0.0-127.31.255.255",
            "127.16-127.31",
            "127.16-31",
            "127.16/12",
        ] {
            assert_eq!(listed(&[form]), vec!["127.16.0.0/12"], "{form}");
        }
    }

    #[test]
    fn values_comments_and_specials_are_skipped() {
        assert_eq!(
            listed(&[
                "$SOA 3600 ns.example. hostmaster.example. 0 600 300 86400 300",
                ":127.0.0.2:Listed, see https://example.test/$",
                "# comment",
                "192.0.2.7 :127.0.0.3: smells",
                "198.51.100.0/24 ; comment",
                "2001:db8:1 :127.0.1.2:",
                "2001:db8:2::/48",
            ]),
            vec![
                "192.0.2.7/32",
                "198.51.100.0/24",
                "2001:db8:1::/48",
                "2001:db8:2::/48"
            ]
        );
    }

    #[test]
    fn exclusions_carve_out_of_listings() {
        assert_eq!(
            listed(&["192.0.2.0/30", "!192.0.2.1"]),
            vec!["192.0.2.0/32", "192.0.2.2/31"]
        );
        assert_eq!(
            listed(&["192.0.2.8", "!192.0.2.0/24"]),
            Vec::<String>::new()
        );
        assert_eq!(
            listed(&["2001:db8::/126", "!2001:db8::3"]),
            vec!["2001:db8::/127", "2001:db8::2/128"]
        );
    }

    /// (A line starting with `:` is a default value in rbldnsd's format, so mapped
    /// addresses are written `0::ffff:...` or in full there.)
    #[test]
    fn ipv4_mapped_entries_are_ipv4() {
        assert_eq!(
            listed(&[
                "0::ffff:192.0.2.25 :127.0.0.2:",
                "0::ffff:198.51.100.0/120",
                "0:0:0:0:0:ffff:cb00:7100/120",
                "2001:db8::/32",
            ]),
            vec![
                "192.0.2.25/32",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "2001:db8::/32"
            ]
        );
        assert_eq!(
            listed(&["192.0.2.0/30", "!0::ffff:192.0.2.1"]),
            vec!["192.0.2.0/32", "192.0.2.2/31"]
        );
        assert!(line("0::ffff:192.0.2.0/64", &mut Collector::default()).is_err());
    }

    #[test]
    fn bad_entries_say_so() {
        let mut c = Collector::default();
        for bad in [
            "300.1.2.3",
            "1.2.3.4.5",
            "10-9",
            "192.0.2.0/40",
            "2001:db8:zz",
            "1.2..3",
        ] {
            assert!(line(bad, &mut c).is_err(), "{bad}");
        }
    }
}
