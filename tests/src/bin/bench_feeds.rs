//! `cargo xtask bench feeds [--quick]`: a million-line feed (IPv4 addresses and /28s, as
//! large drop lists are) given to the release `mxscreen run` at start — the time from the
//! daemon's start until all million entries are enforced, the daemon's own read time (its
//! `feed loaded` log line), and the daemon's peak RSS while loading — each printed beside its
//! target (README, *Blocklist feeds*). Several rounds, a fresh daemon each; medians and
//! spread. `--quick`: one round, as `cargo xtask test` runs it. Prints numbers; results go
//! into BENCHMARKS.md.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use mxscreen_tests::{
    bed::{Bed, million_line_feed, smtp4},
    daemon::{MxDaemon, Spec, mxscreen_release_bin},
    dns::RblZone,
    netns::SERVER_IFACE,
};

const LISTED: &str = "192.0.2.30";
const CLEAN: &str = "192.0.2.32";
const ROUNDS: usize = 5;
/// The README's figures: a million-line feed enforced within 2 s of start, under 128 MiB.
const TARGET_ENFORCED: Duration = Duration::from_secs(2);
const TARGET_PEAK_MIB: f64 = 128.0;

/// One daemon's start with the feed.
struct Round {
    /// Until the control socket answered (what `systemctl start` waits for).
    ready: Duration,
    enforced: Duration,
    read_ms: f64,
    peak_mib: f64,
}

fn config(rbl: std::net::SocketAddr, feed: &Path) -> String {
    format!(
        "[resolver]\nnameservers = [\"{rbl}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n\
         [policy]\nexplain_every = \"0s\"\n\n[lists]\nallow = []\n\n\
         [[lists.feed]]\nname = \"big\"\npath = {:?}\nformat = \"cidr\"\naction = \"drop\"\n\n\
         [[dnsbl]]\nzone = \"bl.bench\"\nweight = 10\n",
        feed.display().to_string()
    )
}

fn round(b: &Bed, feed: &Path) -> Round {
    let spec = Spec {
        sections: config(b.rbl_addr, feed),
        binary: Some(mxscreen_release_bin()),
        ..Default::default()
    };
    let start = Instant::now();
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    let ready = start.elapsed();
    d.wait_for("a million entries", Duration::from_secs(60), || {
        d.feed("big")["entries"].as_u64() == Some(1_000_000)
    });
    let enforced = start.elapsed();
    // What was timed is enforced: the listed address is dropped, the clean one is not.
    b.refused(LISTED, smtp4());
    b.connects(CLEAN, smtp4());
    let read_ms = d
        .log_text()
        .lines()
        .find(|l| l.contains("feed loaded"))
        .and_then(|l| {
            l.split_once("read_ms=")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN);
    Round {
        ready,
        enforced,
        read_ms,
        peak_mib: d.memory_kib("VmHWM:") as f64 / 1024.0,
    }
}

/// `median [min … max]` of `values`.
fn spread(mut values: Vec<f64>, unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.0} {unit} [{:.0} … {:.0}]",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 1 } else { ROUNDS };
    let b = Bed::new(
        "bf",
        &[LISTED, CLEAN],
        &[RblZone::new("bl.bench", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let feed = dir.path().join("million.txt");
    std::fs::write(&feed, million_line_feed(LISTED)).unwrap();
    let runs: Vec<Round> = (0..rounds)
        .map(|i| {
            eprintln!("round {} of {rounds}", i + 1);
            round(&b, &feed)
        })
        .collect();
    let ms = |f: fn(&Round) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let worst_enforced = runs.iter().map(|r| r.enforced).max().unwrap();
    let worst_peak = runs.iter().map(|r| r.peak_mib).fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { "within" } else { "OVER" };

    println!(
        "A million-line feed at the release daemon's start, {rounds} round(s) (`cargo xtask bench feeds`)"
    );
    println!("| measure | median [min … max] | target | worst vs target |");
    println!("|---|---:|---:|---|");
    println!(
        "| start → all 1,000,000 entries enforced (`status` polled every 50 ms) | {} | {} ms | {} |",
        spread(ms(|r| r.enforced.as_secs_f64() * 1e3), "ms"),
        TARGET_ENFORCED.as_millis(),
        verdict(worst_enforced <= TARGET_ENFORCED)
    );
    println!(
        "| start → control socket answers | {} | | |",
        spread(ms(|r| r.ready.as_secs_f64() * 1e3), "ms")
    );
    println!(
        "| the daemon's read and parse of the file (`feed loaded` read_ms) | {} | | |",
        spread(ms(|r| r.read_ms), "ms")
    );
    println!(
        "| daemon peak RSS (VmHWM) | {} | {TARGET_PEAK_MIB:.0} MiB | {} |",
        spread(ms(|r| r.peak_mib), "MiB"),
        verdict(worst_peak <= TARGET_PEAK_MIB)
    );
}
