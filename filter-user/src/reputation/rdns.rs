//! Reverse DNS and forward-confirmed reverse DNS (FCrDNS).
//!
//! The one distinction that matters: NXDOMAIN or an empty answer is a host without a PTR
//! (`no_ptr`, weighed), while SERVFAIL or a timeout says nothing about the host
//! (`dns_tempfail`, never weighed). Exim calls these `host_lookup_failed` and
//! `host_lookup_deferred`; blocking on the second refuses mail whenever DNS hiccups.
use std::net::IpAddr;

use futures::future::join_all;

use super::{
    config::RdnsConfig,
    names::{is_v4, is_v6, ptr_name},
    resolver::{Dns, Outcome},
    stats::{Counters, RDNS_ZONE},
    verdict::{Evidence, Finding},
};

/// Looks up the PTR of `ip` and forward-confirms up to `max_ptr_names` of its names.
pub async fn check(dns: &Dns, ip: IpAddr, cfg: &RdnsConfig, counters: &Counters) -> Vec<Evidence> {
    let qname = ptr_name(ip);
    let query = format!("{qname} PTR");
    let names = match dns.ptr(RDNS_ZONE, &qname).await {
        Outcome::Answer(names, ttl) => {
            counters.ptr_found.inc();
            let list = names
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            let ev = Evidence::new("rdns", Finding::Ptr, 0)
                .query(query)
                .detail(list)
                .ttl(Some(ttl));
            (ev, names)
        }
        Outcome::Negative { nxdomain, ttl } => {
            counters.no_ptr.inc();
            let what = if nxdomain {
                "NXDOMAIN"
            } else {
                "no PTR record"
            };
            let ev = Evidence::new("rdns", Finding::NoPtr, cfg.missing_ptr_weight)
                .query(query)
                .detail(what)
                .ttl(ttl);
            return vec![ev];
        }
        Outcome::TempFail(e) => {
            counters.rdns_tempfail.inc();
            let ev = Evidence::new("rdns", Finding::DnsTempfail, 0)
                .query(query)
                .detail(e)
                .unknown(0, cfg.missing_ptr_weight.max(cfg.fcrdns_mismatch_weight));
            return vec![ev];
        }
    };
    let (ptr_ev, mut names) = names;
    let total = names.len();
    names.truncate(cfg.max_ptr_names);
    let checked = if total > names.len() {
        format!(" (checked {} of {total} PTR names)", names.len())
    } else {
        String::new()
    };
    let checks = names
        .iter()
        .map(|name| forward_matches(dns, ip, name.to_string()));
    let results = join_all(checks).await;
    let mut failed = Vec::new();
    let mut confirmed = None;
    let mut min_ttl = None;
    for (name, r) in names.iter().zip(results) {
        match r {
            Ok((true, ttl)) => {
                confirmed = Some((name, ttl));
                break;
            }
            Ok((false, ttl)) => min_ttl = min_opt(min_ttl, ttl),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
    let fc = if let Some((name, ttl)) = confirmed {
        counters.fcrdns_ok.inc();
        Evidence::new("fcrdns", Finding::FcrdnsMatch, 0)
            .query(format!("{name} {rtype}"))
            .detail(format!("{name} -> {ip}"))
            .ttl(ttl)
    } else if !failed.is_empty() {
        counters.rdns_tempfail.inc();
        Evidence::new("fcrdns", Finding::DnsTempfail, 0)
            .query(format!(
                "{} {rtype}",
                names
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ))
            .detail(failed.join("; "))
            .unknown(0, cfg.fcrdns_mismatch_weight)
    } else {
        counters.fcrdns_mismatch.inc();
        let listed = names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Evidence::new(
            "fcrdns",
            Finding::FcrdnsMismatch,
            cfg.fcrdns_mismatch_weight,
        )
        .query(format!("{listed} {rtype}"))
        .detail(format!("no name resolves back to {ip}{checked}"))
        .ttl(min_ttl)
    };
    vec![ptr_ev, fc]
}

fn min_opt(
    a: Option<std::time::Duration>,
    b: Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether `name` has an address of `ip`'s family equal to `ip`. `Err` when unknown.
async fn forward_matches(
    dns: &Dns,
    ip: IpAddr,
    name: String,
) -> Result<(bool, Option<std::time::Duration>), String> {
    let fqdn = if name.ends_with('.') {
        name
    } else {
        format!("{name}.")
    };
    if let Some(v4) = is_v4(ip) {
        match dns.a(RDNS_ZONE, &fqdn).await {
            Outcome::Answer(addrs, ttl) => Ok((addrs.contains(&v4), Some(ttl))),
            Outcome::Negative { ttl, .. } => Ok((false, ttl)),
            Outcome::TempFail(e) => Err(e),
        }
    } else {
        let v6 = is_v6(ip).expect("not IPv4, so IPv6");
        match dns.aaaa(RDNS_ZONE, &fqdn).await {
            Outcome::Answer(addrs, ttl) => Ok((addrs.contains(&v6), Some(ttl))),
            Outcome::Negative { ttl, .. } => Ok((false, ttl)),
            Outcome::TempFail(e) => Err(e),
        }
    }
}
