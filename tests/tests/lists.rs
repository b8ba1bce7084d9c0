//! In-kernel tests of the lists and the per-source cache, with BPF_PROG_TEST_RUN: feeds
//! loaded, replaced and shared with manual entries; every table in order of precedence; every
//! length a prefix can have; cached decisions following every change. Both entry points,
//! IPv4 and IPv6; outcomes and exact counter deltas asserted. Run in the `datapath` suite.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::{Action, ListKey, PeerVerdict, Reason, Table};
use ipnet::IpNet;
use mxscreen::datapath::{ListKind, Prefix, PrefixSet, clock};
use mxscreen_tests::{
    kernel::{ENTRIES, Entry, Outcome, TestDatapath, delta, slow_paths},
    packets::Frame,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 7));

fn net(s: &str) -> IpNet {
    mxscreen::net::parse_net(s).unwrap()
}

fn set(items: &[&str]) -> PrefixSet {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for s in items {
        match Prefix::new(net(s)) {
            Prefix::V4(a, l) => v4.push(PrefixSet::pack_v4(a, l)),
            Prefix::V6(a, l) => v6.push((a, l)),
        }
    }
    PrefixSet::from_unsorted(v4, v6)
}

/// The covering prefix of each test source, for its family.
fn cover(src: IpAddr) -> &'static str {
    if src.is_ipv4() {
        "198.51.100.0/24"
    } else {
        "2001:db8:0:1::/64"
    }
}

#[track_caller]
fn expect(dp: &TestDatapath, entry: Entry, src: IpAddr, want: Outcome, counters: &[(&str, u64)]) {
    let before = dp.counters();
    let got = dp.run(entry, &Frame::syn(src).build());
    assert_eq!(got, want, "{entry:?} {src}: outcome");
    assert_eq!(
        delta(&before, &dp.counters()),
        counters,
        "{entry:?} {src}: counters"
    );
}

/// A source nothing lists: passed, and reported once.
#[track_caller]
fn expect_unknown(dp: &TestDatapath, entry: Entry, src: IpAddr) {
    expect(
        dp,
        entry,
        src,
        Outcome::Pass,
        &[("unknown", 1), ("events_emitted", 1)],
    );
}

fn manual(expires_ns: u64) -> filter_common::ListEntry {
    filter_common::ListEntry::new(Reason::Manual, expires_ns)
}

#[test]
fn a_feed_drops_what_it_lists_and_counts_it_apart() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            let feed = set(&[cover(src), "203.0.113.9", "2001:db8:ffff::/48"]);
            let change = dp.maps.feed_load("drop", Table::Deny, feed).unwrap();
            assert_eq!((change.added, change.removed, change.writes), (3, 0, 3));
            for _ in 0..3 {
                expect(&dp, entry, src, Outcome::Drop, &[("dropped_feed", 1)]);
            }
            assert_eq!(dp.maps.feed_hits("drop").unwrap(), 3);
            let e = dp.maps.list_match(Table::Deny, src).unwrap().unwrap();
            assert_eq!((e.reason(), e.hits), (Reason::Feed, 3));
            assert_eq!(
                dp.maps.feeds_listing(Table::Deny, net(cover(src))),
                vec!["drop".to_owned()]
            );
            // A source the feed does not list is unknown.
            let other = if src.is_ipv4() {
                "192.0.2.1".parse().unwrap()
            } else {
                "2001:db8:2::1".parse().unwrap()
            };
            expect_unknown(&dp, entry, other);
        }
    }
}

#[test]
fn a_reloaded_feed_writes_only_the_difference() {
    for entry in ENTRIES {
        let mut dp = TestDatapath::new();
        let kept: IpAddr = "192.0.2.10".parse().unwrap();
        let dropped: IpAddr = "192.0.2.20".parse().unwrap();
        let added: IpAddr = "192.0.2.30".parse().unwrap();
        let v1 = set(&["192.0.2.10", "192.0.2.20", "2001:db8::/32"]);
        dp.maps.feed_load("f", Table::Deny, v1.clone()).unwrap();
        expect(&dp, entry, kept, Outcome::Drop, &[("dropped_feed", 1)]);
        // The same file again: nothing written, no new generation, the cache stays.
        let gen_before = dp.maps.config().unwrap().list_gen;
        let change = dp.maps.feed_load("f", Table::Deny, v1).unwrap();
        assert_eq!((change.added, change.removed, change.writes), (0, 0, 0));
        assert_eq!(dp.maps.config().unwrap().list_gen, gen_before);
        let before = dp.counters();
        expect(&dp, entry, kept, Outcome::Drop, &[("dropped_feed", 1)]);
        assert_eq!(slow_paths(&before, &dp.counters()), 0, "still cached");
        // One out, one in: two writes; the kept prefix is never touched.
        let v2 = set(&["192.0.2.10", "192.0.2.30", "2001:db8::/32"]);
        let change = dp.maps.feed_load("f", Table::Deny, v2).unwrap();
        assert_eq!((change.added, change.removed, change.writes), (1, 1, 2));
        expect(&dp, entry, kept, Outcome::Drop, &[("dropped_feed", 1)]);
        expect(&dp, entry, added, Outcome::Drop, &[("dropped_feed", 1)]);
        expect_unknown(&dp, entry, dropped);
        // Dropping the feed empties its share of the lists.
        assert_eq!(dp.maps.feed_drop("f").unwrap().removed, 3);
        assert_eq!(dp.maps.table_len(Table::Deny), 0);
        expect_unknown(&dp, entry, kept);
    }
}

/// A feed large enough to be written and removed from two threads (65,536 entries or more):
/// replaced by a disjoint one and then removed, it leaves exactly what it should in the
/// maps, and each source is decided by the current load.
#[test]
fn a_large_feed_is_replaced_and_removed_whole() {
    const N: u32 = 80_000;
    let mut dp = TestDatapath::with_sizes(mxscreen::datapath::MapSizes {
        deny: 2 * N + 1_000,
        ..mxscreen::datapath::MapSizes::small()
    });
    let hosts = |first: u32| {
        PrefixSet::from_unsorted(
            (0..N).map(|i| PrefixSet::pack_v4(first + i, 32)).collect(),
            Vec::new(),
        )
    };
    let (one, other) = (0x0a00_0000u32, 0x0b00_0000u32);
    let ip = |a: u32| IpAddr::V4(Ipv4Addr::from(a));
    dp.maps.feed_load("f", Table::Deny, hosts(one)).unwrap();
    assert_eq!(dp.maps.table_len(Table::Deny), u64::from(N));
    let change = dp.maps.feed_load("f", Table::Deny, hosts(other)).unwrap();
    assert_eq!((change.added, change.removed), (N as usize, N as usize));
    assert_eq!(dp.maps.table_len(Table::Deny), u64::from(N));
    assert_eq!(
        dp.maps.table_entries(Table::Deny).unwrap().len(),
        N as usize
    );
    // (The first load's sources are unknown again: passed, reported once by either entry.)
    let passes = |dp: &TestDatapath, entry, src| {
        assert_eq!(
            dp.run(entry, &Frame::syn(src).build()),
            Outcome::Pass,
            "{entry:?} {src}"
        );
    };
    for entry in ENTRIES {
        for i in [0, N / 2 - 1, N / 2, N - 1] {
            passes(&dp, entry, ip(one + i));
            expect(
                &dp,
                entry,
                ip(other + i),
                Outcome::Drop,
                &[("dropped_feed", 1)],
            );
        }
    }
    assert_eq!(dp.maps.feed_drop("f").unwrap().removed, N as usize);
    assert_eq!(dp.maps.table_len(Table::Deny), 0);
    // Read from the kernel's maps, not the bookkeeping.
    assert_eq!(dp.maps.table_entries(Table::Deny).unwrap().len(), 0);
    for entry in ENTRIES {
        passes(&dp, entry, ip(other + N / 2));
    }
}

/// A load the lists cannot hold beside what they hold is refused before anything is written:
/// the feed's last load is still enforced, whole.
#[test]
fn a_feed_too_big_for_the_maps_keeps_its_last_load() {
    let mut dp = TestDatapath::with_sizes(mxscreen::datapath::MapSizes {
        deny: 96,
        allow: 32,
        ..mxscreen::datapath::MapSizes::small()
    });
    let listed: IpAddr = "192.0.2.1".parse().unwrap();
    let hosts = |n: u32| {
        let v4 = (0..n)
            .map(|i| PrefixSet::pack_v4(0xc000_0200 + i, 32))
            .collect();
        PrefixSet::from_unsorted(v4, Vec::new())
    };
    dp.maps.feed_load("f", Table::Deny, hosts(100)).unwrap();
    let gen_before = dp.maps.config().unwrap().list_gen;
    // 100 held, 100 more needed at once (additions come before removals): 200 > 128.
    let bigger = PrefixSet::from_unsorted(
        (0..100)
            .map(|i| PrefixSet::pack_v4(0xc633_6400 + i, 32))
            .collect(),
        Vec::new(),
    );
    let err = dp.maps.feed_load("f", Table::Deny, bigger).unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err:#}");
    assert_eq!(
        dp.maps.config().unwrap().list_gen,
        gen_before,
        "nothing written"
    );
    assert_eq!(dp.maps.table_len(Table::Deny), 100);
    for entry in ENTRIES {
        expect(&dp, entry, listed, Outcome::Drop, &[("dropped_feed", 1)]);
    }
    // What fits still loads.
    let change = dp.maps.feed_load("f", Table::Deny, hosts(120)).unwrap();
    assert_eq!((change.added, change.removed), (20, 0));
}

/// A prefix a feed and an operator both list stays listed until neither does; while a feed
/// lists it, the operator's expiry does not end it.
#[test]
fn feeds_and_manual_entries_share_prefixes() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            let p = net(cover(src));
            dp.maps
                .feed_load("f", Table::Deny, set(&[cover(src)]))
                .unwrap();
            let past = clock::now_ns() - 1;
            dp.maps
                .list_insert(ListKind::Deny, p, manual(past))
                .unwrap();
            // The manual entry shows (its reason), but never expires while the feed lists it.
            let e = dp.maps.list_match(Table::Deny, src).unwrap().unwrap();
            assert_eq!((e.reason(), e.expires_ns), (Reason::Manual, 0));
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_deny", 1)]);
            // Unblocked by hand: the feed's entry is back.
            assert!(dp.maps.list_remove(ListKind::Deny, p).unwrap());
            assert_eq!(
                dp.maps
                    .list_match(Table::Deny, src)
                    .unwrap()
                    .unwrap()
                    .reason(),
                Reason::Feed
            );
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_feed", 1)]);
            // The other way round: the feed lets go, the manual entry stays.
            dp.maps.list_insert(ListKind::Deny, p, manual(0)).unwrap();
            dp.maps.feed_load("f", Table::Deny, set(&[])).unwrap();
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_deny", 1)]);
            assert!(dp.maps.list_remove(ListKind::Deny, p).unwrap());
            expect_unknown(&dp, entry, src);
        }
    }
}

/// allow > deny > limit > the source's verdict > its network's verdict > unknown, taken away
/// one at a time; each decides with its own counter.
#[test]
fn every_table_in_order_of_precedence() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            dp.configure(|c| c.set_limit(1, 2));
            let p = net(cover(src));
            dp.maps
                .feed_load("allow", Table::Allow, set(&[cover(src)]))
                .unwrap();
            dp.maps.list_insert(ListKind::Deny, p, manual(0)).unwrap();
            dp.maps
                .feed_load("limit", Table::Limit, set(&[cover(src)]))
                .unwrap();
            dp.maps
                .verdict_set(src, PeerVerdict::new(Action::Drop, Reason::Manual, 0))
                .unwrap();
            dp.maps
                .network_verdict_set(p, Action::Drop, Reason::Reputation, 0)
                .unwrap();
            expect(&dp, entry, src, Outcome::Pass, &[("passed_allow", 1)]);
            dp.maps.feed_drop("allow").unwrap();
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_deny", 1)]);
            dp.maps.list_remove(ListKind::Deny, p).unwrap();
            expect(&dp, entry, src, Outcome::Pass, &[("passed_limit", 1)]);
            expect(&dp, entry, src, Outcome::Pass, &[("passed_limit", 1)]);
            expect(&dp, entry, src, Outcome::Drop, &[("limited", 1)]);
            dp.maps.feed_drop("limit").unwrap();
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_verdict", 1)]);
            assert_eq!(dp.maps.verdict_get(src).unwrap().unwrap().hits, 1);
            // The source's own pass verdict beats its network's drop.
            dp.maps
                .verdict_set(src, PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
                .unwrap();
            expect(&dp, entry, src, Outcome::Pass, &[("passed_verdict", 1)]);
            dp.maps.verdict_remove(src).unwrap();
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_verdict", 1)]);
            let nv = dp.maps.network_verdict_for(src).unwrap().unwrap();
            assert_eq!((nv.net, nv.action, nv.hits), (p, Action::Drop, 1));
            assert!(dp.maps.network_verdict_remove(p).unwrap());
            expect_unknown(&dp, entry, src);
        }
    }
}

/// A prefix of every length IPv4 has, and a spread of IPv6 lengths, in one list and none
/// overlapping another: each source is dropped only if the walk finds its own length.
#[test]
fn every_prefix_length_is_found() {
    let mut dp = TestDatapath::with_sizes(mxscreen::datapath::MapSizes {
        deny: 8192,
        ..mxscreen::datapath::MapSizes::small()
    });
    let mut nets: Vec<IpNet> = Vec::new();
    // /1 = 128.0.0.0/1, /2 = 64.0.0.0/2 ... /7 = 2.0.0.0/7, /8 = 1.0.0.0/8, then /9 … /32
    // inside 0.0.0.0/8 at 2^(32-len): disjoint by construction.
    for len in 1..=32u8 {
        let addr = match len {
            1..=7 => 1u32 << (32 - len),
            8 => 0x0100_0000,
            _ => 1u32 << (32 - len),
        };
        nets.push(IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), len).unwrap());
    }
    for (len, base) in [
        (16u8, "2002::"),
        (29, "2003::"),
        (32, "2004::"),
        (48, "2001:db8:48::"),
        (56, "2001:db8:56::"),
        (64, "2001:db8:64::"),
        (96, "2001:db8:96::"),
        (112, "2001:db8:112::"),
        (127, "2001:db8:127::"),
        (128, "2001:db8:128::"),
    ] {
        nets.push(IpNet::new(base.parse().unwrap(), len).unwrap());
    }
    let items: Vec<String> = nets.iter().map(ToString::to_string).collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    dp.maps
        .feed_load("lengths", Table::Deny, set(&refs))
        .unwrap();
    for entry in ENTRIES {
        for n in &nets {
            // The last address of the network: inside it, outside every other.
            let src = n.broadcast();
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_feed", 1)]);
            let (found, _) = dp.maps.list_lookup(Table::Deny, src).unwrap().unwrap();
            assert_eq!(found, *n);
        }
    }
    let outside: IpAddr = "2001:db9::1".parse().unwrap();
    expect_unknown(&dp, Entry::Xdp, outside);
}

/// One slow path per source, then one hash lookup per SYN; every change that could alter the
/// decision (a list entry, the source's verdict, a window) makes the next SYN decide again.
#[test]
fn cached_decisions_follow_every_change() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            let run = |dp: &TestDatapath, want: Outcome, counter: &str, slow: u64| {
                dp.expect_syn(entry, src, want, counter, slow)
            };
            dp.maps
                .verdict_set(src, PeerVerdict::new(Action::Pass, Reason::Reputation, 0))
                .unwrap();
            run(&dp, Outcome::Pass, "passed_verdict", 1);
            run(&dp, Outcome::Pass, "passed_verdict", 0);
            // A deny entry covering the source, added later, applies at the next SYN.
            let p = net(cover(src));
            dp.maps.list_insert(ListKind::Deny, p, manual(0)).unwrap();
            run(&dp, Outcome::Drop, "dropped_deny", 1);
            run(&dp, Outcome::Drop, "dropped_deny", 0);
            dp.maps.list_remove(ListKind::Deny, p).unwrap();
            run(&dp, Outcome::Pass, "passed_verdict", 1);
            // The verdict changes: the entry is rewritten, the next SYN decides again.
            dp.maps
                .verdict_set(src, PeerVerdict::new(Action::Drop, Reason::Manual, 0))
                .unwrap();
            run(&dp, Outcome::Drop, "dropped_verdict", 1);
            run(&dp, Outcome::Drop, "dropped_verdict", 0);
            // An expiry ends a cached decision on time.
            let soon = clock::now_ns() + 50_000_000;
            dp.maps
                .verdict_set(src, PeerVerdict::new(Action::Drop, Reason::Manual, soon))
                .unwrap();
            run(&dp, Outcome::Drop, "dropped_verdict", 1);
            while clock::now_ns() <= soon {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let before = dp.counters();
            assert_eq!(dp.run(entry, &Frame::syn(src).build()), Outcome::Pass);
            let after = dp.counters();
            assert_eq!(
                delta(&before, &after),
                vec![("unknown", 1), ("events_emitted", 1)]
            );
            assert_eq!(slow_paths(&before, &after), 1);
            // A new generation (the sweep starts one every minute) decides again too.
            run(&dp, Outcome::Pass, "unknown", 0);
            dp.maps.new_generation().unwrap();
            run(&dp, Outcome::Pass, "unknown", 1);
        }
    }
}

/// List hit counters are per CPU: SYNs decided on two CPUs add up.
#[test]
fn list_hits_add_up_over_cpus() {
    let cpus = aya::util::online_cpus().expect("online CPUs");
    let mut dp = TestDatapath::new();
    dp.maps
        .list_insert(ListKind::Deny, net(cover(V4)), manual(0))
        .unwrap();
    let frame = Frame::syn(V4).build();
    for cpu in cpus.iter().take(2) {
        let mut set = nix::sched::CpuSet::new();
        set.set(*cpu as usize).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
        for _ in 0..5 {
            assert_eq!(dp.run(Entry::Xdp, &frame), Outcome::Drop);
        }
    }
    let want = 5 * cpus.len().min(2) as u64;
    assert_eq!(
        dp.maps.list_match(Table::Deny, V4).unwrap().unwrap().hits,
        want
    );
}

/// A deny entry for one address of `src`'s family other than `src`, whose list-filter bit
/// is `bit` (searched: a bit is shared by keys whose block, the /24 or /56, hashes to the
/// same word, so the search runs through the whole space, not one block).
fn sharing_bit(src: IpAddr, bit: u32) -> IpNet {
    (1u32..)
        .find_map(|i| match src {
            IpAddr::V4(s) => {
                // An odd multiplier walks every address, neighbours far apart.
                let a = Ipv4Addr::from(i.wrapping_mul(0x9e37_79b1));
                let k = ListKey::new(Table::Deny, 32, a.octets());
                (k.filter_bit() == bit && a != s).then(|| IpNet::from(IpAddr::V4(a)))
            }
            IpAddr::V6(s) => {
                // 2001:db8:…/32 with `i` as the next 32 bits (its /56 the top 24 of them).
                let a = Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(i) << 64 | 1);
                let k = ListKey::new(Table::Deny, 128, a.octets());
                (k.filter_bit() == bit && a != s).then(|| IpNet::from(IpAddr::V6(a)))
            }
        })
        .unwrap()
}

/// The list filter counts the keys behind each bit: two entries sharing one, either can go
/// and the other still decides; with both gone the source is unknown again.
#[test]
fn entries_sharing_a_filter_bit_come_and_go_alone() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            let own = IpNet::from(src);
            let bit = match src {
                IpAddr::V4(a) => ListKey::new(Table::Deny, 32, a.octets()).filter_bit(),
                IpAddr::V6(a) => ListKey::new(Table::Deny, 128, a.octets()).filter_bit(),
            };
            let other = sharing_bit(src, bit);
            let deny = |dp: &mut TestDatapath, n: IpNet| {
                dp.maps.list_insert(ListKind::Deny, n, manual(0)).unwrap();
            };
            deny(&mut dp, own);
            deny(&mut dp, other);
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_deny", 1)]);
            // The other goes: the bit stays for the source's own entry.
            assert!(dp.maps.list_remove(ListKind::Deny, other).unwrap());
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_deny", 1)]);
            // The own goes while the other is back: a set bit, no key.
            deny(&mut dp, other);
            assert!(dp.maps.list_remove(ListKind::Deny, own).unwrap());
            expect_unknown(&dp, entry, src);
            // Back again, then both gone.
            deny(&mut dp, own);
            expect(&dp, entry, src, Outcome::Drop, &[("dropped_deny", 1)]);
            assert!(dp.maps.list_remove(ListKind::Deny, own).unwrap());
            assert!(dp.maps.list_remove(ListKind::Deny, other).unwrap());
            expect(&dp, entry, src, Outcome::Pass, &[("unknown", 1)]);
        }
    }
}
