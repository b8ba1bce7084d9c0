//! `mxscreen check ADDR`: one evaluation, shown as readable text or one JSON object.
use std::{fmt::Write, net::IpAddr};

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
}

/// Runs the engine once for `ip`, without the daemon, the budget or root.
pub async fn check(cfg: ReputationConfig, ip: IpAddr) -> Result<CheckReport, EngineError> {
    let engine = Engine::new(cfg)?;
    let verdict = engine.evaluate(ip).await;
    let mut warnings = engine.warnings();
    warnings.extend(verdict.warnings.iter().cloned());
    Ok(CheckReport { verdict, warnings })
}

impl CheckReport {
    /// One JSON object: `ip`, `action`, `reason`, `score`, `ttl_secs`, `evidence` (objects
    /// with `source`, `result`, `weight`, and when known `query`, `detail`, `ttl_secs`),
    /// `warnings` and `elapsed_ms`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.verdict).expect("a verdict serializes");
        v["warnings"] = serde_json::to_value(&self.warnings).expect("strings serialize");
        v
    }

    /// The report as aligned text, one lookup per line, ending in a newline.
    pub fn to_text(&self) -> String {
        let v = &self.verdict;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {}, score {}, expires in {} (reason: {}; {} ms)",
            v.ip,
            v.action.name(),
            v.score,
            duration::format(v.ttl),
            v.reason.name(),
            v.elapsed.as_millis()
        );
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
                "  {:src_w$}  {:res_w$}  {:>+6}  {lookup}",
                e.source,
                e.result.name(),
                e.weight
            );
        }
        let _ = writeln!(
            out,
            "  {:src_w$}  {:res_w$}  {:>+6}  total",
            "", "", v.score
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}
