//! Putting the bookkeeping back when the kernel refuses a write of list entries or feeds.
//!
//! The handle changes its bookkeeping first and computes the element writes from it (what a
//! source resolves to depends on everything else listed). A transaction the kernel refuses
//! — a set at its size (ENFILE), no memory — changes nothing in the kernel, so what the
//! write changed in the bookkeeping goes back: the entry, the elements per set, and the
//! decision elements, exact-set elements, hit counters carried and uncounted verdicts of the
//! sources it covers. So `list`, `check` and a later rewrite of the table never show or
//! write an entry the caller was told was not added, and the caller's error means "nothing
//! changed", as it does on the eBPF datapath.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use anyhow::Result;

use super::{
    Nftables,
    decide::{Counted, Decision},
    lists::Own,
    sets::{Family, Kind},
};
use crate::datapath::Prefix;

/// The bookkeeping a write is about to change, as it was.
pub(super) struct Undo {
    /// The own entry written, and what it was before (`None`: not there).
    own: Option<((Kind, Prefix), Option<Own>)>,
    count: HashMap<(Kind, Family, u8), u64>,
    /// A feed registered by this write (its name), to forget again.
    new_feed: Option<String>,
    /// Each covered source's decision element, whether its verdict's element counts, and
    /// its element in the exact set (its expiry).
    sources: Vec<(IpAddr, Option<Decision>, bool, Option<u64>)>,
    /// What the covered sources' destroyed decision elements had counted.
    carried: Vec<((IpAddr, Counted), u64)>,
}

impl Nftables {
    /// The bookkeeping of the own entry `own` (if the write is one) and of the sources
    /// `ips` (what [`Nftables::covered_by`] gives for the change), before the change.
    pub(super) fn undo_point(&self, own: Option<(Kind, Prefix)>, ips: &[IpAddr]) -> Undo {
        let covered: HashSet<IpAddr> = ips.iter().copied().collect();
        Undo {
            own: own.map(|k| (k, self.lists.own.get(&k).copied())),
            count: self.lists.count.clone(),
            new_feed: None,
            sources: ips
                .iter()
                .map(|ip| {
                    (
                        *ip,
                        self.decided.get(ip).cloned(),
                        self.uncounted.contains(ip),
                        self.walked.get(ip).copied(),
                    )
                })
                .collect(),
            carried: self
                .carried
                .iter()
                .filter(|((ip, _), _)| covered.contains(ip))
                .map(|(k, n)| (*k, *n))
                .collect(),
        }
    }

    /// An undo point for a feed's load, before `name` is registered: forgetting it again if
    /// it is new.
    pub(super) fn undo_feed_point(&self, name: &str) -> Undo {
        let mut u = self.undo_point(None, &[]);
        if !self.lists.feeds.iter().any(|f| f.name == name) {
            u.new_feed = Some(name.to_owned());
        }
        u
    }

    /// `written` as it is; when it failed, the bookkeeping put back to `undo` first (and the
    /// rules to the lengths in use again: the write may have added sets for new ones).
    pub(super) fn undone_if_failed<T>(&mut self, undo: Undo, written: Result<T>) -> Result<T> {
        if written.is_ok() {
            return written;
        }
        let Undo {
            own,
            count,
            new_feed,
            sources,
            carried,
        } = undo;
        if let Some((k, before)) = own {
            match before {
                Some(o) => self.lists.own.insert(k, o),
                None => self.lists.own.remove(&k),
            };
        }
        self.lists.count = count;
        if let Some(name) = new_feed {
            self.lists.feeds.retain(|f| f.name != name);
        }
        let ips: HashSet<IpAddr> = sources.iter().map(|(ip, ..)| *ip).collect();
        self.carried.retain(|(ip, _), _| !ips.contains(ip));
        self.carried.extend(carried);
        for (ip, decided, uncounted, walked) in sources {
            match decided {
                Some(d) => self.decided.insert(ip, d),
                None => self.decided.remove(&ip),
            };
            match walked {
                Some(w) => self.walked.insert(ip, w),
                None => self.walked.remove(&ip),
            };
            if uncounted {
                self.uncounted.insert(ip);
            } else {
                self.uncounted.remove(&ip);
            }
        }
        if let Err(e) = self.sync_rules() {
            tracing::debug!(error = %format!("{e:#}"), "rules after a refused write: the next heartbeat writes them");
        }
        written
    }
}
