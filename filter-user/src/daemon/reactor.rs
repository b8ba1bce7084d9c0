//! What the daemon does on its own: keeps the lists in the maps equal to config + state,
//! hands new peers to the engine, writes verdicts into the maps (with one log line each),
//! gives rotating IPv6 networks their verdict, and sweeps expired entries.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use filter_common::{Action, ListEntry, Reason, Verdict as MapVerdict};
use ipnet::IpNet;

use super::{Daemon, protect, rotation::Earned};
use crate::{
    datapath::{ListKind, clock},
    reputation::Verdict,
    state::unix_now,
};

/// How often the main loop refreshes the heartbeat in the datapath's config.
pub(super) const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How old the heartbeat may get before the datapath fails open: a few missed beats, so a
/// busy moment (a reload, a big sweep) does not open the gate, a dead daemon does within
/// seconds.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(5);

/// Datapath-clock expiry for a wall-clock one (Unix seconds); 0 = never.
pub(super) fn boot_expiry(expires_unix: Option<u64>) -> u64 {
    match expires_unix {
        None => 0,
        Some(t) => clock::expiry_after(Duration::from_secs(t.saturating_sub(unix_now()))),
    }
}

/// Wall-clock expiry (Unix seconds) of a datapath-clock one; `None` = never.
pub(super) fn unix_expiry(expires_ns: u64) -> Option<u64> {
    clock::remaining(expires_ns).map(|left| unix_now() + left.as_secs())
}

impl Daemon {
    /// Writes the runtime config and makes the tries match config + state exactly: entries
    /// this daemon owns (manual and config) that are no longer wanted are removed, wanted
    /// ones (re)inserted. Called at start (pinned tries may hold an older truth) and on reload.
    pub fn apply(&mut self) -> Result<()> {
        self.beat()?;
        self.protected = protect::protected_set(&self.cfg.lists.allow);
        let want = self.wanted();
        for kind in [ListKind::Allow, ListKind::Deny] {
            for (net, reason) in self.maps.list_own(kind) {
                let ours = matches!(reason, Reason::Manual | Reason::Config);
                if ours && !want.iter().any(|(k, n, _)| *k == kind && *n == net) {
                    self.maps.list_remove(kind, net)?;
                }
            }
        }
        for (kind, net, entry) in want {
            self.maps.list_insert(kind, net, entry)?;
        }
        self.recount_lists()
    }

    /// Every list entry the config, the host and the state file call for, in the order they
    /// are written (a manual entry replaces a config entry for the same prefix).
    fn wanted(&self) -> Vec<(ListKind, IpNet, ListEntry)> {
        let mut want: Vec<(ListKind, IpNet, ListEntry)> = Vec::new();
        for p in &self.protected {
            want.push((ListKind::Allow, p.net, ListEntry::new(Reason::Config, 0)));
        }
        for net in &self.cfg.lists.deny {
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

    /// Puts back in the map what the config, the host and the state file call for at one
    /// prefix: the undo of a map change whose state write failed.
    pub(super) fn restore(&mut self, kind: ListKind, net: IpNet) -> Result<()> {
        let want = self
            .wanted()
            .into_iter()
            .rfind(|(k, n, _)| *k == kind && *n == net);
        match want {
            Some((_, _, entry)) => self.maps.list_insert(kind, net, entry),
            None => self.maps.list_remove(kind, net).map(|_| ()),
        }
    }

    /// Writes the runtime config with a fresh heartbeat. The datapath stops screening (passes
    /// everything) once the heartbeat is older than [`STALE_AFTER`]: a dead or hung daemon
    /// never keeps dropping, whatever the attach path.
    pub fn beat(&mut self) -> Result<()> {
        let mut k = self.cfg.kernel();
        k.alive_ns = clock::now_ns();
        k.stale_after_ns = STALE_AFTER.as_nanos() as u64;
        self.maps.set_config(&k)
    }

    /// A new peer from the datapath: claimed for the fleet (which answers with another
    /// host's verdict or [`FleetEvent::Evaluate`](crate::fleet::FleetEvent)), or handed to
    /// the engine's budgeted queue.
    pub fn on_new_peer(&mut self, ip: IpAddr) {
        if self.fleet.claim(ip) {
            tracing::debug!(%ip, "new peer; claiming it for the fleet");
            return;
        }
        let outcome = self.engine.submit(ip);
        tracing::debug!(%ip, ?outcome, "new peer");
    }

    /// A verdict from the engine: into the map, and one log line for humans and parsers.
    pub fn on_verdict(&mut self, v: &Verdict) {
        let entry = MapVerdict::new(v.action, v.reason, clock::expiry_after(v.ttl));
        // What it replaces, for the census (a failed read only makes the count approximate
        // until the next sweep).
        let previous = self.maps.verdict_get(v.ip).ok().flatten();
        if let Err(e) = self.maps.verdict_set(v.ip, entry) {
            tracing::warn!(ip = %v.ip, error = %e, "could not store verdict");
            return;
        }
        self.count_verdict(previous.as_ref(), &entry);
        self.evidence.record(v);
        if self.shared_origins.host(v.ip).is_some() {
            std::sync::Arc::make_mut(&mut self.shared_origins).forget(v.ip);
        }
        self.fleet.verdict_made(v);
        if let Some(earned) = self.rotation.on_verdict(v.ip, v.action, entry.expires_ns) {
            self.network_verdict(&earned);
        }
        tracing::info!(
            target: "mxscreen::verdict",
            action = v.action.name(),
            ip = %v.ip,
            score = v.score,
            // A string value: the plain format quotes and escapes it (logfmt), because the
            // evidence carries a DNSBL's TXT text, which must never read as fields of its
            // own; the journal gets it bare.
            reasons = v.reasons().as_str(),
            ttl = v.ttl.as_secs(),
            source = v.reason.name(),
            observe = self.cfg.policy.observe,
            "mxscreen-verdict"
        );
    }

    /// A network whose addresses rotate has earned a verdict: into the map, and a verdict line
    /// naming the addresses that earned it.
    fn network_verdict(&mut self, earned: &Earned) {
        let net = IpNet::V6(earned.net);
        if let Err(e) =
            self.maps
                .network_verdict_set(net, Action::Drop, Reason::Reputation, earned.expires_ns)
        {
            tracing::warn!(%net, error = %e, "could not store the network's verdict");
            return;
        }
        let members: Vec<String> = earned.members.iter().map(ToString::to_string).collect();
        let reasons = format!(
            "rotation: {} addresses of {net} hold drop verdicts ({})",
            members.len(),
            members.join(", ")
        );
        tracing::info!(
            target: "mxscreen::verdict",
            action = Action::Drop.name(),
            ip = %net,
            reasons = reasons.as_str(),
            ttl = clock::remaining(earned.expires_ns).map_or(0, |d| d.as_secs()),
            source = Reason::Reputation.name(),
            observe = self.cfg.policy.observe,
            "mxscreen-verdict"
        );
    }

    /// At start: learns the IPv6 drop verdicts kept in the pinned maps, so networks that had
    /// earned a verdict (the lists are not pinned) get it back at once.
    pub fn learn_rotation(&mut self) -> Result<()> {
        let now = clock::now_ns();
        let mut drops = Vec::new();
        self.maps.for_each_verdict_chunk_uncounted(|chunk| {
            drops.extend(chunk.into_iter().filter(|(ip, v)| {
                ip.is_ipv6() && v.action() == Action::Drop && filter_common::live(v.expires_ns, now)
            }));
            true
        })?;
        for (ip, v) in drops {
            if let Some(earned) = self.rotation.on_verdict(ip, v.action(), v.expires_ns) {
                self.network_verdict(&earned);
            }
        }
        Ok(())
    }

    /// Removes expired manual entries (state file, then lists: if the file cannot be written
    /// they stay in both, where the datapath ignores them, until a later sweep), verdicts and
    /// network verdicts, counts what is left (the census), and starts a new list generation:
    /// every cached decision is made again at its source's next SYN, which bounds how long
    /// one cached through a race can outlive its cause.
    pub fn sweep(&mut self) -> Result<()> {
        for e in self.state.take_expired(unix_now())? {
            self.maps.list_remove(e.list, e.net)?;
            tracing::info!(list = ?e.list, net = %e.net, "manual entry expired");
        }
        for net in self.rotation.sweep(clock::now_ns()) {
            self.maps.network_verdict_remove(IpNet::V6(net))?;
            tracing::info!(%net, "network verdict expired");
        }
        self.maps.new_generation()?;
        std::sync::Arc::make_mut(&mut self.shared_origins).prune(crate::fleet::wire::now_ms());
        self.take_census()
    }
}
