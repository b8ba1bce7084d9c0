//! The join: mxscreen's drop and limit decisions over the period, per peer, against what the
//! MTA's log says it did with that peer — connections, refusals, accepted messages. What
//! comes out is what enforcing would have changed; the peers whose mail the MTA accepted
//! are the list that matters (mail enforcing would have turned away), so they come first.
//!
//! A peer's MTA events are counted over the whole period, not only after its decision: a
//! verdict is made at the peer's first SYN, and enforcing (`first_contact = "hold"`) would
//! have refused that first connection too.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use serde::Serialize;

use super::{
    log::Decision,
    mta_log::{LogEvent, MtaEvent},
};

/// One peer enforcing would have dropped or limited, and what the MTA did with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerReport {
    pub ip: IpAddr,
    /// `drop` or `limit`: the latest decision's.
    pub action: String,
    /// The latest decision's source (`reputation`, `config`), score and evidence.
    pub reason: String,
    pub score: i32,
    pub evidence: Vec<String>,
    /// Whether observe mode only counted the latest decision.
    pub observe: bool,
    /// Decisions about it in the period, and when the first and latest were made (Unix s).
    pub decisions: usize,
    pub first_decided: u64,
    pub last_decided: u64,
    /// SMTP connections the MTA logged from it.
    pub connections: u64,
    /// Refusals the MTA logged, by stage (`RCPT`, `connection`, `DATA`, …).
    pub refused: BTreeMap<String, u64>,
    /// Messages the MTA accepted from it that enforcing would have refused.
    pub accepted: u64,
    /// Messages the MTA accepted from it that enforcing would not have refused: from an
    /// authenticated client, or on a port mxscreen does not screen.
    pub accepted_unscreened: u64,
}

impl PeerReport {
    fn new(d: &Decision) -> Self {
        Self {
            ip: d.ip,
            action: String::new(),
            reason: String::new(),
            score: 0,
            evidence: Vec::new(),
            observe: false,
            decisions: 0,
            first_decided: d.at,
            last_decided: d.at,
            connections: 0,
            refused: BTreeMap::new(),
            accepted: 0,
            accepted_unscreened: 0,
        }
    }

    /// Takes in one more decision about the peer (they come oldest first).
    fn decided(&mut self, d: &Decision) {
        self.decisions += 1;
        self.first_decided = self.first_decided.min(d.at);
        if d.at >= self.last_decided {
            self.last_decided = d.at;
            self.action.clone_from(&d.action);
            self.reason.clone_from(&d.reason);
            self.score = d.score;
            self.evidence.clone_from(&d.evidence);
            self.observe = d.observe;
        }
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// Totals for the peers of one action.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub peers: usize,
    pub connections: u64,
    pub refused_by_mta: u64,
    pub accepted_messages: u64,
    /// Peers among them with at least one accepted message.
    pub peers_with_accepted_mail: usize,
    /// Messages accepted from them that enforcing would not have refused (authenticated,
    /// or on an unscreened port): not in `accepted_messages`.
    pub accepted_unscreened_messages: u64,
}

impl Totals {
    fn add(&mut self, p: &PeerReport) {
        self.peers += 1;
        self.connections += p.connections;
        self.refused_by_mta += p.refused_total();
        self.accepted_messages += p.accepted;
        self.peers_with_accepted_mail += usize::from(p.accepted > 0);
        self.accepted_unscreened_messages += p.accepted_unscreened;
    }
}

/// What `mxscreen report` says: `--json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The period, Unix seconds.
    pub since: u64,
    pub until: u64,
    /// The decision log read (under the state directory).
    pub decision_log: String,
    /// The MTA logs read (files, or the journal).
    pub mta_logs: Vec<String>,
    /// MTA log events read in the period (about any peer).
    pub mta_events: u64,
    /// The oldest decision the log holds (Unix s; none: the log is empty). Later than
    /// `since`, the period before it is not covered: the log keeps 2 × 16 MiB.
    pub oldest_decision: Option<u64>,
    /// Lines of the decision log that could not be read (a torn write at a crash).
    pub unreadable_decisions: usize,
    pub would_drop: Totals,
    pub would_limit: Totals,
    /// Peers enforcing would drop or limit whose mail the MTA accepted (on a screened port,
    /// unauthenticated), most messages first: the list to read before turning observe mode
    /// off.
    pub accepted: Vec<PeerReport>,
    /// The other peers enforcing would drop or limit: the MTA accepted nothing from them
    /// that enforcing would have refused.
    pub not_accepted: Vec<PeerReport>,
}

/// What was read of the decision log, for the report to say.
pub struct DecisionsRead {
    pub decision_log: String,
    pub unreadable: usize,
    pub oldest: Option<u64>,
}

/// Builds the report: decisions first ([`Join::new`]), then the MTA's events one by one.
pub struct Join {
    since: u64,
    peers: HashMap<IpAddr, PeerReport>,
    events: u64,
}

impl Join {
    /// The peers of `decisions` (in the order written) at or after `since`.
    pub fn new(decisions: &[Decision], since: u64) -> Self {
        let mut peers: HashMap<IpAddr, PeerReport> = HashMap::new();
        for d in decisions.iter().filter(|d| d.at >= since) {
            peers
                .entry(d.ip.to_canonical())
                .or_insert_with(|| PeerReport::new(d))
                .decided(d);
        }
        Self {
            since,
            peers,
            events: 0,
        }
    }

    /// One event from an MTA log: counted for its peer if the peer is one of ours.
    pub fn add(&mut self, e: &LogEvent) {
        if e.at < self.since {
            return;
        }
        self.events += 1;
        let Some(p) = self.peers.get_mut(&e.peer.to_canonical()) else {
            return;
        };
        match &e.event {
            MtaEvent::Connected => p.connections += 1,
            MtaEvent::Refused { stage } => *p.refused.entry(stage.clone()).or_default() += 1,
            MtaEvent::Accepted => p.accepted += 1,
            MtaEvent::AcceptedUnscreened => p.accepted_unscreened += 1,
        }
    }

    /// The report over `[since, until]`, naming what was read.
    pub fn finish(self, until: u64, read: DecisionsRead, mta_logs: Vec<String>) -> Report {
        let mut peers: Vec<PeerReport> = self.peers.into_values().collect();
        peers.sort_by(|a, b| {
            (b.accepted, b.connections, a.ip).cmp(&(a.accepted, a.connections, b.ip))
        });
        let (mut would_drop, mut would_limit) = (Totals::default(), Totals::default());
        for p in &peers {
            match p.action.as_str() {
                "limit" => would_limit.add(p),
                _ => would_drop.add(p),
            }
        }
        let (accepted, not_accepted) = peers.into_iter().partition(|p| p.accepted > 0);
        Report {
            since: self.since,
            until,
            decision_log: read.decision_log,
            oldest_decision: read.oldest,
            mta_logs,
            mta_events: self.events,
            unreadable_decisions: read.unreadable,
            would_drop,
            would_limit,
            accepted,
            not_accepted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(at: u64, ip: &str, action: &str, score: i32) -> Decision {
        Decision {
            at,
            ip: ip.parse().unwrap(),
            action: action.into(),
            reason: "reputation".into(),
            score,
            evidence: vec![format!("dnsbl:zen.test=listed(+{score})")],
            observe: true,
        }
    }

    fn event(at: u64, ip: &str, event: MtaEvent) -> LogEvent {
        LogEvent {
            at,
            peer: ip.parse().unwrap(),
            event,
        }
    }

    #[test]
    fn joins_decisions_with_the_mtas_events() {
        let decisions = [
            decision(50, "192.0.2.20", "drop", 10),
            decision(100, "192.0.2.20", "drop", 10),
            decision(110, "192.0.2.30", "limit", 5),
            decision(120, "192.0.2.21", "drop", 20),
            decision(130, "192.0.2.20", "drop", 15),
        ];
        let mut join = Join::new(&decisions, 90);
        let rcpt = || MtaEvent::Refused {
            stage: "RCPT".into(),
        };
        for e in [
            event(80, "192.0.2.20", MtaEvent::Accepted),
            event(100, "192.0.2.20", MtaEvent::Connected),
            event(101, "192.0.2.20", MtaEvent::Accepted),
            event(102, "::ffff:192.0.2.20", MtaEvent::Accepted),
            event(103, "192.0.2.21", MtaEvent::Connected),
            event(104, "192.0.2.21", rcpt()),
            event(105, "192.0.2.10", MtaEvent::Accepted),
            event(105, "192.0.2.21", MtaEvent::AcceptedUnscreened),
            event(106, "192.0.2.30", MtaEvent::Connected),
        ] {
            join.add(&e);
        }
        let read = DecisionsRead {
            decision_log: "decisions.jsonl".into(),
            unreadable: 0,
            oldest: Some(50),
        };
        let r = join.finish(200, read, vec!["mainlog".into()]);
        assert_eq!(
            r.mta_events, 8,
            "the event before the period is not counted"
        );
        assert_eq!(r.accepted.len(), 1);
        let sbl = &r.accepted[0];
        assert_eq!(sbl.ip.to_string(), "192.0.2.20");
        assert_eq!((sbl.decisions, sbl.first_decided, sbl.score), (2, 100, 15));
        assert_eq!((sbl.connections, sbl.accepted), (1, 2));
        let others: Vec<String> = r.not_accepted.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(others, ["192.0.2.21", "192.0.2.30"]);
        assert_eq!(
            r.not_accepted[0].refused,
            BTreeMap::from([("RCPT".into(), 1)])
        );
        // Its authenticated message is no mail enforcing would turn away.
        assert_eq!(
            (
                r.not_accepted[0].accepted,
                r.not_accepted[0].accepted_unscreened
            ),
            (0, 1)
        );
        assert_eq!(
            r.would_drop,
            Totals {
                peers: 2,
                connections: 2,
                refused_by_mta: 1,
                accepted_messages: 2,
                peers_with_accepted_mail: 1,
                accepted_unscreened_messages: 1,
            }
        );
        assert_eq!((r.would_limit.peers, r.would_limit.connections), (1, 1));
    }
}
