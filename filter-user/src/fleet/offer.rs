//! Offering manual changes to Redis ([`SET_IF_NEWER`], pipelined), and what becomes of a
//! change made here when the fleet holds a later change of its key: by the rule (see
//! `reconcile`) the fleet's change stays in force on every host, this one included, so it
//! is applied here again, and the operator's command says so rather than plain success.

use redis::aio::MultiplexedConnection;

use super::{
    FleetEvent, ManualChange,
    link::{Link, LinkError, answer},
    reconcile::SET_IF_NEWER,
    wire::{Keys, Record, Sender, SharedManual, ahead, latest_past, now_ms},
};
use crate::{datapath::ListKind, duration};

/// What Redis did with one offered change.
#[derive(Debug)]
pub(super) enum Offer {
    /// Stored and published.
    Stored,
    /// Not stored: Redis holds a later change of the key (this value).
    Kept(Vec<u8>),
    /// Redis answered this one with an error (the others are unaffected).
    Failed(String),
}

/// Offers manual records to Redis with [`SET_IF_NEWER`], as `sender`. One record Redis
/// refuses fails only itself, never the offer of the others (nor a join); `Err` only when
/// the link fails.
pub(super) async fn set_if_newer(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    sender: &Sender,
    records: &[SharedManual],
) -> Result<Vec<Offer>, LinkError> {
    let now = now_ms();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for m in records {
        let r = Record::Manual(m.clone());
        let ttl = r.ttl(now).map_or(0, |t| t.as_millis() as u64);
        pipe.cmd("EVAL")
            .arg(SET_IF_NEWER)
            .arg(2)
            .arg(keys.of(&r))
            .arg(keys.channel())
            .arg(r.encode(Some(sender)))
            .arg(m.changed_ms)
            .arg(&m.host)
            .arg(ttl)
            .arg(latest_past(now));
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = answer(pipe.query_async(conn)).await?;
    let offers = replies.into_iter().zip(records).map(|(reply, m)| {
        let offer = match reply {
            Ok(redis::Value::Int(1)) => Offer::Stored,
            Ok(redis::Value::BulkString(held)) => Offer::Kept(held),
            Ok(other) => Offer::Failed(format!("unexpected answer {other:?}")),
            Err(e) => Offer::Failed(e.to_string()),
        };
        if let Offer::Failed(e) = &offer {
            tracing::warn!(net = %m.net, list = ?m.list, error = %e, "Redis refused a manual entry offered to the fleet");
        }
        offer
    });
    Ok(offers.collect())
}

/// How many offers were stored.
pub(super) fn stored(offers: &[Offer]) -> u64 {
    offers.iter().filter(|o| matches!(o, Offer::Stored)).count() as u64
}

impl Link {
    /// A manual change made here while connected: into the mirror, then into Redis unless
    /// Redis holds a later change of the key — which then wins here too.
    pub(super) async fn push_manual(
        &mut self,
        conn: &mut MultiplexedConnection,
        change: ManualChange,
    ) -> Result<(), LinkError> {
        let ManualChange { record: m, reply } = change;
        self.mirror.offer(&m);
        // On a failure the change waits in the mirror for the rejoin, and the command's
        // reply (dropped) is its plain success.
        let offers = set_if_newer(conn, &self.keys, &self.sender, std::slice::from_ref(&m)).await?;
        let warning = match offers.into_iter().next() {
            Some(Offer::Stored) => {
                self.status.send_modify(|st| st.manual_sent += 1);
                None
            }
            Some(Offer::Kept(held)) => {
                match self.checked(&held, &self.keys.manual(m.list, m.net)) {
                    Some(Record::Manual(w)) => Some(self.later_held(w).await),
                    _ => Some(format!(
                        "Redis keeps a later change of {} that does not check out (logged); the other hosts do not take this one",
                        m.net
                    )),
                }
            }
            Some(Offer::Failed(e)) => Some(format!(
                "Redis refused it ({e}); the other hosts do not take it"
            )),
            None => None,
        };
        if let Some(reply) = reply {
            let _ = reply.send(warning);
        }
        Ok(())
    }

    /// A manual change made here while apart: into the mirror, shared on rejoining — unless
    /// the mirror holds a later change of its key already, which then wins here too.
    pub(super) async fn manual_apart(&mut self, change: ManualChange) {
        let ManualChange { record: m, reply } = change;
        let warning = if self.mirror.offer(&m) {
            None
        } else {
            match self.mirror.held(m.list, m.net).cloned() {
                Some(w) => Some(self.later_held(w).await),
                None => None,
            }
        };
        if let Some(reply) = reply {
            let _ = reply.send(warning);
        }
    }

    /// The fleet holds `w`, a later change of a key than one just made here: `w` stays in
    /// force, here too (the daemon applies it again). Returns the operator's warning.
    async fn later_held(&mut self, w: SharedManual) -> String {
        self.mirror.offer(&w);
        let warning = later_change(&w, now_ms());
        tracing::warn!(net = %w.net, list = ?w.list, host = %w.host, "a manual change made here lost to a later change the fleet holds");
        self.send(FleetEvent::Manual(vec![w])).await;
        warning
    }
}

/// The sentence for a change made here that lost to `w`, the later change of its key the
/// fleet holds.
fn later_change(w: &SharedManual, now_ms: u64) -> String {
    let what = match (w.list, w.removed) {
        (ListKind::Deny, false) => "a block",
        (ListKind::Deny, true) => "an unblock",
        (ListKind::Allow, false) => "an allow",
        (ListKind::Allow, true) => "a removal from the allow list",
    };
    let when = if w.changed_ms > now_ms {
        format!("{} ahead of this host's clock", ahead(w.changed_ms, now_ms))
    } else {
        let ago = std::time::Duration::from_millis(now_ms - w.changed_ms);
        format!("{} ago", duration::format(ago))
    };
    format!(
        "the fleet holds a later change of {}, {what} made on {} ({when}), and the latest change wins: it stays in force on every host, this one included",
        w.net, w.host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_change_names_the_winner_and_its_time() {
        let w = SharedManual {
            list: ListKind::Deny,
            net: "192.0.2.27/32".parse().unwrap(),
            reason: None,
            created: 0,
            expires: None,
            host: "mx9".into(),
            changed_ms: 120_000,
            removed: false,
            force: false,
        };
        let s = later_change(&w, 0);
        assert!(
            s.contains("192.0.2.27/32, a block made on mx9 (2m ahead of this host's clock)"),
            "{s}"
        );
        assert!(later_change(&w, 180_000).contains("(1m ago)"));
    }
}
