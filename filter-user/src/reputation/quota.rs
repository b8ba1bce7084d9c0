//! Each zone's queries today against its `daily_query_quota` (the list's free-use terms):
//! counted per UTC day, warned about once a day when they pass [`WARN_SHARE`] of it.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::warn;

use super::dnsbl::Zone;

/// The share of the quota at which `status` and the log warn: time to act (a Data Query
/// Service key, a mirror, fewer queries) before the list starts refusing.
pub const WARN_SHARE: f64 = 0.8;

const DAY_SECS: u64 = 86_400;

/// One zone's queries on the current UTC day.
#[derive(Debug, Default)]
pub struct DailyCount {
    day: AtomicU64,
    count: AtomicU64,
    /// The zone's quota as last counted against (0: none).
    quota: AtomicU64,
    /// The day the warning was last logged, plus one (0: never).
    warned: AtomicU64,
}

impl DailyCount {
    /// Queries today (0 once the day the count was last made is over).
    pub fn today(&self) -> u64 {
        if self.day.load(Relaxed) == unix_now() / DAY_SECS {
            self.count.load(Relaxed)
        } else {
            0
        }
    }

    pub fn quota(&self) -> u64 {
        self.quota.load(Relaxed)
    }

    /// Counts one query on `day`; returns the day's count. (Two threads crossing midnight
    /// together may lose a count: a quota is an estimate anyway.)
    fn count(&self, day: u64) -> u64 {
        if self.day.swap(day, Relaxed) != day {
            self.count.store(0, Relaxed);
        }
        self.count.fetch_add(1, Relaxed) + 1
    }
}

/// Counts one query to `zone` (lookups, TXT reasons, the canary's) and warns, once a day,
/// when the day's queries pass [`WARN_SHARE`] of its `daily_query_quota`.
pub fn count(zone: &Zone) {
    let today = &zone.counters.today;
    let quota = zone.cfg.daily_query_quota;
    today.quota.store(quota, Relaxed);
    let day = unix_now() / DAY_SECS;
    let n = today.count(day);
    if near(n, quota) && today.warned.swap(day + 1, Relaxed) != day + 1 {
        warn!(zone = %zone.display, queries = n, quota, "{}", message(&zone.display, n, quota));
    }
}

/// Whether `queries` have passed [`WARN_SHARE`] of a set `quota`.
pub fn near(queries: u64, quota: u64) -> bool {
    quota > 0 && queries as f64 >= quota as f64 * WARN_SHARE
}

/// The warning for `status` and the log.
pub fn message(zone: &str, queries: u64, quota: u64) -> String {
    format!(
        "{zone}: {queries} queries today, {}% of its daily_query_quota ({quota}): beyond its \
         free-use terms the list refuses or bills; get a Data Query Service key or a local \
         mirror, or lower resolver.max_lookups_per_sec",
        queries * 100 / quota.max(1)
    )
}

/// Now, in Unix seconds.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_starts_again_each_day_and_warns_from_80_percent() {
        let d = DailyCount::default();
        assert_eq!((d.count(10), d.count(10), d.count(11)), (1, 2, 1));
        assert!(!near(79, 100) && near(80, 100) && !near(1_000_000, 0));
        assert!(message("zen", 90, 100).contains("90%"));
    }
}
