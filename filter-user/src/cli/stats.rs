//! `mxscreen stats`.

use std::time::Duration;

use anyhow::Result;

use super::{connect::Connect, out::outln};
use crate::control::{client::Client, protocol::StatsReply};

/// Datapath counters (summed over CPUs), verdicts by action and reason, and the reputation
/// engine's lookups, budget drops and DNSBL error-code answers.
///
/// Examples:
///   mxscreen stats
///   mxscreen stats --watch
///   mxscreen stats --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// One JSON object.
    #[arg(long)]
    json: bool,
    /// Refresh every 2 seconds with per-second rates, until interrupted.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    #[command(flatten)]
    connect: Connect,
}

fn print(s: &StatsReply, prev: Option<&StatsReply>, secs: f64) -> Result<()> {
    outln!(
        "datapath (SYN screening; counters since the maps, or the nftables table, were created):"
    )?;
    for (name, v) in &s.datapath {
        let rate = prev
            .and_then(|p| p.datapath.iter().find(|(n, _)| n == name))
            .map(|(_, pv)| format!("  {:>10.1}/s", (v.saturating_sub(*pv)) as f64 / secs))
            .unwrap_or_default();
        outln!("  {name:<20} {v:>14}{rate}")?;
    }
    outln!("verdicts cached, by action:")?;
    for (action, v) in &s.verdicts_by_action {
        outln!("  {:<20} {v:>14}", action.name())?;
    }
    outln!("verdicts cached, by source:")?;
    for (source, v) in &s.verdicts_by_reason {
        outln!("  {:<20} {v:>14}", source.name())?;
    }
    outln!("reputation engine:")?;
    for (name, v) in s.engine.rows() {
        outln!("  {name:<20} {v:>14}")?;
    }
    for (zone, z) in &s.engine.zones {
        outln!("  zone {zone}:")?;
        for (name, v) in z.rows() {
            outln!("    {name:<18} {v:>14}")?;
        }
    }
    Ok(())
}

pub fn main(a: Args) -> Result<()> {
    let s = a.connect.call(Client::stats)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
        return Ok(());
    }
    print(&s, None, 1.0)?;
    if a.watch {
        let mut prev = s;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let s = a.connect.call(Client::stats)?;
            outln!()?;
            print(&s, Some(&prev), 2.0)?;
            prev = s;
        }
    }
    Ok(())
}
