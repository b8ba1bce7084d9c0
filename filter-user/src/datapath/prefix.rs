//! Prefixes as the lists store them, and [`PrefixSet`]: a sorted, deduplicated set of them,
//! compact enough to hold a million-line feed in 8 MiB (IPv4) and to diff two versions of a
//! feed in one merge pass.

use std::{
    cmp::Ordering,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A network (host bits cleared) and its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prefix {
    V4(u32, u8),
    V6(u128, u8),
}

impl Prefix {
    /// `net` with its host bits cleared.
    pub fn new(net: IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => Self::V4(n.network().to_bits(), n.prefix_len()),
            IpNet::V6(n) => Self::V6(n.network().to_bits(), n.prefix_len()),
        }
    }

    pub fn net(self) -> IpNet {
        match self {
            Self::V4(a, l) => IpNet::V4(Ipv4Net::new(Ipv4Addr::from_bits(a), l).expect("len")),
            Self::V6(a, l) => IpNet::V6(Ipv6Net::new(Ipv6Addr::from_bits(a), l).expect("len")),
        }
    }

    pub const fn prefix_len(self) -> u8 {
        match self {
            Self::V4(_, l) | Self::V6(_, l) => l,
        }
    }
}

impl From<IpNet> for Prefix {
    fn from(net: IpNet) -> Self {
        Self::new(net)
    }
}

/// IPv4 prefixes packed as `network << 8 | len`: sorting them sorts by network, then length.
fn pack4(a: u32, l: u8) -> u64 {
    (u64::from(a) << 8) | u64::from(l)
}

fn unpack4(p: u64) -> (u32, u8) {
    ((p >> 8) as u32, p as u8)
}

/// A sorted set of prefixes without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixSet {
    v4: Vec<u64>,
    v6: Vec<(u128, u8)>,
}

impl PrefixSet {
    /// Collects prefixes (host bits must be cleared, as [`Prefix::new`] does), sorting and
    /// deduplicating once at the end.
    pub fn from_unsorted(mut v4: Vec<u64>, mut v6: Vec<(u128, u8)>) -> Self {
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        Self { v4, v6 }
    }

    /// Packs an IPv4 prefix for [`PrefixSet::from_unsorted`].
    pub fn pack_v4(network: u32, len: u8) -> u64 {
        pack4(network, len)
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, p: Prefix) -> bool {
        match p {
            Prefix::V4(a, l) => self.v4.binary_search(&pack4(a, l)).is_ok(),
            Prefix::V6(a, l) => self.v6.binary_search(&(a, l)).is_ok(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Prefix> + '_ {
        let v4 = self.v4.iter().map(|p| {
            let (a, l) = unpack4(*p);
            Prefix::V4(a, l)
        });
        v4.chain(self.v6.iter().map(|(a, l)| Prefix::V6(*a, *l)))
    }

    /// Every prefix of either set.
    pub fn union(&self, other: &Self) -> Self {
        Self::from_unsorted(
            [self.v4.as_slice(), &other.v4].concat(),
            [self.v6.as_slice(), &other.v6].concat(),
        )
    }

    /// What `new` has that `self` lacks, and what `self` has that `new` lacks.
    pub fn diff(&self, new: &Self) -> (PrefixSet, PrefixSet) {
        let (mut added, mut removed) = (Self::default(), Self::default());
        merge(&self.v4, &new.v4, |p, into_new| {
            if into_new { &mut added } else { &mut removed }.v4.push(*p);
        });
        merge(&self.v6, &new.v6, |p, into_new| {
            if into_new { &mut added } else { &mut removed }.v6.push(*p);
        });
        (added, removed)
    }
}

/// Walks two sorted slices together; calls `f(item, true)` for items only in `new`, and
/// `f(item, false)` for items only in `old`.
fn merge<T: Ord>(old: &[T], new: &[T], mut f: impl FnMut(&T, bool)) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            Ordering::Less => {
                f(&old[i], false);
                i += 1;
            }
            Ordering::Greater => {
                f(&new[j], true);
                j += 1;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    old[i..].iter().for_each(|x| f(x, false));
    new[j..].iter().for_each(|x| f(x, true));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::new(crate::net::parse_net(s).unwrap())
    }

    fn set(items: &[&str]) -> PrefixSet {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for s in items {
            match p(s) {
                Prefix::V4(a, l) => v4.push(PrefixSet::pack_v4(a, l)),
                Prefix::V6(a, l) => v6.push((a, l)),
            }
        }
        PrefixSet::from_unsorted(v4, v6)
    }

    #[test]
    fn host_bits_are_cleared_and_nets_round_trip() {
        assert_eq!(p("192.0.2.77/24").net().to_string(), "192.0.2.0/24");
        assert_eq!(p("2001:db8::1/32").net().to_string(), "2001:db8::/32");
        assert_eq!(p("0.0.0.0/0").prefix_len(), 0);
    }

    #[test]
    fn sets_dedup_and_diff() {
        let old = set(&[
            "192.0.2.0/24",
            "198.51.100.7",
            "2001:db8::/48",
            "192.0.2.0/24",
        ]);
        assert_eq!(old.len(), 3);
        assert!(old.contains(p("198.51.100.7/32")));
        assert!(!old.contains(p("198.51.100.7/31")));
        let new = set(&["192.0.2.0/24", "203.0.113.0/24", "2001:db8:1::/48"]);
        let (added, removed) = old.diff(&new);
        let list = |s: &PrefixSet| s.iter().collect::<Vec<_>>();
        assert_eq!(
            list(&added),
            vec![p("203.0.113.0/24"), p("2001:db8:1::/48")]
        );
        assert_eq!(list(&removed), vec![p("198.51.100.7"), p("2001:db8::/48")]);
        let (a, r) = new.diff(&new);
        assert!(a.is_empty() && r.is_empty());
        assert_eq!(new.iter().count(), 3);
    }
}
