//! Explained refusals seen from userspace: when a dropped peer's next SYN will be let through
//! to the MTA so it can tell the sender why (the datapath's `explain_now`, read back).

use std::time::Duration;

use filter_common::{DatapathConfig, FLAG_EXPLAIN, FLAG_OBSERVE, PeerVerdict};

use super::clock;

/// How long until the datapath lets this verdict's next SYN through to be explained: zero
/// means the very next SYN. `None` when the verdict is never explained: not a reputation
/// `drop` marked for explaining, explained refusals off (`policy.explain_every = "0s"`), no MTA
/// asking (`FLAG_EXPLAIN` clear), or observe mode (nothing is dropped, so nothing needs
/// explaining).
pub fn next_explained(v: &PeerVerdict, cfg: &DatapathConfig) -> Option<Duration> {
    if cfg.explain_window_ns == 0
        || cfg.flags & FLAG_OBSERVE != 0
        || cfg.flags & FLAG_EXPLAIN == 0
        || !v.is_explained()
    {
        return None;
    }
    Some(Duration::from_nanos(
        v.explain_at_ns.saturating_sub(clock::now_ns()),
    ))
}

#[cfg(test)]
mod tests {
    use filter_common::{Action, Reason};

    use super::*;

    #[test]
    fn only_reputation_drops_are_explained_and_only_when_on() {
        let mut cfg = DatapathConfig::empty();
        cfg.explain_window_ns = 3_600_000_000_000;
        cfg.flags = FLAG_EXPLAIN;
        let mut v = PeerVerdict::new(Action::Drop, Reason::Reputation, 0);
        assert_eq!(next_explained(&v, &cfg), None, "not marked for explaining");
        v.flags = filter_common::VERDICT_EXPLAIN;
        assert_eq!(next_explained(&v, &cfg), Some(Duration::ZERO));
        cfg.flags = 0;
        assert_eq!(next_explained(&v, &cfg), None, "no MTA asking");
        cfg.flags = FLAG_EXPLAIN;
        v.explain_at_ns = clock::now_ns() + 60_000_000_000;
        let left = next_explained(&v, &cfg).unwrap();
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        for (action, reason) in [
            (Action::Drop, Reason::Manual),
            (Action::Drop, Reason::Tempfail),
            (Action::Limit, Reason::Reputation),
            (Action::Pass, Reason::Reputation),
        ] {
            assert_eq!(
                next_explained(&PeerVerdict::new(action, reason, 0), &cfg),
                None
            );
        }
        cfg.flags |= FLAG_OBSERVE;
        assert_eq!(next_explained(&v, &cfg), None);
        cfg.flags = FLAG_EXPLAIN;
        cfg.explain_window_ns = 0;
        assert_eq!(next_explained(&v, &cfg), None);
    }
}
