//! `mxscreen check ADDR`: one evaluation, shown as readable text or one JSON object.
use std::{fmt::Write, net::IpAddr};

use filter_common::{Action, Reason};
use serde::Serialize;

use super::{
    config::ReputationConfig,
    engine::{Engine, EngineError},
    verdict::Verdict,
};
use crate::duration;

/// The result of [`check`]: the verdict and every warning about the setup or the answers.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Setup warnings (public resolvers) followed by the verdict's own (refusing lists).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Observe mode (the running daemon's, else the config's): the verdict would not be
    /// enforced, and the text says so.
    pub observe: bool,
}

/// Runs the engine once for `ip`, without the daemon, the budget or root. (Without the
/// resolver canary: every answer counts here; the daemon's canary results are in `status`.)
pub async fn check(cfg: ReputationConfig, ip: IpAddr) -> Result<CheckReport, EngineError> {
    let engine = Engine::new(cfg)?;
    let verdict = engine.evaluate(ip).await;
    let mut warnings = engine.warnings();
    warnings.extend(verdict.warnings.iter().cloned());
    Ok(CheckReport {
        verdict,
        warnings,
        observe: false,
    })
}

impl CheckReport {
    /// One JSON object: `ip`, `action`, `source` (and `reason`, its older name), `score`,
    /// `ttl_secs`, `static`, `observe`, `evidence` (objects with `source`, `result`,
    /// `weight`, and when known `query`, `detail`, `ttl_secs`), `warnings` and `elapsed_ms`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a report serializes");
        v["source"] = v["reason"].clone();
        v["static"] = self.is_static().into();
        v["warnings"] = serde_json::to_value(&self.warnings).expect("strings serialize");
        v
    }

    /// Decided by the static lists: it holds as long as the list entry, not for a TTL.
    pub fn is_static(&self) -> bool {
        self.verdict.reason == Reason::Config
    }

    /// `drop, score 15, expires in 6h (source: reputation; 12 ms)`, saying when observe
    /// mode leaves the action undone and when no TTL applies (a static list's answer).
    fn headline(&self) -> String {
        let v = &self.verdict;
        let observed = if self.observe && v.action != Action::Pass {
            " (observe mode: not enforced)"
        } else {
            ""
        };
        let expiry = if self.is_static() {
            "static, never expires".to_owned()
        } else {
            format!("expires in {}", duration::format(v.ttl))
        };
        format!(
            "{}: {}{observed}, score {}, {expiry} (source: {}; {} ms)",
            v.ip,
            v.action.name(),
            v.score,
            v.reason.name(),
            v.elapsed.as_millis()
        )
    }

    /// The report as aligned text, one lookup per line, ending in a newline.
    pub fn to_text(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        let src_w = v
            .evidence
            .iter()
            .map(|e| e.source.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let res_w = v
            .evidence
            .iter()
            .map(|e| e.result.name().len())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(
            out,
            "  {:src_w$}  {:res_w$}  {:>6}  LOOKUP -> ANSWER",
            "SOURCE", "RESULT", "WEIGHT"
        );
        for e in &v.evidence {
            let mut lookup = if e.query.is_empty() {
                String::new()
            } else {
                format!("{} -> ", e.query)
            };
            lookup.push_str(&e.detail);
            if let Some(ttl) = e.ttl {
                let _ = write!(lookup, " (ttl {})", duration::format(ttl));
            }
            let _ = writeln!(
                out,
                "  {:src_w$}  {:res_w$}  {:>+6}  {}",
                e.source,
                e.result.name(),
                e.weight,
                escaped(&lookup)
            );
        }
        let _ = writeln!(
            out,
            "  {:src_w$}  {:res_w$}  {:>+6}  total",
            "", "", v.score
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {}", escaped(w));
        }
        out
    }
}

/// Text from DNS (names, errors quoting them) on one line: control characters escaped
/// (`\n`, `\u{1b}`), so an answer can neither fake a line of the report nor drive the
/// terminal.
fn escaped(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(action: Action, reason: Reason, observe: bool) -> CheckReport {
        CheckReport {
            verdict: Verdict {
                ip: "192.0.2.5".parse().unwrap(),
                action,
                reason,
                score: 0,
                ttl: Duration::from_secs(6 * 3600),
                evidence: Vec::new(),
                warnings: Vec::new(),
                elapsed: Duration::from_millis(3),
            },
            warnings: Vec::new(),
            observe,
        }
    }

    /// DNS data reaches the text report on one line, its control characters escaped.
    #[test]
    fn dns_text_cannot_break_the_report() {
        let mut r = report(Action::Pass, Reason::Reputation, false);
        r.verdict.evidence.push(
            crate::reputation::Evidence::new("rdns", crate::reputation::Finding::Ptr, 0)
                .query("2.2.0.192.in-addr.arpa. PTR")
                .detail("evil\nwarning: fake\u{1b}[31m"),
        );
        r.warnings.push("zone\r\nline".into());
        let text = r.to_text();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("evil\\nwarning: fake\\u{1b}[31m"), "{text}");
        assert!(text.contains("zone\\r\\nline"), "{text}");
    }

    /// One word with the logs (`source=`); a static list's answer has no expiry; observe
    /// mode says the action is not enforced.
    #[test]
    fn the_headline_says_source_static_and_observe() {
        assert_eq!(
            report(Action::Pass, Reason::Config, false).headline(),
            "192.0.2.5: pass, score 0, static, never expires (source: config; 3 ms)"
        );
        assert_eq!(
            report(Action::Drop, Reason::Reputation, true).headline(),
            "192.0.2.5: drop (observe mode: not enforced), score 0, expires in 6h (source: reputation; 3 ms)"
        );
        assert_eq!(
            report(Action::Pass, Reason::Reputation, true).headline(),
            "192.0.2.5: pass, score 0, expires in 6h (source: reputation; 3 ms)"
        );
        let json = report(Action::Pass, Reason::Config, true).to_json();
        assert_eq!(json["source"], "config");
        assert_eq!(json["static"], true);
        assert_eq!(json["observe"], true);
    }
}
