//! Hit counters of list entries: a per-CPU array (`HITS`) the datapath bumps without atomics
//! or shared cache lines, and the allocation of its slots. Every manual, config and host entry
//! and every prefix verdict gets its own slot; a feed gets one for all its entries. Slot 0 is
//! the overflow: entries beyond the array's size share it and show no hits. The counters are
//! read through [`super::MapsReader::hit_count`]; this is the owner's record of which slots
//! are taken.

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray, PerCpuValues};

pub(super) struct Hits {
    /// Slots given back, reused first (zeroed on reuse).
    free: Vec<u32>,
    /// Next never-used slot.
    next: u32,
    size: u32,
}

impl Hits {
    /// The slots of a `HITS` array of `size` entries, all free.
    pub(super) fn new(size: u32) -> Self {
        Self {
            free: Vec::new(),
            next: 1,
            size,
        }
    }

    /// A slot of its own for a new entry (0 when all are taken), zeroed in `map` if reused.
    pub(super) fn alloc(&mut self, map: &mut PerCpuArray<MapData, u64>) -> Result<u32> {
        if let Some(slot) = self.free.pop() {
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
            let zero = PerCpuValues::try_from(vec![0u64; cpus])?;
            map.set(slot, zero, 0).context("zeroing a hit counter")?;
            return Ok(slot);
        }
        if self.next < self.size {
            self.next += 1;
            return Ok(self.next - 1);
        }
        Ok(0)
    }

    pub(super) fn release(&mut self, slot: u32) {
        if slot != 0 {
            self.free.push(slot);
        }
    }
}
