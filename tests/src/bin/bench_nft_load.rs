//! `cargo xtask bench nft-load [--quick]`: how to write nftables elements, measured — the
//! choice of the nftables backend's transport. Each way, in a network namespace of its own
//! holding the same table (verdict maps with timeouts and counters, one verdict map per
//! prefix length of the feed), in one run:
//!
//! - loading a million-prefix feed (the drop benchmark's: /56s and /64s in
//!   2001:db8:8000::/33): wall time, CPU (this process and its children, kernel time
//!   included), and the kernel memory it took (Slab + Percpu + VmallocUsed of /proc/meminfo,
//!   before and after; the machine's other work makes this a few MiB noisy);
//! - writing 1,000 verdicts, one per millisecond, each with a timeout (as the daemon writes
//!   them, one at a time): CPU per write, latency p50/p99, and the rate reached.
//!
//! Ways: netlink messages built in process (`netlink-packet-netfilter`, mxscreen's backend);
//! the `nft` program with a text script on stdin; the `nftables` crate (typed JSON through
//! `nft -j -f -`). Then, for the feed alone, an interval set (one rbtree for the whole feed,
//! what nftables users usually write) loaded by `nft -f`, for its load time and memory.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use mxscreen::nftables::netlink::{Elem, Netlink, Op};
use mxscreen_tests::{
    bench::{SPREAD_LENGTHS, record, settled_kib, spread_feed_v4},
    netns::NetNs,
    receivers::run_in,
};

const TABLE: &str = "mxbench";

struct Params {
    feed: usize,
    verdicts: usize,
}

const FULL: Params = Params {
    feed: 1_000_000,
    verdicts: 1000,
};
const QUICK: Params = Params {
    feed: 20_000,
    verdicts: 100,
};

/// The feed: `n` prefixes, a quarter /56s below 2001:db8:c000::, the rest /64s above.
fn feed(n: usize) -> Vec<(u128, u8)> {
    let base = 0x2001_0db8_8000_0000_0000_0000_0000_0000u128;
    (0..n as u128)
        .map(|i| {
            if i.is_multiple_of(4) {
                (base | ((i / 4) << 72), 56)
            } else {
                (base | (1u128 << 94) | (i << 64), 64)
            }
        })
        .collect()
}

fn verdict_sources(n: usize) -> Vec<Ipv6Addr> {
    (0..n)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0xa0, 0, 0, 0, (i >> 16) as u16, i as u16 + 1))
        .collect()
}

/// A feed's element: `key` to the feed's chain.
fn to_feed(key: Vec<u8>) -> Elem {
    let mut e = Elem::key(key);
    e.goto = Some("feed_1".into());
    e
}

/// The table every way writes into (the feed's maps unsized, as the backend declares them).
fn table(ns: &NetNs, interval: bool) {
    let mut s = format!(
        "table netdev {TABLE} {{\n  chain feed_1 {{ drop; }}\n  chain v_drop {{ drop; }}\n  map verdict6 {{ type ipv6_addr : verdict; flags timeout; counter; size 1048576; }}\n"
    );
    if interval {
        s.push_str("  set feed6 { type ipv6_addr; flags interval; size 2097152; }\n");
    } else {
        for len in [56, 64] {
            let _ = writeln!(s, "  map feed6_{len} {{ type ipv6_addr : verdict; }}");
        }
    }
    s.push_str("}\n");
    run_in(ns, "nft", &["-f", "-"], &s);
}

/// CPU ns of this process and its waited-for children (user and kernel).
fn cpu_ns() -> u64 {
    let ns = |who| {
        // SAFETY: getrusage fills the zeroed struct.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to an rusage.
        unsafe { libc::getrusage(who, &raw mut r) };
        let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        t(r.ru_utime) + t(r.ru_stime)
    };
    ns(libc::RUSAGE_SELF) + ns(libc::RUSAGE_CHILDREN)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Netlink,
    NftText,
    NftJson,
}

impl Way {
    const fn name(self) -> &'static str {
        match self {
            Way::Netlink => "netlink in process (netlink-packet-netfilter)",
            Way::NftText => "nft -f - (text script)",
            Way::NftJson => "nftables crate (JSON, nft -j -f -)",
        }
    }
}

/// One way's writer, in its namespace.
struct Writer {
    way: Way,
    ns: NetNs,
    nl: Option<Netlink>,
}

impl Writer {
    fn new(way: Way, tag: &str) -> Self {
        let ns = NetNs::new(tag);
        table(&ns, false);
        let nl = (way == Way::Netlink).then(|| ns.enter(|| Netlink::open(TABLE)).unwrap());
        Self { way, ns, nl }
    }

    fn load_feed(&mut self, prefixes: &[(u128, u8)]) {
        match self.way {
            Way::Netlink => {
                let mut by_len: Vec<Op> = Vec::new();
                for len in [56u8, 64] {
                    let elems = prefixes
                        .iter()
                        .filter(|p| p.1 == len)
                        .map(|(a, _)| to_feed(a.to_be_bytes().to_vec()))
                        .collect();
                    by_len.push(Op::Add(format!("feed6_{len}"), elems));
                }
                self.nl.as_mut().unwrap().apply(&by_len).unwrap();
            }
            Way::NftText => {
                let mut s = String::new();
                for len in [56u8, 64] {
                    let _ = write!(s, "add element netdev {TABLE} feed6_{len} {{ ");
                    for (a, _) in prefixes.iter().filter(|p| p.1 == len) {
                        let _ = write!(s, "{} : goto feed_1, ", Ipv6Addr::from(*a));
                    }
                    s.push_str("}\n");
                }
                run_in(&self.ns, "nft", &["-f", "-"], &s);
            }
            Way::NftJson => {
                let mut cmds = Vec::new();
                for len in [56u8, 64] {
                    let elems: Vec<_> = prefixes
                        .iter()
                        .filter(|p| p.1 == len)
                        .map(|(a, _)| map_elem(IpAddr::V6(Ipv6Addr::from(*a)), None, "feed_1"))
                        .collect();
                    cmds.push(element(&format!("feed6_{len}"), elems));
                }
                self.json(cmds);
            }
        }
    }

    fn verdict(&mut self, ip: Ipv6Addr) {
        match self.way {
            Way::Netlink => {
                let key = ip.octets().to_vec();
                let elem = Elem {
                    key: key.clone(),
                    goto: Some("v_drop".into()),
                    timeout_ms: Some(3_600_000),
                    userdata: vec![3],
                    stateful: Vec::new(),
                };
                // As the backend writes one: the old element (if any) out, the new one in.
                let ops = [
                    Op::Destroy("verdict6".into(), vec![Elem::key(key)]),
                    Op::Add("verdict6".into(), vec![elem]),
                ];
                self.nl.as_mut().unwrap().apply(&ops).unwrap();
            }
            Way::NftText => {
                let s = format!(
                    "add element netdev {TABLE} verdict6 {{ {ip} timeout 3600s : goto v_drop }}\n"
                );
                run_in(&self.ns, "nft", &["-f", "-"], &s);
            }
            Way::NftJson => {
                let e = map_elem(IpAddr::V6(ip), Some(3600), "v_drop");
                self.json(vec![element("verdict6", vec![e])]);
            }
        }
    }

    /// Applies commands through the nftables crate, in the namespace.
    fn json(&self, cmds: Vec<nftables::schema::NfObject<'static>>) {
        let doc = nftables::schema::Nftables {
            objects: cmds.into(),
        };
        self.ns
            .enter(|| nftables::helper::apply_ruleset(&doc))
            .expect("nft -j -f -");
    }
}

fn map_elem(ip: IpAddr, timeout: Option<u32>, chain: &str) -> nftables::expr::Expression<'static> {
    use nftables::{
        expr::{Elem as JElem, Expression, NamedExpression, Verdict},
        stmt::JumpTarget,
    };
    let key = Expression::Named(NamedExpression::Elem(JElem {
        val: Box::new(Expression::String(ip.to_string().into())),
        timeout,
        expires: None,
        comment: None,
        counter: None,
    }));
    Expression::List(vec![
        key,
        Expression::Verdict(Verdict::Goto(JumpTarget {
            target: chain.to_owned().into(),
        })),
    ])
}

fn element(
    set: &str,
    elems: Vec<nftables::expr::Expression<'static>>,
) -> nftables::schema::NfObject<'static> {
    use nftables::schema::{Element, NfCmd, NfListObject, NfObject};
    NfObject::CmdObject(NfCmd::Add(NfListObject::Element(Element {
        family: nftables::types::NfFamily::NetDev,
        table: TABLE.into(),
        name: set.to_owned().into(),
        elem: elems.into(),
    })))
}

struct Result1 {
    name: &'static str,
    load: Duration,
    load_cpu: Duration,
    mem_kib: i64,
    write_cpu_us: f64,
    p50: Duration,
    p99: Duration,
    rate: f64,
}

fn measure(way: Way, p: &Params, prefixes: &[(u128, u8)], tag: &str) -> (Result1, Writer) {
    let mut w = Writer::new(way, tag);
    let m0 = settled_kib();
    let (c0, t0) = (cpu_ns(), Instant::now());
    w.load_feed(prefixes);
    let (load, load_cpu) = (t0.elapsed(), cpu_ns() - c0);
    let mem = settled_kib() as i64 - m0 as i64;
    let sources = verdict_sources(p.verdicts);
    let mut lat = Vec::with_capacity(sources.len());
    let (c0, start) = (cpu_ns(), Instant::now());
    for (i, ip) in sources.iter().enumerate() {
        let at = start + Duration::from_millis(i as u64);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        w.verdict(*ip);
        lat.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let cpu = cpu_ns() - c0;
    lat.sort();
    let r = Result1 {
        name: way.name(),
        load,
        load_cpu: Duration::from_nanos(load_cpu),
        mem_kib: mem,
        write_cpu_us: cpu as f64 / 1000.0 / sources.len() as f64,
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        rate: sources.len() as f64 / elapsed.as_secs_f64(),
    };
    (r, w)
}

/// The feed as one interval set, loaded by `nft -f`: time and memory.
fn interval(prefixes: &[(u128, u8)]) -> (Duration, i64, NetNs) {
    let ns = NetNs::new("nli");
    table(&ns, true);
    let mut s = format!("add element netdev {TABLE} feed6 {{ ");
    for (a, l) in prefixes {
        let _ = write!(s, "{}/{l}, ", Ipv6Addr::from(*a));
    }
    s.push_str("}\n");
    let (m0, t0) = (settled_kib(), Instant::now());
    run_in(&ns, "nft", &["-f", "-"], &s);
    let took = t0.elapsed();
    (took, settled_kib() as i64 - m0 as i64, ns)
}

/// The feed of [`spread_feed_v4`], one map per length declared `decl` (`""`, or the lists'
/// size as the backend declared them before), loaded over netlink: its load time and kernel
/// memory.
fn spread(decl: &str, tag: &str) -> (Duration, i64, NetNs) {
    let ns = NetNs::new(tag);
    let mut s = format!("table netdev {TABLE} {{\n  chain feed_1 {{ drop; }}\n");
    for len in SPREAD_LENGTHS {
        let _ = writeln!(
            s,
            "  map feed4_{len} {{ type ipv4_addr : verdict; {decl} }}"
        );
    }
    s.push_str("}\n");
    // From before the maps are made: a sized one allocates its buckets then.
    let m0 = settled_kib();
    run_in(&ns, "nft", &["-f", "-"], &s);
    let mut nl = ns.enter(|| Netlink::open(TABLE)).unwrap();
    let feed = spread_feed_v4();
    let ops: Vec<Op> = SPREAD_LENGTHS
        .map(|len| {
            let elems = feed
                .iter()
                .filter(|p| p.1 == len)
                .map(|(a, _)| to_feed(a.to_be_bytes().to_vec()))
                .collect();
            Op::Add(format!("feed4_{len}"), elems)
        })
        .collect();
    let t0 = Instant::now();
    nl.apply(&ops).unwrap();
    let took = t0.elapsed();
    (took, settled_kib() as i64 - m0 as i64, ns)
}

fn main() {
    // The commit measured is the one this run starts from.
    let _ = mxscreen_tests::bench::commit();
    let quick = std::env::args().any(|a| a == "--quick");
    let p = if quick { QUICK } else { FULL };
    let prefixes = feed(p.feed);
    let mut rows = Vec::new();
    // Every namespace lives to the end: one deleted frees its table in the background, for
    // seconds, and that would be counted against the next measurement's memory.
    let mut kept: Vec<NetNs> = Vec::new();
    for (way, tag) in [
        (Way::Netlink, "nln"),
        (Way::NftText, "nlt"),
        (Way::NftJson, "nlj"),
    ] {
        eprintln!("{}", way.name());
        let (row, writer) = measure(way, &p, &prefixes, tag);
        rows.push(row);
        kept.push(writer.ns);
    }
    let (ilen, imem, ins) = interval(&prefixes);
    kept.push(ins);
    let mut t = format!(
        "A {}-prefix feed (/56s and /64s) into one verdict map per length, then {} verdicts written one at a time, one per millisecond, each with a timeout, into a verdict map with timeouts and counters: per way, in a namespace of its own. CPU: this process and its children, kernel time included. Kernel memory: Slab + Percpu + VmallocUsed of /proc/meminfo after the load, less before, each read once it stopped moving (machine-wide: a few MiB of noise).\n\n| way | feed load | its CPU | kernel memory | CPU per verdict write | write latency p50 / p99 | verdicts per second reached |\n|---|---:|---:|---:|---:|---:|---:|\n",
        p.feed, p.verdicts
    );
    for r in &rows {
        let _ = writeln!(
            t,
            "| {} | {:.2?} | {:.2?} | {:.0} MiB | {:.0} µs | {:.0?} / {:.0?} | {:.0} |",
            r.name,
            r.load,
            r.load_cpu,
            r.mem_kib as f64 / 1024.0,
            r.write_cpu_us,
            r.p50,
            r.p99,
            r.rate
        );
    }
    let _ = writeln!(
        t,
        "\nThe same feed as one interval set (an rbtree, `flags interval`), loaded by `nft -f`: {ilen:.2?}, {:.0} MiB of kernel memory.",
        imem as f64 / 1024.0
    );
    let n = spread_feed_v4().len();
    let _ = writeln!(
        t,
        "\nA feed spread over {} prefix lengths (IPv4 /{}–/{}, {n} prefixes: real feeds' shape), a map per length, loaded over netlink:\n\n| the feed's maps | load | kernel memory |\n|---|---:|---:|",
        SPREAD_LENGTHS.count(),
        SPREAD_LENGTHS.start(),
        SPREAD_LENGTHS.end()
    );
    for (name, decl, tag) in [
        (
            "unsized: the resizable hash, grown with its elements (the backend's)",
            "",
            "nls",
        ),
        (
            "sized for the lists (`size 1114112`): the fixed hash, its buckets allocated whole",
            "size 1114112;",
            "nlz",
        ),
    ] {
        let (took, mem, sns) = spread(decl, tag);
        kept.push(sns);
        let _ = writeln!(
            t,
            "| {name} | {took:.2?} | {:.1} MiB |",
            mem as f64 / 1024.0
        );
    }
    println!("{t}");
    if !quick {
        record(
            "nftables element writes (`cargo xtask bench nft-load`)",
            "cargo xtask bench nft-load",
            &t,
        );
    }
}
