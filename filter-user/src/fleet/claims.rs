//! One evaluation per new peer per fleet. A host that sees a new peer first claims it in
//! Redis (`SET PREFIX:claim:IP HOST NX PX`): the winner evaluates it and publishes the
//! verdict; the others wait for that verdict here, for at most [`CLAIM_WAIT`], and then
//! evaluate it themselves (the claimer may have died, or its budget turned the peer away).
//!
//! A peer is heard of more than once on one host — its SYN on each attached program, the
//! MTA asking about it before its verdict is in — so every claim is remembered here until
//! its verdict (or deadline) comes: a second claim for a peer this host is already
//! evaluating, or waiting for, changes nothing. Without that, the MTA's question for a
//! peer whose claim was lost would start a second evaluation in the fleet.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::Duration,
};

use tokio::time::Instant;

/// How long a claim holds, and how long the others wait for its verdict: a DNS evaluation
/// takes well under a second with a local resolver, and at most about `resolver.timeout`
/// per lookup round when a list is slow.
pub const CLAIM_WAIT: Duration = Duration::from_secs(4);
/// Peers remembered at once (each side); beyond, a peer another host claimed is evaluated
/// here at once, and one this host claimed is not remembered (a flood of new peers must not
/// grow these without bound; the engine has its own budget).
pub const MAX_WAITING: usize = 4096;

/// Whose evaluation a remembered claim is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// This host won the claim (or screens alone): its engine is evaluating the peer.
    Ours,
    /// Another host won it: its verdict is awaited.
    Theirs,
}

/// Claims open on this host, in the order their deadlines come.
#[derive(Debug, Default)]
pub struct Claims {
    order: VecDeque<(Instant, IpAddr)>,
    open: HashMap<IpAddr, (Instant, Side)>,
    theirs: usize,
}

impl Claims {
    /// Whether a claim for `ip` is open: this host is evaluating it or awaiting its
    /// verdict, and a new claim must change nothing.
    pub fn is_open(&self, ip: IpAddr) -> bool {
        self.open.contains_key(&ip)
    }

    /// This host evaluates `ip` (it won the claim, or the link is down): remembered until
    /// its verdict is made or [`CLAIM_WAIT`] passes (an evaluation the budget turned away
    /// makes none). Not remembered when [`MAX_WAITING`] are.
    pub fn ours(&mut self, ip: IpAddr, now: Instant) {
        if self.open.len() - self.theirs < MAX_WAITING {
            self.open_claim(ip, now, Side::Ours);
        }
    }

    /// Starts waiting for `ip`'s verdict from another host; `false` if too many are waited
    /// for already (evaluate it here).
    pub fn wait(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.open.get(&ip).is_some_and(|c| c.1 == Side::Theirs) {
            return true;
        }
        if self.theirs >= MAX_WAITING {
            return false;
        }
        self.open_claim(ip, now, Side::Theirs);
        true
    }

    fn open_claim(&mut self, ip: IpAddr, now: Instant, side: Side) {
        let until = now + CLAIM_WAIT;
        if let Some((_, was)) = self.open.insert(ip, (until, side)) {
            self.count(was, -1);
        }
        self.count(side, 1);
        self.order.push_back((until, ip));
    }

    fn count(&mut self, side: Side, by: isize) {
        if side == Side::Theirs {
            self.theirs = self.theirs.saturating_add_signed(by);
        }
    }

    /// A verdict for `ip` arrived or was made here: its claim is closed.
    pub fn settled(&mut self, ip: IpAddr) {
        if let Some((_, side)) = self.open.remove(&ip) {
            self.count(side, -1);
        }
    }

    /// When the next deadline comes, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }

    /// Closes the claims whose deadline has come at `now`; returns the peers another host
    /// claimed whose verdict has not come (evaluate them here).
    pub fn due(&mut self, now: Instant) -> Vec<IpAddr> {
        let mut out = Vec::new();
        while let Some((at, ip)) = self.order.front().copied()
            && at <= now
        {
            self.order.pop_front();
            // A claim settled and opened again since has a later deadline of its own.
            if self.open.get(&ip).is_some_and(|c| c.0 == at) {
                let side = self.open.remove(&ip).map(|c| c.1);
                if side == Some(Side::Theirs) {
                    self.count(Side::Theirs, -1);
                    out.push(ip);
                }
            }
        }
        out
    }

    /// Every peer still waited for from another host (the link went down: evaluate them
    /// here); this host's own evaluations stay open.
    pub fn drain(&mut self) -> Vec<IpAddr> {
        let theirs: Vec<IpAddr> = self
            .open
            .iter()
            .filter(|(_, c)| c.1 == Side::Theirs)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &theirs {
            self.open.remove(ip);
        }
        self.theirs = 0;
        theirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn waits_end_with_a_verdict_or_a_deadline() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
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
        assert!(!c.is_open(b));
    }

    /// A peer this host claimed stays open until its verdict or deadline, so a second
    /// claim (the MTA's question) is answered by nothing; its deadline evaluates nothing.
    #[test]
    fn our_claims_stay_open_until_the_verdict() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        c.ours(a, t0);
        c.ours(b, t0);
        assert!(c.is_open(a) && c.is_open(b));
        c.settled(a);
        assert!(!c.is_open(a));
        assert!(
            c.due(t0 + CLAIM_WAIT).is_empty(),
            "ours are never handed back"
        );
        assert!(!c.is_open(b));
        // Opened again after a verdict: the old deadline does not close the new claim.
        assert!(c.wait(a, t0));
        c.settled(a);
        assert!(c.wait(a, t0 + Duration::from_secs(2)));
        assert!(c.due(t0 + CLAIM_WAIT).is_empty());
        assert!(c.is_open(a));
        assert_eq!(c.due(t0 + CLAIM_WAIT + Duration::from_secs(2)), [a]);
    }

    #[test]
    fn the_waiting_set_is_bounded() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        for i in 0..MAX_WAITING as u32 {
            assert!(c.wait(IpAddr::from(i.to_be_bytes()), t0));
            c.ours(IpAddr::from((i + (1 << 24)).to_be_bytes()), t0);
        }
        assert!(!c.wait(ip("203.0.113.1"), t0));
        c.ours(ip("203.0.113.2"), t0);
        assert!(!c.is_open(ip("203.0.113.2")), "ours are bounded too");
        assert_eq!(c.drain().len(), MAX_WAITING);
        assert!(c.wait(ip("203.0.113.1"), t0));
        assert!(c.is_open(IpAddr::from((1u32 << 24).to_be_bytes())));
    }
}
