//! One evaluation per new peer per fleet. A host that sees a new peer first claims it in
//! Redis (`SET PREFIX:claim:IP HOST NX PX`): the winner evaluates it and publishes the
//! verdict; the others wait for that verdict here, for at most [`CLAIM_WAIT`], and then
//! evaluate it themselves (the claimer may have died, or its budget turned the peer away).

use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

use tokio::time::Instant;

/// How long a claim holds, and how long the others wait for its verdict: a DNS evaluation
/// takes well under a second with a local resolver, and at most about `resolver.timeout`
/// per lookup round when a list is slow.
pub const CLAIM_WAIT: Duration = Duration::from_secs(4);
/// Peers waited for at once; beyond, a peer is evaluated here at once (a flood of new peers
/// must not grow this set without bound; the engine has its own budget).
pub const MAX_WAITING: usize = 4096;

/// Peers another host claimed, in the order their waits end.
#[derive(Debug, Default)]
pub struct Claims {
    order: VecDeque<(Instant, IpAddr)>,
    waiting: HashSet<IpAddr>,
}

impl Claims {
    /// Starts waiting for `ip`'s verdict; `false` if too many are waited for already.
    pub fn wait(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.waiting.contains(&ip) {
            return true;
        }
        if self.waiting.len() >= MAX_WAITING {
            return false;
        }
        self.waiting.insert(ip);
        self.order.push_back((now + CLAIM_WAIT, ip));
        true
    }

    /// A verdict for `ip` arrived: stop waiting.
    pub fn settled(&mut self, ip: IpAddr) {
        self.waiting.remove(&ip);
    }

    /// When the next wait ends, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }

    /// The peers whose wait has ended at `now` without a verdict.
    pub fn due(&mut self, now: Instant) -> Vec<IpAddr> {
        let mut out = Vec::new();
        while let Some((at, ip)) = self.order.front().copied()
            && at <= now
        {
            self.order.pop_front();
            if self.waiting.remove(&ip) {
                out.push(ip);
            }
        }
        out
    }

    /// Every peer still waited for (the link went down: evaluate them here).
    pub fn drain(&mut self) -> Vec<IpAddr> {
        self.order.clear();
        self.waiting.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_end_with_a_verdict_or_a_deadline() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(c.wait(a, t0));
        assert!(c.wait(b, t0 + Duration::from_secs(1)));
        c.settled(a);
        assert!(c.due(t0 + CLAIM_WAIT).is_empty(), "a's verdict came");
        assert_eq!(
            c.next_deadline(),
            Some(t0 + Duration::from_secs(1) + CLAIM_WAIT)
        );
        assert_eq!(c.due(t0 + CLAIM_WAIT + Duration::from_secs(1)), [b]);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn the_waiting_set_is_bounded() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        for i in 0..MAX_WAITING as u32 {
            assert!(c.wait(IpAddr::from(i.to_be_bytes()), t0));
        }
        assert!(!c.wait("203.0.113.1".parse().unwrap(), t0));
        assert_eq!(c.drain().len(), MAX_WAITING);
        assert!(c.wait("203.0.113.1".parse().unwrap(), t0));
    }
}
