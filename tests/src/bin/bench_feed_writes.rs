//! `cargo xtask bench feed-writes [--quick]`: what a million-entry feed costs the eBPF
//! datapath's maps to write, without a daemon or a file: loaded into empty lists, replaced by
//! a disjoint million (a million additions, then a million removals), and removed. The main
//! loop waits for each (new peers and verdicts queue meanwhile), so these are the pauses a
//! feed's reload can cause. Five rounds (`--quick`: one), one datapath; medians and spread.
//! Prints numbers; results go into BENCHMARKS.md.

use std::time::Instant;

use filter_common::Table;
use mxscreen::datapath::{MapSizes, PrefixSet};
use mxscreen_tests::{bench::Samples, kernel::TestDatapath};

const ENTRIES: u32 = 1_000_000;
const ROUNDS: usize = 5;

/// A million consecutive IPv4 /32s from `first`.
fn hosts(first: u32) -> PrefixSet {
    PrefixSet::from_unsorted(
        (0..ENTRIES)
            .map(|i| PrefixSet::pack_v4(first + i, 32))
            .collect(),
        Vec::new(),
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 1 } else { ROUNDS };
    // Room for both millions at once: a replacement adds before it removes.
    let sizes = MapSizes {
        deny: 2 * ENTRIES + 100_000,
        ..MapSizes::default()
    };
    let mut dp = TestDatapath::with_sizes(sizes);
    let (one, other) = (hosts(0x0a00_0000), hosts(0x0b00_0000));
    let (mut load, mut replace, mut drop) =
        (Samples::default(), Samples::default(), Samples::default());
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        let t = Instant::now();
        dp.maps.feed_load("f", Table::Deny, one.clone()).unwrap();
        load.push(ms(t));
        let t = Instant::now();
        dp.maps.feed_load("f", Table::Deny, other.clone()).unwrap();
        replace.push(ms(t));
        let t = Instant::now();
        dp.maps.feed_drop("f").unwrap();
        drop.push(ms(t));
        assert_eq!(dp.maps.table_len(Table::Deny), 0);
    }
    println!(
        "A million-entry feed (IPv4 /32s) through the eBPF datapath's maps, {rounds} round(s) (`cargo xtask bench feed-writes`)\n"
    );
    println!("| write | ms, median [min … max] |\n|---|---:|");
    println!("| load into empty lists | {} |", load.show(false));
    println!(
        "| replace by a disjoint million | {} |",
        replace.show(false)
    );
    println!("| remove | {} |", drop.show(false));
}
