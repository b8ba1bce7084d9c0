//! `mxscreen block` / `mxscreen unblock`.

use std::time::Duration;

use anyhow::Result;
use ipnet::IpNet;

use super::{connect::Connect, out::outln};
use crate::{control::protocol::ttl_secs, net::parse_net};

/// Drop SYNs to the screened ports from an address or prefix, now and across restarts.
///
/// Takes effect in the datapath before the command returns. Loopback, the host's own
/// addresses and lists.allow can never be blocked; prefixes wider than
/// control.widest_block_v4/v6 need --force.
///
/// Examples:
///   mxscreen block 203.0.113.7 --for 24h --reason "dictionary attack"
///   mxscreen block 198.51.100.0/24
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct BlockArgs {
    #[command(flatten)]
    entry: EntryArgs,
    /// Accept a prefix wider than the configured limit.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    connect: Connect,
}

/// Remove a manual block.
///
/// Example:
///   mxscreen unblock 203.0.113.7
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct UnblockArgs {
    /// Address or CIDR prefix, exactly as blocked.
    #[arg(value_parser = parse_net)]
    net: IpNet,
    #[command(flatten)]
    connect: Connect,
}

/// What `block` and `allow` take: the prefix, how long, and why.
#[derive(clap::Args)]
pub struct EntryArgs {
    /// Address or CIDR prefix.
    #[arg(value_parser = parse_net)]
    pub net: IpNet,
    /// How long (e.g. 90s, 10m, 24h, 7d; at most 36500d); default: until removed.
    #[arg(long = "for", value_parser = entry_ttl)]
    pub duration: Option<Duration>,
    /// Free text kept with the entry and shown by `list`.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `--for`: a duration a manual entry can be made for.
fn entry_ttl(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s).map_err(|e| {
        if e.too_long() {
            crate::state::entry_too_long(s)
        } else {
            e.to_string()
        }
    })?;
    crate::state::check_entry_ttl(d)?;
    Ok(d)
}

pub fn block(a: BlockArgs) -> Result<()> {
    let e = a.entry;
    let (ttl, force) = (ttl_secs(e.duration), a.force);
    let message = a.connect.call(|c| c.block(e.net, ttl, e.reason, force))?;
    outln!("{message}")?;
    Ok(())
}

pub fn unblock(a: UnblockArgs) -> Result<()> {
    outln!("{}", a.connect.call(|c| c.unblock(a.net))?)?;
    Ok(())
}
