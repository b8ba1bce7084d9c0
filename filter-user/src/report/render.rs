//! The report as text: the period and what was read, the totals, then the list that matters
//! — peers enforcing would refuse whose mail the MTA accepted, each with its evidence — and
//! last the peers the MTA accepted nothing from.

use std::fmt::Write as _;

use super::{
    join::{PeerReport, Report, Totals},
    time::stamp,
};

pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "mxscreen report: {} to {}",
        stamp(r.since),
        stamp(r.until)
    );
    let _ = writeln!(s, "decisions: {}", r.decision_log);
    match r.oldest_decision {
        None => {
            let _ = writeln!(
                s,
                "  (none logged yet: is the daemon running with this config?)"
            );
        }
        Some(oldest) if oldest > r.since => {
            let _ = writeln!(
                s,
                "  (the oldest kept is from {}: the period before it is not covered)",
                stamp(oldest)
            );
        }
        Some(_) => {}
    }
    if r.unreadable_decisions > 0 {
        let lines = plural(r.unreadable_decisions, "line", "lines");
        let _ = writeln!(
            s,
            "  ({} unreadable {lines} skipped)",
            r.unreadable_decisions
        );
    }
    let _ = writeln!(
        s,
        "MTA log: {} ({} events in the period)",
        r.mta_logs.join(", "),
        r.mta_events
    );
    if r.mta_events == 0 {
        let _ = writeln!(
            s,
            "  no connection, refusal or accepted message found: is this the MTA's log?"
        );
    }
    let _ = writeln!(s, "\nEnforcing would have:");
    totals(&mut s, "dropped", &r.would_drop);
    totals(&mut s, "limited", &r.would_limit);
    let _ = writeln!(
        s,
        "\nAccepted mail from peers enforcing would drop or limit (read before enforcing):"
    );
    peers(&mut s, &r.accepted, true);
    let _ = writeln!(
        s,
        "\nPeers the MTA accepted no mail from that enforcing would refuse:"
    );
    peers(&mut s, &r.not_accepted, false);
    s
}

fn totals(s: &mut String, verb: &str, t: &Totals) {
    let _ = writeln!(
        s,
        "  {verb} {} {}: {} connections, {} refused by the MTA anyway, {} {} accepted (from {} {})",
        t.peers,
        plural(t.peers, "peer", "peers"),
        t.connections,
        t.refused_by_mta,
        t.accepted_messages,
        plural(t.accepted_messages as usize, "message", "messages"),
        t.peers_with_accepted_mail,
        plural(t.peers_with_accepted_mail, "peer", "peers"),
    );
    if t.accepted_unscreened_messages > 0 {
        let _ = writeln!(
            s,
            "    (and {} more accepted from authenticated clients or on unscreened ports, which enforcing would not refuse)",
            t.accepted_unscreened_messages
        );
    }
}

fn peers(s: &mut String, list: &[PeerReport], evidence: bool) {
    if list.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for p in list {
        let refused: Vec<String> = p.refused.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let refused = if refused.is_empty() {
            "0".to_owned()
        } else {
            format!("{} ({})", p.refused_total(), refused.join(", "))
        };
        let unscreened = if p.accepted_unscreened > 0 {
            format!(
                " (+{} authenticated or on an unscreened port)",
                p.accepted_unscreened
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {}  {} ({}, score {}{})  accepted {}{unscreened}, connections {}, refused {}",
            p.ip,
            p.action,
            p.reason,
            p.score,
            if p.observe { ", observed" } else { "" },
            p.accepted,
            p.connections,
            refused
        );
        let _ = writeln!(
            s,
            "      decided {}x, last {}",
            p.decisions,
            stamp(p.last_decided)
        );
        if evidence {
            for e in &p.evidence {
                let _ = writeln!(s, "      {e}");
            }
        }
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}
