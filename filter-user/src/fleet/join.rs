//! Joining (or rejoining) the fleet, in this order:
//!
//! 1. offer Redis every manual entry and tombstone this host holds ([`SET_IF_NEWER`]: the
//!    ones made while apart win where they are later, and a Redis that lost its data is
//!    filled again), and push the forgets made while apart;
//! 2. load the fleet's forgets, then push the verdicts made while apart that no forget
//!    voids;
//! 3. load every shared entry and tell the daemon what it does not hold yet: manual
//!    changes later than its own, and every verdict (its own too: a host may come back
//!    with empty maps).
//!
//! The subscription is already open, so a change published meanwhile arrives afterwards and
//! meets the same rule.
//!
//! A joined host leaves a marker key in Redis (`PREFIX:host:NAME`, without expiry, so no
//! `volatile-*` eviction takes it) and checks it is still there every
//! [`MARKER_CHECK_EVERY`]: a Redis emptied without the connection dropping (`FLUSHALL`, a
//! failover that keeps the connection) is joined again, and so filled again, within that.
//!
//! [`SET_IF_NEWER`]: super::reconcile::SET_IF_NEWER

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{
    FleetEvent,
    link::{Link, LinkError, answer},
    offer::{set_if_newer, stored},
    wire::{Record, SharedManual, SharedVerdict, now_ms},
};

/// How often a joined host checks its marker key. One `EXISTS` per host every 5 s is
/// nothing for Redis, and a Redis that lost its data holds the hosts' manual entries again
/// within seconds — before a host restarting meanwhile is likely to need them.
pub(super) const MARKER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Keys asked per SCAN step and per MGET; records per event to the daemon.
const BATCH: usize = 512;

pub(super) async fn join(
    link: &mut Link,
    conn: &mut MultiplexedConnection,
) -> Result<(), LinkError> {
    link.mirror.prune(now_ms());
    let ours: Vec<SharedManual> = link.mirror.all().cloned().collect();
    let mut offered = 0;
    for chunk in ours.chunks(BATCH) {
        offered += stored(&set_if_newer(conn, &link.keys, &link.sender, chunk).await?);
    }
    for (f, removed) in std::mem::take(&mut link.forgets_out) {
        link.push_forget(conn, f, &removed).await?;
    }
    load_forgets(link, conn).await?;
    let outbox: Vec<SharedVerdict> = link.outbox.drain(..).collect();
    let pushed = outbox.len();
    for v in outbox {
        link.push_verdict(conn, v).await?;
    }
    link.status.send_modify(|st| st.manual_sent += offered);

    let (mut manual, mut verdicts, mut voided) = (Vec::new(), Vec::new(), Vec::new());
    let now = now_ms();
    for pattern in link.keys.patterns() {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = answer(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(conn),
            )
            .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    answer(redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
                for (key, value) in keys.iter().zip(values) {
                    match value.and_then(|b| link.checked(&b, key)) {
                        Some(Record::Manual(m)) if link.mirror.offer(&m) => manual.push(m),
                        Some(Record::Verdict(v)) if link.forgets.voids(&v) => {
                            voided.push(key.clone())
                        }
                        // This host's own verdicts too: its maps may have been lost.
                        Some(Record::Verdict(v)) if !Record::Verdict(v.clone()).expired(now) => {
                            verdicts.push(v)
                        }
                        _ => {}
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    link.delete_voided(conn, &voided).await?;
    tracing::info!(
        offered,
        pushed_verdicts = pushed,
        voided = voided.len(),
        manual = manual.len(),
        verdicts = verdicts.len(),
        "fleet state exchanged"
    );
    link.status.send_modify(|st| {
        st.manual_received += manual.len() as u64;
        st.verdicts_received += verdicts.len() as u64;
    });
    while !manual.is_empty() {
        let rest = manual.split_off(manual.len().min(BATCH));
        link.send(FleetEvent::Manual(std::mem::replace(&mut manual, rest)))
            .await;
    }
    while !verdicts.is_empty() {
        let rest = verdicts.split_off(verdicts.len().min(BATCH));
        link.send(FleetEvent::Verdicts(std::mem::replace(&mut verdicts, rest)))
            .await;
    }
    let marker = format!("{} {}", link.sender.instance, now_ms());
    answer::<()>(
        redis::cmd("SET")
            .arg(link.keys.marker(&link.me))
            .arg(marker)
            .query_async(conn),
    )
    .await
}

impl Link {
    /// Joins again when this host's marker key is gone: Redis lost the fleet's data.
    pub(super) async fn check_marker(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), LinkError> {
        let held: bool = answer(
            redis::cmd("EXISTS")
                .arg(self.keys.marker(&self.me))
                .query_async(conn),
        )
        .await?;
        if !held {
            tracing::warn!(
                key = %self.keys.marker(&self.me),
                "Redis lost the fleet's data (this host's marker key is gone: FLUSHALL, or a failover to an empty server); offering it what this host holds again"
            );
            self.status.send_modify(|st| st.refills += 1);
            join(self, conn).await?;
        }
        Ok(())
    }
}

/// Every forget the fleet holds, noted (and told to the daemon when news) before any
/// verdict is pushed or loaded.
async fn load_forgets(link: &mut Link, conn: &mut MultiplexedConnection) -> Result<(), LinkError> {
    let pattern = link.keys.forget_pattern();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = answer(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn),
        )
        .await?;
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> =
                answer(redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
            for (key, value) in keys.iter().zip(values) {
                if let Some(Record::Forget(f)) = value.and_then(|b| link.checked(&b, key)) {
                    let ours = f.host == link.me;
                    link.forget_received(f, ours).await;
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}
