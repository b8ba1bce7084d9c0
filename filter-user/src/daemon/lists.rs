//! The list owner: the entries this daemon writes into the allow and deny lists — the
//! config's (`lists.allow`, `lists.deny`), the host's protected addresses, and the manual
//! entries of the state file, local or shared by the fleet — kept equal in the maps and the
//! file. Every change is all or nothing: the map first (a full map fails there, before
//! anything else changed), then the state file; if that write fails the map is put back as
//! the config and the unchanged state call for, so file, memory and map still agree.

use anyhow::{Result, bail};
use filter_common::{ListEntry, Reason, Table};
use ipnet::IpNet;

use super::protect::{self, Protected};
use crate::{
    config::Config,
    datapath::{Datapath, ListKind, clock::boot_expiry},
    fleet::wire::SharedManual,
    state::{ManualEntry, State, unix_now},
};

pub struct ListOwner {
    state: State,
    /// What can never be dropped (see [`protect`]), as of the last [`ListOwner::reconcile`].
    protected: Vec<Protected>,
}

impl ListOwner {
    /// Owns the state file's entries; nothing is written until [`ListOwner::reconcile`].
    pub fn new(state: State) -> Self {
        Self {
            state,
            protected: Vec::new(),
        }
    }

    /// The manual entries, as the state file holds them.
    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn protected(&self) -> &[Protected] {
        &self.protected
    }

    /// Makes the lists match config + state exactly: entries this daemon owns (manual and
    /// config) that are no longer wanted are removed, wanted ones (re)inserted. Called at
    /// start (pinned lists may hold an older truth) and on reload.
    pub fn reconcile(&mut self, maps: &mut dyn Datapath, cfg: &Config) -> Result<()> {
        self.protected = protect::protected_set(&cfg.lists.allow_list());
        let want = self.wanted(cfg);
        for kind in [ListKind::Allow, ListKind::Deny] {
            for (net, reason) in maps.list_own(kind) {
                let ours = matches!(reason, Reason::Manual | Reason::Config);
                if ours && !want.iter().any(|(k, n, _)| *k == kind && *n == net) {
                    maps.list_remove(kind, net)?;
                }
            }
        }
        for (kind, net, entry) in want {
            maps.list_insert(kind, net, entry)?;
        }
        Ok(())
    }

    /// Every list entry the config, the host and the state file call for, in the order they
    /// are written (a manual entry replaces a config entry for the same prefix).
    fn wanted(&self, cfg: &Config) -> Vec<(ListKind, IpNet, ListEntry)> {
        let mut want: Vec<(ListKind, IpNet, ListEntry)> = Vec::new();
        for p in &self.protected {
            want.push((ListKind::Allow, p.net, ListEntry::new(Reason::Config, 0)));
        }
        for net in &cfg.lists.deny {
            want.push((
                ListKind::Deny,
                net.trunc(),
                ListEntry::new(Reason::Config, 0),
            ));
        }
        for e in self.state.entries() {
            let entry = ListEntry::new(Reason::Manual, boot_expiry(e.expires));
            want.push((e.list, e.net.trunc(), entry));
        }
        want
    }

    /// Adds (or replaces) a manual entry: map, then file (see the module documentation).
    pub fn add(
        &mut self,
        maps: &mut dyn Datapath,
        cfg: &Config,
        entry: &ManualEntry,
    ) -> Result<()> {
        let (list, net) = (entry.list, entry.net);
        let listed = ListEntry::new(Reason::Manual, boot_expiry(entry.expires));
        maps.list_insert(list, net, listed)?;
        if let Err(e) = self.state.upsert(entry.clone()) {
            Self::undo(maps, &self.wanted(cfg), list, net);
            return Err(e.context("nothing changed"));
        }
        Ok(())
    }

    /// Removes a manual entry: map, then file. An error says why when `net` is not listed
    /// by hand (the config lists it, or a wider manual prefix covers it).
    pub fn remove(
        &mut self,
        maps: &mut dyn Datapath,
        cfg: &Config,
        list: ListKind,
        net: IpNet,
    ) -> Result<Option<ManualEntry>> {
        if self.state.get(list, net).is_none() {
            return Err(self.not_by_hand(maps, cfg, list, net)?);
        }
        maps.list_remove(list, net)?;
        match self.state.remove(list, net) {
            Ok(gone) => Ok(gone),
            Err(e) => {
                Self::undo(maps, &self.wanted(cfg), list, net);
                Err(e.context("nothing changed"))
            }
        }
    }

    /// Why `net` cannot be removed from `list` by hand.
    fn not_by_hand(
        &self,
        maps: &dyn Datapath,
        cfg: &Config,
        list: ListKind,
        net: IpNet,
    ) -> Result<anyhow::Error> {
        let (verb, cmd) = match list {
            ListKind::Deny => ("blocked", "unblock"),
            ListKind::Allow => ("allowed", "unallow"),
        };
        let by_config = match list {
            ListKind::Deny => cfg.lists.deny.iter().any(|n| n.trunc() == net),
            ListKind::Allow => self.protected.iter().any(|p| p.net == net),
        };
        if by_config {
            return Ok(anyhow::anyhow!(
                "{net} is {verb} by the config (or is the host's own address), not by hand: change the config and reload (SIGHUP)"
            ));
        }
        // What does list it, if anything: the entry whose prefix covers it, by its source.
        let hint = match covering(maps, list.into(), net)? {
            Some((covering, e)) => match e.reason() {
                Reason::Feed => match list {
                    ListKind::Deny => " (a feed lists it: take it out of the feed's file, or `mxscreen allow` it to let it through)".to_owned(),
                    ListKind::Allow => " (an allow feed lists it: take it out of the feed's file)".to_owned(),
                },
                Reason::Config => format!(
                    " (it is covered by {covering} in the config: change the config and reload)"
                ),
                _ => format!(" (it is covered by {covering}; `mxscreen {cmd}` that prefix)"),
            },
            _ => String::new(),
        };
        Ok(anyhow::anyhow!("{net} is not {verb} by hand{hint}"))
    }

    /// After a manual change at `net`: what in `table` still decides its sources, the
    /// change notwithstanding, as a note for the command's reply — a feed, the config or a
    /// wider manual entry whose prefix covers it. `None` when nothing does.
    pub fn still_decided(maps: &dyn Datapath, table: Table, net: IpNet) -> Result<Option<String>> {
        let Some((covering, e)) = covering(maps, table, net)? else {
            return Ok(None);
        };
        let by = match e.reason() {
            Reason::Feed => {
                let feeds = maps.feeds_listing(table, covering);
                let what = match table {
                    Table::Allow => "allow feed",
                    Table::Deny | Table::PrefixVerdict => "feed",
                    Table::Limit => "limit feed",
                };
                format!("{what} {} lists {covering}", feeds.join(", "))
            }
            Reason::Config => format!("the config lists {covering}"),
            _ => format!("the manual entry {covering} covers it"),
        };
        Ok(Some(match table {
            Table::Allow => format!("{by}, and allow wins: it still passes here"),
            Table::Deny | Table::PrefixVerdict => format!("{by}: it is still dropped here"),
            Table::Limit => format!("{by}: it is still rate-limited here"),
        }))
    }

    /// Puts back in the map what `want` calls for at one prefix: the undo of a map change
    /// whose state write failed (logged if even that fails: the next reload or restart
    /// rebuilds the lists from the file).
    fn undo(
        maps: &mut dyn Datapath,
        want: &[(ListKind, IpNet, ListEntry)],
        kind: ListKind,
        net: IpNet,
    ) {
        let restored = match want.iter().rfind(|(k, n, _)| *k == kind && *n == net) {
            Some((_, _, entry)) => maps.list_insert(kind, net, *entry),
            None => maps.list_remove(kind, net).map(|_| ()),
        };
        if let Err(e) = restored {
            tracing::error!(%net, error = %format!("{e:#}"), "could not undo a map change; a reload (SIGHUP) rebuilds the lists");
        }
    }

    /// Whether this host may block `net`: never a protected prefix (loopback, its own
    /// addresses, `lists.allow`), and nothing wider than `control.widest_block_*` unless
    /// forced. Local blocks and the fleet's shared ones go through here alike.
    pub fn check_block(&self, cfg: &Config, net: IpNet, force: bool) -> Result<()> {
        if let Some(p) = protect::fully_protected(&self.protected, &net) {
            bail!(
                "{net} is protected ({}: {}) and can never be blocked",
                p.why,
                p.net
            );
        }
        if let Some((widest, family)) = cfg.control.too_wide(&net).filter(|_| !force) {
            bail!(
                "{net} is wider than /{widest} (control.widest_block_{family}); add --force if you mean it"
            );
        }
        Ok(())
    }

    /// Takes the manual entries the fleet shares into the state file and the lists, each
    /// checked as a local one; `me` is this host's name in the fleet. Returns how many blocks
    /// were refused.
    pub fn merge_shared(
        &mut self,
        maps: &mut dyn Datapath,
        cfg: &Config,
        records: Vec<SharedManual>,
        me: &str,
    ) -> u64 {
        let now = unix_now();
        let mut refused = 0;
        let (mut upserts, mut removals) = (Vec::new(), Vec::new());
        for m in records {
            if m.removed {
                if self.state.get(m.list, m.net).is_some() {
                    removals.push((m.list, m.net, m.host));
                }
                continue;
            }
            if m.expires.is_some_and(|e| e <= now) {
                continue;
            }
            if m.list == ListKind::Deny
                && let Err(e) = self.check_block(cfg, m.net, m.force)
            {
                refused += 1;
                tracing::warn!(net = %m.net, host = %m.host, error = %format!("{e:#}"), "refusing a block shared by the fleet");
                continue;
            }
            let entry = m.to_entry(me);
            if self.state.get(m.list, m.net) != Some(&entry) {
                upserts.push(entry);
            }
        }
        if upserts.is_empty() && removals.is_empty() {
            return refused;
        }
        let gone: Vec<(ListKind, IpNet)> = removals.iter().map(|(l, n, _)| (*l, *n)).collect();
        // As for local changes the state file comes first; if it cannot be written the
        // entries are still enforced (the fleet holds them) and the error is logged.
        if let Err(e) = self.state.merge(upserts.clone(), &gone) {
            tracing::error!(error = %format!("{e:#}"), "could not save shared manual entries in the state file");
        }
        for e in upserts {
            let entry = ListEntry::new(Reason::Manual, boot_expiry(e.expires));
            match maps.list_insert(e.list, e.net, entry) {
                Ok(()) => {
                    tracing::info!(list = ?e.list, net = %e.net, host = e.origin.as_deref().unwrap_or(me), reason = e.reason.as_deref().unwrap_or(""), "manual entry added by the fleet")
                }
                Err(err) => {
                    tracing::warn!(net = %e.net, error = %err, "could not apply a shared manual entry")
                }
            }
        }
        for (list, net, host) in removals {
            if let Err(err) = maps.list_remove(list, net) {
                tracing::warn!(%net, error = %err, "could not remove a shared manual entry");
            }
            tracing::info!(?list, %net, %host, "manual entry removed by the fleet");
        }
        refused
    }

    /// Removes expired manual entries: state file, then lists (if the file cannot be written
    /// they stay in both, where the datapath ignores them, until a later sweep).
    pub fn expire(&mut self, maps: &mut dyn Datapath) -> Result<()> {
        for e in self.state.take_expired(unix_now())? {
            maps.list_remove(e.list, e.net)?;
            tracing::info!(list = ?e.list, net = %e.net, "manual entry expired");
        }
        Ok(())
    }
}

/// The entry of `table` whose prefix covers all of `net` (the longest that covers its
/// first address, if it covers the rest too), with that prefix.
fn covering(maps: &dyn Datapath, table: Table, net: IpNet) -> Result<Option<(IpNet, ListEntry)>> {
    Ok(maps
        .list_lookup(table, net.addr())?
        .filter(|(covering, _)| covering.contains(&net)))
}
