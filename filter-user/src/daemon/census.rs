//! The daemon's census of its maps and the facts it publishes for the metrics endpoint.
//!
//! The census is made by one walk of the maps — at start, at the minute sweep (which removes
//! the expired verdicts it finds) and for `stats` and `status` — and kept up to date in
//! between by the daemon's own writes (verdicts, list changes). `stats` answers from a fresh
//! walk and a scrape from the latest census, so right after a `stats` both say the same.

use std::net::IpAddr;

use anyhow::Result;
use filter_common::PeerVerdict;

use super::Daemon;
use crate::datapath::clock;

impl Daemon {
    /// Walks the verdicts: removes the expired ones and counts the rest; counts the lists
    /// and the feeds' hits.
    pub(super) fn take_census(&mut self) -> Result<()> {
        let expired = self
            .census
            .count_verdicts(self.maps.as_ref(), clock::now_ns())?;
        let removed = self.maps.verdicts_remove(&expired)?;
        if removed > 0 {
            tracing::debug!(removed, "expired verdicts removed");
        }
        self.census.count_lists(self.maps.as_mut())?;
        self.feeds.count_hits(self.maps.as_ref());
        self.publish();
        Ok(())
    }

    /// After a change to the allow or deny list.
    pub(super) fn recount_lists(&mut self) -> Result<()> {
        self.census.count_lists(self.maps.as_mut())?;
        self.publish();
        Ok(())
    }

    /// After writing `new` for `ip` over `previous` in the verdict map.
    pub(super) fn count_verdict(
        &mut self,
        ip: IpAddr,
        previous: Option<&PeerVerdict>,
        new: &PeerVerdict,
    ) {
        self.census.replace(ip, previous, new);
        self.publish();
    }

    /// A config reload's outcome (`Err` with why it failed), for `status` and the metrics.
    pub(super) fn count_reload(&mut self, outcome: Result<Vec<&'static str>, String>) {
        self.facts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reloads
            .record(outcome);
        self.publish();
    }

    /// Copies what a scrape reads into the shared [`crate::metrics::Facts`].
    pub(super) fn publish(&self) {
        let mut f = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        f.census = self.census;
        f.capacity = self.cfg.datapath.maps;
        f.observe = self.cfg.policy.observe;
        f.fleet_refused = self.fleet.refused();
        f.interfaces = self
            .program
            .interfaces()
            .into_iter()
            .map(|i| (i.name, i.mode, i.down.is_none()))
            .collect();
        f.backend = (self.backend.name.clone(), self.backend.ebpf_error.clone());
    }
}
