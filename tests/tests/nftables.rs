//! The nftables backend in a network namespace: a veth pair between a client and a server
//! namespace, the backend's table on the server's interface, real TCP handshakes from the
//! client. Each promise of the README's datapath section, against real SYNs. Needs root and
//! the `nft` program; run by `cargo xtask test netns`.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener},
    process::Command,
    time::{Duration, Instant},
};

use filter_common::{
    Action, Counter, DatapathConfig, EventWhy, FLAG_EXPLAIN, FLAG_HOLD, FLAG_OBSERVE, ListEntry,
    PeerVerdict, Reason, Table,
};
use ipnet::IpNet;
use mxscreen::{
    datapath::{ListKind, MapSizes, NewPeer, PrefixSet, clock},
    nftables::{Nftables, Options, events::NfLog},
};
use mxscreen_tests::{
    bed::Accepting,
    flood::Flood,
    netns::{CLIENT_V4, CLIENT_V6, NetNs, SERVER_IFACE, SERVER_V4, SERVER_V6, Wire},
    packets::{Fragment, Frame, Tcp},
};

fn manual() -> ListEntry {
    ListEntry::new(Reason::Manual, 0)
}

fn net(s: &str) -> IpNet {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .unwrap()
}

fn smtp4() -> SocketAddr {
    format!("{SERVER_V4}:25").parse().unwrap()
}

fn smtp6() -> SocketAddr {
    format!("[{SERVER_V6}]:25").parse().unwrap()
}

/// A wire with listeners on 25 and 2525 (both families) and the backend on the server.
struct Bed {
    wire: Wire,
    nft: Nftables,
    log: NfLog,
    _listeners: Accepting,
}

/// The config the tests start from: port 25, no hold, a 1 h dedup window, 1/min burst 2,
/// no explained refusals, a heartbeat that never goes stale.
fn config() -> DatapathConfig {
    let mut c = DatapathConfig::empty();
    c.set_ports(&[25]);
    c.set_limit(1, 2);
    c.dedup_window_ns = 3_600_000_000_000;
    c
}

/// The tests' config holding an unknown peer's SYNs for `hold_ns`, with a budget of
/// `events_per_s` reports a second (0: unlimited).
fn holding(hold_ns: u64, events_per_s: u32) -> DatapathConfig {
    let mut c = config();
    c.flags |= FLAG_HOLD;
    c.hold_window_ns = hold_ns;
    c.events_per_s = events_per_s;
    c
}

/// The backend opened in the wire's server namespace with `sizes`, the tests' config applied,
/// screening the server's interface.
fn open_backend(wire: &Wire, sizes: MapSizes) -> (Nftables, NfLog) {
    let opts = Options {
        sizes,
        ..Options::default()
    };
    let (mut nft, log) = wire
        .server
        .enter(|| Nftables::open(&opts))
        .unwrap_or_else(|e| panic!("open the nftables backend: {e:#}"));
    nft.set_config(&config()).unwrap();
    nft.attach(&[SERVER_IFACE.to_owned()]).unwrap();
    (nft, log)
}

impl Bed {
    fn new(tag: &str) -> Self {
        Self::with_sizes(tag, MapSizes::small())
    }

    fn with_sizes(tag: &str, sizes: MapSizes) -> Self {
        let wire = Wire::new(tag);
        let listeners = wire.server.enter(|| {
            [
                smtp4(),
                smtp6(),
                format!("{SERVER_V4}:2525").parse().unwrap(),
                format!("[{SERVER_V6}]:2525").parse().unwrap(),
            ]
            .iter()
            .map(|a| TcpListener::bind(a).expect("listen"))
            .collect()
        });
        let listeners = Accepting::new(listeners);
        let (nft, log) = open_backend(&wire, sizes);
        // Neighbours resolved first (through a port never screened), so that a refused SYN
        // is one that was sent and dropped, not one still waiting for neighbour discovery.
        for src in CLIENT_V4.iter().chain(&CLIENT_V6) {
            let dst = if src.contains(':') {
                format!("[{SERVER_V6}]:2525")
            } else {
                format!("{SERVER_V4}:2525")
            };
            wire.assert_connects(src, dst.parse().unwrap());
        }
        Self {
            wire,
            nft,
            log,
            _listeners: listeners,
        }
    }

    fn count(&self, c: Counter) -> u64 {
        self.nft.counters().unwrap()[c as usize]
    }

    /// Sends `frames` raw from the client (as a flood's) and returns how much each of
    /// `counters` grew, once every frame landed in one of the first `landing` of them (each
    /// frame counts in one: held or passed, refused or not subject) or 2 s passed (a softirq
    /// deferred to ksoftirqd is late).
    fn sent<const N: usize>(
        &self,
        flood: &Flood,
        frames: &[Vec<u8>],
        counters: [Counter; N],
        landing: usize,
    ) -> [u64; N] {
        // One read of every counter a poll, not one per counter watched.
        let read = || {
            let all = self.nft.counters().unwrap();
            counters.map(|c| all[c as usize])
        };
        let before = read();
        flood.send(frames, frames.len() as u64, 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let after = read();
            let grew: [u64; N] = std::array::from_fn(|i| after[i] - before[i]);
            if grew[..landing].iter().sum::<u64>() >= frames.len() as u64
                || Instant::now() >= deadline
            {
                return grew;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The backend gone without removing its table, as after kill -9 (its NFLOG group free
    /// again); the wire and the listeners stay.
    fn killed(self) -> (Wire, Accepting) {
        let Bed {
            wire,
            nft,
            log,
            _listeners,
        } = self;
        std::mem::forget(nft);
        drop(log);
        (wire, _listeners)
    }

    fn nft_list(&self) -> String {
        self.wire.server.nft(&["list", "ruleset"])
    }
}

#[test]
fn blocks_unblocks_and_allows_real_connections() {
    let mut b = Bed::new("nb");
    let (blocked4, clean4) = (CLIENT_V4[0], CLIENT_V4[1]);
    let (blocked6, clean6) = (CLIENT_V6[0], CLIENT_V6[1]);
    b.wire.assert_connects(blocked4, smtp4());
    b.wire.assert_connects(blocked6, smtp6());
    b.nft
        .list_insert(ListKind::Deny, net(blocked4), manual())
        .unwrap();
    b.nft
        .list_insert(ListKind::Deny, net("2001:db8:1::/64"), manual())
        .unwrap();
    b.wire.assert_refused(blocked4, smtp4());
    b.wire.assert_refused(blocked6, smtp6());
    b.wire.assert_refused(clean6, smtp6());
    // Other ports are never touched, and other sources pass.
    b.wire
        .assert_connects(blocked4, format!("{SERVER_V4}:2525").parse().unwrap());
    b.wire
        .assert_connects(blocked6, format!("[{SERVER_V6}]:2525").parse().unwrap());
    b.wire.assert_connects(clean4, smtp4());
    assert!(b.count(Counter::DroppedDeny) >= 3);
    // Allow beats deny, the longest prefix of each table aside.
    b.nft
        .list_insert(ListKind::Allow, net(blocked6), manual())
        .unwrap();
    b.wire.assert_connects(blocked6, smtp6());
    b.wire.assert_refused(clean6, smtp6());
    assert!(b.count(Counter::PassedAllow) >= 1);
    let allowed = b
        .nft
        .list_match(Table::Allow, blocked6.parse().unwrap())
        .unwrap()
        .unwrap();
    assert!(
        allowed.hits >= 1,
        "the allow entry counts its hits: {allowed:?}"
    );
    assert!(b.nft.list_remove(ListKind::Allow, net(blocked6)).unwrap());
    assert!(
        b.nft
            .list_remove(ListKind::Deny, net("2001:db8:1::/64"))
            .unwrap()
    );
    assert!(b.nft.list_remove(ListKind::Deny, net(blocked4)).unwrap());
    assert!(!b.nft.list_remove(ListKind::Deny, net(blocked4)).unwrap());
    b.wire.assert_connects(blocked4, smtp4());
    b.wire.assert_connects(blocked6, smtp6());
    // An entry with an expiry passes again once it expired (the element's timeout).
    let soon = ListEntry::new(Reason::Manual, clock::expiry_after(Duration::from_secs(2)));
    b.nft
        .list_insert(ListKind::Deny, net(blocked4), soon)
        .unwrap();
    b.wire.assert_refused(blocked4, smtp4());
    std::thread::sleep(Duration::from_millis(2300));
    b.wire.assert_connects(blocked4, smtp4());
    assert!(b.count(Counter::PassedNotSubject) > 0);
}

/// Verdicts held back (the daemon's way: a burst of them costs one transaction's commit)
/// read as set at once and reach the kernel at the flush, or with the next write of any
/// kind, in the order they were set.
#[test]
fn verdicts_held_back_reach_the_kernel_at_the_flush() {
    let mut b = Bed::new("nh");
    let (a, c) = (CLIENT_V4[0], CLIENT_V4[1]);
    let drop = PeerVerdict::new(Action::Drop, Reason::Reputation, 0);
    let pass = PeerVerdict::new(Action::Pass, Reason::Reputation, 0);
    b.nft.verdict_set_later(a.parse().unwrap(), drop).unwrap();
    assert_eq!(
        b.nft.verdict_held(a.parse().unwrap()).map(|v| v.action()),
        Some(Action::Drop)
    );
    b.wire.assert_connects(a, smtp4());
    b.nft.flush_later().unwrap();
    b.wire.assert_refused(a, smtp4());
    // A later verdict of the same source wins; another write takes the held ones first.
    b.nft.verdict_set_later(a.parse().unwrap(), pass).unwrap();
    b.nft.verdict_set_later(c.parse().unwrap(), drop).unwrap();
    b.nft
        .list_insert(ListKind::Deny, net("198.51.100.0/24"), manual())
        .unwrap();
    b.wire.assert_connects(a, smtp4());
    b.wire.assert_refused(c, smtp4());
}

#[test]
fn verdicts_with_expiry_and_precedence() {
    let mut b = Bed::new("nv");
    let (a, c) = (CLIENT_V4[0], CLIENT_V6[0]);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let soon = clock::expiry_after(Duration::from_secs(2));
    b.nft
        .verdict_set(ip(a), PeerVerdict::new(Action::Drop, Reason::Manual, soon))
        .unwrap();
    b.nft
        .verdict_set(ip(c), PeerVerdict::new(Action::Drop, Reason::Reputation, 0))
        .unwrap();
    b.wire.assert_refused(a, smtp4());
    b.wire.assert_refused(c, smtp6());
    assert!(b.count(Counter::DroppedVerdict) >= 2);
    assert!(b.nft.verdict_get(ip(c)).unwrap().unwrap().hits >= 1);
    // A pass verdict replaces the drop; an allow entry... and a deny entry beats a pass verdict.
    b.nft
        .verdict_set(ip(c), PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
        .unwrap();
    b.wire.assert_connects(c, smtp6());
    assert!(b.count(Counter::PassedVerdict) >= 1);
    b.nft.list_insert(ListKind::Deny, net(c), manual()).unwrap();
    b.wire.assert_refused(c, smtp6());
    b.nft.list_remove(ListKind::Deny, net(c)).unwrap();
    // A network verdict applies to a source without a verdict of its own.
    let other6 = CLIENT_V6[1];
    b.nft
        .network_verdict_set(net("2001:db8:1::/64"), Action::Drop, Reason::Reputation, 0)
        .unwrap();
    b.wire.assert_refused(other6, smtp6());
    b.wire.assert_connects(c, smtp6());
    assert!(
        b.nft
            .network_verdict_remove(net("2001:db8:1::/64"))
            .unwrap()
    );
    b.wire.assert_connects(other6, smtp6());
    // The expiring drop verdict ran out.
    std::thread::sleep(Duration::from_millis(2300));
    b.wire.assert_connects(a, smtp4());
    assert!(b.nft.verdict_remove(ip(c)).unwrap());
}

/// Hits survive the decision element that counted them being rewritten or destroyed, and
/// count on: a temporary allow /24 over a drop verdict decides the source's SYNs while it
/// lasts; once the kernel expires it (before the daemon next looks at its lists), the walk
/// reaches the verdict again, and its element in the verdict map counts those SYNs. Then an
/// own /32 deny entry's, across a new verdict of its source.
#[test]
fn hits_survive_decision_elements_being_rewritten() {
    let mut b = Bed::new("nc");
    let a = CLIENT_V4[0];
    let ip: IpAddr = a.parse().unwrap();
    let hits = |b: &Bed| b.nft.verdict_get(ip).unwrap().unwrap().hits;
    b.nft
        .verdict_set(ip, PeerVerdict::new(Action::Drop, Reason::Reputation, 0))
        .unwrap();
    b.wire.assert_refused(a, smtp4());
    let refused = hits(&b);
    assert!(refused >= 1, "the drop verdict counted {refused}");
    let soon = clock::expiry_after(Duration::from_secs(1));
    b.nft
        .list_insert(
            ListKind::Allow,
            net("192.0.2.0/24"),
            ListEntry::new(Reason::Manual, soon),
        )
        .unwrap();
    assert_eq!(hits(&b), refused, "hits lost when the allow /24 took over");
    b.wire.assert_connects(a, smtp4());
    assert_eq!(
        hits(&b),
        refused,
        "the allow's SYN counted as the verdict's"
    );
    std::thread::sleep(Duration::from_millis(1300));
    b.wire.assert_refused(a, smtp4());
    let after = hits(&b);
    assert!(
        after > refused,
        "the SYNs refused after the allow expired were not counted: {refused} then {after}"
    );
    // An own /32 deny entry decides in the decision map too (once the expired allow is out
    // of the bookkeeping): a new verdict of its source rewrites that element, and the entry
    // keeps its hits.
    assert!(
        b.nft
            .list_remove(ListKind::Allow, net("192.0.2.0/24"))
            .unwrap()
    );
    b.nft.list_insert(ListKind::Deny, net(a), manual()).unwrap();
    b.wire.assert_refused(a, smtp4());
    let denied = |b: &Bed| {
        b.nft
            .list_exact(ListKind::Deny, net(a))
            .unwrap()
            .unwrap()
            .hits
    };
    let before = denied(&b);
    assert!(before >= 1, "the deny entry counted {before}");
    b.nft
        .verdict_set(ip, PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
        .unwrap();
    assert_eq!(
        denied(&b),
        before,
        "the deny entry's hits, after a new verdict"
    );
    b.wire.assert_refused(a, smtp4());
    assert!(denied(&b) > before);
    // One entry's hits (`check`: an element read or two) are what the listing of them all
    // (`list`: the decision maps dumped) says.
    let listed = b.nft.table_entries(Table::Deny).unwrap();
    let one = listed.iter().find(|(n, _)| *n == net(a)).unwrap().1.hits;
    assert_eq!(one, denied(&b));
}

/// `nft flush ruleset` (how most firewalls load: a reload of nftables.service) deletes the
/// table with the rest: every SYN passes then, and the next heartbeat writes the table again
/// from what the handle keeps — verdicts, own entries, feeds — which decide as before.
#[test]
fn a_flushed_ruleset_is_written_again_at_the_next_heartbeat() {
    let mut b = Bed::new("nr");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (verdict, fed) = (CLIENT_V4[0], CLIENT_V4[1]);
    let (denied, allowed) = (CLIENT_V6[0], CLIENT_V6[1]);
    let drop = PeerVerdict::new(Action::Drop, Reason::Reputation, 0);
    b.nft.verdict_set(ip(verdict), drop).unwrap();
    b.nft.verdict_set(ip(allowed), drop).unwrap();
    b.nft
        .list_insert(ListKind::Deny, net(denied), manual())
        .unwrap();
    b.nft
        .list_insert(ListKind::Allow, net(allowed), manual())
        .unwrap();
    let feed = PrefixSet::from_unsorted(
        vec![PrefixSet::pack_v4(u32::from_be_bytes([192, 0, 2, 3]), 32)],
        Vec::new(),
    );
    b.nft.feed_load("drop", Table::Deny, feed).unwrap();
    let screened = |b: &Bed| {
        b.wire.assert_refused(verdict, smtp4());
        b.wire.assert_refused(fed, smtp4());
        b.wire.assert_refused(denied, smtp6());
        b.wire.assert_connects(allowed, smtp6());
    };
    screened(&b);
    // A heartbeat (the daemon's, every second) reads the named counters.
    b.nft.set_config(&config()).unwrap();
    let outcomes = [
        Counter::DroppedVerdict,
        Counter::DroppedDeny,
        Counter::DroppedFeed,
    ];
    let counted = outcomes.map(|c| b.count(c));
    let fed = b.nft.feed_hits("drop").unwrap();
    assert!(
        counted.iter().all(|n| *n >= 1) && fed >= 1,
        "{counted:?} {fed}"
    );
    b.wire.server.nft(&["flush", "ruleset"]);
    assert!(!b.nft_list().contains("table netdev mxscreen"));
    b.wire.assert_connects(verdict, smtp4());
    // The next heartbeat finds the table gone and writes it again.
    b.nft.set_config(&config()).unwrap();
    // Its named counters start from what the last heartbeat read: `stats` counts on.
    for (c, n) in outcomes.iter().zip(counted) {
        assert_eq!(b.count(*c), n, "{c:?} after the table was written again");
    }
    assert_eq!(b.nft.feed_hits("drop").unwrap(), fed);
    screened(&b);
    for (c, n) in outcomes.iter().zip(counted) {
        assert!(b.count(*c) > n, "{c:?} counts on from {n}");
    }
    assert!(b.nft.feed_hits("drop").unwrap() > fed);
    // A source's hits (its element's counter) count again from 0.
    assert!(b.nft.verdict_get(ip(verdict)).unwrap().unwrap().hits >= 1);
    // And it is the table the handle owns: removing a verdict still takes effect.
    assert!(b.nft.verdict_remove(ip(verdict)).unwrap());
    b.wire.assert_connects(verdict, smtp4());
}

/// Whatever meets the deleted table first — a config change that rewrites the rules, or an
/// interface coming back (rehooked) — the table comes back whole, its verdicts with it: not
/// a table of rules without elements, nor a heartbeat stuck on a script that cannot apply.
#[test]
fn a_flushed_ruleset_is_written_again_whatever_meets_it_first() {
    let mut b = Bed::new("nw");
    let blocked = CLIENT_V4[0];
    let drop = PeerVerdict::new(Action::Drop, Reason::Reputation, 0);
    b.nft.verdict_set(blocked.parse().unwrap(), drop).unwrap();
    b.wire.assert_refused(blocked, smtp4());

    // A config that changes the rules (another screened port), in the second after a flush.
    b.wire.server.nft(&["flush", "ruleset"]);
    let mut two_ports = config();
    two_ports.set_ports(&[25, 2525]);
    b.nft
        .set_config(&two_ports)
        .unwrap_or_else(|e| panic!("the heartbeat after a flush, with new rules: {e:#}"));
    b.wire.assert_refused(blocked, smtp4());
    b.wire
        .assert_refused(blocked, format!("{SERVER_V4}:2525").parse().unwrap());
    // And the beats after it go on.
    b.nft.set_config(&two_ports).unwrap();

    // An interface back (rehooked) in the second after a flush: the rehook refuses to make
    // an empty table, and the heartbeat writes the whole one again.
    b.wire.server.nft(&["flush", "ruleset"]);
    assert!(b.nft.rehook().is_err(), "rehooking a deleted table");
    assert!(!b.nft_list().contains("table netdev mxscreen"));
    b.nft.set_config(&config()).unwrap();
    b.wire.assert_refused(blocked, smtp4());

    // SYNs refused after a heartbeat's reading and read by `stats` (or a scrape): the
    // rebuilt table's counter starts from that heartbeat's reading, and reads no lower.
    b.nft.set_config(&config()).unwrap();
    b.wire.assert_refused(blocked, smtp4());
    let read = b.count(Counter::DroppedVerdict);
    b.wire.server.nft(&["flush", "ruleset"]);
    b.nft.set_config(&config()).unwrap();
    assert!(
        b.count(Counter::DroppedVerdict) >= read,
        "dropped_verdict went back from {read}"
    );
}

/// A verdict map holds `datapath.maps.verdicts` elements a family and, unlike the eBPF
/// datapath's LRU map, refuses one over its size: a new source's verdict into a full map
/// makes room (pass verdicts first, then those expiring soonest) instead of failing, as every
/// new verdict did while the daemon's bookkeeping held it as written.
#[test]
fn a_full_verdict_map_makes_room_for_new_verdicts() {
    let size = 256;
    let mut b = Bed::with_sizes(
        "nv",
        MapSizes {
            peers: size,
            ..MapSizes::small()
        },
    );
    let blocked: IpAddr = CLIENT_V6[0].parse().unwrap();
    let drop = PeerVerdict::new(Action::Drop, Reason::Reputation, 0);
    b.nft.verdict_set(blocked, drop).unwrap();
    let pass = PeerVerdict::new(Action::Pass, Reason::Reputation, 0);
    let filler = |i: u32| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, i as u16 + 1));
    for i in 0..size - 1 {
        b.nft.verdict_set(filler(i), pass).unwrap();
    }
    // Full: one more source's verdict makes room, and the two after it go in as well.
    for i in size - 1..size + 2 {
        b.nft
            .verdict_set(filler(i), pass)
            .unwrap_or_else(|e| panic!("a verdict into the full map: {e:#}"));
    }
    let held = b.nft.verdicts();
    let evicted = (size / 64) as usize;
    assert_eq!(held.len(), size as usize - evicted + 3);
    assert!(
        held.iter().any(|(ip, _)| *ip == blocked),
        "the drop verdict stays"
    );
    assert!(
        held.iter().any(|(ip, _)| *ip == filler(size + 1)),
        "the newest verdict is in"
    );
    b.wire.assert_refused(CLIENT_V6[0], smtp6());
    // The kernel holds what the bookkeeping does.
    let map = b
        .wire
        .server
        .nft(&["list", "map", "netdev", "mxscreen", "verdict6"]);
    assert_eq!(map.matches("2001:db8:").count(), held.len(), "{map}");
}

/// The daemon sets every own entry again at each reload: one set again as it was keeps its
/// hits (as the eBPF datapath's do), an exact address and a prefix alike.
#[test]
fn an_entry_set_again_unchanged_keeps_its_hits() {
    let mut b = Bed::new("nk");
    let (exact, in_prefix) = (CLIENT_V6[0], CLIENT_V4[0]);
    let prefix: IpNet = format!("{in_prefix}/24").parse().unwrap();
    // What a reload does: both entries set as they are.
    let deny_both = |b: &mut Bed| {
        for n in [net(exact), prefix.trunc()] {
            b.nft.list_insert(ListKind::Deny, n, manual()).unwrap();
        }
    };
    deny_both(&mut b);
    b.wire.assert_refused(exact, smtp6());
    b.wire.assert_refused(in_prefix, smtp4());
    let hits = |b: &Bed, ip: &str| {
        b.nft
            .list_match(Table::Deny, ip.parse().unwrap())
            .unwrap()
            .expect("listed")
            .hits
    };
    let before = [hits(&b, exact), hits(&b, in_prefix)];
    assert!(before.iter().all(|n| *n >= 1), "{before:?}");
    deny_both(&mut b);
    assert_eq!([hits(&b, exact), hits(&b, in_prefix)], before);
    b.wire.assert_refused(exact, smtp6());
    b.wire.assert_refused(in_prefix, smtp4());
}

/// The decision map (one lookup for a source an exact element decides, the precedence
/// resolved by the daemon) and the cache of unknown reported sources follow every change
/// that can alter a decision.
#[test]
fn decisions_follow_list_changes() {
    let mut b = Bed::new("nd");
    let c = CLIENT_V6[0];
    let ip: IpAddr = c.parse().unwrap();
    // Unknown and reported (so cached): a deny prefix over it refuses it at once.
    b.wire.assert_connects(c, smtp6());
    b.wire.assert_connects(c, smtp6());
    let prefix = net("2001:db8:1::/64");
    b.nft.list_insert(ListKind::Deny, prefix, manual()).unwrap();
    b.wire.assert_refused(c, smtp6());
    // Its pass verdict does not beat the deny prefix; once the prefix goes, it decides.
    b.nft
        .verdict_set(ip, PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
        .unwrap();
    b.wire.assert_refused(c, smtp6());
    assert!(b.nft.list_remove(ListKind::Deny, prefix).unwrap());
    b.wire.assert_connects(c, smtp6());
    assert!(b.nft.verdict_get(ip).unwrap().unwrap().hits >= 1);
    // A drop feed's host entry beats the verdict, an allow prefix beats the feed.
    let host = match ip {
        IpAddr::V6(a) => PrefixSet::from_unsorted(Vec::new(), vec![(a.to_bits(), 128)]),
        IpAddr::V4(_) => unreachable!(),
    };
    b.nft.feed_load("drop", Table::Deny, host).unwrap();
    b.wire.assert_refused(c, smtp6());
    let wide = net("2001:db8::/32");
    b.nft.list_insert(ListKind::Allow, wide, manual()).unwrap();
    b.wire.assert_connects(c, smtp6());
    assert!(b.nft.list_remove(ListKind::Allow, wide).unwrap());
    b.wire.assert_refused(c, smtp6());
    assert!(b.nft.feed_hits("drop").unwrap() >= 2);
    b.nft.feed_drop("drop").unwrap();
    b.wire.assert_connects(c, smtp6());
    assert!(b.count(Counter::DroppedDeny) >= 2);
}

/// A source with two exact elements: a temporary /128 allow entry decides it while it lasts
/// (its decision element expires with it); once the kernel expires the entry, before the
/// daemon next looks at its lists, the source's drop verdict decides. Its SYNs reach the
/// verdict through the whole walk, where the exact set sends them: every other source's
/// walk skips the exact sets and the verdict map. A source whose one exact element decides
/// it is not in that set.
#[test]
fn an_exact_element_outliving_the_deciding_one_decides_next() {
    let mut b = Bed::new("nx");
    let c = CLIENT_V6[0];
    let ip: IpAddr = c.parse().unwrap();
    let exact = |b: &Bed| {
        b.wire
            .server
            .nft(&["list", "set", "netdev", mxscreen::nftables::TABLE, "exact6"])
    };
    b.nft
        .verdict_set(ip, PeerVerdict::new(Action::Drop, Reason::Reputation, 0))
        .unwrap();
    b.wire.assert_refused(c, smtp6());
    assert!(!exact(&b).contains(c), "one exact element: {}", exact(&b));
    let soon = clock::expiry_after(Duration::from_secs(2));
    b.nft
        .list_insert(
            ListKind::Allow,
            net(c),
            ListEntry::new(Reason::Manual, soon),
        )
        .unwrap();
    assert!(exact(&b).contains(c), "two exact elements: {}", exact(&b));
    b.wire.assert_connects(c, smtp6());
    let dropped = b.count(Counter::DroppedVerdict);
    std::thread::sleep(Duration::from_millis(2300));
    b.wire.assert_refused(c, smtp6());
    assert!(b.count(Counter::DroppedVerdict) > dropped);
    // The daemon's own removal of the entry: the verdict decides alone again.
    b.nft.list_remove(ListKind::Allow, net(c)).unwrap();
    assert!(!exact(&b).contains(c), "{}", exact(&b));
    b.wire.assert_refused(c, smtp6());
}

/// A feed's /128 entry is written in the feed's own map only for a source that takes the whole
/// walk (the exact set): every other one's decision element decides it, and its walk skips
/// that map, so a host-heavy feed (FireHOL's are) is held once, not twice. The element comes
/// as its source enters the exact set and goes as it leaves, and the whole walk still finds
/// it once the kernel expires what decided before.
#[test]
fn a_feeds_host_entry_is_in_its_map_only_while_its_source_takes_the_whole_walk() {
    let mut b = Bed::new("nh");
    let (c, d) = (CLIENT_V6[0], CLIENT_V6[1]);
    let host = |a: &str| (a.parse::<Ipv6Addr>().unwrap().to_bits(), 128);
    let feed = PrefixSet::from_unsorted(Vec::new(), vec![host(c), host(d)]);
    b.nft.feed_load("drop", Table::Deny, feed.clone()).unwrap();
    let listed = |b: &Bed, what: &str, set: &str| {
        b.wire
            .server
            .nft(&["list", what, "netdev", mxscreen::nftables::TABLE, set])
    };
    let map = |b: &Bed| listed(b, "map", "feed_deny6_128");
    // Declared (the length is in use), empty: both decide in the decision map.
    assert!(!map(&b).contains(c) && !map(&b).contains(d), "{}", map(&b));
    assert!(
        listed(&b, "map", "decide6").contains(c),
        "{}",
        listed(&b, "map", "decide6")
    );
    b.wire.assert_refused(c, smtp6());
    b.wire.assert_refused(d, smtp6());
    // An allow prefix over `c` for two seconds: `c` is left to the walk, its feed entry
    // written for it; `d` unchanged.
    let soon = clock::expiry_after(Duration::from_secs(2));
    let wide = net("2001:db8:1::/64");
    b.nft
        .list_insert(ListKind::Allow, wide, ListEntry::new(Reason::Manual, soon))
        .unwrap();
    assert!(
        listed(&b, "set", "exact6").contains(c),
        "{}",
        listed(&b, "set", "exact6")
    );
    assert!(map(&b).contains(c), "{}", map(&b));
    b.wire.assert_connects(c, smtp6());
    // The kernel expires the prefix before the daemon looks: the walk finds the feed's entry.
    std::thread::sleep(Duration::from_millis(2300));
    b.wire.assert_refused(c, smtp6());
    // The daemon's removal: `c` decides in the decision map again, its entry leaves the map.
    assert!(b.nft.list_remove(ListKind::Allow, wide).unwrap());
    assert!(!map(&b).contains(c), "{}", map(&b));
    b.wire.assert_refused(c, smtp6());
    // A verdict beside the feed's entry (two exact elements): in the map while it lasts; the
    // feed, looked up first, decides.
    let ip: IpAddr = d.parse().unwrap();
    b.nft
        .verdict_set(ip, PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
        .unwrap();
    assert!(map(&b).contains(d), "{}", map(&b));
    b.wire.assert_refused(d, smtp6());
    // The feed reloaded without `d` while `d` takes the walk: its entry goes with it, the
    // verdict decides.
    let without_d = PrefixSet::from_unsorted(Vec::new(), vec![host(c)]);
    b.nft.feed_load("drop", Table::Deny, without_d).unwrap();
    assert!(!map(&b).contains(d), "{}", map(&b));
    b.wire.assert_connects(d, smtp6());
    // And back: the entry returns (the source takes the walk again); the verdict's removal
    // takes it out once more.
    b.nft.feed_load("drop", Table::Deny, feed).unwrap();
    assert!(map(&b).contains(d), "{}", map(&b));
    b.wire.assert_refused(d, smtp6());
    assert!(b.nft.verdict_remove(ip).unwrap());
    assert!(!map(&b).contains(d), "{}", map(&b));
    b.wire.assert_refused(d, smtp6());
    assert!(b.nft.feed_hits("drop").unwrap() >= 5);
}

/// The elements of one of the table's sets or maps as `(key, goto target)`; none if the set
/// is not declared (its length not in use).
fn elements(b: &Bed, what: &str, name: &str) -> Vec<(String, Option<String>)> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &b.wire.server.name,
            "nft",
            "-j",
            "list",
            what,
        ])
        .args(["netdev", mxscreen::nftables::TABLE, name])
        .output()
        .unwrap();
    if !out.status.success() {
        // Not declared is empty; any other failure (no nft, a bad listing) is the test's.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No such file or directory"),
            "nft list {what} {name}: {err}"
        );
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let val = |k: &serde_json::Value| {
        k.as_str()
            .or_else(|| k["elem"]["val"].as_str())
            .unwrap_or_else(|| panic!("{k}"))
            .to_owned()
    };
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o[what]["elem"].as_array())
        .flatten()
        .map(|e| match e.as_array() {
            Some(pair) => (
                val(&pair[0]),
                pair[1]["goto"]["target"].as_str().map(str::to_owned),
            ),
            None => (val(e), None),
        })
        .collect()
}

/// Feeds' host entries against the exact set through a long mixed run of the writes that
/// move them (feed loads, reloads and drops of two drop feeds and an allow feed, allow
/// prefixes and hosts, verdicts of every action, the table written again after a firewall
/// reload deleted it): after each, every feed's /32 map holds
/// exactly the exact set's sources a feed of its kind lists, each pointing to the first
/// loaded feed that lists it.
#[test]
fn feeds_host_maps_follow_the_exact_set_through_every_write() {
    let mut b = Bed::new("nw");
    let hosts: Vec<String> = (1..=8).map(|i| format!("198.51.100.{i}")).collect();
    let quads = ["198.51.100.0/30", "198.51.100.4/30"];
    // (name, table, id, hosts listed), in load order, as the backend numbers and ranks them.
    let mut feeds: Vec<(&str, Table, u32, Vec<String>)> = Vec::new();
    let mut next_id = 0;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    // Steps after which some source's host entry was in a map: the run must reach them.
    let mut held = 0;
    let mut roll = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for step in 0..300 {
        let host = hosts[roll(8) as usize].clone();
        match roll(9) {
            op @ 0..=2 => {
                let (name, table) =
                    [("a", Table::Deny), ("b", Table::Deny), ("c", Table::Allow)][op as usize];
                let listed: Vec<String> = hosts.iter().filter(|_| roll(2) == 0).cloned().collect();
                let mut v4: Vec<u64> = listed
                    .iter()
                    .map(|h| {
                        PrefixSet::pack_v4(u32::from(h.parse::<std::net::Ipv4Addr>().unwrap()), 32)
                    })
                    .collect();
                if roll(4) == 0 {
                    v4.push(PrefixSet::pack_v4(
                        u32::from_be_bytes([198, 51, 100, 0]),
                        30,
                    ));
                }
                b.nft
                    .feed_load(name, table, PrefixSet::from_unsorted(v4, Vec::new()))
                    .unwrap();
                match feeds.iter_mut().find(|f| f.0 == name) {
                    Some(f) => f.3 = listed,
                    None => {
                        next_id += 1;
                        feeds.push((name, table, next_id, listed));
                    }
                }
            }
            3 => {
                let n = if roll(2) == 0 {
                    net(&host)
                } else {
                    net(quads[roll(2) as usize])
                };
                b.nft.list_insert(ListKind::Allow, n, manual()).unwrap();
            }
            4 => {
                let n = if roll(2) == 0 {
                    net(&host)
                } else {
                    net(quads[roll(2) as usize])
                };
                b.nft.list_remove(ListKind::Allow, n).unwrap();
            }
            5 => {
                let action = [Action::Drop, Action::Pass, Action::Limit][roll(3) as usize];
                b.nft
                    .verdict_set(
                        host.parse().unwrap(),
                        PeerVerdict::new(action, Reason::Reputation, 0),
                    )
                    .unwrap();
            }
            6 => {
                b.nft.verdict_remove(host.parse().unwrap()).unwrap();
            }
            7 => {
                let name = ["a", "b", "c"][roll(3) as usize];
                b.nft.feed_drop(name).unwrap();
                feeds.retain(|f| f.0 != name);
            }
            _ => {
                // A firewall reload: the next heartbeat writes the table again whole (the
                // feeds keep their ids and order).
                b.wire.server.nft(&["flush", "ruleset"]);
                b.nft.set_config(&config()).unwrap();
            }
        }
        let exact: Vec<String> = elements(&b, "set", "exact4")
            .into_iter()
            .map(|e| e.0)
            .collect();
        for (table, map) in [
            (Table::Deny, "feed_deny4_32"),
            (Table::Allow, "feed_allow4_32"),
        ] {
            let mut want: Vec<(String, Option<String>)> = exact
                .iter()
                .filter_map(|h| {
                    let f = feeds.iter().find(|f| f.1 == table && f.3.contains(h))?;
                    Some((h.clone(), Some(format!("feed_{}", f.2))))
                })
                .collect();
            let mut got = elements(&b, "map", map);
            want.sort();
            got.sort();
            assert_eq!(
                got, want,
                "step {step}: {map} against the exact set {exact:?}"
            );
            held += usize::from(!got.is_empty());
        }
    }
    assert!(held >= 50, "only {held} steps had a host entry in a map");
}

#[test]
fn explained_refusals_let_one_syn_through_per_window() {
    let mut b = Bed::new("ne");
    let mut cfg = config();
    cfg.explain_window_ns = 3_600_000_000_000;
    b.nft.set_config(&cfg).unwrap();
    let c = CLIENT_V6[0];
    let explained = || {
        let mut v = PeerVerdict::new(Action::Drop, Reason::Reputation, 0);
        v.flags = filter_common::VERDICT_EXPLAIN;
        v
    };
    // No MTA asking (FLAG_EXPLAIN clear): nothing is explained.
    b.nft.verdict_set(c.parse().unwrap(), explained()).unwrap();
    b.wire.assert_refused(c, smtp6());
    assert_eq!(b.count(Counter::Explained), 0);
    // An MTA asks: the first SYN after the verdict goes through, the next is dropped.
    cfg.flags |= FLAG_EXPLAIN;
    b.nft.set_config(&cfg).unwrap();
    b.nft.verdict_set(c.parse().unwrap(), explained()).unwrap();
    // When the next one is explained (what `check` says): its next SYN, until one goes
    // through; then a window from now (the kernel's element, which the rule itself added).
    let next_at = |b: &Bed| {
        let v = b.nft.verdict_get(c.parse().unwrap()).unwrap().unwrap();
        v.explain_at_ns
    };
    assert_eq!(next_at(&b), 0, "its next SYN is explained");
    b.wire.assert_connects(c, smtp6());
    b.wire.assert_refused(c, smtp6());
    assert_eq!(b.count(Counter::Explained), 1);
    let left = Duration::from_nanos(next_at(&b).saturating_sub(clock::now_ns()));
    assert!(
        left > Duration::from_secs(3_500) && left <= Duration::from_secs(3_600),
        "the next explained SYN in {left:?}, for a window of 1 h"
    );
    // A new verdict explains again; one not marked for explaining (a sender without
    // FCrDNS) and a manual drop never do.
    b.nft.verdict_set(c.parse().unwrap(), explained()).unwrap();
    b.wire.assert_connects(c, smtp6());
    for unmarked in [
        PeerVerdict::new(Action::Drop, Reason::Reputation, 0),
        PeerVerdict::new(Action::Drop, Reason::Manual, 0),
    ] {
        b.nft.verdict_set(c.parse().unwrap(), unmarked).unwrap();
        b.wire.assert_refused(c, smtp6());
    }
}

#[test]
fn limit_class_is_a_token_bucket_per_source() {
    let mut b = Bed::new("nl");
    let (a, c) = (CLIENT_V4[0], CLIENT_V4[1]);
    b.nft
        .verdict_set(
            a.parse().unwrap(),
            PeerVerdict::new(Action::Limit, Reason::Reputation, 0),
        )
        .unwrap();
    // Burst 2 at 1 per minute: two connections, then refused.
    b.wire.assert_connects(a, smtp4());
    b.wire.assert_connects(a, smtp4());
    b.wire.assert_refused(a, smtp4());
    assert_eq!(b.count(Counter::PassedLimit), 2);
    assert!(b.count(Counter::Limited) >= 1);
    // Its hits: every SYN it decided, once — the ones over the rate (counted by its decision
    // element, which holds its bucket) and the ones it passed (by the verdict map's, in the
    // walk; the decision element's lookup did not match them).
    let hits = b.nft.verdict_get(a.parse().unwrap()).unwrap().unwrap().hits;
    let decided = b.count(Counter::PassedLimit) + b.count(Counter::Limited);
    assert_eq!(hits, decided, "{hits} hits of {decided} SYNs");
    // So the limit verdict's element has a counter; a drop verdict's has none (its decision
    // element counts every SYN it decides): one per-CPU counter a verdict, not two.
    let dropped = "198.51.100.7";
    b.nft
        .verdict_set(
            dropped.parse().unwrap(),
            PeerVerdict::new(Action::Drop, Reason::Reputation, 0),
        )
        .unwrap();
    let table = b.nft_list();
    assert!(
        element(&table, "verdict4", a).contains(" counter packets "),
        "{table}"
    );
    assert!(
        !element(&table, "verdict4", dropped).contains("counter"),
        "{table}"
    );
    assert!(
        element(&table, "decide4", dropped).contains(" counter packets "),
        "{table}"
    );
    // A new rate or burst is a new bucket for every limited source, at once.
    let mut c5 = config();
    c5.set_limit(1, 5);
    b.nft.set_config(&c5).unwrap();
    for _ in 0..5 {
        b.wire.assert_connects(a, smtp4());
    }
    b.wire.assert_refused(a, smtp4());
    // Rewriting its decision element for the new bucket lost none of its hits.
    let hits = b.nft.verdict_get(a.parse().unwrap()).unwrap().unwrap().hits;
    let decided = b.count(Counter::PassedLimit) + b.count(Counter::Limited);
    assert_eq!(
        hits, decided,
        "after the new bucket: {hits} hits of {decided} SYNs"
    );
    b.nft.set_config(&config()).unwrap();
    // A limit feed: the same bucket, whatever the reputation says; per source.
    let feed = PrefixSet::from_unsorted(
        vec![PrefixSet::pack_v4(u32::from_be_bytes([192, 0, 2, 0]), 24)],
        Vec::new(),
    );
    b.nft.feed_load("limited", Table::Limit, feed).unwrap();
    b.wire.assert_connects(c, smtp4());
    b.wire.assert_connects(c, smtp4());
    b.wire.assert_refused(c, smtp4());
    assert!(b.nft.feed_hits("limited").unwrap() >= 3);
}

#[test]
fn feeds_load_replace_and_drop() {
    let mut b = Bed::new("nf");
    let (a, c) = (CLIENT_V4[0], CLIENT_V6[1]);
    let v6: u128 = "2001:db8:1::".parse::<Ipv6Addr>().unwrap().to_bits();
    let set = |v4: Vec<(u32, u8)>, v6: Vec<(u128, u8)>| {
        PrefixSet::from_unsorted(
            v4.into_iter()
                .map(|(n, l)| PrefixSet::pack_v4(n, l))
                .collect(),
            v6,
        )
    };
    let first = set(
        vec![
            (u32::from_be_bytes([192, 0, 2, 1]), 32),
            (u32::from_be_bytes([198, 51, 100, 0]), 24),
        ],
        vec![(v6, 64)],
    );
    let change = b.nft.feed_load("drop", Table::Deny, first).unwrap();
    assert_eq!((change.added, change.removed), (3, 0));
    b.wire.assert_refused(a, smtp4());
    b.wire.assert_refused(c, smtp6());
    assert!(b.count(Counter::DroppedFeed) >= 2);
    assert!(b.nft.feed_hits("drop").unwrap() >= 2);
    // The /32 decides in the decision map, its SYNs counted per feed (just above), not per
    // element: no per-CPU counter for each of a big feed's addresses.
    let table = b.nft_list();
    assert!(
        element(&table, "decide4", a).ends_with(&format!("{a} : goto feed_1")),
        "{table}"
    );
    assert_eq!(
        b.nft.feeds_listing(Table::Deny, net("2001:db8:1::/64")),
        vec!["drop".to_owned()]
    );
    // A feed's per-length maps are unsized: the kernel's resizable hash, grown with what they
    // hold, not a bucket array for the lists' whole size allocated for each length in use.
    let map = b
        .wire
        .server
        .nft(&["-t", "list", "map", "netdev", "mxscreen", "feed_deny4_24"]);
    assert!(!map.contains("size"), "{map}");
    // An allow entry beats the feed.
    b.nft
        .list_insert(ListKind::Allow, net(c), manual())
        .unwrap();
    let own = b
        .wire
        .server
        .nft(&["list", "set", "netdev", "mxscreen", "allow6_128"]);
    assert!(
        own.contains("size"),
        "the operator's sets keep their bound: {own}"
    );
    b.wire.assert_connects(c, smtp6());
    // Reloaded without 192.0.2.1 and the /64: they pass; an unchanged reload writes nothing.
    let second = set(
        vec![(u32::from_be_bytes([198, 51, 100, 0]), 24)],
        Vec::new(),
    );
    let change = b
        .nft
        .feed_load("drop", Table::Deny, second.clone())
        .unwrap();
    assert_eq!((change.added, change.removed), (0, 2));
    b.wire.assert_connects(a, smtp4());
    assert_eq!(
        b.nft.feed_load("drop", Table::Deny, second).unwrap().writes,
        0
    );
    b.nft.feed_drop("drop").unwrap();
    let table = b.nft_list();
    assert!(!table.contains("feed_deny4_24"), "{table}");
}

#[test]
fn a_million_prefix_feed_loads_in_batches() {
    let base = 0x2001_0db8_8000_0000_0000_0000_0000_0000u128;
    let listed: u128 = "2001:db8:1::".parse::<Ipv6Addr>().unwrap().to_bits();
    let mut v6: Vec<(u128, u8)> = (0..999_999u128).map(|i| (base | (i << 64), 64)).collect();
    v6.push((listed, 64));
    let feed = PrefixSet::from_unsorted(Vec::new(), v6);
    // Too big for the small sets: refused whole, nothing written.
    let mut small = Bed::new("nn");
    let err = small
        .nft
        .feed_load("big", Table::Deny, feed.clone())
        .unwrap_err();
    assert!(format!("{err:#}").contains("do not fit"), "{err:#}");
    small.wire.assert_connects(CLIENT_V6[0], smtp6());
    drop(small);
    let mut b = Bed::with_sizes("nm", MapSizes::default());
    let t = Instant::now();
    let change = b.nft.feed_load("big", Table::Deny, feed).unwrap();
    eprintln!("a million prefixes loaded in {:.1?}", t.elapsed());
    assert_eq!(change.added, 1_000_000);
    // A map made holding this many is the fixed hash (sized), where its buckets cost less
    // than the resizable hash's larger elements (`ruleset::SIZED_FROM`).
    let map = b
        .wire
        .server
        .nft(&["-t", "list", "map", "netdev", "mxscreen", "feed_deny6_64"]);
    assert!(map.contains("size 1114112"), "{map}");
    b.wire.assert_refused(CLIENT_V6[0], smtp6());
    b.wire.assert_connects(CLIENT_V4[0], smtp4());
}

#[test]
fn new_peers_are_reported_once_per_dedup_window() {
    let mut b = Bed::new("nr");
    let (a, c) = (CLIENT_V4[0], CLIENT_V6[0]);
    b.wire.assert_connects(a, smtp4());
    b.wire.assert_connects(c, smtp6());
    b.wire.assert_connects(a, smtp4());
    std::thread::sleep(Duration::from_millis(100));
    let mut peers = b.log.drain().unwrap_or_default();
    peers.sort_by_key(|p| p.ip);
    let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip).collect();
    assert_eq!(ips, vec![a.parse::<IpAddr>().unwrap(), c.parse().unwrap()]);
    assert!(
        peers.iter().all(|p| p.dst_port == 25 && p.ifindex != 0),
        "{peers:?}"
    );
    assert_eq!(b.count(Counter::EventsEmitted), 2);
    assert_eq!(b.count(Counter::Unknown), 3);
    // Nothing for other ports.
    b.wire
        .assert_connects(CLIENT_V4[1], format!("{SERVER_V4}:2525").parse().unwrap());
    assert!(b.log.drain().is_err());
}

/// The screened ports are the config's, changed at run time (SIGHUP rewrites the config):
/// a denied source is refused on each screened port and reaches every other.
#[test]
fn screened_ports_follow_the_config() {
    let mut b = Bed::new("nP");
    let a = CLIENT_V6[0];
    b.nft.list_insert(ListKind::Deny, net(a), manual()).unwrap();
    let other = || -> SocketAddr { format!("[{SERVER_V6}]:2525").parse().unwrap() };
    b.wire.assert_refused(a, smtp6());
    b.wire.assert_connects(a, other());
    let mut cfg = config();
    cfg.set_ports(&[25, 2525]);
    b.nft.set_config(&cfg).unwrap();
    b.wire.assert_refused(a, smtp6());
    b.wire.assert_refused(a, other());
    cfg.set_ports(&[2525]);
    b.nft.set_config(&cfg).unwrap();
    b.wire.assert_connects(a, smtp6());
    b.wire.assert_refused(a, other());
    // No port: nothing is screened.
    cfg.set_ports(&[]);
    b.nft.set_config(&cfg).unwrap();
    b.wire.assert_connects(a, smtp6());
    b.wire.assert_connects(a, other());
}

/// A second backend in a namespace where one runs is refused before it touches the table,
/// and says why: the kernel's EPERM for a held NFLOG group reads like a missing capability.
#[test]
fn a_second_backend_in_one_namespace_is_refused_saying_why() {
    let mut b = Bed::new("n2");
    let a = CLIENT_V6[0];
    b.nft.list_insert(ListKind::Deny, net(a), manual()).unwrap();
    let second = b.wire.server.enter(|| Nftables::open(&Options::default()));
    let Err(e) = second else {
        panic!("a second backend opened in the same namespace");
    };
    let e = format!("{e:#}");
    assert!(
        e.contains("another process holds it") && !e.contains("CAP_NET_ADMIN"),
        "{e}"
    );
    b.wire.assert_refused(a, smtp6());
}

/// Windows of days and a token bucket that refills over days: `nft` refuses a timeout written
/// as 10^8 ms or more (27.8 h), which once failed the rules' script at every heartbeat, so
/// nothing was refused while `status` said enforcing. The rules load, and refuse.
#[test]
fn windows_of_days_load_and_the_rules_go_on_refusing() {
    let mut b = Bed::new("nW");
    let a = CLIENT_V6[0];
    b.nft.list_insert(ListKind::Deny, net(a), manual()).unwrap();
    let mut cfg = holding(3_000_000_000, 100);
    const DAY_NS: u64 = 86_400_000_000_000;
    cfg.dedup_window_ns = 2 * DAY_NS;
    cfg.explain_window_ns = 3 * DAY_NS;
    cfg.flags |= FLAG_EXPLAIN;
    // One SYN a minute, bursts of 2,000: an idle bucket is kept 2,000 minutes.
    cfg.set_limit(1, 2_000);
    b.nft
        .set_config(&cfg)
        .unwrap_or_else(|e| panic!("a config with windows of days: {e:#}"));
    let rules = b.nft_list();
    for set in ["seen6_172800000", "explained6_259200000"] {
        assert!(rules.contains(set), "no {set} in\n{rules}");
    }
    assert!(rules.contains("timeout 2d"), "{rules}");
    b.wire.assert_refused(a, smtp6());
    assert!(b.count(Counter::DroppedDeny) > 0);
}

/// What the handle holds of a source (`peer`): a reported one without a verdict is seen from
/// its report (the table keeps no first contact of its own), one with a verdict by it; a
/// source forgotten is unknown again.
#[test]
fn a_reported_source_is_seen_before_and_after_its_verdict() {
    let mut b = Bed::new("np");
    let a = CLIENT_V4[0];
    let ip: IpAddr = a.parse().unwrap();
    b.wire.assert_connects(a, smtp4());
    std::thread::sleep(Duration::from_millis(100));
    let peers = b.log.drain().unwrap();
    assert!(b.nft.peer(ip).is_none(), "nothing until the daemon is told");
    b.nft.peers_reported(&peers);
    let p = b.nft.peer(ip).expect("reported");
    assert!(p.verdict().is_none());
    assert_eq!(p.seen().map(|s| s.first_seen_ns), Some(peers[0].at_ns));
    assert!(b.nft.peer(CLIENT_V6[1].parse().unwrap()).is_none());
    b.nft
        .verdict_set(ip, PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
        .unwrap();
    let p = b.nft.peer(ip).unwrap();
    assert!(p.verdict().is_some() && p.seen().is_some());
    b.nft.verdicts_remove(&[ip]).unwrap();
    assert!(b.nft.peer(ip).is_none(), "forgotten");
}

#[test]
fn hold_drops_an_unknown_peer_until_its_verdict() {
    let mut b = Bed::new("nh");
    let cfg = holding(3_000_000_000, 0);
    b.nft.set_config(&cfg).unwrap();
    let (a, c) = (CLIENT_V4[0], CLIENT_V4[1]);
    b.wire.assert_refused(a, smtp4());
    assert_eq!(b.count(Counter::Held), 1);
    let reported = b.log.drain().unwrap();
    assert_eq!(reported[0].ip, a.parse::<IpAddr>().unwrap());
    // Its verdict arrives: the next SYN meets it.
    b.nft
        .verdict_set(
            a.parse().unwrap(),
            PeerVerdict::new(Action::Pass, Reason::Reputation, 0),
        )
        .unwrap();
    b.wire.assert_connects(a, smtp4());
    // Without a verdict, the hold ends after hold_max; a connection whose SYN is
    // retransmitted after it completes.
    b.wire.assert_refused(c, smtp4());
    std::thread::sleep(Duration::from_millis(3100));
    b.wire.assert_connects(c, smtp4());
}

/// Raw SYNs to port 25 from `sources` (sent at once, as a flood's), and what the table
/// counted and reported meanwhile: (events emitted, over budget, held, reports).
fn syns_from(b: &mut Bed, flood: &Flood, sources: &[IpAddr]) -> (u64, u64, u64, Vec<NewPeer>) {
    let frames: Vec<Vec<u8>> = sources.iter().map(|ip| Frame::syn(*ip).build()).collect();
    let [held, _, emitted, over] = b.sent(
        flood,
        &frames,
        [
            Counter::Held,
            Counter::Unknown,
            Counter::EventsEmitted,
            Counter::EventsOverBudget,
        ],
        2,
    );
    std::thread::sleep(Duration::from_millis(100));
    let reports = b.log.drain().unwrap_or_default();
    (emitted, over, held, reports)
}

/// `n` IPv6 sources of a spoofed flood, 2001:db8:BLOCK::1 on.
fn spoofed_v6(block: u16, n: u32) -> Vec<IpAddr> {
    (1..=u128::from(n))
        .map(|i| {
            IpAddr::from(Ipv6Addr::from(
                (0x2001_0db8_u128 << 96 | u128::from(block) << 80) | i,
            ))
        })
        .collect()
}

fn documentation_sources(n: u8) -> Vec<IpAddr> {
    (1..=n).map(|i| IpAddr::from([198, 51, 100, i])).collect()
}

/// Reports say why (a first SYN, or a source again), and are spent from a budget with a
/// bucket for first SYNs and one for the rest, as the eBPF datapath's: a flood of new
/// sources spends the first, and a held real sender's retransmit is still reported, from the
/// second. A source over the budget is held all the same.
#[test]
fn a_first_syn_flood_cannot_spend_the_budget_of_retransmits() {
    let mut b = Bed::new("nb");
    let cfg = holding(3_000_000_000, 3);
    b.nft.set_config(&cfg).unwrap();
    let flood = Flood::new(&b.wire.client, "vc");
    let real = IpAddr::from([203, 0, 113, 7]);
    let (emitted, over, held, reports) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (1, 0, 1));
    assert_eq!((reports[0].ip, reports[0].why), (real, EventWhy::First));
    // Past AGAIN_AFTER (0.8 s), and the first bucket full again: a flood of 20 new sources.
    std::thread::sleep(Duration::from_millis(1000));
    let sources = documentation_sources(20);
    let (emitted, over, held, reports) = syns_from(&mut b, &flood, &sources);
    assert!((3..=4).contains(&emitted), "{emitted} of 20 reported");
    assert_eq!(
        (over, held),
        (20 - emitted, 20),
        "over the budget, and held"
    );
    assert_eq!(reports.len() as u64, emitted);
    assert!(
        reports.iter().all(|r| r.why == EventWhy::First),
        "{reports:?}"
    );
    // The real sender's retransmit: reported again, from the bucket the flood did not spend.
    let (emitted, over, held, reports) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (1, 0, 1));
    assert_eq!((reports[0].ip, reports[0].why), (real, EventWhy::Again));
    // Again within AGAIN_AFTER: held, not reported.
    assert_eq!(syns_from(&mut b, &flood, &[real]).0, 0);
}

/// A flood of more new sources than the report set holds (4,096 with the tests' sizes)
/// cannot fill it: only the budget's few are marked reported, so a new real sender after it
/// is still reported (where every flooded source used to be marked, and a full set passed
/// new senders unreported for the dedup window).
#[test]
fn a_flood_of_new_sources_leaves_room_to_report_a_real_sender() {
    let mut b = Bed::new("nf");
    let mut cfg = config();
    cfg.events_per_s = 100;
    b.nft.set_config(&cfg).unwrap();
    let flood = Flood::new(&b.wire.client, "vc");
    let spoofed = spoofed_v6(5, 5000);
    let (emitted, over, _, _) = syns_from(&mut b, &flood, &spoofed);
    assert!(
        emitted < 200 && over > 4800,
        "{emitted} reported, {over} over"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let real = IpAddr::from([203, 0, 113, 9]);
    let (emitted, _, _, reports) = syns_from(&mut b, &flood, &[real]);
    assert_eq!(emitted, 1);
    assert_eq!((reports[0].ip, reports[0].why), (real, EventWhy::First));
    assert_eq!(b.count(Counter::EventsLost), 0);
}

/// Reports the NFLOG socket had no room for (the daemon busy, a flood of new sources) are
/// counted in `events_lost`, as a full event ring is on eBPF: what the kernel dropped, so
/// every report the rules sent is either read or counted lost.
#[test]
fn reports_a_full_socket_lost_are_counted() {
    let mut b = Bed::with_sizes("nw", MapSizes::default());
    let flood = Flood::new(&b.wire.client, "vc");
    let sources = spoofed_v6(7, 20_000);
    let frames: Vec<Vec<u8>> = sources.iter().map(|ip| Frame::syn(*ip).build()).collect();
    // Not read meanwhile: the socket fills.
    let [_, emitted] = b.sent(
        &flood,
        &frames,
        [Counter::Unknown, Counter::EventsEmitted],
        1,
    );
    assert_eq!(emitted, 20_000, "every source reported by the rules");
    let mut read = 0;
    while let Ok(r) = b.log.drain() {
        read += r.len() as u64;
    }
    let lost = b.count(Counter::EventsLost);
    assert!(
        lost > 0,
        "the socket never filled: {read} of {emitted} read"
    );
    assert_eq!(read + lost, emitted, "{read} read, {lost} lost");
}

/// Without `hold`, a source over the budget passes unreported, and its next SYN is reported
/// as a real sender's (from the second bucket); a reported one is not reported again.
#[test]
fn a_source_over_the_budget_is_reported_at_its_next_syn() {
    let mut b = Bed::new("nu");
    let mut cfg = config();
    cfg.events_per_s = 3;
    b.nft.set_config(&cfg).unwrap();
    let flood = Flood::new(&b.wire.client, "vc");
    let sources = documentation_sources(20);
    let (emitted, over, held, reports) = syns_from(&mut b, &flood, &sources);
    assert!((3..=4).contains(&emitted), "{emitted} of 20 reported");
    assert_eq!((over, held), (20 - emitted, 0));
    assert!(
        reports.iter().all(|r| r.why == EventWhy::First),
        "{reports:?}"
    );
    let first: Vec<IpAddr> = reports.iter().map(|r| r.ip).collect();
    std::thread::sleep(Duration::from_millis(1100));
    let (again, over, _, reports) = syns_from(&mut b, &flood, &sources);
    assert!((3..=4).contains(&again), "{again} reported again");
    assert_eq!(over, 20 - emitted - again);
    assert!(
        reports
            .iter()
            .all(|r| r.why == EventWhy::Again && !first.contains(&r.ip)),
        "{reports:?}"
    );
}

/// The new sources of a spoofed flood over the budget fill the holding set (4,096 with the
/// tests' sizes, 256 Ki by default: a flood of ~87,000 SYNs a second within `hold_max`). A
/// new source then is one the set cannot remember: held, its next SYN would be a first
/// contact again and held again for as long as the flood lasts. It passes instead (fail
/// open: no hold beyond `hold_max`).
#[test]
fn a_source_the_full_holding_set_cannot_remember_passes() {
    let mut b = Bed::new("nh");
    let cfg = holding(10_000_000_000, 2);
    b.nft.set_config(&cfg).unwrap();
    let flood = Flood::new(&b.wire.client, "vc");
    let spoofed = spoofed_v6(6, 5000);
    let (emitted, over, held, _) = syns_from(&mut b, &flood, &spoofed);
    assert!(
        emitted < 10 && over > 4990,
        "{emitted} reported, {over} over"
    );
    assert_eq!(held, 4096, "the holding set's size");
    // A new source of the same family (an IPv6 one: the flood's), over the budget.
    let real = IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0x7, 0, 0, 0, 0, 11));
    let (emitted, over, held, _) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (0, 1, 0));
}

/// A source held over the budget and never reported (both buckets spent) is held within
/// `hold_max` of its first SYN, as in the eBPF datapath: once its hold is over its next SYN
/// passes, reported as a real sender's from the second bucket, and is not held again.
#[test]
fn a_source_never_reported_is_held_no_longer_than_its_hold() {
    let mut b = Bed::new("nl");
    let cfg = holding(2_500_000_000, 3);
    b.nft.set_config(&cfg).unwrap();
    let flood = Flood::new(&b.wire.client, "vc");
    let real = IpAddr::from([203, 0, 113, 12]);
    let crowd = documentation_sources(20);
    // The four steps below take about 0.6 s; the hold is long enough for a loaded machine.
    // The first bucket spent by a crowd of new sources: the real one's first SYN is over it.
    let (emitted, _, _, _) = syns_from(&mut b, &flood, &crowd);
    assert!((3..=4).contains(&emitted), "{emitted} of 20 reported");
    let (emitted, over, held, _) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (0, 1, 1));
    // The second bucket spent by the crowd's held sources sending again: the real one's
    // retransmit is over it too.
    let (emitted, _, _, _) = syns_from(&mut b, &flood, &crowd);
    assert!(
        (3..=4).contains(&emitted),
        "{emitted} of the crowd reported again"
    );
    let (emitted, over, held, _) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (0, 1, 1));
    // Past its hold (the first bucket refilled meanwhile: it would be a new first contact).
    std::thread::sleep(Duration::from_millis(2600));
    let (emitted, over, held, reports) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (1, 0, 0));
    assert_eq!((reports[0].ip, reports[0].why), (real, EventWhy::Again));
    // Reported: passed within the dedup window, neither held nor reported again.
    let (emitted, over, held, _) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held), (0, 0, 0));
}

/// A source reported before and again after the dedup window is back (the eBPF datapath's
/// `EventWhy::Back`, a real sender to the engine): reported from the second bucket, which a
/// flood of first SYNs does not spend, and passed, not held (its hold was at its first SYN).
#[test]
fn a_returning_source_is_reported_back_from_the_budget_of_real_senders() {
    let mut b = Bed::new("nr");
    let mut cfg = holding(500_000_000, 3);
    cfg.dedup_window_ns = 1_000_000_000;
    b.nft.set_config(&cfg).unwrap();
    let flood = Flood::new(&b.wire.client, "vc");
    let real = IpAddr::from([203, 0, 113, 7]);
    let (emitted, _, held, reports) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, held), (1, 1));
    assert_eq!((reports[0].ip, reports[0].why), (real, EventWhy::First));
    // Past the hold and the dedup window; then a flood of new sources spends the first bucket.
    std::thread::sleep(Duration::from_millis(1200));
    let (emitted, over, _, reports) = syns_from(&mut b, &flood, &documentation_sources(20));
    assert!((3..=4).contains(&emitted), "{emitted} of 20 reported");
    assert_eq!(over, 20 - emitted);
    assert!(
        reports.iter().all(|r| r.why == EventWhy::First),
        "{reports:?}"
    );
    let [held, unknown, emitted, over] = b.sent(
        &flood,
        &[Frame::syn(real).build()],
        [
            Counter::Held,
            Counter::Unknown,
            Counter::EventsEmitted,
            Counter::EventsOverBudget,
        ],
        2,
    );
    assert_eq!((held, unknown, emitted, over), (0, 1, 1, 0));
    std::thread::sleep(Duration::from_millis(100));
    let reports = b.log.drain().unwrap_or_default();
    assert_eq!(
        reports.iter().map(|r| (r.ip, r.why)).collect::<Vec<_>>(),
        [(real, EventWhy::Back)]
    );
    // Within the window again: passed, not reported.
    let (emitted, over, held, reports) = syns_from(&mut b, &flood, &[real]);
    assert_eq!((emitted, over, held, reports.len()), (0, 0, 0, 0));
    // A new budget replaces the bucket the two chains share; none leaves none.
    cfg.events_per_s = 5;
    b.nft.set_config(&cfg).unwrap();
    let rules = b.nft_list();
    assert!(rules.contains("limit reports_again_5 {") && !rules.contains("reports_again_3"));
    cfg.events_per_s = 0;
    b.nft.set_config(&cfg).unwrap();
    assert!(!b.nft_list().contains("reports_again_"));
}

#[test]
fn observe_counts_everything_and_drops_nothing() {
    let mut b = Bed::new("no");
    let mut cfg = config();
    cfg.flags |= FLAG_OBSERVE | FLAG_HOLD;
    cfg.hold_window_ns = 3_000_000_000;
    b.nft.set_config(&cfg).unwrap();
    let (a, c) = (CLIENT_V4[0], CLIENT_V6[0]);
    b.nft.list_insert(ListKind::Deny, net(a), manual()).unwrap();
    b.nft
        .verdict_set(
            c.parse().unwrap(),
            PeerVerdict::new(Action::Limit, Reason::Reputation, 0),
        )
        .unwrap();
    b.wire.assert_connects(a, smtp4());
    for _ in 0..3 {
        b.wire.assert_connects(c, smtp6());
    }
    b.wire.assert_connects(CLIENT_V4[1], smtp4());
    assert_eq!(b.count(Counter::DroppedDeny), 1);
    assert_eq!(b.count(Counter::Limited), 1);
    assert_eq!(b.count(Counter::Held), 1);
    assert_eq!(b.count(Counter::ObservePassed), 3);
}

#[test]
fn a_stale_heartbeat_passes_everything_and_the_table_goes_at_exit() {
    let b = Bed::new("ns");
    // Another table in the namespace, which the backend must never touch.
    mxscreen_tests::receivers::run_in(&b.wire.server, "nft", &["add table inet other"], "");
    let Bed {
        wire,
        mut nft,
        log,
        _listeners,
    } = b;
    let mut cfg = config();
    cfg.stale_after_ns = 1_500_000_000;
    nft.set_config(&cfg).unwrap();
    let a = CLIENT_V4[0];
    nft.list_insert(ListKind::Deny, net(a), manual()).unwrap();
    wire.assert_refused(a, smtp4());
    std::thread::sleep(Duration::from_millis(1600));
    wire.assert_connects(a, smtp4());
    assert!(nft.counters().unwrap()[Counter::PassedStale as usize] >= 1);
    // A beat closes the gate again.
    nft.set_config(&cfg).unwrap();
    wire.assert_refused(a, smtp4());
    drop(nft);
    drop(log);
    let rules = list_ruleset(&wire.server);
    assert!(
        !rules.contains("mxscreen"),
        "the table outlived its owner:\n{rules}"
    );
    assert!(
        rules.contains("table inet other"),
        "another table was touched:\n{rules}"
    );
    wire.assert_connects(a, smtp4());
}

/// The element of `addr` in the map `map` of an `nft list ruleset` (empty: none).
fn element<'a>(ruleset: &'a str, map: &str, addr: &str) -> &'a str {
    let body = ruleset
        .split(&format!("map {map} {{"))
        .nth(1)
        .and_then(|m| m.split("\n\t}").next())
        .unwrap_or_default();
    let elements = body.split_once("elements = {").map_or("", |e| e.1);
    elements
        .split(',')
        .map(|e| e.trim().trim_end_matches('}').trim())
        .find(|e| e.starts_with(&format!("{addr} ")))
        .unwrap_or_default()
}

/// Frames sent raw (as the datapath tests' are) from denied sources, each landing in one of
/// two counters: refused (`dropped_deny`) or not subject (`passed_not_subject`).
///
/// - VLAN tags on the screened interface (a trunk): the kernel takes the outer tag off before
///   the ingress hook, so a singly tagged SYN is screened like an untagged one. A second tag
///   (QinQ) stays in the packet there: such a SYN is not recognised and passes (fail-open;
///   the README says to screen the outer VLAN's interface for QinQ, where the kernel has
///   taken the inner tag off too).
/// - IPv4 options and IPv6 extension headers: the kernel finds the TCP header past them.
/// - A first fragment carrying a SYN is screened (README), and so is an IPv6 atomic one; a
///   later fragment never is, whatever its data looks like; SYN-ACKs and ACKs never are.
#[test]
fn tagged_optioned_and_fragmented_syns() {
    let mut b = Bed::new("nv");
    let denied: [IpAddr; 2] = [CLIENT_V4[0].parse().unwrap(), CLIENT_V6[0].parse().unwrap()];
    for ip in denied {
        b.nft
            .list_insert(ListKind::Deny, IpNet::from(ip), manual())
            .unwrap();
    }
    let flood = Flood::new(&b.wire.client, "vc");
    // (refused, not subject, every other outcome) of one frame per denied source, as
    // `frame` makes it. Not subject is the table's count of everything it passes
    // unscreened, the link's own frames too (ARP, neighbour discovery, MLD reports a fresh
    // veth sends at random moments), so it is checked as at least the frames sent, with
    // every other outcome still: a frame counted nowhere else was counted not subject.
    let mut watched = Counter::ALL;
    for (at, c) in [Counter::DroppedDeny, Counter::PassedNotSubject]
        .into_iter()
        .enumerate()
    {
        let i = watched.iter().position(|w| *w == c).unwrap();
        watched.swap(at, i);
    }
    let sent = |b: &Bed, frame: &dyn Fn(IpAddr) -> Frame| {
        let frames: Vec<Vec<u8>> = denied.iter().map(|ip| frame(*ip).build()).collect();
        let grew = b.sent(&flood, &frames, watched, 2);
        (grew[0], grew[1], grew[2..].iter().sum::<u64>())
    };
    let (refused, not_subject) = ((2, 0), (0, 2));
    for tags in [0, 1, 2] {
        let screened = if tags < 2 { refused } else { not_subject };
        let what = |w: &str| format!("{tags} VLAN tags: {w}");
        counted(
            sent(&b, &|ip| Frame::syn(ip).vlans(tags)),
            screened,
            &what("SYN"),
        );
        counted(
            sent(&b, &|ip| Frame::syn(ip).vlans(tags).options()),
            screened,
            &what("SYN with IPv4 options or IPv6 extension headers"),
        );
        counted(
            sent(&b, &|ip| Frame::syn(ip).vlans(tags).fragment()),
            screened,
            &what("SYN in a first fragment"),
        );
        counted(
            sent(&b, &|ip| {
                Frame::syn(ip).vlans(tags).fragmented(Fragment::Atomic)
            }),
            screened,
            &what("SYN in an IPv6 atomic fragment (IPv4: whole)"),
        );
        // The kernel's fast payload read takes a later IPv4 fragment's data for a TCP
        // header: without the rule's offset check this one, other ports' data that looks
        // like a SYN to port 25, was refused.
        counted(
            sent(&b, &|ip| {
                Frame::syn(ip).vlans(tags).fragmented(Fragment::Later)
            }),
            not_subject,
            &what("a later fragment whose data looks like a SYN"),
        );
        counted(
            sent(&b, &|ip| Frame::tcp(ip, 2525, Tcp::Syn).vlans(tags)),
            not_subject,
            &what("SYN to port 2525"),
        );
        for flags in [Tcp::SynAck, Tcp::Ack] {
            counted(
                sent(&b, &|ip| Frame::tcp(ip, 25, flags).vlans(tags)),
                not_subject,
                &what(&format!("{flags:?} to port 25")),
            );
        }
    }
}

/// Checks (refused, passed not subject, every other outcome) counter deltas against `want`:
/// refused exactly, not subject at least, the others none (see
/// `tagged_optioned_and_fragmented_syns`).
#[track_caller]
fn counted(got: (u64, u64, u64), want: (u64, u64), what: &str) {
    assert!(
        got.0 == want.0 && got.1 >= want.1 && got.2 == 0,
        "{what}: (refused, not subject, other outcomes) {got:?}, want ({}, at least {}, 0)",
        want.0,
        want.1
    );
}

fn list_ruleset(ns: &NetNs) -> String {
    ns.nft(&["list", "ruleset"])
}

#[test]
fn a_killed_owner_fails_open_within_five_seconds() {
    let wire = Wire::new("nk");
    let other: SocketAddr = format!("{SERVER_V4}:2525").parse().unwrap();
    let _listeners: Vec<TcpListener> = wire.server.enter(|| {
        [smtp4(), other]
            .iter()
            .map(|a| TcpListener::bind(a).expect("listen"))
            .collect()
    });
    let a = CLIENT_V4[0];
    wire.assert_connects(a, other);
    let mut holder = Command::new("ip")
        .args([
            "netns",
            "exec",
            &wire.server.name,
            env!("CARGO_BIN_EXE_nft_holder"),
            SERVER_IFACE,
            a,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    // Alive and beating: the block holds for longer than the 5 s timeout.
    wire.assert_refused(a, smtp4());
    std::thread::sleep(Duration::from_secs(6));
    wire.assert_refused(a, smtp4());
    // kill -9 (`ip netns exec` execs the holder: the child is the holder itself).
    let pid = holder.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    holder.wait().unwrap();
    let killed = Instant::now();
    let rules = list_ruleset(&wire.server);
    assert!(
        rules.contains("table netdev mxscreen"),
        "the table stays after kill -9:\n{rules}"
    );
    loop {
        match wire.connect(a, smtp4(), Duration::from_millis(500)) {
            Ok(()) => break,
            Err(_) if killed.elapsed() < Duration::from_secs(7) => {}
            Err(e) => panic!("still refused {:?} after kill -9: {e}", killed.elapsed()),
        }
    }
    assert!(
        killed.elapsed() <= Duration::from_millis(5500),
        "{:?}",
        killed.elapsed()
    );
    eprintln!("passing again {:?} after kill -9", killed.elapsed());
}

/// A daemon that died with list entries and no verdicts left its table behind: the next
/// start finds it by name (not by listing it, which prints every element) and replaces it,
/// so the entries it held are gone with it.
#[test]
fn a_table_left_without_verdicts_is_replaced_at_start() {
    let mut b = Bed::new("nr");
    // A /32: in the decision map too, which the ingress rule looks up whatever the lists.
    let host = format!("{}/32", CLIENT_V4[0]);
    b.nft
        .list_insert(ListKind::Deny, net(&host), manual())
        .unwrap();
    b.wire.assert_refused(CLIENT_V4[0], smtp4());
    let denied = b.count(Counter::DroppedDeny);
    assert!(denied >= 1);
    let (wire, _listeners) = b.killed();
    let (again, _log) = open_backend(&wire, MapSizes::small());
    wire.assert_connects(CLIENT_V4[0], smtp4());
    // The outcome counters go on from the table left, as the eBPF datapath's pinned ones do.
    assert_eq!(
        again.counters().unwrap()[Counter::DroppedDeny as usize],
        denied
    );
}

/// A crashed run's table, once its heartbeat is stale, passes every SYN but holds its sets:
/// a start of the eBPF datapath removes it; a table still beating is another daemon's and
/// stays.
#[test]
fn a_dead_table_left_behind_is_removed_and_a_live_one_kept() {
    use mxscreen::nftables::{LeftBehind, TABLE, remove_left_behind};
    let mut b = Bed::new("nl");
    let left = |wire: &Wire| wire.server.enter(|| remove_left_behind(TABLE)).unwrap();
    let mut cfg = config();
    cfg.stale_after_ns = 1_000_000_000;
    b.nft.set_config(&cfg).unwrap();
    b.nft
        .list_insert(ListKind::Deny, net(CLIENT_V4[0]), manual())
        .unwrap();
    let (wire, _listeners) = b.killed();
    assert_eq!(left(&wire), LeftBehind::Live);
    assert!(list_ruleset(&wire.server).contains("table netdev mxscreen"));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(left(&wire), LeftBehind::Removed);
    let rules = list_ruleset(&wire.server);
    assert!(!rules.contains("mxscreen"), "{rules}");
    assert_eq!(left(&wire), LeftBehind::Nothing);
}

/// A write the kernel refuses (here: a set at its size, ENFILE) changes nothing: the entry
/// is not listed, its source is not refused, a later rewrite of the table does not write it,
/// and a feed refused whole is not registered; the entries written before stay.
#[test]
fn a_write_the_kernel_refuses_changes_nothing() {
    let mut b = Bed::with_sizes(
        "nr",
        MapSizes {
            deny: 2,
            allow: 2,
            ..MapSizes::small()
        },
    );
    // Each list's sets hold deny + allow elements: four /32s fit, the fifth does not.
    let held: Vec<IpNet> = (1..=4)
        .map(|i| net(&format!("198.51.100.{i}/32")))
        .collect();
    for n in &held {
        b.nft.list_insert(ListKind::Deny, *n, manual()).unwrap();
    }
    let refused: IpNet = format!("{}/32", CLIENT_V4[0]).parse().unwrap();
    let e = b
        .nft
        .list_insert(ListKind::Deny, refused, manual())
        .expect_err("a fifth /32 into a set of four");
    assert!(format!("{e:#}").contains("is the set full?"), "{e:#}");
    let own: Vec<IpNet> = b
        .nft
        .list_own(ListKind::Deny)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(own.len(), 4, "{own:?}");
    assert!(!own.contains(&refused), "{own:?}");
    assert_eq!(b.nft.list_match(Table::Deny, refused.addr()).unwrap(), None);
    b.wire.assert_connects(CLIENT_V4[0], smtp4());
    // A feed too big for the sets is refused whole, and not kept as a feed without entries.
    let feed: Vec<u64> = (0..8u32)
        .map(|i| PrefixSet::pack_v4(0xcb00_7100 + (i << 8), 24))
        .collect();
    let feed = PrefixSet::from_unsorted(feed, Vec::new());
    b.nft
        .feed_load("big", Table::Deny, feed)
        .expect_err("eight /24s into a set of four");
    // Written again from the bookkeeping (someone's `nft flush ruleset`): the four, not the
    // refused one.
    b.wire.server.nft(&["flush", "ruleset"]);
    b.nft.set_config(&config()).unwrap();
    let set = b
        .wire
        .server
        .nft(&["list", "set", "netdev", "mxscreen", "deny4_32"]);
    assert_eq!(set.matches("198.51.100.").count(), 4, "{set}");
    assert!(!set.contains(CLIENT_V4[0]), "{set}");
    b.wire.assert_connects(CLIENT_V4[0], smtp4());
    assert!(!b.nft_list().contains("chain feed_1"), "{}", b.nft_list());
    // Removing one makes room: the refused entry goes in now, and is enforced.
    assert!(b.nft.list_remove(ListKind::Deny, held[0]).unwrap());
    b.nft
        .list_insert(ListKind::Deny, refused, manual())
        .unwrap();
    b.wire.assert_refused(CLIENT_V4[0], smtp4());
}

/// A crashed run's verdicts are taken back whole by the next start, read from the table it
/// left: every one (thousands: a dump of many messages), with its action, reason, explain
/// flag and expiry.
#[test]
fn a_crashed_runs_verdicts_are_taken_back_whole() {
    let sizes = MapSizes {
        peers: 8192,
        ..MapSizes::small()
    };
    let mut b = Bed::with_sizes("na", sizes);
    let in_an_hour = clock::expiry_after(Duration::from_secs(3600));
    let kinds = [
        PeerVerdict::new(Action::Drop, Reason::Reputation, in_an_hour),
        PeerVerdict::new(Action::Limit, Reason::Manual, in_an_hour),
        PeerVerdict::new(Action::Pass, Reason::Tempfail, 0),
        {
            let mut v = PeerVerdict::new(Action::Drop, Reason::Reputation, in_an_hour);
            v.flags |= filter_common::VERDICT_EXPLAIN;
            v
        },
    ];
    let n: u16 = 6000;
    let source = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xad, 0, 0, 0, 0, i + 1));
    for i in 0..n {
        b.nft
            .verdict_set_later(source(i), kinds[usize::from(i) % kinds.len()])
            .unwrap();
    }
    b.nft.flush_later().unwrap();
    let (wire, _listeners) = b.killed();
    let (again, _log) = open_backend(&wire, sizes);
    let back: std::collections::HashMap<IpAddr, PeerVerdict> =
        again.verdicts().into_iter().collect();
    assert_eq!(back.len(), usize::from(n));
    for i in 0..n {
        let want = kinds[usize::from(i) % kinds.len()];
        let got = back[&source(i)];
        assert_eq!(
            (got.action(), got.reason(), got.is_explained()),
            (want.action(), want.reason(), want.is_explained()),
            "{}",
            source(i)
        );
        if want.expires_ns == 0 {
            assert_eq!(got.expires_ns, 0);
        } else {
            assert!(
                got.expires_ns.abs_diff(want.expires_ns) < 5_000_000_000,
                "{got:?}"
            );
        }
    }
}
