//! `cargo run --release -p mxscreen-tests --bin bench_nft_parts`: what each part of the path
//! of mxscreen's nftables backend costs per SYN, against the hand-written one-rule set of
//! `bench drop` (BENCHMARKS.md, "nftables backend"). Each variant is a table of its own on
//! the server's netdev ingress, built up one part at a time, flooded with SYNs from 4,096
//! sources spread over 2001:db8::/32 (all in the table: dropped; or, for the pass variants,
//! none of them in the decision map and all in the cache of unknown sources; or, for the
//! walk, in none of its maps), 5 interleaved rounds; prints ns of
//! the sending CPU per SYN, median [min … max], and the median over the first variant's
//! (an nftables drop of every SYN to port 25: the hook, the rule and the drop).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr},
};

use mxscreen_tests::{
    flood::Flood,
    netns::{SERVER_IFACE, Wire},
    packets::Frame,
    receivers::run_in,
};

const SOURCES: u16 = 4096;
const SYNS: u64 = 200_000;
const ROUNDS: usize = 5;
/// A MAC that is not the server's: what the server passes, its stack drops at once.
const OTHER_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
/// The hand-written set's match: TCP SYN without ACK to port 25.
const SYN25: &str = "meta l4proto tcp tcp dport 25 tcp flags & (syn | ack) == syn";
/// The backend's ingress rules (one per family) before a subject chain.
const INGRESS: &str = "meta protocol ip tcp flags & (syn | ack) == syn tcp dport 25 goto s4\nmeta protocol ip6 tcp flags & (syn | ack) == syn tcp dport 25 goto s6\ncounter";
/// The backend's refusing chain: the heartbeat check, the outcome counter, the drop.
const REFUSE: &str = "chain stale { accept }\nchain d { meta l4proto != @alive goto stale\ncounter name \"c\" drop }";
const ALIVE: &str =
    "counter c { }\nset alive { type inet_proto; flags timeout; elements = { tcp timeout 1h } }";

/// A variant: its name, whether its SYNs pass, and its table's declarations and ingress rules
/// (`{E}` stands for the sources as set elements, `{V}` as verdict map elements).
struct Variant {
    name: &'static str,
    passes: bool,
    decls: &'static str,
    ingress: &'static str,
}

const fn v(name: &'static str, decls: &'static str, ingress: &'static str) -> Variant {
    Variant {
        name,
        passes: false,
        decls,
        ingress,
    }
}

const VARIANTS: &[Variant] = &[
    v("drop every SYN to port 25 (no lookup)", "", "SYN25 drop"),
    v(
        "hand-written set (one rule, plain hash set)",
        "set l { type ipv6_addr; size 65536; elements = { E } }",
        "SYN25 ip6 saddr @l drop",
    ),
    v(
        "+ flags timeout (resizable hash)",
        "set l { type ipv6_addr; flags timeout; size 65536; elements = { E } }",
        "SYN25 ip6 saddr @l drop",
    ),
    v(
        "+ flags timeout, a counter per element",
        "set l { type ipv6_addr; flags timeout; counter; size 65536; elements = { E } }",
        "SYN25 ip6 saddr @l drop",
    ),
    v(
        "verdict map (timeout) to a dropping chain",
        "chain d { drop }\nmap l { type ipv6_addr : verdict; flags timeout; size 65536; elements = { V } }",
        "SYN25 ip6 saddr vmap @l",
    ),
    v(
        "verdict map (timeout), the chain checks the heartbeat",
        "set alive { type inet_proto; flags timeout; elements = { tcp timeout 1h } }\nchain stale { accept }\nchain d { meta l4proto != @alive goto stale\ndrop }\nmap l { type ipv6_addr : verdict; flags timeout; size 65536; elements = { V } }",
        "SYN25 ip6 saddr vmap @l",
    ),
    v(
        "verdict map (timeout), the chain counts (named counter)",
        "counter c { }\nchain d { counter name \"c\" drop }\nmap l { type ipv6_addr : verdict; flags timeout; size 65536; elements = { V } }",
        "SYN25 ip6 saddr vmap @l",
    ),
    v(
        "verdict map (timeout, counter per element), heartbeat, named counter",
        "ALIVE\nREFUSE\nmap l { type ipv6_addr : verdict; flags timeout; counter; size 65536; elements = { V } }",
        "SYN25 ip6 saddr vmap @l",
    ),
    v(
        "the backend's decided drop: + its ingress rules and subject chain",
        "ALIVE\nREFUSE\nmap l { type ipv6_addr : verdict; flags timeout; counter; size 65536; elements = { V } }\nchain s4 { }\nchain s6 { ip6 saddr vmap @l }",
        "INGRESS",
    ),
    v(
        "the same, the IPv6 ingress rule first",
        "ALIVE\nREFUSE\nmap l { type ipv6_addr : verdict; flags timeout; counter; size 65536; elements = { V } }\nchain s4 { }\nchain s6 { ip6 saddr vmap @l }",
        "meta protocol ip6 tcp flags & (syn | ack) == syn tcp dport 25 goto s6\nmeta protocol ip tcp flags & (syn | ack) == syn tcp dport 25 goto s4",
    ),
    v(
        "the same, the lookup in the ingress rule (no subject chain)",
        "ALIVE\nREFUSE\nmap l { type ipv6_addr : verdict; flags timeout; counter; size 65536; elements = { V } }\nchain s4 { }",
        "meta protocol ip tcp flags & (syn | ack) == syn tcp dport 25 goto s4\nmeta protocol ip6 tcp flags & (syn | ack) == syn tcp dport 25 ip6 saddr vmap @l",
    ),
    v(
        "the same, one ingress rule dispatching by protocol",
        "ALIVE\nREFUSE\nmap l { type ipv6_addr : verdict; flags timeout; counter; size 65536; elements = { V } }\nchain s4 { }\nchain s6 { ip6 saddr vmap @l }",
        "SYN25 meta protocol vmap { ip : goto s4, ip6 : goto s6 }",
    ),
    Variant {
        name: "pass: hand-written set, source not in it",
        passes: true,
        decls: "set l { type ipv6_addr; size 65536; elements = { E } }",
        ingress: "SYN25 ip6 saddr @l drop",
    },
    Variant {
        name: "pass: a miss in a verdict map (timeout, counter per element)",
        passes: true,
        decls: "map l { type ipv6_addr : verdict; flags timeout; counter; size 65536; }",
        ingress: "SYN25 ip6 saddr vmap @l",
    },
    Variant {
        name: "pass: a hit in a dynamic set, named counter",
        passes: true,
        decls: "counter unknown { }\nset known { type ipv6_addr; flags dynamic,timeout; timeout 1h; size 65536; elements = { E } }",
        ingress: "SYN25 ip6 saddr @known counter name \"unknown\" accept",
    },
    Variant {
        name: "pass: the backend's unknown reported source (decision map miss, cache hit)",
        passes: true,
        decls: "counter unknown { }\nmap l { type ipv6_addr : verdict; flags timeout; counter; size 65536; }\nset known { type ipv6_addr; flags dynamic,timeout; timeout 1h; size 65536; elements = { E } }\nchain s4 { }\nchain s6 { ip6 saddr vmap @l\nip6 saddr @known counter name \"unknown\" accept }",
        ingress: "INGRESS",
    },
    Variant {
        name: "pass: the walk of 20 feed maps (a prefix length each), every lookup a miss: unsized (the backend's)",
        passes: true,
        decls: "WALK_UNSIZED",
        ingress: "WALK_RULES",
    },
    Variant {
        name: "pass: the same walk, the maps sized for the lists (`size 1114112`: the fixed hash)",
        passes: true,
        decls: "WALK_SIZED",
        ingress: "WALK_RULES",
    },
];

/// The prefix lengths of the walk variants: lengths where the sources differ (each source its
/// own key, so each lookup its own bucket, as a flood of new sources meets the walk).
const WALK_LENGTHS: std::ops::Range<u32> = 40..60;

/// The walk variants' maps, declared `decl`, each holding 100 prefixes none of the sources
/// is in.
fn walk_decls(decl: &str) -> String {
    let mut s = String::new();
    for len in WALK_LENGTHS {
        let elems: Vec<String> = (0..100u32)
            .map(|i| format!("2001:db8:ff{len:02x}:{i:x}:: : accept"))
            .collect();
        let _ = writeln!(
            s,
            "map w{len} {{ type ipv6_addr : verdict; {decl} elements = {{ {} }} }}",
            elems.join(", ")
        );
    }
    s
}

/// The walk variants' rules: a masked lookup per length, as the backend's subject chain.
fn walk_rules() -> String {
    let mut s = String::new();
    for len in WALK_LENGTHS {
        let mask = Ipv6Addr::from(u128::MAX << (128 - len));
        let _ = writeln!(s, "SYN25 ip6 saddr & {mask} vmap @w{len}");
    }
    s.push_str("SYN25 accept");
    s
}

fn main() {
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let wire = Wire::new("bp");
    wire.server
        .ip(&["link", "set", SERVER_IFACE, "address", "02:00:00:00:00:02"]);
    let sources: Vec<IpAddr> = (0..SOURCES)
        .map(|i| {
            // Spread over 2001:db8::/32 (an odd multiplier: distinct), as new sources are.
            let x = u128::from(i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (x >> 32)))
        })
        .collect();
    let elements: Vec<String> = sources.iter().map(ToString::to_string).collect();
    let elements = elements.join(", ");
    let verdicts: Vec<String> = sources.iter().map(|s| format!("{s} : goto d")).collect();
    let verdicts = verdicts.join(", ");
    let frames = |passes: bool| -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = sources
            .iter()
            .map(|s| {
                let mut f = Frame::syn(*s).build();
                if passes {
                    f[..6].copy_from_slice(&OTHER_HOST);
                }
                f
            })
            .collect();
        // Fisher-Yates with a fixed xorshift, as `bench drop`.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..out.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.swap(i, (x % (i as u64 + 1)) as usize);
        }
        out
    };
    let (drops, passes) = (frames(false), frames(true));
    let flood = Flood::new(&wire.client, "vc");
    let expand = |s: &str| {
        s.replace("WALK_UNSIZED", &walk_decls(""))
            .replace("WALK_SIZED", &walk_decls("size 1114112;"))
            .replace("WALK_RULES", &walk_rules())
            .replace("ALIVE", ALIVE)
            .replace("REFUSE", REFUSE)
            .replace("INGRESS", INGRESS)
            .replace("SYN25", SYN25)
            .replace("{ E }", &format!("{{ {elements} }}"))
            .replace("{ V }", &format!("{{ {verdicts} }}"))
    };
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        for (i, var) in VARIANTS.iter().enumerate() {
            let script = format!(
                "table netdev probe {{\n{}\nchain i {{ type filter hook ingress device \"{SERVER_IFACE}\" priority -500; policy accept;\n{}\n}}\n}}\n",
                expand(var.decls),
                expand(var.ingress)
            );
            // `nft -f` wants a statement ended (newline) before a closing brace.
            run_in(
                &wire.server,
                "nft",
                &["-f", "-"],
                &script.replace(" }", "\n}"),
            );
            let f = if var.passes { &passes } else { &drops };
            flood.send(f, f.len() as u64, cpu);
            ns[i].push(flood.send(f, SYNS, cpu).ns_per_frame());
            run_in(
                &wire.server,
                "nft",
                &["delete", "table", "netdev", "probe"],
                "",
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let floor = median(&mut ns[0].clone());
    println!(
        "{SYNS} SYNs per measurement from {SOURCES} sources, {ROUNDS} interleaved rounds.\n\n| variant | ns per SYN | over the first |\n|---|---:|---:|"
    );
    for (var, v) in VARIANTS.iter().zip(&mut ns) {
        let m = median(v);
        println!(
            "| {} | {m:.1} [{:.0} … {:.0}] | {:+.1} |",
            var.name,
            v[0],
            v[v.len() - 1],
            m - floor
        );
    }
}
