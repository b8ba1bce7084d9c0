//! The answer for one address, from what the daemon holds: the allow and deny lists and the
//! verdict map (read through a second handle, so a busy main loop never delays it), the
//! evidence cache, and the datapath's own config (observe mode, the explain window). It never
//! waits on DNS: an address with nothing held answers `unknown` and goes where its SYN goes —
//! claimed for the fleet (so the fleet evaluates it once, whichever of its SYN and the
//! MTA's question comes first), else the engine's budgeted queue.

use std::{net::IpAddr, sync::Arc};

use anyhow::Result;
use filter_common::{FLAG_OBSERVE, ListEntry};

use super::{
    answer::{Answer, Told},
    evidence::EvidenceCache,
};
use crate::{
    datapath::{ListKind, MapsReader, clock, explain::next_explained},
    reputation::names::canonical,
};

/// Where the oracle sends the peers it cannot answer for from the maps. The daemon's is the
/// fleet's claim in front of the engine (`fleet::NewPeers`): a trait here, so the MTA's
/// answers stay below the fleet in the layering.
pub trait Evaluations: Send + Sync {
    /// A peer the maps know nothing of: evaluated as its SYN's peer is (claimed for the
    /// fleet first, so the fleet evaluates it once whichever comes first).
    fn unknown_peer(&self, ip: IpAddr);
    /// A peer whose verdict's evidence is gone (a restart): evaluated again here.
    fn evaluate_again(&self, ip: IpAddr);
}

/// Answers the MTA's questions. Shared by the query socket and the policy service.
pub struct Oracle {
    maps: MapsReader,
    evidence: Arc<EvidenceCache>,
    peers: Arc<dyn Evaluations>,
}

/// Seconds left until a datapath-clock expiry; `None` = never.
fn secs_left(expires_ns: u64) -> Option<u64> {
    clock::remaining(expires_ns).map(|d| d.as_secs())
}

fn live(expires_ns: u64, now: u64) -> bool {
    expires_ns == 0 || expires_ns > now
}

fn listed(action: Told, e: &ListEntry) -> Answer {
    Answer {
        action,
        ttl: secs_left(e.expires_ns),
        source: Some(e.reason()),
        ..Answer::default()
    }
}

impl Oracle {
    /// `maps` should be a handle of its own ([`crate::datapath::DatapathMaps::reader`]).
    pub fn new(
        maps: MapsReader,
        evidence: Arc<EvidenceCache>,
        peers: Arc<dyn Evaluations>,
    ) -> Self {
        Self {
            maps,
            evidence,
            peers,
        }
    }

    /// What the MTA is told about `ip`. A map that cannot be read gives `unknown` with an
    /// error: the MTA goes on as if mxscreen knew nothing.
    pub fn answer(&self, ip: IpAddr) -> Answer {
        let ip = canonical(ip);
        self.lookup(ip).unwrap_or_else(|e| {
            tracing::warn!(%ip, error = %format!("{e:#}"), "answering the MTA failed");
            Answer::error("mxscreen could not read its maps")
        })
    }

    fn lookup(&self, ip: IpAddr) -> Result<Answer> {
        let cfg = self.maps.config()?;
        let now = clock::now_ns();
        let live_entry = |kind| -> Result<Option<ListEntry>> {
            Ok(self
                .maps
                .list_match(kind, ip)?
                .filter(|e| live(e.expires_ns, now)))
        };
        let mut a = if let Some(e) = live_entry(ListKind::Allow)? {
            listed(Told::Allow, &e)
        } else if let Some(e) = live_entry(ListKind::Deny)? {
            listed(Told::Block, &e)
        } else if let Some(v) = self
            .maps
            .verdict_get(ip)?
            .filter(|v| live(v.expires_ns, now))
        {
            let mut a = Answer {
                action: v.action().into(),
                ttl: secs_left(v.expires_ns),
                source: Some(v.reason()),
                explain_in: next_explained(&v, &cfg).map(|d| d.as_secs()),
                ..Answer::default()
            };
            match self.evidence.get(ip) {
                Some(r) => {
                    a.score = Some(r.score);
                    a.listing = r.listing.map(|l| (*l).clone());
                }
                // A verdict from before a restart (the maps are pinned, the cache is not):
                // evaluate again, so the next explained connection can name the list.
                None if v.is_explained() => {
                    self.peers.evaluate_again(ip);
                }
                None => {}
            }
            a
        } else {
            self.peers.unknown_peer(ip);
            Answer::default()
        };
        if cfg.flags & FLAG_OBSERVE != 0 && a.action.enforces() {
            a.observed = Some(a.action);
            a.action = Told::Pass;
        }
        Ok(a)
    }
}
