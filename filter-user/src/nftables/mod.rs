//! The nftables backend: what the eBPF datapath does, done by an nftables table of its own
//! (`netdev mxscreen`) on the screened interfaces' ingress hook, for hosts where a BPF
//! program cannot be loaded (LXC and Docker containers, OpenVZ, BPF forbidden by policy)
//! but netfilter can (CAP_NET_ADMIN in the MTA's network namespace).
//!
//! - [`ruleset`]: the rules, chains, counters and set declarations (an `nft` script), applied
//!   by [`nft`]; [`unknown`] the rules of a source nothing decides (reports, their budget,
//!   hold);
//! - [`sets`]: which set an entry goes into, and its key;
//! - [`decide`]: the decision maps, one lookup for every source an exact element decides,
//!   the precedence resolved here;
//! - [`netlink`]: element writes as nf_tables transactions over netlink;
//! - [`lists`]: own entries and feeds as elements; this file's siblings [`verdicts`] and
//!   [`entries`] hold the handle's methods for verdicts and for lists, feeds and network
//!   verdicts;
//! - [`counters`]: the named outcome counters and per-element hits;
//! - [`events`]: new peers reported over NFLOG;
//! - [`tables`]: reads of the list tables by table (longest match, exact prefix, all);
//! - [`reported`]: the reported sources still without a verdict;
//! - [`rebuild`]: the table written again after something else deleted it (`nft flush
//!   ruleset`);
//! - [`saved`]: the verdicts a clean exit saves, for the next start to take back;
//! - [`backend`]: the handle as the daemon's datapath (`crate::datapath::backend`).
//!
//! Why the netdev family's ingress hook and not prerouting: it is the earliest hook nftables
//! has (before the IP stack, defragmentation and conntrack, where XDP and tc sit for the eBPF
//! datapath), so a refused SYN costs the least and never creates a conntrack entry; and it is
//! per interface, so only the screened interfaces are touched, as with eBPF.
//!
//! Fail-open: the rules drop nothing unless the set `alive` holds its one element, which the
//! daemon rewrites every second with a 5 s timeout ([`Nftables::set_config`], called by the
//! heartbeat): within 5 s of a `kill -9` or a hang every SYN passes (`passed_stale`). A clean
//! exit (or dropping the handle) deletes the table, its verdicts saved first ([`saved`]). A
//! table deleted by someone else is written again at the next heartbeat ([`rebuild`]).

pub mod backend;
pub mod counters;
mod decide;
mod entries;
pub mod events;
pub mod lists;
pub mod netlink;
mod netns;
mod nft;
mod rebuild;
mod reported;
pub mod ruleset;
mod saved;
pub mod sets;
mod tables;
mod undo;
mod unknown;
mod verdicts;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    os::fd::OwnedFd,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use filter_common::{Counter, DatapathConfig, FLAG_EXPLAIN, FLAG_HOLD, FLAG_OBSERVE, PeerVerdict};

use self::{
    events::NfLog,
    lists::Lists,
    netlink::{Elem, Netlink, Op, Tally},
    ruleset::Shape,
    sets::{ALIVE, ALIVE_KEY},
};
use crate::datapath::MapSizes;

/// The table's name, in the netdev family.
pub const TABLE: &str = "mxscreen";
/// The NFLOG group new peers are reported on.
pub const LOG_GROUP: u16 = 2525;

/// How the backend is set up.
#[derive(Clone, Debug)]
pub struct Options {
    pub table: String,
    pub sizes: MapSizes,
    pub log_group: u16,
    /// The state file (`state.file`): a clean exit saves the verdicts beside it, for the next
    /// start to take back ([`saved`]). None: they go with the table.
    pub state_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            table: TABLE.to_owned(),
            sizes: MapSizes::default(),
            log_group: LOG_GROUP,
            state_file: None,
        }
    }
}

/// The handle on the table: owns it, and deletes it when dropped.
pub struct Nftables {
    netns: OwnedFd,
    nl: Netlink,
    shape: Shape,
    /// What the kernel's rules were last made from.
    applied: Option<Shape>,
    lists: Lists,
    verdicts: HashMap<IpAddr, PeerVerdict>,
    /// How many of `verdicts` each family's verdict map holds (IPv4, IPv6): a map is full at
    /// `shape.verdicts` ([`verdicts`]' eviction).
    verdict_count: [usize; 2],
    /// What each decision map element holds (see [`decide`]).
    decided: HashMap<IpAddr, decide::Decision>,
    /// The sources in the exact set (see [`sets::exact_set`]), with the expiry of their
    /// element there (0: never).
    walked: HashMap<IpAddr, u64>,
    /// The verdicts whose element has no hit counter, because their decision element
    /// counted for them when they were written; `decide` gives one back a counter when the
    /// source loses that element.
    uncounted: HashSet<IpAddr>,
    /// What decision elements counted for a live verdict or own entry before a rewrite
    /// destroyed them (a covering prefix arrived, a new token bucket, a new verdict under a
    /// deny entry): part of those hits.
    carried: HashMap<(IpAddr, decide::Counted), u64>,
    /// The runtime config last applied (what the eBPF datapath keeps in its config map).
    config: DatapathConfig,
    /// Whether the kernel knows `NFT_MSG_DESTROYSETELEM` (Linux 6.3+).
    destroy: bool,
    /// How often the table was written again after someone else deleted it, and when last:
    /// `status` warns of it.
    rebuilt: (u32, SystemTime),
    /// The named counters as the last heartbeat read them: what a table written again
    /// starts its counters from ([`rebuild`]).
    tallies: HashMap<String, Tally>,
    /// The outcome counters as read, never lower than before (shared with the readers).
    outcomes: counters::Outcomes,
    /// Reported sources without a verdict yet ([`reported`]).
    reported: reported::Reported,
    /// Where a clean exit saves the verdicts ([`saved`]).
    saved: Option<PathBuf>,
    /// Verdicts in the bookkeeping whose kernel writes are held back
    /// ([`Nftables::verdict_set_later`]).
    later: Vec<Vec<Op>>,
}

impl Nftables {
    /// Creates the table in the calling thread's network namespace, with no interface
    /// screened yet and a config that screens no port. A table left by a daemon that did not
    /// exit cleanly is replaced; the verdicts it held are kept (as pinned maps keep them for
    /// the eBPF datapath); else those a clean exit saved are taken back ([`saved`]). Also
    /// binds the NFLOG group of new-peer reports.
    pub fn open(opts: &Options) -> Result<(Self, NfLog)> {
        let netns = netns::current()?;
        let outcomes = counters::Outcomes::default();
        let nflog = NfLog::bind(opts.log_group, outcomes.socket_lost())?;
        let mut nl = Netlink::open(&opts.table)?;
        let adopted = saved::adopt(&mut nl)?;
        let seeds = adopt_outcomes(&mut nl)?;
        let left = !adopted.is_empty() || table_exists(&netns, &opts.table);
        if left {
            ruleset::apply(&netns, &format!("delete table netdev {}\n", opts.table))
                .context("removing the table a previous run left")?;
        }
        let saved_path = opts.state_file.as_deref().map(saved::path_for);
        // Read (and spent) either way: a table left behind is fresher.
        let saved = saved_path.as_deref().map_or_else(Vec::new, |p| {
            saved::take(p).unwrap_or_else(|e| {
                tracing::warn!(error = %format!("{e:#}"), "the verdicts saved at the last exit are lost: their sources are evaluated again");
                Vec::new()
            })
        });
        let shape = Shape {
            table: opts.table.clone(),
            devices: Vec::new(),
            ports: Vec::new(),
            observe: false,
            hold: None,
            dedup: Duration::from_secs(30),
            events_per_s: 0,
            explain: None,
            limit_per_minute: 60,
            limit_burst: 1,
            log_group: opts.log_group,
            verdicts: opts.sizes.peers,
            lists: opts.sizes.lists(),
            lengths: BTreeMap::new(),
            feeds: BTreeMap::new(),
            sized: BTreeSet::new(),
        };
        let mut me = Self {
            netns,
            nl,
            shape,
            applied: None,
            lists: Lists::default(),
            verdicts: HashMap::new(),
            verdict_count: [0; 2],
            decided: HashMap::new(),
            walked: HashMap::new(),
            uncounted: HashSet::new(),
            carried: HashMap::new(),
            // SAFETY: plain integers (an `aya::Pod`): all zero is what an eBPF datapath's
            // config map holds before its first write, and screens no port.
            config: unsafe { std::mem::zeroed() },
            destroy: true,
            rebuilt: (0, SystemTime::UNIX_EPOCH),
            tallies: HashMap::new(),
            outcomes,
            reported: reported::Reported::new(opts.sizes.peers),
            saved: saved_path,
            later: Vec::new(),
        };
        me.sync_rules_seeded(&seeds)?;
        me.verdicts_restore(adopted)?;
        if !left {
            me.take_back_saved(saved);
        }
        Ok((me, nflog))
    }

    /// Screens these interfaces' ingress (replacing the ones screened before; none: detached).
    pub fn attach(&mut self, devices: &[String]) -> Result<()> {
        self.shape.devices = devices.to_vec();
        self.sync_rules()
            .with_context(|| format!("screening {} with nftables", devices.join(", ")))
    }

    /// Hooks the rules to the screened interfaces again, after one was deleted and made
    /// again: older kernels (6.18 does not) drop a deleted device's hook, or delete the base
    /// chain with its last device. The base chain, whatever is left of it, is made again.
    pub fn rehook(&mut self) -> Result<()> {
        // Gone with someone's `nft flush ruleset` as well: the next heartbeat writes all of it
        // again, elements included (the script below would make only an empty table).
        anyhow::ensure!(
            table_exists(&self.netns, &self.shape.table),
            "the nftables table is gone: the next heartbeat writes it again"
        );
        let t = &self.shape.table;
        // Fails when the kernel deleted the chain already: then there is nothing to remove.
        let _ = ruleset::apply(
            &self.netns,
            &format!(
                "flush chain netdev {t} ingress
delete chain netdev {t} ingress
"
            ),
        );
        if let Some(a) = &mut self.applied {
            a.devices.clear();
        }
        self.sync_rules()
            .with_context(|| format!("hooking {} again", self.shape.devices.join(", ")))
    }

    /// Applies the runtime config (what the eBPF datapath reads from its config map) and
    /// beats the heartbeat: with `stale_after_ns` set, drops stop that long after the last
    /// call unless another comes.
    pub fn set_config(&mut self, cfg: &DatapathConfig) -> Result<()> {
        self.config = *cfg;
        let interval = cfg.limit_interval_ns.max(1);
        self.shape.ports = cfg.ports[..cfg.port_count as usize].to_vec();
        self.shape.observe = cfg.flags & FLAG_OBSERVE != 0;
        self.shape.hold = (cfg.flags & FLAG_HOLD != 0 && cfg.hold_window_ns != 0)
            .then(|| Duration::from_nanos(cfg.hold_window_ns));
        self.shape.dedup = Duration::from_nanos(cfg.dedup_window_ns.max(1_000_000));
        self.shape.events_per_s = cfg.events_per_s;
        // Explained only while an MTA asks (the daemon's FLAG_EXPLAIN), as in the eBPF
        // datapath: without it the explain chain drops like the drop chain.
        self.shape.explain = (cfg.explain_window_ns != 0 && cfg.flags & FLAG_EXPLAIN != 0)
            .then(|| Duration::from_nanos(cfg.explain_window_ns));
        let limit = (self.shape.limit_per_minute, self.shape.limit_burst);
        self.shape.limit_per_minute = (60_000_000_000 / interval).max(1);
        self.shape.limit_burst = cfg.limit_tolerance_ns / interval + 1;
        let limit_changed = limit != (self.shape.limit_per_minute, self.shape.limit_burst);
        // Any of these fails if someone deleted the table since the last beat: the rules'
        // script (it does not make the table again, `ruleset::script`), the limit elements'
        // rewrite, the heartbeat. Then the whole table is written again, in the new shape.
        let written = self
            .sync_rules()
            .and_then(|()| {
                if !limit_changed {
                    return Ok(());
                }
                let ops = self.limits_changed();
                self.write(ops)
                    .context("rewriting the limit verdicts' token buckets")
            })
            .and_then(|()| self.beat(cfg));
        if let Err(e) = written {
            if table_exists(&self.netns, &self.shape.table) {
                // The kernel refused the new rules (or a write): it still holds the last
                // ones it took, whole (a script is one transaction). They go on screening:
                // a refused config must never fail open the way a dead daemon does.
                let beat = self
                    .beat(cfg)
                    .err()
                    .map_or(String::new(), |b| format!("; {b:#}"));
                return Err(e.context(format!("applying the config to the nftables table (the rules it holds stay in force){beat}")));
            }
            tracing::warn!(
                table = %self.shape.table,
                "the nftables table was deleted by someone else (`nft flush ruleset`, a firewall reload?): writing it again"
            );
            self.rebuilt = (self.rebuilt.0 + 1, SystemTime::now());
            self.rebuild()
                .context("writing the deleted nftables table again")?;
            self.beat(cfg)?;
        }
        // One dump of the table's few counter objects, whatever its sets hold. Failing, a
        // rebuild starts from an older reading: nothing to fail the heartbeat for.
        match self.nl.named_counters() {
            Ok(named) => self.tallies = named.into_iter().collect(),
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "reading the named counters"),
        }
        Ok(())
    }

    /// How often the table was written again after someone else deleted it, and when last.
    pub fn rebuilt(&self) -> (u32, SystemTime) {
        self.rebuilt
    }

    /// Refreshes the liveness element (see the module's comment on fail-open).
    fn beat(&mut self, cfg: &DatapathConfig) -> Result<()> {
        let mut alive = Elem::key(vec![ALIVE_KEY]);
        if cfg.stale_after_ns != 0 {
            alive.timeout_ms = Some((cfg.stale_after_ns / 1_000_000).max(1));
        }
        self.nl
            .apply(&[Op::Flush(ALIVE.into()), Op::Add(ALIVE.into(), vec![alive])])
            .context("writing the heartbeat")
    }

    /// The runtime config last applied.
    pub fn config(&self) -> DatapathConfig {
        self.config
    }

    /// Rewrites the rules if what they are made from changed.
    fn sync_rules(&mut self) -> Result<()> {
        self.sync_rules_seeded(&HashMap::new())
    }

    /// [`Nftables::sync_rules`], the named counters it creates starting from `seeds` (a
    /// rebuild's last reading, a crashed run's outcome counters).
    fn sync_rules_seeded(&mut self, seeds: &HashMap<String, Tally>) -> Result<()> {
        self.shape.lengths = self.lists.lengths();
        self.shape.feeds = self.lists.feed_kinds();
        self.apply_shape(seeds)
    }

    /// Takes the rules from what they were last made from to [`Nftables::shape`], if that
    /// changed; named counters created on the way start from `seeds`.
    fn apply_shape(&mut self, seeds: &HashMap<String, Tally>) -> Result<()> {
        self.shape.sized = ruleset::sized_maps(
            self.applied.as_ref(),
            &self.shape.lengths,
            &self.lists.count,
        );
        if self.applied.as_ref() == Some(&self.shape) {
            return Ok(());
        }
        let script = ruleset::script(self.applied.as_ref(), &self.shape, seeds);
        ruleset::apply(&self.netns, &script)?;
        self.applied = Some(self.shape.clone());
        Ok(())
    }

    /// Applies element writes, after the verdicts held back (in a transaction of their own,
    /// so that one failing does not take the other with it: theirs is logged, as the main
    /// loop's flush would).
    fn write(&mut self, ops: Vec<Op>) -> Result<()> {
        if let Err(e) = self.flush_later() {
            tracing::warn!(error = %format!("{e:#}"), "writing verdicts to the nftables table failed");
        }
        self.write_now(ops)
    }

    /// Applies element writes; on a kernel without `DESTROYSETELEM` (before 6.3) deletes
    /// element by element, ignoring the missing ones, then applies the rest.
    fn write_now(&mut self, ops: Vec<Op>) -> Result<()> {
        if self.destroy {
            match self.nl.apply(&ops) {
                Err(e) if unsupported(&e) && ops.iter().any(|o| matches!(o, Op::Destroy(..))) => {
                    self.destroy = false;
                }
                r => return r,
            }
        }
        let mut rest = Vec::new();
        for op in ops {
            match op {
                Op::Destroy(set, elems) => {
                    for e in elems {
                        match self.nl.apply(&[Op::Delete(set.clone(), vec![e])]) {
                            Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                            r => r?,
                        }
                    }
                }
                other => rest.push(other),
            }
        }
        self.nl.apply(&rest)
    }

    /// Every outcome counter, indexed by [`Counter`] (named as the eBPF datapath's).
    pub fn counters(&self) -> Result<[u64; Counter::COUNT as usize]> {
        self.outcomes.read(&self.netns, &self.shape.table)
    }

    /// Deletes the table: nothing of mxscreen's is left in netfilter.
    pub fn remove(mut self) -> Result<()> {
        self.delete_table()
    }

    /// Deletes the table, the verdicts saved first ([`saved`]).
    pub(super) fn delete_table(&mut self) -> Result<()> {
        if self.applied.is_none() {
            return Ok(());
        }
        self.save_verdicts();
        self.applied = None;
        ruleset::apply(
            &self.netns,
            &format!("delete table netdev {}\n", self.shape.table),
        )
    }
}

impl Drop for Nftables {
    fn drop(&mut self) {
        if let Err(e) = self.delete_table() {
            tracing::warn!(error = %format!("{e:#}"), "could not delete the nftables table");
        }
    }
}

fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

fn unsupported(e: &anyhow::Error) -> bool {
    matches!(errno(e), Some(libc::EOPNOTSUPP | libc::EINVAL))
}

/// Whether the netdev table `table` exists: `nft list tables` names them, where `list table`
/// would print every element of every set first (a million-prefix feed's too).
fn table_exists(netns: &OwnedFd, table: &str) -> bool {
    let line = format!("table netdev {table}");
    ruleset::query(netns, &["list", "tables", "netdev"])
        .is_ok_and(|out| out.lines().any(|l| l.trim() == line))
}

/// What [`remove_left_behind`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeftBehind {
    /// No table of that name.
    Nothing,
    /// A table whose liveness element had expired (a crashed run's): deleted.
    Removed,
    /// A table whose liveness element is fresh: another daemon's, left alone.
    Live,
}

/// Deletes the table a crashed run left in the calling thread's network namespace, once its
/// liveness element has expired: it passes every SYN then, but holds its verdicts and feeds
/// in kernel memory (a million-prefix feed: ~67 MiB) until a start of this backend replaces
/// it. Called when the eBPF datapath screens instead. Needs `nft` only to delete.
pub fn remove_left_behind(table: &str) -> Result<LeftBehind> {
    // Asking would load the modules (nfnetlink, nf_tables) on a host that has not.
    if nf_tables_not_loaded() {
        return Ok(LeftBehind::Nothing);
    }
    let mut nl = Netlink::open(table)?;
    match nl.dump(ALIVE) {
        Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(LeftBehind::Nothing),
        Err(e) => return Err(e).context("reading the liveness of the nftables table left"),
        Ok(alive) if !alive.is_empty() => return Ok(LeftBehind::Live),
        Ok(_) => {}
    }
    ruleset::apply(
        &netns::current()?,
        &format!("delete table netdev {table}\n"),
    )
    .context("removing the nftables table a previous run left")?;
    Ok(LeftBehind::Removed)
}

/// Whether nf_tables is a module that is not loaded (then no table exists). Built into the
/// kernel it has no `/sys/module` entry: `modules.builtin` tells; when neither can be read,
/// it is taken as loaded.
fn nf_tables_not_loaded() -> bool {
    if std::path::Path::new("/sys/module/nf_tables").exists() {
        return false;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    std::fs::read_to_string(format!("/lib/modules/{}/modules.builtin", release.trim()))
        .is_ok_and(|b| !b.lines().any(|l| l.ends_with("/nf_tables.ko")))
}

/// The outcome counters of a table a previous run left, which the new table's start from (as
/// the eBPF datapath's pinned counters go on). Not its feeds' counters: the new run numbers
/// its feeds afresh.
fn adopt_outcomes(nl: &mut Netlink) -> Result<HashMap<String, Tally>> {
    let named = match nl.named_counters() {
        Ok(n) => n,
        Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(HashMap::new()),
        Err(e) => return Err(e).context("reading the outcome counters of the table left"),
    };
    Ok(named
        .into_iter()
        .filter(|(name, _)| Counter::ALL.iter().any(|c| c.name() == name))
        .collect())
}
