//! Reading what the table counted: the named counters (one per outcome, named as the eBPF
//! datapath's `Counter`s, and one per feed) and the per-element counters of the sets that have
//! them, over netlink in the table's namespace (reads happen on `stats`, `list`, `check` and
//! metrics scrapes, not per SYN). Not through `nft`: it reads every element of every set
//! before it lists anything (15 s and 700 MiB with a million-prefix feed loaded).

use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Result;
use filter_common::Counter;

use super::{
    netlink::Netlink,
    netns,
    sets::{addr_key, key_addr},
};

/// Every named counter of the table: name → packets.
pub fn named(netns: &OwnedFd, table: &str) -> Result<HashMap<String, u64>> {
    netns::within(netns, || {
        Ok(Netlink::open(table)?
            .named_counters()?
            .into_iter()
            .map(|(name, t)| (name, t.packets))
            .collect())
    })
}

/// The outcome counters as `stats` and the metrics read them: never lower than a reading
/// before. A table written again after someone deleted it starts its counters from the last
/// heartbeat's reading ([`super::rebuild`]), up to a second's SYNs short of what a scrape may
/// have read since, and a counter going down reads to Prometheus as a reset (its whole total
/// in one `increase()`). Shared by the handle and its readers.
///
/// `events_lost` also counts the reports the NFLOG socket lost when it was full (the
/// kernel's count, which [`super::events::NfLog`] keeps here): each is a new peer the
/// daemon never heard of, as a report the rules could not remember is.
#[derive(Clone, Default)]
pub struct Outcomes {
    high: Arc<Mutex<[u64; Counter::COUNT as usize]>>,
    socket_lost: Arc<AtomicU64>,
}

impl Outcomes {
    /// Where the NFLOG socket keeps the reports it lost.
    pub fn socket_lost(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.socket_lost)
    }

    pub fn read(&self, netns: &OwnedFd, table: &str) -> Result<[u64; Counter::COUNT as usize]> {
        let mut now = outcomes(&named(netns, table)?);
        now[Counter::EventsLost as usize] += self.socket_lost.load(Ordering::Relaxed);
        let mut high = self.high.lock().unwrap_or_else(PoisonError::into_inner);
        for (h, n) in high.iter_mut().zip(now) {
            *h = (*h).max(n);
        }
        Ok(*high)
    }
}

/// The outcome counters, indexed by [`Counter`] (missing ones read 0).
pub fn outcomes(named: &HashMap<String, u64>) -> [u64; Counter::COUNT as usize] {
    let mut out = [0; Counter::COUNT as usize];
    for c in Counter::ALL {
        out[c as usize] = named.get(c.name()).copied().unwrap_or(0);
    }
    out
}

/// The hits of every element of a small set with counters (a dump: its cost is the square
/// of the set's size, see [`Netlink::element_packets`]): key (an address, or a prefix's
/// network) → packets.
pub fn element_hits(netns: &OwnedFd, table: &str, set: &str) -> Result<HashMap<IpAddr, u64>> {
    netns::within(netns, || {
        Ok(Netlink::open(table)?
            .element_packets(set)?
            .into_iter()
            .filter_map(|(key, n)| Some((key_addr(&key)?, n)))
            .collect())
    })
}

/// The hits of these addresses' elements in `set`, whatever its size (those it does not
/// hold are left out).
pub fn elements_hits(
    netns: &OwnedFd,
    table: &str,
    set: &str,
    ips: &[IpAddr],
) -> Result<HashMap<IpAddr, u64>> {
    if ips.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<Vec<u8>> = ips.iter().map(|ip| addr_key(*ip)).collect();
    netns::within(netns, || {
        Ok(Netlink::open(table)?
            .elements_packets(set, &keys)?
            .into_iter()
            .filter_map(|(key, n)| Some((key_addr(&key)?, n)))
            .collect())
    })
}

/// The hits of `ip`'s element in `set` (`None`: it has none).
pub fn one_element_hits(
    netns: &OwnedFd,
    table: &str,
    set: &str,
    ip: IpAddr,
) -> Result<Option<u64>> {
    Ok(elements_hits(netns, table, set, &[ip])?.get(&ip).copied())
}
