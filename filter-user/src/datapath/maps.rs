//! Typed access to the datapath's maps, by address family, so the rest of userspace deals in
//! `IpAddr`/`IpNet` and never in raw keys. One [`DatapathMaps`] owns every map but the event
//! ring. It reads through the [`MapsReader`] it holds (every lookup is written once, there)
//! and writes through the same handles; its write methods live beside the concern they serve:
//!
//! - this file: taking the maps, the runtime config (with the list generation and the clock
//!   calibration it carries);
//! - [`super::peers`]: verdicts and per-source state;
//! - [`super::entries`]: the prefix lists entry by entry;
//! - [`super::feedsets`]: whole feeds, loaded and replaced as sets;
//! - [`super::networks`]: network verdicts.

use std::{ops::Deref, os::fd::AsFd as _};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{IterableMap as _, MapData, PerCpuArray},
};
use filter_common::{DatapathConfig, NewSources, map_names as m, program_names};

use super::{
    cache::Cache,
    clock::Sampler,
    hits::Hits,
    lists::{ListMaps, Lists},
    reader::MapsReader,
    typed::{Peers, PerFamily, take},
};

/// Every map except the event ring, owned by one handle: the maps themselves (read through
/// [`MapsReader`], which it dereferences to) and what only the writer keeps.
pub struct DatapathMaps {
    pub(super) maps: MapsReader,
    /// Who wants each list prefix, and the lengths in use.
    pub(super) lists: Lists,
    /// Which hit slots are taken.
    pub(super) hits: Hits,
    /// The decision cache's generation, and evicting a source's slot.
    pub(super) cache: Cache,
    sampler: Sampler,
    /// The generation this handle last wrote (`DatapathConfig::list_gen`).
    list_gen: u32,
    /// Entries of each family's seen map, as the kernel made it.
    seen_entries: u32,
}

/// The owner reads as every reader does: `maps.verdict_get(ip)`, `maps.config()`, … are
/// [`MapsReader`]'s lookups, on the owner's own handles.
impl Deref for DatapathMaps {
    type Target = MapsReader;

    fn deref(&self) -> &MapsReader {
        &self.maps
    }
}

/// The most new sources a tick (`NewSources`, 2^30 ns) under which every held source stays in
/// a seen map of `entries` for its whole hold window `hold_ns`: half the map per window, since
/// the kernel's LRU is approximate (see `DatapathConfig::seen_new_per_tick_max`); 0 (no bound)
/// without a window, else at least 1.
fn hold_bound(entries: u32, hold_ns: u64) -> u64 {
    match hold_ns {
        0 => 0,
        ns => (u64::from(entries / 2).saturating_mul(1 << NewSources::TICK_SHIFT) / ns).max(1),
    }
}

/// A fresh list generation, unlikely to equal one a pinned entry carries from another run.
fn seed_generation() -> u32 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    (ts.tv_nsec() as u32 ^ (ts.tv_sec() as u32).rotate_left(16)).max(1)
}

impl DatapathMaps {
    /// A read-only handle of its own on the same kernel maps (see [`MapsReader`]).
    pub fn reader(&self) -> Result<MapsReader> {
        self.maps.try_clone()
    }

    /// Takes ownership of the maps of a loaded object. Lists start empty (they are not
    /// pinned: the daemon rebuilds them); pinned per-source entries keep their verdicts, and
    /// a new generation makes every decision they cached stale.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let sampler = ebpf
            .program(program_names::CLOCK)
            .ok_or_else(|| anyhow!("program {} missing", program_names::CLOCK))?
            .fd()
            .context("the clock sampler is not loaded")?
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the clock sampler's fd")?;
        let hits: PerCpuArray<MapData, u64> = take(ebpf, m::HITS)?;
        let hit_slots = hits.len();
        let cache = Cache::new(take(ebpf, m::CACHE)?, take(ebpf, m::CACHE_CTL)?)?;
        let seen: Peers = PerFamily {
            v4: take(ebpf, m::SEEN_V4)?,
            v6: take(ebpf, m::SEEN_V6)?,
        };
        let seen_entries = seen
            .v4
            .map()
            .info()
            .context("reading the seen map's size")?
            .max_entries();
        let mut maps = Self {
            maps: MapsReader {
                config: take(ebpf, m::CONFIG)?,
                counters: take(ebpf, m::COUNTERS)?,
                peers: PerFamily {
                    v4: take(ebpf, m::PEERS_V4)?,
                    v6: take(ebpf, m::PEERS_V6)?,
                },
                seen,
                new_sources: take(ebpf, m::SEEN_RATE)?,
                lists: ListMaps {
                    v4: take(ebpf, m::LISTS_V4)?,
                    v6: take(ebpf, m::LISTS_V6)?,
                    index: take(ebpf, m::LIST_INDEX)?,
                    filter: take(ebpf, m::LIST_FILTER)?,
                },
                hits,
                // The cache's owner handle (below) evicts; this one reads pending hits.
                cache: cache.slots.clone(),
            },
            lists: Lists::new(),
            hits: Hits::new(hit_slots),
            cache,
            sampler: Sampler::new(sampler),
            list_gen: 0,
            seen_entries,
        };
        let old = maps.config()?.list_gen;
        maps.list_gen = if old == 0 {
            seed_generation()
        } else {
            old.wrapping_add(1).max(1)
        };
        let cfg = maps.config()?;
        maps.write_config(cfg)?;
        Ok(maps)
    }

    /// Writes the runtime config. The list generation and a fresh clock calibration are
    /// filled in here (whatever `cfg` holds there); a change to what cached decisions depend
    /// on (the windows, hold) starts a new generation.
    pub fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()> {
        let old = self.config()?;
        if old.shapes_decisions_unlike(cfg) {
            self.list_gen = self.list_gen.wrapping_add(1).max(1);
        }
        self.write_config(*cfg)
    }

    fn write_config(&mut self, mut cfg: DatapathConfig) -> Result<()> {
        let cal = self.sampler.calibrate()?;
        cfg.list_gen = self.list_gen;
        cfg.seen_new_per_tick_max = hold_bound(self.seen_entries, cfg.hold_window_ns);
        cfg.clock_jiffies = cal.jiffies;
        cfg.clock_ns = cal.ns;
        cfg.tick_ns = cal.tick_ns;
        cfg.stale_jiffies = match cfg.stale_after_ns {
            0 => 0,
            after => cfg
                .jiffies_at(cfg.alive_ns.saturating_add(after))
                .unwrap_or(0),
        };
        self.maps
            .config
            .set(0, cfg, 0)
            .context("writing the datapath config")?;
        // Whatever changed (a list generation, a window, the calibration), the decision
        // cache's copies end with it.
        self.cache.invalidate()
    }

    /// Starts a new generation: every source's cached decision is made again at its next SYN.
    /// Called after every list change (once its writes are done), and by the daemon's sweep,
    /// which bounds how long a decision cached through a race can outlive its cause.
    pub fn new_generation(&mut self) -> Result<()> {
        self.list_gen = self.list_gen.wrapping_add(1).max(1);
        let cfg = self.config()?;
        self.write_config(cfg)
    }
}
