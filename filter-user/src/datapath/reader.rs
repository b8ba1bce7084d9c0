//! A read-only handle of its own on the kernel maps (duplicated file descriptors), for readers
//! that must not wait on the daemon's main loop, which owns [`DatapathMaps`]: the MTA's query
//! socket and policy service (they answer while a sweep of a million verdicts runs), the
//! metrics endpoint, and a `list --verdicts` streamed to a slow reader. It reads what the
//! kernel holds, including which prefix lengths are in use (`LIST_INDEX`), never the owner's
//! userspace bookkeeping, so it stays right whatever the owner writes after it was made.

use std::{net::IpAddr, os::fd::AsFd as _};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, Map, MapData, MapError, PerCpuArray};
use filter_common::{
    Counter, DatapathConfig, ListEntry, ListIndex, ListValue, Peer, Reason, Table, Verdict,
};
use ipnet::IpNet;

use super::{
    cache::Slots,
    lists::{Lists4, Lists6, key4, key6},
    maps::{DatapathMaps, ListKind, Peers, PerFamily, chunks, found, sum_counters},
    peers::{read_peer, with_pending},
    prefix::Prefix,
};

/// See the module documentation.
pub struct MapsReader {
    config: Array<MapData, DatapathConfig>,
    counters: PerCpuArray<MapData, u64>,
    peers: Peers,
    lists4: Lists4,
    lists6: Lists6,
    index: Array<MapData, ListIndex>,
    hits: PerCpuArray<MapData, u64>,
    cache: Slots,
}

/// Another typed handle on the map behind `data` (a duplicated file descriptor).
fn dup<T: TryFrom<Map, Error = MapError>>(data: &MapData) -> Result<T> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating a map descriptor")?;
    let map = Map::from_map_data(MapData::from_fd(fd)?)?;
    T::try_from(map).context("a duplicated map has an unexpected type")
}

impl DatapathMaps {
    /// A read-only handle of its own on the same kernel maps (see [`MapsReader`]).
    pub fn reader(&self) -> Result<MapsReader> {
        let (lists4, lists6, index) = self.lists.map_data();
        Ok(MapsReader {
            config: dup(self.config.map())?,
            counters: dup(self.counters.map())?,
            peers: PerFamily {
                v4: dup(self.peers.v4.map())?,
                v6: dup(self.peers.v6.map())?,
            },
            lists4: dup(lists4)?,
            lists6: dup(lists6)?,
            index: dup(index)?,
            hits: dup(self.hits.map_data())?,
            cache: Slots::new(dup(self.cache.slots.map())?),
        })
    }

    /// Every verdict (expired ones included), a chunk at a time while `each` says go on:
    /// what a reader of a million verdicts should use to stay small. Hits are those the
    /// entries hold, without the ones the decision cache still holds (reading those means
    /// copying out the whole cache, ~80 ms): what counting and filtering verdicts want; `list`
    /// reads through [`MapsReader::for_each_verdict_chunk`], which adds them.
    pub fn for_each_verdict_chunk_uncounted(
        &self,
        each: impl FnMut(Vec<(IpAddr, Verdict)>) -> bool,
    ) -> Result<()> {
        verdict_chunks(&self.peers, None, each)
    }
}

/// The verdicts of the per-source maps, a chunk at a time, with the hits the decision cache
/// holds for them if `cache` is given.
pub(super) fn verdict_chunks(
    peers: &Peers,
    cache: Option<&Slots>,
    mut each: impl FnMut(Vec<(IpAddr, Verdict)>) -> bool,
) -> Result<()> {
    let pending = match cache {
        Some(c) => c.all_pending_hits()?,
        None => Default::default(),
    };
    let mut go_on = true;
    chunks(&peers.v4, |c| {
        go_on = each(
            c.into_iter()
                .filter_map(|(k, p)| with_pending(IpAddr::from(k), p, &pending))
                .collect(),
        );
        go_on
    })?;
    if !go_on {
        return Ok(());
    }
    chunks(&peers.v6, |c| {
        each(
            c.into_iter()
                .filter_map(|(k, p)| with_pending(IpAddr::from(k), p, &pending))
                .collect(),
        )
    })
}

impl MapsReader {
    pub fn config(&self) -> Result<DatapathConfig> {
        self.config
            .get(&0, 0)
            .context("reading the datapath config")
    }

    /// Every counter summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize]> {
        sum_counters(&self.counters)
    }

    pub fn verdict_get(&self, ip: IpAddr) -> Result<Option<Verdict>> {
        Ok(self.peer(ip)?.and_then(|p| p.verdict()))
    }

    /// Everything the datapath holds for one source (its verdict's hits include those its
    /// decision-cache slot holds).
    pub fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        read_peer(&self.peers, &self.cache, ip)
    }

    /// Exactly this prefix of a list (not the longest match), with its hits.
    pub fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        let table = Table::from(kind);
        let v = match Prefix::new(net) {
            Prefix::V4(a, l) => found(self.lists4.get(&key4(table, a, l), 0))?,
            Prefix::V6(a, l) => found(self.lists6.get(&key6(table, a, l), 0))?,
        };
        v.map(|v| self.entry_of(&v)).transpose()
    }

    /// Every verdict (expired ones included), a chunk at a time while `each` says go on, with
    /// the hits the decision cache still holds added (what `list` shows).
    pub fn for_each_verdict_chunk(
        &self,
        each: impl FnMut(Vec<(IpAddr, Verdict)>) -> bool,
    ) -> Result<()> {
        verdict_chunks(&self.peers, Some(&self.cache), each)
    }

    /// The longest prefix in the list that covers `ip`, as the datapath finds it: the
    /// lengths in use come from the kernel's index, longest first.
    pub fn list_match(&self, kind: ListKind, ip: IpAddr) -> Result<Option<ListEntry>> {
        let table = Table::from(kind);
        let index = self.index.get(&0, 0).context("reading the list index")?;
        let t = table as usize;
        let lens: Vec<u8> = if ip.is_ipv6() {
            index.v6[t].lens[..usize::from(index.v6[t].count)].to_vec()
        } else {
            index.v4[t].lens[..usize::from(index.v4[t].count)].to_vec()
        };
        for l in lens {
            let p = Prefix::new(IpNet::new(ip, l).context("a prefix length in the index")?);
            let v = match p {
                Prefix::V4(a, l) => found(self.lists4.get(&key4(table, a, l), 0))?,
                Prefix::V6(a, l) => found(self.lists6.get(&key6(table, a, l), 0))?,
            };
            if let Some(v) = v {
                return Ok(Some(self.entry_of(&v)?));
            }
        }
        Ok(None)
    }

    fn entry_of(&self, v: &ListValue) -> Result<ListEntry> {
        let mut e = ListEntry::new(Reason::from_u8(v.reason), v.expires_ns);
        if v.slot != 0 {
            let per_cpu = self.hits.get(&v.slot, 0).context("reading a hit counter")?;
            e.hits = per_cpu.iter().sum();
        }
        Ok(e)
    }
}
