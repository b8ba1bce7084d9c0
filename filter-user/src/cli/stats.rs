//! `mxscreen stats`.

use std::time::Duration;

use anyhow::{Result, bail};

use super::connect::Connect;
use crate::control::protocol::{Body, Request, StatsReply};

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

fn fetch(c: &Connect) -> Result<StatsReply> {
    match c.request(Request::Stats)? {
        Body::Stats(s) => Ok(s),
        _ => bail!("unexpected reply from the daemon"),
    }
}

fn print(s: &StatsReply, prev: Option<&StatsReply>, secs: f64) {
    println!("datapath (SYN screening; counters since the maps were created):");
    for (name, v) in &s.datapath {
        let rate = prev
            .and_then(|p| p.datapath.iter().find(|(n, _)| n == name))
            .map(|(_, pv)| format!("  {:>10.1}/s", (v.saturating_sub(*pv)) as f64 / secs))
            .unwrap_or_default();
        println!("  {name:<20} {v:>14}{rate}");
    }
    println!("verdicts cached, by action:");
    for (name, v) in &s.verdicts_by_action {
        println!("  {name:<20} {v:>14}");
    }
    println!("verdicts cached, by source:");
    for (name, v) in &s.verdicts_by_reason {
        println!("  {name:<20} {v:>14}");
    }
    println!("reputation engine:");
    if let Some(obj) = s.engine.as_object() {
        for (k, v) in obj {
            if k == "zones" {
                continue;
            }
            println!("  {k:<20} {v:>14}");
        }
        if let Some(zones) = obj.get("zones").and_then(|z| z.as_object()) {
            for (zone, z) in zones {
                println!("  zone {zone}: {z}");
            }
        }
    }
}

pub fn main(a: Args) -> Result<()> {
    let s = fetch(&a.connect)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print(&s, None, 1.0);
    if a.watch {
        let mut prev = s;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            let s = fetch(&a.connect)?;
            println!();
            print(&s, Some(&prev), 2.0);
            prev = s;
        }
    }
    Ok(())
}
