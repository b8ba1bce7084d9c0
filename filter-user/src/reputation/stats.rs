//! Counters the daemon's `status` reads: budget decisions, verdicts, DNS answers by class, and
//! per zone the error codes that mean a list is refusing us.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{canary::CanaryCell, quota::DailyCount};

/// The DNS latency histogram: seconds from asking the resolver to its answer or failure, label
/// `zone` (a DNSBL zone, or [`RDNS_ZONE`]). Recorded into the process's metrics recorder, a
/// no-op where none is installed (`mxscreen check`, tests); the daemon's metrics endpoint
/// describes and serves it.
pub const DNS_LOOKUP_SECONDS: &str = "mxscreen_dns_lookup_duration_seconds";

/// The `zone` of reverse-DNS lookups (PTR and forward confirmation) in [`DNS_LOOKUP_SECONDS`].
pub const RDNS_ZONE: &str = "rdns";

/// A relaxed atomic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Engine-wide counters (kept across reloads).
#[derive(Debug, Default)]
pub struct Counters {
    pub submitted: Counter,
    pub queued: Counter,
    pub coalesced: Counter,
    pub rejected_queue_full: Counter,
    pub evaluations: Counter,
    pub verdict_pass: Counter,
    pub verdict_limit: Counter,
    pub verdict_drop: Counter,
    pub verdict_tempfail: Counter,
    pub static_allow: Counter,
    pub static_deny: Counter,
    pub ptr_found: Counter,
    pub no_ptr: Counter,
    pub fcrdns_ok: Counter,
    pub fcrdns_mismatch: Counter,
    pub rdns_tempfail: Counter,
    /// DNS lookups issued (one per question; hickory's retransmissions are not counted).
    pub queries_sent: Counter,
    /// The resolver canary's PTR check (`rdns.canary_ptr`).
    pub rdns_canary: CanaryCell,
}

/// Per-zone counters.
#[derive(Debug, Default)]
pub struct ZoneCounters {
    pub queries: Counter,
    pub listed: Counter,
    pub not_listed: Counter,
    pub code_ignored: Counter,
    pub tempfail: Counter,
    pub error_codes: Counter,
    /// The last error code answered (0: none yet), so `status` can say what it means.
    pub last_error_code: AtomicU32,
    pub outside_loopback: Counter,
    /// Error-code warnings not logged because one was logged less than a minute ago.
    pub warnings_suppressed: Counter,
    last_warning: Mutex<Option<Instant>>,
    /// The zone's resolver canary.
    pub canary: CanaryCell,
    /// Queries today, against its `daily_query_quota`.
    pub today: DailyCount,
}

/// At most one warning per zone per this interval.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl ZoneCounters {
    /// Whether a warning may be logged now; otherwise counts it as suppressed.
    pub fn may_warn(&self) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < WARNING_INTERVAL) {
            self.warnings_suppressed.inc();
            return false;
        }
        *last = Some(now);
        true
    }

    fn snapshot(&self) -> ZoneStats {
        ZoneStats {
            queries: self.queries.get(),
            listed: self.listed.get(),
            not_listed: self.not_listed.get(),
            code_ignored: self.code_ignored.get(),
            tempfail: self.tempfail.get(),
            error_codes: self.error_codes.get(),
            last_error_code: match self.last_error_code.load(Relaxed) {
                0 => None,
                code => Some(Ipv4Addr::from(code)),
            },
            outside_loopback: self.outside_loopback.get(),
            warnings_suppressed: self.warnings_suppressed.get(),
            queries_today: self.today.today(),
            daily_query_quota: self.today.quota(),
        }
    }
}

/// A snapshot of the engine's counters, for `status` (serializes to JSON as is).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Peers handed to [`Engine::submit`](super::Engine::submit).
    pub submitted: u64,
    /// ... of which queued for an evaluation,
    pub queued: u64,
    /// ... joined an evaluation already queued or running for the same address,
    pub coalesced: u64,
    /// ... or were turned away because the queue was full (they stay unknown and pass).
    pub rejected_queue_full: u64,
    /// First-SYN peers queued but dropped unevaluated: older than a second (a real sender
    /// has retransmitted by then and is queued again as proven-real) or displaced by newer
    /// ones — what a spoofed-source flood costs.
    #[serde(default)]
    pub first_expired: u64,
    /// Peers waiting for a slot now.
    pub queue_depth: u64,
    /// Evaluations running now.
    pub in_flight: u64,
    /// Evaluations completed (queued ones and direct `evaluate` calls).
    pub evaluations: u64,
    pub verdict_pass: u64,
    pub verdict_limit: u64,
    pub verdict_drop: u64,
    /// Verdicts shortened (and made lenient) because a lookup failed.
    pub verdict_tempfail: u64,
    pub static_allow: u64,
    pub static_deny: u64,
    /// DNS lookups issued (PTR, A/AAAA, DNSBL A and TXT).
    pub queries_sent: u64,
    pub ptr_found: u64,
    pub no_ptr: u64,
    pub fcrdns_ok: u64,
    pub fcrdns_mismatch: u64,
    pub rdns_tempfail: u64,
    /// Per DNSBL zone (zones removed by a reload keep their counts).
    pub zones: BTreeMap<String, ZoneStats>,
}

/// Per-zone part of [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneStats {
    pub queries: u64,
    pub listed: u64,
    pub not_listed: u64,
    /// Answers its `codes` filter excluded.
    pub code_ignored: u64,
    pub tempfail: u64,
    /// 127.255.255.x answers (and the zone's own error codes): the list refused to answer.
    /// Non-zero means fix the resolver setup or the query volume.
    pub error_codes: u64,
    /// The last of those codes, which says why (see `codes::refusal_warning`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<Ipv4Addr>,
    /// Answers outside 127/8 (a resolver rewriting NXDOMAIN).
    pub outside_loopback: u64,
    pub warnings_suppressed: u64,
    /// Queries on the current UTC day (lookups, TXT reasons, canary).
    #[serde(default)]
    pub queries_today: u64,
    /// The zone's `daily_query_quota` (0: none).
    #[serde(default)]
    pub daily_query_quota: u64,
}

impl Stats {
    /// Every counter but the zones, by name, in declaration order: what `stats` prints and
    /// the metrics export.
    pub fn rows(&self) -> [(&'static str, u64); 20] {
        [
            ("submitted", self.submitted),
            ("queued", self.queued),
            ("coalesced", self.coalesced),
            ("rejected_queue_full", self.rejected_queue_full),
            ("first_expired", self.first_expired),
            ("queue_depth", self.queue_depth),
            ("in_flight", self.in_flight),
            ("evaluations", self.evaluations),
            ("verdict_pass", self.verdict_pass),
            ("verdict_limit", self.verdict_limit),
            ("verdict_drop", self.verdict_drop),
            ("verdict_tempfail", self.verdict_tempfail),
            ("static_allow", self.static_allow),
            ("static_deny", self.static_deny),
            ("queries_sent", self.queries_sent),
            ("ptr_found", self.ptr_found),
            ("no_ptr", self.no_ptr),
            ("fcrdns_ok", self.fcrdns_ok),
            ("fcrdns_mismatch", self.fcrdns_mismatch),
            ("rdns_tempfail", self.rdns_tempfail),
        ]
    }
}

impl ZoneStats {
    /// Every counter by name, in declaration order.
    pub fn rows(&self) -> [(&'static str, u64); 10] {
        [
            ("queries", self.queries),
            ("listed", self.listed),
            ("not_listed", self.not_listed),
            ("code_ignored", self.code_ignored),
            ("tempfail", self.tempfail),
            ("error_codes", self.error_codes),
            ("outside_loopback", self.outside_loopback),
            ("warnings_suppressed", self.warnings_suppressed),
            ("queries_today", self.queries_today),
            ("daily_query_quota", self.daily_query_quota),
        ]
    }
}

impl Counters {
    pub(crate) fn snapshot(
        &self,
        zones: &BTreeMap<String, std::sync::Arc<ZoneCounters>>,
        queue_depth: u64,
        in_flight: u64,
    ) -> Stats {
        Stats {
            submitted: self.submitted.get(),
            queued: self.queued.get(),
            coalesced: self.coalesced.get(),
            rejected_queue_full: self.rejected_queue_full.get(),
            first_expired: 0,
            queue_depth,
            in_flight,
            evaluations: self.evaluations.get(),
            verdict_pass: self.verdict_pass.get(),
            verdict_limit: self.verdict_limit.get(),
            verdict_drop: self.verdict_drop.get(),
            verdict_tempfail: self.verdict_tempfail.get(),
            static_allow: self.static_allow.get(),
            static_deny: self.static_deny.get(),
            queries_sent: self.queries_sent.get(),
            ptr_found: self.ptr_found.get(),
            no_ptr: self.no_ptr.get(),
            fcrdns_ok: self.fcrdns_ok.get(),
            fcrdns_mismatch: self.fcrdns_mismatch.get(),
            rdns_tempfail: self.rdns_tempfail.get(),
            zones: zones
                .iter()
                .map(|(k, v)| (k.clone(), v.snapshot()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rows` names every counter, as serde does: nothing is left out of `stats` or metrics.
    #[test]
    fn rows_cover_every_field() {
        let names = |v: serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let mut rows: Vec<String> = Stats::default().rows().iter().map(|r| r.0.into()).collect();
        rows.push("zones".into());
        rows.sort();
        assert_eq!(rows, names(serde_json::to_value(Stats::default()).unwrap()));
        let mut rows: Vec<String> = ZoneStats::default()
            .rows()
            .iter()
            .map(|r| r.0.into())
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            names(serde_json::to_value(ZoneStats::default()).unwrap())
        );
    }
}
