//! The fleet bridge: the daemon's door to the fleet. It shares what this host decides (its
//! verdicts, its manual entries), claims new peers, and takes what the fleet sends: shared
//! verdicts into the verdict map — never over a protected address — remembering which host
//! made each, and a count of the shared entries this host refused. (Shared manual entries go
//! to the list owner, checked exactly as local ones; peers the fleet says to evaluate here
//! go to the engine: see `reactor`.)

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use filter_common::PeerVerdict;
use ipnet::IpNet;

use super::protect::{self, Protected};
use crate::{
    control::protocol::FleetStatus,
    datapath::{Datapath, clock},
    fleet::{self, Fleet, wire::SharedVerdict},
    reputation::{PolicyConfig, Verdict},
    state::ManualEntry,
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
    fn forget(&mut self, ip: IpAddr) {
        self.by_ip.remove(&ip);
    }

    pub fn host(&self, ip: IpAddr) -> Option<&str> {
        self.by_ip
            .get(&ip)
            .map(|(i, _)| self.hosts[usize::from(*i)].as_str())
    }

    /// Forgets verdicts expired at `now_ms` (the sweep).
    fn prune(&mut self, now_ms: u64) {
        self.by_ip.retain(|_, (_, exp)| *exp > now_ms);
    }
}

pub struct FleetBridge {
    /// The fleet handle (inert when `[fleet]` is off).
    fleet: Fleet,
    /// Which fleet host made each verdict taken from the fleet (shared with a running
    /// `list`, copied on write).
    origins: Arc<SharedOrigins>,
    /// Shared entries refused by this host's checks.
    refused: u64,
}

impl FleetBridge {
    pub fn new(fleet: Fleet) -> Self {
        Self {
            fleet,
            origins: Arc::default(),
            refused: 0,
        }
    }

    /// This host's name in the fleet; `None` when `[fleet]` is off.
    pub fn name(&self) -> Option<&str> {
        self.fleet.name()
    }

    /// Hands a new peer to the fleet to claim (see [`Fleet::claim`]).
    pub fn claim(&self, ip: IpAddr) -> bool {
        self.fleet.claim(ip)
    }

    /// This host made a verdict of its own: it is no longer the fleet's, and is shared.
    pub fn verdict_made(&mut self, v: &Verdict) {
        if self.origins.host(v.ip).is_some() {
            Arc::make_mut(&mut self.origins).forget(v.ip);
        }
        self.fleet.verdict_made(v);
    }

    pub fn manual_set(&self, e: &ManualEntry, force: bool) -> Option<fleet::ChangeOutcome> {
        self.fleet.manual_set(e, force)
    }

    pub fn manual_removed(&self, e: &ManualEntry) -> Option<fleet::ChangeOutcome> {
        self.fleet.manual_removed(e)
    }

    /// The link's state and counters, with the refusals; `None` when the fleet is off.
    pub fn status(&self) -> Option<Box<FleetStatus>> {
        self.fleet.status().map(|mut f| {
            f.refused = self.refused;
            Box::new(f)
        })
    }

    /// A watch on the link's state and counters (for the metrics); `None` when off.
    pub fn status_watch(&self) -> Option<tokio::sync::watch::Receiver<FleetStatus>> {
        self.fleet.status_watch()
    }

    /// Where the MTA's questions send a peer this host knows nothing of: the same claim as
    /// its SYN.
    pub fn new_peers(&self, engine: crate::reputation::Engine) -> fleet::NewPeers {
        self.fleet.new_peers(engine)
    }

    /// Shared entries refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// `n` more shared entries refused.
    pub fn count_refused(&mut self, n: u64) {
        self.refused += n;
    }

    /// Which host made each verdict taken from the fleet.
    pub fn origins(&self) -> &Arc<SharedOrigins> {
        &self.origins
    }

    /// `mxscreen forget` here: the verdicts of `ips` are no longer the fleet's.
    pub fn forget_origins(&mut self, ips: &[IpAddr]) {
        let origins = Arc::make_mut(&mut self.origins);
        for ip in ips {
            origins.forget(*ip);
        }
    }

    /// `mxscreen forget` for the fleet: a tombstone for `net` (see [`Fleet::forget`]); false
    /// when the fleet's queue is full.
    pub fn forget(&self, net: IpNet, removed: Vec<IpAddr>, lifetime: std::time::Duration) -> bool {
        self.fleet.forget(net, removed, lifetime)
    }

    /// Forgets the origins of verdicts expired by now (the sweep).
    pub fn prune_origins(&mut self) {
        Arc::make_mut(&mut self.origins).prune(fleet::wire::now_ms());
    }

    /// A verdict another host made: into the verdict map, unless it covers a protected
    /// address or has expired on its way; kept no longer than this host keeps a verdict of
    /// its own ([`PolicyConfig::longest_verdict`]).
    pub fn apply_verdict(
        &mut self,
        maps: &mut dyn Datapath,
        protected: &[Protected],
        v: &SharedVerdict,
        policy: &PolicyConfig,
    ) {
        if protect::fully_protected(protected, &IpNet::from(v.ip)).is_some() {
            tracing::debug!(ip = %v.ip, host = %v.host, "shared verdict for a protected address ignored");
            return;
        }
        let until = v.kept_until(policy.longest_verdict(), fleet::wire::now_ms());
        let Some(left) = fleet::remaining(until) else {
            return;
        };
        let explain_to = policy.explain_to;
        let mut entry = PeerVerdict::new(v.action, v.source, clock::expiry_after(left));
        entry.flags = super::verdicts::explain_flags(v.action, v.source, v.fcrdns, explain_to);
        if let Err(e) = maps.verdict_set(v.ip, entry) {
            tracing::warn!(ip = %v.ip, error = %e, "could not store a shared verdict");
            return;
        }
        Arc::make_mut(&mut self.origins).insert(v.ip, &v.host, until);
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
