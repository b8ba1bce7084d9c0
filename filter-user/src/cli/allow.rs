//! `mxscreen allow` / `mxscreen unallow`.

use anyhow::Result;
use ipnet::IpNet;

use super::{block::EntryArgs, connect::Connect, out::outln};
use crate::{control::protocol::ttl_secs, net::parse_net};

/// Always pass an address or prefix, whatever the lists, DNSBLs or verdicts say.
///
/// The way to let a wrongly listed sender through. Takes effect before the command returns.
///
/// Examples:
///   mxscreen allow 192.0.2.25 --reason "partner relay, listed by mistake"
///   mxscreen allow 2001:db8:25::/48 --for 7d
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct AllowArgs {
    #[command(flatten)]
    entry: EntryArgs,
    #[command(flatten)]
    connect: Connect,
}

/// Remove a manual allow.
///
/// Example:
///   mxscreen unallow 192.0.2.25
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct UnallowArgs {
    /// Address or CIDR prefix, exactly as allowed.
    #[arg(value_parser = parse_net)]
    net: IpNet,
    #[command(flatten)]
    connect: Connect,
}

pub fn allow(a: AllowArgs) -> Result<()> {
    let e = a.entry;
    let ttl = ttl_secs(e.duration);
    outln!("{}", a.connect.call(|c| c.allow(e.net, ttl, e.reason))?)?;
    Ok(())
}

pub fn unallow(a: UnallowArgs) -> Result<()> {
    outln!("{}", a.connect.call(|c| c.unallow(a.net))?)?;
    Ok(())
}
