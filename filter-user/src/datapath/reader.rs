//! The read side of the kernel maps, written once: the runtime config, the outcome counters,
//! a source's entry (its verdict's hits including those its decision-cache slot still holds),
//! every verdict a chunk at a time, and the lists' longest-prefix match as the datapath walks
//! it (the lengths in use come from the kernel's `LIST_INDEX`).
//!
//! The owner, [`super::DatapathMaps`], holds one [`MapsReader`] on the maps it writes and reads
//! through it. Readers that must not wait on the daemon's main loop get a handle of their own
//! ([`MapsReader::try_clone`], duplicated file descriptors): the MTA's query socket and policy
//! service (they answer while a sweep of a million verdicts runs), the metrics endpoint, and a
//! `list --verdicts` streamed to a slow reader. A reader reads what the kernel holds, never the
//! owner's userspace bookkeeping, so it stays right whatever the owner writes after it was made.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, Map, MapData, MapError, PerCpuArray};
use filter_common::{
    Counter, DatapathConfig, FLAG_HOLD, ListEntry, ListValue, NewSources, Peer, PeerVerdict,
    Reason, Seen, Table, live,
};
use ipnet::IpNet;

use super::{
    backend::NewSourceRate,
    cache::{self, Slots},
    clock,
    lists::{ListKind, ListMaps, key4, key6},
    prefix::Prefix,
    typed::{Peers, PerFamily, all, chunks, found, sum_counters},
};

/// See the module documentation.
pub struct MapsReader {
    pub(super) config: Array<MapData, DatapathConfig>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    /// Sources with a verdict (`PEERS_*`).
    pub(super) peers: Peers,
    /// Sources without one the datapath keeps state for (`SEEN_*`).
    pub(super) seen: Peers,
    /// New sources a second, as the datapath counts them (`SEEN_RATE`).
    pub(super) new_sources: Array<MapData, NewSources>,
    pub(super) lists: ListMaps,
    /// The per-CPU hit counters of list entries (see [`super::hits`]).
    pub(super) hits: PerCpuArray<MapData, u64>,
    pub(super) cache: Slots,
}

/// Another typed handle on the map behind `data` (a duplicated file descriptor).
pub(super) fn dup<T: TryFrom<Map, Error = MapError>>(data: &MapData) -> Result<T> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating a map descriptor")?;
    let map = Map::from_map_data(MapData::from_fd(fd)?)?;
    T::try_from(map).context("a duplicated map has an unexpected type")
}

impl MapsReader {
    /// A handle of its own on the same kernel maps (every descriptor duplicated).
    pub fn try_clone(&self) -> Result<MapsReader> {
        Ok(MapsReader {
            config: dup(self.config.map())?,
            counters: dup(self.counters.map())?,
            peers: PerFamily {
                v4: dup(self.peers.v4.map())?,
                v6: dup(self.peers.v6.map())?,
            },
            seen: PerFamily {
                v4: dup(self.seen.v4.map())?,
                v6: dup(self.seen.v6.map())?,
            },
            new_sources: dup(self.new_sources.map())?,
            lists: ListMaps {
                v4: dup(self.lists.v4.map())?,
                v6: dup(self.lists.v6.map())?,
                index: dup(self.lists.index.map())?,
                filter: dup(self.lists.filter.map())?,
            },
            hits: dup(self.hits.map())?,
            cache: self.cache.clone(),
        })
    }

    pub fn config(&self) -> Result<DatapathConfig> {
        self.config
            .get(&0, 0)
            .context("reading the datapath config")
    }

    /// Every counter summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize]> {
        sum_counters(&self.counters)
    }

    /// Everything the datapath holds for one source, as it looks it up: its verdict's entry,
    /// else the one it keeps itself (a verdict's hits include those its decision-cache slot
    /// holds).
    pub fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        let Some(mut p) = found(match ip {
            IpAddr::V4(a) => self.peers.v4.get(&a.octets(), 0),
            IpAddr::V6(a) => self.peers.v6.get(&a.octets(), 0),
        })?
        .map_or_else(|| self.seen_entry(ip), |p| Ok(Some(p)))?
        else {
            return Ok(None);
        };
        if p.verdict().is_some() {
            p.hits = p.hits.wrapping_add(self.cache.pending_hits(ip)?);
        }
        Ok(Some(p))
    }

    /// The entry the datapath keeps for a source without a verdict (`SEEN_*`).
    pub(super) fn seen_entry(&self, ip: IpAddr) -> Result<Option<Peer>> {
        found(match ip {
            IpAddr::V4(a) => self.seen.v4.get(&a.octets(), 0),
            IpAddr::V6(a) => self.seen.v6.get(&a.octets(), 0),
        })
    }

    /// New sources a second the datapath's seen maps take now, and the most under which it
    /// still holds first contact (both counted a tick of 2^30 ns at a time, shown a second).
    pub fn new_sources(&self) -> Result<NewSourceRate> {
        let counted = self
            .new_sources
            .get(&0, 0)
            .context("reading the count of new sources")?;
        let cfg = self.config()?;
        let per_s =
            |per_tick: u64| per_tick.saturating_mul(1_000_000_000) >> NewSources::TICK_SHIFT;
        Ok(NewSourceRate {
            per_s: per_s(counted.per_tick(clock::now_ns())),
            hold_bound: if cfg.flags & FLAG_HOLD != 0 && cfg.seen_new_per_tick_max != 0 {
                per_s(cfg.seen_new_per_tick_max).max(1)
            } else {
                0
            },
        })
    }

    pub fn verdict_get(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        Ok(self.peer(ip)?.and_then(|p| p.verdict()))
    }

    /// First contact and last report of a source the datapath saw as unknown.
    pub fn seen_get(&self, ip: IpAddr) -> Result<Option<Seen>> {
        Ok(self.peer(ip)?.and_then(|p| p.seen()))
    }

    /// Every verdict (expired ones included), read in batches where the kernel can.
    pub fn verdicts(&self) -> Result<Vec<(IpAddr, PeerVerdict)>> {
        let mut out = Vec::new();
        self.for_each_verdict_chunk(|c| {
            out.extend(c);
            true
        })?;
        Ok(out)
    }

    /// Exactly this prefix of a list (not the longest match), with its hits.
    pub fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        let table = Table::from(kind);
        let v = match Prefix::new(net) {
            Prefix::V4(a, l) => found(self.lists.v4.get(&key4(table, a, l), 0))?,
            Prefix::V6(a, l) => found(self.lists.v6.get(&key6(table, a, l), 0))?,
        };
        v.map(|v| self.entry_of(&v)).transpose()
    }

    /// Every verdict (expired ones included), a chunk at a time while `each` says go on, with
    /// the hits the decision cache still holds added (what `list` shows): what a reader of a
    /// million verdicts should use to stay small.
    pub fn for_each_verdict_chunk(
        &self,
        each: impl FnMut(Vec<(IpAddr, PeerVerdict)>) -> bool,
    ) -> Result<()> {
        self.verdict_chunks(self.cache.all_pending_hits()?, each)
    }

    /// As [`MapsReader::for_each_verdict_chunk`], but the hits are those the entries hold,
    /// without the ones the decision cache still holds (reading those means copying out the
    /// whole cache; see BENCHMARKS.md): what counting and filtering verdicts want.
    pub fn for_each_verdict_chunk_without_pending_hits(
        &self,
        each: impl FnMut(Vec<(IpAddr, PeerVerdict)>) -> bool,
    ) -> Result<()> {
        self.verdict_chunks(HashMap::new(), each)
    }

    /// The verdicts of the per-source maps, a chunk at a time, each with the hits `pending`
    /// holds for its source added.
    fn verdict_chunks(
        &self,
        pending: HashMap<[u64; 2], u64>,
        mut each: impl FnMut(Vec<(IpAddr, PeerVerdict)>) -> bool,
    ) -> Result<()> {
        let with_pending = |ip: IpAddr, p: Peer| {
            let mut v = p.verdict()?;
            if let Some(n) = cache::key(ip).and_then(|k| pending.get(&k)) {
                v.hits = v.hits.wrapping_add(*n);
            }
            Some((ip, v))
        };
        let mut go_on = true;
        chunks(&self.peers.v4, |c| {
            go_on = each(
                c.into_iter()
                    .filter_map(|(k, p)| with_pending(IpAddr::from(k), p))
                    .collect(),
            );
            go_on
        })?;
        if !go_on {
            return Ok(());
        }
        chunks(&self.peers.v6, |c| {
            each(
                c.into_iter()
                    .filter_map(|(k, p)| with_pending(IpAddr::from(k), p))
                    .collect(),
            )
        })
    }

    /// The longest prefix in the list that covers `ip`, as the datapath would find it.
    pub fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>> {
        Ok(self.list_lookup(table, ip)?.map(|(_, e)| e))
    }

    /// The longest live prefix of `table` covering `ip`, and its entry: the lengths in use
    /// come from the kernel's index, longest first, as the datapath's walk meets them, and
    /// as there an expired entry counts as absent (a shorter one decides).
    pub fn list_lookup(&self, table: Table, ip: IpAddr) -> Result<Option<(IpNet, ListEntry)>> {
        let now = clock::now_ns();
        let index = self
            .lists
            .index
            .get(&0, 0)
            .context("reading the list index")?;
        let t = table as usize;
        let lens: Vec<u8> = if ip.is_ipv6() {
            index.v6[t].lens[..usize::from(index.v6[t].count)].to_vec()
        } else {
            index.v4[t].lens[..usize::from(index.v4[t].count)].to_vec()
        };
        for l in lens {
            let p = Prefix::new(IpNet::new(ip, l).context("a prefix length in the index")?);
            let v = match p {
                Prefix::V4(a, l) => found(self.lists.v4.get(&key4(table, a, l), 0))?,
                Prefix::V6(a, l) => found(self.lists.v6.get(&key6(table, a, l), 0))?,
            };
            if let Some(v) = v {
                let e = self.entry_of(&v)?;
                if live(e.expires_ns, now) {
                    return Ok(Some((p.net(), e)));
                }
            }
        }
        Ok(None)
    }

    /// Every prefix in a list.
    pub fn list_entries(&self, kind: ListKind) -> Result<Vec<(IpNet, ListEntry)>> {
        Ok(self
            .table_entries(kind.into())?
            .into_iter()
            .map(|(net, e, _)| (net, e))
            .collect())
    }

    /// Every prefix in a table, with its entry and the raw value (its hit slot, and a prefix
    /// verdict's action).
    pub fn table_entries(&self, table: Table) -> Result<Vec<(IpNet, ListEntry, ListValue)>> {
        let mut hits = HashMap::new();
        let mut out = Vec::new();
        let v4 = all(&self.lists.v4)?.into_iter().map(|(k, v)| {
            let net = IpNet::new(Ipv4Addr::from(k.addr).into(), k.len);
            (k.table, net, v)
        });
        let v6 = all(&self.lists.v6)?.into_iter().map(|(k, v)| {
            let net = IpNet::new(Ipv6Addr::from(k.addr).into(), k.len);
            (k.table, net, v)
        });
        for (t, net, v) in v4.chain(v6) {
            if t != table as u8 {
                continue;
            }
            let hit = match hits.get(&v.slot) {
                Some(h) => *h,
                None => *hits.entry(v.slot).or_insert(self.hit_count(v.slot)?),
            };
            let mut e = ListEntry::new(Reason::from_u8(v.reason), v.expires_ns);
            e.hits = hit;
            out.push((net?, e, v));
        }
        Ok(out)
    }

    /// A list value as an entry, with the hits of its slot.
    fn entry_of(&self, v: &ListValue) -> Result<ListEntry> {
        let mut e = ListEntry::new(Reason::from_u8(v.reason), v.expires_ns);
        e.hits = self.hit_count(v.slot)?;
        Ok(e)
    }

    /// A hit slot's count summed over CPUs (0 for the overflow slot).
    pub(super) fn hit_count(&self, slot: u32) -> Result<u64> {
        if slot == 0 {
            return Ok(0);
        }
        let per_cpu = self.hits.get(&slot, 0).context("reading a hit counter")?;
        Ok(per_cpu.iter().sum())
    }
}
