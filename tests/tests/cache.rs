//! In-kernel tests of the decision cache (`CACHE`: one line per source in front of the
//! per-source entries), with BPF_PROG_TEST_RUN: a source's third SYN onwards is decided from
//! its slot; every change ends the copies; sources sharing a slot take turns without a wrong
//! decision and without losing a hit; a slot read half written (a bad seal) is never used;
//! two CPUs racing on one slot never apply each other's decision and hand every hit back once.
//! Both entry points, IPv4 and IPv6. Run in the `datapath` suite.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Barrier,
    time::{Duration, Instant},
};

use filter_common::{
    Action, CacheSlot, Counter, Decision, PeerVerdict, Reason, SealKey, cache_index, cache_key_v4,
    cache_key_v6, cache_meta,
};
use mxscreen::datapath::{ListKind, MapSizes};
use mxscreen_tests::{
    flood::pin,
    kernel::{ENTRIES, Entry, Outcome, TestDatapath, delta, slow_paths},
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
            assert!(s.holds(key(src), &dp.cache().1.seal_key));
            for _ in 0..5 {
                dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 0);
            }
            // Hits counted in the slot are added wherever a verdict is read.
            assert_eq!(
                slot_of(&dp, src).state().hits(),
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
            // A rewrite that ends up changing nothing else (an explanation noted for a
            // verdict that has none) still carries the slot's hits into the entry.
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
            assert_eq!(slot_of(&dp, src).state().hits(), 3);
            assert!(!dp.maps.explained_until(src, 0).unwrap());
            assert_ne!(slot_of(&dp, src).key, key(src));
            assert_eq!(dp.maps.verdict_get(src).unwrap().unwrap().hits, 11);
            // One that does (an explained drop's next explanation) keeps them too.
            let mut v = dp.maps.verdict_get(src).unwrap().unwrap();
            v.action = Action::Drop as u8;
            v.reason = Reason::Reputation as u8;
            v.flags = filter_common::VERDICT_EXPLAIN;
            v.explain_at_ns = u64::MAX / 2;
            dp.maps.verdict_set(src, v).unwrap();
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 1);
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 0);
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_verdict", 0);
            assert!(dp.maps.explained_until(src, u64::MAX / 2).unwrap());
            assert_eq!(dp.maps.verdict_get(src).unwrap().unwrap().hits, 14);
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
            let deny = |generation, seal_key: &SealKey| {
                let meta = cache_meta(generation, Decision::Deny as u8, 0);
                CacheSlot::new(key(src), meta, u64::MAX, 7, 0, seal_key)
            };
            // What a torn read could pair: this source's key with another decision...
            let mut other_decision = deny(ctl.generation, &ctl.seal_key);
            other_decision.meta ^= 1 << 34;
            // ... or a whole fill with the state word of the next one...
            let mut other_fill = deny(ctl.generation, &ctl.seal_key);
            other_fill.state = other_fill.state().refilled(0).0;
            // ... and what a sender without the key could seal.
            let mut guessed_key = ctl.seal_key;
            guessed_key[3] ^= 1;
            for forged in [
                other_decision,
                other_fill,
                deny(ctl.generation, &guessed_key),
            ] {
                slots.set(i, forged, 0).unwrap();
                dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
            }
            // The same slot sealed is used: the cache is live, and the seal is what kept the
            // forgeries out.
            slots
                .set(i, deny(ctl.generation, &ctl.seal_key), 0)
                .unwrap();
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_deny", 0);
            // Locked (another CPU changing it), a whole fill still decides.
            let mut locked = deny(ctl.generation, &ctl.seal_key);
            locked.state = locked.state().lock().0;
            slots.set(i, locked, 0).unwrap();
            dp.expect_syn(entry, src, Outcome::Drop, "dropped_deny", 0);
            // Under an old generation it is not.
            let old = deny(ctl.generation.wrapping_sub(1), &ctl.seal_key);
            slots.set(i, old, 0).unwrap();
            dp.expect_syn(entry, src, Outcome::Pass, "passed_verdict", 0);
        }
    }
}

/// While a limited source is served from its slot, its token bucket lives there. Deciding
/// again (the lists changed: a new generation) and rewriting its verdict both carry that
/// bucket back to the source's entry: the limit holds across them, not one SYN more.
#[test]
fn a_limited_source_keeps_its_bucket_across_every_change() {
    type Change = fn(&mut TestDatapath, IpAddr);
    let changes: [(&str, Change); 2] = [
        ("a new generation", |dp, _| {
            dp.maps.new_generation().unwrap()
        }),
        ("its verdict rewritten", |dp, src| {
            let v = dp.maps.verdict_get(src).unwrap().unwrap();
            dp.maps.verdict_set(src, v).unwrap();
        }),
    ];
    for entry in ENTRIES {
        for src in [V4, V6] {
            for (name, change) in changes {
                let mut dp = TestDatapath::new();
                // One SYN per minute, bursts of 3: three pass, the bucket is then two minutes
                // ahead in the slot (one in the entry, from the first SYN).
                dp.configure(|c| c.set_limit(1, 3));
                dp.maps.verdict_set(src, manual(Action::Limit)).unwrap();
                for slow in [1, 0, 0] {
                    dp.expect_syn(entry, src, Outcome::Pass, "passed_limit", slow);
                }
                assert_eq!(slot_of(&dp, src).key, key(src), "{name}");
                change(&mut dp, src);
                dp.expect_syn(entry, src, Outcome::Drop, "limited", 1);
                dp.expect_syn(entry, src, Outcome::Drop, "limited", 0);
                dp.expect_syn(entry, src, Outcome::Drop, "limited", 0);
            }
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

/// The seal the cache had before it was keyed: linear in its inputs (xor and rotations), so
/// two keys `a`, `b` with `a[0] ^ a[1].rotate_left(16) == b[0] ^ b[1].rotate_left(16)` give the
/// same seal with any decision, and a slot mixed from their two fills passed it.
fn linear_seal(key: [u64; 2], meta: u64, until: u64) -> u64 {
    key[0]
        ^ key[1].rotate_left(16)
        ^ meta.rotate_left(32)
        ^ until.rotate_left(48)
        ^ 0x6d78_7363_7265_656e
}

/// Two IPv6 sources of one /48 in one slot (cache control word `shift`) that the linear seal
/// cannot tell apart: the same 16 bits flipped in the subnet id (bytes 6–7, bits 48–63 of the
/// key's first word) and in bytes 12–13 (bits 32–47 of the second, which the seal rotates onto
/// the first's). What a sender owning a /48 can pick.
fn crafted_pair(shift: u32) -> (IpAddr, IpAddr) {
    let a: [u8; 16] = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 3, 0x2e15).octets();
    let b = (1..=u16::MAX)
        .map(|d| {
            let [x, y] = d.to_le_bytes();
            let mut b = a;
            b[6] ^= x;
            b[7] ^= y;
            b[12] ^= x;
            b[13] ^= y;
            b
        })
        .find(|b| cache_index(cache_key_v6(*b), shift) == cache_index(cache_key_v6(a), shift))
        .expect("a crafted neighbour");
    let (ka, kb) = (cache_key_v6(a), cache_key_v6(b));
    assert_eq!(linear_seal(ka, 1, 2), linear_seal(kb, 1, 2));
    (IpAddr::V6(a.into()), IpAddr::V6(b.into()))
}

#[test]
fn the_crafted_pair_of_the_issue_defeats_the_linear_seal() {
    // Issue 18's pair: one slot of the default cache (2^18 slots), one linear seal.
    let a: Ipv6Addr = "2001:db8:1:1::3:2e15".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:1:24::26:2e15".parse().unwrap();
    let (ka, kb) = (cache_key_v6(a.octets()), cache_key_v6(b.octets()));
    let shift = 64 - 18;
    assert_eq!(cache_index(ka, shift), 77250);
    assert_eq!(cache_index(kb, shift), 77250);
    let (meta, until) = (0x0000_0007_0000_0005, 123_456);
    assert_eq!(linear_seal(ka, meta, until), linear_seal(kb, meta, until));
    // Our search finds pairs of that kind for any cache size.
    let (a, b) = crafted_pair(64 - 6);
    assert_ne!(a, b);
}

/// How long each pair races: the datapath before the fix made wrong decisions within it in
/// every run (the commit that added this test gives the numbers); longer would slow the suite
/// for nothing.
const RACE: Duration = Duration::from_millis(1500);
/// SYNs per BPF_PROG_TEST_RUN call: long enough to keep both CPUs in the program, short enough
/// to stop on time.
const BATCH: u32 = 2000;

/// What one source's SYNs did on its CPU while racing: how many ran, and how many of those
/// were decided otherwise than by the source's own verdict (by counter).
struct Raced {
    runs: u64,
    wrong: Vec<(&'static str, u64)>,
}

/// Runs `a`'s SYNs on one CPU and `b`'s on another, both at once, for [`RACE`].
fn race(
    dp: &TestDatapath,
    cpus: [u32; 2],
    a: (IpAddr, Counter),
    b: (IpAddr, Counter),
) -> [Raced; 2] {
    let before = cpus.map(|c| dp.counters_on(c));
    let runner = dp.runner(Entry::Xdp);
    let start = Barrier::new(2);
    let runs = std::thread::scope(|s| {
        let threads = [(cpus[0], a.0), (cpus[1], b.0)].map(|(cpu, src)| {
            let start = &start;
            s.spawn(move || {
                pin(cpu as usize);
                let frame = Frame::syn(src).build();
                start.wait();
                let t = Instant::now();
                let mut runs = 0u64;
                while t.elapsed() < RACE {
                    runner.try_run(&frame, BATCH).expect("test_run");
                    runs += u64::from(BATCH);
                }
                runs
            })
        });
        threads.map(|t| t.join().expect("racing thread"))
    });
    let after = cpus.map(|c| dp.counters_on(c));
    let wanted = [a.1, b.1];
    std::array::from_fn(|i| Raced {
        runs: runs[i],
        wrong: Counter::ALL
            .iter()
            .filter(|c| **c != wanted[i] && **c != Counter::SlowPath)
            .map(|c| (c.name(), after[i][*c as usize] - before[i][*c as usize]))
            .filter(|(_, n)| *n != 0)
            .collect(),
    })
}

/// Issue 18: two sources in one slot, one on each CPU, A holding a drop verdict and B a pass
/// verdict, each filling the slot while the other reads it. No SYN may be decided by the other
/// source's decision, whether the two are any neighbours or crafted against the seal, and every
/// hit counted in the slot goes back to its own source exactly once.
#[test]
fn two_cpus_racing_on_one_slot_never_apply_the_other_sources_decision() {
    let cpus = aya::util::online_cpus().expect("online CPUs");
    assert!(
        cpus.len() >= 2,
        "the race needs two CPUs; this machine has {}",
        cpus.len()
    );
    let cpus = [cpus[0], cpus[1]];
    let mut failures = Vec::new();
    for kind in ["ordinary", "crafted"] {
        let mut dp = TestDatapath::with_sizes(MapSizes {
            peers: 64,
            ..MapSizes::small()
        });
        let shift = dp.cache().1.shift;
        let (a, b) = match kind {
            "ordinary" => (V6, neighbour(V6, shift)),
            _ => crafted_pair(shift),
        };
        assert_eq!(cache_index(key(a), shift), cache_index(key(b), shift));
        dp.maps.verdict_set(a, manual(Action::Drop)).unwrap();
        dp.maps.verdict_set(b, manual(Action::Pass)).unwrap();
        let [ra, rb] = race(
            &dp,
            cpus,
            (a, Counter::DroppedVerdict),
            (b, Counter::PassedVerdict),
        );
        let hits = |src| dp.maps.verdict_get(src).unwrap().unwrap().hits;
        let (ha, hb) = (hits(a), hits(b));
        let report = format!(
            "{kind} pair {a} / {b}: A (drop) ran {} SYNs, decided otherwise {:?}, hits {ha}; \
             B (pass) ran {}, decided otherwise {:?}, hits {hb}",
            ra.runs, ra.wrong, rb.runs, rb.wrong
        );
        eprintln!("{report}");
        if !ra.wrong.is_empty() || !rb.wrong.is_empty() || (ha, hb) != (ra.runs, rb.runs) {
            failures.push(report);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
