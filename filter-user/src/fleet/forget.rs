//! `mxscreen forget` across the fleet. A forget voids every verdict for an address inside its
//! prefix made before it, wherever a copy is: the forgetting host removes its own and the
//! Redis keys of the verdicts it removed, stores a tombstone (`PREFIX:forget:NET`, living as
//! long as a verdict made before it can) and publishes it; every other host removes its
//! copies when the tombstone arrives, or when it (re)joins and finds it. A verdict read from
//! the bus or from Redis that the tombstone voids — a copy that was in flight, in a host's
//! outbox while it was apart, or stored by a host that missed the forget — is never applied
//! or pushed again, and its key is deleted. Verdicts made after the forget (a fresh
//! evaluation) are untouched. The maps do not say when a verdict was made, so a host that
//! starts while a tombstone lives removes its verdicts inside the prefix whatever their age:
//! those addresses are evaluated once more (a rejoin without a restart knows the tombstone
//! already and removes nothing).

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use redis::aio::MultiplexedConnection;

use super::{
    FleetEvent,
    link::{Link, LinkError, answer},
    wire::{Record, SharedForget, SharedVerdict, now_ms},
};

/// The forgets this host knows, by prefix: the latest change of each.
#[derive(Debug, Default)]
pub struct Forgets {
    by_net: HashMap<IpNet, SharedForget>,
}

impl Forgets {
    /// Takes a forget; `true` if it is news (not held yet, or later than the one held).
    pub fn note(&mut self, f: &SharedForget) -> bool {
        match self.by_net.get(&f.net) {
            Some(held) if held.changed_ms >= f.changed_ms => false,
            _ => {
                self.by_net.insert(f.net, f.clone());
                true
            }
        }
    }

    /// Whether a forget voids this verdict: it is for an address inside a forgotten prefix
    /// and was made before (or at) the forget.
    pub fn voids(&self, v: &SharedVerdict) -> bool {
        self.by_net
            .values()
            .any(|f| f.net.contains(&v.ip) && v.made_ms <= f.changed_ms)
    }

    /// Drops the forgets no verdict made before them can outlive.
    pub fn prune(&mut self, now_ms: u64) {
        self.by_net.retain(|_, f| f.until_ms > now_ms);
    }
}

impl Link {
    /// A forget made here: its tombstone stored and published, and the Redis keys of the
    /// verdicts this host removed deleted, with their claims (a claim left from the last
    /// evaluation would make the next SYN wait for a verdict nobody is making). Another
    /// host's copies go when the tombstone reaches it.
    pub(super) async fn push_forget(
        &mut self,
        conn: &mut MultiplexedConnection,
        f: SharedForget,
        removed: &[IpAddr],
    ) -> Result<(), LinkError> {
        self.forgets.note(&f);
        let r = Record::Forget(f);
        let Some(ttl) = r.ttl(now_ms()) else {
            return Ok(());
        };
        let body = r.encode(Some(&self.sender));
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.of(&r))
            .arg(&body)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore();
        for ip in removed {
            pipe.cmd("DEL")
                .arg(self.keys.verdict(*ip))
                .arg(self.keys.claim(*ip))
                .ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(self.keys.channel())
            .arg(&body)
            .ignore();
        answer::<()>(pipe.query_async(conn)).await
    }

    /// A forget from another host (published, or found on joining; `ours`: this host's
    /// own): noted, and the daemon told to remove its copies when it is news.
    pub(super) async fn forget_received(&mut self, f: SharedForget, ours: bool) {
        if !ours && self.forgets.note(&f) {
            tracing::info!(net = %f.net, host = %f.host, "fleet: verdicts forgotten by another host");
            self.send(FleetEvent::Forget(f)).await;
        }
    }

    /// Deletes the Redis keys of verdicts a forget voids (found on joining).
    pub(super) async fn delete_voided(
        &self,
        conn: &mut MultiplexedConnection,
        keys: &[String],
    ) -> Result<(), LinkError> {
        if keys.is_empty() {
            return Ok(());
        }
        answer::<()>(redis::cmd("DEL").arg(keys).query_async(conn)).await
    }
}

#[cfg(test)]
mod tests {
    use filter_common::{Action, Reason};

    use super::*;

    fn forget(net: &str, changed_ms: u64) -> SharedForget {
        SharedForget {
            net: net.parse().unwrap(),
            host: "mx1".into(),
            changed_ms,
            until_ms: changed_ms + 1000,
        }
    }

    fn verdict(ip: &str, made_ms: u64) -> SharedVerdict {
        SharedVerdict {
            ip: ip.parse().unwrap(),
            action: Action::Drop,
            source: Reason::Reputation,
            score: 10,
            evidence: String::new(),
            expires_ms: made_ms + 500,
            host: "mx2".into(),
            made_ms,
            fcrdns: false,
        }
    }

    #[test]
    fn a_forget_voids_older_verdicts_inside_its_prefix_only() {
        let mut f = Forgets::default();
        assert!(f.note(&forget("192.0.2.0/24", 100)));
        assert!(!f.note(&forget("192.0.2.0/24", 100)), "not news twice");
        assert!(f.voids(&verdict("192.0.2.7", 99)));
        assert!(f.voids(&verdict("192.0.2.7", 100)));
        assert!(
            !f.voids(&verdict("192.0.2.7", 101)),
            "a fresh evaluation stays"
        );
        assert!(!f.voids(&verdict("198.51.100.7", 1)), "outside the prefix");
        assert!(
            f.note(&forget("192.0.2.0/24", 200)),
            "a later forget of the prefix"
        );
        assert!(f.voids(&verdict("192.0.2.7", 150)));
        f.prune(1200);
        assert!(
            !f.voids(&verdict("192.0.2.7", 150)),
            "pruned once no such verdict can live"
        );
    }
}
