//! `mxscreen check`.

use std::{net::IpAddr, path::PathBuf};

use anyhow::Result;

use super::connect::Connect;
use crate::{
    config::Config,
    control::{client::ClientError, protocol::LookupReply},
    reputation,
};

/// Explain what mxscreen thinks of an address: every lookup (PTR, FCrDNS, each DNSBL/DNSWL
/// zone), its answer or error, the weight it adds, the score, the verdict and its expiry —
/// and what the running daemon currently holds for it, if one runs.
///
/// Needs neither the daemon nor root.
///
/// Examples:
///   mxscreen check 192.0.2.25
///   mxscreen check 2001:db8::25 --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The address to check.
    ip: IpAddr,
    /// One JSON object: ip, action, score, ttl_secs, evidence[], warnings[], daemon.
    #[arg(long)]
    json: bool,
    /// Config file (default: /etc/mxscreen/mxscreen.toml if it exists, else built-in defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Control socket of a running daemon to ask as well.
    #[arg(long)]
    socket: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<()> {
    let (cfg, _) = Config::resolve(a.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(reputation::check(cfg.reputation(), a.ip))?;
    let connect = Connect {
        socket: a.socket.or_else(|| Some(cfg.control.socket.clone())),
        config: None,
    };
    let daemon: Result<LookupReply, String> =
        connect
            .call(|c| c.lookup(a.ip))
            .map_err(|e| match e.downcast_ref::<ClientError>() {
                Some(c) if c.is_not_running() => "not running".into(),
                _ => format!("{e:#}"),
            });
    if a.json {
        let mut v = report.to_json();
        v["daemon"] = match &daemon {
            Ok(l) => serde_json::to_value(l)?,
            Err(e) => serde_json::json!({ "error": e }),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", report.to_text());
    match daemon {
        Ok(l) => {
            let rows: Vec<String> = [
                l.allowed,
                l.blocked,
                l.limited,
                l.verdict,
                l.network_verdict,
            ]
            .iter()
            .flatten()
            .map(super::list::row)
            .collect();
            if rows.is_empty() {
                println!(
                    "daemon: holds nothing for {} (unknown: passes, resolved on its next SYN)",
                    a.ip
                );
            } else {
                println!("daemon holds:");
                for r in rows {
                    println!("  {r}");
                }
            }
        }
        Err(e) => println!("daemon: {e}"),
    }
    Ok(())
}
