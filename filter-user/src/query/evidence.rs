//! What the MTA needs from a peer's last evaluation that the verdict map does not hold: the
//! score and the strongest listing (zone, code, label, TXT). Filled by the daemon as it writes
//! each verdict into the map; read by the query socket and the policy service without a lock
//! on the daemon's main loop.
//!
//! **Bounded by the verdict map's capacity** (`datapath.maps.verdicts` per family, so twice
//! that): every verdict the datapath can hold has its evidence here, and nothing is kept for
//! verdicts the kernel's LRU has already forgotten. Eviction is the cache's own (S3-FIFO,
//! close to the map's LRU). An entry is an address, a score and, for a listed peer only, a
//! shared listing: ~50 bytes for a clean peer, a few hundred with a TXT reason — about the
//! size of the kernel map's own entry, so a full map costs userspace at most its equal.

use std::{net::IpAddr, sync::Arc};

use quick_cache::sync::Cache;

use crate::reputation::{Listing, Verdict, names::canonical};

/// One peer's evidence, as the MTA is told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub score: i32,
    pub listing: Option<Arc<Listing>>,
}

/// The last evaluations' evidence, shared between the daemon and the MTA's sockets.
pub struct EvidenceCache {
    entries: Cache<IpAddr, Recorded>,
}

impl EvidenceCache {
    /// A cache for `verdicts_per_family` verdicts of each address family.
    pub fn for_verdict_map(verdicts_per_family: u32) -> Self {
        Self::new((verdicts_per_family as usize).saturating_mul(2))
    }

    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Cache::new(capacity.max(1)),
        }
    }

    /// Keeps what the MTA needs from a verdict just written into the map (replacing the
    /// peer's previous evaluation).
    pub fn record(&self, v: &Verdict) {
        let listing = v.strongest_listing().cloned().map(Arc::new);
        self.entries.insert(
            canonical(v.ip),
            Recorded {
                score: v.score,
                listing,
            },
        );
    }

    pub fn get(&self, ip: IpAddr) -> Option<Recorded> {
        self.entries.get(&canonical(ip))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> u64 {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, time::Duration};

    use filter_common::{Action, Reason};

    use super::*;
    use crate::reputation::{Evidence, Finding};

    fn verdict(ip: &str, score: i32, listings: &[(i32, &str)]) -> Verdict {
        Verdict {
            ip: ip.parse().unwrap(),
            action: Action::Drop,
            reason: Reason::Reputation,
            score,
            ttl: Duration::from_secs(600),
            evidence: listings
                .iter()
                .map(|(w, zone)| {
                    let mut e = Evidence::new(format!("dnsbl:{zone}"), Finding::Listed, *w);
                    e.listing = Some(Listing {
                        zone: (*zone).into(),
                        code: Ipv4Addr::new(127, 0, 0, 2),
                        label: String::new(),
                        text: String::new(),
                    });
                    e
                })
                .collect(),
            warnings: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn keeps_score_and_strongest_blocklist_listing() {
        let c = EvidenceCache::new(16);
        c.record(&verdict(
            "192.0.2.1",
            -5,
            &[(5, "soft.test"), (10, "hard.test"), (-15, "wl.test")],
        ));
        let r = c.get("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(r.score, -5);
        assert_eq!(r.listing.unwrap().zone, "hard.test");
        // IPv4-mapped IPv6 is the same peer.
        assert!(c.get("::ffff:192.0.2.1".parse().unwrap()).is_some());
        c.record(&verdict("192.0.2.2", 0, &[(-15, "wl.test")]));
        assert_eq!(c.get("192.0.2.2".parse().unwrap()).unwrap().listing, None);
        // A new evaluation replaces the old one.
        c.record(&verdict("192.0.2.1", 0, &[]));
        assert_eq!(
            c.get("192.0.2.1".parse().unwrap()).unwrap(),
            Recorded {
                score: 0,
                listing: None
            }
        );
    }

    #[test]
    fn is_bounded() {
        let c = EvidenceCache::new(100);
        for i in 0..1000u32 {
            c.record(&verdict(
                &Ipv4Addr::from(0x0a00_0000 + i).to_string(),
                1,
                &[],
            ));
        }
        assert!(c.len() <= 100, "{}", c.len());
        assert_eq!(EvidenceCache::for_verdict_map(8).capacity(), 16);
    }
}
