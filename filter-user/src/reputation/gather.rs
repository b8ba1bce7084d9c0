//! One evaluation's lookups, gathered as they come in: rDNS and every zone asked at once, and
//! the gathering ended as soon as the answers in make a `drop` that no zone still out could
//! change. A blocklist still out can only add weight and cannot turn a drop into anything
//! else, so a zone that times out delays no drop past the answers that decide it (a held
//! SYN is released at `datapath.hold_max`). It still delays a pass or a limit, which its
//! answer could change; and while an allowlist (a negative weight) is still out, nothing
//! is decided early. rDNS is always waited for (within one query's time, see `rdns`): it
//! says whether a dropped sender is a mail server whose refusal is explained
//! (`policy.explain_to = "fcrdns"`). Only the daemon's evaluations end early
//! ([`Until::DropCertain`]); `check` gathers every answer, to show each.
use std::{future::Future, net::IpAddr, pin::Pin};

use filter_common::Action;
use futures::{StreamExt, stream::FuturesUnordered};

use super::{
    config::ReputationConfig,
    dnsbl::{self, Zone, ZoneResult},
    policy, rdns,
    resolver::Dns,
    stats::Counters,
    verdict::{Evidence, Finding},
};

/// What the lookups of one evaluation found.
pub struct Gathered {
    pub evidence: Vec<Evidence>,
    pub warnings: Vec<String>,
}

/// How long an evaluation gathers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Every source has answered (or timed out): `check`, which shows each lookup.
    EveryAnswer,
    /// Also stop once the answers in make a certain drop: the daemon's evaluations, whose
    /// first SYN may be held (see the module comment).
    DropCertain,
}

/// A lookup still out: rDNS (`None`) or the zone at an index.
type Pending<'a> = Pin<Box<dyn Future<Output = (Option<usize>, ZoneResult)> + Send + 'a>>;

/// Asks rDNS (when on) and every zone about `ip`, and gathers their evidence, ending early
/// on a certain drop (the sources not waited for are recorded as [`Finding::NotAwaited`]).
pub async fn gather(
    dns: &Dns,
    zones: &[Zone],
    cfg: &ReputationConfig,
    counters: &Counters,
    ip: IpAddr,
    until: Until,
) -> Gathered {
    let mut pending: FuturesUnordered<Pending<'_>> = FuturesUnordered::new();
    if cfg.rdns.enabled {
        let budget = cfg.resolver.query_worst_case();
        pending.push(Box::pin(async move {
            let evidence = rdns::check(dns, ip, &cfg.rdns, budget, counters).await;
            let warnings = Vec::new();
            (None, ZoneResult { evidence, warnings })
        }));
    }
    for (i, z) in zones.iter().enumerate() {
        pending.push(Box::pin(async move {
            (Some(i), dnsbl::check(dns, ip, z).await)
        }));
    }
    // Each source's result in its slot (rDNS first, then the zones in config order), so
    // the evidence reads in the same order whichever answered first.
    let mut slots: Vec<Option<ZoneResult>> = (0..=zones.len()).map(|_| None).collect();
    let slot = |source: Option<usize>| source.map_or(0, |i| i + 1);
    let evidence = |slots: &[Option<ZoneResult>]| -> Vec<Evidence> {
        slots
            .iter()
            .flatten()
            .flat_map(|r| r.evidence.clone())
            .collect()
    };
    if !cfg.rdns.enabled {
        slots[0] = Some(ZoneResult {
            evidence: Vec::new(),
            warnings: Vec::new(),
        });
    }
    while let Some((source, result)) = pending.next().await {
        slots[slot(source)] = Some(result);
        if pending.is_empty() {
            break;
        }
        if until == Until::EveryAnswer {
            continue;
        }
        let only_add = slots[0].is_some()
            && zones
                .iter()
                .zip(&slots[1..])
                .all(|(z, r)| r.is_some() || z.weight_range().0 >= 0);
        if only_add && policy::decide(&evidence(&slots), &cfg.policy).action == Action::Drop {
            let not_awaited = |source: String| ZoneResult {
                evidence: vec![Evidence::new(source, Finding::NotAwaited, 0).detail(
                    "not waited for: the answers in already make a drop it could only confirm",
                )],
                warnings: Vec::new(),
            };
            for (z, r) in zones.iter().zip(&mut slots[1..]) {
                if r.is_none() {
                    *r = Some(not_awaited(z.source()));
                }
            }
            break;
        }
    }
    let mut found = Gathered {
        evidence: Vec::new(),
        warnings: Vec::new(),
    };
    for r in slots.into_iter().flatten() {
        found.evidence.extend(r.evidence);
        found.warnings.extend(r.warnings);
    }
    found
}
