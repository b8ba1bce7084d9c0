//! The fleet: MX hosts sharing reputation verdicts and manual blocks and allows through
//! Redis or Valkey (`[fleet]`), so a peer is evaluated once per fleet and an operator's
//! block applies on every host — while each host keeps screening alone when the bus is
//! down.
//!
//! The daemon's main loop owns the maps and the state; this module never touches them. It
//! runs one task ([`link`]) that talks to Redis, and the two talk through channels: the
//! daemon hands it claims, verdicts and manual changes through the [`Fleet`] handle (never
//! waiting), and receives [`FleetEvent`]s to apply.
//!
//! - [`wire`]: the records, their keys, and the checks on everything read from the bus;
//! - [`reconcile`]: the rule for changes made while apart (latest change wins, tombstones);
//! - [`claims`]: one evaluation per new peer per fleet;
//! - [`forget`]: `mxscreen forget` on every host and in Redis (tombstones for verdicts);
//! - [`join`]: what a (re)joining host exchanges; [`link`]: connection, backoff, the loop;
//! - [`offer`]: manual changes offered to Redis, and a change that lost to a later one;
//! - [`receive`]: what arrives from the bus, and another host using this host's name.

pub mod claims;
pub mod forget;
mod join;
mod link;
mod offer;
mod receive;
pub mod reconcile;
pub mod wire;

use std::{
    collections::VecDeque,
    hash::{BuildHasher as _, RandomState},
    net::IpAddr,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use filter_common::Reason;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use self::{
    claims::Claims,
    forget::Forgets,
    link::Link,
    reconcile::Mirror,
    wire::{Keys, Record, Sender, SharedForget, SharedManual, SharedVerdict, now_ms},
};
use crate::{
    config::{
        FleetSection,
        fleet::{check_name, redacted},
    },
    control::protocol::{FleetLink, FleetStatus},
    reputation::{Engine, Submit, Verdict},
    state::ManualEntry,
};

/// Claims and verdicts waiting for the fleet task; beyond, a claim is evaluated here at
/// once and a verdict is not shared (a flood of new peers must not queue without bound).
const COMMAND_QUEUE: usize = 4096;

/// What the fleet tells the daemon. Entries are the winners already (see [`reconcile`]),
/// but not yet checked against this host's protections: the daemon does that.
#[derive(Debug)]
pub enum FleetEvent {
    /// Manual entries or removals (tombstones) from other hosts.
    Manual(Vec<SharedManual>),
    /// Verdicts other hosts made.
    Verdicts(Vec<SharedVerdict>),
    /// Evaluate this new peer here: this host claimed it, or the claimer's verdict did not
    /// come in time, or the link is down.
    Evaluate(IpAddr),
    /// Another host forgot the verdicts inside a prefix: remove the copies held here.
    Forget(SharedForget),
    /// The shared state has been loaded (after every join).
    Synced,
    /// The link went down, or could not come up: screening alone.
    Down,
}

/// What the daemon hands the fleet task (manual changes travel apart, unbounded: they are
/// the operator's, never dropped).
#[derive(Debug)]
enum Command {
    Claim(IpAddr),
    Verdict(SharedVerdict),
    /// A forget made here, with the addresses whose verdicts this host removed.
    Forget(SharedForget, Vec<IpAddr>),
}

/// A manual change made here, and where to say what became of it: `None` once shared (or
/// kept to share on rejoining), else why the fleet did not take it (see [`offer`]).
#[derive(Debug)]
struct ManualChange {
    record: SharedManual,
    reply: Option<oneshot::Sender<Option<String>>>,
}

/// What became of a manual change offered to the fleet (see [`ManualChange`]); the sender
/// dropped without a word means nothing to add (the link went down: it is shared on
/// rejoining).
pub type ChangeOutcome = oneshot::Receiver<Option<String>>;

/// The status watch as the fleet task holds it. However the task ends (a panic past its
/// own recovery, an abort), this is dropped with it and shows the link down: a dead task
/// must never show as a live link, in `status` or in the metrics.
struct StatusTx(watch::Sender<FleetStatus>);

impl std::ops::Deref for StatusTx {
    type Target = watch::Sender<FleetStatus>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for StatusTx {
    fn drop(&mut self) {
        self.0.send_modify(|st| {
            st.link = FleetLink::Down;
            st.since = now_ms() / 1000;
            st.last_error =
                Some("the fleet task has stopped (see the log); restart mxscreen".into());
        });
    }
}

/// Aborts the task when the handle goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The daemon's handle on the fleet; inert when `[fleet]` is off.
pub struct Fleet {
    me: Option<String>,
    cmds: Option<mpsc::Sender<Command>>,
    manual: Option<mpsc::UnboundedSender<ManualChange>>,
    status: Option<watch::Receiver<FleetStatus>>,
    /// Keeps the event channel open when off, so the daemon's receiver just waits.
    _events: Option<mpsc::Sender<FleetEvent>>,
    _task: Option<AbortOnDrop>,
}

impl Fleet {
    /// Starts the fleet task when `[fleet]` is on, seeded with this host's manual entries
    /// (`local`, from the state file). Must be called inside a tokio runtime.
    pub fn start(
        cfg: &FleetSection,
        local: &[ManualEntry],
    ) -> Result<(Self, mpsc::Receiver<FleetEvent>)> {
        let (events_tx, events) = mpsc::channel(1024);
        let Some(endpoint) = cfg.endpoint() else {
            let off = Self {
                me: None,
                cmds: None,
                manual: None,
                status: None,
                _events: Some(events_tx),
                _task: None,
            };
            return Ok((off, events));
        };
        let me = host_name(cfg)?;
        let password = match &cfg.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("fleet.password_file: reading {}", p.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => None,
        };
        // redis's rustls (rediss://) needs a crypto provider; another may be installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let keys = Keys::new(&cfg.prefix);
        let mut mirror = Mirror::new(keys.clone());
        for e in local {
            let m = SharedManual::from_entry(e, &me);
            // As from the bus: a state file written before the checks may hold an entry
            // no host would take (an expiry beyond any entry's), which must not be offered.
            match Record::Manual(m.clone()).check(now_ms()) {
                Ok(()) => {
                    mirror.offer(&m);
                }
                Err(why) => {
                    tracing::warn!(net = %e.net, list = ?e.list, error = %why, "a manual entry of the state file is not shared with the fleet");
                }
            }
        }
        let (status_tx, status) = watch::channel(FleetStatus {
            host: me.clone(),
            redis: redacted(cfg.redis.as_deref().unwrap_or_default()),
            ..Default::default()
        });
        let (cmds_tx, cmds) = mpsc::channel(COMMAND_QUEUE);
        let (manual_tx, manual) = mpsc::unbounded_channel();
        let link = Link {
            endpoint,
            password,
            me: me.clone(),
            sender: Sender {
                host: me.clone(),
                // A number of its own per start (std's randomly keyed hasher, no RNG crate).
                instance: RandomState::new().hash_one(std::process::id()),
            },
            keys,
            mirror,
            outbox: VecDeque::new(),
            forgets: Forgets::default(),
            forgets_out: Vec::new(),
            claims: Claims::default(),
            events: events_tx,
            status: StatusTx(status_tx),
            cmds,
            manual,
            told_down: false,
            clash_logged: None,
        };
        let task = tokio::spawn(link.run());
        tracing::info!(host = %me, redis = %redacted(cfg.redis.as_deref().unwrap_or_default()), "fleet: joining");
        Ok((
            Self {
                me: Some(me),
                cmds: Some(cmds_tx),
                manual: Some(manual_tx),
                status: Some(status),
                _events: None,
                _task: Some(AbortOnDrop(task)),
            },
            events,
        ))
    }

    /// This host's name in the fleet; `None` when the fleet is off.
    pub fn name(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// The link's state and counters; `None` when the fleet is off.
    pub fn status(&self) -> Option<FleetStatus> {
        self.status.as_ref().map(|s| s.borrow().clone())
    }

    /// A watch on the link's state and counters (for the metrics); `None` when off.
    pub fn status_watch(&self) -> Option<watch::Receiver<FleetStatus>> {
        self.status.clone()
    }

    /// Hands a new peer to the fleet to claim; `false` (evaluate it here) when the fleet
    /// is off or its queue is full. While the link is down the fleet answers
    /// [`FleetEvent::Evaluate`] at once.
    pub fn claim(&self, ip: IpAddr) -> bool {
        claim(self.cmds.as_ref(), ip)
    }

    /// Where the MTA's questions send a peer this host knows nothing of: the same claim as
    /// its SYN (see [`NewPeers`]).
    pub fn new_peers(&self, engine: Engine) -> NewPeers {
        NewPeers {
            cmds: self.cmds.clone(),
            engine,
        }
    }

    /// Shares a verdict this host made (reputation and tempfail ones: config-list verdicts
    /// are each host's own).
    pub fn verdict_made(&self, v: &Verdict) {
        let (Some(me), Some(cmds)) = (&self.me, &self.cmds) else {
            return;
        };
        if !matches!(v.reason, Reason::Reputation | Reason::Tempfail) {
            return;
        }
        let now = now_ms();
        let shared = SharedVerdict {
            ip: v.ip.to_canonical(),
            action: v.action,
            source: v.reason,
            score: v.score,
            evidence: v.reasons(),
            expires_ms: now + u64::try_from(v.ttl.as_millis()).unwrap_or(u64::MAX / 2),
            host: me.clone(),
            made_ms: now,
            fcrdns: v.forward_confirmed(),
        };
        if cmds.try_send(Command::Verdict(shared)).is_err() {
            tracing::debug!(ip = %v.ip, "fleet queue full; verdict not shared");
        }
    }

    /// Shares a forget made here: the verdicts inside `net` made before now are void on
    /// every host and in Redis for `lifetime` (as long as such a verdict can live).
    /// `removed`: the addresses whose verdicts this host removed. `false` when the fleet's
    /// queue is full (the forget then holds on this host only).
    pub fn forget(&self, net: ipnet::IpNet, removed: Vec<IpAddr>, lifetime: Duration) -> bool {
        let (Some(me), Some(cmds)) = (&self.me, &self.cmds) else {
            return true;
        };
        let now = now_ms();
        let f = SharedForget {
            net,
            host: me.clone(),
            changed_ms: now,
            until_ms: now.saturating_add(u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX)),
        };
        cmds.try_send(Command::Forget(f, removed)).is_ok()
    }

    /// Shares a manual entry made here (`force`: a block made with --force); `None` when
    /// the fleet is off.
    pub fn manual_set(&self, e: &ManualEntry, force: bool) -> Option<ChangeOutcome> {
        self.manual_change(e, false, force)
    }

    /// Shares the removal of a manual entry made here; `None` when the fleet is off.
    pub fn manual_removed(&self, e: &ManualEntry) -> Option<ChangeOutcome> {
        self.manual_change(e, true, false)
    }

    fn manual_change(&self, e: &ManualEntry, removed: bool, force: bool) -> Option<ChangeOutcome> {
        let (Some(me), Some(tx)) = (&self.me, &self.manual) else {
            return None;
        };
        let record = SharedManual {
            host: me.clone(),
            changed_ms: now_ms(),
            removed,
            force,
            ..SharedManual::from_entry(e, me)
        };
        let (reply, outcome) = oneshot::channel();
        let _ = tx.send(ManualChange {
            record,
            reply: Some(reply),
        });
        Some(outcome)
    }
}

/// Hands `ip` to the fleet task to claim; `false` when the fleet is off or its queue full.
fn claim(cmds: Option<&mpsc::Sender<Command>>, ip: IpAddr) -> bool {
    cmds.is_some_and(|c| c.try_send(Command::Claim(ip)).is_ok())
}

/// A peer nothing is held for, from wherever it is first heard of besides its SYN (the
/// MTA's query socket and policy service, on their own thread): claimed for the fleet like
/// a SYN's peer, so it is evaluated once per fleet whichever comes first — the fleet task
/// answers a second claim for a peer it is already claiming, evaluating or waiting for by
/// doing nothing — else (fleet off, queue full) handed to the engine's budgeted queue.
#[derive(Clone)]
pub struct NewPeers {
    cmds: Option<mpsc::Sender<Command>>,
    engine: Engine,
}

/// What [`NewPeers::submit`] did with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewPeer {
    /// Handed to the fleet, which answers with a verdict or an evaluation here.
    Claimed,
    /// Handed to the engine.
    Evaluated(Submit),
}

impl NewPeers {
    pub fn submit(&self, ip: IpAddr) -> NewPeer {
        if claim(self.cmds.as_ref(), ip) {
            NewPeer::Claimed
        } else {
            NewPeer::Evaluated(self.engine.submit(ip))
        }
    }
}

impl crate::query::oracle::Evaluations for NewPeers {
    fn unknown_peer(&self, ip: IpAddr) -> bool {
        let outcome = self.submit(ip);
        tracing::debug!(%ip, ?outcome, "MTA asked about an unknown peer");
        outcome != NewPeer::Evaluated(Submit::Rejected)
    }

    fn evaluate_again(&self, ip: IpAddr) {
        self.engine.submit(ip);
    }
}

/// `fleet.name`, else the hostname (which must then be a valid fleet name).
fn host_name(cfg: &FleetSection) -> Result<String> {
    if let Some(n) = &cfg.name {
        return Ok(n.clone());
    }
    let host = nix::unistd::gethostname()
        .context("fleet.name is not set and the hostname cannot be read")?
        .to_string_lossy()
        .into_owned();
    if let Err(why) = check_name(&host) {
        bail!("fleet.name is not set and the hostname {host:?} {why}; set fleet.name");
    }
    Ok(host)
}

/// How long a shared entry has left, from its expiry in Unix milliseconds.
pub fn remaining(expires_ms: u64) -> Option<Duration> {
    expires_ms
        .checked_sub(now_ms())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_fleet_task_shows_as_down() {
        let up = FleetStatus {
            link: FleetLink::Up,
            ..Default::default()
        };
        let (tx, rx) = watch::channel(up);
        let tx = StatusTx(tx);
        assert_eq!(rx.borrow().link, FleetLink::Up);
        drop(tx);
        let s = rx.borrow().clone();
        assert_eq!(s.link, FleetLink::Down);
        assert!(s.last_error.unwrap().contains("the fleet task has stopped"));
    }
}
