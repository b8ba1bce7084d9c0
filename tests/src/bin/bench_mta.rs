//! `cargo xtask bench mta [--quick]`: what refusing listed senders costs a real MTA host, with
//! Exim's own DNSBL ACL and with the same Exim behind mxscreen.
//!
//! The e2e testbed's pieces: a real Exim (Debian's exim4) on the MTA host namespace, its own
//! unbound (127.0.0.1, cold for each configuration) stubbed to a real rbldnsd listing the
//! bench's senders, and an nsd serving the clean senders' PTR and AAAA records (forward-
//! confirmed, as a mail server's are); the client namespace opens SMTP sessions (a minimal
//! client, 16 at a time) from 500 listed IPv6 addresses (each in a /64 of its own), 4
//! attempts each, interleaved. Exim asks mxscreen at connect time with the README's snippet
//! (its query socket; with no mxscreen the question fails and Exim goes on) and keeps its own
//! `deny dnslists` at RCPT. Configurations in turn:
//!
//! - (a) Exim alone;
//! - (b) the same Exim behind mxscreen (release build) with its built-in defaults: only the
//!   resolver and the zone are set, every other key (budget, first contact, explanations,
//!   rDNS) at its default;
//! - (c) the defaults but `first_contact = "pass"`: every new sender's first SYN passes while
//!   it is looked up.
//!
//! Then what `hold` costs a clean sender: the first connection of each of 100 clean senders
//! (FCrDNS, not listed) behind the defaults, timed (one SYN retransmit expected).
//!
//! Measured: wall time; CPU seconds of Exim (its daemon and every connection process it
//! reaped), of mxscreen, of all CPUs' softirq (tick-sampled) and of the DNS servers; how
//! many listed connections reached an Exim process. Then clean mail: 20 clean senders
//! delivering messages, with and without mxscreen, interleaved rounds.
//!
//! Prints the tables; without `--quick` also appends them to BENCHMARKS.md.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mxscreen_tests::{
    bench::{Samples, children, process_cpu_ns, record, softirq_ns},
    daemon::{MxDaemon, Spec, mxscreen_release_bin},
    dns::{AuthZone, Nsd, RblZone, Rbldnsd, Unbound, listing},
    mta::{Exim, EximSpec, RESOLVER, local_resolver},
    netns::{CLIENT_V6, SERVER_IFACE, SERVER_V6, Wire, run},
    smtp::{Outcome, session},
};

struct Params {
    listed: u32,
    /// Clean senders timed on their first connection (the first `clean` also send mail).
    first: u32,
    attempts: u32,
    clean: u32,
    messages: u32,
    rounds: usize,
}

const FULL: Params = Params {
    listed: 500,
    first: 100,
    attempts: 2000,
    clean: 20,
    messages: 25,
    rounds: 3,
};
const QUICK: Params = Params {
    listed: 50,
    first: 20,
    attempts: 200,
    clean: 20,
    messages: 3,
    rounds: 1,
};

/// Sessions at once.
const PARALLEL: usize = 16;
/// A SYN dropped by mxscreen is given up on before TCP retransmits it (after 1 s).
const CONNECT: Duration = Duration::from_millis(900);
/// A clean sender waits out SYN retransmits (1 s, 3 s) like a real MTA does.
const CLEAN_CONNECT: Duration = Duration::from_secs(5);
const ZONE: &str = "zen.test";
/// The clean senders' forward zone and their /48's reverse zone (2001:db8:200::/48).
const FORWARD: &str = "clients.bench.test";
const REVERSE: &str = "0.0.2.0.8.b.d.0.1.0.0.2.ip6.arpa";

/// Every sender in a /64 of its own, routed through the client: senders sharing one /64
/// would soon share a network verdict (IPv6 rotation), as they should.
fn listed(i: u32) -> IpAddr {
    format!("2001:db8:100:{i:x}::1").parse().unwrap()
}

fn clean(i: u32) -> IpAddr {
    format!("2001:db8:200:{i:x}::1").parse().unwrap()
}

/// Clean sender `i`'s PTR (relative to [`REVERSE`]) and AAAA (relative to [`FORWARD`]).
fn clean_records(i: u32) -> (String, String) {
    let IpAddr::V6(a) = clean(i) else {
        unreachable!()
    };
    let nibbles: Vec<String> = a.octets()[6..]
        .iter()
        .flat_map(|b| [b >> 4, b & 15])
        .rev()
        .map(|n| format!("{n:x}"))
        .collect();
    (
        format!("{} IN PTR c{i}.{FORWARD}.", nibbles.join(".")),
        format!("c{i} IN AAAA {a}"),
    )
}

fn smtp() -> SocketAddr {
    format!("[{SERVER_V6}]:25").parse().unwrap()
}

struct Bed {
    exim: Exim,
    resolver: Option<Unbound>,
    rbl: Rbldnsd,
    nsd: Nsd,
    wire: Wire,
    /// The MTA's sockets (mxscreen's query socket), where Exim's snippet looks.
    run_dir: tempfile::TempDir,
}

impl Bed {
    fn new(p: &Params) -> Self {
        let wire = Wire::new("mb");
        let batch: String = (0..p.listed)
            .map(listed)
            .chain((0..p.clean.max(p.first)).map(clean))
            .map(|a| format!("addr add {a}/128 dev vc nodad\n"))
            .collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), batch).unwrap();
        run(
            "ip",
            &[
                "-n",
                &wire.client.name,
                "-batch",
                file.path().to_str().unwrap(),
            ],
        );
        for net in ["2001:db8:100::/48", "2001:db8:200::/48"] {
            wire.server.ip(&[
                "route",
                "add",
                net,
                "via",
                CLIENT_V6[0],
                "dev",
                SERVER_IFACE,
            ]);
        }
        let listings: Vec<_> = (0..p.listed)
            .map(|i| {
                listing(
                    &listed(i).to_string(),
                    "127.0.0.2",
                    "listed for the benchmark",
                )
            })
            .collect();
        let rbl = wire
            .server
            .enter(|| Rbldnsd::start(&[RblZone::new(ZONE, Duration::from_secs(3600), listings)]));
        let (ptrs, aaaas): (Vec<_>, Vec<_>) = (0..p.clean.max(p.first)).map(clean_records).unzip();
        fn refs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let nsd = wire.server.enter(|| {
            Nsd::start(&[
                AuthZone::new(FORWARD, &refs(&aaaas)),
                AuthZone::new(REVERSE, &refs(&ptrs)),
            ])
        });
        let run_dir = tempfile::tempdir().unwrap();
        let exim = Exim::start(
            &wire.server,
            EximSpec {
                hostname: "mx.bench.test".into(),
                local_domain: "e2e.test".into(),
                dnsbl: ZONE.into(),
                dnsbl_refuses: true,
                ports: vec![25],
                asks_mxscreen: Some(run_dir.path().to_path_buf()),
                own_acl: None,
            },
        );
        // The link's first exchange loses its first SYN (neighbour discovery on a fresh
        // veth); have it happen here, on a closed port, not in a measured session.
        let closed: SocketAddr = format!("[{SERVER_V6}]:9").parse().unwrap();
        let warm = wire.connect(&clean(0).to_string(), closed, Duration::from_secs(5));
        assert!(
            matches!(&warm, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "warming the link up: {warm:?}"
        );
        let mut bed = Self {
            exim,
            resolver: None,
            rbl,
            nsd,
            wire,
            run_dir,
        };
        bed.fresh_resolver();
        bed
    }

    /// The MTA host's resolver started afresh: every configuration starts with a cold cache.
    fn fresh_resolver(&mut self) {
        self.resolver = None;
        let (rbl, nsd) = (self.rbl.addr, self.nsd.addr);
        self.resolver = Some(
            self.wire
                .server
                .enter(|| local_resolver(&[(ZONE, rbl), (FORWARD, nsd), (REVERSE, nsd)])),
        );
    }

    fn dns_cpu(&self) -> u64 {
        process_cpu_ns(self.rbl.pid(), false)
            + process_cpu_ns(self.nsd.pid(), false)
            + self
                .resolver
                .as_ref()
                .map_or(0, |r| process_cpu_ns(r.pid(), false))
    }

    /// mxscreen (release build) on the MTA host: its resolver and the zone set, every other
    /// key at its built-in default but the `[datapath]` lines given.
    fn mxscreen(&self, datapath: &str) -> MxDaemon {
        let sections = format!(
            "[resolver]\nnameservers = [\"{RESOLVER}\"]\n\n[[dnsbl]]\nzone = \"{ZONE}\"\nweight = 10\n"
        );
        MxDaemon::start(
            &self.wire.server,
            SERVER_IFACE,
            Spec {
                datapath: datapath.into(),
                sections,
                binary: Some(mxscreen_release_bin()),
                run_dir: Some(self.run_dir.path().to_path_buf()),
                ..Default::default()
            },
        )
    }
}

/// `n` sessions from `threads` threads in the client namespace; `src(k)` is session k's
/// source. Returns each session's outcome.
fn sessions(
    bed: &Bed,
    n: usize,
    threads: usize,
    src: impl Fn(usize) -> IpAddr + Send + Sync + 'static,
    send: bool,
    connect: Duration,
) -> Vec<(Outcome, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let src = Arc::new(src);
    let ns = bed.wire.client.name.clone();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, src, ns) = (next.clone(), src.clone(), ns.clone());
            std::thread::spawn(move || {
                let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let mut out = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= n {
                        return out;
                    }
                    let t = Instant::now();
                    let o = session(src(k), smtp(), connect, send);
                    out.push((o, t.elapsed()));
                }
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().expect("session thread"))
        .collect()
}

/// One configuration's listed-sender run.
struct Listed {
    name: &'static str,
    wall: Duration,
    exim: f64,
    mx: f64,
    softirq: f64,
    dns: f64,
    reached: usize,
    refused_by_exim: usize,
    attempts: usize,
}

fn listed_run(bed: &mut Bed, p: &Params, name: &'static str, mx: Option<&MxDaemon>) -> Listed {
    let exim = bed.exim.pid();
    let (e0, m0, s0, d0) = (
        process_cpu_ns(exim, true),
        mx.map_or(0, |d| process_cpu_ns(d.pid(), false)),
        softirq_ns(),
        bed.dns_cpu(),
    );
    let t = Instant::now();
    // Attempt k from listed address k mod N: every address's attempts spread over the run.
    let n = p.listed;
    let outcomes = sessions(
        bed,
        p.attempts as usize,
        PARALLEL,
        move |k| listed(k as u32 % n),
        false,
        CONNECT,
    );
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(o, _)| o).collect();
    let wall = t.elapsed();
    let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    eprintln!(
        "{name}: {} no connection, {} refused, {} failed, {} delivered",
        count(Outcome::NoConnection),
        count(Outcome::Refused),
        count(Outcome::Failed),
        count(Outcome::Delivered)
    );
    // Exim's connection processes are counted once it has reaped them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while children(exim) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = |ns: u64| ns as f64 / 1e9;
    Listed {
        name,
        wall,
        exim: secs(process_cpu_ns(exim, true) - e0),
        mx: secs(mx.map_or(0, |d| process_cpu_ns(d.pid(), false)) - m0),
        softirq: secs(softirq_ns() - s0),
        dns: secs(bed.dns_cpu() - d0),
        reached: outcomes.iter().filter(|o| o.reached_mta()).count(),
        // Refused at RCPT, or at connect (the snippet's answer to mxscreen's `drop`).
        refused_by_exim: count(Outcome::Refused) + count(Outcome::Failed),
        attempts: outcomes.len(),
    }
}

/// Each of `p.first` clean senders' first connection behind a fresh mxscreen with the
/// defaults (held, then its retransmitted SYN meets the verdict): seconds until the session
/// ended (connect, banner, EHLO, MAIL, RCPT, QUIT), sorted.
fn first_contacts(bed: &Bed, p: &Params) -> Vec<f64> {
    let n = p.first;
    let out = sessions(
        bed,
        n as usize,
        PARALLEL,
        move |k| clean(k as u32),
        false,
        CLEAN_CONNECT,
    );
    let mut secs: Vec<f64> = out
        .iter()
        .map(|(o, d)| {
            assert!(
                o.reached_mta(),
                "a clean sender's first connection failed: {out:?}"
            );
            d.as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs
}

/// Messages per second from the clean senders, each delivering `messages` in turn.
fn throughput(bed: &Bed, p: &Params) -> f64 {
    let (senders, per) = (p.clean, p.messages);
    let t = Instant::now();
    let outcomes = sessions(
        bed,
        (senders * per) as usize,
        senders as usize,
        move |k| clean(k as u32 % senders),
        true,
        CLEAN_CONNECT,
    );
    let secs = t.elapsed().as_secs_f64();
    let delivered = outcomes
        .iter()
        .filter(|(o, _)| *o == Outcome::Delivered)
        .count();
    assert_eq!(
        delivered,
        outcomes.len(),
        "clean mail not delivered: {outcomes:?}"
    );
    delivered as f64 / secs
}

fn main() {
    // The commit measured is the one this run starts from.
    let _ = mxscreen_tests::bench::commit();
    let quick = std::env::args().any(|a| a == "--quick");
    let p = if quick { QUICK } else { FULL };
    let mut bed = Bed::new(&p);
    let mut runs = Vec::new();
    runs.push(listed_run(
        &mut bed,
        &p,
        "(a) Exim alone (`deny dnslists` at RCPT)",
        None,
    ));
    for (name, datapath) in [
        (
            "(b) Exim behind mxscreen, built-in defaults (resolver and zone only)",
            "",
        ),
        (
            "(c) Exim behind mxscreen, defaults but `first_contact = \"pass\"`",
            "first_contact = \"pass\"",
        ),
    ] {
        bed.fresh_resolver();
        let mut d = bed.mxscreen(datapath);
        runs.push(listed_run(&mut bed, &p, name, Some(&d)));
        d.stop();
    }
    // Every listed attempt that reached Exim was refused by its ACLs.
    for r in &runs {
        assert_eq!(
            r.reached, r.refused_by_exim,
            "{}: {} reached Exim, {} refused",
            r.name, r.reached, r.refused_by_exim
        );
    }
    assert_eq!(
        runs[0].reached, runs[0].attempts,
        "Exim alone sees every attempt"
    );

    // What hold costs a clean sender's first connection; a fresh daemon (new pins).
    bed.fresh_resolver();
    let mut d = bed.mxscreen("");
    let first = first_contacts(&bed, &p);
    d.stop();

    // Clean mail: the same daemon (its pins keep the clean senders' pass verdicts, as they
    // are kept within pass_ttl in production), restarted for each round behind it.
    let (mut alone, mut behind) = (Samples::default(), Samples::default());
    for _ in 0..p.rounds {
        alone.push(throughput(&bed, &p));
        d.restart();
        behind.push(throughput(&bed, &p));
        d.stop();
    }
    let table = tables(&p, &runs, &first, &alone, &behind);
    println!("{table}");
    if !quick {
        record(
            "MTA (`cargo xtask bench mta`)",
            "cargo xtask bench mta",
            &table,
        );
    }
}

fn tables(p: &Params, runs: &[Listed], first: &[f64], alone: &Samples, behind: &Samples) -> String {
    let mut t = format!(
        "{} SMTP connection attempts from {} listed IPv6 addresses ({} each, interleaved, {PARALLEL} at a time; a SYN unanswered after {CONNECT:?} counts as refused before Exim). CPU seconds: Exim (daemon and reaped connection processes), mxscreen, softirq of all CPUs (tick-sampled), the DNS servers (unbound, rbldnsd; a cold cache per configuration).\n\n",
        p.attempts,
        p.listed,
        p.attempts / p.listed
    );
    t.push_str("| configuration | wall time | CPU s Exim | CPU s mxscreen | CPU s softirq | Exim + mxscreen + softirq | CPU s DNS servers | listed connections that reached Exim |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        t.push_str(&format!(
            "| {} | {:.1} s | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} of {} ({:.0} %) |\n",
            r.name,
            r.wall.as_secs_f64(),
            r.exim,
            r.mx,
            r.softirq,
            r.exim + r.mx + r.softirq,
            r.dns,
            r.reached,
            r.attempts,
            100.0 * r.reached as f64 / r.attempts as f64
        ));
    }
    let q = |f: f64| first[((first.len() - 1) as f64 * f).round() as usize];
    t.push_str(&format!(
        "\nHost CPU (Exim + mxscreen + softirq + DNS servers) vs Exim alone: {}.\n\nA clean sender's first connection behind the defaults (`first_contact = \"hold\"`; {} senders with FCrDNS, not listed, {PARALLEL} at a time): session time (connect to QUIT) median {:.2} s, p99 {:.2} s, max {:.2} s — one SYN retransmit; its later connections within `pass_ttl` meet its cached `pass`.\n",
        runs[1..]
            .iter()
            .map(|r| {
                let host = |x: &Listed| x.exim + x.mx + x.softirq + x.dns;
                format!("{} {:.1}× less", &r.name[..3], host(&runs[0]) / host(r).max(1e-9))
            })
            .collect::<Vec<_>>()
            .join(", "),
        first.len(),
        q(0.5),
        q(0.99),
        first[first.len() - 1]
    ));
    t.push_str(&format!(
        "\nClean mail: {} clean senders delivering {} messages each (one per session), {} interleaved rounds:\n\n| | messages/s: median [min … max] | vs Exim alone |\n|---|---:|---:|\n| Exim alone | {} | |\n| Exim behind mxscreen | {} | {:+.1} % |\n",
        p.clean,
        p.messages,
        p.rounds,
        alone.show(false),
        behind.show(false),
        100.0 * (behind.median() / alone.median() - 1.0)
    ));
    t
}
