//! The nftables table as [`crate::datapath::backend`]'s datapath: the handle is shared (a
//! mutex the main loop takes for its writes, readers off the loop for their reads), since its
//! state is in memory, not in kernel maps a reader could open for itself.
//!
//! What the table does not keep, the handle keeps for the readers: a source's first contact
//! and last report are in the kernel's dynamic sets, so [`DatapathRead::peer`] answers from
//! the reported sources the handle remembers (`reported.rs`) and the verdicts. Hits cost a
//! netlink dump each read, so the questions the MTA asks read none; `list`, `check`, `stats`
//! and the balancer watch read them.

use std::{
    net::IpAddr,
    os::fd::OwnedFd,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::{Context as _, Result};
use filter_common::{
    Action, DatapathConfig, ListEntry, Peer, PeerVerdict, Reason, Table, seconds_up,
};
use ipnet::IpNet;

use super::{Nftables, counters};
use crate::datapath::{
    FeedChange, ListKind, NetworkVerdict, NewPeer, PrefixSet,
    backend::{Backend, Chunk, Counters, Datapath, DatapathRead},
};

/// The owner's handle (the main loop's).
pub struct NftDatapath {
    shared: Arc<Mutex<Nftables>>,
}

/// A reader's handle.
pub struct NftReader {
    shared: Arc<Mutex<Nftables>>,
    /// For the counters, read over netlink without holding the handle.
    netns: OwnedFd,
    table: String,
    outcomes: counters::Outcomes,
}

impl NftDatapath {
    pub fn new(nft: Nftables) -> Self {
        Self {
            shared: Arc::new(Mutex::new(nft)),
        }
    }

    /// Another owner's handle on the same table: the daemon's program keeps one to attach
    /// and, at exit, to remove the table (readers may still hold theirs then).
    pub fn share(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Deletes the table: nothing of mxscreen's is left in netfilter.
    pub fn remove_table(&self) -> Result<()> {
        self.nft().delete_table()
    }

    fn nft(&self) -> MutexGuard<'_, Nftables> {
        lock(&self.shared)
    }

    /// Screens these interfaces' ingress (none: detached).
    pub fn attach(&mut self, devices: &[String]) -> Result<()> {
        self.nft().attach(devices)
    }

    /// How often the table was written again after someone else deleted it, and when last.
    pub fn rebuilt(&self) -> (u32, std::time::SystemTime) {
        self.nft().rebuilt()
    }

    /// Hooks the rules to the interfaces again (one was deleted and made again).
    pub fn rehook(&mut self) -> Result<()> {
        self.nft().rehook()
    }
}

/// A poisoned lock only means a reader panicked mid-read: the handle is still whole.
fn lock(m: &Mutex<Nftables>) -> MutexGuard<'_, Nftables> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The verdicts, one chunk, with the hits `hits` gives.
fn verdicts_chunk(nft: &Nftables, hits: bool) -> Result<Chunk> {
    let counts = if hits {
        nft.verdict_hit_counts()?
    } else {
        Default::default()
    };
    Ok(nft
        .verdicts()
        .into_iter()
        .map(|(ip, mut v)| {
            v.hits = counts.get(&ip).copied().unwrap_or(0);
            (ip, v)
        })
        .collect())
}

impl DatapathRead for NftReader {
    fn config(&self) -> Result<DatapathConfig> {
        Ok(lock(&self.shared).config())
    }
    fn counters(&self) -> Result<Counters> {
        self.outcomes.read(&self.netns, &self.table)
    }
    fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        Ok(lock(&self.shared).peer(ip))
    }
    fn verdict_get(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        lock(&self.shared).verdict_get(ip)
    }
    fn verdict_without_hits(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        Ok(lock(&self.shared).verdict_held(ip))
    }
    fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>> {
        Ok(lock(&self.shared)
            .list_lookup_unhit(table, ip)
            .map(|(_, e)| e))
    }
    fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        lock(&self.shared).list_exact(kind, net)
    }
    fn for_each_verdict_chunk(&self, each: &mut dyn FnMut(Chunk) -> bool) -> Result<()> {
        let chunk = verdicts_chunk(&lock(&self.shared), true)?;
        each(chunk);
        Ok(())
    }
    fn for_each_verdict_chunk_without_pending_hits(
        &self,
        each: &mut dyn FnMut(Chunk) -> bool,
    ) -> Result<()> {
        let chunk = verdicts_chunk(&lock(&self.shared), false)?;
        each(chunk);
        Ok(())
    }
}

impl DatapathRead for NftDatapath {
    fn config(&self) -> Result<DatapathConfig> {
        Ok(self.nft().config())
    }
    fn counters(&self) -> Result<Counters> {
        self.nft().counters()
    }
    fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        Ok(self.nft().peer(ip))
    }
    /// With its hits: a netlink round trip (`check`).
    fn verdict_get(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        self.nft().verdict_get(ip)
    }
    /// The verdict as held, no netlink read: the main loop reads the verdict it replaces on
    /// every write.
    fn verdict_without_hits(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        Ok(self.nft().verdict_held(ip))
    }
    fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>> {
        self.nft().list_match(table, ip)
    }
    fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        self.nft().list_exact(kind, net)
    }
    fn for_each_verdict_chunk(&self, each: &mut dyn FnMut(Chunk) -> bool) -> Result<()> {
        let chunk = verdicts_chunk(&self.nft(), true)?;
        each(chunk);
        Ok(())
    }
    fn for_each_verdict_chunk_without_pending_hits(
        &self,
        each: &mut dyn FnMut(Chunk) -> bool,
    ) -> Result<()> {
        let chunk = verdicts_chunk(&self.nft(), false)?;
        each(chunk);
        Ok(())
    }
}

impl Datapath for NftDatapath {
    fn backend(&self) -> Backend {
        Backend::Nftables
    }
    fn reader(&self) -> Result<Box<dyn DatapathRead>> {
        let nft = self.nft();
        Ok(Box::new(NftReader {
            shared: Arc::clone(&self.shared),
            netns: nft
                .netns
                .try_clone()
                .context("duplicating the network namespace descriptor")?,
            table: nft.shape.table.clone(),
            outcomes: nft.outcomes.clone(),
        }))
    }
    fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()> {
        self.nft().set_config(cfg)
    }
    fn new_generation(&mut self) -> Result<()> {
        // Nothing is cached apart from what the rules look up.
        Ok(())
    }
    fn peers_reported(&mut self, peers: &[NewPeer]) {
        self.nft().peers_reported(peers);
    }
    /// Held back until [`Datapath::flush`]: a transaction's commit costs in proportion to the
    /// table (the kernel's loop check, `Nftables::verdict_set_later`), so the verdicts of a
    /// burst go in one.
    fn verdict_set(&mut self, ip: IpAddr, v: PeerVerdict) -> Result<()> {
        self.nft().verdict_set_later(ip, v)
    }
    fn flush(&mut self) -> Result<()> {
        self.nft().flush_later()
    }
    fn verdict_remove(&mut self, ip: IpAddr) -> Result<bool> {
        self.nft().verdict_remove(ip)
    }
    fn verdicts_remove(&mut self, ips: &[IpAddr]) -> Result<usize> {
        self.nft().verdicts_remove(ips)
    }
    fn explained_until(&mut self, ip: IpAddr, next_ns: u64) -> Result<bool> {
        self.nft().explained_until(ip, next_ns)
    }
    fn list_insert(&mut self, kind: ListKind, net: IpNet, entry: ListEntry) -> Result<()> {
        self.nft().list_insert(kind, net, entry)
    }
    fn list_remove(&mut self, kind: ListKind, net: IpNet) -> Result<bool> {
        self.nft().list_remove(kind, net)
    }
    fn list_own(&self, kind: ListKind) -> Vec<(IpNet, Reason)> {
        self.nft().list_own(kind)
    }
    fn list_lookup(&self, table: Table, ip: IpAddr) -> Result<Option<(IpNet, ListEntry)>> {
        self.nft().list_lookup(table, ip)
    }
    fn table_entries(&self, table: Table) -> Result<Vec<(IpNet, ListEntry)>> {
        self.nft().table_entries(table)
    }
    fn table_len(&self, table: Table) -> u64 {
        self.nft().table_len(table)
    }
    fn feed_load(&mut self, name: &str, table: Table, set: PrefixSet) -> Result<FeedChange> {
        self.nft().feed_load(name, table, set)
    }
    fn feed_drop(&mut self, name: &str) -> Result<FeedChange> {
        self.nft().feed_drop(name)
    }
    fn feed_hits(&self, name: &str) -> Result<u64> {
        self.nft().feed_hits(name)
    }
    fn feeds_listing(&self, table: Table, net: IpNet) -> Vec<String> {
        self.nft().feeds_listing(table, net)
    }
    fn network_verdict_set(
        &mut self,
        net: IpNet,
        action: Action,
        reason: Reason,
        expires_ns: u64,
    ) -> Result<()> {
        self.nft()
            .network_verdict_set(net, action, reason, expires_ns)
    }
    fn network_verdict_remove(&mut self, net: IpNet) -> Result<bool> {
        self.nft().network_verdict_remove(net)
    }
    fn network_verdicts(&self) -> Result<Vec<NetworkVerdict>> {
        self.nft().network_verdicts()
    }
    fn network_verdict_for(&self, ip: IpAddr) -> Result<Option<NetworkVerdict>> {
        let nft = self.nft();
        let Some((net, _)) = nft.list_lookup_unhit(Table::PrefixVerdict, ip) else {
            return Ok(None);
        };
        Ok(nft.network_verdicts()?.into_iter().find(|v| v.net == net))
    }
}

/// When the explained set should let `ip` through again: `next_ns` as a timeout from now
/// (whole seconds up, as the eBPF datapath keeps it).
pub(super) fn explain_timeout_ms(next_ns: u64) -> Option<u64> {
    let at = u64::from(seconds_up(next_ns)) * 1_000_000_000;
    crate::datapath::clock::remaining(at).map(|d| (d.as_millis() as u64).max(1))
}
