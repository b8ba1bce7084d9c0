//! From evidence to a verdict: the score, the action, and how long it holds.
//!
//! A failed lookup (`dns_tempfail`, a refusing or garbage-answering list) adds no weight,
//! and it never makes a verdict harsher than the answers we did get justify: the action is
//! the one the score would give if every failed lookup had come back with its most lenient
//! possible answer (an allowlist at its most negative weight, a blocklist or rDNS at zero).
//! When a failure leaves the verdict open, it is marked `Tempfail` and lives only
//! `policy.tempfail_ttl`, so the peer is asked again soon.
use std::time::Duration;

use filter_common::{Action, Reason};

use super::{config::PolicyConfig, verdict::Evidence};

/// The policy's conclusion, before it is wrapped in a [`Verdict`](super::Verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Reason,
    pub score: i32,
    pub ttl: Duration,
}

/// The action for a score.
pub fn action_for(score: i32, cfg: &PolicyConfig) -> Action {
    if score >= cfg.drop_threshold {
        Action::Drop
    } else if score >= cfg.limit_threshold {
        Action::Limit
    } else {
        Action::Pass
    }
}

/// Decides from the evidence of the lookups (static lists are handled before).
pub fn decide(evidence: &[Evidence], cfg: &PolicyConfig) -> Decision {
    let score = evidence
        .iter()
        .fold(0i32, |s, e| s.saturating_add(e.weight));
    let (best, worst) = evidence
        .iter()
        .filter_map(|e| e.unknown_range)
        .fold((score, score), |(b, w), (lo, hi)| {
            (b.saturating_add(lo), w.saturating_add(hi))
        });
    let failed = evidence.iter().any(|e| e.unknown_range.is_some());
    let action = action_for(best, cfg);
    if failed {
        let reason = if action_for(worst, cfg) == action {
            Reason::Reputation
        } else {
            Reason::Tempfail
        };
        return Decision {
            action,
            reason,
            score,
            ttl: cfg.tempfail_ttl,
        };
    }
    let ttl = match action {
        Action::Pass if allowlisted(score, cfg) => clamp_ttl(
            evidence
                .iter()
                .filter(|e| e.weight < 0)
                .filter_map(|e| e.ttl)
                .min(),
            cfg,
        ),
        Action::Pass => cfg.pass_ttl,
        // The verdict lasts as long as the shortest-lived answer that weighed in.
        Action::Limit | Action::Drop => clamp_ttl(
            evidence
                .iter()
                .filter(|e| e.weight > 0)
                .filter_map(|e| e.ttl)
                .min(),
            cfg,
        ),
    };
    Decision {
        action,
        reason: Reason::Reputation,
        score,
        ttl,
    }
}

/// Whether `score` allowlists the peer (`policy.allowlist_threshold`, 0 = off).
pub fn allowlisted(score: i32, cfg: &PolicyConfig) -> bool {
    cfg.allowlist_threshold < 0 && score <= cfg.allowlist_threshold
}

/// An answer TTL clamped to `ttl_min..=ttl_max`; no TTL at all gives `ttl_min`.
pub fn clamp_ttl(ttl: Option<Duration>, cfg: &PolicyConfig) -> Duration {
    ttl.unwrap_or(cfg.ttl_min).clamp(cfg.ttl_min, cfg.ttl_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::verdict::Finding;

    fn cfg() -> PolicyConfig {
        PolicyConfig::default()
    }

    fn ev(weight: i32, ttl_secs: u64) -> Evidence {
        Evidence::new("dnsbl:bl.example", Finding::Listed, weight)
            .ttl(Some(Duration::from_secs(ttl_secs)))
    }

    fn tempfail(lo: i32, hi: i32) -> Evidence {
        Evidence::new("rdns", Finding::DnsTempfail, 0).unknown(lo, hi)
    }

    #[test]
    fn thresholds_are_inclusive() {
        let c = cfg();
        assert_eq!(action_for(4, &c), Action::Pass);
        assert_eq!(action_for(5, &c), Action::Limit);
        assert_eq!(action_for(9, &c), Action::Limit);
        assert_eq!(action_for(10, &c), Action::Drop);
        assert_eq!(action_for(-20, &c), Action::Pass);
    }

    #[test]
    fn weights_sum_and_allowlists_subtract() {
        let d = decide(&[ev(10, 900), ev(5, 900)], &cfg());
        assert_eq!(
            (d.score, d.action, d.reason),
            (15, Action::Drop, Reason::Reputation)
        );
        let d = decide(&[ev(10, 900), ev(-15, 900)], &cfg());
        assert_eq!((d.score, d.action), (-5, Action::Pass));
        assert_eq!(d.ttl, cfg().pass_ttl);
        let d = decide(&[], &cfg());
        assert_eq!(
            (d.score, d.action, d.ttl),
            (0, Action::Pass, cfg().pass_ttl)
        );
    }

    #[test]
    fn ttl_is_the_shortest_weighing_answer_clamped() {
        let c = cfg();
        // 20m and 1h: 20m wins; the allowlist-free 30s NXDOMAIN (weight 0) does not count.
        let nx = Evidence::new("dnsbl:wl.example", Finding::NotListed, 0)
            .ttl(Some(Duration::from_secs(30)));
        let d = decide(&[ev(10, 1200), ev(5, 3600), nx], &c);
        assert_eq!(d.ttl, Duration::from_secs(1200));
        // Below ttl_min (10m) and above ttl_max (6h).
        assert_eq!(decide(&[ev(10, 60)], &c).ttl, c.ttl_min);
        assert_eq!(decide(&[ev(10, 7 * 86_400)], &c).ttl, c.ttl_max);
        assert_eq!(clamp_ttl(None, &c), c.ttl_min);
    }

    #[test]
    fn an_allowlisted_pass_lives_as_long_as_its_allowlisting_answers() {
        let off = cfg();
        let wl = |w: i32, ttl: u64| {
            Evidence::new("dnsbl:wl.example", Finding::Listed, w)
                .ttl(Some(Duration::from_secs(ttl)))
        };
        // Off (the default): a pass is a pass.
        assert_eq!(decide(&[wl(-10, 7200)], &off).ttl, off.pass_ttl);
        let on = PolicyConfig {
            allowlist_threshold: -5,
            ..cfg()
        };
        assert!(!allowlisted(-4, &on) && allowlisted(-5, &on) && !allowlisted(-5, &off));
        // -10 <= -5: the DNSWL answer's 2h, not pass_ttl's 1h; the blocklist's TTL is not
        // an allowlisting answer.
        let d = decide(&[wl(-10, 7200), ev(3, 60)], &on);
        assert_eq!((d.action, d.score), (Action::Pass, -7));
        assert_eq!(d.ttl, Duration::from_secs(7200));
        // Clamped to ttl_min..ttl_max like any listing's TTL.
        assert_eq!(decide(&[wl(-10, 30 * 86_400)], &on).ttl, on.ttl_max);
        // Above the threshold: an ordinary pass.
        assert_eq!(decide(&[wl(-10, 7200), ev(6, 60)], &on).ttl, on.pass_ttl);
    }

    #[test]
    fn a_failure_alone_is_a_short_pass() {
        let d = decide(&[tempfail(0, 5)], &cfg());
        assert_eq!(
            (d.action, d.reason, d.score, d.ttl),
            (Action::Pass, Reason::Tempfail, 0, cfg().tempfail_ttl)
        );
    }

    #[test]
    fn a_failure_never_makes_a_verdict_harsher() {
        let c = cfg();
        // rDNS failed, blocklist says drop: a PTR could only have added, so drop stands.
        let d = decide(&[ev(10, 900), tempfail(0, 5)], &c);
        assert_eq!(
            (d.action, d.reason, d.ttl),
            (Action::Drop, Reason::Reputation, c.tempfail_ttl)
        );
        // The allowlist failed: it might have cancelled the listing, so pass, for now.
        let wl_failed = Evidence::new("dnsbl:wl.example", Finding::DnsTempfail, 0).unknown(-15, 0);
        let d = decide(&[ev(10, 900), wl_failed], &c);
        assert_eq!(
            (d.action, d.reason, d.score),
            (Action::Pass, Reason::Tempfail, 10)
        );
        // PBL-weight listing and a failed PTR lookup: limit whatever the PTR says.
        let d = decide(&[ev(5, 900), tempfail(0, 5)], &c);
        assert_eq!((d.action, d.reason), (Action::Limit, Reason::Tempfail));
    }
}
