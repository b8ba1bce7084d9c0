//! In-kernel tests of the decision cache (`CACHE`: one line per source in front of the
//! per-source entries), with BPF_PROG_TEST_RUN: a source's third SYN onwards is decided from
//! its slot; every change ends the copies; sources sharing a slot take turns without a wrong
//! decision and without losing a hit; a slot read half written (a bad seal) is never used.
//! Both entry points, IPv4 and IPv6. Run in the `datapath` suite.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::{
    Action, CacheSlot, Decision, PeerVerdict, Reason, cache_index, cache_key_v4, cache_key_v6,
};
use mxscreen::datapath::{ListKind, MapSizes};
use mxscreen_tests::{
    kernel::{ENTRIES, Outcome, TestDatapath, delta, slow_paths},
    packets::Frame,
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 7));

fn key(ip: IpAddr) -> [u64; 2] {
    match ip {
        IpAddr::V4(a) => cache_key_v4(a.octets()),
        IpAddr::V6(a) => cache_key_v6(a.octets()),
    }
}

/// The slot `src` maps to, as the kernel holds it.
fn slot_of(dp: &TestDatapath, src: IpAddr) -> CacheSlot {
    let (slots, ctl) = dp.cache();
    slots.get(&cache_index(key(src), ctl.shift), 0).unwrap()
}

fn manual(action: Action) -> PeerVerdict {
    PeerVerdict::new(action, Reason::Manual, 0)
}

#[test]
fn repeat_syns_are_decided_from_the_cache_and_every_hit_counts() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            dp.maps.verdict_set(src, manual(Action::Drop)).unwrap();
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 1);
            assert_ne!(
                slot_of(&dp, src).key,
                key(src),
                "the slow path fills no slot"
            );
            // The second SYN finds the entry's decision and copies it into the slot.
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 0);
            let s = slot_of(&dp, src);
            assert_eq!(
                (s.key, s.decision()),
                (key(src), Decision::VerdictDrop as u8)
            );
            assert!(s.sealed());
            for _ in 0..5 {
                dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 0);
            }
            // Hits counted in the slot are added wherever a verdict is read.
            assert_eq!(
                slot_of(&dp, src).hits,
                6,
                "the second SYN's hit and five more"
            );
            assert_eq!(dp.maps.verdict_get(src).unwrap().unwrap().hits, 7);
            let all = dp.maps.verdicts().unwrap();
            assert_eq!(all.iter().find(|(ip, _)| *ip == src).unwrap().1.hits, 7);
            let reader = dp.maps.reader().unwrap();
            assert_eq!(reader.verdict_get(src).unwrap().unwrap().hits, 7);
            let mut streamed = 0;
            reader
                .for_each_verdict_chunk(|c| {
                    streamed += c
                        .iter()
                        .filter(|(ip, _)| *ip == src)
                        .map(|(_, v)| v.hits)
                        .sum::<u64>();
                    true
                })
                .unwrap();
            assert_eq!(streamed, 7);
            // Rewriting the verdict (with the hits read) empties the slot: nothing is counted
            // twice, and the new action applies at the next SYN.
            let mut v = dp.maps.verdict_get(src).unwrap().unwrap();
            v.action = Action::Pass as u8;
            dp.maps.verdict_set(src, v).unwrap();
            assert_ne!(slot_of(&dp, src).key, key(src));
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 1);
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
            assert_eq!(dp.maps.verdict_get(src).unwrap().unwrap().hits, 10);
        }
    }
}

#[test]
fn every_change_ends_the_cached_copies() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            dp.maps.verdict_set(src, manual(Action::Pass)).unwrap();
            for slow in [1, 0, 0] {
                dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", slow);
            }
            // A list entry: the next SYN walks the lists again.
            let net = ipnet::IpNet::new(src, if src.is_ipv4() { 24 } else { 64 }).unwrap();
            dp.maps
                .list_insert(
                    ListKind::Deny,
                    net.trunc(),
                    filter_common::ListEntry::new(Reason::Manual, 0),
                )
                .unwrap();
            for slow in [1, 0, 0] {
                dp.expect_syn(entry, src, Outcome::Drop, "dropped_deny", slow);
            }
            dp.maps.list_remove(ListKind::Deny, net.trunc()).unwrap();
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 1);
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
            // A config change (observe mode here) ends the copies too; observe never drops.
            dp.maps.verdict_set(src, manual(Action::Drop)).unwrap();
            for slow in [1, 0, 0] {
                dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", slow);
            }
            let gen_before = dp.cache().1.generation;
            dp.configure(|c| c.flags |= filter_common::FLAG_OBSERVE);
            assert_ne!(dp.cache().1.generation, gen_before);
            let before = dp.counters();
            assert_eq!(dp.run(entry, &Frame::syn(src).build()), Outcome::Pass);
            assert_eq!(
                delta(&before, &dp.counters()),
                vec![("dropped_verdict", 1), ("observe_passed", 1)]
            );
            // Removing the verdict: the source is unknown at once.
            dp.configure(|c| c.flags &= !filter_common::FLAG_OBSERVE);
            for _ in 0..3 {
                assert_eq!(dp.run(entry, &Frame::syn(src).build()), Outcome::Drop);
            }
            assert!(dp.maps.verdict_remove(src).unwrap());
            let before = dp.counters();
            assert_eq!(dp.run(entry, &Frame::syn(src).build()), Outcome::Pass);
            assert_eq!(slow_paths(&before, &dp.counters()), 1);
        }
    }
}

/// Another source of `src`'s family that maps to the same slot (a cache of 64 slots).
fn neighbour(src: IpAddr, shift: u32) -> IpAddr {
    let want = cache_index(key(src), shift);
    let candidates: Box<dyn Iterator<Item = IpAddr>> = match src {
        IpAddr::V4(_) => Box::new(
            [[192, 0, 2], [198, 51, 100], [203, 0, 113]]
                .into_iter()
                .flat_map(|n| {
                    (1..=254).map(move |h| IpAddr::V4(Ipv4Addr::new(n[0], n[1], n[2], h)))
                }),
        ),
        IpAddr::V6(_) => Box::new(
            (1..=u16::MAX).map(|h| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, h))),
        ),
    };
    candidates
        .filter(|c| *c != src)
        .find(|c| cache_index(key(*c), shift) == want)
        .expect("a source sharing the slot")
}

#[test]
fn sources_sharing_a_slot_take_turns_without_a_wrong_decision_or_a_lost_hit() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            // 64 slots: a neighbour is easy to find among documentation addresses.
            let mut dp = TestDatapath::with_sizes(MapSizes {
                peers: 64,
                ..MapSizes::small()
            });
            let other = neighbour(src, dp.cache().1.shift);
            dp.maps.verdict_set(src, manual(Action::Drop)).unwrap();
            dp.maps.verdict_set(other, manual(Action::Pass)).unwrap();
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 1);
            dp.expect_syn(entry, other, Outcome::Pass, "passed_verdict", 1);
            for _ in 0..4 {
                // Each takes the slot over from the other; two SYNs in a row hit it.
                for _ in 0..2 {
                    dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 0);
                }
                assert_eq!(slot_of(&dp, src).key, key(src));
                for _ in 0..2 {
                    dp.expect_syn(entry, other, Outcome::Pass, "passed_verdict", 0);
                }
                assert_eq!(slot_of(&dp, other).key, key(other));
            }
            assert_eq!(dp.maps.verdict_get(src).unwrap().unwrap().hits, 9);
            assert_eq!(dp.maps.verdict_get(other).unwrap().unwrap().hits, 9);
        }
    }
}

#[test]
fn a_slot_that_fails_its_seal_is_never_used() {
    for entry in ENTRIES {
        for src in [V4, V6] {
            let mut dp = TestDatapath::new();
            dp.maps.verdict_set(src, manual(Action::Pass)).unwrap();
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 1);
            let (mut slots, ctl) = dp.cache();
            let i = cache_index(key(src), ctl.shift);
            // What a torn read could pair: this source's key with another decision.
            let mut forged = CacheSlot::new(
                key(src),
                ctl.generation,
                Decision::Deny as u8,
                0,
                u64::MAX,
                0,
            );
            forged.meta ^= 1 << 34; // another decision, the seal unchanged
            slots.set(i, forged, 0).unwrap();
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
            // The same slot sealed is used: the cache is live, and the seal is what kept the
            // forgery out.
            let sealed = CacheSlot::new(
                key(src),
                ctl.generation,
                Decision::Deny as u8,
                0,
                u64::MAX,
                0,
            );
            slots.set(i, sealed, 0).unwrap();
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_deny", 0);
            // Under an old generation it is not.
            let old = CacheSlot::new(
                key(src),
                ctl.generation.wrapping_sub(1),
                Decision::Deny as u8,
                0,
                u64::MAX,
                0,
            );
            slots.set(i, old, 0).unwrap();
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
        }
    }
}

#[test]
fn an_ipv4_mapped_ipv6_source_never_meets_its_ipv4_twins_slot() {
    let twin = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
    for entry in ENTRIES {
        let mut dp = TestDatapath::new();
        dp.maps.verdict_set(V4, manual(Action::Drop)).unwrap();
        dp.maps.verdict_set(twin, manual(Action::Pass)).unwrap();
        for slow in [1, 0, 0] {
            dp.expect_syn(entry, V4, Outcome::Drop, "dropped_verdict", slow);
        }
        assert_eq!(
            slot_of(&dp, V4).key,
            key(V4),
            "the IPv4 source's slot is filled"
        );
        // Same 128 bits as a key, another source: its own verdict, never the slot's.
        for slow in [1, 0, 0] {
            dp.expect_syn(entry, twin, Outcome::Pass, "passed_verdict", slow);
        }
        assert_eq!(slot_of(&dp, V4).key, key(V4), "and left alone");
        assert_eq!(dp.maps.verdict_get(twin).unwrap().unwrap().hits, 3);
        assert_eq!(dp.maps.verdict_get(V4).unwrap().unwrap().hits, 3);
    }
}
