//! `cargo xtask bench drop [--quick]`: what refusing a SYN costs, per receiver, on a veth
//! between two namespaces. A bounded flood of TCP SYNs to port 25 from listed IPv6 sources
//! (documentation addresses, never leaving the namespaces) is sent from one thread pinned to
//! one CPU; the cost of a SYN is that CPU's time (the sender and the receive softirq it runs)
//! per SYN — see `mxscreen_tests::flood`. Receivers in turn, in interleaved rounds:
//!
//! - XDP drop-all and pass-all, and tc drop-all and pass-all: the floors (what a frame costs
//!   before any decision, on each path; on a veth a frame meeting XDP is first copied into a
//!   page, which makes the XDP floor the dearer one);
//! - the bare one-hash-lookup XDP program (bench-ebpf), nftables netdev-ingress set,
//!   ip6tables raw + ipset;
//! - mxscreen's datapath in native XDP and in tc, for every class of subject SYN, all loaded
//!   at once (verdicts, manual entries, a million-prefix feed, allow entries, unknown peers).
//!
//! SYNs a receiver passes are addressed to another host's MAC, so the stack discards them at
//! the first check of its IPv6 input: what is measured is the receiver, not TCP. Each cost is
//! taken over the floor of its own path (XDP receivers over the XDP floor; tc, nftables and
//! ip6tables over the tc floor), pass classes over the pass floor; × bare compares each class
//! with the bare program finding its source (one hash lookup that hits) and dropping, or
//! passing. Then a
//! mixed run per receiver: 1 % of the SYNs come from clean senders making real connections,
//! which must all complete.
//!
//! Last, the random-source class: every SYN from a new random source (a spoofed flood),
//! mxscreen in XDP beside the bare LRU-insert program (bench-ebpf), by BPF run time.
//!
//! `--nft` runs only the nftables rows (the hand-written set, alone and given each promise
//! of mxscreen's backend, and the backend's classes) at the full run's table sizes, with
//! fewer SYNs, and records nothing: the loop for working on the backend
//! (`cargo run --release -p mxscreen-tests --bin bench_drop -- --nft`).
//!
//! Then the same class through nftables: the hand-written rule remembering every new source
//! in a dynamic set, and mxscreen's nftables backend with the daemon's defaults for new
//! peers, by the sending CPU's time.
//!
//! Prints the tables; without `--quick` also appends them to BENCHMARKS.md. `--random` runs
//! only the random-source class (nothing recorded), with a breakdown of where its time goes:
//! the same flood through mxscreen with no list entries, and with no event budget left
//! (`cargo run --release -p mxscreen-tests --bin bench_drop -- --quick --random`: xtask passes
//! only `--quick`); `--random --nft`, only its nftables rows.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use filter_common::Counter;
use mxscreen::datapath::{AttachMode, MapSizes};
use mxscreen_tests::{
    bench::{ProgramTime, Samples, record},
    flood::{Flood, pin, softirqd_ns, thread_cpu_ns},
    netns::{SERVER_IFACE, SERVER_V6, Wire},
    packets::Frame,
    receivers::{
        Class, Mx, MxNft, Promises, ipset_down, ipset_up, nft_down, nft_interval_up,
        nft_remember_up, nft_up, nft_up_promising,
    },
    reference::{Program, Reference, TcProgram},
};

/// What a run measures.
struct Params {
    sources: u32,
    syns: u64,
    rounds: usize,
    feed: usize,
}

const FULL: Params = Params {
    sources: 16_384,
    syns: 1_000_000,
    rounds: 7,
    feed: 1_000_000,
};
/// `--nft`: the nftables rows only, at the full run's table sizes (where the caches miss as
/// they do in a full run), with fewer SYNs and rounds: a loop for working on the backend.
const NFT_ONLY: Params = Params {
    sources: 16_384,
    syns: 300_000,
    rounds: 7,
    feed: 1_000_000,
};
const QUICK: Params = Params {
    sources: 1_024,
    syns: 50_000,
    rounds: 1,
    feed: 20_000,
};

/// A MAC that is not the server's: what the server passes, its stack drops at once.
const OTHER_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// Clean senders of the mixed run, on the wire's /64.
const CLEAN: u16 = 16;

fn class_sources(class: Class, n: u32) -> Vec<IpAddr> {
    let tag = 0xa0 + Class::ALL.iter().position(|c| *c == class).unwrap() as u16;
    source_range(tag, n)
}

/// `n` addresses 2001:db8:TAG::/48 + i.
fn source_range(tag: u16, n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            let a = Ipv6Addr::new(0x2001, 0xdb8, tag, 0, 0, 0, (i >> 16) as u16, i as u16 + 1);
            IpAddr::V6(a)
        })
        .collect()
}

/// One SYN per source, twice: in the order the sources were listed, to warm a receiver up
/// (an entry a receiver creates itself is created in that order), and shuffled (the same
/// every run) for the flood that is measured. A flood's sources do not arrive in the order
/// their entries were written; walking memory in that order would make any receiver look
/// cheaper than it is.
struct Frames {
    warm: Vec<Vec<u8>>,
    flood: Vec<Vec<u8>>,
}

/// A SYN from `source`, to the server's MAC or, if `to_other_host`, to [`OTHER_HOST`].
fn syn(source: IpAddr, to_other_host: bool) -> Vec<u8> {
    let mut f = Frame::syn(source).build();
    if to_other_host {
        f[..6].copy_from_slice(&OTHER_HOST);
    }
    f
}

fn frames(sources: &[IpAddr], to_other_host: bool) -> Frames {
    let warm: Vec<Vec<u8>> = sources.iter().map(|s| syn(*s, to_other_host)).collect();
    let mut flood = warm.clone();
    // Fisher-Yates with a fixed xorshift.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..flood.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        flood.swap(i, (x % (i as u64 + 1)) as usize);
    }
    Frames { warm, flood }
}

/// One measured receiver: ns per SYN, absolute and over its floor, per round; for a BPF
/// program, also its own run time over the floor program's.
struct Row {
    name: String,
    drops: bool,
    abs: Samples,
    over: Samples,
    prog: Samples,
}

/// One floor's cost: CPU ns per SYN, and the floor program's own run time per SYN.
#[derive(Clone, Copy)]
struct Cost {
    cpu: f64,
    prog: f64,
}

/// Which floor of a round.
type Pick = fn(&Floors) -> Cost;

/// The floors of one round.
#[derive(Clone, Copy)]
struct Floors {
    xdp_drop: Cost,
    xdp_pass: Cost,
    tc_drop: Cost,
    tc_pass: Cost,
}

impl Floors {
    fn of(&self, xdp: bool, drops: bool) -> Cost {
        match (xdp, drops) {
            (true, true) => self.xdp_drop,
            (true, false) => self.xdp_pass,
            (false, true) => self.tc_drop,
            (false, false) => self.tc_pass,
        }
    }
}

struct Bench {
    p: Params,
    quick: bool,
    wire: Wire,
    flood: Flood,
    cpu: usize,
    listed: Vec<IpAddr>,
    drop_frames: Frames,
    pass_frames: Frames,
    /// The dropped class's sources, sent on to another host: what a set accepting them
    /// passes (measured over the pass floor, as the pass classes).
    accept_frames: Frames,
    reference: Reference,
    mx: Mx,
    nft: MxNft,
}

impl Bench {
    /// Warms the receiver (every source once), then floods; ns per SYN.
    fn measure(&self, frames: &Frames) -> f64 {
        self.flood
            .send(&frames.warm, frames.warm.len() as u64, self.cpu);
        self.flood
            .send(&frames.flood, self.p.syns, self.cpu)
            .ns_per_frame()
    }

    /// [`Self::measure`], then a quarter as many SYNs again with BPF run-time statistics on
    /// (they cost every program run two clock reads, so never during the CPU measurement):
    /// ns the programs of `ebpf` ran per SYN.
    fn measure_prog(&self, frames: &Frames, ebpf: &aya::Ebpf) -> Cost {
        let cpu = self.measure(frames);
        Cost {
            cpu,
            prog: self.prog_ns(frames, ebpf),
        }
    }

    fn prog_ns(&self, frames: &Frames, ebpf: &aya::Ebpf) -> f64 {
        let stats = ProgramTime::enable();
        let (t0, n0) = stats.of(ebpf);
        self.flood.send(&frames.flood, self.p.syns / 4, self.cpu);
        let (t1, n1) = stats.of(ebpf);
        (t1 - t0) as f64 / (n1 - n0).max(1) as f64
    }

    fn with_reference<R>(&mut self, prog: Program, f: impl FnOnce(&Self) -> R) -> R {
        let link = self
            .wire
            .server
            .enter(|| self.reference.attach(prog, SERVER_IFACE));
        let r = f(self);
        self.reference.detach(prog, link);
        r
    }

    /// [`Self::with_reference`] for a reference program at tc ingress.
    fn with_tc<R>(&mut self, prog: TcProgram, f: impl FnOnce(&Self) -> R) -> R {
        let link = self
            .wire
            .server
            .enter(|| self.reference.attach_tc(prog, SERVER_IFACE));
        let r = f(self);
        self.reference.detach_tc(prog, link);
        r
    }

    fn tc_floor(&mut self, prog: TcProgram, frames: &Frames) -> Cost {
        self.with_tc(prog, |b| b.measure_prog(frames, &b.reference.ebpf))
    }

    fn floors(&mut self) -> Floors {
        let (d, p) = (
            std::mem::replace(&mut self.drop_frames, frames(&[], false)),
            std::mem::replace(&mut self.pass_frames, frames(&[], true)),
        );
        let floors = Floors {
            xdp_drop: self
                .with_reference(Program::DropAll, |b| b.measure_prog(&d, &b.reference.ebpf)),
            xdp_pass: self
                .with_reference(Program::PassAll, |b| b.measure_prog(&p, &b.reference.ebpf)),
            tc_drop: self.tc_floor(TcProgram::DropAll, &d),
            tc_pass: self.tc_floor(TcProgram::PassAll, &p),
        };
        self.drop_frames = d;
        self.pass_frames = p;
        floors
    }

    /// Every class through mxscreen in `mode`; (class, its cost).
    fn mx_classes(&mut self, mode: AttachMode) -> Vec<(Class, Cost)> {
        self.mx.attach(&self.wire.server, SERVER_IFACE, mode);
        let mut out = Vec::new();
        for class in Class::ALL {
            let sources = class_sources(class, self.p.sources);
            let f = frames(&sources, !class.drops());
            // Warm up in slices the event ring can hold, draining it between them.
            for chunk in f.warm.chunks(4096) {
                self.flood.send(chunk, chunk.len() as u64, self.cpu);
                self.mx.events.drain();
            }
            let decided_by = |mx: &Mx| {
                let limit = class == Class::VerdictLimit;
                // A limited source still gets one SYN through per minute.
                mx.counter(class.counter())
                    + if limit {
                        mx.counter(Counter::PassedLimit)
                    } else {
                        0
                    }
            };
            let before = decided_by(&self.mx);
            let slow = self.mx.counter(Counter::SlowPath);
            let ns = self
                .flood
                .send(&f.flood, self.p.syns, self.cpu)
                .ns_per_frame();
            let decided = decided_by(&self.mx) - before;
            let slow = self.mx.counter(Counter::SlowPath) - slow;
            if slow > self.p.syns / 100 {
                eprintln!(
                    "warning: {mode:?} {}: {slow} of {} SYNs took the slow path",
                    class.name(),
                    self.p.syns
                );
            }
            let share = decided as f64 / self.p.syns as f64;
            if share < 0.99 {
                let msg = format!(
                    "{mode:?} {}: only {decided} of {} SYNs decided as {:?}",
                    class.name(),
                    self.p.syns,
                    class.counter()
                );
                assert!(!self.quick, "{msg}");
                eprintln!("warning: {msg}");
            }
            let prog = self.prog_ns(&f, &self.mx.ebpf);
            out.push((class, Cost { cpu: ns, prog }));
        }
        self.mx.detach();
        out
    }

    /// Every class through mxscreen's nftables backend (no BPF program: CPU only).
    fn nft_classes(&mut self) -> Vec<(Class, Cost)> {
        self.nft.attach(SERVER_IFACE);
        // Attaching rewrites the rules; the kernel's deferred work after that transaction
        // (freeing the old rules, resizing tables) otherwise lands in the first class's
        // measurement (+100 ns on the first, none on the others).
        std::thread::sleep(Duration::from_secs(2));
        let mut out = Vec::new();
        for class in Class::ALL {
            let f = frames(&class_sources(class, self.p.sources), !class.drops());
            for chunk in f.warm.chunks(4096) {
                self.flood.send(chunk, chunk.len() as u64, self.cpu);
                self.nft.drain();
            }
            let decided_by = |n: &MxNft| {
                n.counter(class.counter())
                    + if class == Class::VerdictLimit {
                        n.counter(Counter::PassedLimit)
                    } else {
                        0
                    }
            };
            let before = decided_by(&self.nft);
            let ns = self
                .flood
                .send(&f.flood, self.p.syns, self.cpu)
                .ns_per_frame();
            let decided = decided_by(&self.nft) - before;
            if (decided as f64) < self.p.syns as f64 * 0.99 {
                let msg = format!(
                    "nftables {}: only {decided} of {} SYNs decided as {:?}",
                    class.name(),
                    self.p.syns,
                    class.counter()
                );
                assert!(!self.quick, "{msg}");
                eprintln!("warning: {msg}");
            }
            out.push((
                class,
                Cost {
                    cpu: ns,
                    prog: f64::NAN,
                },
            ));
        }
        self.nft.detach();
        out
    }
}

fn main() {
    // The commit measured is the one this run starts from.
    let _ = mxscreen_tests::bench::commit();
    let quick = std::env::args().any(|a| a == "--quick");
    let random_only = std::env::args().any(|a| a == "--random");
    let nft_only = std::env::args().any(|a| a == "--nft");
    let p = match (quick, nft_only) {
        (true, _) => QUICK,
        (false, true) => NFT_ONLY,
        _ => FULL,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;
    let t = Instant::now();
    let wire = Wire::new("bd");
    // The frames' destination MAC is the server's (changed live: a link taken down loses
    // its IPv6 addresses).
    wire.server
        .ip(&["link", "set", SERVER_IFACE, "address", "02:00:00:00:00:02"]);
    let listed = class_sources(Class::VerdictDrop, p.sources);
    let unknown = class_sources(Class::Unknown, p.sources);
    // As many entries as mxscreen's per-source map holds by default: tables of one size.
    let mut reference = Reference::load(MapSizes::default().peers);
    for s in listed.iter().chain(&unknown) {
        reference.list(*s);
    }
    let mx = Mx::load(|c| class_sources(c, p.sources), p.feed);
    let nft = MxNft::load(&wire.server, |c| class_sources(c, p.sources), p.feed);
    let flood = Flood::new(&wire.client, "vc");
    let mut b = Bench {
        drop_frames: frames(&listed, false),
        pass_frames: frames(&unknown, true),
        accept_frames: frames(&listed, true),
        listed,
        reference,
        mx,
        nft,
        flood,
        cpu,
        wire,
        quick,
        p,
    };
    eprintln!("set up in {:.1?}", t.elapsed());
    if random_only {
        if !nft_only {
            println!("{}", random_breakdown(&mut b));
        }
        println!("{}", random_nft(&mut b));
        return;
    }

    let mut floors: Vec<Floors> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for round in 0..b.p.rounds {
        eprintln!("round {} of {}", round + 1, b.p.rounds);
        let f = b.floors();
        floors.push(f);
        let mut row = |name: String, xdp: bool, drops: bool, v: Cost| {
            let floor = f.of(xdp, drops);
            let (over, prog) = (v.cpu - floor.cpu, v.prog - floor.prog);
            let r = match rows.iter_mut().position(|r| r.name == name) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(Row {
                        name,
                        drops,
                        abs: Samples::default(),
                        over: Samples::default(),
                        prog: Samples::default(),
                    });
                    rows.last_mut().unwrap()
                }
            };
            r.abs.push(v.cpu);
            r.over.push(over);
            if !v.prog.is_nan() {
                r.prog.push(prog);
            }
        };
        if nft_only {
            nft_rows(&mut b, &mut row);
            continue;
        }
        let bd = b.with_reference(Program::HashDrop, |b| {
            b.measure_prog(&b.drop_frames, &b.reference.ebpf)
        });
        let bp = b.with_reference(Program::HashPass, |b| {
            b.measure_prog(&b.pass_frames, &b.reference.ebpf)
        });
        row(BARE_DROP.into(), true, true, bd);
        row(BARE_PASS.into(), true, false, bp);
        let not_bpf = |cpu| Cost {
            cpu,
            prog: f64::NAN,
        };
        nft_rows(&mut b, &mut row);
        ipset_up(&b.wire.server, SERVER_IFACE, &b.listed);
        let v = b.measure(&b.drop_frames);
        ipset_down(&b.wire.server);
        row(
            "ip6tables raw + ipset hash:ip".into(),
            false,
            true,
            not_bpf(v),
        );
        nft_interval_up(&b.wire.server, SERVER_IFACE, &b.listed, b.p.feed);
        let v = b.measure(&b.drop_frames);
        nft_down(&b.wire.server);
        row(
            format!(
                "nftables netdev ingress, interval set of a {}-prefix feed",
                b.p.feed
            ),
            false,
            true,
            not_bpf(v),
        );
        for (mode, label, xdp) in [
            (AttachMode::Xdp, "XDP", true),
            (AttachMode::Tc, "tc", false),
        ] {
            for (class, ns) in b.mx_classes(mode) {
                row(
                    format!("mxscreen {label}, {}", class.name()),
                    xdp,
                    class.drops(),
                    ns,
                );
            }
        }
    }
    if nft_only {
        println!("{}", nft_table(&rows));
        return;
    }
    let last = *floors.last().expect("a round");
    let random = random_sources(&mut b) + &random_nft(&mut b);
    let mixed = mixed_runs(&mut b, last);
    let mut table = tables(&b.p, &floors, &rows, &mixed);
    table.push_str(&random);
    println!("{table}");
    if !quick {
        record(
            "Drop (`cargo xtask bench drop`)",
            "cargo xtask bench drop",
            &table,
        );
    }
}

/// The nftables rows of a round (all of `--nft`'s): the hand-written set (dropping its
/// sources, passing another, given the promises) and every class through mxscreen's
/// nftables backend.
fn nft_rows(b: &mut Bench, row: &mut impl FnMut(String, bool, bool, Cost)) {
    let not_bpf = |cpu| Cost {
        cpu,
        prog: f64::NAN,
    };
    nft_up(&b.wire.server, SERVER_IFACE, &b.listed);
    let d = b.measure(&b.drop_frames);
    let p = b.measure(&b.pass_frames);
    nft_down(&b.wire.server);
    let accepting = Promises {
        accept: true,
        ..Promises::NONE
    };
    nft_up_promising(&b.wire.server, SERVER_IFACE, &b.listed, accepting);
    let a = b.measure(&b.accept_frames);
    nft_down(&b.wire.server);
    row(NFT_DROP.into(), false, true, not_bpf(d));
    row(NFT_PASS.into(), false, false, not_bpf(p));
    row(NFT_ACCEPT.into(), false, false, not_bpf(a));
    promise_rows(b, row);
    for (class, cost) in b.nft_classes() {
        row(
            format!("{NFT_MX} {}", class.name()),
            false,
            class.drops(),
            cost,
        );
    }
}

/// The hand-written set given, one at a time and then all together, what the backend
/// promises on every dropped SYN (timeouts, a named counter, a liveness check): what the
/// promises themselves cost, beside what the backend costs.
fn promise_rows(b: &mut Bench, row: &mut impl FnMut(String, bool, bool, Cost)) {
    let each = [
        Promises {
            timeouts: true,
            ..Promises::NONE
        },
        Promises {
            counter: true,
            ..Promises::NONE
        },
        Promises {
            alive: true,
            ..Promises::NONE
        },
        Promises::ALL,
        Promises {
            hits: true,
            ..Promises::ALL
        },
    ];
    for p in each {
        nft_up_promising(&b.wire.server, SERVER_IFACE, &b.listed, p);
        let d = b.measure(&b.drop_frames);
        nft_down(&b.wire.server);
        row(
            format!("{NFT_PROMISING} {}", p.name()),
            false,
            true,
            Cost {
                cpu: d,
                prog: f64::NAN,
            },
        );
    }
    // The same, its set holding every class's sources (as the backend's decision map does).
    // Interleaved, one source of each class in turn, as the backend's are written (MxNft).
    let by_class: Vec<Vec<IpAddr>> = Class::ALL
        .iter()
        .map(|c| class_sources(*c, b.p.sources))
        .collect();
    let every: Vec<IpAddr> = (0..b.p.sources as usize)
        .flat_map(|i| by_class.iter().map(move |c| c[i]))
        .collect();
    // The last two are the like-for-like rule of the backend's classes: every promise, every
    // class's sources, dropping (drop classes) or accepting (pass classes) what it finds.
    let like = Promises {
        hits: true,
        ..Promises::ALL
    };
    for p in [
        Promises::NONE,
        like,
        Promises {
            accept: true,
            ..like
        },
    ] {
        nft_up_promising(&b.wire.server, SERVER_IFACE, &every, p);
        let d = b.measure(if p.accept {
            &b.accept_frames
        } else {
            &b.drop_frames
        });
        nft_down(&b.wire.server);
        let with = if p == Promises::NONE {
            "nothing more".to_owned()
        } else {
            p.name()
        };
        let accepting = if p.accept { ", accepting them" } else { "" };
        row(
            format!(
                "{NFT_PROMISING} {with}, {EVERY} ({}){accepting}",
                every.len()
            ),
            false,
            !p.accept,
            Cost {
                cpu: d,
                prog: f64::NAN,
            },
        );
    }
}

/// `n` frames from distinct random sources in 2001:db8::/32 (fixed seed `seed`).
fn random_frames(n: u64, seed: u64) -> Vec<Vec<u8>> {
    random_frames_to(n, seed, false)
}

/// [`random_frames`], addressed to another host's MAC if `to_other_host` (what a receiver
/// passes, the stack discards at once: measured by CPU time, the receiver alone counts).
fn random_frames_to(n: u64, seed: u64, to_other_host: bool) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let mut low = 0u128;
        for _ in 0..2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            low = (low << 64) | u128::from(x);
        }
        let a = (0x2001_0db8u128 << 96) | (low & ((1u128 << 96) - 1));
        if seen.insert(a) {
            out.push(syn(IpAddr::V6(Ipv6Addr::from(a)), to_other_host));
        }
    }
    out
}

/// BPF run time per SYN of `ebpf`'s programs over one flood of `frames`.
fn run_ns(b: &Bench, ebpf: &aya::Ebpf, frames: &[Vec<u8>]) -> f64 {
    let stats = ProgramTime::enable();
    let (t0, n0) = stats.of(ebpf);
    b.flood.send(frames, frames.len() as u64, b.cpu);
    let (t1, n1) = stats.of(ebpf);
    (t1 - t0) as f64 / (n1 - n0).max(1) as f64
}

/// One flood of `frames` through `b.mx` in XDP with `events_per_s` as its event budget (the
/// ring drained before and after); BPF run time per SYN.
fn random_mx(b: &mut Bench, events_per_s: u32, frames: &[Vec<u8>]) -> f64 {
    let before = b.mx.maps.config().unwrap();
    let mut cfg = before;
    cfg.events_per_s = events_per_s;
    b.mx.maps.set_config(&cfg).unwrap();
    b.mx.attach(&b.wire.server, SERVER_IFACE, AttachMode::Xdp);
    b.mx.events.drain();
    let ns = run_ns(b, &b.mx.ebpf, frames);
    b.mx.events.drain();
    b.mx.detach();
    b.mx.maps.set_config(&before).unwrap();
    ns
}

/// The daemon's default event budget per CPU.
fn default_budget() -> u32 {
    mxscreen::config::Config::default().kernel().events_per_s
}

/// Rounds of the random-source class (interleaved runs).
fn random_rounds(p: &Params) -> usize {
    p.rounds.max(3)
}

/// The random-source class: every SYN from a new source (a spoofed flood), through
/// mxscreen in XDP with the daemon's default event budget, beside the bare LRU-insert
/// program and the drop-all floor, interleaved; BPF run time per SYN (kernel statistics).
fn random_sources(b: &mut Bench) -> String {
    let n = b.p.syns / 4;
    let (mut mx, mut lru, mut floor) = (Samples::default(), Samples::default(), Samples::default());
    for round in 0..random_rounds(&b.p) {
        let seed = 0x5eed_0000 + round as u64 * 3;
        let f = random_frames(n, seed);
        floor.push(b.with_reference(Program::DropAll, |b| run_ns(b, &b.reference.ebpf, &f)));
        let f = random_frames(n, seed + 1);
        lru.push(b.with_reference(Program::LruInsert, |b| run_ns(b, &b.reference.ebpf, &f)));
        let f = random_frames(n, seed + 2);
        mx.push(random_mx(b, default_budget(), &f));
    }
    let (m, l, d) = (mx.median(), lru.median(), floor.median());
    format!(
        "\nRandom-source class: {n} IPv6 SYNs per run, each from a new random source in 2001:db8::/32, {} interleaved runs; BPF program run time per SYN (kernel statistics), median [min … max]. mxscreen XDP with the daemon's default event budget ({} events/s per CPU).\n\n| program | ns per SYN | × bare LRU insert |\n|---|---:|---:|\n| XDP drop-all | {} | |\n| bare LRU-insert XDP program | {} | 1.00 |\n| mxscreen XDP, random sources | {} | {:.2} |\n",
        mx.0.len(),
        default_budget(),
        floor.show(false),
        lru.show(false),
        mx.show(false),
        m / l,
    ) + &format!("<!-- medians: mx {m:.0} lru {l:.0} drop-all {d:.0} -->\n")
}

/// The random-source class through nftables: the tc pass floor, the hand-written rule
/// remembering every new source (a dynamic set), and mxscreen's nftables backend with the
/// daemon's defaults for new peers (`first_contact = "hold"`, its event budget), each on a
/// flood of sources it has never seen, interleaved; ns of the sending CPU per SYN (no BPF
/// program to time), over the tc pass floor. The SYNs go to another host's MAC: whatever a
/// receiver passes, the stack discards at once.
fn random_nft(b: &mut Bench) -> String {
    let n = b.p.syns / 4;
    let mut cfg = b.nft.nft.config();
    let defaults = mxscreen::config::Config::default().kernel();
    cfg.flags = defaults.flags;
    cfg.hold_window_ns = defaults.hold_window_ns;
    cfg.dedup_window_ns = defaults.dedup_window_ns;
    cfg.events_per_s = defaults.events_per_s;
    let names = [
        "tc pass-all (floor)",
        "nftables netdev ingress, every new source into a dynamic set",
        "mxscreen nftables backend, random sources",
    ];
    let mut s: Vec<Samples> = names.iter().map(|_| Samples::default()).collect();
    for round in 0..random_rounds(&b.p) {
        let seed = 0x5eed_2000 + round as u64 * 3;
        let f = random_frames_to(n, seed, true);
        s[0].push(b.with_tc(TcProgram::PassAll, |b| {
            b.flood.send(&f, n, b.cpu).ns_per_frame()
        }));
        let f = random_frames_to(n, seed + 1, true);
        nft_remember_up(&b.wire.server, SERVER_IFACE, MapSizes::default().peers);
        s[1].push(b.flood.send(&f, n, b.cpu).ns_per_frame());
        nft_down(&b.wire.server);
        let f = random_frames_to(n, seed + 2, true);
        s[2].push(random_nft_mx(b, &cfg, &f, round == 0));
    }
    let floor = s[0].median();
    let over = |x: &Samples| x.median() - floor;
    let mut out = format!(
        "\nRandom-source class through nftables: {n} IPv6 SYNs per run, each from a new random source in 2001:db8::/32, {} interleaved runs; ns of the sending CPU per SYN, median [min … max], and the median over the tc pass floor's. mxscreen's backend with the daemon's defaults for new peers (hold, {} reports/s) and every class's entries loaded.\n\n| receiver | ns per SYN | over the tc pass floor | × the hand-written rule |\n|---|---:|---:|---:|\n",
        s[0].0.len(),
        cfg.events_per_s
    );
    for (i, (name, x)) in names.iter().zip(&s).enumerate() {
        let (o, r) = if i == 0 {
            (String::new(), String::new())
        } else {
            (
                format!("{:+.1}", over(x)),
                format!("{:.2}", over(x) / over(&s[1])),
            )
        };
        out.push_str(&format!("| {name} | {} | {o} | {r} |\n", x.show(false)));
    }
    out
}

/// One flood of `frames` through mxscreen's nftables backend with `cfg`, its per-source
/// sets emptied first (every source new to it), the bench's config restored after; ns of
/// the sending CPU per SYN. `tell`: print what the table decided (stderr).
fn random_nft_mx(
    b: &mut Bench,
    cfg: &filter_common::DatapathConfig,
    frames: &[Vec<u8>],
    tell: bool,
) -> f64 {
    let before = b.nft.nft.config();
    b.nft.nft.set_config(cfg).unwrap();
    b.nft.forget_sources(&b.wire.server);
    b.nft.attach(SERVER_IFACE);
    // As in nft_classes: the rewrite's deferred work out of the measurement.
    std::thread::sleep(Duration::from_secs(2));
    b.nft.drain();
    let counted = [
        Counter::Held,
        Counter::Unknown,
        Counter::EventsEmitted,
        Counter::EventsOverBudget,
        Counter::EventsLost,
        Counter::PassedStale,
    ];
    let c0: Vec<u64> = counted.iter().map(|c| b.nft.counter(*c)).collect();
    let ns = b
        .flood
        .send(frames, frames.len() as u64, b.cpu)
        .ns_per_frame();
    if tell {
        let moved: Vec<String> = counted
            .iter()
            .zip(&c0)
            .map(|(c, v)| format!("{c:?} {}", b.nft.counter(*c) - v))
            .collect();
        eprintln!(
            "nftables random sources, {} SYNs: {}",
            frames.len(),
            moved.join(", ")
        );
    }
    b.nft.drain();
    b.nft.detach();
    b.nft.nft.set_config(&before).unwrap();
    ns
}

/// `--random`: the random-source class and where its time goes — the same floods through
/// mxscreen with every class's entries (as measured), with none (no list to walk, no verdict),
/// and with an event budget of one per second (no event written), interleaved.
fn random_breakdown(b: &mut Bench) -> String {
    let n = b.p.syns / 4;
    let mut empty = Mx::load(|_| Vec::new(), 0);
    let names = [
        "bare LRU-insert XDP program",
        "mxscreen XDP, every class's entries, default budget",
        "mxscreen XDP, every class's entries, 1 event/s",
        "mxscreen XDP, no entries, default budget",
        "mxscreen XDP, no entries, 1 event/s",
    ];
    let mut samples: Vec<Samples> = names.iter().map(|_| Samples::default()).collect();
    for round in 0..random_rounds(&b.p) {
        let seed = 0x5eed_1000 + round as u64 * 8;
        let f = random_frames(n, seed);
        samples[0].push(b.with_reference(Program::LruInsert, |b| run_ns(b, &b.reference.ebpf, &f)));
        for (i, budget, swap) in [
            (1, default_budget(), false),
            (2, 1, false),
            (3, default_budget(), true),
            (4, 1, true),
        ] {
            let f = random_frames(n, seed + i as u64);
            if swap {
                std::mem::swap(&mut b.mx, &mut empty);
            }
            samples[i].push(random_mx(b, budget, &f));
            if swap {
                std::mem::swap(&mut b.mx, &mut empty);
            }
        }
    }
    let bare = samples[0].median();
    let mut out = format!(
        "\nRandom-source breakdown: {n} IPv6 SYNs per run from new random sources, {} interleaved runs; BPF run time per SYN, median [min … max].\n\n| program | ns per SYN | × bare LRU insert |\n|---|---:|---:|\n",
        samples[0].0.len()
    );
    for (name, s) in names.iter().zip(&samples) {
        out.push_str(&format!(
            "| {name} | {} | {:.2} |\n",
            s.show(false),
            s.median() / bare
        ));
    }
    out
}

const BARE_DROP: &str = "bare one-hash-lookup XDP program, listed source: drop";
const BARE_PASS: &str = "bare one-hash-lookup XDP program, listed source: pass";
const NFT_DROP: &str = "nftables netdev ingress, set of the sources";
const NFT_PASS: &str = "nftables netdev ingress, source not in the set: pass";
const NFT_ACCEPT: &str = "nftables netdev ingress, set of the sources, accepting them";
/// The promise rows whose set holds every class's sources, as the backend's decision map.
const EVERY: &str = "every class's sources in it";
const NFT_PROMISING: &str = "nftables netdev ingress, set of the sources, with";
const NFT_MX: &str = "mxscreen nftables backend,";

/// One receiver's mixed run.
struct Mixed {
    name: String,
    /// All CPU time (the flood's sender, the clean connector, both CPUs' softirqs) per
    /// flood SYN: the clean senders' softirqs also handle flood frames, so only the total
    /// is meaningful.
    total: f64,
    attempted: usize,
    completed: usize,
    connect_p50: Duration,
    connect_max: Duration,
}

/// Each receiver flooded while clean senders connect for real, at 1 % of the SYN rate.
fn mixed_runs(b: &mut Bench, floors: Floors) -> Vec<Mixed> {
    let clean: Vec<String> = (0..CLEAN).map(|i| format!("2001:db8:1::c{i:x}")).collect();
    for a in &clean {
        b.wire.add_client_addr(a);
    }
    let dst: SocketAddr = format!("[{SERVER_V6}]:25").parse().unwrap();
    let listener = b
        .wire
        .server
        .enter(|| TcpListener::bind(dst).expect("listen"));
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let mut out = Vec::new();
    let names = [
        "bare one-hash-lookup XDP program",
        "nftables netdev ingress set",
        "ip6tables raw + ipset",
        "mxscreen XDP, cached verdict drop",
        "mxscreen tc, cached verdict drop",
        "mxscreen nftables backend, cached verdict drop",
    ];
    for (i, name) in names.into_iter().enumerate() {
        let link = match i {
            0 => Some(
                b.wire
                    .server
                    .enter(|| b.reference.attach(Program::HashDrop, SERVER_IFACE)),
            ),
            1 => {
                nft_up(&b.wire.server, SERVER_IFACE, &b.listed);
                None
            }
            2 => {
                ipset_up(&b.wire.server, SERVER_IFACE, &b.listed);
                None
            }
            3 => {
                b.mx.attach(&b.wire.server, SERVER_IFACE, AttachMode::Xdp);
                None
            }
            4 => {
                b.mx.attach(&b.wire.server, SERVER_IFACE, AttachMode::Tc);
                None
            }
            _ => {
                b.nft.attach(SERVER_IFACE);
                None
            }
        };
        b.mx.events.drain();
        // Paced at 1 % of the flood's rate on this receiver's path.
        let floor = floors.of(i == 0 || i == 3, true).cpu;
        let connections = (b.p.syns / 100) as usize;
        let interval = Duration::from_nanos((floor * 100.0) as u64);
        let wire_client = b.wire.client.name.clone();
        let clean_srcs = clean.clone();
        let connector = std::thread::spawn(move || {
            connect_paced(&wire_client, &clean_srcs, dst, connections, interval)
        });
        let softirq0 = softirqd_ns(0);
        let cost = b.flood.send(&b.drop_frames.flood, b.p.syns, b.cpu);
        let (mut times, connector_ns) = connector.join().expect("connector");
        let total =
            (cost.cpu_ns + connector_ns + softirqd_ns(0) - softirq0) as f64 / cost.frames as f64;
        match i {
            0 => b.reference.detach(Program::HashDrop, link.unwrap()),
            1 => nft_down(&b.wire.server),
            2 => ipset_down(&b.wire.server),
            5 => b.nft.detach(),
            _ => b.mx.detach(),
        }
        let attempted = times.len();
        times.retain(|t| t.is_some());
        let mut ok: Vec<Duration> = times.into_iter().flatten().collect();
        ok.sort();
        let m = Mixed {
            name: name.into(),
            total,
            attempted,
            completed: ok.len(),
            connect_p50: ok.get(ok.len() / 2).copied().unwrap_or_default(),
            connect_max: ok.last().copied().unwrap_or_default(),
        };
        assert_eq!(
            m.completed, m.attempted,
            "{name}: clean connections failed during the flood"
        );
        out.push(m);
    }
    out
}

/// `n` connections from the clean sources, one per `interval`, each timed (`None`: failed);
/// and the CPU time the connecting thread took.
fn connect_paced(
    ns_name: &str,
    sources: &[String],
    dst: SocketAddr,
    n: usize,
    interval: Duration,
) -> (Vec<Option<Duration>>, u64) {
    pin(0);
    let cpu0 = thread_cpu_ns();
    let ns = std::fs::File::open(format!("/run/netns/{ns_name}")).expect("client netns");
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let start = Instant::now();
    let times = (0..n)
        .map(|k| {
            let at = start + interval * k as u32;
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let src: IpAddr = sources[k % sources.len()].parse().unwrap();
            let t = Instant::now();
            let sock =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).ok()?;
            sock.bind(&SocketAddr::new(src, 0).into()).ok()?;
            sock.connect_timeout(&dst.into(), Duration::from_secs(3))
                .ok()?;
            Some(t.elapsed())
        })
        .collect();
    (times, thread_cpu_ns() - cpu0)
}

fn tables(p: &Params, floors: &[Floors], rows: &[Row], mixed: &[Mixed]) -> String {
    let bare = |drops: bool, prog: bool| {
        let name = if drops { BARE_DROP } else { BARE_PASS };
        rows.iter().find(|r| r.name == name).map_or(f64::NAN, |r| {
            if prog {
                r.prog.median()
            } else {
                r.over.median()
            }
        })
    };
    let mut t = format!(
        "{} SYNs per measurement to port 25 from {} listed IPv6 sources, {} interleaved rounds. Cost per SYN: ns of the sending CPU (the sender and the receive softirq it runs), median of the rounds; over its floor: median [min … max] of the rounds, XDP receivers over the XDP floor, the others over tc's, passed SYNs over the pass floors; × bare: over-floor median over the bare program's, which finds every source in a table of the size of mxscreen's per-source map (drop classes against the program that drops on a hit, pass classes against the one that passes). mxscreen holds every class at once: {} sources each, a {}-prefix feed.\n\n",
        p.syns, p.sources, p.rounds, p.sources, p.feed
    );
    t.push_str("The program columns: the BPF program's own run time per SYN (kernel BPF statistics, a quarter as many SYNs again, measured separately), over the floor program's on the same path, and that over the bare program's.\n\n");
    t.push_str(
        "| receiver | SYNs | ns per SYN | over its floor | × bare | program ns over the floor program's | × bare (program) |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let picks: [(&str, Pick); 4] = [
        ("XDP drop-all (floor)", |f| f.xdp_drop),
        ("XDP pass-all (floor)", |f| f.xdp_pass),
        ("tc drop-all (floor)", |f| f.tc_drop),
        ("tc pass-all (floor)", |f| f.tc_pass),
    ];
    for (name, pick) in picks {
        let s = Samples(floors.iter().map(|f| pick(f).cpu).collect());
        let prog = Samples(floors.iter().map(|f| pick(f).prog).collect());
        let what = if name.contains("drop") {
            "dropped"
        } else {
            "passed"
        };
        t.push_str(&format!(
            "| {name} | {what} | {} | | | program itself: {:.1} ns | |\n",
            s.show(false),
            prog.median()
        ));
    }
    for r in rows {
        let (prog, prog_ratio) = if r.prog.0.is_empty() {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                r.prog.show(true),
                format!("{:.2}", r.prog.median() / bare(r.drops, true)),
            )
        };
        t.push_str(&format!(
            "| {} | {} | {:.1} | {} | {:.2} | {prog} | {prog_ratio} |\n",
            r.name,
            if r.drops { "dropped" } else { "passed" },
            r.abs.median(),
            r.over.show(true),
            r.over.median() / bare(r.drops, false)
        ));
    }
    t.push_str(&nft_table(rows));
    t.push_str("\nMixed: the same flood of listed SYNs while clean senders connect for real, from another CPU, at 1 % of its SYN rate (one run). The CPU time is all of it (flood sender, clean connector, both CPUs' softirqs) per flood SYN: the connector's softirqs also take flood frames off the veth, so no part of it alone is meaningful.\n\n| receiver | ns per flood SYN, all CPU | clean connections completed | connect time p50 / max |\n|---|---:|---:|---:|\n");
    for m in mixed {
        t.push_str(&format!(
            "| {} | {:.1} | {} of {} | {:.0?} / {:.0?} |\n",
            m.name, m.total, m.completed, m.attempted, m.connect_p50, m.connect_max
        ));
    }
    t
}

/// mxscreen's nftables backend against the hand-written nftables set, class by class: the
/// over-floor cost over the set's, per round and its median — drop classes against the set
/// dropping its sources, pass classes against it passing a source it does not hold (the
/// issue's measure); then of the medians, pass classes against the set finding the source
/// and accepting it (as the XDP classes are measured against a bare program that finds
/// every source), and every class against the same one rule given what the backend keeps
/// (its promises, hit counts, every class's sources in one set): what the backend's
/// structure costs beyond them.
fn nft_table(rows: &[Row]) -> String {
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let (Some(hd), Some(hp)) = (find(NFT_DROP), find(NFT_PASS)) else {
        return String::new();
    };
    let ha = find(NFT_ACCEPT);
    let like = |drops: bool| {
        rows.iter().find(|r| {
            r.name.starts_with(NFT_PROMISING)
                && r.name.contains(EVERY)
                && r.name.contains("a counter per element")
                && r.drops == drops
        })
    };
    let ratio = |r: &Row, of: Option<&Row>| {
        of.map_or("—".to_owned(), |o| {
            format!("{:.2}", r.over.median() / o.over.median())
        })
    };
    let mut t = String::from(
        "\nmxscreen's nftables backend against the hand-written set (`nftables netdev ingress`, one rule, one set lookup): its cost over the tc floor divided by the set's, per round (median [min … max]) and of the medians — drop classes against the set dropping its sources, pass classes against it passing a source it does not hold; then (medians) pass classes against the set finding the source and accepting it, and every class against the same rule given every promise, hit counts and every class's sources in its set (dropping or accepting): the like-for-like rule.\n\n| class | SYNs | over the tc floor | hand-written set, same SYNs | × hand-written (per round) | × hand-written (medians) | × the set finding it (medians) | × like-for-like rule (medians) |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows
        .iter()
        .filter(|r| r.name.starts_with(NFT_MX) || r.name.starts_with(NFT_PROMISING))
    {
        let hw = if r.drops { hd } else { hp };
        let per_round = Samples(
            r.over
                .0
                .iter()
                .zip(&hw.over.0)
                .map(|(a, b)| a / b)
                .collect(),
        );
        let mx = r.name.starts_with(NFT_MX);
        t.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} [{:.2} … {:.2}] | {:.2} | {} | {} |\n",
            r.name
                .strip_prefix(NFT_MX)
                .map(str::trim)
                .map(str::to_owned)
                .unwrap_or_else(|| format!(
                    "hand-written set, with {}",
                    r.name.trim_start_matches(NFT_PROMISING).trim()
                )),
            if r.drops { "dropped" } else { "passed" },
            r.over.show(true),
            hw.over.show(true),
            per_round.median(),
            per_round.min(),
            per_round.max(),
            r.over.median() / hw.over.median(),
            ratio(r, if r.drops { Some(hd) } else { ha }),
            if mx {
                ratio(r, like(r.drops))
            } else {
                "—".to_owned()
            },
        ));
    }
    t
}
