//! Userspace's side of the datapath's decision cache (`CACHE`, `CACHE_CTL`; see
//! `filter_common::cache`): it turns the cache on at start, ends every slot (a new
//! generation) after each write that could change a cached decision, empties a source's slot
//! when its verdict is rewritten, and adds the hits a slot holds to the verdict a reader sees.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::{AsFd as _, BorrowedFd},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, MapData};
use filter_common::{CacheCtl, CacheSlot, cache_index, cache_key_v4, cache_key_v6, cacheable_v6};

use super::batch;

/// The cache key of a source; `None` for an IPv4-mapped IPv6 source, which the datapath
/// keeps out of the cache (it would share its IPv4 twin's key).
pub(super) fn key(ip: IpAddr) -> Option<[u64; 2]> {
    match ip {
        IpAddr::V4(a) => Some(cache_key_v4(a.octets())),
        IpAddr::V6(a) => Some(cache_key_v6(a.octets())).filter(|k| cacheable_v6(*k)),
    }
}

/// The slot array, for reading (the owner and [`super::MapsReader`] alike).
pub(super) struct Slots {
    slots: Array<MapData, CacheSlot>,
    shift: u32,
}

impl Slots {
    pub(super) fn new(slots: Array<MapData, CacheSlot>) -> Self {
        let shift = CacheCtl::new(slots.len(), 0).shift;
        Self { slots, shift }
    }

    pub(super) fn map(&self) -> &MapData {
        self.slots.map()
    }

    /// The slot `key` maps to: its index and what it holds.
    fn slot_of(&self, key: [u64; 2]) -> Result<(u32, CacheSlot)> {
        let i = cache_index(key, self.shift);
        let s = self
            .slots
            .get(&i, 0)
            .context("reading the decision cache")?;
        Ok((i, s))
    }

    /// Hits of `ip`'s verdict held in its slot, not yet in its entry.
    pub(super) fn pending_hits(&self, ip: IpAddr) -> Result<u64> {
        let Some(k) = key(ip) else { return Ok(0) };
        Ok(self.slot_of(k)?.1.pending_hits_of(k))
    }

    /// Every source with verdict hits pending in a slot (what a reader of all verdicts adds).
    pub(super) fn all_pending_hits(&self) -> Result<HashMap<[u64; 2], u64>> {
        let mut out = HashMap::new();
        let mut keep = |chunk: Vec<(u32, CacheSlot)>| {
            for (_, s) in chunk {
                let n = s.pending_hits_of(s.key);
                if n != 0 {
                    out.insert(s.key, n);
                }
            }
            true
        };
        let fd: BorrowedFd<'_> = self.slots.map().fd().as_fd();
        match batch::lookup_chunks::<u32, CacheSlot>(fd, &mut keep) {
            Ok(r) => r.context("reading the decision cache in batches")?,
            Err(batch::Unsupported) => {
                for i in 0..self.slots.len() {
                    let s = self
                        .slots
                        .get(&i, 0)
                        .context("reading the decision cache")?;
                    keep(vec![(i, s)]);
                }
            }
        }
        Ok(out)
    }
}

/// The owner's handle: slots and control word.
pub(super) struct Cache {
    pub(super) slots: Slots,
    ctl: Array<MapData, CacheCtl>,
    current: CacheCtl,
}

impl Cache {
    /// Turns the cache on, under a generation no slot carries (the maps are fresh at load).
    pub(super) fn new(
        slots: Array<MapData, CacheSlot>,
        ctl: Array<MapData, CacheCtl>,
    ) -> Result<Self> {
        let current = CacheCtl::new(slots.len(), 1);
        let mut cache = Self {
            slots: Slots::new(slots),
            ctl,
            current,
        };
        cache.write()?;
        Ok(cache)
    }

    fn write(&mut self) -> Result<()> {
        self.ctl
            .set(0, self.current, 0)
            .context("writing the decision cache's generation")
    }

    /// Ends every slot: the next SYN of each source reads its entry again. Called after the
    /// write that changed what a decision depends on, never before.
    pub(super) fn invalidate(&mut self) -> Result<()> {
        self.current.generation = self.current.generation.wrapping_add(1).max(1);
        self.write()
    }

    /// Empties `ip`'s slot if it holds `ip`, losing its pending hits (the caller is about to
    /// write the verdict, hits included, from what it read with them).
    pub(super) fn evict(&mut self, ip: IpAddr) -> Result<()> {
        let Some(k) = key(ip) else { return Ok(()) };
        let (i, s) = self.slots.slot_of(k)?;
        if s.key == k {
            self.slots
                .slots
                .set(i, CacheSlot::default(), 0)
                .context("writing the decision cache")?;
        }
        Ok(())
    }
}
