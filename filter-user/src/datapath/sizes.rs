//! How big the datapath's maps are: chosen at load time from `[datapath.maps]`.

use documented::DocumentedFields;
use filter_common::default_sizes;
use serde::{Deserialize, Serialize};

use crate::invalid_key::InvalidKey;

/// The largest map the daemon asks the kernel for. The LRU maps are preallocated (about
/// 100 bytes an entry with the kernel's overhead), so 16M entries is already gigabytes; the
/// kernel itself refuses hash maps whose bucket array would pass 4 GiB.
pub const MAX_ENTRIES: u32 = 1 << 24;

/// Map capacities, chosen at load time. The defaults suit a busy MX; LRU maps are
/// preallocated by the kernel (memory is paid up front), the tries allocate on use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct MapSizes {
    /// Cached verdicts per address family (LRU, preallocated: the oldest go first when full).
    pub verdicts: u32,
    /// Recently reported unknown peers per family (LRU), for event dedup and the hold window.
    pub seen: u32,
    /// Token buckets of limited sources per family (LRU).
    pub buckets: u32,
    /// Deny-list prefixes per family (allocated on use).
    pub deny: u32,
    /// Allow-list prefixes per family (allocated on use).
    pub allow: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            verdicts: default_sizes::VERDICTS,
            seen: default_sizes::SEEN,
            buckets: default_sizes::BUCKETS,
            deny: default_sizes::DENY,
            allow: default_sizes::ALLOW,
        }
    }
}

impl MapSizes {
    /// Small maps for tests and tools that load many instances.
    pub const fn small() -> Self {
        Self {
            verdicts: 4096,
            seen: 4096,
            buckets: 1024,
            deny: 4096,
            allow: 1024,
        }
    }

    /// Every size within 1..=[`MAX_ENTRIES`]; the kernel refuses a map of 0 entries, and a
    /// refused map found only at `run` would cost the pinned verdicts.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        for (key, n) in [
            ("verdicts", self.verdicts),
            ("seen", self.seen),
            ("buckets", self.buckets),
            ("deny", self.deny),
            ("allow", self.allow),
        ] {
            if n == 0 || n > MAX_ENTRIES {
                return Err(InvalidKey::new(
                    format!("datapath.maps.{key}"),
                    format!("{n} entries; 1 to {MAX_ENTRIES} are allowed"),
                ));
            }
        }
        Ok(())
    }
}
