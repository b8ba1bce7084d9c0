//! In-kernel tests of the datapath with BPF_PROG_TEST_RUN: every decision path, for both
//! entry points, IPv4 and IPv6, tagged and untagged; verdicts *and* counters are asserted.
//! Needs root (CAP_BPF); run by `cargo xtask test`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::{
    Action, Counter, EventWhy, FLAG_EXPLAIN, FLAG_HOLD, FLAG_OBSERVE, ListEntry, PeerVerdict,
    Reason, Table, VERDICT_EXPLAIN,
};
use ipnet::IpNet;
use mxscreen::datapath::{ListKind, MapSizes, clock};
use mxscreen_tests::{
    kernel::{ENTRIES, Entry, Outcome, TestDatapath, delta, is_einval},
    packets::{self, Fragment, Frame, L4, Tcp},
};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 7));
const V6_OTHER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 8));
const V4_FRESH: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
const V6_FRESH: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 9));
const SOURCES: [IpAddr; 2] = [V4, V6];
/// Untagged, 802.1Q, and QinQ (802.1ad outer + 802.1Q inner).
const TAGS: [u8; 3] = [0, 1, 2];

/// Every source family with every tagging: each decision path is walked for all of them.
fn cases() -> impl Iterator<Item = (IpAddr, u8)> {
    SOURCES.into_iter().flat_map(|src| TAGS.map(|t| (src, t)))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn list_entry(expires_ns: u64) -> ListEntry {
    ListEntry::new(Reason::Manual, expires_ns)
}

fn verdict(action: Action, expires_ns: u64) -> PeerVerdict {
    PeerVerdict::new(action, Reason::Reputation, expires_ns)
}

/// A reputation drop the daemon marked for explaining (`VERDICT_EXPLAIN`).
fn explainable_drop() -> PeerVerdict {
    let mut v = verdict(Action::Drop, 0);
    v.flags = VERDICT_EXPLAIN;
    v
}

/// Runs `frame` through `entry` and checks both the outcome and the exact counter deltas.
#[track_caller]
fn expect(dp: &TestDatapath, entry: Entry, frame: &[u8], want: Outcome, counters: &[(&str, u64)]) {
    let before = dp.counters();
    let got = dp.run(entry, frame);
    let after = dp.counters();
    assert_eq!(got, want, "{entry:?}: outcome");
    assert_eq!(delta(&before, &after), counters, "{entry:?}: counters");
}

#[test]
fn unknown_syn_passes_and_reports_the_peer_once() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            let syn = Frame::syn(src).vlans(tags).build();
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Pass,
                &[("unknown", 1), ("events_emitted", 1)],
            );
            // Within the dedup window: passed again, not reported again.
            expect(&dp, entry, &syn, Outcome::Pass, &[("unknown", 1)]);
            let events = dp.drain_events();
            assert_eq!(events.len(), 1, "{entry:?} {src}");
            let ev = events[0];
            assert_eq!((ev.ip, ev.dst_port, ev.why), (src, 25, EventWhy::First));
            assert!(ev.at_ns > 0 && ev.at_ns <= clock::now_ns());
            let seen = dp.maps.seen_get(src).unwrap().expect("seen entry");
            assert_eq!(seen.last_event_ns, ev.at_ns);
            // After the dedup window the peer is reported again.
            dp.configure(|c| c.dedup_window_ns = 0);
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Pass,
                &[("unknown", 1), ("events_emitted", 1)],
            );
            // As a returning sender (not a first SYN, which a spoofed flood is made of).
            let events = dp.drain_events();
            assert_eq!(events.len(), 1, "{entry:?} {src}");
            assert_eq!(events[0].why, EventWhy::Back, "{entry:?} {src}");
        }
    }
}

#[test]
fn allow_list_wins_over_deny_list_and_verdicts() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            let wide = match src {
                IpAddr::V4(_) => net("198.51.100.0/24"),
                IpAddr::V6(_) => net("2001:db8::/32"),
            };
            dp.maps
                .list_insert(ListKind::Deny, wide, list_entry(0))
                .unwrap();
            dp.maps.verdict_set(src, verdict(Action::Drop, 0)).unwrap();
            dp.maps
                .list_insert(ListKind::Allow, host(src), list_entry(0))
                .unwrap();
            let syn = Frame::syn(src).vlans(tags).build();
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_allow", 1)]);
            let hits = dp.maps.list_match(Table::Allow, src).unwrap().unwrap().hits;
            assert_eq!(hits, 1, "allow entry counts its hits");
        }
    }
}

#[test]
fn deny_list_drops_whole_prefixes_and_counts_hits() {
    for entry in ENTRIES {
        let prefixes = [
            (V4, V4_OTHER, "198.51.100.0/24"),
            (V6, V6_OTHER, "2001:db8:0:1::/64"),
        ];
        for ((src, other, prefix), tags) in prefixes.into_iter().flat_map(|c| TAGS.map(|t| (c, t)))
        {
            let mut dp = TestDatapath::new();
            dp.maps
                .list_insert(ListKind::Deny, net(prefix), list_entry(0))
                .unwrap();
            expect(
                &dp,
                entry,
                &Frame::syn(src).vlans(tags).build(),
                Outcome::Drop,
                &[("dropped_deny", 1)],
            );
            expect(
                &dp,
                entry,
                &Frame::syn(other).vlans(tags).build(),
                Outcome::Drop,
                &[("dropped_deny", 1)],
            );
            assert_eq!(
                dp.maps.list_match(Table::Deny, src).unwrap().unwrap().hits,
                2
            );
            // Removing the prefix restores the peer (now unknown: passed and reported).
            assert!(dp.maps.list_remove(ListKind::Deny, net(prefix)).unwrap());
            expect(
                &dp,
                entry,
                &Frame::syn(src).vlans(tags).build(),
                Outcome::Pass,
                &[("unknown", 1), ("events_emitted", 1)],
            );
        }
    }
}

#[test]
fn expired_list_entries_and_verdicts_count_as_unknown() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            let past = clock::now_ns() - 1;
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(past))
                .unwrap();
            dp.maps
                .verdict_set(src, verdict(Action::Drop, past))
                .unwrap();
            expect(
                &dp,
                entry,
                &Frame::syn(src).vlans(tags).build(),
                Outcome::Pass,
                &[("unknown", 1), ("events_emitted", 1)],
            );
            // The same entries with a future expiry apply.
            let future = clock::now_ns() + 60_000_000_000;
            dp.maps
                .verdict_set(src, verdict(Action::Drop, future))
                .unwrap();
            expect(
                &dp,
                entry,
                &Frame::syn(src).vlans(tags).build(),
                Outcome::Drop,
                &[("dropped_verdict", 1)],
            );
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(future))
                .unwrap();
            expect(
                &dp,
                entry,
                &Frame::syn(src).vlans(tags).build(),
                Outcome::Drop,
                &[("dropped_deny", 1)],
            );
        }
    }
}

#[test]
fn verdicts_pass_drop_and_unknown_actions_fail_open() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            let syn = Frame::syn(src).vlans(tags).build();
            dp.maps.verdict_set(src, verdict(Action::Pass, 0)).unwrap();
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_verdict", 1)]);
            dp.maps.verdict_set(src, verdict(Action::Drop, 0)).unwrap();
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            assert_eq!(
                dp.maps.verdict_get(src).unwrap().unwrap().hits,
                1,
                "hit counter"
            );
            // A value this build does not know (a newer daemon?) must not drop.
            let mut odd = verdict(Action::Pass, 0);
            odd.action = 77;
            dp.maps.verdict_set(src, odd).unwrap();
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_verdict", 1)]);
            assert!(dp.drain_events().is_empty(), "known peers are not reported");
        }
    }
}

#[test]
fn limit_verdict_is_a_token_bucket_per_source() {
    for entry in ENTRIES {
        for ((src, other), tags) in [(V4, V4_OTHER), (V6, V6_OTHER)]
            .into_iter()
            .flat_map(|c| TAGS.map(|t| (c, t)))
        {
            let mut dp = TestDatapath::new();
            // 1 SYN per minute, bursts of 3: three pass at once, the fourth is limited.
            dp.configure(|c| c.set_limit(1, 3));
            dp.maps.verdict_set(src, verdict(Action::Limit, 0)).unwrap();
            dp.maps
                .verdict_set(other, verdict(Action::Limit, 0))
                .unwrap();
            let syn = Frame::syn(src).vlans(tags).build();
            for _ in 0..3 {
                expect(&dp, entry, &syn, Outcome::Pass, &[("passed_limit", 1)]);
            }
            expect(&dp, entry, &syn, Outcome::Drop, &[("limited", 1)]);
            expect(&dp, entry, &syn, Outcome::Drop, &[("limited", 1)]);
            // Another source has its own bucket.
            expect(
                &dp,
                entry,
                &Frame::syn(other).vlans(tags).build(),
                Outcome::Pass,
                &[("passed_limit", 1)],
            );
            // A faster rate applies at once: the debt owed at the old one (three minutes) is
            // cut to one new interval (1 ms, a bucket just emptied), so the source is limited
            // for that, then passes.
            dp.configure(|c| c.set_limit(60_000, 1));
            expect(&dp, entry, &syn, Outcome::Drop, &[("limited", 1)]);
            std::thread::sleep(std::time::Duration::from_millis(20));
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_limit", 1)]);
            // Refill: at 200/min (one per 300 ms), bursts of 2, a fresh source gets two, is
            // limited, and once one interval has passed (but not two) gets exactly one more.
            let fresh = if src.is_ipv4() { V4_FRESH } else { V6_FRESH };
            dp.configure(|c| c.set_limit(200, 2));
            dp.maps
                .verdict_set(fresh, verdict(Action::Limit, 0))
                .unwrap();
            let syn = Frame::syn(fresh).vlans(tags).build();
            let t0 = clock::now_ns();
            for _ in 0..2 {
                expect(&dp, entry, &syn, Outcome::Pass, &[("passed_limit", 1)]);
            }
            expect(&dp, entry, &syn, Outcome::Drop, &[("limited", 1)]);
            while clock::now_ns() < t0 + 350_000_000 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(
                clock::now_ns() < t0 + 600_000_000,
                "slept past two intervals"
            );
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_limit", 1)]);
            expect(&dp, entry, &syn, Outcome::Drop, &[("limited", 1)]);
        }
    }
}

#[test]
fn hold_drops_first_contact_only_while_reported_and_within_the_window() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            dp.configure(|c| {
                c.flags |= FLAG_HOLD;
                c.hold_window_ns = 60_000_000_000;
            });
            let syn = Frame::syn(src).vlans(tags).build();
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Drop,
                &[("held", 1), ("events_emitted", 1)],
            );
            // The retransmitted SYN is held too, without a second event.
            expect(&dp, entry, &syn, Outcome::Drop, &[("held", 1)]);
            // The daemon answers: the next retransmit meets the verdict.
            dp.maps.verdict_set(src, verdict(Action::Pass, 0)).unwrap();
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_verdict", 1)]);
            // Past the hold window an unknown peer passes even in hold mode.
            dp.maps.verdict_remove(src).unwrap();
            dp.configure(|c| c.hold_window_ns = 1);
            // The datapath's clock ticks coarsely: wait until it has moved past first contact.
            let first = dp.maps.seen_get(src).unwrap().expect("seen").first_seen_ns;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while clock::now_ns() <= first {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the coarse clock did not tick"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            expect(&dp, entry, &syn, Outcome::Pass, &[("unknown", 1)]);
            assert_eq!(dp.drain_events().len(), 1);
        }
    }
}

#[test]
fn events_over_the_budget_are_counted_and_retried_at_the_next_syn() {
    for entry in ENTRIES {
        let mut dp = TestDatapath::new();
        // One event a second per CPU: the test thread may move between CPUs (each has its
        // own bucket), so new sources are sent until one finds its CPU's budget spent.
        dp.configure(|c| c.events_per_s = 1);
        let cpus = std::thread::available_parallelism().map_or(64, |n| n.get()) as u32;
        let mut over = None;
        for i in 0..=cpus {
            let src = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0003_0000_0000_0000_0000_0000u128 + u128::from(i),
            ));
            let before = dp.counters();
            let got = dp.run(entry, &Frame::syn(src).build());
            let d = delta(&before, &dp.counters());
            assert_eq!(got, Outcome::Pass, "{entry:?}");
            if d == [("unknown", 1), ("events_over_budget", 1)] {
                over = Some(src);
                break;
            }
            assert_eq!(d, [("unknown", 1), ("events_emitted", 1)], "{entry:?}");
        }
        let src = over.unwrap_or_else(|| panic!("{entry:?}: the budget was never spent"));
        let emitted = dp.drain_events();
        assert!(
            emitted.iter().all(|e| e.ip != src),
            "{entry:?}: {emitted:?}"
        );
        // The source was not marked as reported: once the budget refills (a second), its
        // next SYN (a retransmit) reports it.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        expect(
            &dp,
            entry,
            &Frame::syn(src).build(),
            Outcome::Pass,
            &[("unknown", 1), ("events_emitted", 1)],
        );
        let events = dp.drain_events();
        assert_eq!(events.len(), 1, "{entry:?}");
        assert_eq!(events[0].ip, src, "{entry:?}");
    }
}

#[test]
fn hold_fails_open_when_the_event_ring_is_full() {
    for entry in ENTRIES {
        // Seen maps that remember every peer of the test for its hold: what lets the peers go
        // unheld here is the ring alone.
        let mut dp = TestDatapath::with_sizes(MapSizes {
            seen: 1 << 17,
            ..MapSizes::small()
        });
        dp.configure(|c| {
            c.flags |= FLAG_HOLD;
            c.hold_window_ns = 5_000_000_000;
        });
        // Nobody reads the ring (as when the daemon is stuck): fill it with distinct peers.
        let mut lost = false;
        for i in 0..100_000u32 {
            let src = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0002_0000_0000_0000_0000_0000u128 + u128::from(i),
            ));
            let before = dp.counters();
            let got = dp.run(entry, &Frame::syn(src).build());
            let d = delta(&before, &dp.counters());
            if d.contains(&("events_lost", 1)) {
                assert_eq!(
                    got,
                    Outcome::Pass,
                    "{entry:?}: a peer nobody will judge must not be held"
                );
                assert_eq!(
                    d,
                    [("unknown", 1), ("events_lost", 1), ("unheld", 1)],
                    "{entry:?}"
                );
                lost = true;
                break;
            }
            assert_eq!(
                (got, d),
                (Outcome::Drop, vec![("held", 1), ("events_emitted", 1)]),
                "{entry:?}"
            );
        }
        assert!(lost, "{entry:?}: the 256 KiB ring never filled");
        // Once userspace drains the ring, holding resumes for new peers.
        assert!(dp.drain_events().len() > 1000);
        expect(
            &dp,
            entry,
            &Frame::syn(V4).build(),
            Outcome::Drop,
            &[("held", 1), ("events_emitted", 1)],
        );
    }
}

/// `n` new IPv6 sources, none of them `V4`/`V6` or their neighbours.
fn flood_sources(n: u32, block: u128) -> impl Iterator<Item = IpAddr> {
    (0..n).map(move |i| {
        IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | block << 80 | u128::from(i),
        ))
    })
}

/// Sends one SYN from each of `sources`; returns how many were held.
fn syn_from_each(dp: &TestDatapath, entry: Entry, sources: impl Iterator<Item = IpAddr>) -> u64 {
    let before = dp.counters()[Counter::Held as usize];
    for src in sources {
        dp.run(entry, &Frame::syn(src).build());
    }
    dp.counters()[Counter::Held as usize] - before
}

/// QA's finding (stop 43): unknown sources took entries in the LRU the verdicts live in, so
/// a flood of new sources pushed verdicts out. Verdicts' entries are now made by userspace
/// only; the datapath's own go into the seen maps, which a flood churns alone.
#[test]
fn a_flood_of_new_sources_pushes_out_no_verdict() {
    for entry in ENTRIES {
        let mut dp = TestDatapath::new();
        for src in SOURCES {
            dp.maps.verdict_set(src, verdict(Action::Drop, 0)).unwrap();
        }
        // Three times what the seen maps (and the verdicts' maps) hold, and the decision
        // cache's slots: every source's slot is taken over, the lookup goes to the maps.
        let n = 3 * MapSizes::small().seen.max(MapSizes::small().cache_slots());
        dp.drain_events();
        syn_from_each(&dp, entry, flood_sources(n, 0x77));
        for src in SOURCES {
            assert_eq!(
                dp.maps.verdict_get(src).unwrap().map(|v| v.action()),
                Some(Action::Drop),
                "{entry:?}: {src}'s verdict was pushed out"
            );
            expect(
                &dp,
                entry,
                &Frame::syn(src).build(),
                Outcome::Drop,
                &[("dropped_verdict", 1)],
            );
        }
    }
}

/// A held source is remembered by its entry in the seen maps. While new sources come faster
/// than half a seen map per hold window, an entry may be pushed out before its hold ends,
/// and the source would be held again at every retransmit for as long as the flood lasts:
/// so then nothing is held (counted as `unheld`), and holding resumes once the rate falls.
#[test]
fn nothing_is_held_while_new_sources_come_faster_than_the_seen_maps_remember() {
    for entry in ENTRIES {
        let mut dp = TestDatapath::new();
        dp.configure(|c| {
            c.flags |= FLAG_HOLD;
            c.hold_window_ns = 2_000_000_000;
        });
        let bound = dp.maps.new_sources().unwrap().hold_bound;
        // Half of the small maps' 4,096 entries per 2 s (counted in ticks of 1.07 s).
        assert!((1020..=1024).contains(&bound), "{entry:?}: {bound}");
        // Under the bound, every new source is held.
        let calm = (bound / 2) as u32;
        assert_eq!(
            syn_from_each(&dp, entry, flood_sources(calm, 1)),
            u64::from(calm),
            "{entry:?}"
        );
        // Over it (within the same second or the next: the test runs them in well under
        // one), first contact passes.
        syn_from_each(&dp, entry, flood_sources(3 * bound as u32, 2));
        let rate = dp.maps.new_sources().unwrap();
        assert!(rate.unheld(), "{entry:?}: {rate:?}");
        expect(
            &dp,
            entry,
            &Frame::syn(V4).build(),
            Outcome::Pass,
            &[("unknown", 1), ("events_emitted", 1), ("unheld", 1)],
        );
        // Two ticks (2.15 s) later this tick and the last are calm again: held again.
        std::thread::sleep(std::time::Duration::from_millis(2300));
        expect(
            &dp,
            entry,
            &Frame::syn(V6).build(),
            Outcome::Drop,
            &[("held", 1), ("events_emitted", 1)],
        );
    }
}

#[test]
fn observe_mode_decides_and_counts_but_never_drops() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            dp.configure(|c| {
                c.flags |= FLAG_OBSERVE | FLAG_HOLD;
                c.hold_window_ns = 60_000_000_000;
                c.set_limit(1, 1);
            });
            let syn = Frame::syn(src).vlans(tags).build();
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Pass,
                &[("held", 1), ("events_emitted", 1), ("observe_passed", 1)],
            );
            dp.maps.verdict_set(src, verdict(Action::Limit, 0)).unwrap();
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_limit", 1)]);
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Pass,
                &[("limited", 1), ("observe_passed", 1)],
            );
            dp.maps.verdict_set(src, verdict(Action::Drop, 0)).unwrap();
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Pass,
                &[("dropped_verdict", 1), ("observe_passed", 1)],
            );
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(0))
                .unwrap();
            expect(
                &dp,
                entry,
                &syn,
                Outcome::Pass,
                &[("dropped_deny", 1), ("observe_passed", 1)],
            );
        }
    }
}

/// A reputation `drop` marked `VERDICT_EXPLAIN` lets the first SYN after the verdict, then
/// one per explain window, through to the MTA (counted `explained`) while `FLAG_EXPLAIN` (an
/// MTA asks) is set; every other SYN of the window is dropped. Without either flag nothing
/// passes, and setting `FLAG_EXPLAIN` takes effect on a source whose drop is cached. Drops of
/// other origins (manual, config, feed verdicts, the deny list) are never explained.
#[test]
fn reputation_drops_are_explained_once_per_window() {
    const WINDOW: u64 = 200_000_000;
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            dp.configure(|c| c.explain_window_ns = WINDOW);
            let syn = Frame::syn(src).vlans(tags).build();
            // No MTA asking: the marked drop is not explained (and the drop is cached).
            dp.maps.verdict_set(src, explainable_drop()).unwrap();
            for _ in 0..2 {
                expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            }
            // An MTA asks, but the verdict is not marked: nothing passes either.
            dp.configure(|c| c.flags |= FLAG_EXPLAIN);
            dp.maps.verdict_set(src, verdict(Action::Drop, 0)).unwrap();
            for _ in 0..2 {
                expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            }
            // The cached drop of a marked verdict is re-decided when FLAG_EXPLAIN comes on.
            dp.configure(|c| c.flags &= !FLAG_EXPLAIN);
            dp.maps.verdict_set(src, explainable_drop()).unwrap();
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            dp.configure(|c| c.flags |= FLAG_EXPLAIN);
            expect(&dp, entry, &syn, Outcome::Pass, &[("explained", 1)]);
            let next = dp.maps.verdict_get(src).unwrap().unwrap().explain_at_ns;
            assert!(
                next > clock::now_ns(),
                "the next explanation lies one window ahead"
            );
            for _ in 0..3 {
                expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            }
            // The window over, one more SYN goes through, then drops again.
            while clock::now_ns() < next {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            expect(&dp, entry, &syn, Outcome::Pass, &[("explained", 1)]);
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            // A new verdict (a re-evaluation) is explained again at its first SYN.
            dp.maps.verdict_set(src, explainable_drop()).unwrap();
            expect(&dp, entry, &syn, Outcome::Pass, &[("explained", 1)]);
            // The operator's word is never explained.
            for reason in [
                Reason::Manual,
                Reason::Config,
                Reason::Feed,
                Reason::Tempfail,
            ] {
                let mut v = PeerVerdict::new(Action::Drop, reason, 0);
                v.flags = VERDICT_EXPLAIN;
                dp.maps.verdict_set(src, v).unwrap();
                expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            }
            dp.maps.verdict_set(src, explainable_drop()).unwrap();
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(0))
                .unwrap();
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_deny", 1)]);
            // Window 0 turns explanations off.
            dp.maps.list_remove(ListKind::Deny, host(src)).unwrap();
            dp.configure(|c| c.explain_window_ns = 0);
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
        }
    }
}

/// Once the daemon's heartbeat is older than `stale_after_ns`, every subject SYN passes
/// undecided (counted `passed_stale`): deny entries, drop verdicts and hold included. Other
/// traffic is counted as before. A fresh heartbeat restores screening.
#[test]
fn a_stale_heartbeat_fails_open() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            dp.configure(|c| {
                c.alive_ns = clock::now_ns();
                c.stale_after_ns = 5_000_000_000;
            });
            let syn = Frame::syn(src).vlans(tags).build();
            dp.maps.verdict_set(src, verdict(Action::Drop, 0)).unwrap();
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_verdict", 1)]);
            // The daemon last beat 6 s ago.
            dp.configure(|c| c.alive_ns = clock::now_ns().saturating_sub(6_000_000_000));
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_stale", 1)]);
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(0))
                .unwrap();
            expect(&dp, entry, &syn, Outcome::Pass, &[("passed_stale", 1)]);
            expect(
                &dp,
                entry,
                &Frame::tcp(src, 2525, Tcp::Syn).vlans(tags).build(),
                Outcome::Pass,
                &[("passed_not_subject", 1)],
            );
            // An unknown peer under hold is not held either, and not reported.
            dp.configure(|c| {
                c.flags |= FLAG_HOLD;
                c.hold_window_ns = 60_000_000_000;
            });
            let other = if src.is_ipv4() { V4_OTHER } else { V6_OTHER };
            expect(
                &dp,
                entry,
                &Frame::syn(other).vlans(tags).build(),
                Outcome::Pass,
                &[("passed_stale", 1)],
            );
            assert!(dp.drain_events().is_empty());
            // The daemon is back.
            dp.configure(|c| c.alive_ns = clock::now_ns());
            expect(&dp, entry, &syn, Outcome::Drop, &[("dropped_deny", 1)]);
        }
    }
}

#[test]
fn only_syns_to_screened_ports_are_subject() {
    for entry in ENTRIES {
        for (src, tags) in cases() {
            let mut dp = TestDatapath::new();
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(0))
                .unwrap();
            let not_subject = [("passed_not_subject", 1)];
            for frame in [
                Frame::tcp(src, 22, Tcp::Syn).vlans(tags),
                Frame::tcp(src, 587, Tcp::Syn).vlans(tags),
                Frame::tcp(src, 25, Tcp::SynAck).vlans(tags),
                Frame::tcp(src, 25, Tcp::Ack).vlans(tags),
                Frame {
                    l4: L4::Udp { dst_port: 25 },
                    ..Frame::syn(src).vlans(tags)
                },
                Frame {
                    l4: L4::Icmp,
                    ..Frame::syn(src).vlans(tags)
                },
            ] {
                expect(&dp, entry, &frame.build(), Outcome::Pass, &not_subject);
            }
            expect(&dp, entry, &packets::arp(), Outcome::Pass, &not_subject);
            // Configured ports are read live from the config map.
            dp.configure(|c| {
                c.set_ports(&[25, 587]);
            });
            expect(
                &dp,
                entry,
                &Frame::tcp(src, 587, Tcp::Syn).vlans(tags).build(),
                Outcome::Drop,
                &[("dropped_deny", 1)],
            );
            // An empty port list (the state of a fresh map) screens nothing: fail open.
            dp.configure(|c| {
                c.set_ports(&[]);
            });
            expect(
                &dp,
                entry,
                &Frame::syn(src).vlans(tags).build(),
                Outcome::Pass,
                &not_subject,
            );
        }
    }
}

#[test]
fn vlan_tags_ip_options_and_extension_headers_are_walked() {
    for entry in ENTRIES {
        for src in SOURCES {
            let mut dp = TestDatapath::new();
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(0))
                .unwrap();
            for frame in [
                Frame::syn(src).vlans(1),
                Frame::syn(src).vlans(2),
                Frame::syn(src).options(),
                Frame::syn(src).options().vlans(2),
            ] {
                let bytes = frame.build();
                let before = dp.counters();
                let got = dp.run(entry, &bytes);
                assert_eq!(
                    (got, delta(&before, &dp.counters())),
                    (Outcome::Drop, vec![("dropped_deny", 1)]),
                    "{entry:?} {frame:?}"
                );
            }
        }
    }
}

/// A later fragment has no TCP header: passed and counted, even when its data looks like a
/// SYN to port 25. A first fragment (and an IPv6 atomic one, a whole packet) carries the
/// TCP header and is screened like an unfragmented packet, so fragmenting a SYN does not get
/// it past a deny list; one cut before its TCP header ends cannot be told a SYN and passes.
#[test]
fn fragments_are_screened_by_their_tcp_header_or_passed() {
    for entry in ENTRIES {
        for src in SOURCES {
            let mut dp = TestDatapath::new();
            dp.maps
                .list_insert(ListKind::Deny, host(src), list_entry(0))
                .unwrap();
            let mut kinds = vec![Fragment::First];
            if src.is_ipv6() {
                kinds.push(Fragment::Atomic);
            }
            for kind in kinds {
                for tags in [0, 1, 2] {
                    expect(
                        &dp,
                        entry,
                        &Frame::syn(src).fragmented(kind).vlans(tags).build(),
                        Outcome::Drop,
                        &[("dropped_deny", 1)],
                    );
                }
            }
            for tags in [0, 1] {
                expect(
                    &dp,
                    entry,
                    &Frame::syn(src)
                        .fragmented(Fragment::Later)
                        .vlans(tags)
                        .build(),
                    Outcome::Pass,
                    &[("fragment", 1)],
                );
            }
            // The first fragment cut 8 bytes into its TCP header (the flags are beyond).
            let first = Frame::syn(src).fragment().build();
            let tcp_at = first.len() - 20;
            expect(
                &dp,
                entry,
                &packets::truncate_consistently(&first, tcp_at + 8),
                Outcome::Pass,
                &[("fragment", 1)],
            );
        }
    }
}

#[test]
fn malformed_headers_pass_and_are_counted() {
    for entry in ENTRIES {
        let mut dp = TestDatapath::new();
        dp.maps
            .list_insert(ListKind::Deny, net("198.51.100.0/24"), list_entry(0))
            .unwrap();
        let good = Frame::syn(V4).build();
        // IPv4 version 5, and IHL 4 (below the minimum of 5 words).
        for (byte, value) in [(14, 0x55u8), (14, 0x44)] {
            let mut bad = good.clone();
            bad[byte] = value;
            expect(&dp, entry, &bad, Outcome::Pass, &[("malformed", 1)]);
        }
        // IHL 15 (60 bytes) claims options beyond the end of a 54-byte frame.
        let mut bad = good.clone();
        bad[14] = 0x4f;
        expect(&dp, entry, &bad, Outcome::Pass, &[("malformed", 1)]);
    }
}

/// Every prefix of a SYN that the deny list drops, cut at every length: the program must
/// never drop a truncated frame. Cuts are tried as-is (a short frame) and with the IP length
/// rewritten to match (a short but self-consistent packet); the kernel refuses some inputs
/// outright (frames no longer than an Ethernet header; for skbs, IP lengths that disagree
/// with the frame), which never reach the program at all.
#[test]
fn truncated_frames_never_drop() {
    for entry in ENTRIES {
        for src in SOURCES {
            for frame in [Frame::syn(src), Frame::syn(src).vlans(2).options()] {
                let mut dp = TestDatapath::new();
                dp.maps
                    .list_insert(ListKind::Deny, host(src), list_entry(0))
                    .unwrap();
                let full = frame.build();
                // What BPF_PROG_TEST_RUN itself refuses (EINVAL), so the program never sees
                // it: anything shorter than an Ethernet header; for tc (an skb) also an
                // untagged IPv4/IPv6 frame shorter than its fixed IP header, which the
                // kernel checks before running the program. Every other cut must run.
                let ip_header = if src.is_ipv4() { 20 } else { 40 };
                let refused = |len: usize| {
                    len < 14 || (entry == Entry::Tc && frame.vlans == 0 && len < 14 + ip_header)
                };
                for len in 0..full.len() {
                    for cut in [
                        full[..len].to_vec(),
                        packets::truncate_consistently(&full, len),
                    ] {
                        match dp.try_run(entry, &cut, 1) {
                            Ok((outcome, _)) => {
                                assert!(
                                    !refused(len),
                                    "{entry:?} {frame:?}: the kernel ran a cut at {len}"
                                );
                                assert_eq!(
                                    outcome,
                                    Outcome::Pass,
                                    "{entry:?} {frame:?} cut at {len}"
                                )
                            }
                            Err(e) if is_einval(&e) => assert!(
                                refused(len),
                                "{entry:?} {frame:?}: the kernel refused a cut at {len}"
                            ),
                            Err(e) => panic!("{entry:?} cut at {len}: {e:?}"),
                        }
                    }
                }
                let c = dp.counters();
                assert!(
                    c[Counter::Malformed as usize] > 0,
                    "truncations are counted as malformed"
                );
                assert_eq!(c[Counter::DroppedDeny as usize], 0);
                assert_eq!(
                    dp.run(entry, &full),
                    Outcome::Drop,
                    "the whole frame is dropped"
                );
            }
        }
    }
}

/// Whole-map reads and bulk deletes (the batch commands) see exactly what was written,
/// across many chunks, and skip keys that are already gone.
#[test]
fn verdicts_are_read_and_removed_in_bulk() {
    let mut dp = TestDatapath::with_sizes(MapSizes {
        peers: 20_000,
        ..MapSizes::small()
    });
    let ips: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .chain((0..1_000u128).map(|i| {
            IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + i,
            ))
        }))
        .collect();
    for (n, ip) in ips.iter().enumerate() {
        dp.maps
            .verdict_set(*ip, verdict(Action::Pass, n as u64 + 1))
            .unwrap();
    }
    let mut got = dp.maps.verdicts().unwrap();
    got.sort_by_key(|(ip, _)| *ip);
    let mut want: Vec<(IpAddr, PeerVerdict)> = ips
        .iter()
        .enumerate()
        .map(|(n, ip)| (*ip, verdict(Action::Pass, n as u64 + 1)))
        .collect();
    want.sort_by_key(|(ip, _)| *ip);
    assert_eq!(got, want);
    // Remove every other one, plus keys that were never there.
    let mut doomed: Vec<IpAddr> = ips.iter().step_by(2).copied().collect();
    doomed.insert(100, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)));
    doomed.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 9, 9, 9, 9, 9, 9)));
    assert_eq!(
        dp.maps.verdicts_remove(&doomed).unwrap(),
        ips.len().div_ceil(2)
    );
    let left = dp.maps.verdicts().unwrap();
    assert_eq!(left.len(), ips.len() / 2);
    assert!(left.iter().all(|(ip, _)| !doomed.contains(ip)));
}
