//! Reverse DNS and forward-confirmed reverse DNS (FCrDNS).
//!
//! The one distinction that matters: NXDOMAIN or an empty answer is a host without a PTR
//! (`no_ptr`, weighed), while SERVFAIL or a timeout says nothing about the host
//! (`dns_tempfail`, never weighed). Exim calls these `host_lookup_failed` and
//! `host_lookup_deferred`; blocking on the second refuses mail whenever DNS hiccups.
use std::{net::IpAddr, time::Duration};

use futures::future::join_all;
use hickory_resolver::proto::rr::Name;

use super::{
    canary,
    config::RdnsConfig,
    names::{is_v4, is_v6, ptr_name},
    resolver::{Dns, Outcome},
    stats::{Counters, RDNS_ZONE},
    verdict::{Evidence, Finding},
};

/// Looks up the PTR of `ip` and forward-confirms up to `max_ptr_names` of its names, all
/// within `budget` (one query's worst case: the forward lookups come after the PTR, and
/// rDNS must not take two queries' time while a held SYN waits for the verdict).
pub async fn check(
    dns: &Dns,
    ip: IpAddr,
    cfg: &RdnsConfig,
    budget: Duration,
    counters: &Counters,
) -> Vec<Evidence> {
    if let Some(failing) = canary::rdns_failing(counters, cfg) {
        return vec![failing];
    }
    let started = tokio::time::Instant::now();
    let (ptr_ev, names) = match ptr(dns, ip, cfg, counters).await {
        Ok(found) => found,
        Err(no_name) => return vec![no_name],
    };
    let deadline = started.checked_add(budget).unwrap_or(started);
    let forward =
        match tokio::time::timeout_at(deadline, fcrdns(dns, ip, names, cfg, counters)).await {
            Ok(ev) => ev,
            Err(_) => {
                counters.rdns_tempfail.inc();
                Evidence::new("fcrdns", Finding::DnsTempfail, 0)
                    .detail("timeout: the forward lookups did not finish within the PTR's time")
                    .unknown(0, cfg.fcrdns_mismatch_weight)
            }
        };
    vec![ptr_ev, forward]
}

/// The PTR query: its evidence and names, or the evidence of none (a definite negative,
/// weighed) or of a temporary failure (never weighed).
async fn ptr(
    dns: &Dns,
    ip: IpAddr,
    cfg: &RdnsConfig,
    counters: &Counters,
) -> Result<(Evidence, Vec<Name>), Evidence> {
    let qname = ptr_name(ip);
    let query = format!("{qname} PTR");
    match dns.ptr(RDNS_ZONE, &qname).await {
        Outcome::Answer(names, ttl) => {
            counters.ptr_found.inc();
            let ev = Evidence::new("rdns", Finding::Ptr, 0)
                .query(query)
                .detail(joined(&names))
                .ttl(Some(ttl));
            Ok((ev, names))
        }
        Outcome::Negative { nxdomain, ttl } => {
            counters.no_ptr.inc();
            let what = if nxdomain {
                "NXDOMAIN"
            } else {
                "no PTR record"
            };
            Err(
                Evidence::new("rdns", Finding::NoPtr, cfg.missing_ptr_weight)
                    .query(query)
                    .detail(what)
                    .ttl(ttl),
            )
        }
        Outcome::TempFail(e) => {
            counters.rdns_tempfail.inc();
            Err(Evidence::new("rdns", Finding::DnsTempfail, 0)
                .query(query)
                .detail(e)
                .unknown(0, cfg.missing_ptr_weight.max(cfg.fcrdns_mismatch_weight)))
        }
    }
}

/// What the forward lookups of the PTR names found.
#[derive(Default)]
struct Forward<'a> {
    /// The first name that resolves back to the address, with its TTL.
    confirmed: Option<(&'a Name, Option<Duration>)>,
    /// Names whose lookup failed, with why.
    failed: Vec<String>,
    /// The smallest TTL of the names that do not resolve back.
    min_ttl: Option<Duration>,
}

/// Forward-confirms up to `max_ptr_names` of `names` (looked up together): a match, a
/// temporary failure (never weighed), or a mismatch.
async fn fcrdns(
    dns: &Dns,
    ip: IpAddr,
    mut names: Vec<Name>,
    cfg: &RdnsConfig,
    counters: &Counters,
) -> Evidence {
    let total = names.len();
    // The same names every time, whatever order the resolver answers in (many rotate
    // RRsets): the verdict must not depend on which names a round robin put first.
    names.sort();
    names.truncate(cfg.max_ptr_names);
    let checked = if total > names.len() {
        format!(" (checked {} of {total} PTR names)", names.len())
    } else {
        String::new()
    };
    let checks = names.iter().map(|name| forward_matches(dns, ip, name));
    let results = join_all(checks).await;
    let mut found = Forward::default();
    for (name, r) in names.iter().zip(results) {
        match r {
            Ok((true, ttl)) => {
                found.confirmed = Some((name, ttl));
                break;
            }
            Ok((false, ttl)) => found.min_ttl = min_opt(found.min_ttl, ttl),
            Err(e) => found.failed.push(format!("{name}: {e}")),
        }
    }
    let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
    if let Some((name, ttl)) = found.confirmed {
        counters.fcrdns_ok.inc();
        Evidence::new("fcrdns", Finding::FcrdnsMatch, 0)
            .query(format!("{name} {rtype}"))
            .detail(format!("{name} -> {ip}"))
            .ttl(ttl)
    } else if !found.failed.is_empty() {
        counters.rdns_tempfail.inc();
        Evidence::new("fcrdns", Finding::DnsTempfail, 0)
            .query(format!("{} {rtype}", joined(&names)))
            .detail(found.failed.join("; "))
            .unknown(0, cfg.fcrdns_mismatch_weight)
    } else {
        counters.fcrdns_mismatch.inc();
        Evidence::new(
            "fcrdns",
            Finding::FcrdnsMismatch,
            cfg.fcrdns_mismatch_weight,
        )
        .query(format!("{} {rtype}", joined(&names)))
        .detail(format!("no name resolves back to {ip}{checked}"))
        .ttl(found.min_ttl)
    }
}

/// Names separated by spaces.
fn joined(names: &[Name]) -> String {
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `name` has an address of `ip`'s family equal to `ip`. `Err` when unknown. The
/// name is asked exactly as the PTR gave it: a name with odd bytes (spaces, UTF-8, control
/// characters) belongs to no host and comes back NXDOMAIN, a mismatch, never a failure the
/// sender could choose to dodge the weight with.
async fn forward_matches(
    dns: &Dns,
    ip: IpAddr,
    name: &Name,
) -> Result<(bool, Option<Duration>), String> {
    if let Some(v4) = is_v4(ip) {
        match dns.a(RDNS_ZONE, name).await {
            Outcome::Answer(addrs, ttl) => Ok((addrs.contains(&v4), Some(ttl))),
            Outcome::Negative { ttl, .. } => Ok((false, ttl)),
            Outcome::TempFail(e) => Err(e),
        }
    } else {
        let v6 = is_v6(ip).expect("not IPv4, so IPv6");
        match dns.aaaa(RDNS_ZONE, name).await {
            Outcome::Answer(addrs, ttl) => Ok((addrs.contains(&v6), Some(ttl))),
            Outcome::Negative { ttl, .. } => Ok((false, ttl)),
            Outcome::TempFail(e) => Err(e),
        }
    }
}
