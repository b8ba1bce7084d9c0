//! Verdicts and per-source state, in the verdicts' entries (`PEERS_V4`/`_V6`, value
//! [`Peer`]); a source without a verdict has its state in the datapath's own entry
//! (`SEEN_V4`/`_V6`), which a verdict write moves into the verdict's. A verdict write reads
//! the source's entry and writes it back whole with the new verdict and no cached decision:
//! the kernel replaces the entry, so a decision the datapath cached from the old verdict
//! cannot survive the write, and the decision cache's slot of the source is emptied and
//! every slot's generation ended after it. (A hit or a report the datapath writes in between
//! is lost; counters only.) Verdicts are read through [`super::MapsReader`], with the hits
//! the decision cache holds for them added.

use std::{net::IpAddr, os::fd::AsFd as _};

use anyhow::{Context as _, Result};
use aya::{Pod, maps::IterableMap as _};
use filter_common::{Peer, PeerVerdict};

use super::{
    batch,
    cache::Handed,
    maps::DatapathMaps,
    typed::{Hash, found, removed},
};

/// Reads, edits and writes back one source's verdict entry (`peers`); `edit` returns whether
/// to write. A source without one starts from the entry the datapath keeps for it (`seen`:
/// its first contact, last report and token bucket carry over), which the write then
/// removes: the datapath looks a verdict's entry up first, and one source has one entry.
fn update<K: Pod>(
    peers: &mut Hash<K, Peer>,
    seen: &mut Hash<K, Peer>,
    key: K,
    edit: impl FnOnce(&mut Peer) -> bool,
) -> Result<bool> {
    let (mut p, from_seen) = match found(peers.get(&key, 0))? {
        Some(p) => (p, false),
        None => match found(seen.get(&key, 0))? {
            Some(mut p) => {
                p.forget_decision();
                (p, true)
            }
            None => (Peer::empty(), false),
        },
    };
    if !edit(&mut p) {
        return Ok(false);
    }
    peers.insert(key, p, 0)?;
    if from_seen {
        removed(seen.remove(&key))?;
    }
    Ok(true)
}

fn remove_all<K: Pod + Sync>(map: &mut Hash<K, Peer>, keys: &[K]) -> Result<usize> {
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
        // The token bucket and the hits the slot kept stay the source's: written back even
        // when `edit` changes nothing else, or they would be lost with the slot.
        let handed = self.cache.evict(ip)?;
        let mut edited = false;
        let edit = |p: &mut Peer| {
            p.tat_ns = p.tat_ns.max(handed.tat_ns);
            p.hits = p.hits.saturating_add(handed.hits);
            edited = edit(p);
            edited || handed != Handed::default()
        };
        let m = &mut self.maps;
        match ip {
            IpAddr::V4(a) => update(&mut m.peers.v4, &mut m.seen.v4, a.octets(), edit),
            IpAddr::V6(a) => update(&mut m.peers.v6, &mut m.seen.v6, a.octets(), edit),
        }?;
        self.cache.invalidate()?;
        Ok(edited)
    }

    /// Sets `ip`'s verdict (its first contact, last report and token bucket stay).
    pub fn verdict_set(&mut self, ip: IpAddr, v: PeerVerdict) -> Result<()> {
        self.rewrite(ip, |p| {
            p.set_verdict(&v);
            true
        })
        .with_context(|| format!("writing the verdict for {ip}"))?;
        Ok(())
    }

    /// The MTA refused `ip` with its explained `drop` (that was its explanation): the
    /// datapath lets its next SYN through to be explained no sooner than `next_ns`. `false`
    /// when `ip` holds no such verdict.
    pub fn explained_until(&mut self, ip: IpAddr, next_ns: u64) -> Result<bool> {
        self.rewrite(ip, |p| {
            if !p.verdict().is_some_and(|v| v.is_explained()) {
                return false;
            }
            p.explain_at_s = filter_common::seconds_up(next_ns);
            true
        })
        .with_context(|| format!("noting the explanation of {ip}"))
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
        let peers = &mut self.maps.peers;
        let n = remove_all(&mut peers.v4, &v4)? + remove_all(&mut peers.v6, &v6)?;
        // And whatever the datapath began keeping for them meanwhile (a verdict written
        // while its SYN took the slow path): new again means new in both.
        let seen = &mut self.maps.seen;
        remove_all(&mut seen.v4, &v4)?;
        remove_all(&mut seen.v6, &v6)?;
        if n != 0 {
            self.cache.invalidate()?;
        }
        Ok(n)
    }
}
