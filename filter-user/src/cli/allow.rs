//! `mxscreen allow` / `mxscreen unallow`.

use std::time::Duration;

use anyhow::Result;
use ipnet::IpNet;

use super::{block::done, connect::Connect, parse_duration, parse_net};
use crate::control::protocol::{Request, ttl_secs};

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
    /// Address or CIDR prefix.
    #[arg(value_parser = parse_net)]
    net: IpNet,
    /// How long (e.g. 90s, 10m, 24h, 7d); default: until unallowed.
    #[arg(long = "for", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Free text kept with the entry and shown by `list`.
    #[arg(long)]
    reason: Option<String>,
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
    done(a.connect.request(Request::Allow { net: a.net, ttl_secs: ttl_secs(a.duration), reason: a.reason })?)
}

pub fn unallow(a: UnallowArgs) -> Result<()> {
    done(a.connect.request(Request::Unallow { net: a.net })?)
}
