//! The one interface the daemon talks to "the datapath" through, whichever backend refuses
//! the SYNs: the eBPF program's maps ([`DatapathMaps`], read through [`MapsReader`]) or the
//! nftables table ([`crate::nftables::backend`]). Nothing above it knows which one runs.
//!
//! - [`DatapathRead`]: what readers off the main loop use (the MTA's oracle, the balancer
//!   watch, the metrics, `list` streaming): each gets a handle of its own from
//!   [`Datapath::reader`];
//! - [`Datapath`]: the owner's side, held by the main loop alone: verdicts with expiry, list
//!   and feed entries, network verdicts, the runtime config.
//!
//! New-peer events come from the backend too, as [`super::events::PeerEvents`].

use std::net::IpAddr;

use anyhow::Result;
use filter_common::{Action, Counter, DatapathConfig, ListEntry, Peer, PeerVerdict, Reason, Table};
use ipnet::IpNet;

use super::{DatapathMaps, FeedChange, ListKind, MapsReader, NetworkVerdict, NewPeer, PrefixSet};

/// A batch of verdicts, as a walk of a million of them hands them over.
pub type Chunk = Vec<(IpAddr, PeerVerdict)>;

/// Every outcome counter, indexed by [`Counter`].
pub type Counters = [u64; Counter::COUNT as usize];

/// What the datapath holds, read (see the module documentation).
pub trait DatapathRead: Send + Sync {
    /// The runtime config as the datapath applies it.
    fn config(&self) -> Result<DatapathConfig>;
    /// Every outcome counter.
    fn counters(&self) -> Result<Counters>;
    /// What is held for one source: its verdict (with hits), and for the eBPF datapath its
    /// first contact and last report.
    fn peer(&self, ip: IpAddr) -> Result<Option<Peer>>;
    /// `ip`'s verdict (expired or not), with the SYNs it decided.
    fn verdict_get(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        Ok(self.peer(ip)?.and_then(|p| p.verdict()))
    }
    /// As [`DatapathRead::verdict_get`], where its hits are not needed (the main loop reads
    /// the verdict each write replaces): whatever is cheapest to read.
    fn verdict_without_hits(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        self.verdict_get(ip)
    }
    /// The longest live prefix of a table covering `ip` (own entries and feeds'; an expired
    /// one counts as absent, as in the datapath's walk).
    fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>>;
    /// Exactly this prefix of a list, with its hits.
    fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>>;
    /// Every verdict (expired ones included) with its hits, a chunk at a time while `each`
    /// says go on.
    fn for_each_verdict_chunk(&self, each: &mut dyn FnMut(Chunk) -> bool) -> Result<()>;
    /// As [`DatapathRead::for_each_verdict_chunk`], where hits need not be exact (counting
    /// and filtering verdicts): whatever is cheapest to read.
    fn for_each_verdict_chunk_without_pending_hits(
        &self,
        each: &mut dyn FnMut(Chunk) -> bool,
    ) -> Result<()>;
    /// How fast new sources come, against what still lets the datapath hold first contact
    /// (`None`: the backend does not count them; nftables' full sets refuse instead).
    fn new_sources(&self) -> Result<Option<NewSourceRate>> {
        Ok(None)
    }
}

/// New sources a second as the eBPF datapath counts them, and the most under which it holds
/// first contact (see `DatapathConfig::seen_new_per_tick_max`; both from its ticks of 1.07 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewSourceRate {
    pub per_s: u64,
    /// 0: nothing to bound (`first_contact = "pass"`, or no hold window).
    pub hold_bound: u64,
}

impl NewSourceRate {
    /// Whether first contact passes unheld now, new sources coming too fast (as the
    /// datapath compares them, give or take the conversion's rounding).
    pub const fn unheld(&self) -> bool {
        self.hold_bound != 0 && self.per_s > self.hold_bound
    }
}

/// The owner's side (see the module documentation).
pub trait Datapath: DatapathRead {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// A reader of its own, for a thread or task off the main loop.
    fn reader(&self) -> Result<Box<dyn DatapathRead>>;
    /// The daemon was told of these new peers. The eBPF datapath recorded their first
    /// contact itself, in their per-source entries; a backend that keeps none (nftables)
    /// keeps it here, so that [`DatapathRead::peer`] tells a source whose SYN it saw.
    fn peers_reported(&mut self, _peers: &[NewPeer]) {}
    /// Applies the runtime config and beats the heartbeat (drops stop when it stops).
    fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()>;
    /// Ends every cached decision (the eBPF decision cache; nothing for nftables).
    fn new_generation(&mut self) -> Result<()>;

    /// Sets `ip`'s verdict. A backend may hold the kernel write back until [`Datapath::flush`]
    /// (nftables: many verdicts in one transaction); what it holds reads as written.
    fn verdict_set(&mut self, ip: IpAddr, v: PeerVerdict) -> Result<()>;
    /// Writes what [`Datapath::verdict_set`] held back (the main loop calls it after each
    /// input it handled). The eBPF datapath writes at once and holds nothing.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Removes `ip`'s verdict; `false` if it had none.
    fn verdict_remove(&mut self, ip: IpAddr) -> Result<bool>;
    /// Forgets these sources altogether (their next SYN is a first contact); how many had
    /// a verdict.
    fn verdicts_remove(&mut self, ips: &[IpAddr]) -> Result<usize>;
    /// The MTA refused `ip` with its explained `drop`: its next SYN is let through to be
    /// explained no sooner than `next_ns`. `false` when `ip` holds no such verdict.
    fn explained_until(&mut self, ip: IpAddr, next_ns: u64) -> Result<bool>;

    fn list_insert(&mut self, kind: ListKind, net: IpNet, entry: ListEntry) -> Result<()>;
    /// Removes exactly this prefix; `false` if it was not there.
    fn list_remove(&mut self, kind: ListKind, net: IpNet) -> Result<bool>;
    /// The entries of one's own in a list, with their reasons.
    fn list_own(&self, kind: ListKind) -> Vec<(IpNet, Reason)>;
    /// The longest live prefix of `table` covering `ip` (an expired one counts as absent, as in
    /// the datapath's walk), and its entry.
    fn list_lookup(&self, table: Table, ip: IpAddr) -> Result<Option<(IpNet, ListEntry)>>;
    /// Every prefix in a table (own entries and feeds'), with its entry.
    fn table_entries(&self, table: Table) -> Result<Vec<(IpNet, ListEntry)>>;
    /// Entries in a table, from the owner's bookkeeping (no walk).
    fn table_len(&self, table: Table) -> u64;

    /// Makes feed `name` hold exactly `set` in `table`.
    fn feed_load(&mut self, name: &str, table: Table, set: PrefixSet) -> Result<FeedChange>;
    fn feed_drop(&mut self, name: &str) -> Result<FeedChange>;
    /// SYNs decided by the feed's entries.
    fn feed_hits(&self, name: &str) -> Result<u64>;
    /// The feeds that list exactly `net` in `table`, in load order.
    fn feeds_listing(&self, table: Table, net: IpNet) -> Vec<String>;

    fn network_verdict_set(
        &mut self,
        net: IpNet,
        action: Action,
        reason: Reason,
        expires_ns: u64,
    ) -> Result<()>;
    fn network_verdict_remove(&mut self, net: IpNet) -> Result<bool>;
    /// Every network verdict (expired ones included), with hits.
    fn network_verdicts(&self) -> Result<Vec<NetworkVerdict>>;
    /// The network verdict covering `ip` (the longest prefix), live or not.
    fn network_verdict_for(&self, ip: IpAddr) -> Result<Option<NetworkVerdict>>;
}

/// Which backend the operator asks for (`datapath.backend`, `--backend`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// eBPF when the program loads and attaches, else nftables.
    #[default]
    Auto,
    /// The eBPF program (XDP or tc) only.
    Ebpf,
    /// nftables only (no BPF: LXC and Docker containers, hosts that forbid BPF).
    Nftables,
}

/// Which backend refuses the SYNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Nftables,
}

impl Backend {
    /// The name the config, `status --json` and the metrics use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Nftables => "nftables",
        }
    }
}

impl BackendChoice {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ebpf => "ebpf",
            Self::Nftables => "nftables",
        }
    }
}

impl DatapathRead for MapsReader {
    fn config(&self) -> Result<DatapathConfig> {
        MapsReader::config(self)
    }
    fn counters(&self) -> Result<Counters> {
        MapsReader::counters(self)
    }
    fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        MapsReader::peer(self, ip)
    }
    fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>> {
        MapsReader::list_match(self, table, ip)
    }
    fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        MapsReader::list_exact(self, kind, net)
    }
    fn for_each_verdict_chunk(&self, each: &mut dyn FnMut(Chunk) -> bool) -> Result<()> {
        MapsReader::for_each_verdict_chunk(self, each)
    }
    fn for_each_verdict_chunk_without_pending_hits(
        &self,
        each: &mut dyn FnMut(Chunk) -> bool,
    ) -> Result<()> {
        MapsReader::for_each_verdict_chunk_without_pending_hits(self, each)
    }
    fn new_sources(&self) -> Result<Option<NewSourceRate>> {
        MapsReader::new_sources(self).map(Some)
    }
}

/// The owner reads through the reader it holds.
impl DatapathRead for DatapathMaps {
    fn config(&self) -> Result<DatapathConfig> {
        self.maps.config()
    }
    fn counters(&self) -> Result<Counters> {
        self.maps.counters()
    }
    fn peer(&self, ip: IpAddr) -> Result<Option<Peer>> {
        self.maps.peer(ip)
    }
    fn list_match(&self, table: Table, ip: IpAddr) -> Result<Option<ListEntry>> {
        self.maps.list_match(table, ip)
    }
    fn list_exact(&self, kind: ListKind, net: IpNet) -> Result<Option<ListEntry>> {
        self.maps.list_exact(kind, net)
    }
    fn for_each_verdict_chunk(&self, each: &mut dyn FnMut(Chunk) -> bool) -> Result<()> {
        self.maps.for_each_verdict_chunk(each)
    }
    fn for_each_verdict_chunk_without_pending_hits(
        &self,
        each: &mut dyn FnMut(Chunk) -> bool,
    ) -> Result<()> {
        self.maps.for_each_verdict_chunk_without_pending_hits(each)
    }
    fn new_sources(&self) -> Result<Option<NewSourceRate>> {
        self.maps.new_sources().map(Some)
    }
}

impl Datapath for DatapathMaps {
    fn backend(&self) -> Backend {
        Backend::Ebpf
    }
    fn reader(&self) -> Result<Box<dyn DatapathRead>> {
        Ok(Box::new(DatapathMaps::reader(self)?))
    }
    fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()> {
        DatapathMaps::set_config(self, cfg)
    }
    fn new_generation(&mut self) -> Result<()> {
        DatapathMaps::new_generation(self)
    }
    fn verdict_set(&mut self, ip: IpAddr, v: PeerVerdict) -> Result<()> {
        DatapathMaps::verdict_set(self, ip, v)
    }
    fn verdict_remove(&mut self, ip: IpAddr) -> Result<bool> {
        DatapathMaps::verdict_remove(self, ip)
    }
    fn verdicts_remove(&mut self, ips: &[IpAddr]) -> Result<usize> {
        DatapathMaps::verdicts_remove(self, ips)
    }
    fn explained_until(&mut self, ip: IpAddr, next_ns: u64) -> Result<bool> {
        DatapathMaps::explained_until(self, ip, next_ns)
    }
    fn list_insert(&mut self, kind: ListKind, net: IpNet, entry: ListEntry) -> Result<()> {
        DatapathMaps::list_insert(self, kind, net, entry)
    }
    fn list_remove(&mut self, kind: ListKind, net: IpNet) -> Result<bool> {
        DatapathMaps::list_remove(self, kind, net)
    }
    fn list_own(&self, kind: ListKind) -> Vec<(IpNet, Reason)> {
        DatapathMaps::list_own(self, kind)
    }
    fn list_lookup(&self, table: Table, ip: IpAddr) -> Result<Option<(IpNet, ListEntry)>> {
        self.maps.list_lookup(table, ip)
    }
    fn table_entries(&self, table: Table) -> Result<Vec<(IpNet, ListEntry)>> {
        Ok(self
            .maps
            .table_entries(table)?
            .into_iter()
            .map(|(net, e, _)| (net, e))
            .collect())
    }
    fn table_len(&self, table: Table) -> u64 {
        DatapathMaps::table_len(self, table)
    }
    fn feed_load(&mut self, name: &str, table: Table, set: PrefixSet) -> Result<FeedChange> {
        DatapathMaps::feed_load(self, name, table, set)
    }
    fn feed_drop(&mut self, name: &str) -> Result<FeedChange> {
        DatapathMaps::feed_drop(self, name)
    }
    fn feed_hits(&self, name: &str) -> Result<u64> {
        DatapathMaps::feed_hits(self, name)
    }
    fn feeds_listing(&self, table: Table, net: IpNet) -> Vec<String> {
        DatapathMaps::feeds_listing(self, table, net)
    }
    fn network_verdict_set(
        &mut self,
        net: IpNet,
        action: Action,
        reason: Reason,
        expires_ns: u64,
    ) -> Result<()> {
        DatapathMaps::network_verdict_set(self, net, action, reason, expires_ns)
    }
    fn network_verdict_remove(&mut self, net: IpNet) -> Result<bool> {
        DatapathMaps::network_verdict_remove(self, net)
    }
    fn network_verdicts(&self) -> Result<Vec<NetworkVerdict>> {
        DatapathMaps::network_verdicts(self)
    }
    fn network_verdict_for(&self, ip: IpAddr) -> Result<Option<NetworkVerdict>> {
        DatapathMaps::network_verdict_for(self, ip)
    }
}
