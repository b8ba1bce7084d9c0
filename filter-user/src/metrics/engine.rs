//! The reputation engine's counters (the `engine` part of `mxscreen stats`): its budget,
//! evaluations, verdicts, rDNS results and, per DNSBL zone, queries by answer; plus the DNS
//! latency histogram the engine records itself.

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use anyhow::Result;

use super::Families;
use crate::reputation::{Engine, stats::DNS_LOOKUP_SECONDS};

/// How a row of [`crate::reputation::Stats::rows`] or
/// [`crate::reputation::ZoneStats::rows`] is exported: family, kind, and the label it gets.
struct Row {
    row: &'static str,
    family: &'static str,
    gauge: bool,
    label: Option<(&'static str, &'static str)>,
}

const fn row(
    row: &'static str,
    family: &'static str,
    label: Option<(&'static str, &'static str)>,
) -> Row {
    Row {
        row,
        family,
        gauge: false,
        label,
    }
}

const SUBMITTED: &str = "mxscreen_engine_peers_submitted_total";
const PEERS: &str = "mxscreen_engine_peers_total";
const BUDGET_REJECTIONS: &str = "mxscreen_engine_budget_rejections_total";
const QUEUE_DEPTH: &str = "mxscreen_engine_queue_depth";
const IN_FLIGHT: &str = "mxscreen_engine_evaluations_in_flight";
const EVALUATIONS: &str = "mxscreen_engine_evaluations_total";
const VERDICTS: &str = "mxscreen_engine_verdicts_total";
const TEMPFAIL_VERDICTS: &str = "mxscreen_engine_tempfail_verdicts_total";
const STATIC: &str = "mxscreen_engine_static_list_hits_total";
const QUERIES_SENT: &str = "mxscreen_dns_queries_sent_total";
const RDNS: &str = "mxscreen_rdns_lookups_total";
const FCRDNS: &str = "mxscreen_rdns_fcrdns_total";
const ZONE_QUERIES: &str = "mxscreen_dnsbl_queries_total";
const ZONE_ANSWERS: &str = "mxscreen_dnsbl_answers_total";
const ZONE_WARNINGS_SUPPRESSED: &str = "mxscreen_dnsbl_warnings_suppressed_total";
const ZONE_QUERIES_TODAY: &str = "mxscreen_dnsbl_queries_today";
const ZONE_QUOTA: &str = "mxscreen_dnsbl_daily_query_quota";
const SETUP_WARNINGS: &str = "mxscreen_engine_setup_warnings";
const CANARY_OK: &str = "mxscreen_dns_canary_ok";

const ENGINE_ROWS: &[Row] = &[
    row("submitted", SUBMITTED, None),
    row("queued", PEERS, Some(("outcome", "queued"))),
    row("coalesced", PEERS, Some(("outcome", "coalesced"))),
    row("rejected_queue_full", BUDGET_REJECTIONS, None),
    row("first_expired", PEERS, Some(("outcome", "expired"))),
    Row {
        gauge: true,
        ..row("queue_depth", QUEUE_DEPTH, None)
    },
    Row {
        gauge: true,
        ..row("in_flight", IN_FLIGHT, None)
    },
    row("evaluations", EVALUATIONS, None),
    row("verdict_pass", VERDICTS, Some(("action", "pass"))),
    row("verdict_limit", VERDICTS, Some(("action", "limit"))),
    row("verdict_drop", VERDICTS, Some(("action", "drop"))),
    row("verdict_tempfail", TEMPFAIL_VERDICTS, None),
    row("static_allow", STATIC, Some(("list", "allow"))),
    row("static_deny", STATIC, Some(("list", "deny"))),
    row("queries_sent", QUERIES_SENT, None),
    row("ptr_found", RDNS, Some(("result", "ptr_found"))),
    row("no_ptr", RDNS, Some(("result", "no_ptr"))),
    row("rdns_tempfail", RDNS, Some(("result", "tempfail"))),
    row("fcrdns_ok", FCRDNS, Some(("result", "confirmed"))),
    row("fcrdns_mismatch", FCRDNS, Some(("result", "mismatch"))),
];

/// Per zone; the `zone` label is added to each.
const ZONE_ROWS: &[Row] = &[
    row("queries", ZONE_QUERIES, None),
    row("listed", ZONE_ANSWERS, Some(("result", "listed"))),
    row("not_listed", ZONE_ANSWERS, Some(("result", "not_listed"))),
    row(
        "code_ignored",
        ZONE_ANSWERS,
        Some(("result", "code_ignored")),
    ),
    row("tempfail", ZONE_ANSWERS, Some(("result", "tempfail"))),
    row("error_codes", ZONE_ANSWERS, Some(("result", "error_code"))),
    row(
        "outside_loopback",
        ZONE_ANSWERS,
        Some(("result", "outside_loopback")),
    ),
    row("warnings_suppressed", ZONE_WARNINGS_SUPPRESSED, None),
    Row {
        gauge: true,
        ..row("queries_today", ZONE_QUERIES_TODAY, None)
    },
    Row {
        gauge: true,
        ..row("daily_query_quota", ZONE_QUOTA, None)
    },
];

/// Help text of every family above.
const HELP: &[(&str, &str)] = &[
    (
        SUBMITTED,
        "New peers the datapath reported and the daemon handed to the engine.",
    ),
    (
        PEERS,
        "Submitted peers by what the budget did: queued for an evaluation, or coalesced with one already queued or running.",
    ),
    (
        BUDGET_REJECTIONS,
        "Peers turned away because the engine's queue was full (resolver.queue_len): they stay unknown and pass.",
    ),
    (QUEUE_DEPTH, "Peers waiting for an evaluation slot."),
    (
        IN_FLIGHT,
        "Evaluations running now (at most resolver.max_inflight).",
    ),
    (EVALUATIONS, "Evaluations completed."),
    (VERDICTS, "Verdicts the engine decided, by action."),
    (
        TEMPFAIL_VERDICTS,
        "Verdicts made lenient and short-lived because a lookup failed.",
    ),
    (
        STATIC,
        "Evaluations decided by lists.allow / lists.deny without a lookup.",
    ),
    (
        QUERIES_SENT,
        "DNS questions the engine asked its resolver (PTR, A/AAAA, DNSBL A and TXT).",
    ),
    (
        RDNS,
        "Reverse DNS lookups by result: a PTR found, none (NXDOMAIN/no record), or a DNS failure.",
    ),
    (FCRDNS, "Forward confirmations of PTR names, by result."),
    (ZONE_QUERIES, "DNSBL/DNSWL queries, per zone."),
    (
        ZONE_ANSWERS,
        "DNSBL/DNSWL answers per zone, by result; error_code (127.255.255.x: the list refused us) means fix the resolver setup.",
    ),
    (
        ZONE_WARNINGS_SUPPRESSED,
        "Refusal warnings not logged because one was logged less than a minute before, per zone.",
    ),
    (
        ZONE_QUERIES_TODAY,
        "DNSBL/DNSWL queries on the current UTC day (lookups, TXT reasons, canary), per zone.",
    ),
    (
        ZONE_QUOTA,
        "The zone's daily_query_quota (0: none); status warns from 80 % of it.",
    ),
    (
        CANARY_OK,
        "1 while the resolver canary passes for the source (a DNSBL zone, or rdns), 0 while it fails and the source's evidence does not count.",
    ),
    (
        SETUP_WARNINGS,
        "Warnings about the engine's setup (public resolvers), as listed by `mxscreen status`.",
    ),
];

fn help(family: &str) -> &'static str {
    HELP.iter()
        .find(|(f, _)| *f == family)
        .map_or("", |(_, h)| h)
}

/// Reads the engine's counters (atomics shared by every clone of the engine).
pub struct EngineFamilies(pub Engine);

fn set(r: &Row, value: u64, zone: Option<&str>) {
    let mut labels: Vec<(&'static str, String)> = Vec::new();
    if let Some(z) = zone {
        labels.push(("zone", z.to_owned()));
    }
    if let Some((k, v)) = r.label {
        labels.push((k, v.to_owned()));
    }
    if r.gauge {
        gauge!(r.family, &labels).set(value as f64);
    } else {
        counter!(r.family, &labels).absolute(value);
    }
}

impl Families for EngineFamilies {
    fn describe(&self) {
        for r in ENGINE_ROWS.iter().chain(ZONE_ROWS) {
            if r.gauge {
                describe_gauge!(r.family, Unit::Count, help(r.family));
            } else {
                describe_counter!(r.family, Unit::Count, help(r.family));
            }
        }
        describe_gauge!(SETUP_WARNINGS, Unit::Count, help(SETUP_WARNINGS));
        describe_gauge!(CANARY_OK, help(CANARY_OK));
        describe_histogram!(
            DNS_LOOKUP_SECONDS,
            Unit::Seconds,
            "Time from asking the resolver to its answer or failure, per DNSBL zone (zone=\"rdns\" for PTR and forward-confirmation lookups)."
        );
    }

    fn update(&self) -> Result<()> {
        let s = self.0.stats();
        for (name, value) in s.rows() {
            if let Some(r) = ENGINE_ROWS.iter().find(|r| r.row == name) {
                set(r, value, None);
            }
        }
        for (zone, z) in &s.zones {
            for (name, value) in z.rows() {
                if let Some(r) = ZONE_ROWS.iter().find(|r| r.row == name) {
                    set(r, value, Some(zone));
                }
            }
        }
        gauge!(SETUP_WARNINGS).set(self.0.warnings().len() as f64);
        for (source, c) in self.0.canary() {
            gauge!(CANARY_OK, "source" => source).set(if c.ok { 1.0 } else { 0.0 });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::{Stats, ZoneStats};

    /// Every counter `stats` shows is exported, with help; a row added to the engine's
    /// stats without a line here fails this test.
    #[test]
    fn every_engine_row_is_exported_with_help() {
        for (name, _) in Stats::default().rows() {
            assert!(
                ENGINE_ROWS.iter().any(|r| r.row == name),
                "engine row {name} is not exported"
            );
        }
        for (name, _) in ZoneStats::default().rows() {
            assert!(
                ZONE_ROWS.iter().any(|r| r.row == name),
                "zone row {name} is not exported"
            );
        }
        for r in ENGINE_ROWS.iter().chain(ZONE_ROWS) {
            assert!(!help(r.family).is_empty(), "{} has no help", r.family);
            assert_eq!(r.family.ends_with("_total"), !r.gauge, "{}", r.family);
        }
    }
}
