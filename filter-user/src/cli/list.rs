//! `mxscreen list`.

use std::time::Duration;

use anyhow::Result;

use super::connect::Connect;
use crate::{
    control::protocol::{ListWhat, ListedEntry},
    duration,
    state::unix_now,
};

/// Show blocked and allowed prefixes and cached verdicts, with source, reason, expiry and hits.
///
/// Examples:
///   mxscreen list
///   mxscreen list --blocked
///   mxscreen list --verdicts --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Only the deny list.
    #[arg(long, group = "what")]
    blocked: bool,
    /// Only the allow list.
    #[arg(long, group = "what")]
    allowed: bool,
    /// Only cached verdicts.
    #[arg(long, group = "what")]
    verdicts: bool,
    /// One JSON array instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

/// `in 23h59m`, `never`, `expired`.
pub fn expiry(expires: Option<u64>) -> String {
    match expires {
        None => "never".into(),
        Some(t) if t <= unix_now() => "expired".into(),
        Some(t) => format!(
            "in {}",
            duration::format(Duration::from_secs(t - unix_now()))
        ),
    }
}

pub fn row(e: &ListedEntry) -> String {
    let reason = match (&e.reason, &e.feed) {
        (Some(r), Some(f)) => format!("{r} (also feed {f})"),
        (Some(r), None) => r.clone(),
        (None, Some(f)) => format!("feed {f}"),
        (None, None) => String::new(),
    };
    format!(
        "{:<8} {:<40} {:<6} {:<11} {:<14} {:>8}  {}",
        e.list.name(),
        e.net.to_string(),
        e.action.name(),
        e.source.name(),
        expiry(e.expires),
        e.hits,
        reason
    )
}

pub fn main(a: Args) -> Result<()> {
    let what = if a.blocked {
        ListWhat::Blocked
    } else if a.allowed {
        ListWhat::Allowed
    } else if a.verdicts {
        ListWhat::Verdicts
    } else {
        ListWhat::All
    };
    let mut entries = a.connect.call(|c| c.list(what))?;
    entries.sort_by_key(|e| (e.list, e.net));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<40} {:<6} {:<11} {:<14} {:>8}  REASON",
        "LIST", "PREFIX", "ACTION", "SOURCE", "EXPIRES", "HITS"
    );
    for e in &entries {
        println!("{}", row(e));
    }
    Ok(())
}
