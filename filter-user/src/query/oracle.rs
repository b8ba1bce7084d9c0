//! The answer for one address, from what the daemon holds: the allow and deny lists and the
//! verdict map (read through a second handle, so a busy main loop never delays it), the
//! evidence cache, and the datapath's own config (observe mode, the explain window). An
//! address with nothing held goes where its SYN goes — claimed for the fleet (so the fleet
//! evaluates it once, whichever of its SYN and the MTA's question comes first), else the
//! engine's budgeted queue — and the question waits for that evaluation, up to
//! `query.wait_max`: a first contact that reached the MTA (`first_contact = "pass"`, or a
//! DNSBL slower than `hold_max`) is answered with its verdict, so the MTA can drop its own
//! list checks. Past the bound, or when nothing evaluates it (over budget), `unknown`.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use filter_common::{FLAG_EXPLAIN, FLAG_OBSERVE, ListEntry, Peer, Table, live};

use super::{
    answer::{Answer, Told},
    asks::MtaAsks,
    evidence::EvidenceCache,
};
use crate::{
    datapath::{DatapathRead, clock, explain::next_explained},
    reputation::names::canonical,
};

/// Where the oracle sends the peers it cannot answer for from the maps. The daemon's is the
/// fleet's claim in front of the engine (`fleet::NewPeers`): a trait here, so the MTA's
/// answers stay below the fleet in the layering.
pub trait Evaluations: Send + Sync {
    /// A peer the maps know nothing of: evaluated as its SYN's peer is (claimed for the
    /// fleet first, so the fleet evaluates it once whichever comes first). Whether a verdict
    /// is on its way (claimed, queued or already being evaluated), worth waiting for.
    fn unknown_peer(&self, ip: IpAddr) -> bool;
    /// A peer whose verdict's evidence is gone (a restart): evaluated again here.
    fn evaluate_again(&self, ip: IpAddr);
}

/// Answers the MTA's questions. Shared by the query socket and the policy service.
pub struct Oracle {
    maps: Box<dyn DatapathRead>,
    evidence: Arc<EvidenceCache>,
    peers: Arc<dyn Evaluations>,
    /// What was asked about, for the balancer watch and explained refusals.
    asks: Arc<MtaAsks>,
    /// `query.wait_max`.
    wait_max: Duration,
}

/// How often a waiting question looks for the verdict: well below an SMTP client's patience,
/// and a map lookup each time is cheap.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// Seconds left until a datapath-clock expiry; `None` = never.
fn secs_left(expires_ns: u64) -> Option<u64> {
    clock::remaining(expires_ns).map(|d| d.as_secs())
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
        maps: Box<dyn DatapathRead>,
        evidence: Arc<EvidenceCache>,
        peers: Arc<dyn Evaluations>,
        asks: Arc<MtaAsks>,
        wait_max: Duration,
    ) -> Self {
        Self {
            maps,
            evidence,
            peers,
            asks,
            wait_max,
        }
    }

    /// What the MTA is told about `ip`, waiting up to `query.wait_max` for an evaluation
    /// under way. A map that cannot be read gives `unknown` with an error: the MTA goes on
    /// as if mxscreen knew nothing.
    pub async fn answer(&self, ip: IpAddr) -> Answer {
        let ip = canonical(ip);
        self.asks.question();
        let answered = match self.lookup(ip, true) {
            Ok(Some(a)) => Ok(a),
            Ok(None) if self.peers.unknown_peer(ip) => self.wait_for_verdict(ip).await,
            Ok(None) => Ok(Answer::default()),
            Err(e) => Err(e),
        };
        answered.unwrap_or_else(|e| {
            tracing::warn!(%ip, error = %format!("{e:#}"), "answering the MTA failed");
            Answer::error("mxscreen could not read its maps")
        })
    }

    /// Looks again every [`WAIT_STEP`] until `ip` has a verdict (or a list entry) or
    /// `query.wait_max` has passed (then `unknown`).
    async fn wait_for_verdict(&self, ip: IpAddr) -> Result<Answer> {
        let deadline = Instant::now() + self.wait_max;
        while Instant::now() < deadline {
            tokio::time::sleep(WAIT_STEP.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            if let Some(a) = self.lookup(ip, false)? {
                return Ok(a);
            }
        }
        Ok(Answer::default())
    }

    /// The answer from what is held about `ip`, `None` when nothing is. `first`: the
    /// question's first look (counted for the balancer watch).
    fn lookup(&self, ip: IpAddr, first: bool) -> Result<Option<Answer>> {
        let mut cfg = self.maps.config()?;
        let now = clock::now_ns();
        // This question itself may have just turned explanations on: the datapath learns it
        // at the daemon's next beat, the answer now.
        if self.asks.explaining(now) {
            cfg.flags |= FLAG_EXPLAIN;
        }
        // In the datapath's precedence: allow, deny, limit feeds, the source's verdict, its
        // network's.
        let entry = |table| self.maps.list_match(table, ip);
        let mut a = if let Some(e) = entry(Table::Allow)? {
            listed(Told::Allow, &e)
        } else if let Some(e) = entry(Table::Deny)? {
            listed(Told::Block, &e)
        } else if let Some(e) = entry(Table::Limit)? {
            listed(Told::Limit, &e)
        } else if let Some(v) = self
            .peer_asked_about(ip, first)?
            .and_then(|p| p.verdict())
            .filter(|v| live(v.expires_ns, now))
        {
            let mut a = Answer {
                action: v.action().into(),
                ttl: secs_left(v.expires_ns),
                source: Some(v.reason()),
                explain_in: next_explained(&v, &cfg).map(|d| d.as_secs()),
                ..Answer::default()
            };
            // `explain_in` is there only for a drop the datapath would explain (never in
            // observe mode). The MTA refuses it now: that is its explanation, the next a
            // window later.
            if a.explain_in.is_some() {
                self.asks.refused(ip);
                a.explain_in = Some(Duration::from_nanos(cfg.explain_window_ns).as_secs());
            }
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
        } else if let Some(e) = entry(Table::PrefixVerdict)? {
            // Its IPv6 network's verdict (a rotating sender's /64): always a drop.
            listed(Told::Drop, &e)
        } else {
            return Ok(None);
        };
        if cfg.flags & FLAG_OBSERVE != 0 && a.action.enforces() {
            a.observed = Some(a.action);
            a.action = Told::Pass;
        }
        Ok(Some(a))
    }

    /// The datapath's entry for `ip`, the question counted for the balancer watch on its
    /// `first` look (only questions about addresses on no list get here).
    fn peer_asked_about(&self, ip: IpAddr, first: bool) -> Result<Option<Peer>> {
        let peer = self.maps.peer(ip)?;
        if first {
            self.asks.record(peer.as_ref());
        }
        Ok(peer)
    }
}
