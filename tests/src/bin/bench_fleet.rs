//! `cargo xtask bench fleet`: what a fleet costs Redis and a joining host. A real
//! redis-server (no persistence) in a namespace: bytes per shared verdict and per manual
//! entry (`used_memory` before and after writing 100 000 of each shape, and `MEMORY USAGE`
//! of one key), then the release `mxscreen run` started side by side without `[fleet]`,
//! with an empty fleet and with a fleet holding 100 000 verdicts: time to ready (the join
//! loads the shared state before the daemon says ready); last, two hosts side by side (XDP
//! and tc on one interface, one Redis): how soon a block made on one is held by the other,
//! beside the README's promise of a second. Prints numbers; results go into BENCHMARKS.md.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mxscreen_tests::{
    daemon::{MxDaemon, Spec},
    netns::{SERVER_IFACE, Wire},
    redis::RedisServer,
};
use serde_json::json;

const N: u32 = 100_000;
const TTL_MS: u64 = 3_600_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// 198.18.0.0/15 (benchmarking addresses), one per `i`.
fn addr(i: u32) -> String {
    let [_, b, c, d] = i.to_be_bytes();
    format!("198.{}.{c}.{d}", 18 + (b & 1))
}

/// A verdict record as a host writes it; `evidence` is what the verdict line shows.
fn verdict(i: u32, evidence: &str) -> (String, String) {
    let now = now_ms();
    let rec = json!({"kind": "verdict", "ip": addr(i), "action": "drop", "source": "reputation",
        "score": 15, "evidence": evidence, "expires_ms": now + TTL_MS, "host": "mx1.example.net",
        "made_ms": now});
    (format!("mxscreen:verdict:{}", addr(i)), rec.to_string())
}

fn manual(i: u32) -> (String, String) {
    let now = now_ms();
    let rec = json!({"kind": "manual", "list": "deny", "net": format!("{}/32", addr(i)),
        "reason": "ticket 4711: spam run", "created": now / 1000, "expires": now / 1000 + 3600,
        "host": "mx1.example.net", "changed_ms": now, "removed": false, "force": false});
    (format!("mxscreen:block:{}/32", addr(i)), rec.to_string())
}

/// Bytes per entry: `used_memory` growth over `N` entries, and `MEMORY USAGE` of one.
fn measure(r: &RedisServer, entries: &[(String, String)]) -> (f64, u64) {
    r.cli(&["FLUSHALL"]);
    let before = r.used_memory();
    r.load(entries, TTL_MS);
    let after = r.used_memory();
    (
        (after - before) as f64 / entries.len() as f64,
        r.memory_usage(&entries[0].0),
    )
}

fn main() {
    let wire = Wire::new("bf");
    let redis = RedisServer::start(&wire.server);
    let short = "dnsbl:bl.example=listed[127.0.0.2](+10)";
    let long = "rdns=no_ptr[NXDOMAIN](+5) dnsbl:zen.spamhaus.org=listed[127.0.0.2 (SBL): https://www.spamhaus.org/sbl/query/SBL123456](+10)";
    println!(
        "| shared entry (100 000 of them) | bytes each (used_memory) | MEMORY USAGE of one key | record JSON |"
    );
    println!("|---|---:|---:|---:|");
    for (name, entries) in [
        (
            "verdict, short evidence",
            (0..N).map(|i| verdict(i, short)).collect::<Vec<_>>(),
        ),
        (
            "verdict, rDNS + Spamhaus SBL evidence",
            (0..N).map(|i| verdict(i, long)).collect(),
        ),
        (
            "manual block with reason and expiry",
            (0..N).map(manual).collect(),
        ),
    ] {
        let (each, one) = measure(&redis, &entries);
        println!("| {name} | {each:.0} | {one} | {} |", entries[0].1.len());
    }

    // Time to ready, side by side.
    let spec = |fleet: bool| Spec {
        datapath: "[datapath.maps]\nverdicts = 200000\n".into(),
        sections: format!(
            "[resolver]\nnameservers = [\"127.0.0.1\"]\n\n[rdns]\nenabled = false\n\n[[dnsbl]]\nzone = \"bl.invalid\"\nweight = 10\n{}",
            if fleet {
                format!("\n[fleet]\nredis = {:?}\nname = \"mx2\"\n", redis.url())
            } else {
                String::new()
            }
        ),
        ..Default::default()
    };
    let ready = |fleet: bool| {
        let t = Instant::now();
        let d = MxDaemon::start(&wire.server, SERVER_IFACE, spec(fleet));
        let took = t.elapsed();
        let stats: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["stats", "--json"])).unwrap();
        let held: u64 = stats["verdicts_by_action"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        (took, held)
    };
    println!();
    println!("| mxscreen run, start to ready | time | verdicts held when ready |");
    println!("|---|---:|---:|");
    let (t, n) = ready(false);
    println!("| no [fleet] | {} | {n} |", ms(t));
    redis.cli(&["FLUSHALL"]);
    let (t, n) = ready(true);
    println!("| [fleet], empty Redis | {} | {n} |", ms(t));
    redis.load(
        &(0..N).map(|i| verdict(i, long)).collect::<Vec<_>>(),
        TTL_MS,
    );
    let (t, n) = ready(true);
    println!("| [fleet], Redis holding {N} verdicts | {} | {n} |", ms(t));

    redis.cli(&["FLUSHALL"]);
    let (mut shared, mut polls) = propagation(&wire, &redis);
    shared.sort();
    polls.sort();
    let worst = *shared.last().unwrap();
    println!();
    println!("| a block on mx-a, held by mx-b | median | max | target |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `mxscreen block` on mx-a until mx-b lists it ({BLOCKS} blocks; includes the command and up to one poll) | {} | {} | 1000 ms ({}) |",
        ms(shared[BLOCKS / 2]),
        ms(worst),
        if worst <= SHARED_TARGET {
            "within"
        } else {
            "OVER"
        }
    );
    println!(
        "| one poll: `mxscreen list --blocked --json` on mx-b | {} | {} | |",
        ms(polls[polls.len() / 2]),
        ms(*polls.last().unwrap())
    );
}

/// Blocks timed from one host to the other.
const BLOCKS: usize = 50;
/// The README's promise: a change on one host is on every host within a second.
const SHARED_TARGET: Duration = Duration::from_secs(1);

/// Two fleet hosts on one interface (mx-a in XDP, mx-b in tc): each of [`BLOCKS`] blocks made
/// on mx-a, timed from the command's start until mx-b's `list --blocked` shows it (polled as
/// fast as it answers); and how long each of those polls took.
fn propagation(wire: &Wire, redis: &RedisServer) -> (Vec<Duration>, Vec<Duration>) {
    let host = |name: &str, mode: &str| {
        MxDaemon::start(
            &wire.server,
            SERVER_IFACE,
            Spec {
                datapath: format!("mode = {mode:?}\n"),
                sections: format!(
                    "[resolver]\nnameservers = [\"127.0.0.1\"]\n\n[rdns]\nenabled = false\n\n[[dnsbl]]\nzone = \"bl.invalid\"\nweight = 10\n\n[fleet]\nredis = {:?}\nname = {name:?}\n",
                    redis.url()
                ),
                ..Default::default()
            },
        )
    };
    let a = host("mx-a", "xdp");
    let b = host("mx-b", "tc");
    let (mut shared, mut polls) = (Vec::new(), Vec::new());
    for i in 0..BLOCKS {
        let ip = format!("203.0.113.{}", 100 + i);
        let needle = format!("\"{ip}/32\"");
        let t = Instant::now();
        a.cli_ok(&["block", &ip]);
        loop {
            let poll = Instant::now();
            let listed = b.cli_ok(&["list", "--blocked", "--json"]).contains(&needle);
            polls.push(poll.elapsed());
            if listed {
                shared.push(t.elapsed());
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{ip} never reached mx-b:\n{}",
                b.log_text()
            );
        }
    }
    (shared, polls)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
