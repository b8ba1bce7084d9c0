//! The sources the table reported as new peers (over NFLOG) and have no verdict yet, with
//! when: what the eBPF datapath keeps as each source's first contact in its per-source entry,
//! which a table has no place for.
//!
//! What reads it: the balancer watch's *unseen peers* check counts the MTA's questions about
//! addresses whose SYN the datapath never saw (`query::asks`). Under `first_contact = "pass"`
//! the MTA asks about a new peer while its verdict is still being resolved; without this,
//! every such question counted as one about an unseen address, and enough of them warned of
//! a PROXY-protocol balancer that is not there. A source with a verdict counts as seen by
//! its verdict (`backend::peer_of`), so an entry goes when its verdict is written.

use std::{collections::HashMap, net::IpAddr};

use filter_common::Seen;

/// Reported sources without a verdict, at most `cap` of them (a flood of new peers the
/// engine turns away never gets verdicts: the oldest reports make room).
pub struct Reported {
    seen: HashMap<IpAddr, Seen>,
    cap: usize,
}

impl Reported {
    pub fn new(cap: u32) -> Self {
        Self {
            seen: HashMap::new(),
            cap: (cap as usize).max(4),
        }
    }

    /// `ip` was reported at `at_ns` (the datapath's clock).
    pub fn note(&mut self, ip: IpAddr, at_ns: u64) {
        if self.seen.len() >= self.cap && !self.seen.contains_key(&ip) {
            self.make_room();
        }
        self.seen
            .entry(ip)
            .and_modify(|s| s.last_event_ns = s.last_event_ns.max(at_ns))
            .or_insert(Seen {
                first_seen_ns: at_ns,
                last_event_ns: at_ns,
            });
    }

    pub fn get(&self, ip: IpAddr) -> Option<Seen> {
        self.seen.get(&ip).copied()
    }

    /// `ip` has a verdict now, or is forgotten altogether.
    pub fn remove(&mut self, ip: IpAddr) {
        self.seen.remove(&ip);
    }

    /// Drops the oldest quarter of the reports (by last report): linear, once per a quarter
    /// of `cap` new reports.
    fn make_room(&mut self) {
        let mut last: Vec<u64> = self.seen.values().map(|s| s.last_event_ns).collect();
        let quarter = last.len() / 4;
        let (_, cutoff, _) = last.select_nth_unstable(quarter);
        let cutoff = *cutoff;
        self.seen.retain(|_, s| s.last_event_ns > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + i))
    }

    #[test]
    fn keeps_the_first_and_the_last_report() {
        let mut r = Reported::new(8);
        r.note(ip(1), 10);
        r.note(ip(1), 30);
        assert_eq!(
            r.get(ip(1)),
            Some(Seen {
                first_seen_ns: 10,
                last_event_ns: 30
            })
        );
        r.remove(ip(1));
        assert_eq!(r.get(ip(1)), None);
    }

    #[test]
    fn a_full_record_drops_its_oldest_reports() {
        let mut r = Reported::new(8);
        for i in 0..8 {
            r.note(ip(i), u64::from(i) + 1);
        }
        r.note(ip(100), 100);
        assert!(r.seen.len() <= 8, "{}", r.seen.len());
        assert!(r.get(ip(100)).is_some() && r.get(ip(7)).is_some());
        assert_eq!(r.get(ip(0)), None, "the oldest goes first");
        // Another report of one it holds makes no room.
        let before = r.seen.len();
        r.note(ip(7), 200);
        assert_eq!(r.seen.len(), before);
    }
}
