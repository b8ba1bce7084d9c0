//! `mxscreen list`.

use std::time::Duration;

use anyhow::Result;

use super::{connect::Connect, out::outln};
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
    /// One JSON object per line (NDJSON) instead of a table.
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

/// One line of the table. With `[fleet]` the reason ends with the host the entry (or
/// verdict) was made on: `spam run (from mx2)`.
pub fn row(e: &ListedEntry) -> String {
    let reason = match (&e.reason, &e.feed) {
        (Some(r), Some(f)) => Some(format!("{r} (also feed {f})")),
        (Some(r), None) => Some(r.clone()),
        (None, Some(f)) => Some(format!("feed {f}")),
        (None, None) => None,
    };
    let origin = e.origin.as_deref().map(|h| format!("(from {h})"));
    let last: Vec<&str> = [reason.as_deref(), origin.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "{:<8} {:<40} {:<6} {:<11} {:<14} {:>8}  {}",
        e.list.name(),
        e.net.to_string(),
        e.action.name(),
        e.source.name(),
        expiry(e.expires),
        e.hits,
        last.join(" ")
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
    let json = a.json;
    // Rows are printed as the daemon streams them (blocked, allowed, then verdicts), so a
    // listing of a million verdicts never sits whole in memory here or in the daemon.
    a.connect.call(|c| async move {
        let mut stream = c.list(what).await?;
        if !json {
            outln!(
                "{:<8} {:<40} {:<6} {:<11} {:<14} {:>8}  REASON",
                "LIST",
                "PREFIX",
                "ACTION",
                "SOURCE",
                "EXPIRES",
                "HITS"
            )?;
        }
        while let Some(chunk) = stream.next_chunk().await? {
            for e in &chunk {
                if json {
                    outln!("{}", serde_json::to_string(e)?)?;
                } else {
                    outln!("{}", row(e))?;
                }
            }
        }
        anyhow::Ok(())
    })
}
