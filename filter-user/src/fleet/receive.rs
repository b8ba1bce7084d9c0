//! What arrives from the bus: every record decoded and checked ([`decode`]), then taken
//! unless it is this process's own. Each process signs what it sends (its name and a
//! number drawn at start, [`Sender`]), so a message with this host's name from another
//! process is another host using the same name — shared with like any other, and reported.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    FleetEvent,
    link::Link,
    wire::{Malformed, Record, Sent, decode, now_ms},
};

/// At most one log line per this interval about another host using this host's name.
const CLASH_LOG_EVERY: Duration = Duration::from_secs(60);

impl Link {
    /// A change published by another host (or by another process using this host's name:
    /// shared like any other host's, and reported).
    pub(super) async fn on_message(&mut self, payload: &[u8]) {
        let Some(Sent { record, sender }) = self.checked_sent(payload, "") else {
            return;
        };
        let ours = match &sender {
            Some(s) if *s == self.sender => true,
            Some(s) => {
                if s.host == self.me {
                    self.name_clash();
                }
                false
            }
            // An older host's record says only which host made it.
            None => match &record {
                Record::Verdict(v) => v.host == self.me,
                Record::Manual(m) => m.host == self.me,
                Record::Forget(f) => f.host == self.me,
            },
        };
        match record {
            Record::Verdict(v)
                if !ours
                    && !Record::Verdict(v.clone()).expired(now_ms())
                    && !self.forgets.voids(&v) =>
            {
                self.claims.settled(v.ip);
                self.status.send_modify(|st| st.verdicts_received += 1);
                self.send(FleetEvent::Verdicts(vec![v])).await;
            }
            Record::Manual(m) if !ours && self.mirror.offer(&m) => {
                self.status.send_modify(|st| st.manual_received += 1);
                self.send(FleetEvent::Manual(vec![m])).await;
            }
            Record::Forget(f) => self.forget_received(f, ours).await,
            _ => {}
        }
    }

    /// Another process publishes under this host's fleet name (two hosts with one name,
    /// e.g. cloned VMs keeping one hostname): counted, shown by `status`, logged at most
    /// once per [`CLASH_LOG_EVERY`].
    fn name_clash(&mut self) {
        self.status.send_modify(|st| {
            st.name_clashes += 1;
            st.name_clash_at = Some(now_ms() / 1000);
        });
        if self
            .clash_logged
            .is_none_or(|t| t.elapsed() >= CLASH_LOG_EVERY)
        {
            self.clash_logged = Some(Instant::now());
            tracing::warn!(name = %self.me, "another host uses the fleet name {}: set a distinct fleet.name on each host", self.me);
        }
    }

    /// Decodes a record from the bus, an IPv4-mapped address in it as its IPv4 form; a
    /// malformed one (or one stored under another key than its own, when `key` is given)
    /// is logged, counted and `None`.
    pub(super) fn checked(&self, bytes: &[u8], key: &str) -> Option<Record> {
        self.checked_sent(bytes, key).map(|s| s.record)
    }

    /// [`Self::checked`], with the record's sender.
    fn checked_sent(&self, bytes: &[u8], key: &str) -> Option<Sent> {
        let result = decode(bytes).and_then(|s| {
            if key.is_empty() || self.keys.of(&s.record) == key {
                Ok(Sent {
                    record: s.record.unmapped()?,
                    sender: s.sender,
                })
            } else {
                Err(Malformed(format!("stored under {key}, not its own key")))
            }
        });
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                self.status.send_modify(|st| st.malformed += 1);
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
                tracing::warn!(key, error = %e, record = %shown, "ignoring a malformed fleet entry");
                None
            }
        }
    }
}
