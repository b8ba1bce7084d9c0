//! The fleet: two real `mxscreen run` daemons on one MTA host namespace — one attached in
//! native XDP, one in tc on the same interface, each with its own socket, pins and state
//! file — sharing one real redis-server; real TCP handshakes from a client namespace, a
//! real rbldnsd as the DNSBL. The XDP daemon sees each SYN first, so a SYN it drops proves
//! it enforced an entry it got from the other host. Needs root; run by `cargo xtask test`.

use std::{
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_proto::rr::RecordType;
use mxscreen_tests::{
    daemon::{MxDaemon, Spec, ndjson},
    dns::{Forwarder, Mode, RblZone, Rbldnsd, listing},
    netns::{SERVER_IFACE, SERVER_V4, Wire},
    redis::RedisServer,
};
use serde_json::Value;

#[path = "fleet/guards.rs"]
mod guards;

const LISTED: [&str; 3] = ["192.0.2.20", "192.0.2.23", "192.0.2.24"];
/// Listed peers the MTA asks about as they connect, one repetition of the race each.
const ASKED: [&str; 6] = [
    "192.0.2.30",
    "192.0.2.31",
    "192.0.2.32",
    "192.0.2.33",
    "192.0.2.34",
    "192.0.2.35",
];
const CLEAN: &str = "192.0.2.21";
const OTHER: &str = "192.0.2.22";
const KEPT: &str = "192.0.2.25";
const DROPPED: &str = "192.0.2.26";
/// A change on one host is on every host at once: published with the change, not left to
/// a rejoin. The promise is a second (`cargo xtask bench fleet` times it); each check here
/// starts a CLI process, so the bound leaves room for a busy machine.
const SHARED_WITHIN: Duration = Duration::from_secs(3);
/// After redis-server returns: the reconnection backoff (at most 5 s) plus the join.
const REJOIN_WITHIN: Duration = Duration::from_secs(8);
const VERDICT_WITHIN: Duration = Duration::from_secs(10);

struct Bed {
    wire: Wire,
    _rbl: Rbldnsd,
    rbl_addr: SocketAddr,
    /// The hosts' resolver: rbldnsd itself unless a test puts a forwarder in front.
    dns: SocketAddr,
    _listener: TcpListener,
    redis: RedisServer,
}

fn smtp() -> SocketAddr {
    format!("{SERVER_V4}:25").parse().unwrap()
}

/// Client and MTA-host namespaces; rbldnsd (bl.test lists every LISTED address), a
/// listener on :25 and redis-server in the host namespace.
fn bed(tag: &str) -> Bed {
    let wire = Wire::new(tag);
    for a in LISTED
        .iter()
        .chain(&ASKED)
        .chain(&[CLEAN, OTHER, KEPT, DROPPED])
    {
        wire.add_client_addr(a);
    }
    let (rbl, listener) = wire.server.enter(|| {
        let rbl = Rbldnsd::start(&[RblZone::new(
            "bl.test",
            Duration::from_secs(900),
            LISTED
                .iter()
                .chain(&ASKED)
                .map(|ip| listing(ip, "127.0.0.2", "listed for testing"))
                .collect(),
        )]);
        (rbl, TcpListener::bind(smtp()).expect("listen on :25"))
    });
    let redis = RedisServer::start(&wire.server);
    Bed {
        rbl_addr: rbl.addr,
        dns: rbl.addr,
        wire,
        _rbl: rbl,
        _listener: listener,
        redis,
    }
}

/// One fleet host: `name`, attached in `mode` (xdp or tc) to the MTA host's interface;
/// no explained refusals (every SYN of a dropped peer is dropped).
fn host(b: &Bed, name: &str, mode: &str) -> MxDaemon {
    host_at(b, name, mode, &b.redis.url())
}

/// [`host`] with another `fleet.redis`.
fn host_at(b: &Bed, name: &str, mode: &str, url: &str) -> MxDaemon {
    host_with(b, name, mode, url, "")
}

/// Where [`host_with_metrics`] serves `GET /metrics` (in the server namespace).
const METRICS: &str = "127.0.0.1:9735";

/// [`host`] that also serves its metrics on [`METRICS`].
fn host_with_metrics(b: &Bed, name: &str, mode: &str) -> MxDaemon {
    let metrics = format!("\n[metrics]\nlisten = {METRICS:?}\n");
    host_with(b, name, mode, &b.redis.url(), &metrics)
}

/// The fleet-link gauge a scrape of [`host_with_metrics`] shows.
fn link_up_metric(b: &Bed) -> f64 {
    let text = mxscreen_tests::metrics::scrape(&b.wire.server, METRICS.parse().unwrap());
    mxscreen_tests::metrics::samples(&text)["mxscreen_fleet_link_up"]
}

fn host_with(b: &Bed, name: &str, mode: &str, url: &str, extra: &str) -> MxDaemon {
    MxDaemon::start(
        &b.wire.server,
        SERVER_IFACE,
        Spec {
            // First contacts pass: these tests start from a peer's first connection and
            // are about the verdicts shared (the default, hold, is tested in daemon and e2e).
            datapath: format!("mode = {mode:?}\nfirst_contact = \"pass\""),
            sections: format!(
                "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"0s\"\n\n[lists]\nallow = []\n\n[[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n\n[fleet]\nredis = {url:?}\nname = {name:?}\n{extra}",
                b.dns,
            ),
            ..Default::default()
        },
    )
}

fn json(d: &MxDaemon, args: &[&str]) -> Value {
    serde_json::from_str(&d.cli_ok(args)).unwrap()
}

/// The manual entry `d` holds for `ip` in `list` (`--blocked` / `--allowed`), if any.
fn entry(d: &MxDaemon, list: &str, ip: &str) -> Option<Value> {
    let net = format!("{ip}/32");
    ndjson(&d.cli_ok(&["list", list, "--json"]))
        .into_iter()
        .find(|e| e["net"] == net.as_str() && e["source"] == "manual")
}

fn blocked(d: &MxDaemon, ip: &str) -> Option<Value> {
    entry(d, "--blocked", ip)
}

/// Polls `cond` until it holds; returns how long that took, or panics after `within`.
#[track_caller]
fn within(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fleet_status(d: &MxDaemon) -> Value {
    json(d, &["status", "--json"])["fleet"].clone()
}

/// [`Wire::assert_connects`] that, when the handshake fails, shows what each host holds
/// about `peer` and its log: a dropped SYN must say which host dropped it and why.
#[track_caller]
fn connects_or_show(b: &Bed, peer: &str, hosts: &[&MxDaemon]) {
    if let Err(e) = b.wire.connect(peer, smtp(), Duration::from_secs(5)) {
        let mut shown = String::new();
        for h in hosts {
            let peer_out = h.cli(&["peer", peer]);
            let stats = h.cli(&["stats"]);
            shown.push_str(&format!(
                "\n--- peer {peer}:\n{}{}\n--- stats:\n{}\n--- log:\n{}",
                String::from_utf8_lossy(&peer_out.stdout),
                String::from_utf8_lossy(&peer_out.stderr),
                String::from_utf8_lossy(&stats.stdout),
                h.log_text()
            ));
        }
        panic!("{peer} -> {} should connect: {e}{shown}", smtp());
    }
}

fn evaluations(d: &MxDaemon) -> u64 {
    json(d, &["stats", "--json"])["engine"]["evaluations"]
        .as_u64()
        .unwrap()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn blocks_and_allows_reach_the_other_host_at_once() {
    let b = bed("fm");
    let mut xdp = host(&b, "mx-a", "xdp");
    let tc = host(&b, "mx-b", "tc");

    // Blocked on the tc host; the XDP host holds it at once and drops the SYN
    // itself (it sees the SYN first).
    tc.cli_ok(&["block", CLEAN, "--for", "1h", "--reason", "spam run"]);
    within(SHARED_WITHIN, "block reaches mx-a", || {
        blocked(&xdp, CLEAN).is_some()
    });
    let e = blocked(&xdp, CLEAN).unwrap();
    assert_eq!(
        (&e["origin"], &e["reason"]),
        (&Value::from("mx-b"), &Value::from("spam run")),
        "{e}"
    );
    assert_eq!(blocked(&tc, CLEAN).unwrap()["origin"], "mx-b");
    let drops = xdp.counter("dropped_deny");
    b.wire.assert_refused(CLEAN, smtp());
    assert!(xdp.counter("dropped_deny") > drops, "mx-a dropped it");
    // The Redis key lives as long as the entry.
    let ttl: u64 = b
        .redis
        .cli(&["PTTL", &format!("mxscreen:block:{CLEAN}/32")])
        .trim()
        .parse()
        .unwrap();
    assert!((3_590_000..=3_600_000).contains(&ttl), "PTTL {ttl}");
    let table = xdp.cli_ok(&["list", "--blocked"]);
    assert!(table.contains("spam run (from mx-b)"), "{table}");

    tc.cli_ok(&["unblock", CLEAN]);
    within(SHARED_WITHIN, "unblock reaches mx-a", || {
        blocked(&xdp, CLEAN).is_none()
    });
    b.wire.assert_connects(CLEAN, smtp());

    // Allow and unallow travel the same way.
    xdp.cli_ok(&["allow", KEPT, "--reason", "partner"]);
    within(SHARED_WITHIN, "allow reaches mx-b", || {
        entry(&tc, "--allowed", KEPT).is_some_and(|e| e["origin"] == "mx-a")
    });
    xdp.cli_ok(&["unallow", KEPT]);
    within(SHARED_WITHIN, "unallow reaches mx-b", || {
        entry(&tc, "--allowed", KEPT).is_none()
    });

    // Blocked on the XDP host, which is then killed: the tc host enforces it alone.
    xdp.cli_ok(&["block", OTHER]);
    within(SHARED_WITHIN, "block reaches mx-b", || {
        blocked(&tc, OTHER).is_some()
    });
    xdp.kill9();
    let drops = tc.counter("dropped_deny");
    b.wire.assert_refused(OTHER, smtp());
    assert!(tc.counter("dropped_deny") > drops, "mx-b dropped it");
    assert_eq!(
        fleet_status(&tc)["link"],
        "up",
        "one host's death is no outage"
    );

    // Unblocked meanwhile: the XDP host comes back with the block in its state file and
    // drops it before it is ready, because the fleet's removal is the later change.
    tc.cli_ok(&["unblock", OTHER]);
    b.wire.assert_connects(OTHER, smtp());
    xdp.restart();
    assert!(blocked(&xdp, OTHER).is_none(), "stale block came back");
    b.wire.assert_connects(OTHER, smtp());
    let log = xdp.log_text();
    assert!(
        log.contains("manual entry removed by the fleet") && log.contains("fleet link up"),
        "{log}"
    );
}

#[test]
fn a_listed_peer_costs_one_evaluation_for_the_fleet() {
    let b = bed("fe");
    let mut xdp = host(&b, "mx-a", "xdp");
    let mut tc = host(&b, "mx-b", "tc");
    for ip in &LISTED[..2] {
        // The first SYN passes both programs (first contact), each daemon hears of the
        // peer at once; one claims it, the other takes its verdict.
        b.wire.assert_connects(ip, smtp());
        assert_eq!(xdp.wait_verdict(ip, VERDICT_WITHIN), "drop");
        assert_eq!(tc.wait_verdict(ip, VERDICT_WITHIN), "drop");
        b.wire.assert_refused(ip, smtp());
    }
    assert_eq!(
        evaluations(&xdp) + evaluations(&tc),
        2,
        "one evaluation per peer for the whole fleet"
    );
    let (a, c) = (fleet_status(&xdp), fleet_status(&tc));
    assert_eq!(
        a["claims_won"].as_u64().unwrap() + c["claims_won"].as_u64().unwrap(),
        2,
        "{a}\n{c}"
    );
    // Redis holds the verdict with its evidence, the host that made it and its TTL.
    let key = format!("mxscreen:verdict:{}", LISTED[0]);
    let rec: Value = serde_json::from_str(&b.redis.cli(&["GET", &key])).unwrap();
    assert_eq!(rec["action"], "drop", "{rec}");
    assert!(
        rec["evidence"]
            .as_str()
            .unwrap()
            .contains("dnsbl:bl.test=listed"),
        "{rec}"
    );
    let maker = rec["host"].as_str().unwrap().to_owned();
    let ttl: u64 = b.redis.cli(&["PTTL", &key]).trim().parse().unwrap();
    assert!(
        ttl > 500_000,
        "PTTL {ttl} (drop verdicts live ttl_min..ttl_max)"
    );
    let on_tc = tc.verdict_entry(LISTED[0]).unwrap();
    assert_eq!(on_tc["origin"], maker.as_str(), "{on_tc}");
    eprintln!(
        "bytes per shared verdict (MEMORY USAGE {key}): {}",
        b.redis.memory_usage(&key)
    );

    // The host that made the verdict, started again with empty maps, holds it (from the
    // fleet) when it says ready, without evaluating it again.
    let maker = if maker == "mx-a" { &mut xdp } else { &mut tc };
    maker.kill9();
    std::fs::remove_dir_all(&maker.pin_dir).unwrap();
    maker.restart();
    assert_eq!(maker.verdict(LISTED[0]).as_deref(), Some("drop"));
    assert_eq!(evaluations(maker), 0);
}

/// Exim asks a daemon's query socket about a peer at connect, often before any verdict:
/// the question must go through the peer's claim like its SYN, in whichever order they
/// come, or the host that lost the claim evaluates the peer a second time.
#[test]
fn a_peer_the_mta_asks_about_costs_one_evaluation_for_the_fleet() {
    let mut b = bed("fq");
    // A slow resolver (each answer 300 ms late) keeps every peer unknown for a while after
    // its SYN, so the questions always come before the verdict: the race is made certain.
    let slow = b.wire.server.enter(|| {
        Forwarder::start(Mode::Forward {
            upstream: b.rbl_addr,
            delay: Duration::from_millis(300),
        })
    });
    b.dns = slow.addr;
    let xdp = host(&b, "mx-a", "xdp");
    let tc = host(&b, "mx-b", "tc");
    let ask_both = |ip: &str| {
        std::thread::scope(|s| {
            let a = s.spawn(|| xdp.query(ip));
            let c = s.spawn(|| tc.query(ip));
            (a.join().unwrap(), c.join().unwrap())
        })
    };
    for (i, ip) in ASKED.iter().enumerate() {
        let answers = if i % 2 == 0 {
            // Asked right after the handshake (Exim's connect ACL).
            b.wire.assert_connects(ip, smtp());
            ask_both(ip)
        } else {
            // Asked at the same moment as the SYN.
            std::thread::scope(|s| {
                let asked = s.spawn(|| ask_both(ip));
                b.wire.assert_connects(ip, smtp());
                asked.join().unwrap()
            })
        };
        eprintln!("{ip}: mx-a told {:?}, mx-b told {:?}", answers.0, answers.1);
        assert_eq!(xdp.wait_verdict(ip, VERDICT_WITHIN), "drop");
        assert_eq!(tc.wait_verdict(ip, VERDICT_WITHIN), "drop");
    }
    // A claim waited for in vain would evaluate its peer again after CLAIM_WAIT (4 s):
    // give any such wait time to end before counting.
    std::thread::sleep(Duration::from_secs(5));
    let (a, c) = (fleet_status(&xdp), fleet_status(&tc));
    let sum = |k: &str| a[k].as_u64().unwrap() + c[k].as_u64().unwrap();
    assert_eq!(
        (
            evaluations(&xdp) + evaluations(&tc),
            sum("verdicts_sent"),
            sum("claims_timed_out")
        ),
        (ASKED.len() as u64, ASKED.len() as u64, 0),
        "one evaluation per peer for the whole fleet (evaluations, verdicts shared, \
         claims timed out)\n{a}\n{c}"
    );
    // And one DNSBL lookup per peer, as the resolver saw them.
    for ip in ASKED {
        let rev: Vec<&str> = ip.split('.').rev().collect();
        let name = format!("{}.bl.test.", rev.join("."));
        let lookups = slow
            .queries()
            .iter()
            .filter(|q| q.name == name && q.rtype == RecordType::A)
            .count();
        assert_eq!(lookups, 1, "{name}");
    }
}

#[test]
fn hosts_screen_alone_while_redis_is_down_and_reconcile_when_it_returns() {
    let mut b = bed("fd");
    let xdp = host(&b, "mx-a", "xdp");
    let tc = host_with_metrics(&b, "mx-b", "tc");
    assert_eq!(link_up_metric(&b), 1.0);
    xdp.cli_ok(&["block", KEPT]);
    xdp.cli_ok(&["block", DROPPED]);
    within(SHARED_WITHIN, "blocks reach mx-b", || {
        blocked(&tc, KEPT).is_some() && blocked(&tc, DROPPED).is_some()
    });

    b.redis.kill();
    for d in [&xdp, &tc] {
        // A ping a second, answered within 2 s: about 3 s, with room for a busy machine.
        within(
            Duration::from_secs(10),
            "status says the link is down",
            || {
                let f = fleet_status(d);
                f["link"] == "down"
                    && f["since"].as_u64().unwrap() > 0
                    && f["last_error"].is_string()
            },
        );
    }
    let text = tc.cli_ok(&["status"]);
    assert!(
        text.contains("DOWN for") && text.contains("screening alone"),
        "{text}"
    );
    // The metrics say it too, and since when.
    assert_eq!(link_up_metric(&b), 0.0);
    let since = mxscreen_tests::metrics::samples(&mxscreen_tests::metrics::scrape(
        &b.wire.server,
        METRICS.parse().unwrap(),
    ))["mxscreen_fleet_link_state_since_timestamp_seconds"];
    assert_eq!(since, fleet_status(&tc)["since"].as_u64().unwrap() as f64);

    // Screening alone: entries held, new peers evaluated by each host, manual commands work.
    b.wire.assert_refused(KEPT, smtp());
    b.wire.assert_connects(LISTED[2], smtp());
    assert_eq!(xdp.wait_verdict(LISTED[2], VERDICT_WITHIN), "drop");
    assert_eq!(tc.wait_verdict(LISTED[2], VERDICT_WITHIN), "drop");
    xdp.cli_ok(&["block", CLEAN, "--reason", "while apart"]);
    // Conflicting changes made apart: the later change of each key wins everywhere. (The
    // pauses only keep the changes in distinct milliseconds: their order is the point.)
    xdp.cli_ok(&["unblock", KEPT]);
    std::thread::sleep(Duration::from_millis(20));
    tc.cli_ok(&["block", KEPT, "--reason", "again from mx-b"]);
    tc.cli_ok(&["block", DROPPED, "--reason", "refreshed on mx-b"]);
    std::thread::sleep(Duration::from_millis(20));
    xdp.cli_ok(&["unblock", DROPPED]);
    assert!(blocked(&tc, CLEAN).is_none());

    // redis-server returns empty (no persistence): the hosts fill it again.
    b.redis.restart(&b.wire.server);
    let took = within(REJOIN_WITHIN, "the block made apart reaches mx-b", || {
        blocked(&tc, CLEAN).is_some_and(|e| e["origin"] == "mx-a")
    });
    eprintln!("block made while apart reached the other host {took:?} after redis-server returned");
    for d in [&xdp, &tc] {
        within(REJOIN_WITHIN, "the later re-block wins", || {
            blocked(d, KEPT).is_some_and(|e| e["reason"] == "again from mx-b")
        });
        within(REJOIN_WITHIN, "the later unblock wins", || {
            blocked(d, DROPPED).is_none()
        });
        within(REJOIN_WITHIN, "link up again", || {
            fleet_status(d)["link"] == "up"
        });
    }
    assert_eq!(link_up_metric(&b), 1.0);
    b.wire.assert_refused(KEPT, smtp());
    b.wire.assert_connects(DROPPED, smtp());
}

#[test]
fn malformed_and_unsafe_shared_entries_are_logged_and_ignored() {
    let b = bed("fx");
    let mut d = host(&b, "mx-a", "xdp");
    let channel = "mxscreen:changes";
    let block = |net: &str, force: bool| {
        format!(
            r#"{{"kind":"manual","list":"deny","net":"{net}","reason":"from a bad host","created":1,"host":"mx-evil","changed_ms":{},"force":{force}}}"#,
            now_ms()
        )
    };
    b.redis
        .cli(&["SET", "mxscreen:block:203.0.113.0/24", "not json at all"]);
    for msg in [
        "{\"kind\":\"manual\",\"list\":\"deny\",\"net\":\"bogus\"}".to_owned(),
        "\u{1}\u{2}garbage".to_owned(),
        "x".repeat(20_000),
        block("127.0.0.0/8", true),
        block(&format!("{SERVER_V4}/32"), true),
        block("198.18.0.0/15", false),
    ] {
        b.redis.cli(&["PUBLISH", channel, &msg]);
    }
    within(Duration::from_secs(5), "every entry was judged", || {
        let f = fleet_status(&d);
        f["malformed"].as_u64().unwrap() >= 3 && f["refused"].as_u64().unwrap() >= 3
    });
    let log = d.log_text();
    assert!(log.contains("ignoring a malformed fleet entry"), "{log}");
    assert!(
        log.contains("refusing a block shared by the fleet")
            && log.contains("is protected (loopback")
            && log.contains("is protected (self")
            && log.contains("wider than /16"),
        "{log}"
    );
    let blocked = d.cli_ok(&["list", "--blocked"]);
    assert!(!blocked.contains("mx-evil"), "{blocked}");
    b.wire.assert_connects(CLEAN, smtp());
    // A forced block of a prefix that is not protected is accepted, as it would be here.
    b.redis
        .cli(&["PUBLISH", channel, &block("198.51.100.0/24", true)]);
    within(SHARED_WITHIN, "forced block applied", || {
        d.cli_ok(&["list", "--blocked"]).contains("mx-evil")
    });
    // A restart reads the garbage key with the rest: logged, ignored, the daemon runs.
    d.stop();
    d.restart();
    assert_eq!(fleet_status(&d)["link"], "up");
    assert!(fleet_status(&d)["malformed"].as_u64().unwrap() >= 1);
    d.cli_ok(&["block", OTHER]);
    b.wire.assert_refused(OTHER, smtp());
}

#[test]
fn a_host_finds_the_primary_through_sentinel() {
    let mut b = bed("fs");
    let url = b.redis.start_sentinel(&b.wire.server);
    let via_sentinel = host_at(&b, "mx-a", "xdp", &url);
    let direct = host(&b, "mx-b", "tc");
    assert_eq!(fleet_status(&via_sentinel)["link"], "up");
    via_sentinel.cli_ok(&["block", CLEAN, "--reason", "through sentinel"]);
    within(SHARED_WITHIN, "block reaches mx-b", || {
        blocked(&direct, CLEAN).is_some_and(|e| e["origin"] == "mx-a")
    });
}

/// `forget` on one host: its verdict, the other host's copy and the Redis key go within a
/// second, a tombstone stays; the next SYN is evaluated afresh and that verdict is shared
/// as any. A host that was down during a forget drops its (pinned) copy when it rejoins,
/// and nothing brings the verdict back from Redis.
#[test]
fn forget_removes_the_fleets_copies_and_they_do_not_come_back() {
    let b = bed("ff");
    let peer = LISTED[2];
    let xdp = host(&b, "mx-a", "xdp");
    let mut tc = host(&b, "mx-b", "tc");
    let key = format!("mxscreen:verdict:{peer}");
    let held_by_both = |a: &MxDaemon, c: &MxDaemon, what: &str| {
        within(VERDICT_WITHIN, what, || {
            a.verdict(peer).as_deref() == Some("drop") && c.verdict(peer).as_deref() == Some("drop")
        });
    };
    b.wire.assert_connects(peer, smtp());
    held_by_both(&xdp, &tc, "the verdict on both hosts");
    assert_eq!(b.redis.cli(&["EXISTS", &key]).trim(), "1");

    let out = xdp.cli_ok(&["forget", peer]);
    assert!(
        out.starts_with(&format!(
            "forgot the verdict of {peer}; on every host of the fleet too"
        )),
        "{out}"
    );
    assert_eq!(xdp.verdict(peer), None);
    within(SHARED_WITHIN, "the other host's copy gone", || {
        tc.verdict(peer).is_none()
    });
    assert_eq!(
        b.redis.cli(&["EXISTS", &key]).trim(),
        "0",
        "the Redis key is gone"
    );
    let tombstone = format!("mxscreen:forget:{peer}/32");
    assert_eq!(b.redis.cli(&["EXISTS", &tombstone]).trim(), "1");

    // The next SYN is a first contact, evaluated afresh (once for the fleet), and its
    // verdict, made after the forget, is shared and kept.
    let before = evaluations(&xdp) + evaluations(&tc);
    connects_or_show(&b, peer, &[&xdp, &tc]);
    held_by_both(&xdp, &tc, "the fresh verdict on both hosts");
    assert_eq!(evaluations(&xdp) + evaluations(&tc), before + 1);
    b.wire.assert_refused(peer, smtp());

    // A host down during the forget keeps its pinned copy until it rejoins: then the
    // tombstone removes it before it says ready, and Redis has nothing to bring back.
    tc.kill9();
    xdp.cli_ok(&["forget", peer]);
    assert_eq!(b.redis.cli(&["EXISTS", &key]).trim(), "0");
    tc.restart();
    assert_eq!(tc.verdict(peer), None, "the forgotten verdict came back");
    assert_eq!(xdp.verdict(peer), None);
    assert!(
        tc.log_text().contains("verdicts forgotten by the fleet"),
        "{}",
        tc.log_text()
    );
    b.wire.assert_connects(peer, smtp());
    held_by_both(&xdp, &tc, "the next evaluation on both hosts");
}
