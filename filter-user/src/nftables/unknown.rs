//! The rules of a source nothing decides (chains `unknown_peer`, `over_budget`,
//! `report_again`, `first_contact`; see the path of a SYN in [`super::ruleset`]): reported
//! to the daemon over NFLOG, passed or held, within a budget of reports.

use super::{
    ruleset::Shape,
    sets::{Family, holding, known_refill, known_set, recent, seen, tried},
};

/// An unknown source: reported once per dedup window (NFLOG), passed, or held; a held one
/// reported again at its retransmit. As the eBPF datapath: each report says why (the log
/// prefix [`FIRST`] or [`AGAIN`]), and reports are spent from a budget of
/// `events_per_s`, one bucket for first SYNs and one for the rest, so a flood of one-SYN
/// spoofed sources cannot spend what real senders' retransmits need. A source over the
/// budget is not marked reported (its next SYN reports it, as a real sender's) and is held
/// if `hold` says so. The limits are the table's, not per CPU as the eBPF datapath's.
pub fn rules(rule: &mut impl FnMut(&str, &str), n: &Shape) {
    let budget = (n.events_per_s != 0).then(|| {
        format!(
            "limit rate over {r}/second burst {r} packets",
            r = n.events_per_s
        )
    });
    // What a report adds, per family: reported; and held (and reported just now) or, without
    // hold, cached as unknown for as long as its report.
    let marks = |f: Family| {
        let p = f.proto();
        let then = match n.hold {
            Some(h) => format!(
                " add @{} {{ {p} saddr }} add @{} {{ {p} saddr }}",
                holding(f, h),
                recent(f)
            ),
            None => format!(" add @{} {{ {p} saddr }}", known_set(n, f)),
        };
        format!("add @{} {{ {p} saddr }}{then}", seen(f, n))
    };
    let report = |f: Family, why: &str| {
        format!(
            "meta protocol {p} {marks} log prefix \"{why}\" group {g} snaplen 128 counter name \"events_emitted\" goto first_contact",
            p = f.proto(),
            marks = marks(f),
            g = n.log_group
        )
    };
    // Fail open: a dynamic set full (nothing more can be reported) passes the source.
    let lost = "counter name \"events_lost\" counter name \"unknown\" accept";
    for f in Family::ALL {
        let p = f.proto();
        // Seen before: held now, or over the budget at its first SYN.
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
                "meta protocol {p} {p} saddr @{} add @{} {{ {p} saddr timeout {}ms }} counter name \"unknown\" accept",
                seen(f, n),
                known_set(n, f),
                known_refill(n.dedup).as_millis()
            ),
        );
    }
    if let Some(b) = &budget {
        rule("unknown_peer", &format!("{b} goto over_budget"));
        for f in Family::ALL {
            let p = f.proto();
            let set = match n.hold {
                Some(h) => holding(f, h),
                None => tried(f, n),
            };
            rule(
                "over_budget",
                &format!("meta protocol {p} add @{set} {{ {p} saddr }}"),
            );
        }
        rule(
            "over_budget",
            "counter name \"events_over_budget\" goto first_contact",
        );
    }
    for f in Family::ALL {
        rule("unknown_peer", &report(f, FIRST));
    }
    rule("unknown_peer", lost);
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
    }
    if let Some(b) = &budget {
        rule(
            "report_again",
            &format!("{b} counter name \"events_over_budget\" goto first_contact"),
        );
    }
    for f in Family::ALL {
        rule("report_again", &report(f, AGAIN));
    }
    rule("report_again", lost);
    if n.hold.is_some() {
        rule("first_contact", "goto held");
    } else {
        rule("first_contact", "counter name \"unknown\" accept");
    }
}

/// The NFLOG prefixes of a first SYN's report and of a source's again (`events.rs` reads
/// them back as the report's why).
pub const FIRST: &str = "first";
pub const AGAIN: &str = "again";
