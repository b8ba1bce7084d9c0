//! Typed access to the datapath's maps, by address family, so the rest of userspace deals in
//! `IpAddr`/`IpNet` and never in raw keys.

use std::{net::IpAddr, os::fd::AsFd as _};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, Pod,
    maps::{
        Array, HashMap, IterableMap as _, Map, MapData, MapError, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use filter_common::{Counter, DatapathConfig, ListEntry, Seen, Verdict, map_names as m};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::batch;

/// Which prefix list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Allow,
    Deny,
}

struct PerFamily<K4, K6> {
    v4: K4,
    v6: K6,
}

type Trie<K> = LpmTrie<MapData, K, ListEntry>;
type Hash<K, V> = HashMap<MapData, K, V>;

/// Every map except the event ring, owned by one handle.
pub struct DatapathMaps {
    config: Array<MapData, DatapathConfig>,
    counters: PerCpuArray<MapData, u64>,
    allow: PerFamily<Trie<[u8; 4]>, Trie<[u8; 16]>>,
    deny: PerFamily<Trie<[u8; 4]>, Trie<[u8; 16]>>,
    verdicts: PerFamily<Hash<[u8; 4], Verdict>, Hash<[u8; 16], Verdict>>,
    seen: PerFamily<Hash<[u8; 4], Seen>, Hash<[u8; 16], Seen>>,
}

/// Takes one map out of a loaded object, typed.
pub(super) fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
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

/// `Ok(false)` for a missing key, the error otherwise.
fn removed(r: Result<(), MapError>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn found<V>(r: Result<V, MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn key4(net: Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn key6(net: Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

/// Every entry of a hash map, a chunk at a time while `each` says go on (see
/// [`batch::lookup_chunks`]).
fn chunks<K: Pod, V: Pod>(
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

/// A second handle on a hash map (a duplicate of its fd), usable from another thread.
fn duplicate<K: Pod, V: Pod>(map: &Hash<K, V>) -> Result<Hash<K, V>> {
    let fd = map.map().fd().as_fd().try_clone_to_owned()?;
    let data = MapData::from_fd(fd)?;
    Ok(Hash::try_from(Map::LruHashMap(data))?)
}

/// The verdict maps on handles of their own, for reading them outside the daemon's main loop
/// (a `list --verdicts` streamed to a slow reader must not stall the daemon).
pub struct VerdictReader {
    v4: Hash<[u8; 4], Verdict>,
    v6: Hash<[u8; 16], Verdict>,
}

impl VerdictReader {
    /// Every cached verdict (expired ones included), a chunk at a time while `each` says go
    /// on.
    pub fn for_each_chunk(&self, each: impl FnMut(Vec<(IpAddr, Verdict)>) -> bool) -> Result<()> {
        for_each_verdict_chunk(&self.v4, &self.v6, each)
    }
}

fn for_each_verdict_chunk(
    v4: &Hash<[u8; 4], Verdict>,
    v6: &Hash<[u8; 16], Verdict>,
    mut each: impl FnMut(Vec<(IpAddr, Verdict)>) -> bool,
) -> Result<()> {
    let mut go_on = true;
    chunks(v4, |c| {
        go_on = each(c.into_iter().map(|(k, v)| (IpAddr::from(k), v)).collect());
        go_on
    })?;
    if !go_on {
        return Ok(());
    }
    chunks(v6, |c| {
        each(c.into_iter().map(|(k, v)| (IpAddr::from(k), v)).collect())
    })
}

fn remove_all<K: Pod, V: Pod>(map: &mut Hash<K, V>, keys: &[K]) -> Result<usize> {
    if keys.is_empty() {
        return Ok(0);
    }
    match batch::delete::<K>(map.map().fd().as_fd(), keys) {
        Ok(r) => Ok(r.context("deleting map entries in batches")?),
        Err(batch::Unsupported) => {
            let mut n = 0;
            for k in keys {
                n += usize::from(removed(map.remove(k))?);
            }
            Ok(n)
        }
    }
}

/// The datapath's counters, read-only (see [`DatapathMaps::counter_reader`]).
pub struct CounterReader(PerCpuArray<MapData, u64>);

impl CounterReader {
    /// Every counter summed over CPUs, indexed by [`Counter`].
    pub fn read(&self) -> Result<[u64; Counter::COUNT as usize]> {
        sum_counters(&self.0)
    }
}

fn sum_counters(map: &PerCpuArray<MapData, u64>) -> Result<[u64; Counter::COUNT as usize]> {
    let mut out = [0u64; Counter::COUNT as usize];
    for c in Counter::ALL {
        let per_cpu = map.get(&(c as u32), 0).context("reading counters")?;
        out[c as usize] = per_cpu.iter().sum();
    }
    Ok(out)
}

impl DatapathMaps {
    /// Takes ownership of the maps of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            config: take(ebpf, m::CONFIG)?,
            counters: take(ebpf, m::COUNTERS)?,
            allow: PerFamily {
                v4: take(ebpf, m::ALLOW_V4)?,
                v6: take(ebpf, m::ALLOW_V6)?,
            },
            deny: PerFamily {
                v4: take(ebpf, m::DENY_V4)?,
                v6: take(ebpf, m::DENY_V6)?,
            },
            verdicts: PerFamily {
                v4: take(ebpf, m::VERDICTS_V4)?,
                v6: take(ebpf, m::VERDICTS_V6)?,
            },
            seen: PerFamily {
                v4: take(ebpf, m::SEEN_V4)?,
                v6: take(ebpf, m::SEEN_V6)?,
            },
        })
    }

    /// A second handle on the same kernel maps (duplicated file descriptors), for readers
    /// that must not wait on the owner of the first: the MTA's query socket answers from it
    /// while the daemon's main loop is busy (a sweep of a million verdicts takes ~0.4 s).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            config: dup(self.config.map())?,
            counters: dup(self.counters.map())?,
            allow: PerFamily {
                v4: dup(self.allow.v4.map())?,
                v6: dup(self.allow.v6.map())?,
            },
            deny: PerFamily {
                v4: dup(self.deny.v4.map())?,
                v6: dup(self.deny.v6.map())?,
            },
            verdicts: PerFamily {
                v4: dup(self.verdicts.v4.map())?,
                v6: dup(self.verdicts.v6.map())?,
            },
            seen: PerFamily {
                v4: dup(self.seen.v4.map())?,
                v6: dup(self.seen.v6.map())?,
            },
        })
    }

    pub fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()> {
        self.config
            .set(0, cfg, 0)
            .context("writing the datapath config")
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

    /// A handle of its own on the counters, for a reader outside the daemon's main loop (the
    /// metrics endpoint), so reading them never waits for the loop.
    pub fn counter_reader(&self) -> Result<CounterReader> {
        let fd = self
            .counters
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the counters map descriptor")?;
        let map = Map::PerCpuArray(MapData::from_fd(fd)?);
        Ok(CounterReader(PerCpuArray::try_from(map)?))
    }

    fn trie_pair(&mut self, kind: ListKind) -> &mut PerFamily<Trie<[u8; 4]>, Trie<[u8; 16]>> {
        match kind {
            ListKind::Allow => &mut self.allow,
            ListKind::Deny => &mut self.deny,
        }
    }

    fn tries(&self, kind: ListKind) -> &PerFamily<Trie<[u8; 4]>, Trie<[u8; 16]>> {
        match kind {
            ListKind::Allow => &self.allow,
            ListKind::Deny => &self.deny,
        }
    }

    /// Adds or replaces a prefix (host bits are ignored).
    pub fn list_insert(&mut self, kind: ListKind, net: IpNet, entry: ListEntry) -> Result<()> {
        let t = self.trie_pair(kind);
        match net {
            IpNet::V4(n) => t.v4.insert(&key4(n), entry, 0),
            IpNet::V6(n) => t.v6.insert(&key6(n), entry, 0),
        }
        .with_context(|| format!("adding {net} to the {kind:?} list (is the map full?)"))
    }

    /// Removes exactly this prefix; `false` if it was not there.
    pub fn list_remove(&mut self, kind: ListKind, net: IpNet) -> Result<bool> {
        let t = self.trie_pair(kind);
        removed(match net {
            IpNet::V4(n) => t.v4.remove(&key4(n)),
            IpNet::V6(n) => t.v6.remove(&key6(n)),
        })
    }

    /// The longest prefix in the list that covers `ip`, as the datapath would find it.
    pub fn list_match(&self, kind: ListKind, ip: IpAddr) -> Result<Option<ListEntry>> {
        let t = self.tries(kind);
        found(match ip {
            IpAddr::V4(a) => t.v4.get(&Key::new(32, a.octets()), 0),
            IpAddr::V6(a) => t.v6.get(&Key::new(128, a.octets()), 0),
        })
    }

    /// Every prefix in a list.
    pub fn list_entries(&mut self, kind: ListKind) -> Result<Vec<(IpNet, ListEntry)>> {
        let t = self.trie_pair(kind);
        let mut out = Vec::new();
        for item in t.v4.iter() {
            let (k, v) = item?;
            let net = Ipv4Net::new(k.data().into(), k.prefix_len() as u8)?;
            out.push((IpNet::V4(net), v));
        }
        for item in t.v6.iter() {
            let (k, v) = item?;
            let net = Ipv6Net::new(k.data().into(), k.prefix_len() as u8)?;
            out.push((IpNet::V6(net), v));
        }
        Ok(out)
    }

    pub fn verdict_set(&mut self, ip: IpAddr, v: Verdict) -> Result<()> {
        match ip {
            IpAddr::V4(a) => self.verdicts.v4.insert(a.octets(), v, 0),
            IpAddr::V6(a) => self.verdicts.v6.insert(a.octets(), v, 0),
        }
        .with_context(|| format!("writing the verdict for {ip}"))
    }

    pub fn verdict_get(&self, ip: IpAddr) -> Result<Option<Verdict>> {
        found(match ip {
            IpAddr::V4(a) => self.verdicts.v4.get(&a.octets(), 0),
            IpAddr::V6(a) => self.verdicts.v6.get(&a.octets(), 0),
        })
    }

    pub fn verdict_remove(&mut self, ip: IpAddr) -> Result<bool> {
        removed(match ip {
            IpAddr::V4(a) => self.verdicts.v4.remove(&a.octets()),
            IpAddr::V6(a) => self.verdicts.v6.remove(&a.octets()),
        })
    }

    /// Every cached verdict (expired ones included), read in batches where the kernel can.
    pub fn verdicts(&self) -> Result<Vec<(IpAddr, Verdict)>> {
        let mut out = Vec::new();
        self.for_each_verdict_chunk(|c| {
            out.extend(c);
            true
        })?;
        Ok(out)
    }

    /// Every cached verdict (expired ones included), a chunk at a time: what a reader of a
    /// million verdicts should use to stay small.
    pub fn for_each_verdict_chunk(
        &self,
        each: impl FnMut(Vec<(IpAddr, Verdict)>) -> bool,
    ) -> Result<()> {
        for_each_verdict_chunk(&self.verdicts.v4, &self.verdicts.v6, each)
    }

    /// The verdict maps on handles of their own (see [`VerdictReader`]).
    pub fn verdict_reader(&self) -> Result<VerdictReader> {
        Ok(VerdictReader {
            v4: duplicate(&self.verdicts.v4)?,
            v6: duplicate(&self.verdicts.v6)?,
        })
    }

    /// Removes these verdicts (missing ones are skipped); returns how many went.
    pub fn verdicts_remove(&mut self, ips: &[IpAddr]) -> Result<usize> {
        let v4: Vec<[u8; 4]> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(a) => Some(a.octets()),
                _ => None,
            })
            .collect();
        let v6: Vec<[u8; 16]> = ips
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(a) => Some(a.octets()),
                _ => None,
            })
            .collect();
        Ok(remove_all(&mut self.verdicts.v4, &v4)? + remove_all(&mut self.verdicts.v6, &v6)?)
    }

    /// The "seen" entry of an unknown peer (first contact, last report).
    pub fn seen_get(&self, ip: IpAddr) -> Result<Option<Seen>> {
        found(match ip {
            IpAddr::V4(a) => self.seen.v4.get(&a.octets(), 0),
            IpAddr::V6(a) => self.seen.v6.get(&a.octets(), 0),
        })
    }
}
