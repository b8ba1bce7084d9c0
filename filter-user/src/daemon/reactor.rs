//! What the daemon does on its own, each event handed to the part that owns it: the lists
//! reconciled with config + state (the list owner), new peers claimed for the fleet or handed
//! to the engine, the engine's verdicts written (the verdict writer) and shared (the fleet
//! bridge), what the fleet sends, the heartbeat, and the sweep of expired entries.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use filter_common::{Action, EventWhy, FLAG_EXPLAIN, PeerVerdict, Reason};
use tokio::sync::mpsc;

use super::Daemon;
use crate::{
    datapath::{FirstContact, clock, events::NewPeer},
    fleet::FleetEvent,
    query::asks::MtaNews,
    reputation::{Class, Submit, Verdict},
};

/// How often the main loop refreshes the heartbeat in the datapath's config.
pub(super) const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How old the heartbeat may get before the datapath fails open: a few missed beats, so a
/// busy moment (a reload, a big sweep) does not open the gate, a dead daemon does within
/// seconds.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(5);

/// How long a held peer the engine will not evaluate (its proven-real queue is full) is let
/// through: its next SYNs pass at once instead of waiting out `hold_max`, and once this
/// passes it comes back to be evaluated (the default dedup window's length).
pub(super) const RELEASE_TTL: Duration = Duration::from_secs(30);

/// The budget class of a datapath event (see [`crate::reputation::budget`]): a first SYN
/// is what a spoofed flood is made of; a retransmit or a returning source has a real TCP
/// stack behind it.
fn event_class(peer: &NewPeer) -> Class {
    match peer.why {
        EventWhy::First => Class::First,
        EventWhy::Again | EventWhy::Back => Class::Real,
    }
}

/// When the datapath saw a peer's SYN, on tokio's clock (for the first-SYN age bound).
fn seen_at(peer: &NewPeer) -> tokio::time::Instant {
    let age = Duration::from_nanos(clock::now_ns().saturating_sub(peer.at_ns));
    let now = tokio::time::Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

impl Daemon {
    /// Writes the runtime config and makes the lists match config + state exactly (see
    /// [`super::lists::ListOwner::reconcile`]). Called at start and on reload.
    pub fn apply(&mut self) -> Result<()> {
        self.beat()?;
        self.lists.reconcile(self.maps.as_mut(), &self.cfg)?;
        self.recount_lists()
    }

    /// Writes the runtime config with a fresh heartbeat. The datapath stops screening (passes
    /// everything) once the heartbeat is older than [`STALE_AFTER`]: a dead or hung daemon
    /// never keeps dropping, whatever the attach path.
    pub fn beat(&mut self) -> Result<()> {
        let mut k = self.cfg.kernel();
        if self.mta_asks.explaining(clock::now_ns()) {
            k.flags |= FLAG_EXPLAIN;
        }
        k.alive_ns = clock::now_ns();
        k.stale_after_ns = STALE_AFTER.as_nanos() as u64;
        self.maps.set_config(&k)
    }

    /// A new peer from the datapath: claimed for the fleet (which answers with another
    /// host's verdict or [`FleetEvent::Evaluate`]), or handed to the engine's budgeted queue
    /// in its class; released if held and the engine turns it away.
    pub fn on_new_peer(&mut self, peer: &NewPeer) {
        let ip = peer.ip;
        // An IPv4-mapped IPv6 source never reaches a socket (the IPv6 stack discards it,
        // RFC 4291 2.5.5.2), and its verdict would be written for the IPv4 address, not the
        // key the datapath looks up: evaluating it spends DNS queries on nothing.
        if let IpAddr::V6(v6) = ip
            && v6.to_ipv4_mapped().is_some()
        {
            tracing::debug!(%ip, "new peer with an IPv4-mapped IPv6 source; not evaluated");
            return;
        }
        if self.fleet.claim(ip) {
            tracing::debug!(%ip, "new peer; claiming it for the fleet");
            return;
        }
        let outcome = self
            .engine
            .submit_seen(ip, event_class(peer), seen_at(peer));
        tracing::debug!(%ip, ?outcome, "new peer");
        if outcome == Submit::Rejected {
            self.release(ip);
        }
    }

    /// A held peer the engine will not evaluate is let through at once, by a short `pass`
    /// (a tempfail: DNS did not get to it), rather than after `hold_max`: holding it longer
    /// gains nothing. Not shared with the fleet, not logged as a verdict; a verdict already
    /// there is kept.
    fn release(&mut self, ip: IpAddr) {
        if self.cfg.datapath.first_contact != FirstContact::Hold || self.cfg.policy.observe {
            return;
        }
        let live = self
            .maps
            .verdict_without_hits(ip)
            .ok()
            .flatten()
            .is_some_and(|v| clock::remaining(v.expires_ns).is_none_or(|left| !left.is_zero()));
        if live {
            return;
        }
        let pass = PeerVerdict::new(
            Action::Pass,
            Reason::Tempfail,
            clock::expiry_after(RELEASE_TTL),
        );
        match self.maps.verdict_set(ip, pass) {
            Ok(()) => {
                tracing::debug!(%ip, "held peer released: the evaluation budget turned it away")
            }
            Err(e) => tracing::warn!(%ip, error = %e, "could not release a held peer"),
        }
    }

    /// What the MTA's questions say: it started asking (explained refusals on now, not at
    /// the next beat), or it refused a peer with its explained `drop` (that peer's next
    /// explanation is due a window later).
    pub fn on_mta_news(&mut self, news: MtaNews) {
        let result = match news {
            MtaNews::Asking => self.beat(),
            MtaNews::Refused(ip) => {
                let next = clock::expiry_after(self.cfg.policy.explain_every);
                self.maps.explained_until(ip, next).map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(?news, error = %format!("{e:#}"), "acting on the MTA's question failed");
        }
    }

    /// A verdict from the engine: written (with its log line), counted, and shared.
    pub fn on_verdict(&mut self, v: &Verdict) {
        let observe = self.cfg.policy.observe;
        let explain_to = self.cfg.policy.explain_to;
        let Some(written) = self
            .verdicts
            .write(self.maps.as_mut(), v, observe, explain_to)
        else {
            return;
        };
        self.count_verdict(v.ip, written.previous.as_ref(), &written.entry);
        self.fleet.verdict_made(v);
    }

    /// What the fleet sends: shared manual entries to the list owner, shared verdicts to the
    /// maps through the fleet bridge, peers to evaluate here to the engine.
    pub fn on_fleet(&mut self, ev: FleetEvent) {
        match ev {
            FleetEvent::Manual(records) => {
                let me = self.fleet.name().unwrap_or_default().to_owned();
                let refused = self
                    .lists
                    .merge_shared(self.maps.as_mut(), &self.cfg, records, &me);
                if refused > 0 {
                    self.fleet.count_refused(refused);
                    self.publish();
                }
            }
            FleetEvent::Verdicts(verdicts) => {
                for v in verdicts {
                    self.fleet.apply_verdict(
                        self.maps.as_mut(),
                        self.lists.protected(),
                        &v,
                        &self.cfg.policy,
                    );
                }
            }
            FleetEvent::Evaluate(ip) => {
                let outcome = self.engine.submit(ip);
                tracing::debug!(%ip, ?outcome, "new peer (evaluated here for the fleet)");
                if outcome == Submit::Rejected {
                    self.release(ip);
                }
            }
            FleetEvent::Forget(f) => self.forget_shared(&f),
            FleetEvent::Synced | FleetEvent::Down => {}
        }
    }

    /// Waits, before the daemon says it is ready, until the fleet has delivered the shared
    /// state or said the bus cannot be reached (then this host starts alone).
    pub async fn join_fleet(&mut self, events: &mut mpsc::Receiver<FleetEvent>) {
        if self.fleet.name().is_none() {
            return;
        }
        // The datapath fails open without heartbeats; a long join keeps it screening.
        let mut beat = tokio::time::interval(BEAT_EVERY);
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { return };
                    let done = matches!(ev, FleetEvent::Synced | FleetEvent::Down);
                    self.on_fleet(ev);
                    if done {
                        return;
                    }
                }
                _ = beat.tick() => {
                    if let Err(e) = self.beat() {
                        tracing::warn!(error = %format!("{e:#}"), "heartbeat to the datapath failed");
                    }
                }
            }
        }
    }

    /// Removes expired manual entries, verdicts and network verdicts, counts what is left
    /// (the census), and starts a new list generation: every cached decision is made again
    /// at its source's next SYN, which bounds how long one cached through a race can outlive
    /// its cause.
    pub fn sweep(&mut self) -> Result<()> {
        self.lists.expire(self.maps.as_mut())?;
        self.verdicts.expire_networks(self.maps.as_mut())?;
        self.maps.new_generation()?;
        self.fleet.prune_origins();
        self.take_census()
    }
}
