//! The handle's methods for list entries, feeds and network verdicts: the same calls as the
//! eBPF datapath's [`crate::datapath::DatapathMaps`]. A write that needs a set for a new
//! prefix length rewrites the rules first (so the set exists and is looked up before its
//! first element arrives); one that empties a length's set drops its rule after.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use anyhow::{Context as _, Result, bail};
use filter_common::{Action, ListEntry, Reason, Table};
use ipnet::IpNet;

use super::{
    Nftables, counters,
    decide::{Counted, host},
    lists::Own,
    netlink::Op,
    ruleset::feed_chain,
    sets::{Family, Kind},
};
use crate::datapath::{FeedChange, ListKind, NetworkVerdict, Prefix, PrefixSet};

/// The set kind of an operator's list.
fn own_kind(kind: ListKind) -> Kind {
    match kind {
        ListKind::Allow => Kind::OwnAllow,
        ListKind::Deny => Kind::OwnDeny,
    }
}

/// The set kind of a feed's entries.
fn feed_kind(table: Table) -> Result<Kind> {
    Ok(match table {
        Table::Allow => Kind::FeedAllow,
        Table::Deny => Kind::FeedDeny,
        Table::Limit => Kind::FeedLimit,
        Table::PrefixVerdict => bail!("feeds cannot hold network verdicts"),
    })
}

/// The table of a feed's entries (what [`feed_kind`] made of it).
pub(super) fn feed_table(kind: Kind) -> Table {
    match kind {
        Kind::FeedAllow => Table::Allow,
        Kind::FeedLimit => Table::Limit,
        _ => Table::Deny,
    }
}

impl Nftables {
    /// Writes element changes between two rule rewrites: sets for new lengths before, rules
    /// of emptied lengths after.
    fn write_between(&mut self, ops: Vec<Op>) -> Result<()> {
        let before = self
            .applied
            .as_ref()
            .map(|a| a.lengths.clone())
            .unwrap_or_default();
        let mut wanted = self.lists.lengths();
        for (k, lens) in before {
            wanted.entry(k).or_default().extend(lens);
        }
        let feeds = self.lists.feed_kinds();
        let mut all_feeds = self
            .applied
            .as_ref()
            .map(|a| a.feeds.clone())
            .unwrap_or_default();
        all_feeds.extend(feeds);
        // The union of before and after, so no element is written to a set without a rule.
        self.shape.lengths = wanted;
        self.shape.feeds = all_feeds;
        self.apply_shape(&HashMap::new())?;
        self.write(ops)?;
        self.sync_rules()
    }

    /// Adds or replaces an entry of one's own in a list (host bits are ignored). A feed that
    /// lists the same prefix keeps it listed after the entry goes.
    pub fn list_insert(&mut self, kind: ListKind, net: IpNet, entry: ListEntry) -> Result<()> {
        let own = Own {
            reason: entry.reason(),
            expires_ns: entry.expires_ns,
            action: Action::Drop,
        };
        let k = own_kind(kind);
        let p = Prefix::new(net);
        if self.lists.own.get(&(k, p)) == Some(&own) {
            return Ok(());
        }
        let new = !self.lists.own.contains_key(&(k, p));
        let ips = self.covered_by(&[&one(net)]);
        let undo = self.undo_point(Some((k, p)), &ips);
        let Some(mut ops) = self.lists.own_set(k, net, own) else {
            return Ok(());
        };
        ops.extend(self.list_changed(&ips));
        // A new entry's hits start at 0, as its element's counter does.
        if new {
            self.carried.remove(&(net.addr(), Counted::Own(k)));
        }
        let written = self.write_between(ops);
        self.undone_if_failed(undo, written)
            .with_context(|| format!("adding {net} to the {kind:?} list (is the set full?)"))
    }

    /// Removes exactly this prefix; `false` if it was not there.
    pub fn list_remove(&mut self, kind: ListKind, net: IpNet) -> Result<bool> {
        let k = own_kind(kind);
        let p = Prefix::new(net);
        let ips = self.covered_by(&[&one(net)]);
        let undo = self.undo_point(Some((k, p)), &ips);
        let Some(mut ops) = self.lists.own_remove(k, net) else {
            return Ok(false);
        };
        ops.extend(self.list_changed(&ips));
        self.carried.remove(&(net.addr(), Counted::Own(k)));
        let written = self.write_between(ops);
        self.undone_if_failed(undo, written)
            .with_context(|| format!("removing {net} from the {kind:?} list"))
            .map(|()| true)
    }

    /// The entries of one's own in a list, with their reasons (what the daemon reconciles).
    pub fn list_own(&self, kind: ListKind) -> Vec<(IpNet, Reason)> {
        let k = own_kind(kind);
        self.lists
            .own
            .iter()
            .filter(|((kk, _), _)| *kk == k)
            .map(|((_, p), o)| (p.net(), o.reason))
            .collect()
    }

    /// Hits of every own entry of `kind`, by prefix.
    pub(super) fn own_hits(&self, kind: Kind) -> Result<HashMap<Prefix, u64>> {
        let all: Vec<Prefix> = self
            .lists
            .own
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, p)| *p)
            .collect();
        self.own_hits_of(kind, &all)
    }

    /// Hits of the own entries `prefixes` of `kind`, by prefix: their elements' counters,
    /// their hosts' decision elements' and what rewritten ones counted before. Gets of those
    /// elements only, whatever the sets' size (a dump costs the square of it). A feed's sets
    /// count nothing per element (its hits are its chain's counter): nothing is read.
    pub(super) fn own_hits_of(
        &self,
        kind: Kind,
        prefixes: &[Prefix],
    ) -> Result<HashMap<Prefix, u64>> {
        let mut out = HashMap::new();
        let Some(applied) = self.applied.as_ref().filter(|_| kind.counts()) else {
            return Ok(out);
        };
        let mut by_set: BTreeMap<(Family, u8), Vec<IpAddr>> = BTreeMap::new();
        for p in prefixes {
            let net = p.net();
            let (f, len) = (Family::of(net.addr()), net.prefix_len());
            if applied
                .lengths
                .get(&(kind, f))
                .is_some_and(|l| l.contains(&len))
            {
                by_set.entry((f, len)).or_default().push(net.network());
            }
        }
        for ((f, len), keys) in by_set {
            let set = kind.set(f, len);
            for (addr, n) in counters::elements_hits(&self.netns, &applied.table, &set, &keys)? {
                if let Ok(net) = IpNet::new(addr, len) {
                    out.insert(Prefix::new(net), n);
                }
            }
        }
        // An exact entry that decides in the decision map counts its SYNs there (and in the
        // decision elements of it that rewrites destroyed).
        if !matches!(kind, Kind::OwnAllow | Kind::OwnDeny) {
            return Ok(out);
        }
        let whose = Counted::Own(kind);
        let hosts: Vec<IpAddr> = prefixes.iter().filter_map(|p| host(p.net())).collect();
        let decided: Vec<IpAddr> = hosts
            .iter()
            .copied()
            .filter(|ip| self.counts_for(*ip) == Some(whose))
            .collect();
        for (ip, n) in self.decide_hits_of(&decided)? {
            *out.entry(Prefix::new(IpNet::from(ip))).or_default() += n;
        }
        for ip in hosts {
            let n = self.carried(ip, whose);
            if n != 0 {
                *out.entry(Prefix::new(IpNet::from(ip))).or_default() += n;
            }
        }
        Ok(out)
    }

    /// The longest live prefix in the list that covers `ip` (own entries and feeds' alike,
    /// as the eBPF datapath's walk), with its hits.
    pub fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>> {
        Ok(self.list_lookup(table, ip)?.map(|(_, e)| e))
    }

    /// Makes feed `name` hold exactly `set` in `table`: additions written first, removals
    /// after, so a prefix in both versions is never out of the table.
    pub fn feed_load(&mut self, name: &str, table: Table, set: PrefixSet) -> Result<FeedChange> {
        let kind = feed_kind(table)?;
        let mut change = FeedChange::default();
        if let Some(i) = self.lists.feeds.iter().position(|f| f.name == name)
            && self.lists.feeds[i].kind != kind
        {
            change.writes += self.feed_drop(name)?.writes;
        }
        // Taken before the feed is registered: a new feed refused whole (too big), or whose
        // additions the kernel refuses, is forgotten again.
        let undo = self.undo_feed_point(name);
        let i = self.lists.feed_index(name, kind);
        let (added, gone) = self.lists.feeds[i].set.diff(&set);
        if let Err(e) = self.lists.fits(i, &added, self.shape.lists) {
            return self.undone_if_failed(undo, Err(e));
        }
        change.added = added.len();
        change.removed = gone.len();
        let adds = self.lists.feed_writes(i, &added, true, &self.walked);
        change.writes += adds.iter().map(op_len).sum::<usize>();
        let written = self.write_between(adds);
        self.undone_if_failed(undo, written)
            .with_context(|| format!("feed {name}: writing {} additions", added.len()))?;
        let ips = self.covered_by(&[&added, &gone]);
        let undo = self.undo_point(None, &ips);
        let mut dels = self.lists.feed_writes(i, &gone, false, &self.walked);
        change.writes += dels.iter().map(op_len).sum::<usize>();
        let old = std::mem::replace(&mut self.lists.feeds[i].set, set);
        // The decisions the feed's change moves go with its removals (the additions are in
        // the table by then). They are the load's writes too: a host entry's is its decision
        // element (`Lists::feed_writes`).
        let decided = self.list_changed(&ips);
        change.writes += decided
            .iter()
            .filter(|op| !matches!(op, Op::Flush(_)))
            .map(op_len)
            .sum::<usize>();
        dels.extend(decided);
        let written = self.write_between(dels);
        if written.is_err() {
            // The additions are in the table, the removals not: the feed lists both.
            self.lists.feeds[i].set = old.union(&added);
        }
        self.undone_if_failed(undo, written)
            .with_context(|| format!("feed {name}: writing {} removals", gone.len()))?;
        Ok(change)
    }

    /// Removes feed `name` and every entry only it listed.
    pub fn feed_drop(&mut self, name: &str) -> Result<FeedChange> {
        let Some(i) = self.lists.feeds.iter().position(|f| f.name == name) else {
            return Ok(FeedChange::default());
        };
        let table = feed_table(self.lists.feeds[i].kind);
        let change = self.feed_load(name, table, PrefixSet::default())?;
        self.lists.feeds.remove(i);
        self.sync_rules()?;
        Ok(change)
    }

    /// SYNs decided by feed `name`'s entries.
    pub fn feed_hits(&self, name: &str) -> Result<u64> {
        let Some(f) = self.lists.feeds.iter().find(|f| f.name == name) else {
            return Ok(0);
        };
        let named = counters::named(&self.netns, &self.shape.table)?;
        Ok(named.get(&feed_chain(f.id)).copied().unwrap_or(0))
    }

    /// The feeds that list exactly `net` in `table`, in load order.
    pub fn feeds_listing(&self, table: Table, net: IpNet) -> Vec<String> {
        let Ok(kind) = feed_kind(table) else {
            return Vec::new();
        };
        let p = Prefix::new(net);
        self.lists
            .feeds
            .iter()
            .filter(|f| f.kind == kind && f.set.contains(p))
            .map(|f| f.name.clone())
            .collect()
    }

    /// Sets (or replaces) the verdict of a network.
    pub fn network_verdict_set(
        &mut self,
        net: IpNet,
        action: Action,
        reason: Reason,
        expires_ns: u64,
    ) -> Result<()> {
        let own = Own {
            reason,
            expires_ns,
            action,
        };
        let p = Prefix::new(net);
        let undo = self.undo_point(Some((Kind::Network, p)), &[]);
        let Some(mut ops) = self.lists.own_set(Kind::Network, net, own) else {
            return Ok(());
        };
        ops.extend(self.flush_known());
        let written = self.write_between(ops);
        self.undone_if_failed(undo, written)
            .with_context(|| format!("writing the network verdict of {net} (is the set full?)"))
    }

    /// Removes a network's verdict; `false` if it had none.
    pub fn network_verdict_remove(&mut self, net: IpNet) -> Result<bool> {
        let undo = self.undo_point(Some((Kind::Network, Prefix::new(net))), &[]);
        let Some(mut ops) = self.lists.own_remove(Kind::Network, net) else {
            return Ok(false);
        };
        ops.extend(self.flush_known());
        let written = self.write_between(ops);
        self.undone_if_failed(undo, written)
            .with_context(|| format!("removing the network verdict of {net}"))
            .map(|()| true)
    }

    /// Every network verdict (expired ones included), with hits.
    pub fn network_verdicts(&self) -> Result<Vec<NetworkVerdict>> {
        let hits = self.own_hits(Kind::Network)?;
        Ok(self
            .lists
            .own
            .iter()
            .filter(|((k, _), _)| *k == Kind::Network)
            .map(|((_, p), o)| NetworkVerdict {
                net: p.net(),
                action: o.action,
                reason: o.reason,
                expires_ns: o.expires_ns,
                hits: hits.get(p).copied().unwrap_or(0),
            })
            .collect())
    }

    /// Entries per list table (own and feeds'), from the handle's own bookkeeping.
    pub fn table_len(&self, table: Table) -> u64 {
        let kinds = super::tables::kinds(table);
        let own = self
            .lists
            .own
            .keys()
            .filter(|(k, _)| kinds.contains(k))
            .count();
        let feeds: usize = self
            .lists
            .feeds
            .iter()
            .filter(|f| kinds.contains(&f.kind))
            .map(|f| f.set.len())
            .sum();
        (own + feeds) as u64
    }
}

/// A set of one prefix.
fn one(net: IpNet) -> PrefixSet {
    match Prefix::new(net) {
        Prefix::V4(a, l) => PrefixSet::from_unsorted(vec![PrefixSet::pack_v4(a, l)], Vec::new()),
        Prefix::V6(a, l) => PrefixSet::from_unsorted(Vec::new(), vec![(a, l)]),
    }
}

/// Elements an op writes.
fn op_len(op: &Op) -> usize {
    match op {
        Op::Add(_, e) | Op::Delete(_, e) | Op::Destroy(_, e) => e.len(),
        Op::Flush(_) => 1,
    }
}
