//! The fleet task: one connection for commands and one subscribed to the change channel,
//! re-made with backoff whenever either fails. While connected it pushes this host's
//! changes and claims; on every (re)join it offers Redis what this host holds, loads what
//! the fleet holds and reports it to the daemon before saying `Synced`. While apart it
//! keeps the daemon screening alone: claims are answered "evaluate here" at once, verdicts
//! wait in a bounded outbox, manual changes in the mirror.

use std::{collections::VecDeque, panic::AssertUnwindSafe, time::Duration};

use futures::{FutureExt as _, StreamExt as _};
use redis::{AsyncConnectionConfig, Client, aio::MultiplexedConnection};
use tokio::{
    sync::mpsc,
    time::{Instant, sleep, sleep_until, timeout},
};

use super::{
    Command, FleetEvent, ManualChange,
    claims::{CLAIM_WAIT, Claims},
    forget::Forgets,
    join::{self, MARKER_CHECK_EVERY},
    reconcile::Mirror,
    wire::{Keys, Record, Sender, SharedForget, SharedVerdict, now_ms},
};
use crate::{config::fleet::Endpoint, control::protocol::FleetLink};

/// Connecting (TCP, TLS, AUTH, SUBSCRIBE) and each command must answer within these.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle link is checked (a paused or half-dead Redis shows here).
const PING_EVERY: Duration = Duration::from_secs(1);
/// Reconnection backoff: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Verdicts made while apart, pushed on rejoin; the oldest are dropped beyond this.
const OUTBOX_MAX: usize = 10_000;

pub(super) type LinkError = String;

pub(super) struct Link {
    pub endpoint: Endpoint,
    pub password: Option<String>,
    pub me: String,
    /// This process, as it signs what it writes: `me` and a number drawn at start.
    pub sender: Sender,
    pub keys: Keys,
    pub mirror: Mirror,
    pub outbox: VecDeque<SharedVerdict>,
    /// The forgets known here (tombstones for verdicts), and those made while apart.
    pub forgets: Forgets,
    pub forgets_out: Vec<(SharedForget, Vec<std::net::IpAddr>)>,
    pub claims: Claims,
    pub events: mpsc::Sender<FleetEvent>,
    pub status: super::StatusTx,
    pub cmds: mpsc::Receiver<Command>,
    pub manual: mpsc::UnboundedReceiver<ManualChange>,
    /// Whether the daemon has been told the link is down (once per outage).
    pub told_down: bool,
    /// When another host using this host's name was last logged.
    pub clash_logged: Option<Instant>,
}

/// A live link: the command connection and the subscription's messages.
pub(super) struct Session {
    pub conn: MultiplexedConnection,
    messages: redis::aio::PubSubStream,
}

/// Maps any error (redis, timeout) to the one line the status shows.
pub(super) fn err(e: impl std::fmt::Display) -> LinkError {
    e.to_string()
}

/// Awaits Redis's answer to a command or pipeline (`cmd.query_async(conn)`), at most
/// [`RESPONSE_TIMEOUT`].
pub(super) async fn answer<T>(
    reply: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, LinkError> {
    timeout(RESPONSE_TIMEOUT, reply)
        .await
        .map_err(|_| "Redis did not answer in time".to_owned())?
        .map_err(err)
}

/// The client for the primary: the URL's server, or the one the Sentinels name now.
async fn client(endpoint: &Endpoint, password: Option<&str>) -> Result<Client, LinkError> {
    match endpoint {
        Endpoint::Direct(info) => {
            let mut info = info.clone();
            if let Some(pw) = password {
                let settings = info.redis_settings().clone().set_password(pw);
                info = info.set_redis_settings(settings);
            }
            Client::open(info).map_err(err)
        }
        Endpoint::Sentinel {
            sentinels,
            master,
            db,
            tls,
            password: url_password,
        } => {
            use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
            let mut b = SentinelClientBuilder::new(
                sentinels.clone(),
                master.clone(),
                SentinelServerType::Master,
            )
            .map_err(err)?
            .set_client_to_redis_db(*db);
            if let Some(pw) = password.or(url_password.as_deref()) {
                b = b.set_client_to_redis_password(pw);
            }
            if *tls {
                b = b
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            }
            let mut sentinel = b.build().map_err(err)?;
            sentinel.async_get_client().await.map_err(err)
        }
    }
}

/// Connects both connections and subscribes to the change channel (before anything is
/// loaded, so no change published meanwhile is missed).
async fn connect(
    endpoint: Endpoint,
    password: Option<String>,
    channel: String,
) -> Result<Session, LinkError> {
    let work = async {
        let client = client(&endpoint, password.as_deref()).await?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(err)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(err)?;
        pubsub.subscribe(&channel).await.map_err(err)?;
        Ok(Session {
            conn,
            messages: pubsub.into_on_message(),
        })
    };
    timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| format!("no answer within {CONNECT_TIMEOUT:?}"))?
}

impl Link {
    /// Serves the link until the daemon goes away. A panic in it (a bug: nothing on the
    /// bus may cause one) is logged, shown (`status`: down, with the error; the metrics
    /// alike), and the link is served again after the backoff, as after any failure:
    /// the host screens alone meanwhile, and rejoins.
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let Err(panic) = AssertUnwindSafe(self.serve(&mut backoff))
                .catch_unwind()
                .await
            else {
                return; // the daemon is gone
            };
            let why = format!(
                "the fleet task failed ({}); it was restarted",
                panic_message(panic.as_ref())
            );
            tracing::error!(error = %why, "fleet task failed; restarting it");
            self.status.send_modify(|st| st.task_restarts += 1);
            self.down(why).await;
            if !self.apart(&mut backoff).await {
                return;
            }
        }
    }

    /// Connects, joins and serves the link, again after each failure; returns when the
    /// daemon goes away.
    async fn serve(&mut self, backoff: &mut Duration) {
        loop {
            let attempt = connect(
                self.endpoint.clone(),
                self.password.clone(),
                self.keys.channel(),
            );
            tokio::pin!(attempt);
            let connected = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    c = self.cmds.recv() => match c {
                        Some(c) => self.offline(c).await,
                        None => return,
                    },
                    Some(m) = self.manual.recv() => self.manual_apart(m).await,
                }
            };
            let why = match connected {
                Ok(session) => match self.session(session, backoff).await {
                    Ok(()) => return, // the daemon is gone
                    Err(e) => e,
                },
                Err(e) => e,
            };
            self.down(why).await;
            if !self.apart(backoff).await {
                return;
            }
        }
    }

    /// Waits out the backoff (doubling it), serving the daemon's commands as while apart;
    /// `false` when the daemon went away meanwhile.
    async fn apart(&mut self, backoff: &mut Duration) -> bool {
        let pause = sleep(*backoff);
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => return true,
                c = self.cmds.recv() => match c {
                    Some(c) => self.offline(c).await,
                    None => return false,
                },
                Some(m) = self.manual.recv() => self.manual_apart(m).await,
            }
        }
    }

    /// Joins the fleet, then serves the link until it fails (`Err`) or the daemon goes
    /// away (`Ok`).
    async fn session(&mut self, mut s: Session, backoff: &mut Duration) -> Result<(), LinkError> {
        join::join(self, &mut s.conn).await?;
        *backoff = BACKOFF_FIRST;
        self.told_down = false;
        self.status.send_modify(|st| {
            st.link = FleetLink::Up;
            st.since = now_ms() / 1000;
            st.connects += 1;
        });
        tracing::info!(host = %self.me, manual = self.mirror.len(), "fleet link up; shared state loaded");
        self.send(FleetEvent::Synced).await;
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut marker = tokio::time::interval(MARKER_CHECK_EVERY);
        marker.reset(); // joined just now: the first check one interval from now
        loop {
            let deadline = self.claims.next_deadline();
            tokio::select! {
                msg = s.messages.next() => match msg {
                    Some(m) => self.on_message(m.get_payload_bytes()).await,
                    None => return Err("the connection to Redis was closed".into()),
                },
                c = self.cmds.recv() => match c {
                    Some(c) => self.online(&mut s.conn, c).await?,
                    None => return Ok(()),
                },
                Some(m) = self.manual.recv() => self.push_manual(&mut s.conn, m).await?,
                _ = marker.tick() => self.check_marker(&mut s.conn).await?,
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    for ip in self.claims.due(Instant::now()) {
                        self.status.send_modify(|st| st.claims_timed_out += 1);
                        tracing::debug!(%ip, "no fleet verdict in time; evaluating here");
                        self.evaluate_here(ip).await;
                    }
                }
                _ = ping.tick() => {
                    answer::<String>(redis::cmd("PING").query_async(&mut s.conn)).await?;
                    self.mirror.prune(now_ms());
                    self.forgets.prune(now_ms());
                }
            }
        }
    }

    /// The link is down: tell the daemon once per outage, and evaluate every peer that
    /// was waiting for another host's verdict here.
    async fn down(&mut self, why: LinkError) {
        self.status.send_modify(|st| {
            if st.link == FleetLink::Up || st.since == 0 {
                st.since = now_ms() / 1000;
            }
            st.link = FleetLink::Down;
            st.last_error = Some(why.clone());
        });
        if !self.told_down {
            self.told_down = true;
            tracing::warn!(error = %why, "fleet link down; screening alone, retrying with backoff");
            self.send(FleetEvent::Down).await;
        } else {
            tracing::debug!(error = %why, "fleet link still down");
        }
        for ip in self.claims.drain() {
            self.evaluate_here(ip).await;
        }
    }

    /// Tells the daemon to evaluate `ip` here, and remembers it until its verdict so that
    /// a second claim (its SYN on the other program, the MTA's question) changes nothing.
    async fn evaluate_here(&mut self, ip: std::net::IpAddr) {
        self.claims.ours(ip, Instant::now());
        self.send(FleetEvent::Evaluate(ip)).await;
    }

    /// A command while apart: a new peer is evaluated here, once.
    async fn offline(&mut self, c: Command) {
        match c {
            Command::Claim(ip) if self.claims.is_open(ip) => {}
            Command::Claim(ip) => self.evaluate_here(ip).await,
            Command::Verdict(v) => {
                self.claims.settled(v.ip);
                if self.outbox.len() >= OUTBOX_MAX {
                    self.outbox.pop_front();
                }
                self.outbox.push_back(v);
            }
            Command::Forget(f, removed) => {
                self.forgets.note(&f);
                self.forgets_out.push((f, removed));
            }
        }
    }

    /// A command while connected.
    async fn online(
        &mut self,
        conn: &mut MultiplexedConnection,
        c: Command,
    ) -> Result<(), LinkError> {
        match c {
            // Claimed already (its SYN and the MTA's question, or both programs' SYNs):
            // being evaluated here or awaited from another host.
            Command::Claim(ip) if self.claims.is_open(ip) => {}
            Command::Claim(ip) => {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(self.keys.claim(ip))
                    .arg(&self.me)
                    .arg("NX")
                    .arg("PX")
                    .arg(CLAIM_WAIT.as_millis() as u64)
                    .cmd("GET")
                    .arg(self.keys.verdict(ip));
                let (won, held): (Option<String>, Option<Vec<u8>>) =
                    match answer(pipe.query_async(conn)).await {
                        Ok(r) => r,
                        Err(e) => {
                            // The link fails under this peer: it is evaluated here.
                            self.evaluate_here(ip).await;
                            return Err(e);
                        }
                    };
                let held = held.and_then(|b| match self.checked(&b, &self.keys.verdict(ip)) {
                    Some(Record::Verdict(v)) if !self.forgets.voids(&v) => Some(v),
                    _ => None,
                });
                if let Some(v) = held {
                    // Evaluated by the fleet already (this host lost it in a restart).
                    self.send(FleetEvent::Verdicts(vec![v])).await;
                } else if won.is_some() {
                    self.status.send_modify(|st| st.claims_won += 1);
                    self.evaluate_here(ip).await;
                } else {
                    self.status.send_modify(|st| st.claims_lost += 1);
                    if !self.claims.wait(ip, Instant::now()) {
                        self.evaluate_here(ip).await;
                    }
                }
            }
            Command::Verdict(v) => {
                self.claims.settled(v.ip);
                self.push_verdict(conn, v).await?;
            }
            Command::Forget(f, removed) => self.push_forget(conn, f, &removed).await?,
        }
        Ok(())
    }

    /// Stores and publishes a verdict (unless it has expired meanwhile).
    pub(super) async fn push_verdict(
        &mut self,
        conn: &mut MultiplexedConnection,
        v: SharedVerdict,
    ) -> Result<(), LinkError> {
        if self.forgets.voids(&v) {
            return Ok(());
        }
        let r = Record::Verdict(v);
        let Some(ttl) = r.ttl(now_ms()).filter(|_| !r.expired(now_ms())) else {
            return Ok(());
        };
        let body = r.encode(Some(&self.sender));
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.of(&r))
            .arg(&body)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.keys.channel())
            .arg(&body)
            .ignore();
        answer::<()>(pipe.query_async(conn)).await?;
        self.status.send_modify(|st| st.verdicts_sent += 1);
        Ok(())
    }

    pub(super) async fn send(&self, ev: FleetEvent) {
        // The daemon gone means shutdown; the command channel closing ends this task.
        let _ = self.events.send(ev).await;
    }
}

/// What a panic carried, for the log and `status`.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_told_by_its_message() {
        let p =
            std::panic::catch_unwind(|| panic!("attempt to multiply with overflow")).unwrap_err();
        assert_eq!(
            panic_message(p.as_ref()),
            "attempt to multiply with overflow"
        );
        let n = 7;
        let p = std::panic::catch_unwind(|| panic!("{n} left")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "7 left");
    }
}
