//! The rules of a source nothing decides (chains [`CHAINS`]; see the path of a SYN in
//! [`super::ruleset`]): reported to the daemon over NFLOG, passed or held, within a budget of
//! reports.

use std::{fmt::Write as _, time::Duration};

use super::{
    ruleset::Shape,
    sets::{Family, holding, known_refill, known_set, nft_time, recent, returning, seen, tried},
};

/// The chains of these rules.
pub const CHAINS: &[&str] = &[
    "unknown_peer",
    "over_budget",
    "report_again",
    "again_over_budget",
    "hold_over",
    "report_back",
    "reported",
    "reported_pass",
    "first_contact",
];

/// The budget of reports of sources seen before (a retransmit, a source over the first
/// SYNs' budget, a returning one): a named limit, as two chains spend from it (each `limit`
/// statement is a bucket of its own). Its name carries the rate: a new rate, a new object.
fn again_budget(n: &Shape) -> Option<String> {
    (n.events_per_s != 0).then(|| format!("reports_again_{}", n.events_per_s))
}

/// Declares the named limit (before the rules that use it; `add` leaves an existing one).
pub fn declare(s: &mut String, n: &Shape) {
    if let Some(name) = again_budget(n) {
        let _ = writeln!(
            s,
            "add limit netdev {} {name} {{ rate over {r}/second burst {r} packets; }}",
            n.table,
            r = n.events_per_s
        );
    }
}

/// Deletes the named limit `prev` used and `next` does not (once the chains are flushed).
pub fn retire(s: &mut String, prev: &Shape, next: &Shape) {
    if let Some(old) = again_budget(prev).filter(|o| Some(o) != again_budget(next).as_ref()) {
        let _ = writeln!(s, "delete limit netdev {} {old}", next.table);
    }
}

/// An unknown source: reported once per dedup window (NFLOG), passed, or held; a held one
/// reported again at its retransmit. As the eBPF datapath: each report says why (the log
/// prefix [`FIRST`], [`AGAIN`] or [`BACK`]), and reports are spent from a budget of
/// `events_per_s`, one bucket for first SYNs and one for the rest, so a flood of one-SYN
/// spoofed sources cannot spend what real senders' retransmits need. A source over the
/// budget is not marked reported (its next SYN reports it, as a real sender's) and is held
/// if `hold` says so. A source reported before (within [`super::sets::REMEMBERED`]) and
/// again after the dedup window is back: reported from the second bucket and passed, not
/// held (as the eBPF datapath holds a source only within the hold window of its first SYN).
/// The limits are the table's, not per CPU as the eBPF datapath's.
pub fn rules(rule: &mut impl FnMut(&str, &str), n: &Shape) {
    let budget = (n.events_per_s != 0).then(|| {
        format!(
            "limit rate over {r}/second burst {r} packets",
            r = n.events_per_s
        )
    });
    let again = again_budget(n).map(|l| format!("limit name \"{l}\""));
    // What a report adds, per family: reported; and held (and reported just now) or, without
    // hold, cached as unknown for as long as its report.
    let marks = |f: Family, hold: Option<Duration>| {
        let p = f.proto();
        let then = match hold {
            Some(h) => format!(
                " add @{} {{ {p} saddr }} add @{} {{ {p} saddr }}",
                holding(f, h),
                recent(f)
            ),
            None => format!(" add @{} {{ {p} saddr }}", known_set(n, f)),
        };
        format!("add @{} {{ {p} saddr }}{then}", seen(f, n))
    };
    let report = |f: Family, why: &str, hold: Option<Duration>, then: &str| {
        format!(
            "meta protocol {p} {marks} log prefix \"{why}\" group {g} snaplen 128 counter name \"events_emitted\" {then}",
            p = f.proto(),
            marks = marks(f, hold),
            g = n.log_group
        )
    };
    // Fail open: a dynamic set full (nothing more can be reported) passes the source. One
    // that hold would have held is also `unheld`, as the eBPF datapath counts a source whose
    // hold it could not bound.
    let lost = "counter name \"events_lost\" counter name \"unknown\" accept";
    let lost_unheld = if n.hold.is_some() {
        "counter name \"events_lost\" counter name \"unknown\" counter name \"unheld\" accept"
    } else {
        lost
    };
    let pass = "counter name \"unknown\" accept";
    // A report that passes the source (a returning one, or one whose hold is over): from
    // the second bucket; over it, passed (its next SYN tries again).
    let report_unheld = |rule: &mut dyn FnMut(&str, &str), chain: &str, why: &str| {
        if let Some(b) = &again {
            rule(
                chain,
                &format!("{b} counter name \"events_over_budget\" {pass}"),
            );
        }
        for f in Family::ALL {
            rule(chain, &report(f, why, None, "goto reported_pass"));
        }
        rule(chain, lost);
    };
    for f in Family::ALL {
        let p = f.proto();
        // Seen before: held now, or (without hold) over the budget at its first SYN.
        let before = match n.hold {
            Some(h) => Some(holding(f, h)),
            None => budget.as_ref().map(|_| tried(f, n)),
        };
        if let Some(set) = before {
            rule(
                "unknown_peer",
                &format!("meta protocol {p} {p} saddr @{set} goto report_again"),
            );
        }
        // Reported before the cache was last flushed (or after its hold): cached again.
        rule(
            "unknown_peer",
            &format!(
                "meta protocol {p} {p} saddr @{} add @{} {{ {p} saddr timeout {} }} {pass}",
                seen(f, n),
                known_set(n, f),
                nft_time(known_refill(n.dedup))
            ),
        );
        rule(
            "unknown_peer",
            &format!(
                "meta protocol {p} {p} saddr @{} goto report_back",
                returning(f)
            ),
        );
        // Held over the budget and never reported, its hold now over: not held again (a
        // source is held within hold_max of its first SYN, as in the eBPF datapath).
        if n.hold.is_some() && budget.is_some() {
            rule(
                "unknown_peer",
                &format!(
                    "meta protocol {p} {p} saddr @{} goto hold_over",
                    tried(f, n)
                ),
            );
        }
    }
    if let Some(b) = &budget {
        rule("unknown_peer", &format!("{b} goto over_budget"));
        // Remembered (held, or without hold tried), or passed: a source the full sets
        // cannot remember could not be told from a new one at its next SYN, and would be
        // held at every SYN for as long as a flood keeps them full.
        let set = |f: Family| match n.hold {
            Some(h) => holding(f, h),
            None => tried(f, n),
        };
        remember_or_pass(rule, "over_budget", set, n.hold.is_some());
    }
    for f in Family::ALL {
        rule("unknown_peer", &report(f, FIRST, n.hold, "goto reported"));
    }
    rule("unknown_peer", lost_unheld);
    // A source seen before, again: a held one reported within AGAIN_AFTER stays held; the
    // others are reported again from the second bucket.
    if n.hold.is_some() {
        for f in Family::ALL {
            let p = f.proto();
            rule(
                "report_again",
                &format!(
                    "meta protocol {p} {p} saddr @{} goto first_contact",
                    recent(f)
                ),
            );
        }
        // Over the second budget too: still held, and tried, so that once its hold is over
        // it passes (hold_over) rather than being held again as a new source. Only sources
        // that send again pay for this set (a spoofed flood's first SYNs do not).
        if let Some(b) = &again {
            rule("report_again", &format!("{b} goto again_over_budget"));
            remember_or_pass(rule, "again_over_budget", |f| tried(f, n), true);
        }
        for f in Family::ALL {
            rule("report_again", &report(f, AGAIN, n.hold, "goto reported"));
        }
        rule("report_again", lost_unheld);
        report_unheld(rule, "hold_over", AGAIN);
    } else {
        report_unheld(rule, "report_again", AGAIN);
    }
    report_unheld(rule, "report_back", BACK);
    // Remembered as reported; a full set (a flood reported) forgets, and it goes on.
    for (chain, then) in [("reported", "goto first_contact"), ("reported_pass", pass)] {
        into_set(rule, chain, "update", returning, then, then);
    }
    if n.hold.is_some() {
        rule("first_contact", "goto held");
    } else {
        rule("first_contact", pass);
    }
}

/// The NFLOG prefixes of a first SYN's report, of a source's again and of a returning
/// source's (`events.rs` reads them back as the report's why).
pub const FIRST: &str = "first";
pub const AGAIN: &str = "again";
pub const BACK: &str = "back";

/// A source over a budget: into its family's `set` (so its next SYN is told from a new
/// source's), counted, and on to `first_contact`; a set too full to take it passes it (fail
/// open: nothing would bound its hold), `unheld` if `held` says `first_contact` holds.
fn remember_or_pass(
    rule: &mut dyn FnMut(&str, &str),
    chain: &str,
    set: impl Fn(Family) -> String,
    held: bool,
) {
    let unheld = if held { " counter name \"unheld\"" } else { "" };
    into_set(
        rule,
        chain,
        "add",
        set,
        "counter name \"events_over_budget\" goto first_contact",
        &format!("counter name \"events_over_budget\" counter name \"unknown\"{unheld} accept"),
    );
}

/// In `chain`, a rule per family that puts the source into that family's `set` (`op`:
/// `add`, or `update`, which also refreshes its timeout) and goes on with `then`; and a last
/// rule, `otherwise`, for a source the full set cannot take (a rule whose set statement
/// fails goes no further, so the next rule meets the SYN).
fn into_set(
    rule: &mut dyn FnMut(&str, &str),
    chain: &str,
    op: &str,
    set: impl Fn(Family) -> String,
    then: &str,
    otherwise: &str,
) {
    for f in Family::ALL {
        let p = f.proto();
        rule(
            chain,
            &format!("meta protocol {p} {op} @{} {{ {p} saddr }} {then}", set(f)),
        );
    }
    rule(chain, otherwise);
}
