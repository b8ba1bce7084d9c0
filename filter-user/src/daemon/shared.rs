//! What the daemon does with the fleet's events: shared manual entries into the state file
//! and the tries, shared verdicts into the verdict map — each checked exactly as a local
//! one (a shared block never covers a protected address, nor is wider than this host's
//! `control.widest_block_*` unless it was forced) — and new peers the fleet says to
//! evaluate here into the engine.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use filter_common::{ListEntry, Reason, Verdict as MapVerdict};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Daemon, protect, reactor::boot_expiry};
use crate::{
    datapath::{ListKind, clock},
    fleet::{
        self, FleetEvent,
        wire::{SharedManual, SharedVerdict},
    },
    state::unix_now,
};

/// Which host made each verdict this host took from the fleet (for `list`), by index into
/// a short table of host names: a fleet has a handful of hosts and the map may hold a
/// million verdicts.
#[derive(Clone, Debug, Default)]
pub struct SharedOrigins {
    hosts: Vec<String>,
    by_ip: HashMap<IpAddr, (u16, u64)>,
}

impl SharedOrigins {
    fn insert(&mut self, ip: IpAddr, host: &str, expires_ms: u64) {
        let i = match self.hosts.iter().position(|h| h == host) {
            Some(i) => i,
            None => {
                self.hosts.push(host.to_owned());
                self.hosts.len() - 1
            }
        };
        // A fleet of more than 65 535 host names: the rest show no origin.
        if let Ok(i) = u16::try_from(i) {
            self.by_ip.insert(ip, (i, expires_ms));
        }
    }

    /// This host made a verdict of its own for `ip`.
    pub fn forget(&mut self, ip: IpAddr) {
        self.by_ip.remove(&ip);
    }

    pub fn host(&self, ip: IpAddr) -> Option<&str> {
        self.by_ip
            .get(&ip)
            .map(|(i, _)| self.hosts[usize::from(*i)].as_str())
    }

    /// Forgets verdicts expired at `now_ms` (the sweep).
    pub fn prune(&mut self, now_ms: u64) {
        self.by_ip.retain(|_, (_, exp)| *exp > now_ms);
    }
}

impl Daemon {
    /// Waits, before the daemon says it is ready, until the fleet has delivered the shared
    /// state or said the bus cannot be reached (then this host starts alone).
    pub async fn join_fleet(&mut self, events: &mut mpsc::Receiver<FleetEvent>) {
        if self.fleet.name().is_none() {
            return;
        }
        // The datapath fails open without heartbeats; a long join keeps it screening.
        let mut beat = tokio::time::interval(super::reactor::BEAT_EVERY);
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

    pub fn on_fleet(&mut self, ev: FleetEvent) {
        match ev {
            FleetEvent::Manual(records) => self.apply_shared_manual(records),
            FleetEvent::Verdicts(verdicts) => {
                for v in verdicts {
                    self.apply_shared_verdict(&v);
                }
            }
            FleetEvent::Evaluate(ip) => {
                let outcome = self.engine.submit(ip);
                tracing::debug!(%ip, ?outcome, "new peer (evaluated here for the fleet)");
            }
            FleetEvent::Forget(f) => self.forget_shared(&f),
            FleetEvent::Synced | FleetEvent::Down => {}
        }
    }

    fn apply_shared_manual(&mut self, records: Vec<SharedManual>) {
        let me = self.fleet.name().unwrap_or_default().to_owned();
        let now = unix_now();
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
                && let Err(e) = self.check_block(m.net, m.force)
            {
                self.fleet_refused += 1;
                self.publish();
                tracing::warn!(net = %m.net, host = %m.host, error = %format!("{e:#}"), "refusing a block shared by the fleet");
                continue;
            }
            let entry = m.to_entry(&me);
            if self.state.get(m.list, m.net) != Some(&entry) {
                upserts.push(entry);
            }
        }
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        let gone: Vec<(ListKind, IpNet)> = removals.iter().map(|(l, n, _)| (*l, *n)).collect();
        // As for local changes the state file comes first; if it cannot be written the
        // entries are still enforced (the fleet holds them) and the error is logged.
        if let Err(e) = self.state.merge(upserts.clone(), &gone) {
            tracing::error!(error = %format!("{e:#}"), "could not save shared manual entries in the state file");
        }
        for e in upserts {
            let entry = ListEntry::new(Reason::Manual, boot_expiry(e.expires));
            match self.maps.list_insert(e.list, e.net, entry) {
                Ok(()) => {
                    tracing::info!(list = ?e.list, net = %e.net, host = e.origin.as_deref().unwrap_or(&me), reason = e.reason.as_deref().unwrap_or(""), "manual entry added by the fleet")
                }
                Err(err) => {
                    tracing::warn!(net = %e.net, error = %err, "could not apply a shared manual entry")
                }
            }
        }
        for (list, net, host) in removals {
            if let Err(err) = self.maps.list_remove(list, net) {
                tracing::warn!(%net, error = %err, "could not remove a shared manual entry");
            }
            tracing::info!(?list, %net, %host, "manual entry removed by the fleet");
        }
    }

    fn apply_shared_verdict(&mut self, v: &SharedVerdict) {
        if protect::fully_protected(&self.protected, &IpNet::from(v.ip)).is_some() {
            tracing::debug!(ip = %v.ip, host = %v.host, "shared verdict for a protected address ignored");
            return;
        }
        let Some(left) = fleet::remaining(v.expires_ms) else {
            return;
        };
        let entry = MapVerdict::new(v.action, v.source, clock::expiry_after(left));
        if let Err(e) = self.maps.verdict_set(v.ip, entry) {
            tracing::warn!(ip = %v.ip, error = %e, "could not store a shared verdict");
            return;
        }
        Arc::make_mut(&mut self.shared_origins).insert(v.ip, &v.host, v.expires_ms);
        tracing::debug!(
            target: "mxscreen::fleet",
            action = v.action.name(),
            ip = %v.ip,
            score = v.score,
            reasons = %v.evidence,
            ttl = left.as_secs(),
            host = %v.host,
            "verdict from the fleet"
        );
    }
}
