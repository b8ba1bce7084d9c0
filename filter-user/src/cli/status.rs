//! `mxscreen status`.

use anyhow::{Result, bail};

use super::connect::Connect;
use crate::{
    control::protocol::{Body, Request},
    reputation::duration,
};

/// What the daemon is doing: interfaces and attach modes, program ids, map fill levels,
/// uptime, resolver health, the config file in use and any warnings.
///
/// Examples:
///   mxscreen status
///   mxscreen status --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// One JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn main(a: Args) -> Result<()> {
    let Body::Status(s) = a.connect.request(Request::Status)? else {
        bail!("unexpected reply from the daemon");
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!(
        "mxscreen {} running for {}",
        s.version,
        duration::format(std::time::Duration::from_secs(s.uptime_secs.max(1)))
    );
    println!(
        "config:        {}",
        s.config_file.as_deref().unwrap_or("built-in defaults")
    );
    println!(
        "mode:          {}{}",
        if s.observe {
            "observe (never drops)"
        } else {
            "enforcing"
        },
        format_args!(", first contact: {}", s.first_contact)
    );
    println!("ports:         {:?}", s.ports);
    for i in &s.interfaces {
        println!("interface:     {} ({})", i.name, i.mode);
    }
    for (name, id) in &s.programs {
        println!("program:       {name} id {id}");
    }
    for m in &s.maps {
        println!(
            "map:           {:<18} {:>9} / {}",
            m.name, m.entries, m.max_entries
        );
    }
    println!("resolver:      {}", s.resolver);
    for w in &s.warnings {
        println!("warning:       {w}");
    }
    Ok(())
}
