//! What the nftables backend's reads and writes cost as its table grows: the backend on a
//! veth in a namespace of its own, holding 2,000 verdicts and an own /32 entry, then a drop
//! feed spread over 20 prefix lengths (6,000 prefixes, the shape of real feeds) besides, then
//! a million-/32 IPv4 drop feed besides (its load time and kernel memory). Each state: a verdict write (a new source), 100
//! verdicts held back and written in one transaction (what the daemon does with a burst),
//! the verdicts' hits (`list --verdicts`, the balancer watch, the verdicts saved at exit), one
//! entry's hits (`check`) and a table's entries with their hits (`list --blocked`); the
//! median and spread of five of each. Then a start after a crash (a run killed with 2,000,
//! 65,536 or 262,144 verdicts, the default map's size), once each. `cargo xtask bench
//! nft-table` (`--quick`: a 100,000-/32 feed, no 262,144).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use filter_common::{Action, DatapathConfig, ListEntry, PeerVerdict, Reason, Table};
use mxscreen::{
    datapath::{ListKind, MapSizes, PrefixSet},
    nftables::{Nftables, Options, events::NfLog},
};
use mxscreen_tests::{
    bench::{settled_kib, spread_feed_v4},
    netns::{SERVER_IFACE, Wire},
};

const ROUNDS: usize = 5;

/// Median [min … max] of `f` run [`ROUNDS`] times.
fn timed(mut f: impl FnMut(usize)) -> String {
    let mut t: Vec<Duration> = (0..ROUNDS)
        .map(|i| {
            let at = Instant::now();
            f(i);
            at.elapsed()
        })
        .collect();
    t.sort();
    format!(
        "{:.1?} [{:.1?} … {:.1?}]",
        t[ROUNDS / 2],
        t[0],
        t[ROUNDS - 1]
    )
}

/// The backend opened in the server's namespace with the default sizes (what a start does
/// before its config: timed alone after a crash).
fn open(wire: &Wire) -> (Nftables, NfLog) {
    wire.server
        .enter(|| {
            Nftables::open(&Options {
                sizes: MapSizes::default(),
                ..Options::default()
            })
        })
        .expect("open the nftables backend")
}

/// Screens port 25 (no interface attached yet).
fn screen_port_25(nft: &mut Nftables) {
    let mut cfg = DatapathConfig::empty();
    cfg.set_ports(&[25]);
    nft.set_config(&cfg).unwrap();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let feed_len: u32 = if quick { 100_000 } else { 1_000_000 };
    let wire = Wire::new("bt");
    let (mut nft, log) = open(&wire);
    screen_port_25(&mut nft);
    nft.attach(&[SERVER_IFACE.to_owned()]).unwrap();
    let verdict = |i: u32| {
        let action = if i.is_multiple_of(3) {
            Action::Limit
        } else {
            Action::Drop
        };
        (
            IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)),
            PeerVerdict::new(action, Reason::Reputation, 0),
        )
    };
    for i in 0..2_000 {
        let (ip, v) = verdict(i);
        nft.verdict_set(ip, v).unwrap();
    }
    let own: IpAddr = "192.0.2.1".parse().unwrap();
    nft.list_insert(
        ListKind::Deny,
        own.into(),
        ListEntry::new(Reason::Manual, 0),
    )
    .unwrap();
    let mut next = 2_000;
    let mut rows = Vec::new();
    let mut feed = String::new();
    for state in [
        "2,000 verdicts, an own entry",
        "and a feed spread over 20 prefix lengths (6,000 prefixes, real feeds' shape)",
        "and a feed of /32s",
    ] {
        if state.contains("spread") {
            let v4 = spread_feed_v4()
                .into_iter()
                .map(|(net, len)| PrefixSet::pack_v4(net, len))
                .collect();
            nft.feed_load(
                "spread",
                Table::Deny,
                PrefixSet::from_unsorted(v4, Vec::new()),
            )
            .unwrap();
        }
        if state.contains("/32s") {
            let v4 = (0..feed_len)
                .map(|i| (u64::from(0x0a00_0000 + i) << 8) | 32)
                .collect();
            let (m0, at) = (settled_kib(), Instant::now());
            nft.feed_load("big", Table::Deny, PrefixSet::from_unsorted(v4, Vec::new()))
                .unwrap();
            let took = at.elapsed();
            let mib = (settled_kib() as f64 - m0 as f64) / 1024.0;
            feed = format!(
                "The feed of {feed_len} /32s loaded in {took:.1?}, taking {mib:.0} MiB of kernel memory (Slab + Percpu + VmallocUsed of /proc/meminfo, each read once it stopped moving)."
            );
        }
        let write = timed(|_| {
            let (ip, v) = verdict(next);
            next += 1;
            nft.verdict_set(ip, v).unwrap();
        });
        let burst = timed(|_| {
            for _ in 0..100 {
                let (ip, v) = verdict(next);
                next += 1;
                nft.verdict_set_later(ip, v).unwrap();
            }
            nft.flush_later().unwrap();
        });
        let hits = timed(|_| {
            nft.verdict_hit_counts().unwrap();
        });
        let check = timed(|_| {
            nft.list_exact(ListKind::Deny, own.into()).unwrap();
        });
        let list = timed(|_| {
            nft.table_entries(Table::Deny).unwrap();
        });
        let state = if state.contains("/32s") {
            format!("{state} ({feed_len})")
        } else {
            state.to_owned()
        };
        rows.push(format!(
            "| {state} | {write} | {burst} | {hits} | {check} | {list} |"
        ));
    }
    // The table and report group go before the starts after a crash take them.
    drop(nft);
    drop(log);
    println!(
        "| the table holds | a verdict written | 100 verdicts in one transaction (the daemon's bursts) | every verdict's hits | one entry's hits (`check`) | the deny table with hits (`list`) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!("\n{feed}");
    let counts: &[u32] = if quick {
        &[2_000, 65_536]
    } else {
        &[2_000, 65_536, 262_144]
    };
    println!(
        "\n| verdicts the killed run's table held | a start after the crash (`Nftables::open`: read back, the table replaced, written again) |\n|---:|---:|"
    );
    for &n in counts {
        println!("| {n} | {:.2?} |", start_after_a_crash(&wire, n));
    }
}

/// How long a start takes after a run holding `n` verdicts died without removing its table
/// (as kill -9 leaves it): it reads the verdicts back from the table, replaces the table and
/// writes them again.
fn start_after_a_crash(wire: &Wire, n: u32) -> Duration {
    let (mut nft, log) = open(wire);
    screen_port_25(&mut nft);
    for i in 0..n {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0c00_0000 + i));
        nft.verdict_set_later(ip, PeerVerdict::new(Action::Drop, Reason::Reputation, 0))
            .unwrap();
        if i % 4096 == 4095 {
            nft.flush_later().unwrap();
        }
    }
    nft.flush_later().unwrap();
    // Killed: the table stays, the report group is free again.
    std::mem::forget(nft);
    drop(log);
    let at = Instant::now();
    let (again, _log) = open(wire);
    let took = at.elapsed();
    assert_eq!(
        again.verdicts().len(),
        n as usize,
        "every verdict read back"
    );
    took
}
