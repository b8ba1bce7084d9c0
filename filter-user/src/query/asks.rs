//! What the MTA asked about. For the balancer watch (`daemon::balancer`): questions about
//! addresses on no list, and of those, the ones about addresses whose SYN the datapath never
//! saw (behind the PROXY protocol the MTA asks about real clients while the kernel only ever
//! sees the balancer, so nearly every question is of the second kind). For explained
//! refusals: when the MTA last asked (the datapath lets a `drop` through to be explained only
//! while an MTA asks), and which peers it was told `drop` about (that was their explanation).

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use filter_common::Peer;
use tokio::sync::mpsc;

use crate::datapath::clock;

/// Running totals since start; the watch takes differences over its window.
#[derive(Debug, Default)]
pub struct MtaAsks {
    asked: AtomicU64,
    unseen: AtomicU64,
    /// When the MTA last asked anything (datapath clock, ns); 0: never since start.
    last_ns: AtomicU64,
    /// `policy.explain_every` in ns (0: explanations off), set by the daemon.
    window_ns: AtomicU64,
    /// To the daemon's main loop.
    news: Option<mpsc::Sender<MtaNews>>,
}

/// What the MTA's questions tell the daemon's main loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtaNews {
    /// A question after none within the explain window: explained refusals turn on now,
    /// rather than at the next heartbeat.
    Asking,
    /// The MTA was told `drop` for this peer's explained verdict: that was its explanation,
    /// and its next is due a window later.
    Refused(IpAddr),
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
    /// Telling the daemon's main loop on `news` (a full queue loses news: the heartbeat
    /// turns explanations on a second later, and a lost refusal costs one more explained
    /// connection).
    pub fn new(news: mpsc::Sender<MtaNews>, explain_every_ns: u64) -> Self {
        Self {
            news: Some(news),
            window_ns: AtomicU64::new(explain_every_ns),
            ..Self::default()
        }
    }

    /// A new `policy.explain_every` (a reload).
    pub fn set_window(&self, explain_every_ns: u64) {
        self.window_ns.store(explain_every_ns, Ordering::Relaxed);
    }

    /// The MTA asked (anything, about anyone).
    pub fn question(&self) {
        let now = clock::now_ns();
        let before = self.last_ns.swap(now, Ordering::Relaxed);
        if before == 0 || now.saturating_sub(before) >= self.window_ns.load(Ordering::Relaxed) {
            self.tell(MtaNews::Asking);
        }
    }

    /// The MTA was told `drop` for `ip`'s explained verdict.
    pub fn refused(&self, ip: IpAddr) {
        self.tell(MtaNews::Refused(ip));
    }

    fn tell(&self, news: MtaNews) {
        if let Some(tx) = &self.news {
            let _ = tx.try_send(news);
        }
    }

    /// When the MTA last asked (datapath clock, ns), if it has since start.
    pub fn last_asked_ns(&self) -> Option<u64> {
        Some(self.last_ns.load(Ordering::Relaxed)).filter(|ns| *ns != 0)
    }

    /// When the MTA last asked, in Unix seconds, if it has since start.
    pub fn last_asked_unix(&self) -> Option<u64> {
        let ago = clock::now_ns().saturating_sub(self.last_asked_ns()?);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Some(
            now.saturating_sub(std::time::Duration::from_nanos(ago))
                .as_secs(),
        )
    }

    /// Whether explained refusals are on at `now_ns`: a window is set and the MTA asked
    /// within it.
    pub fn explaining(&self, now_ns: u64) -> bool {
        let window = self.window_ns.load(Ordering::Relaxed);
        window != 0
            && self
                .last_asked_ns()
                .is_some_and(|last| now_ns.saturating_sub(last) < window)
    }

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

    #[test]
    fn explaining_while_the_mta_asks_within_the_window() {
        let (tx, mut rx) = mpsc::channel(8);
        let window = 60_000_000_000;
        let asks = MtaAsks::new(tx, window);
        let now = clock::now_ns();
        assert!(!asks.explaining(now), "before the first question");
        asks.question();
        assert_eq!(rx.try_recv(), Ok(MtaNews::Asking));
        let asked = asks.last_asked_ns().unwrap();
        assert!(asks.explaining(asked + window - 1));
        assert!(
            !asks.explaining(asked + window),
            "a window without a question"
        );
        asks.question();
        assert!(rx.try_recv().is_err(), "still asking: no news");
        asks.set_window(0);
        assert!(!asks.explaining(asked), "explain_every = 0s");
        let ip = "192.0.2.7".parse().unwrap();
        asks.refused(ip);
        assert_eq!(rx.try_recv(), Ok(MtaNews::Refused(ip)));
    }
}
