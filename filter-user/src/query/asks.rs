//! What the MTA asked about, counted for the balancer watch (`daemon::balancer`): questions
//! about addresses on no list, and of those, the ones about addresses whose SYN the datapath
//! never saw. Behind the PROXY protocol the MTA asks about real clients while the kernel only
//! ever sees the balancer, so nearly every question is of the second kind.

use std::sync::atomic::{AtomicU64, Ordering};

use filter_common::Peer;

/// Running totals since start; the watch takes differences over its window.
#[derive(Debug, Default)]
pub struct MtaAsks {
    asked: AtomicU64,
    unseen: AtomicU64,
}

/// The totals at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AskCounts {
    /// Questions about addresses on no list (allow or deny).
    pub asked: u64,
    /// ... about addresses the datapath never saw a SYN from.
    pub unseen: u64,
}

impl MtaAsks {
    /// One question about an address on no list, whose entry in the datapath is `peer`.
    pub fn record(&self, peer: Option<&Peer>) {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if !seen_by_datapath(peer) {
            self.unseen.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> AskCounts {
        AskCounts {
            asked: self.asked.load(Ordering::Relaxed),
            unseen: self.unseen.load(Ordering::Relaxed),
        }
    }
}

/// Whether the datapath has had a SYN from this source: it was seen as unknown (its first
/// contact is recorded, and kept when its verdict is written), or a SYN met its verdict (a
/// hit). A verdict made from the MTA's own question, or taken from the fleet, has neither
/// until the source's SYN arrives.
pub fn seen_by_datapath(peer: Option<&Peer>) -> bool {
    peer.is_some_and(|p| p.seen().is_some() || p.verdict().is_some_and(|v| v.hits > 0))
}

#[cfg(test)]
mod tests {
    use filter_common::{Action, PeerVerdict as Verdict, Reason};

    use super::*;

    #[test]
    fn a_source_is_seen_by_its_first_contact_or_a_hit() {
        assert!(!seen_by_datapath(None));
        let mut p = Peer::empty();
        p.set_verdict(&Verdict::new(Action::Pass, Reason::Reputation, 0));
        assert!(!seen_by_datapath(Some(&p)), "a verdict nobody's SYN met");
        let mut hit = p;
        hit.hits = 1;
        assert!(seen_by_datapath(Some(&hit)));
        let mut first = p;
        first.first_seen_ns = 1;
        assert!(seen_by_datapath(Some(&first)));
        let asks = MtaAsks::default();
        asks.record(None);
        asks.record(Some(&hit));
        assert_eq!(
            asks.counts(),
            AskCounts {
                asked: 2,
                unseen: 1
            }
        );
    }
}
