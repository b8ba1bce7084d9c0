use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn look(subject: u64, private: u64, sources: &[(&str, u64)], asks: (u64, u64)) -> Snapshot {
    Snapshot {
        subject,
        private_hits: private,
        sources: sources.iter().map(|(a, h)| (ip(a), *h)).collect(),
        untracked_max: 0,
        asks: AskCounts {
            asked: asks.0,
            unseen: asks.1,
        },
    }
}

#[test]
fn a_window_counts_each_source_from_its_hits_before() {
    let before = look(1000, 50, &[("192.0.2.1", 900), ("192.0.2.2", 10)], (5, 0));
    let now = look(
        1400,
        60,
        &[("192.0.2.1", 950), ("192.0.2.2", 300), ("192.0.2.3", 20)],
        (30, 25),
    );
    let w = measure(&before, &now);
    assert_eq!(w.syns, 400);
    // 192.0.2.1 has the most hits, but 192.0.2.2 had the most in the window.
    assert_eq!(w.top, Some((ip("192.0.2.2"), 290)));
    assert_eq!(w.private, 10);
    assert_eq!(
        w.asks,
        AskCounts {
            asked: 25,
            unseen: 25
        }
    );
    // A source the last look did not keep had at most untracked_max: never counted high.
    let capped = Snapshot {
        untracked_max: 280,
        ..before.clone()
    };
    let now = look(1400, 60, &[("192.0.2.9", 300)], (5, 0));
    assert_eq!(measure(&capped, &now).top, Some((ip("192.0.2.9"), 20)));
    // A verdict written again (hits from 0) counts none, rather than wrapping.
    let now = look(1400, 60, &[("192.0.2.1", 3)], (5, 0));
    assert_eq!(measure(&before, &now).top, None);
}

fn window(syns: u64, top: u64, private: u64, asks: (u64, u64)) -> Window {
    Window {
        syns,
        top: Some((ip("198.51.100.7"), top)),
        private,
        asks: AskCounts {
            asked: asks.0,
            unseen: asks.1,
        },
    }
}

#[test]
fn more_than_half_of_enough_traffic_is_suspected_and_quiet_windows_change_nothing() {
    let mut s = BalancerStatus {
        window_secs: 600,
        ..Default::default()
    };
    // Below MIN_SYNS: nothing decided, even at 100 %.
    judge(&mut s, &window(MIN_SYNS - 1, MIN_SYNS - 1, 0, (0, 0)), 10);
    assert!(!s.one_source.suspected && s.one_source.since.is_none());
    // Half is not more than half.
    judge(&mut s, &window(400, 200, 0, (0, 0)), 20);
    assert!(!s.one_source.suspected);
    assert_eq!(s.one_source.since, Some(20));
    judge(&mut s, &window(400, 201, 0, (0, 0)), 30);
    assert!(s.one_source.suspected);
    assert_eq!(s.one_source.source, Some(ip("198.51.100.7")));
    assert_eq!(s.one_source.since, Some(30));
    let w = warnings(&s);
    assert_eq!(w.len(), 1);
    assert!(
        w[0].starts_with("one source, 198.51.100.7, carried 50% of the SYNs to the screened ports in the last 10m"),
        "{}",
        w[0]
    );
    // A quiet window keeps the state (and its since).
    judge(&mut s, &window(0, 0, 0, (0, 0)), 40);
    assert!(s.one_source.suspected);
    assert_eq!(s.one_source.since, Some(30));
    // Enough traffic, spread out: cleared.
    judge(&mut s, &window(400, 100, 0, (0, 0)), 50);
    assert!(!s.one_source.suspected);
    assert_eq!(s.one_source.since, Some(50));
    // Private ranges and the MTA's questions, each on its own threshold.
    judge(
        &mut s,
        &window(400, 10, 300, (MIN_ASKS - 1, MIN_ASKS - 1)),
        60,
    );
    assert!(s.private_sources.suspected && !s.unseen_peers.suspected);
    judge(&mut s, &window(0, 0, 0, (MIN_ASKS, MIN_ASKS / 2 + 1)), 70);
    assert!(s.unseen_peers.suspected && s.private_sources.suspected);
    assert_eq!(warnings(&s).len(), 2);
}

#[test]
fn the_private_ranges_are_the_built_in_allow_list_but_loopback() {
    let r = private_ranges();
    for want in ["10.0.0.0/8", "100.64.0.0/10", "fc00::/7"] {
        assert!(r.contains(&want.parse().unwrap()), "{want}");
    }
    assert!(r.iter().all(|n| !n.addr().is_loopback()));
}
