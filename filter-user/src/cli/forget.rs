//! `mxscreen forget` (alias `recheck`).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ipnet::IpNet;

use super::{connect::Connect, out::outln};
use crate::{control::protocol::LookupReply, net::parse_net};

/// How long `--now` waits for the new verdict: a slow DNSBL times out within seconds.
const NOW_WAIT: Duration = Duration::from_secs(30);

/// Forget the verdicts of an address or prefix, so its next SYN is evaluated afresh.
///
/// Removes the reputation and tempfail verdicts of the address (or of every address inside
/// the prefix) and the IPv6 network verdicts over them — on every host of the fleet and in
/// Redis too. For a sender delisted since its verdict, which would otherwise hold until it
/// expires (policy.ttl_max), across restarts. Manual entries (block, allow) and the config's
/// lists are never touched: use unblock or unallow for those.
///
/// Examples:
///   mxscreen forget 192.0.2.25
///   mxscreen forget 198.51.100.0/24
///   mxscreen recheck 192.0.2.25 --now
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// Address or CIDR prefix.
    #[arg(value_parser = parse_net)]
    net: IpNet,
    /// Evaluate the address at once and print its new verdict (one address only).
    #[arg(long)]
    now: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn main(a: Args) -> Result<()> {
    let (net, now) = (a.net, a.now);
    outln!("{}", a.connect.call(|c| c.forget(net, now))?)?;
    if !now {
        return Ok(());
    }
    let ip = net.addr();
    let deadline = Instant::now() + NOW_WAIT;
    loop {
        let held: LookupReply = a.connect.call(|c| c.lookup(ip))?;
        if let Some(v) = &held.verdict {
            let observe = if held.observe {
                " (observe mode: not enforced)"
            } else {
                ""
            };
            outln!("now: {}{observe}", super::list::row(v))?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "no verdict for {ip} within {}s: see `mxscreen status` (resolver, budget)",
                NOW_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
