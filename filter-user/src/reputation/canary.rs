//! The resolver canary: questions whose answers are known, asked at start and every
//! `resolver.canary_every`, so a resolver that lies (NXDOMAIN for everything, 127.0.0.2 for
//! everything), a list that refuses us, or a path that times out is noticed — and what it
//! says stops counting before it limits or drops anyone.
//!
//! - Each `[[dnsbl]]` zone (unless its `canary = false`): RFC 5782 section 5's test points,
//!   127.0.0.2 must be listed (a listing code, not a refusal) and 127.0.0.1 must not be.
//! - rDNS: `rdns.canary_ptr` must have a PTR.
//!
//! While a source fails, its lookups are not made and count as `canary_failed`: no weight,
//! and (like any failed lookup, see [`super::policy`]) never a harsher verdict than the
//! other answers justify, only a short-lived one. Each change is logged; `status`, its
//! JSON and the metric `mxscreen_dns_canary_ok` show the last results.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::Mutex,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    codes::{CodeClass, classify},
    config::{RdnsConfig, ReputationConfig},
    dnsbl::Zone,
    engine::Engine,
    names::{dnsbl_name, ptr_name},
    nameservers::{self, Probe},
    quota::{self, unix_now},
    resolver::{Dns, Outcome},
    stats::{Counters, RDNS_ZONE},
    verdict::{Evidence, Finding},
};

/// The source name of rDNS in the canary's results (zones go by their display name).
pub const RDNS_SOURCE: &str = "rdns";

/// How often the loop looks whether a reload changed the config (then a round runs at
/// once: a fixed `resolver.nameservers` must not wait out `canary_every`).
const CONFIG_RECHECK: Duration = Duration::from_secs(5);

/// One source's last canary result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStatus {
    pub ok: bool,
    /// What failed (empty when it passed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Unix seconds of the check.
    pub checked_at: u64,
    /// For an allowlist zone, its strongest (most negative) weight; 0 for other sources.
    /// While an allowlist fails, every sender counts as if it were on it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allowlist_weight: i32,
}

fn is_zero(w: &i32) -> bool {
    *w == 0
}

impl CanaryStatus {
    /// What a failure means for screening, for the log and `status`. A failing blocklist
    /// only stops counting; a failing allowlist cannot say whom it would allowlist, so
    /// every sender is given its benefit (policy: a failed lookup is read at its most
    /// lenient), which turns off drops and limits on the other lists for anyone it could
    /// outweigh: the operator must read that as screening off, not as one list off.
    pub fn consequence(&self, source: &str) -> String {
        if source.starts_with(nameservers::SOURCE_PREFIX) {
            format!(
                "every query also goes to another nameserver, so none waits for {source}, but with one more down every query would wait out resolver.timeout: fix it or remove it from resolver.nameservers"
            )
        } else if self.allowlist_weight < 0 {
            format!(
                "{source} is an allowlist and cannot be read, so every sender counts as if it were on it ({} points): nobody is dropped or limited unless the other lists outweigh that, until it passes again",
                self.allowlist_weight
            )
        } else {
            format!(
                "{source}'s answers do not count (nobody is limited or dropped on them) until it passes again"
            )
        }
    }
}

/// A source's last result (`None`: not checked, or the canary is off for it).
#[derive(Debug, Default)]
pub struct CanaryCell(Mutex<Option<CanaryStatus>>);

impl CanaryCell {
    pub fn get(&self) -> Option<CanaryStatus> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What failed, while the source fails.
    fn failing(&self) -> Option<String> {
        self.get().filter(|s| !s.ok).map(|s| s.detail)
    }

    pub(super) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Records a result (`allowlist_weight`: see [`CanaryStatus`]); logs the first one and
    /// every change.
    pub(super) fn set(&self, source: &str, allowlist_weight: i32, result: Result<(), String>) {
        let mut cell = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let was = cell.as_ref().map(|s| s.ok);
        let status = CanaryStatus {
            ok: result.is_ok(),
            detail: result.err().unwrap_or_default(),
            checked_at: unix_now(),
            allowlist_weight,
        };
        match (was, status.ok) {
            (Some(true) | None, false) => warn!(
                source,
                "resolver canary failed: {}; {}",
                status.detail,
                status.consequence(source)
            ),
            (Some(false), true) => info!(source, "resolver canary passes again"),
            (None, true) => info!(source, "resolver canary passes"),
            _ => {}
        }
        *cell = Some(status);
    }
}

/// The evidence standing in for `zone`'s lookup while its canary fails, if it does.
pub fn zone_failing(zone: &Zone) -> Option<Evidence> {
    let detail = zone.counters.canary.failing()?;
    let (lo, hi) = zone.weight_range();
    Some(not_counted(zone.source(), detail).unknown(lo, hi))
}

/// The evidence standing in for the PTR and FCrDNS lookups while the PTR canary fails.
pub fn rdns_failing(counters: &Counters, cfg: &RdnsConfig) -> Option<Evidence> {
    let detail = counters.rdns_canary.failing()?;
    let hi = cfg.missing_ptr_weight.max(cfg.fcrdns_mismatch_weight);
    Some(not_counted(RDNS_SOURCE, detail).unknown(0, hi))
}

fn not_counted(source: impl Into<String>, detail: String) -> Evidence {
    Evidence::new(source, Finding::CanaryFailed, 0)
        .detail(format!("not asked: the resolver canary fails ({detail})"))
}

/// One round: every zone's test points, the PTR and each nameserver alone (when there are
/// several), asked together; results recorded.
pub async fn round(
    dns: &Dns,
    zones: &[Zone],
    probes: &[Probe],
    cfg: &ReputationConfig,
    counters: &Counters,
) {
    let server_checks =
        futures::future::join_all(probes.iter().map(|p| nameservers::ask(p, zones, cfg)));
    let checked = zones.iter().filter(|z| z.cfg.canary);
    let zone_checks = futures::future::join_all(checked.clone().map(|z| probe_zone(dns, z)));
    let ptr_check = async {
        match cfg.rdns.canary_addr().filter(|_| cfg.rdns.enabled) {
            Some(ip) => Some(probe_ptr(dns, ip).await),
            None => None,
        }
    };
    let (results, ptr, servers) = futures::join!(zone_checks, ptr_check, server_checks);
    for (p, r) in probes.iter().zip(servers) {
        match r {
            Some(r) => p.cell.set(&p.source, 0, r),
            None => p.cell.clear(),
        }
    }
    for (z, r) in checked.zip(results) {
        let allowlist_weight = z.weight_range().0.min(0);
        z.counters.canary.set(&z.display, allowlist_weight, r);
    }
    for z in zones.iter().filter(|z| !z.cfg.canary) {
        z.counters.canary.clear();
    }
    match ptr {
        Some(r) => counters.rdns_canary.set(RDNS_SOURCE, 0, r),
        None => counters.rdns_canary.clear(),
    }
}

/// Forgets every result (the canary was turned off).
pub fn clear(zones: &[Zone], probes: &[Probe], counters: &Counters) {
    for z in zones {
        z.counters.canary.clear();
    }
    for p in probes {
        p.cell.clear();
    }
    counters.rdns_canary.clear();
}

/// The last results of the zones in use and of rDNS, by source.
pub fn statuses(
    zones: &[Zone],
    probes: &[Probe],
    counters: &Counters,
) -> BTreeMap<String, CanaryStatus> {
    let mut out: BTreeMap<String, CanaryStatus> = zones
        .iter()
        .filter_map(|z| Some((z.display.clone(), z.counters.canary.get()?)))
        .chain(
            probes
                .iter()
                .filter_map(|p| Some((p.source.clone(), p.cell.get()?))),
        )
        .collect();
    if let Some(s) = counters.rdns_canary.get() {
        out.insert(RDNS_SOURCE.to_owned(), s);
    }
    out
}

/// RFC 5782's test points: 127.0.0.2 listed with a listing code, 127.0.0.1 not listed.
async fn probe_zone(dns: &Dns, zone: &Zone) -> Result<(), String> {
    let ask = |last: u8| {
        quota::count(zone);
        let name = dnsbl_name(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), &zone.name);
        async move { dns.a(&zone.display, &name).await }
    };
    let (two, one) = futures::join!(ask(2), ask(1));
    match two {
        Outcome::Answer(codes, _) => {
            let listing = codes
                .iter()
                .any(|c| classify(*c, &zone.cfg.error_codes) == CodeClass::Listing);
            if !listing {
                let codes: Vec<String> = codes.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "the test point 127.0.0.2 was answered {} (a refusal or no DNSBL answer): is the resolver one the list accepts?",
                    codes.join(",")
                ));
            }
        }
        Outcome::Negative { .. } => {
            return Err(
                "the test point 127.0.0.2 is not listed: the resolver answers NXDOMAIN for names that exist, or the zone is not a DNSBL (set canary = false for a zone of your own without test points)".into(),
            );
        }
        Outcome::TempFail(e) => {
            return Err(format!("the test point 127.0.0.2: {}", scrub(zone, &e)));
        }
    }
    match one {
        Outcome::Negative { .. } => Ok(()),
        Outcome::Answer(codes, _) => {
            let codes: Vec<String> = codes.iter().map(ToString::to_string).collect();
            Err(format!(
                "127.0.0.1, which no list may list, was answered {}: the resolver answers every name",
                codes.join(",")
            ))
        }
        Outcome::TempFail(e) => Err(format!("the test point 127.0.0.1: {}", scrub(zone, &e))),
    }
}

/// A resolver error with the zone's query name (and key) replaced by its display name.
fn scrub(zone: &Zone, e: &str) -> String {
    e.replace(&zone.name, &zone.display)
}

/// `ip` must have a PTR.
async fn probe_ptr(dns: &Dns, ip: IpAddr) -> Result<(), String> {
    match dns.ptr(RDNS_ZONE, &ptr_name(ip)).await {
        Outcome::Answer(..) => Ok(()),
        Outcome::Negative { nxdomain, .. } => Err(format!(
            "{ip} (rdns.canary_ptr) has {} though it has a PTR: the resolver makes up missing PTRs",
            if nxdomain {
                "NXDOMAIN"
            } else {
                "no PTR record"
            }
        )),
        Outcome::TempFail(e) => Err(format!("{ip} (rdns.canary_ptr): {e}")),
    }
}

/// The canary loop for the daemon: a round now, then every `resolver.canary_every`, and at
/// once after a reload changed the config (`canary_every = "0s"` forgets the results).
/// Ends when the returned task is aborted.
pub fn spawn(engine: Engine) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let cfg = engine.config();
            let every = cfg.resolver.canary_every;
            if every.is_zero() {
                engine.canary_off();
            } else {
                engine.canary_round().await;
            }
            // `None` (past the clock's range): never due, only a reload starts a round.
            let next = tokio::time::Instant::now().checked_add(every);
            loop {
                tokio::time::sleep(CONFIG_RECHECK).await;
                let due =
                    !every.is_zero() && next.is_some_and(|n| tokio::time::Instant::now() >= n);
                if due || engine.config() != cfg {
                    break;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing allowlist is said to turn drops and limits off, not to be one list off.
    #[test]
    fn a_failing_allowlist_says_nobody_is_dropped() {
        let mut s = CanaryStatus::default();
        let block = s.consequence("bl.test");
        assert!(block.contains("bl.test's answers do not count"), "{block}");
        s.allowlist_weight = -15;
        let allow = s.consequence("wl.test");
        assert!(
            allow.contains("wl.test is an allowlist")
                && allow.contains("nobody is dropped or limited")
                && allow.contains("-15"),
            "{allow}"
        );
        assert!(!allow.contains("answers do not count"), "{allow}");
        let dead = CanaryStatus::default().consequence("nameserver 127.0.1.9");
        assert!(
            dead.contains("another nameserver") && dead.contains("resolver.nameservers"),
            "{dead}"
        );
    }
}
