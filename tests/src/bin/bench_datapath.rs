//! `cargo xtask bench datapath`: ns per packet of the datapath under BPF_PROG_TEST_RUN, for
//! each path a packet can take, against the empty XDP_PASS program (the floor) and the bare
//! one-hash-lookup program, plus the kernel's memlock figure for every map at the default
//! sizes. Not a test: it prints numbers. Results go into BENCHMARKS.md.
//!
//! Every case is measured right after the floor on the same frame, round after round, and
//! reported as the median (and spread) of its cost over that floor, so a machine busy with
//! other work shifts both alike.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    process::Command,
    time::Instant,
};

use filter_common::{Action, FLAG_HOLD, ListEntry, PeerVerdict, Reason, Table, map_names};
use mxscreen::datapath::{ListKind, MapSizes, PrefixSet};
use mxscreen_tests::{
    kernel::{Entry, TestDatapath},
    packets::{Frame, L4, Tcp},
    reference::{Program, Reference},
};

/// Runs per measurement, and rounds; medians over rounds are reported.
const REPEAT: u32 = 100_000;
const ROUNDS: usize = 15;
/// New sources per round for the slow-path row (each run once).
const NEW_SOURCES: u32 = 500;

/// Runs a frame `REPEAT` times; returns ns per run.
type Runner<'a> = Box<dyn Fn(&[u8]) -> f64 + 'a>;

/// One row.
struct Case<'a> {
    name: String,
    frame: Vec<u8>,
    run: Runner<'a>,
}

fn dp_run(dp: &TestDatapath) -> Runner<'_> {
    Box::new(move |frame| ns(dp.try_run(Entry::Xdp, frame, REPEAT).expect("test_run").1))
}

fn main() {
    let reference = Reference::load(1 << 10);
    let floor = |frame: &[u8]| ns(reference.test_run(Program::PassAll, frame, REPEAT).1);

    // The datapath with nothing listed and a few verdicts...
    let t = Instant::now();
    let mut small = TestDatapath::with_sizes(MapSizes::default());
    bench_config(&mut small);
    // ...and one with a million-prefix feed loaded and the per-source map at its default
    // size (256k per family) full.
    let mut full = TestDatapath::with_sizes(MapSizes::default());
    bench_config(&mut full);
    let feed = million_prefix_feed();
    let prefixes = feed.len();
    full.maps
        .feed_load("bench", Table::Deny, feed.clone())
        .unwrap();
    // The same feed with room in the per-source map: new sources cost no eviction.
    let mut roomy = TestDatapath::with_sizes(MapSizes::default());
    bench_config(&mut roomy);
    roomy.maps.feed_load("bench", Table::Deny, feed).unwrap();
    let per_source = MapSizes::default().peers;
    let pass = PeerVerdict::new(Action::Pass, Reason::Reputation, 0);
    for i in 0..per_source {
        full.maps.verdict_set(v4(0x0a00_0000 + i), pass).unwrap();
    }
    eprintln!("set up in {:.1?}", t.elapsed());

    let (drop_src, pass_src, limit_src, deny_src, allow_src, unknown_src) = (
        v4(0x0b00_0001),
        v4(0x0b00_0002),
        v4(0x0b00_0003),
        v4(0x0b00_0004),
        v4(0x0b00_0005),
        v4(0x0b00_0006),
    );
    for dp in [&mut small, &mut full] {
        let v = |a| PeerVerdict::new(a, Reason::Reputation, 0);
        dp.maps.verdict_set(drop_src, v(Action::Drop)).unwrap();
        dp.maps.verdict_set(pass_src, v(Action::Pass)).unwrap();
        dp.maps.verdict_set(limit_src, v(Action::Limit)).unwrap();
        let manual = ListEntry::new(Reason::Manual, 0);
        dp.maps
            .list_insert(ListKind::Deny, deny_src.into(), manual)
            .unwrap();
        dp.maps
            .list_insert(ListKind::Allow, allow_src.into(), manual)
            .unwrap();
    }
    // The bare program's table: the size of mxscreen's per-source map, as full.
    let mut bare = Reference::load(per_source);
    for i in 0..per_source - 1 {
        bare.list(v4(0x0a00_0000 + i));
    }
    bare.list(drop_src);

    let syn = |ip| Frame::syn(ip).build();
    let bare_run = |p: Program| -> Runner {
        let bare = &bare;
        Box::new(move |frame| ns(bare.test_run(p, frame, REPEAT).1))
    };
    let icmp = Frame {
        l4: L4::Icmp,
        ..Frame::syn(unknown_src)
    }
    .build();
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name: &str, frame: Vec<u8>, run| {
        cases.push(Case {
            name: name.into(),
            frame,
            run,
        })
    };
    add(
        "bare one-hash-lookup program, table full, hit: drop",
        syn(drop_src),
        bare_run(Program::HashDrop),
    );
    add(
        "bare one-hash-lookup program, table full, hit: pass",
        syn(drop_src),
        bare_run(Program::HashPass),
    );
    add(
        "bare one-hash-lookup program, table full, miss: pass",
        syn(pass_src),
        bare_run(Program::HashDrop),
    );
    add("non-TCP (ICMP echo)", icmp, dp_run(&small));
    add(
        "TCP SYN to port 22",
        Frame::tcp(unknown_src, 22, Tcp::Syn).build(),
        dp_run(&small),
    );
    add(
        "TCP ACK to port 25 (established)",
        Frame::tcp(unknown_src, 25, Tcp::Ack).build(),
        dp_run(&small),
    );
    for (label, dp) in [
        ("", &small),
        (", 1M-prefix feed, per-source map full", &full),
    ] {
        let rows = [
            ("cached verdict drop", drop_src),
            ("cached verdict pass", pass_src),
            ("cached verdict limit (over its rate)", limit_src),
            ("manual deny entry", deny_src),
            ("allow entry", allow_src),
            ("unknown peer (already reported)", unknown_src),
        ];
        for (name, src) in rows {
            add(&format!("{name}{label}"), syn(src), dp_run(dp));
        }
    }
    add(
        "feed entry, 1M-prefix feed, per-source map full",
        syn(v4(0x0c00_0507)),
        dp_run(&full),
    );

    let mut over: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut abs: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut floors = Vec::new();
    let mut slow = Vec::new();
    let mut slow_roomy = Vec::new();
    for round in 0..ROUNDS {
        for (i, case) in cases.iter().enumerate() {
            let f = floor(&case.frame);
            let v = (case.run)(&case.frame);
            floors.push(f);
            abs[i].push(v);
            over[i].push(v - f);
        }
        slow.push(new_sources(&full, &reference, round as u32));
        slow_roomy.push(new_sources(&roomy, &reference, round as u32));
    }

    println!(
        "Datapath cost per packet, BPF_PROG_TEST_RUN (XDP entry point), {ROUNDS} rounds of {REPEAT} runs; each case right after the floor on the same frame"
    );
    println!(
        "Feed: {prefixes} prefixes in 18 lengths; per-source map: {per_source} entries per family (the default size)"
    );
    println!("| case | ns/packet | over the empty program: median [min … max] |");
    println!("|---|---:|---:|");
    println!(
        "| empty XDP_PASS program (floor) | {:.1} | — |",
        median(&mut floors)
    );
    for (i, case) in cases.iter().enumerate() {
        println!(
            "| {} | {:.1} | {} |",
            case.name,
            median(&mut abs[i]),
            spread(&mut over[i])
        );
    }
    println!(
        "| first SYN of a new source in the feed (list walk, new entry; {NEW_SOURCES} sources a round, each run once), per-source map with room | — | {} |",
        spread(&mut slow_roomy)
    );
    println!(
        "| the same, per-source map full (each new entry evicts one) | — | {} |",
        spread(&mut slow)
    );
    println!();
    memlock_at_default_sizes();
}

/// Port 25, long windows, no explanations: every row's decision stays cached.
fn bench_config(dp: &mut TestDatapath) {
    dp.configure(|c| {
        c.dedup_window_ns = 3_600_000_000_000;
        c.explain_window_ns = 0;
        c.flags &= !FLAG_HOLD;
        c.set_limit(1, 1);
    });
}

/// A million distinct prefixes as a large drop feed has them: mostly single addresses and
/// /24s, plus every length from /16 to /31 (the slow path probes each length in use).
fn million_prefix_feed() -> PrefixSet {
    let mut v4 = Vec::with_capacity(1_000_000);
    for i in 0..600_000u32 {
        v4.push(PrefixSet::pack_v4(0x0d00_0000 + i * 3, 32));
    }
    for i in 0..384_000u32 {
        v4.push(PrefixSet::pack_v4(0x0c00_0000 + (i << 8), 24));
    }
    for len in 16..32u8 {
        for i in 0..1_000u32 {
            let net = (0x4000_0000u32 + (u32::from(len) << 24) + i * (1 << (32 - len)))
                & (u32::MAX << (32 - len));
            v4.push(PrefixSet::pack_v4(net, len));
        }
    }
    PrefixSet::from_unsorted(v4, Vec::new())
}

/// Cost over the floor of a new source's first SYN (list walk of the feed and a new entry),
/// each frame run once: the median over `NEW_SOURCES` sources of (run − floor run).
fn new_sources(dp: &TestDatapath, reference: &Reference, round: u32) -> f64 {
    let mut d: Vec<f64> = (0..NEW_SOURCES)
        .map(|i| {
            let src = v4(0x0c80_0000 + ((round * NEW_SOURCES + i) << 8) + 9);
            let frame = Frame::syn(src).build();
            let f = ns(reference.test_run(Program::PassAll, &frame, 1).1);
            ns(dp.try_run(Entry::Xdp, &frame, 1).expect("test_run").1) - f
        })
        .collect();
    median(&mut d)
}

fn v4(n: u32) -> IpAddr {
    // Map keys only: no packet leaves this process.
    IpAddr::V4(Ipv4Addr::from(n))
}

fn ns(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &mut [f64]) -> String {
    let m = median(v);
    format!("+{m:.1} [{:+.0} … {:+.0}]", v[0], v[v.len() - 1])
}

/// Loads one instance at the default sizes and asks bpftool for each map's memlock.
fn memlock_at_default_sizes() {
    let before = map_ids();
    let dp = TestDatapath::with_sizes(MapSizes::default());
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool (cargo xtask setup)");
    assert!(out.status.success(), "bpftool map show failed");
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    println!(
        "Map memory at default sizes (bpftool bytes_memlock; list entries allocate on use, so the lists show their bucket arrays)"
    );
    println!("| map | max entries | memlock |");
    println!("|---|---:|---:|");
    let mut total = 0u64;
    for name in map_names::ALL {
        let m = maps
            .iter()
            .find(|m| m["name"] == name && !before.contains(&m["id"].as_u64().unwrap_or(0)))
            .unwrap_or_else(|| panic!("map {name} not listed by bpftool"));
        let bytes = m["bytes_memlock"].as_u64().unwrap_or(0);
        total += bytes;
        println!("| {name} | {} | {} |", m["max_entries"], human(bytes));
    }
    println!("| total | | {} |", human(total));
    drop(dp);
}

fn map_ids() -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool");
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    maps.iter().filter_map(|m| m["id"].as_u64()).collect()
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
