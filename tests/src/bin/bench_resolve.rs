//! `cargo xtask bench resolve`: 10 000 distinct addresses through the reputation engine's
//! budgeted front (`Engine::spawn` + `submit`) against a local rbldnsd serving four zones,
//! each listing 10% of the addresses. rDNS is off (rbldnsd serves no PTRs); the rate cap is
//! lifted so the engine itself is measured; a last column asks through a local caching
//! resolver (unbound stubbed to the rbldnsd, cold: every address is new to it), the
//! deployment the README asks for, which sizes the default budget. Prints lookups per second, verdict latency,
//! queries sent per address and peak RSS. Not a test: it prints numbers for BENCHMARKS.md.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use mxscreen::reputation::{
    DnsblConfig, Engine, ListsConfig, Nameserver, RdnsConfig, ReputationConfig, ResolverConfig,
    Submit,
};
use mxscreen_tests::dns::{Listing, RblZone, Rbldnsd, Unbound};

const ADDRESSES: u32 = 10_000;
const ZONES: usize = 4;
/// Runs compared: `resolver.max_inflight` the default and four times it, straight to the
/// rbldnsd; the default through unbound.
const RUNS: [(usize, bool); 3] = [(64, false), (256, false), (64, true)];

/// The i-th address of 198.18.0.0/15 (RFC 2544, benchmarking).
fn addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)
}

fn main() {
    let zones: Vec<RblZone> = (0..ZONES)
        .map(|z| {
            // Zone z lists every tenth address, offset by z, so 40% of peers are listed once.
            let listings = (0..ADDRESSES)
                .filter(|i| (i + z as u32).is_multiple_of(10))
                .map(|i| Listing {
                    ip: IpAddr::V4(addr(i)),
                    code: Ipv4Addr::new(127, 0, 0, 2),
                    txt: "bench".into(),
                })
                .collect();
            RblZone::new(
                &format!("bl{z}.bench.test"),
                Duration::from_secs(900),
                listings,
            )
        })
        .collect();
    let rbl = Rbldnsd::start(&zones);
    let stubs: Vec<(&str, std::net::SocketAddr)> =
        zones.iter().map(|z| (z.name.as_str(), rbl.addr)).collect();
    let unbound = Unbound::start(&stubs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runs: Vec<Run> = RUNS
        .iter()
        .map(|&(inflight, through_unbound)| {
            let server = if through_unbound {
                unbound.addr
            } else {
                rbl.addr
            };
            let cfg = ReputationConfig {
                resolver: ResolverConfig {
                    nameservers: vec![Nameserver(server)],
                    max_inflight: inflight,
                    max_lookups_per_sec: 1_000_000,
                    queue_len: ADDRESSES as usize,
                    ..ResolverConfig::default()
                },
                dnsbl: zones
                    .iter()
                    .map(|z| DnsblConfig {
                        zone: z.name.clone(),
                        weight: 10,
                        codes: Vec::new(),
                        code_weights: Vec::new(),
                        ..DnsblConfig::new(&z.name, 10)
                    })
                    .collect(),
                rdns: RdnsConfig {
                    enabled: false,
                    ..RdnsConfig::default()
                },
                lists: ListsConfig {
                    allow: Vec::new(),
                    allow_defaults: false,
                    deny: Vec::new(),
                    feed: Vec::new(),
                },
                ..mxscreen::config::Config::default().reputation()
            };
            rt.block_on(run(cfg))
        })
        .collect();

    let n = f64::from(ADDRESSES);
    let row = |name: &str, f: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = runs.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let heads: Vec<String> = RUNS
        .iter()
        .map(|(i, u)| {
            let via = if *u { ", through unbound" } else { "" };
            format!("max_inflight {i}{via}")
        })
        .collect();
    println!(
        "{ADDRESSES} distinct addresses submitted at once, {ZONES} rbldnsd zones, rate cap lifted\n"
    );
    println!("| measure | {} |", heads.join(" | "));
    println!("|---|{}", "---:|".repeat(runs.len()));
    row("wall time", &|r| {
        format!("{:.2} s", r.elapsed.as_secs_f64())
    });
    row("lookups/s (addresses evaluated per second)", &|r| {
        format!("{:.0}", n / r.elapsed.as_secs_f64())
    });
    row("DNS queries/s", &|r| {
        format!("{:.0}", r.queries as f64 / r.elapsed.as_secs_f64())
    });
    row("queries sent per address", &|r| {
        format!("{:.2}", r.queries as f64 / n)
    });
    row("evaluation time p50 / p99", &|r| {
        format!(
            "{} / {}",
            ms(pct(&r.eval_times, 50)),
            ms(pct(&r.eval_times, 99))
        )
    });
    row(
        "verdict latency p50 / p99 (submit → verdict, incl. queueing)",
        &|r| {
            format!(
                "{} / {}",
                ms(pct(&r.latencies, 50)),
                ms(pct(&r.latencies, 99))
            )
        },
    );
    row("evaluations slower than 1 s", &|r| {
        r.eval_times
            .iter()
            .filter(|t| **t > Duration::from_secs(1))
            .count()
            .to_string()
    });
    row("verdicts pass / drop", &|r| {
        format!("{} / {}", r.pass, r.drop)
    });
    row("peak RSS (VmHWM) after the run", &|r| r.vm_hwm.clone());
}

struct Run {
    elapsed: Duration,
    latencies: Vec<Duration>,
    eval_times: Vec<Duration>,
    queries: u64,
    pass: u64,
    drop: u64,
    vm_hwm: String,
}

async fn run(cfg: ReputationConfig) -> Run {
    let (engine, mut verdicts) = Engine::spawn(cfg).expect("engine");
    let mut submitted = HashMap::with_capacity(ADDRESSES as usize);
    let start = Instant::now();
    for i in 0..ADDRESSES {
        let ip = IpAddr::V4(addr(i));
        submitted.insert(ip, Instant::now());
        assert_eq!(
            engine.submit(ip),
            Submit::Queued,
            "queue sized for every address"
        );
    }
    let mut latencies = Vec::with_capacity(ADDRESSES as usize);
    let mut eval_times = Vec::with_capacity(ADDRESSES as usize);
    let mut tempfails = 0;
    for _ in 0..ADDRESSES {
        let v = tokio::time::timeout(Duration::from_secs(60), verdicts.recv())
            .await
            .expect("verdicts keep coming")
            .expect("channel open");
        latencies.push(submitted[&v.ip].elapsed());
        eval_times.push(v.elapsed);
        tempfails += usize::from(v.reason == filter_common::Reason::Tempfail);
    }
    let elapsed = start.elapsed();
    assert_eq!(
        tempfails, 0,
        "DNS failures during the benchmark: the numbers would lie"
    );
    let stats = engine.stats();
    Run {
        elapsed,
        latencies,
        eval_times,
        queries: stats.queries_sent,
        pass: stats.verdict_pass,
        drop: stats.verdict_drop,
        vm_hwm: vm_hwm(),
    }
}

fn pct(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Peak resident set size of this process (engine, runtime and test harness; rbldnsd runs
/// in its own process).
fn vm_hwm() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    format!("{:.1} MiB", kib / 1024.0)
}
