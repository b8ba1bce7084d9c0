//! The handle's reads of the list tables by [`Table`], as the eBPF datapath's reader answers
//! them: the longest prefix covering a source (own entries and feeds' alike), one exact
//! prefix, every prefix of a table. From the handle's own bookkeeping; hits, where asked
//! for, from the kernel's counters.

use std::net::IpAddr;

use anyhow::Result;
use filter_common::{ListEntry, Reason, Table, live};
use ipnet::IpNet;

use super::{
    Nftables,
    ruleset::feed_chain,
    sets::{Family, Kind},
};
use crate::datapath::{ListKind, Prefix, clock};

/// The set kinds a table's entries are in: own entries' first.
pub(super) fn kinds(table: Table) -> &'static [Kind] {
    match table {
        Table::Allow => &[Kind::OwnAllow, Kind::FeedAllow],
        Table::Deny => &[Kind::OwnDeny, Kind::FeedDeny],
        Table::Limit => &[Kind::FeedLimit],
        Table::PrefixVerdict => &[Kind::Network],
    }
}

/// Where an entry was found: an own entry, or a feed (by index).
enum Found {
    Own(Kind, Prefix, ListEntry),
    Feed(usize, Prefix),
}

impl Nftables {
    /// The entry of exactly `p` in `table`, own entries first; with `live_at`, an own entry
    /// expired by then counts as absent (the kernel has dropped its element, and a feed's
    /// for the same prefix decides).
    fn find(&self, table: Table, p: Prefix, live_at: Option<u64>) -> Option<Found> {
        for k in kinds(table) {
            if let Some(o) = self.lists.own.get(&(*k, p))
                && live_at.is_none_or(|now| live(o.expires_ns, now))
            {
                return Some(Found::Own(*k, p, ListEntry::new(o.reason, o.expires_ns)));
            }
            if let Some(i) = self
                .lists
                .feeds
                .iter()
                .position(|f| f.kind == *k && f.set.contains(p))
            {
                return Some(Found::Feed(i, p));
            }
        }
        None
    }

    /// The longest live prefix of `table` covering `ip`: as the kernel's walk, an expired
    /// one counts as absent and a shorter one decides.
    fn longest(&self, table: Table, ip: IpAddr) -> Option<Found> {
        let now = clock::now_ns();
        (0..=Family::of(ip).bits()).rev().find_map(|len| {
            let p = Prefix::new(IpNet::new(ip, len).expect("length in range"));
            self.find(table, p, Some(now))
        })
    }

    /// What was found, as an entry: without hits, or with them read from the kernel.
    fn entry(&self, found: Found, hits: bool) -> Result<(IpNet, ListEntry)> {
        Ok(match found {
            Found::Own(k, p, mut e) => {
                if hits {
                    e.hits = self.own_hits_of(k, &[p])?.get(&p).copied().unwrap_or(0);
                }
                (p.net(), e)
            }
            Found::Feed(i, p) => {
                let mut e = ListEntry::new(Reason::Feed, 0);
                if hits {
                    e.hits = self.feed_hits(&self.lists.feeds[i].name)?;
                }
                (p.net(), e)
            }
        })
    }

    /// The longest live prefix of `table` covering `ip`, with its hits.
    pub fn list_lookup(&self, table: Table, ip: IpAddr) -> Result<Option<(IpNet, ListEntry)>> {
        self.longest(table, ip)
            .map(|f| self.entry(f, true))
            .transpose()
    }

    /// As [`Nftables::list_lookup`] without the hits (no `nft` run: what the MTA's
    /// questions read).
    pub fn list_lookup_unhit(&self, table: Table, ip: IpAddr) -> Option<(IpNet, ListEntry)> {
        let found = self.longest(table, ip)?;
        self.entry(found, false).ok()
    }

    /// Exactly this prefix of a list, with its hits.
    pub fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        self.find(kind.into(), Prefix::new(net), None)
            .map(|f| self.entry(f, true).map(|(_, e)| e))
            .transpose()
    }

    /// Every prefix of `table` (a prefix both own and a feed's once), with its hits.
    pub fn table_entries(&self, table: Table) -> Result<Vec<(IpNet, ListEntry)>> {
        let named = super::counters::named(&self.netns, &self.shape.table)?;
        let mut out = Vec::new();
        for k in kinds(table) {
            let hits = self.own_hits(*k)?;
            for ((kk, p), o) in &self.lists.own {
                if kk == k {
                    let mut e = ListEntry::new(o.reason, o.expires_ns);
                    e.hits = hits.get(p).copied().unwrap_or(0);
                    out.push((p.net(), e));
                }
            }
        }
        let owns = |p: Prefix| {
            kinds(table)
                .iter()
                .any(|k| self.lists.own.contains_key(&(*k, p)))
        };
        for f in self
            .lists
            .feeds
            .iter()
            .filter(|f| kinds(table).contains(&f.kind))
        {
            let mut e = ListEntry::new(Reason::Feed, 0);
            e.hits = named.get(&feed_chain(f.id)).copied().unwrap_or(0);
            out.extend(f.set.iter().filter(|p| !owns(*p)).map(|p| (p.net(), e)));
        }
        Ok(out)
    }
}
