//! A process that owns an nftables backend the way the daemon does, for the kill -9 test
//! (`tests/nftables.rs`): run inside a network namespace, it creates the table on the
//! interface given, blocks the addresses given, prints `ready`, and beats the heartbeat
//! every second until it is killed.
//!
//! Usage: `nft_holder IFACE ADDRESS...`

use std::{io::Write as _, net::IpAddr, time::Duration};

use filter_common::{DatapathConfig, ListEntry, Reason};
use ipnet::IpNet;
use mxscreen::{
    datapath::{ListKind, MapSizes},
    nftables::{Nftables, Options},
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (iface, addrs) = args
        .split_first()
        .expect("usage: nft_holder IFACE ADDRESS...");
    let (mut nft, _log) = Nftables::open(&Options {
        sizes: MapSizes::small(),
        ..Options::default()
    })?;
    let mut cfg = DatapathConfig::empty();
    cfg.set_ports(&[25]);
    cfg.dedup_window_ns = 3_600_000_000_000;
    // What the daemon uses (daemon::reactor::STALE_AFTER).
    cfg.stale_after_ns = 5_000_000_000;
    nft.set_config(&cfg)?;
    nft.attach(std::slice::from_ref(iface))?;
    for a in addrs {
        let ip: IpAddr = a.parse()?;
        nft.list_insert(
            ListKind::Deny,
            IpNet::from(ip),
            ListEntry::new(Reason::Manual, 0),
        )?;
    }
    println!("ready");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        nft.set_config(&cfg)?;
    }
}
