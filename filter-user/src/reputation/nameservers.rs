//! Each nameserver of several, asked alone at every canary round. Queries go to two
//! nameservers at once (see `resolver`), so a dead one costs no query anything, and for the
//! same reason nothing else would notice it; a second one dying would cost every query its
//! timeout. Each shows in the canary's results as `nameserver ADDR` (`status`, the log, the
//! metric `mxscreen_dns_canary_ok`); its failure changes no evidence.
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use super::{
    canary::CanaryCell,
    config::{ReputationConfig, ResolverConfig},
    dnsbl::Zone,
    names::{dnsbl_name, ptr_name},
    quota,
    resolver::{Dns, Outcome},
    stats::{Counters, RDNS_ZONE},
};

/// How a nameserver's source name starts in the canary's results.
pub const SOURCE_PREFIX: &str = "nameserver ";

/// One nameserver with a resolver of its own.
pub struct Probe {
    pub source: String,
    dns: Dns,
    pub cell: CanaryCell,
}

/// A probe per nameserver, when there are several (with one, the canary's own questions
/// are its check).
pub fn probes(cfg: &ResolverConfig) -> Vec<Probe> {
    if cfg.nameservers.len() < 2 {
        return Vec::new();
    }
    cfg.nameservers
        .iter()
        .filter_map(|ns| {
            let alone = ResolverConfig {
                nameservers: vec![*ns],
                attempts: 0,
                ..cfg.clone()
            };
            // Its queries are the canary's: counted nowhere else.
            let dns = Dns::new(&alone, Arc::new(Counters::default())).ok()?;
            Some(Probe {
                source: format!("{SOURCE_PREFIX}{ns}"),
                dns,
                cell: CanaryCell::default(),
            })
        })
        .collect()
}

/// Asks `probe`'s nameserver one of the canary's questions (a zone's test point, else the
/// PTR canary's address): any answer, even a wrong one (the pooled canary judges those),
/// shows it is alive. `None` when the canary asks nothing.
pub async fn ask(
    probe: &Probe,
    zones: &[Zone],
    cfg: &ReputationConfig,
) -> Option<Result<(), String>> {
    let failed = if let Some(z) = zones.iter().find(|z| z.cfg.canary) {
        quota::count(z);
        let name = dnsbl_name(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), &z.name);
        match probe.dns.a(&z.display, &name).await {
            Outcome::TempFail(e) => Some(format!(
                "127.0.0.2 under {}: {}",
                z.display,
                e.replace(&z.name, &z.display)
            )),
            _ => None,
        }
    } else {
        let ip = cfg.rdns.canary_addr().filter(|_| cfg.rdns.enabled)?;
        match probe.dns.ptr(RDNS_ZONE, &ptr_name(ip)).await {
            Outcome::TempFail(e) => Some(format!("the PTR of {ip}: {e}")),
            _ => None,
        }
    };
    Some(match failed {
        Some(e) => Err(format!("asked alone, it does not answer ({e})")),
        None => Ok(()),
    })
}
