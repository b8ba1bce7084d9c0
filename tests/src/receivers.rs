//! The receivers the drop benchmark floods, set up and torn down on the server side of a
//! veth: the reference XDP programs, an nftables netdev-ingress set (and an interval set of a
//! whole feed), an ip6tables raw rule in front of an ipset, and mxscreen's datapath and its
//! nftables backend, each with every kind of entry loaded at once.

use std::{io::Write as _, net::IpAddr, process::Command};

use filter_common::{Action, ListEntry, PeerVerdict, Reason, Table};
use mxscreen::{
    datapath::{
        self, AttachMode, Attached, DatapathMaps, Events, LoadOptions, MapSizes, PrefixSet,
    },
    nftables::{Nftables, Options as NftOptions, events::NfLog},
};

use crate::netns::NetNs;

/// Runs `cmd ARGS` inside `ns` (with `stdin` as its input), panicking with stderr on failure.
pub fn run_in(ns: &NetNs, cmd: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, cmd])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run `cargo xtask setup`)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// An nftables table on `iface`'s ingress hook (netdev family, before the IP stack) dropping
/// TCP SYNs to port 25 from the addresses of a set.
pub fn nft_up(ns: &NetNs, iface: &str, sources: &[IpAddr]) {
    nft_up_promising(ns, iface, sources, Promises::NONE);
}

/// What the hand-written rule is given of what mxscreen's backend promises, each alone on
/// the one rule and one set: what each promise costs by itself, measured the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promises {
    /// The set has timeouts (expiry as element timeouts: a resizable hash, not the fixed one).
    pub timeouts: bool,
    /// The rule counts what it drops in a named counter (the outcome counters).
    pub counter: bool,
    /// The rule drops only while a liveness element is there (the fail-open).
    pub alive: bool,
    /// Each element counts its hits (a per-element counter: the verdicts' hits).
    pub hits: bool,
    /// The rule accepts the sources it finds instead of dropping them (what a pass class's
    /// SYN costs the same rule).
    pub accept: bool,
}

impl Promises {
    pub const NONE: Self = Self {
        timeouts: false,
        counter: false,
        alive: false,
        hits: false,
        accept: false,
    };
    /// What the backend promises on a dropped SYN, but its hit counts.
    pub const ALL: Self = Self {
        timeouts: true,
        counter: true,
        alive: true,
        hits: false,
        accept: false,
    };

    pub fn name(self) -> String {
        let mut v = Vec::new();
        if self.timeouts {
            v.push("timeouts");
        }
        if self.counter {
            v.push("a named counter");
        }
        if self.alive {
            v.push("a liveness check");
        }
        if self.hits {
            v.push("a counter per element");
        }
        v.join(", ")
    }
}

/// [`nft_up`], its rule and set given `p`.
pub fn nft_up_promising(ns: &NetNs, iface: &str, sources: &[IpAddr], p: Promises) {
    let elements: Vec<String> = sources.iter().map(ToString::to_string).collect();
    let mut flags = if p.timeouts { " flags timeout;" } else { "" }.to_owned();
    if p.hits {
        flags.push_str(" counter;");
    }
    let alive = if p.alive { " meta l4proto @alive" } else { "" };
    let counter = if p.counter {
        " counter name \"dropped\""
    } else {
        ""
    };
    let verdict = if p.accept { "accept" } else { "drop" };
    let script = format!(
        "table netdev mxbench {{\n  counter dropped {{ }}\n  set alive {{ type inet_proto; flags timeout; elements = {{ tcp timeout 1h }} }}\n  set listed {{ type ipv6_addr; size {};{flags} elements = {{ {} }} }}\n  chain ingress {{ type filter hook ingress device \"{iface}\" priority -500; policy accept;\n    meta l4proto tcp tcp dport 25 tcp flags & (syn | ack) == syn ip6 saddr @listed{alive}{counter} {verdict}\n  }}\n}}\n",
        sources.len().max(65536),
        elements.join(", ")
    );
    run_in(ns, "nft", &["-f", "-"], &script);
}

/// A hand-written nftables rule that remembers the source of every TCP SYN to port 25 in a
/// dynamic set of `size` sources with a timeout (as any filter keeping per-source state
/// must, to forget them) and passes the SYN: the least a filter learning new peers does for
/// each SYN of a spoofed flood, the counterpart of the bare LRU-insert XDP program. A set
/// full takes no more; the SYN passes all the same.
pub fn nft_remember_up(ns: &NetNs, iface: &str, size: u32) {
    let script = format!(
        "table netdev mxbench {{\n  set seen {{ type ipv6_addr; size {size}; flags dynamic,timeout; timeout 1h; }}\n  chain ingress {{ type filter hook ingress device \"{iface}\" priority -500; policy accept;\n    meta l4proto tcp tcp dport 25 tcp flags & (syn | ack) == syn add @seen {{ ip6 saddr }} accept\n  }}\n}}\n"
    );
    run_in(ns, "nft", &["-f", "-"], &script);
}

pub fn nft_down(ns: &NetNs) {
    run_in(ns, "nft", &["delete", "table", "netdev", "mxbench"], "");
}

/// An ipset of the addresses and an ip6tables rule in the raw table's PREROUTING (the first
/// hook after the IPv6 input checks) dropping TCP SYNs to port 25 from them. The legacy
/// (x_tables) backend: ipset's classic companion.
pub fn ipset_up(ns: &NetNs, iface: &str, sources: &[IpAddr]) {
    let mut restore =
        String::from("create mxbench hash:ip family inet6 hashsize 16384 maxelem 65536\n");
    for s in sources {
        restore.push_str(&format!("add mxbench {s}\n"));
    }
    run_in(ns, "ipset", &["restore"], &restore);
    run_in(
        ns,
        "ip6tables-legacy",
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-i",
            iface,
            "-p",
            "tcp",
            "--dport",
            "25",
            "--syn",
            "-m",
            "set",
            "--match-set",
            "mxbench",
            "src",
            "-j",
            "DROP",
        ],
        "",
    );
}

pub fn ipset_down(ns: &NetNs) {
    run_in(
        ns,
        "ip6tables-legacy",
        &["-t", "raw", "-F", "PREROUTING"],
        "",
    );
    run_in(ns, "ipset", &["destroy", "mxbench"], "");
}

/// The classes of subject SYN mxscreen decides, each with its own sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    VerdictDrop,
    VerdictLimit,
    VerdictPass,
    Deny,
    Feed,
    Allow,
    Unknown,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::VerdictDrop,
        Class::VerdictLimit,
        Class::VerdictPass,
        Class::Deny,
        Class::Feed,
        Class::Allow,
        Class::Unknown,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Class::VerdictDrop => "cached verdict drop",
            Class::VerdictLimit => "cached verdict limit (over its rate)",
            Class::VerdictPass => "cached verdict pass",
            Class::Deny => "manual deny entry",
            Class::Feed => "feed entry, 1M-prefix feed loaded",
            Class::Allow => "allow entry",
            Class::Unknown => "unknown peer (already reported)",
        }
    }

    /// Whether its SYNs are dropped (else passed on to the stack).
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Class::VerdictDrop | Class::VerdictLimit | Class::Deny | Class::Feed
        )
    }

    /// The counter its SYNs bump.
    pub const fn counter(self) -> filter_common::Counter {
        use filter_common::Counter as C;
        match self {
            Class::VerdictDrop => C::DroppedVerdict,
            Class::VerdictLimit => C::Limited,
            Class::VerdictPass => C::PassedVerdict,
            Class::Deny => C::DroppedDeny,
            Class::Feed => C::DroppedFeed,
            Class::Allow => C::PassedAllow,
            Class::Unknown => C::Unknown,
        }
    }
}

/// mxscreen's datapath, loaded privately at its default map sizes, with every class's
/// sources in it at once.
pub struct Mx {
    pub ebpf: aya::Ebpf,
    pub maps: DatapathMaps,
    pub events: Events,
    attached: Option<Attached>,
}

impl Mx {
    /// Loads the datapath and its entries; `feed_size` prefixes in the feed, the `Feed`
    /// class's sources among them.
    pub fn load(sources: impl Fn(Class) -> Vec<IpAddr>, feed_size: usize) -> Self {
        let mut ebpf = datapath::load(&LoadOptions {
            sizes: MapSizes::default(),
            pin_dir: None,
        })
        .expect("loading the datapath (root?)");
        let mut maps = DatapathMaps::take(&mut ebpf).unwrap();
        let events = Events::take(&mut ebpf).unwrap();
        let mut cfg = maps.config().unwrap();
        cfg.set_ports(&[25]);
        cfg.set_limit(1, 1);
        cfg.dedup_window_ns = 3_600_000_000_000;
        cfg.explain_window_ns = 0;
        maps.set_config(&cfg).unwrap();
        let verdicts = [
            (Class::VerdictDrop, Action::Drop),
            (Class::VerdictLimit, Action::Limit),
            (Class::VerdictPass, Action::Pass),
        ];
        for (class, action) in verdicts {
            for ip in sources(class) {
                maps.verdict_set(ip, PeerVerdict::new(action, Reason::Reputation, 0))
                    .unwrap();
            }
        }
        let manual = ListEntry::new(Reason::Manual, 0);
        for ip in sources(Class::Deny) {
            maps.list_insert(datapath::ListKind::Deny, ip.into(), manual)
                .unwrap();
        }
        for ip in sources(Class::Allow) {
            maps.list_insert(datapath::ListKind::Allow, ip.into(), manual)
                .unwrap();
        }
        maps.feed_load("bench", Table::Deny, feed(&sources(Class::Feed), feed_size))
            .unwrap();
        Self {
            ebpf,
            maps,
            events,
            attached: None,
        }
    }

    pub fn attach(&mut self, ns: &NetNs, iface: &str, mode: AttachMode) {
        let a = ns
            .enter(|| datapath::attach(&mut self.ebpf, iface, mode))
            .unwrap_or_else(|e| panic!("attach mxscreen ({mode:?}): {e:#}"));
        self.attached = Some(a);
    }

    pub fn detach(&mut self) {
        if let Some(a) = self.attached.take() {
            a.detach(&mut self.ebpf).expect("detach mxscreen");
        }
    }

    /// A counter summed over CPUs.
    pub fn counter(&self, c: filter_common::Counter) -> u64 {
        self.maps.counters().unwrap()[c as usize]
    }
}

/// `size` prefixes: the `listed` addresses as /128s, the rest /64s and /56s in
/// 2001:db8:8000::/33 (a large IPv6 drop list's shape: mostly networks).
fn feed(listed: &[IpAddr], size: usize) -> PrefixSet {
    let mut v6: Vec<(u128, u8)> = listed
        .iter()
        .map(|ip| match ip {
            IpAddr::V6(a) => (a.to_bits(), 128),
            IpAddr::V4(_) => panic!("IPv6 sources only"),
        })
        .collect();
    let base = 0x2001_0db8_8000_0000_0000_0000_0000_0000u128;
    let mut i = 0u128;
    while v6.len() < size {
        // /56s below 2001:db8:c000::, /64s above: none overlaps another.
        let (net, len) = if i.is_multiple_of(4) {
            (base | ((i / 4) << 72), 56)
        } else {
            (base | (1u128 << 94) | (i << 64), 64)
        };
        v6.push((net, len));
        i += 1;
    }
    PrefixSet::from_unsorted(Vec::new(), v6)
}

/// mxscreen's nftables backend, its table created in `ns` with default sizes, holding every
/// class's sources at once (the same entries as [`Mx`]).
pub struct MxNft {
    pub nft: Nftables,
    pub log: NfLog,
}

impl MxNft {
    pub fn load(ns: &NetNs, sources: impl Fn(Class) -> Vec<IpAddr>, feed_size: usize) -> Self {
        let (mut nft, log) = ns
            .enter(|| Nftables::open(&NftOptions::default()))
            .expect("creating mxscreen's nftables table (root? nft installed?)");
        let mut cfg = filter_common::DatapathConfig::empty();
        cfg.set_ports(&[25]);
        cfg.set_limit(1, 1);
        cfg.dedup_window_ns = 3_600_000_000_000;
        nft.set_config(&cfg).unwrap();
        // One source of each class in turn, as entries arrive in a live table. Written class
        // by class, the classes written last looked cheapest (the verdicts, written first,
        // cost 60–140 ns more than the list entries): the decision map chains a bucket's
        // elements newest first, and elements written in one stretch lie in contiguous
        // memory, fewer pages for a flood over one class to touch.
        let manual = ListEntry::new(Reason::Manual, 0);
        let mut write = |class: Class, ip: IpAddr| {
            let verdict = |a| PeerVerdict::new(a, Reason::Reputation, 0);
            match class {
                Class::VerdictDrop => nft.verdict_set(ip, verdict(Action::Drop)),
                Class::VerdictLimit => nft.verdict_set(ip, verdict(Action::Limit)),
                Class::VerdictPass => nft.verdict_set(ip, verdict(Action::Pass)),
                Class::Deny => nft.list_insert(datapath::ListKind::Deny, ip.into(), manual),
                Class::Allow => nft.list_insert(datapath::ListKind::Allow, ip.into(), manual),
                Class::Feed | Class::Unknown => unreachable!("not written one by one"),
            }
            .unwrap();
        };
        let written = [
            Class::VerdictDrop,
            Class::VerdictLimit,
            Class::VerdictPass,
            Class::Deny,
            Class::Allow,
        ]
        .map(|c| (c, sources(c)));
        for i in 0..written[0].1.len() {
            for (class, ips) in &written {
                write(*class, ips[i]);
            }
        }
        nft.feed_load("bench", Table::Deny, feed(&sources(Class::Feed), feed_size))
            .unwrap();
        Self { nft, log }
    }

    pub fn attach(&mut self, iface: &str) {
        self.nft
            .attach(&[iface.to_owned()])
            .expect("attach mxscreen's nftables table");
    }

    pub fn detach(&mut self) {
        self.nft
            .attach(&[])
            .expect("detach mxscreen's nftables table");
    }

    /// A named outcome counter.
    pub fn counter(&self, c: filter_common::Counter) -> u64 {
        self.nft.counters().unwrap()[c as usize]
    }

    /// Forgets every source the rules learnt (the dynamic sets of reported, held, tried,
    /// returning and known sources, the explained ones and the token buckets' meters), so
    /// that a flood of new sources meets the table as it was before the first: the sets are
    /// those `nft list sets` names (declarations only, no elements), the per-source ones by
    /// their stems (`sets.rs`).
    pub fn forget_sources(&self, ns: &NetNs) {
        let listing = ns.nft(&["list", "sets", "netdev"]);
        let stems = [
            "seen",
            "known",
            "holding",
            "recent",
            "tried",
            "returning",
            "explained",
            "meter",
        ];
        let mut script = String::new();
        for name in listing
            .lines()
            .filter_map(|l| l.trim().strip_prefix("set "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| stems.iter().any(|s| n.starts_with(s)))
        {
            script.push_str(&format!(
                "flush set netdev {} {name}\n",
                mxscreen::nftables::TABLE
            ));
        }
        assert!(!script.is_empty(), "no per-source set in: {listing}");
        run_in(ns, "nft", &["-f", "-"], &script);
    }

    /// Discards the new-peer reports waiting.
    pub fn drain(&mut self) {
        let _ = self.log.drain();
    }
}

/// A hand-written nftables interval set of `feed_size` prefixes (the listed sources as /128s
/// among the feed's /56s and /64s) on `iface`'s ingress, dropping TCP SYNs to port 25 from
/// them: the usual way to load a prefix feed into nftables, one rbtree lookup per SYN.
pub fn nft_interval_up(ns: &NetNs, iface: &str, listed: &[IpAddr], feed_size: usize) {
    let set = feed(listed, feed_size);
    let mut elems = String::new();
    for p in set.iter() {
        elems.push_str(&p.net().to_string());
        elems.push_str(", ");
    }
    let script = format!(
        "table netdev mxbench {{\n  set listed {{ type ipv6_addr; flags interval; elements = {{ {elems} }} }}\n  chain ingress {{ type filter hook ingress device \"{iface}\" priority -500; policy accept;\n    meta l4proto tcp tcp dport 25 tcp flags & (syn | ack) == syn ip6 saddr @listed drop\n  }}\n}}\n"
    );
    run_in(ns, "nft", &["-f", "-"], &script);
}
