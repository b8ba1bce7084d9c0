//! Whole feeds in the lists: a feed is a named [`PrefixSet`] in one table, loaded and
//! replaced as a set. Replacing one diffs the two sets and writes only the difference, in
//! batches: additions first (then a new generation), removals after (then another), so a
//! prefix in both versions is never out of the map, and an unchanged file writes nothing.
//! Each feed has one hit counter for all its entries.

use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result, bail};
use aya::{Pod, maps::IterableMap as _};
use filter_common::{ListKey, ListValue, Table};
use ipnet::IpNet;

use super::{
    batch,
    lists::{FeedTable, Lists4, Lists6, Write, key4, key6},
    maps::DatapathMaps,
    prefix::{Prefix, PrefixSet},
    typed::{Hash, removed},
};

/// What replacing a feed's set did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedChange {
    /// Prefixes the new set has and the old one had not.
    pub added: usize,
    /// Prefixes the old set had and the new one has not.
    pub removed: usize,
    /// Map writes and deletes it took (0 for an unchanged set).
    pub writes: usize,
}

/// Writes collected by family, flushed in batches.
#[derive(Default)]
struct Pending {
    put4: (Vec<ListKey<[u8; 4]>>, Vec<ListValue>),
    put6: (Vec<ListKey<[u8; 16]>>, Vec<ListValue>),
    del4: Vec<ListKey<[u8; 4]>>,
    del6: Vec<ListKey<[u8; 16]>>,
    count: usize,
}

impl Pending {
    fn push(&mut self, w: Write) {
        self.count += 1;
        match w {
            Write::Put(t, Prefix::V4(a, l), v) => {
                self.put4.0.push(key4(t, a, l));
                self.put4.1.push(v);
            }
            Write::Put(t, Prefix::V6(a, l), v) => {
                self.put6.0.push(key6(t, a, l));
                self.put6.1.push(v);
            }
            Write::Delete(t, Prefix::V4(a, l)) => self.del4.push(key4(t, a, l)),
            Write::Delete(t, Prefix::V6(a, l)) => self.del6.push(key6(t, a, l)),
        }
    }

    fn flush(self, v4: &mut Lists4, v6: &mut Lists6) -> Result<()> {
        put(v4, &self.put4.0, &self.put4.1)?;
        put(v6, &self.put6.0, &self.put6.1)?;
        delete(v4, &self.del4)?;
        delete(v6, &self.del6)
    }
}

fn put<K: Pod + Sync>(
    map: &mut Hash<K, ListValue>,
    keys: &[K],
    values: &[ListValue],
) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    match batch::update(map.map().fd().as_fd(), keys, values) {
        Ok(r) => {
            r.context("writing list entries in batches (is the map full?)")?;
        }
        Err(batch::Unsupported) => {
            for (k, v) in keys.iter().zip(values) {
                map.insert(k, v, 0)?;
            }
        }
    }
    Ok(())
}

fn delete<K: Pod + Sync>(map: &mut Hash<K, ListValue>, keys: &[K]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    match batch::delete(map.map().fd().as_fd(), keys) {
        Ok(r) => {
            r.context("deleting list entries in batches")?;
        }
        Err(batch::Unsupported) => {
            for k in keys {
                removed(map.remove(k))?;
            }
        }
    }
    Ok(())
}

impl DatapathMaps {
    /// Makes feed `name` hold exactly `set` in `table` (registering the feed on first use;
    /// a feed that moves to another table is dropped from the old one first).
    pub fn feed_load(&mut self, name: &str, table: Table, set: PrefixSet) -> Result<FeedChange> {
        let mut change = FeedChange::default();
        if let Some(i) = self.feed_index(name)
            && self.lists.feeds[i].table != table
        {
            change.writes += self.feed_drop(name)?.writes;
        }
        let i = match self.feed_index(name) {
            Some(i) => i,
            None => {
                let slot = self.hits.alloc(&mut self.maps.hits)?;
                self.lists.feeds.push(FeedTable {
                    name: name.to_owned(),
                    table,
                    slot,
                    set: PrefixSet::default(),
                });
                self.lists.feeds.len() - 1
            }
        };
        let (added, gone) = self.lists.feeds[i].set.diff(&set);
        self.feed_fits(i, table, &added)?;
        change.added = added.len();
        change.removed = gone.len();
        change.writes += self.feed_phase(i, table, &added, true)?;
        change.writes += self.feed_phase(i, table, &gone, false)?;
        self.lists.feeds[i].set = set;
        Ok(change)
    }

    /// Adds (`has`) or removes the prefixes of feed `i`, in batches, then starts a new
    /// generation if anything was written. Returns the writes.
    fn feed_phase(&mut self, i: usize, table: Table, ps: &PrefixSet, has: bool) -> Result<usize> {
        let mut pending = Pending::default();
        for p in ps.iter() {
            let before = self.lists.resolved(table, p, Some((i, !has)));
            let after = self.lists.resolved(table, p, Some((i, has)));
            if let Some(w) = self.lists.transition(table, p, before, after) {
                pending.push(w);
            }
        }
        let n = pending.count;
        if n > 0 {
            let lists = &mut self.maps.lists;
            self.lists.write_index(lists)?;
            pending.flush(&mut lists.v4, &mut lists.v6)?;
            self.new_generation()?;
        }
        Ok(n)
    }

    /// Refuses, before writing anything, additions that the maps cannot hold next to what
    /// they hold (removals come after additions, so both sets are there at once): the
    /// feed's last load then stays as it was.
    fn feed_fits(&mut self, i: usize, table: Table, added: &PrefixSet) -> Result<()> {
        let (mut new4, mut new6) = (0u64, 0u64);
        for p in added.iter() {
            if self.lists.resolved(table, p, Some((i, false))).is_none() {
                match p {
                    Prefix::V4(..) => new4 += 1,
                    Prefix::V6(..) => new6 += 1,
                }
            }
        }
        let (v4, v6) = (&self.maps.lists.v4, &self.maps.lists.v6);
        let caps = [
            v4.map().info()?.max_entries(),
            v6.map().info()?.max_entries(),
        ];
        for (family, v6, new, cap) in [
            ("IPv4", false, new4, caps[0]),
            ("IPv6", true, new6, caps[1]),
        ] {
            let held = self.lists.family_len(v6);
            if held + new > u64::from(cap) {
                bail!(
                    "feed {}: {new} new {family} entries do not fit beside the {held} the lists hold ({cap} at most: datapath.maps.deny + allow); its last load stays",
                    self.lists.feeds[i].name
                );
            }
        }
        Ok(())
    }

    /// Removes feed `name` and every entry only it listed.
    pub fn feed_drop(&mut self, name: &str) -> Result<FeedChange> {
        let Some(i) = self.feed_index(name) else {
            return Ok(FeedChange::default());
        };
        let table = self.lists.feeds[i].table;
        let change = self.feed_load(name, table, PrefixSet::default())?;
        let gone = self.lists.feeds.remove(i);
        self.hits.release(gone.slot);
        Ok(change)
    }

    fn feed_index(&self, name: &str) -> Option<usize> {
        self.lists.feeds.iter().position(|f| f.name == name)
    }

    /// SYNs decided by feed `name`'s entries, summed over CPUs.
    pub fn feed_hits(&self, name: &str) -> Result<u64> {
        match self.feed_index(name) {
            Some(i) => self.hit_count(self.lists.feeds[i].slot),
            None => Ok(0),
        }
    }

    /// The feeds that list exactly `net` in `table`, in load order.
    pub fn feeds_listing(&self, table: Table, net: IpNet) -> Vec<String> {
        let p = Prefix::new(net);
        self.lists
            .feeds
            .iter()
            .filter(|f| f.table == table && f.set.contains(p))
            .map(|f| f.name.clone())
            .collect()
    }
}
