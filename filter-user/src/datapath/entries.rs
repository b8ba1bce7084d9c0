//! The prefix lists entry by entry: an operator's, the config's or the host's entry, or a
//! network's verdict, written with its reason, expiry and a hit slot of its own (see
//! [`super::lists`] for how entries and feeds share a key).

use anyhow::{Context as _, Result};
use filter_common::{ListEntry, ListValue, Reason, Table};
use ipnet::IpNet;

use super::{lists::ListKind, maps::DatapathMaps, prefix::Prefix};

impl DatapathMaps {
    /// Adds or replaces an entry of one's own in a list (host bits are ignored). A feed that
    /// lists the same prefix keeps it listed after the entry goes.
    pub fn list_insert(&mut self, kind: ListKind, net: IpNet, entry: ListEntry) -> Result<()> {
        self.entry_insert(kind.into(), net, entry.reason(), entry.expires_ns, 0)
            .with_context(|| format!("adding {net} to the {kind:?} list (is the map full?)"))
    }

    /// Removes exactly this prefix, as [`DatapathMaps::list_insert`] wrote it; `false` if it
    /// was not there. A feed's entry for the same prefix stays.
    pub fn list_remove(&mut self, kind: ListKind, net: IpNet) -> Result<bool> {
        self.entry_remove(kind.into(), net)
    }

    /// The entries of a list written with [`DatapathMaps::list_insert`] (not the feeds'), with
    /// their reasons: what the daemon reconciles against the config and the state file.
    pub fn list_own(&self, kind: ListKind) -> Vec<(IpNet, Reason)> {
        let table = Table::from(kind);
        self.lists
            .own
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, p), v)| (p.net(), Reason::from_u8(v.reason)))
            .collect()
    }

    /// Entries per table (from the lengths index; no map read).
    pub fn table_len(&self, table: Table) -> u64 {
        self.lists.len(table)
    }

    /// Adds or replaces an entry of one's own in any table.
    pub(super) fn entry_insert(
        &mut self,
        table: Table,
        net: IpNet,
        reason: Reason,
        expires_ns: u64,
        action: u8,
    ) -> Result<()> {
        let p = Prefix::new(net);
        let before = self.lists.resolved(table, p, None);
        let was = self.lists.own.get(&(table, p)).copied();
        let slot = match was {
            Some(v) => v.slot,
            None => self.hits.alloc(&mut self.maps.hits)?,
        };
        let mut value = ListValue::new(reason, expires_ns, slot);
        value.action = action;
        self.lists.own.insert((table, p), value);
        let after = self.lists.resolved(table, p, None);
        self.commit(table, p, before, after).inspect_err(|_| {
            self.put_back(table, p, was, (before, after));
            if was.is_none() {
                self.hits.release(slot);
            }
        })
    }

    pub(super) fn entry_remove(&mut self, table: Table, net: IpNet) -> Result<bool> {
        let p = Prefix::new(net);
        let before = self.lists.resolved(table, p, None);
        let Some(old) = self.lists.own.remove(&(table, p)) else {
            return Ok(false);
        };
        let after = self.lists.resolved(table, p, None);
        self.commit(table, p, before, after)
            .inspect_err(|_| self.put_back(table, p, Some(old), (before, after)))?;
        self.hits.release(old.slot);
        Ok(true)
    }

    /// After a write the kernel refused (a full map): the bookkeeping of `p` back to what the
    /// map still holds, its own entry `was` and the length counts, so that `list` never shows
    /// an entry the caller was told was not added, and a later removal does not fail on a key
    /// that was never written (as `nftables/undo.rs` does for that backend).
    fn put_back(
        &mut self,
        table: Table,
        p: Prefix,
        was: Option<ListValue>,
        (before, after): (Option<ListValue>, Option<ListValue>),
    ) {
        match was {
            Some(v) => self.lists.own.insert((table, p), v),
            None => self.lists.own.remove(&(table, p)),
        };
        // The write this returns is the one the kernel never left: nothing to apply.
        let _ = self.lists.transition(table, p, after, before);
    }

    fn commit(
        &mut self,
        table: Table,
        p: Prefix,
        before: Option<ListValue>,
        after: Option<ListValue>,
    ) -> Result<()> {
        if let Some(w) = self.lists.transition(table, p, before, after) {
            // A new length is in the index before its first key is written (a length going
            // out of use leaves it with its last key, which is going anyway).
            self.lists.write_index(&mut self.maps.lists)?;
            self.maps.lists.apply(w)?;
            self.new_generation()?;
        }
        Ok(())
    }
}
