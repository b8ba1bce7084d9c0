//! The prefix lists (`LISTS_V4`/`_V6`, `LIST_INDEX`) seen from userspace: the maps
//! ([`ListMaps`], read through [`super::MapsReader`]) and the owner's bookkeeping ([`Lists`]).
//!
//! A prefix can be wanted by several owners at once: an operator's or the config's entry
//! (written with [`super::DatapathMaps::list_insert`], kept in `own` with its reason, expiry and hit
//! slot) and any number of feeds ([`super::feedsets`]). The map holds one value per key,
//! [`Lists::resolved`]: the own entry if there is one (never expiring while a feed also lists
//! the prefix), else the first feed's. Every change recomputes the affected keys and writes
//! only what differs; then the index of lengths in use is rewritten if it changed, so are the
//! words of the list filter (`LIST_FILTER`) that changed, and a new generation makes the
//! datapath decide again for every source.

use std::{collections::HashMap as StdHashMap, os::fd::AsFd as _};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap, MapData};
use filter_common::{
    LIST_FILTER_BITS, ListIndex, ListKey, ListValue, Reason, Table, V4_LENGTHS, V6_LENGTHS,
};

use super::{
    batch,
    prefix::{Prefix, PrefixSet},
    typed::{Hash, removed},
};

/// Which list an operator's entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Allow,
    Deny,
}

impl From<ListKind> for Table {
    fn from(k: ListKind) -> Self {
        match k {
            ListKind::Allow => Table::Allow,
            ListKind::Deny => Table::Deny,
        }
    }
}

/// The list hash of each family.
pub(super) type Lists4 = Hash<ListKey<[u8; 4]>, ListValue>;
pub(super) type Lists6 = Hash<ListKey<[u8; 16]>, ListValue>;

/// The kernel's side of the lists: both families' hashes, the index of the lengths in use
/// and the filter of keys present. Held by [`super::MapsReader`], which reads them; the owner
/// writes through it.
pub(super) struct ListMaps {
    pub(super) v4: Lists4,
    pub(super) v6: Lists6,
    pub(super) index: Array<MapData, ListIndex>,
    pub(super) filter: Array<MapData, u64>,
}

/// The owner's bookkeeping of the lists: who wants each prefix, and the lengths in use.
pub(super) struct Lists {
    /// Keys in the maps per table and length: the lengths the datapath probes.
    count4: [[u32; V4_LENGTHS]; Table::COUNT],
    count6: [[u32; V6_LENGTHS]; Table::COUNT],
    index_stale: bool,
    /// Keys in the maps per bit of the list filter (a count that reaches the maximum stays
    /// there: its bit stays set, which costs a probe, never a match).
    filter: Vec<u8>,
    /// Filter words to write (a bit came into or went out of use), one bit per word: a
    /// million-entry feed marks a word a key, and a set of word numbers cost a tree insert
    /// each.
    filter_stale: Vec<u64>,
    /// Entries written entry by entry (operators, config, host, prefix verdicts).
    pub(super) own: StdHashMap<(Table, Prefix), ListValue>,
    pub(super) feeds: Vec<FeedTable>,
}

/// A feed as the lists hold it.
pub(super) struct FeedTable {
    pub(super) name: String,
    pub(super) table: Table,
    pub(super) slot: u32,
    pub(super) set: PrefixSet,
}

impl FeedTable {
    /// The value its entries have in the map.
    pub(super) fn value(&self) -> ListValue {
        ListValue::new(Reason::Feed, 0, self.slot)
    }
}

/// A map write the lists owe after a change.
pub(super) enum Write {
    Put(Table, Prefix, ListValue),
    Delete(Table, Prefix),
}

impl Lists {
    pub(super) fn new() -> Self {
        Self {
            count4: [[0; V4_LENGTHS]; Table::COUNT],
            count6: [[0; V6_LENGTHS]; Table::COUNT],
            // The maps are fresh (never pinned) but the index array may not be: write it.
            index_stale: true,
            // The filter map is fresh too (never pinned): all clear, as no key is there.
            filter: vec![0; LIST_FILTER_BITS as usize],
            filter_stale: vec![0; (LIST_FILTER_BITS as usize / 64).div_ceil(64)],
            own: StdHashMap::new(),
            feeds: Vec::new(),
        }
    }

    /// What the map should hold for a key. `feed` overrides whether feed number `feed.0`
    /// lists the prefix (for computing the value before or after that feed changes).
    pub(super) fn resolved(
        &self,
        table: Table,
        p: Prefix,
        feed: Option<(usize, bool)>,
    ) -> Option<ListValue> {
        let listed = |i: usize, f: &FeedTable| match feed {
            Some((j, has)) if j == i => has,
            _ => f.table == table && f.set.contains(p),
        };
        let first_feed = self.feeds.iter().enumerate().find(|(i, f)| listed(*i, f));
        match (self.own.get(&(table, p)), first_feed) {
            (Some(v), Some(_)) => Some(ListValue {
                expires_ns: 0,
                ..*v
            }),
            (Some(v), None) => Some(*v),
            (None, Some((_, f))) => Some(f.value()),
            (None, None) => None,
        }
    }

    /// The write that takes a key from `before` to `after`, keeping the length counts.
    pub(super) fn transition(
        &mut self,
        table: Table,
        p: Prefix,
        before: Option<ListValue>,
        after: Option<ListValue>,
    ) -> Option<Write> {
        match (before, after) {
            (None, Some(v)) => {
                self.count(table, p, true);
                Some(Write::Put(table, p, v))
            }
            (Some(b), Some(v)) if b != v => Some(Write::Put(table, p, v)),
            (Some(_), None) => {
                self.count(table, p, false);
                Some(Write::Delete(table, p))
            }
            _ => None,
        }
    }

    fn count(&mut self, table: Table, p: Prefix, up: bool) {
        let slot = match p {
            Prefix::V4(_, l) => &mut self.count4[table as usize][usize::from(l)],
            Prefix::V6(_, l) => &mut self.count6[table as usize][usize::from(l)],
        };
        let was_zero = *slot == 0;
        *slot = if up {
            *slot + 1
        } else {
            slot.saturating_sub(1)
        };
        self.index_stale |= was_zero != (*slot == 0);
        let bit = match p {
            Prefix::V4(a, l) => key4(table, a, l).filter_bit(),
            Prefix::V6(a, l) => key6(table, a, l).filter_bit(),
        };
        let n = &mut self.filter[bit as usize];
        let was_zero = *n == 0;
        *n = match (up, *n) {
            (_, u8::MAX) => u8::MAX,
            (true, n) => n + 1,
            (false, n) => n.saturating_sub(1),
        };
        if was_zero != (*n == 0) {
            let w = bit / 64;
            self.filter_stale[w as usize / 64] |= 1 << (w % 64);
        }
    }

    /// The lengths a table uses in one family, longest first.
    fn lengths(&self, table: Table, v6: bool) -> Vec<u8> {
        let counts: &[u32] = if v6 {
            &self.count6[table as usize]
        } else {
            &self.count4[table as usize]
        };
        (0..counts.len())
            .rev()
            .filter(|l| counts[*l] > 0)
            .map(|l| l as u8)
            .collect()
    }

    /// Rewrites `LIST_INDEX` if a length came into or went out of use, and the words of
    /// `LIST_FILTER` where a bit did. Called before the keys are written: a new key's length
    /// and bit are there before it (a key going leaves them with it, which is going anyway).
    pub(super) fn write_index(&mut self, maps: &mut ListMaps) -> Result<()> {
        // In one batch: a million-entry feed changes most of the filter's 65,536 words.
        let mut words = Vec::new();
        for (i, bits) in self.filter_stale.iter_mut().enumerate() {
            let stale = std::mem::take(bits);
            words.extend(
                (0..64)
                    .filter(|b| stale & 1 << b != 0)
                    .map(|b| i as u32 * 64 + b),
            );
        }
        let values: Vec<u64> = words
            .iter()
            .map(|w| filter_word(&self.filter, *w))
            .collect();
        match batch::update(IterableMap::map(&maps.filter).fd().as_fd(), &words, &values) {
            Ok(r) => {
                r.context("writing the list filter")?;
            }
            Err(batch::Unsupported) => {
                for (w, v) in words.iter().zip(&values) {
                    maps.filter
                        .set(*w, v, 0)
                        .context("writing the list filter")?;
                }
            }
        }
        if !self.index_stale {
            return Ok(());
        }
        let map = &mut maps.index;
        let mut index = ListIndex::empty();
        for table in Table::ALL {
            let t = table as usize;
            for (v6, count) in [
                (false, &mut index.v4[t].count),
                (true, &mut index.v6[t].count),
            ] {
                *count = self.lengths(table, v6).len() as u8;
            }
            for (i, l) in self.lengths(table, false).into_iter().enumerate() {
                index.v4[t].lens[i] = l;
            }
            for (i, l) in self.lengths(table, true).into_iter().enumerate() {
                index.v6[t].lens[i] = l;
            }
        }
        map.set(0, index, 0).context("writing the list index")?;
        self.index_stale = false;
        Ok(())
    }

    /// Keys in one family's map, every table together.
    pub(super) fn family_len(&self, v6: bool) -> u64 {
        Table::ALL
            .iter()
            .map(|t| {
                let c: &[u32] = if v6 {
                    &self.count6[*t as usize]
                } else {
                    &self.count4[*t as usize]
                };
                c.iter().map(|n| u64::from(*n)).sum::<u64>()
            })
            .sum()
    }

    /// Entries in the maps per table.
    pub(super) fn len(&self, table: Table) -> u64 {
        let t = table as usize;
        let sum = |c: &[u32]| c.iter().map(|n| u64::from(*n)).sum::<u64>();
        sum(&self.count4[t]) + sum(&self.count6[t])
    }
}

/// The list filter's word `w` as the counts (`filter`, one a bit) make it.
fn filter_word(filter: &[u8], w: u32) -> u64 {
    let start = w as usize * 64;
    filter[start..start + 64]
        .iter()
        .enumerate()
        .fold(0, |word, (i, n)| word | u64::from(*n != 0) << i)
}

impl ListMaps {
    /// Applies writes one by one (batches are for feeds, in [`super::feedsets`]).
    pub(super) fn apply(&mut self, w: Write) -> Result<()> {
        match w {
            Write::Put(t, Prefix::V4(a, l), v) => self.v4.insert(key4(t, a, l), v, 0)?,
            Write::Put(t, Prefix::V6(a, l), v) => self.v6.insert(key6(t, a, l), v, 0)?,
            Write::Delete(t, Prefix::V4(a, l)) => {
                removed(self.v4.remove(&key4(t, a, l)))?;
            }
            Write::Delete(t, Prefix::V6(a, l)) => {
                removed(self.v6.remove(&key6(t, a, l)))?;
            }
        }
        Ok(())
    }
}

pub(super) fn key4(table: Table, a: u32, l: u8) -> ListKey<[u8; 4]> {
    ListKey::new(table, l, a.to_be_bytes())
}

pub(super) fn key6(table: Table, a: u128, l: u8) -> ListKey<[u8; 16]> {
    ListKey::new(table, l, a.to_be_bytes())
}
