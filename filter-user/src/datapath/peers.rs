//! Verdicts and per-source state, in the per-source entries (`PEERS_V4`/`_V6`, value
//! [`Peer`]). A verdict write reads the source's entry and writes it back whole with the new
//! verdict and no cached decision: the kernel replaces the entry, so a decision the datapath
//! cached from the old verdict cannot survive the write, and the decision cache's slot of the
//! source is emptied and every slot's generation ended after it. (A hit or a report the
//! datapath writes in between is lost; counters only.) Verdicts are read with the hits the
//! decision cache holds for them added.

use std::{net::IpAddr, os::fd::AsFd as _};

use anyhow::{Context as _, Result};
use aya::{Pod, maps::IterableMap as _};
use filter_common::{Peer, Seen, Verdict};

use super::{
    batch,
    cache::Slots,
    maps::{DatapathMaps, Hash, Peers, found, removed},
    reader::verdict_chunks,
};

/// Reads, edits and writes back one entry; `edit` returns whether to write.
fn update<K: Pod>(
    map: &mut Hash<K, Peer>,
    key: K,
    edit: impl FnOnce(&mut Peer) -> bool,
) -> Result<bool> {
    let mut p = found(map.get(&key, 0))?.unwrap_or(Peer::empty());
    if !edit(&mut p) {
        return Ok(false);
    }
    map.insert(key, p, 0)?;
    Ok(true)
}

fn remove_all<K: Pod>(map: &mut Hash<K, Peer>, keys: &[K]) -> Result<usize> {
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

impl DatapathMaps {
    /// Rewrites `ip`'s entry with `edit` (which returns whether to write): its cache slot is
    /// emptied first and every slot's generation ended after, so no copy of the old entry
    /// outlives the write.
    fn rewrite(&mut self, ip: IpAddr, edit: impl FnOnce(&mut Peer) -> bool) -> Result<bool> {
        // The token bucket the slot kept stays the source's.
        let bucket = self.cache.evict(ip)?;
        let edit = |p: &mut Peer| {
            p.tat_ns = p.tat_ns.max(bucket);
            edit(p)
        };
        let written = match ip {
            IpAddr::V4(a) => update(&mut self.peers.v4, a.octets(), edit),
            IpAddr::V6(a) => update(&mut self.peers.v6, a.octets(), edit),
        }?;
        self.cache.invalidate()?;
        Ok(written)
    }

    /// Sets `ip`'s verdict (its first contact, last report and token bucket stay).
    pub fn verdict_set(&mut self, ip: IpAddr, v: Verdict) -> Result<()> {
        self.rewrite(ip, |p| {
            p.set_verdict(&v);
            true
        })
        .with_context(|| format!("writing the verdict for {ip}"))?;
        Ok(())
    }

    pub fn verdict_get(&self, ip: IpAddr) -> Result<Option<Verdict>> {
        Ok(self.peer(ip)?.and_then(|p| p.verdict()))
    }

    /// Removes `ip`'s verdict; `false` if it had none. Its first contact and last report stay,
    /// so the next SYN is not reported again within the dedup window.
    pub fn verdict_remove(&mut self, ip: IpAddr) -> Result<bool> {
        let clear = |p: &mut Peer| {
            let had = p.verdict().is_some();
            p.clear_verdict();
            had
        };
        self.rewrite(ip, clear)
    }

    /// Every verdict (expired ones included), read in batches where the kernel can.
    pub fn verdicts(&self) -> Result<Vec<(IpAddr, Verdict)>> {
        let mut out = Vec::new();
        verdict_chunks(&self.peers, Some(&self.cache.slots), |c| {
            out.extend(c);
            true
        })?;
        Ok(out)
    }

    /// Removes these sources' entries altogether — verdict and per-source state, so their
    /// next SYN is a first contact (missing ones are skipped); returns how many went. The
    /// sweep of expired verdicts uses it: a source whose verdict ran out is new again.
    pub fn verdicts_remove(&mut self, ips: &[IpAddr]) -> Result<usize> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in ips {
            match ip {
                IpAddr::V4(a) => v4.push(a.octets()),
                IpAddr::V6(a) => v6.push(a.octets()),
            }
        }
        let n = remove_all(&mut self.peers.v4, &v4)? + remove_all(&mut self.peers.v6, &v6)?;
        if n != 0 {
            self.cache.invalidate()?;
        }
        Ok(n)
    }

    /// First contact and last report of a source the datapath saw as unknown.
    pub fn seen_get(&self, ip: IpAddr) -> Result<Option<Seen>> {
        Ok(self.peer(ip)?.and_then(|p| p.seen()))
    }

    /// Everything the datapath holds for one source (its verdict's hits include those its
    /// decision-cache slot holds).
    pub fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        read_peer(&self.peers, &self.cache.slots, ip)
    }
}

/// One source's entry, its verdict's hits including those its decision-cache slot holds:
/// how the owner and [`super::MapsReader`] both read a source.
pub(super) fn read_peer(peers: &Peers, cache: &Slots, ip: IpAddr) -> Result<Option<Peer>> {
    let Some(mut p) = found(match ip {
        IpAddr::V4(a) => peers.v4.get(&a.octets(), 0),
        IpAddr::V6(a) => peers.v6.get(&a.octets(), 0),
    })?
    else {
        return Ok(None);
    };
    if p.verdict().is_some() {
        p.hits = p.hits.wrapping_add(cache.pending_hits(ip)?);
    }
    Ok(Some(p))
}

/// A source's verdict, if it has one, with the hits its decision-cache slot holds added.
pub(super) fn with_pending(
    ip: IpAddr,
    p: Peer,
    pending: &std::collections::HashMap<[u64; 2], u64>,
) -> Option<(IpAddr, Verdict)> {
    let mut v = p.verdict()?;
    if let Some(n) = super::cache::key(ip).and_then(|k| pending.get(&k)) {
        v.hits = v.hits.wrapping_add(*n);
    }
    Some((ip, v))
}
