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
//! [`SET_IF_NEWER`]: super::reconcile::SET_IF_NEWER

use redis::aio::MultiplexedConnection;

use super::{
    FleetEvent,
    link::{Link, LinkError, answer, set_if_newer},
    wire::{Record, SharedManual, SharedVerdict, now_ms},
};

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
        offered += set_if_newer(conn, &link.keys, chunk).await?;
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
    Ok(())
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
                    link.forget_received(f).await;
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(());
        }
    }
}
