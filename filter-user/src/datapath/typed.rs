//! Typed handles on the kernel maps, shared by every file that touches them: the two address
//! families side by side, a missing key as `None`, and whole-map reads in batches where the
//! kernel has them.

use std::os::fd::AsFd as _;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, Pod,
    maps::{HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
};
use filter_common::{Counter, Peer};

use super::batch;

pub(super) struct PerFamily<K4, K6> {
    pub(super) v4: K4,
    pub(super) v6: K6,
}

pub(super) type Hash<K, V> = HashMap<MapData, K, V>;

/// The per-source maps of both families.
pub(super) type Peers = PerFamily<Hash<[u8; 4], Peer>, Hash<[u8; 16], Peer>>;

/// Takes one map out of a loaded object, typed.
pub(super) fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// `Ok(false)` for a missing key, the error otherwise.
pub(super) fn removed(r: Result<(), MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn found<V>(r: Result<V, MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every entry of a hash map: batched, or key by key where the kernel lacks batch commands.
pub(super) fn all<K: Pod, V: Pod>(map: &Hash<K, V>) -> Result<Vec<(K, V)>> {
    match batch::lookup_all::<K, V>(map.map().fd().as_fd()) {
        Ok(r) => Ok(r.context("reading a map in batches")?),
        Err(batch::Unsupported) => map.iter().map(|r| r.map_err(Into::into)).collect(),
    }
}

/// Every counter of a counters map summed over CPUs, indexed by [`Counter`].
pub(super) fn sum_counters(
    map: &PerCpuArray<MapData, u64>,
) -> Result<[u64; Counter::COUNT as usize]> {
    let mut out = [0u64; Counter::COUNT as usize];
    for c in Counter::ALL {
        let per_cpu = map.get(&(c as u32), 0).context("reading counters")?;
        out[c as usize] = per_cpu.iter().sum();
    }
    Ok(out)
}

/// Every entry of a hash map, a chunk at a time while `each` says go on (see
/// [`batch::lookup_chunks`]).
pub(super) fn chunks<K: Pod, V: Pod>(
    map: &Hash<K, V>,
    mut each: impl FnMut(Vec<(K, V)>) -> bool,
) -> Result<()> {
    match batch::lookup_chunks::<K, V>(map.map().fd().as_fd(), &mut each) {
        Ok(r) => Ok(r.context("reading a map in batches")?),
        Err(batch::Unsupported) => {
            let all: Vec<(K, V)> = map.iter().collect::<Result<_, _>>()?;
            for c in all.chunks(4096) {
                if !each(c.to_vec()) {
                    break;
                }
            }
            Ok(())
        }
    }
}
