//! Hit counters of list entries: a per-CPU array (`HITS`) the datapath bumps without atomics
//! or shared cache lines, and the allocation of its slots. Every manual, config and host entry
//! and every prefix verdict gets its own slot; a feed gets one for all its entries. Slot 0 is
//! the overflow: entries beyond the array's size share it and show no hits.

use anyhow::{Context as _, Result};
use aya::maps::{IterableMap as _, MapData, PerCpuArray, PerCpuValues};

pub(super) struct Hits {
    map: PerCpuArray<MapData, u64>,
    /// Slots given back, reused first (zeroed on reuse).
    free: Vec<u32>,
    /// Next never-used slot.
    next: u32,
    size: u32,
}

impl Hits {
    pub(super) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        let size = map.len();
        Self {
            map,
            free: Vec::new(),
            next: 1,
            size,
        }
    }

    /// A slot of its own for a new entry (0 when all are taken).
    pub(super) fn alloc(&mut self) -> Result<u32> {
        if let Some(slot) = self.free.pop() {
            let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
            let zero = PerCpuValues::try_from(vec![0u64; cpus])?;
            self.map
                .set(slot, zero, 0)
                .context("zeroing a hit counter")?;
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

    /// The kernel map behind the counters (for a reader of its own, [`super::reader`]).
    pub(super) fn map_data(&self) -> &MapData {
        self.map.map()
    }

    /// A slot's hits summed over CPUs (0 for the overflow slot).
    pub(super) fn read(&self, slot: u32) -> Result<u64> {
        if slot == 0 {
            return Ok(0);
        }
        let per_cpu = self.map.get(&slot, 0).context("reading a hit counter")?;
        Ok(per_cpu.iter().sum())
    }
}
