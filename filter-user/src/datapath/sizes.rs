//! How big the datapath's maps are: chosen at load time from `[datapath.maps]`.

use documented::DocumentedFields;
use filter_common::default_sizes;
use serde::{Deserialize, Serialize};

use crate::invalid_key::InvalidKey;

/// The largest map the daemon asks the kernel for. The per-source map is preallocated (about
/// 130 bytes an entry with the kernel's overhead), so 16M entries is already gigabytes; the
/// kernel itself refuses hash maps whose bucket array would pass 4 GiB.
pub const MAX_ENTRIES: u32 = 1 << 24;
/// Hit counters are per CPU: a million is already 8 MiB on each.
pub const MAX_HIT_COUNTERS: u32 = 1 << 20;

/// Map capacities, chosen at load time. The defaults suit a busy MX; the per-source map is
/// preallocated by the kernel (memory is paid up front), list entries are allocated on use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct MapSizes {
    /// Sources with a verdict, per address family: the verdict, the decision cached from it
    /// and its token bucket (LRU, preallocated: past it, the least recently seen verdict goes
    /// first, and its source is looked up again at its next SYN).
    // The verdicts' maps (`PEERS_V4`/`_V6`); the config key keeps its first name.
    #[serde(rename = "verdicts")]
    #[documented_fields(rename = "verdicts")]
    pub peers: u32,
    /// Deny, limit-feed and prefix-verdict entries per family, feeds included (allocated on
    /// use; the lists' bucket array, 16 bytes per entry of deny + allow, is allocated at
    /// start).
    pub deny: u32,
    /// Allow-list prefixes per family (allocated on use).
    pub allow: u32,
    /// Hit counters of list entries, per CPU, 8 bytes each: every manual, config and host
    /// entry and every prefix verdict gets its own, a feed one for all its entries; entries
    /// beyond share an uncounted one.
    pub hit_counters: u32,
    /// Sources without a verdict the datapath keeps state for, per address family: unknown
    /// and held ones (first contact, last report), and those a list decides (the cached
    /// decision, a limit feed's token bucket). LRU, preallocated, apart from the verdicts so
    /// that a flood of new sources never pushes a verdict out. It also bounds the hold: while
    /// new sources come faster than half of it per `hold_max`, first contact passes
    /// (counted as `unheld`), since a held source it forgot would be held again. The eBPF
    /// datapath's: nftables' dynamic sets are allocated on use and keep `verdicts` of room.
    pub seen: u32,
    /// No longer used: token buckets live in the per-source entries (`verdicts`). Accepted
    /// so that older config files still load.
    #[serde(default, skip_serializing)]
    pub buckets: Option<u32>,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            peers: default_sizes::PEERS,
            deny: 1024 * 1024,
            allow: 64 * 1024,
            hit_counters: default_sizes::HITS,
            seen: default_sizes::SEEN,
            buckets: None,
        }
    }
}

impl MapSizes {
    /// Small maps for tests and tools that load many instances.
    pub const fn small() -> Self {
        Self {
            peers: 4096,
            deny: 4096,
            allow: 1024,
            hit_counters: 1024,
            seen: 4096,
            buckets: None,
        }
    }

    /// Slots of the decision cache (one for both families): a power of two, at least one per
    /// source entry of a family.
    pub const fn cache_slots(&self) -> u32 {
        let n = self.peers.next_power_of_two();
        if n < 2 { 2 } else { n }
    }

    /// Entries of each family's list hash: every table shares it.
    pub const fn lists(&self) -> u32 {
        let n = self.deny.saturating_add(self.allow);
        if n > MAX_ENTRIES { MAX_ENTRIES } else { n }
    }

    /// Every size within 1..=[`MAX_ENTRIES`]; the kernel refuses a map of 0 entries, and a
    /// refused map found only at `run` would cost the pinned verdicts.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        for (key, n) in [
            ("verdicts", self.peers),
            ("seen", self.seen),
            ("deny", self.deny),
            ("allow", self.allow),
            ("hit_counters", self.hit_counters),
        ] {
            let max = if key == "hit_counters" {
                MAX_HIT_COUNTERS
            } else {
                MAX_ENTRIES
            };
            if n == 0 || n > max {
                return Err(InvalidKey::new(
                    format!("datapath.maps.{key}"),
                    format!("{n} entries; 1 to {max} are allowed"),
                ));
            }
        }
        Ok(())
    }
}
