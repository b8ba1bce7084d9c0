//! The reputation engine against real DNS servers on loopback: rbldnsd for DNSBL/DNSWL zones,
//! nsd for reverse and forward zones, unbound where the recursive path matters (SERVFAIL),
//! and a counting forwarder (`mxscreen_tests::dns::Forwarder`) wherever a test needs to see,
//! delay or swallow the queries the engine sends.
//!
//! Test peers are documentation addresses (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
//! 2001:db8::/32); zone names are under `.test`.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use filter_common::{Action, Reason};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use mxscreen::reputation::{
    Class, CodeWeight, DnsblConfig, Engine, Evidence, Finding, ListsConfig, Nameserver,
    PolicyConfig, RdnsConfig, ReputationConfig, ResolverConfig, Submit, Verdict, check,
    config::default_dnsbls, names::dnsbl_name,
};
use mxscreen_tests::dns::{AuthZone, Forwarder, Mode, Nsd, RblZone, Rbldnsd, Unbound, listing};
use tokio::sync::mpsc;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
}

/// A config that asks `server`, queries `zones`, skips rDNS and has no static lists.
fn config(server: SocketAddr, zones: Vec<DnsblConfig>) -> ReputationConfig {
    ReputationConfig {
        resolver: ResolverConfig {
            nameservers: vec![Nameserver(server)],
            timeout: Duration::from_secs(2),
            attempts: 0,
            ..ResolverConfig::default()
        },
        dnsbl: zones,
        rdns: RdnsConfig {
            enabled: false,
            ..RdnsConfig::default()
        },
        policy: PolicyConfig::default(),
        lists: ListsConfig {
            allow: Vec::new(),
            allow_defaults: false,
            deny: Vec::new(),
            feed: Vec::new(),
        },
    }
}

/// The built-in zen.spamhaus.org entry, renamed to a test zone.
fn zen(zone: &str) -> DnsblConfig {
    DnsblConfig {
        zone: zone.to_owned(),
        ..default_dnsbls()[0].clone()
    }
}

/// The built-in list.dnswl.org entry, renamed to a test zone.
fn dnswl(zone: &str) -> DnsblConfig {
    DnsblConfig {
        zone: zone.to_owned(),
        ..default_dnsbls()[1].clone()
    }
}

fn zen_data() -> RblZone {
    RblZone::new(
        "zen.test",
        Duration::from_secs(1200),
        vec![
            listing("192.0.2.2", "127.0.0.2", "SBL listed"),
            listing("192.0.2.3", "127.0.0.3", "CSS listed"),
            listing("192.0.2.4", "127.0.0.4", "XBL listed"),
            listing("192.0.2.7", "127.0.0.7", "XBL listed"),
            listing("192.0.2.9", "127.0.0.9", "DROP listed"),
            listing("192.0.2.10", "127.0.0.10", "PBL listed"),
            listing("192.0.2.11", "127.0.0.4", "XBL listed"),
            listing("192.0.2.11", "127.0.0.10", "PBL listed"),
            listing("192.0.2.12", "127.0.0.12", "unknown code"),
            listing("192.0.2.13", "127.0.0.4", "XBL listed"),
            listing("192.0.2.13", "127.0.0.5", "XBL listed"),
            listing("192.0.2.99", "10.0.0.1", "rewritten NXDOMAIN"),
            listing("192.0.2.252", "127.255.255.252", "typing error"),
            listing("192.0.2.254", "127.255.255.254", "public resolver"),
            listing("198.51.100.10", "127.0.0.4", "XBL listed"),
            listing("198.51.100.11", "127.0.0.4", "XBL listed"),
            listing("198.51.100.12", "127.0.0.10", "PBL listed"),
            listing("2001:db8::25", "127.0.0.4", "XBL listed v6"),
        ],
    )
}

fn dnswl_data() -> RblZone {
    RblZone::new(
        "wl.test",
        Duration::from_secs(3600),
        vec![
            listing("198.51.100.10", "127.0.15.3", "trusted sender"),
            listing("198.51.100.11", "127.0.15.1", "low trust sender"),
            listing("198.51.100.12", "127.0.15.1", "low trust sender"),
            listing("192.0.2.253", "127.0.0.255", "over quota"),
        ],
    )
}

/// The one evidence entry from `source` with `result`; panics showing the whole verdict.
fn evidence<'a>(v: &'a Verdict, source: &str, result: Finding) -> &'a Evidence {
    let mut hits = v
        .evidence
        .iter()
        .filter(|e| e.source == source && e.result == result);
    let e = hits
        .next()
        .unwrap_or_else(|| panic!("no {source} {result:?} evidence in {v:#?}"));
    assert!(
        hits.next().is_none(),
        "several {source} {result:?} entries in {v:#?}"
    );
    e
}

/// Receives `n` verdicts, failing if they take longer than `timeout` in all.
async fn recv(rx: &mut mpsc::Receiver<Verdict>, n: usize, timeout: Duration) -> Vec<Verdict> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) => out.push(v),
            Ok(None) => panic!("verdict channel closed after {} of {n} verdicts", out.len()),
            Err(_) => panic!("only {} of {n} verdicts within {timeout:?}", out.len()),
        }
    }
    out
}

#[tokio::test]
async fn each_zen_code_class_gets_its_weight() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::ZERO,
    });
    let engine = Engine::new(config(fwd.addr, vec![zen("zen.test")])).expect("engine");
    let cases = [
        ("192.0.2.2", Action::Drop, 10, "(SBL): SBL listed"),
        ("192.0.2.3", Action::Drop, 10, "(CSS)"),
        ("192.0.2.4", Action::Drop, 10, "127.0.0.4 (XBL): XBL listed"),
        ("192.0.2.7", Action::Drop, 10, "(XBL)"),
        ("192.0.2.9", Action::Drop, 10, "(DROP)"),
        (
            "192.0.2.10",
            Action::Limit,
            5,
            "127.0.0.10 (PBL): PBL listed",
        ),
    ];
    for (addr, action, score, detail) in cases {
        let v = engine.evaluate(ip(addr)).await;
        assert_eq!(
            (v.action, v.score, v.reason),
            (action, score, Reason::Reputation),
            "{addr}: {v:#?}"
        );
        let e = evidence(&v, "dnsbl:zen.test", Finding::Listed);
        assert!(
            e.detail.contains(detail),
            "{addr}: detail {:?} lacks {detail:?}",
            e.detail
        );
        assert_eq!(e.ttl, Some(Duration::from_secs(1200)));
        // One A and one TXT (for the reason) per listed address.
        assert_eq!(fwd.count(&dnsbl_name(ip(addr), "zen.test")), 2, "{addr}");
    }
    // XBL and PBL at once: two classes, both count.
    let v = engine.evaluate(ip("192.0.2.11")).await;
    assert_eq!((v.action, v.score), (Action::Drop, 15), "{v:#?}");
    assert_eq!(
        v.evidence
            .iter()
            .filter(|e| e.result == Finding::Listed)
            .count(),
        2
    );
    // Two XBL codes: one class, counted once.
    let v = engine.evaluate(ip("192.0.2.13")).await;
    assert_eq!(v.score, 10, "{v:#?}");
    assert!(
        evidence(&v, "dnsbl:zen.test", Finding::Listed)
            .detail
            .starts_with("127.0.0.4,127.0.0.5 (XBL)")
    );
    // A code outside the zone's codes is ignored, not a listing.
    let v = engine.evaluate(ip("192.0.2.12")).await;
    assert_eq!((v.action, v.score), (Action::Pass, 0), "{v:#?}");
    evidence(&v, "dnsbl:zen.test", Finding::CodeIgnored);
    // Not listed: NXDOMAIN, one query, no TXT.
    let v = engine.evaluate(ip("192.0.2.200")).await;
    assert_eq!(
        (v.action, v.score, v.ttl),
        (Action::Pass, 0, PolicyConfig::default().pass_ttl)
    );
    assert_eq!(
        evidence(&v, "dnsbl:zen.test", Finding::NotListed).detail,
        "NXDOMAIN"
    );
    assert_eq!(fwd.count(&dnsbl_name(ip("192.0.2.200"), "zen.test")), 1);

    let stats = engine.stats();
    let zone = &stats.zones["zen.test"];
    assert_eq!(
        (zone.listed, zone.not_listed, zone.code_ignored),
        (8, 1, 1),
        "{stats:#?}"
    );
    assert_eq!(
        (stats.verdict_drop, stats.verdict_limit, stats.verdict_pass),
        (7, 1, 2)
    );
    assert_eq!(
        stats.queries_sent as usize,
        fwd.queries().len(),
        "every query the engine counts reached the server"
    );
}

#[tokio::test]
async fn code_filters_and_per_code_weights() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let zone = DnsblConfig {
        zone: "zen.test".to_owned(),
        weight: 7,
        codes: vec![
            "127.0.0.2".parse().unwrap(),
            "127.0.0.10-127.0.0.11".parse().unwrap(),
        ],
        code_weights: vec![CodeWeight {
            codes: vec!["127.0.0.10/31".parse().unwrap()],
            weight: 2,
            label: String::new(),
        }],
        ..DnsblConfig::new("zen.test", 7)
    };
    let engine = Engine::new(config(rbl.addr, vec![zone])).expect("engine");
    // In the filter, no per-code weight: the zone's weight.
    let v = engine.evaluate(ip("192.0.2.2")).await;
    assert_eq!(v.score, 7, "{v:#?}");
    assert_eq!(
        evidence(&v, "dnsbl:zen.test", Finding::Listed).detail,
        "127.0.0.2: SBL listed"
    );
    // Outside the filter.
    let v = engine.evaluate(ip("192.0.2.4")).await;
    assert_eq!((v.score, v.action), (0, Action::Pass), "{v:#?}");
    evidence(&v, "dnsbl:zen.test", Finding::CodeIgnored);
    // Per-code weight, labelled by its codes.
    let v = engine.evaluate(ip("192.0.2.10")).await;
    assert_eq!(v.score, 2, "{v:#?}");
    assert!(
        evidence(&v, "dnsbl:zen.test", Finding::Listed)
            .detail
            .starts_with("127.0.0.10 (127.0.0.10/31)")
    );
    // 127.0.0.4 filtered out, 127.0.0.10 counted.
    let v = engine.evaluate(ip("192.0.2.11")).await;
    assert_eq!(v.score, 2, "{v:#?}");
    evidence(&v, "dnsbl:zen.test", Finding::CodeIgnored);
}

#[tokio::test]
async fn dnswl_outweighs_a_listing() {
    let rbl = Rbldnsd::start(&[zen_data(), dnswl_data()]);
    let engine =
        Engine::new(config(rbl.addr, vec![zen("zen.test"), dnswl("wl.test")])).expect("engine");
    // XBL (+10) and DNSWL high trust (-15): pass.
    let v = engine.evaluate(ip("198.51.100.10")).await;
    assert_eq!((v.action, v.score), (Action::Pass, -5), "{v:#?}");
    let wl = evidence(&v, "dnsbl:wl.test", Finding::Listed);
    assert_eq!(
        (wl.weight, wl.detail.as_str()),
        (-15, "127.0.15.3 (DNSWL-high): trusted sender")
    );
    // XBL (+10) and low trust (-5): limit rather than drop.
    let v = engine.evaluate(ip("198.51.100.11")).await;
    assert_eq!((v.action, v.score), (Action::Limit, 5), "{v:#?}");
    // PBL (+5) and low trust (-5): pass.
    let v = engine.evaluate(ip("198.51.100.12")).await;
    assert_eq!((v.action, v.score), (Action::Pass, 0), "{v:#?}");
}

#[tokio::test]
async fn refusal_codes_are_never_listings() {
    let rbl = Rbldnsd::start(&[zen_data(), dnswl_data()]);
    let cfg = config(rbl.addr, vec![zen("zen.test"), dnswl("wl.test")]);
    let engine = Engine::new(cfg.clone()).expect("engine");
    let tempfail_ttl = cfg.policy.tempfail_ttl;

    let v = engine.evaluate(ip("192.0.2.254")).await;
    assert_eq!(
        (v.action, v.score, v.reason, v.ttl),
        (Action::Pass, 0, Reason::Tempfail, tempfail_ttl),
        "{v:#?}"
    );
    let e = evidence(&v, "dnsbl:zen.test", Finding::ErrorCode);
    assert_eq!(
        (e.weight, e.detail.as_str()),
        (
            0,
            "127.255.255.254: query via a public/open resolver: the list refuses it"
        )
    );
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("zen.test") && w.contains("127.255.255.254")),
        "{:?}",
        v.warnings
    );

    let v = engine.evaluate(ip("192.0.2.252")).await;
    assert_eq!((v.action, v.score), (Action::Pass, 0), "{v:#?}");
    evidence(&v, "dnsbl:zen.test", Finding::ErrorCode);

    // DNSWL's own refusal code (127.0.0.255) is not an allowlisting either.
    let v = engine.evaluate(ip("192.0.2.253")).await;
    let e = evidence(&v, "dnsbl:wl.test", Finding::ErrorCode);
    assert_eq!(e.weight, 0);

    let stats = engine.stats();
    assert_eq!(stats.zones["zen.test"].error_codes, 2, "{stats:#?}");
    assert_eq!(stats.zones["zen.test"].listed, 0, "{stats:#?}");
    assert_eq!(stats.zones["wl.test"].error_codes, 1, "{stats:#?}");
    // The second zen.test refusal within a minute is counted, not logged again.
    assert_eq!(stats.zones["zen.test"].warnings_suppressed, 1, "{stats:#?}");

    // `check` surfaces them.
    let report = check(cfg, ip("192.0.2.254")).await.expect("check");
    assert!(
        report
            .to_text()
            .contains("warning: zen.test answered 127.255.255.254"),
        "{}",
        report.to_text()
    );
    let json = report.to_json();
    assert!(
        json["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["result"] == "error_code"),
        "{json}"
    );
    assert!(!json["warnings"].as_array().unwrap().is_empty(), "{json}");
}

#[tokio::test]
async fn answers_outside_loopback_are_not_listings() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let engine = Engine::new(config(rbl.addr, vec![zen("zen.test")])).expect("engine");
    let v = engine.evaluate(ip("192.0.2.99")).await;
    assert_eq!((v.action, v.score), (Action::Pass, 0), "{v:#?}");
    assert_eq!(
        evidence(&v, "dnsbl:zen.test", Finding::OutsideLoopback).detail,
        "10.0.0.1"
    );
    assert_eq!(engine.stats().zones["zen.test"].outside_loopback, 1);
}

#[tokio::test]
async fn ipv6_peers_are_queried_by_nibbles() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::ZERO,
    });
    let engine = Engine::new(config(fwd.addr, vec![zen("zen.test")])).expect("engine");
    let v = engine.evaluate(ip("2001:db8::25")).await;
    assert_eq!((v.action, v.score), (Action::Drop, 10), "{v:#?}");
    let nibbles = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test.";
    assert_eq!(
        evidence(&v, "dnsbl:zen.test", Finding::Listed).query,
        format!("{nibbles} A")
    );
    assert_eq!(fwd.count(nibbles), 2, "A and TXT: {:?}", fwd.queries());
    let v = engine.evaluate(ip("2001:db8::26")).await;
    assert_eq!((v.action, v.score), (Action::Pass, 0), "{v:#?}");
    evidence(&v, "dnsbl:zen.test", Finding::NotListed);
    // An IPv4-mapped IPv6 peer is an IPv4 peer.
    let v = engine.evaluate(ip("::ffff:192.0.2.4")).await;
    assert_eq!((v.ip, v.score), (ip("192.0.2.4"), 10), "{v:#?}");
}

/// nsd with the test reverse and forward zones, and unbound resolving them; 203.0.113.0/24's
/// reverse zone is stubbed to nsd, which does not serve it, so unbound answers SERVFAIL.
struct RdnsWorld {
    nsd: Nsd,
    unbound: Unbound,
}

impl RdnsWorld {
    fn start() -> Self {
        let nsd = Nsd::start(&[
            AuthZone::new(
                "2.0.192.in-addr.arpa",
                &[
                    "51 TXT \"an owner name without PTR\"",
                    "60 PTR mail.mx.test.",
                    "61 PTR other.mx.test.",
                    "62 PTR gone.mx.test.",
                    "63 PTR a.mx.test.",
                    "63 PTR mail63.mx.test.",
                    "64 PTR p1.mx.test.",
                    "64 PTR p2.mx.test.",
                    "64 PTR p3.mx.test.",
                    "64 PTR p4.mx.test.",
                    "64 PTR p5.mx.test.",
                    "65 PTR v6only.mx.test.",
                    // Names no host has, which the sender controls: looked up as they are.
                    "66 PTR mail\\032srv.mx.test.",
                    "67 PTR m\\195\\164il.mx.test.",
                    "68 PTR ctl\\010x.mx.test.",
                    // More names than max_ptr_names: the first in name order confirms.
                    "69 PTR z1.mx.test.",
                    "69 PTR z2.mx.test.",
                    "69 PTR z3.mx.test.",
                    "69 PTR a69.mx.test.",
                ],
            ),
            AuthZone::new(
                "mx.test",
                &[
                    "mail A 192.0.2.60",
                    "other A 192.0.2.99",
                    "a A 192.0.2.1",
                    "mail63 A 192.0.2.63",
                    "p1 A 192.0.2.1",
                    "p2 A 192.0.2.1",
                    "p3 A 192.0.2.1",
                    "p4 A 192.0.2.1",
                    "p5 A 192.0.2.1",
                    "v6only AAAA 2001:db8::65",
                    "v6 AAAA 2001:db8::60",
                    "v6 A 192.0.2.60",
                    "a69 A 192.0.2.69",
                    "z1 A 192.0.2.1",
                    "z2 A 192.0.2.1",
                    "z3 A 192.0.2.1",
                ],
            ),
            AuthZone::new(
                "8.b.d.0.1.0.0.2.ip6.arpa",
                &["0.6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 PTR v6.mx.test."],
            ),
        ]);
        let unbound = Unbound::start(&[
            ("2.0.192.in-addr.arpa", nsd.addr),
            ("mx.test", nsd.addr),
            ("8.b.d.0.1.0.0.2.ip6.arpa", nsd.addr),
            ("113.0.203.in-addr.arpa", nsd.addr),
        ]);
        Self { nsd, unbound }
    }

    fn config(&self, server: SocketAddr) -> ReputationConfig {
        let mut cfg = config(server, Vec::new());
        cfg.rdns.enabled = true;
        cfg
    }
}

#[tokio::test]
async fn missing_ptr_is_not_a_dns_failure() {
    let world = RdnsWorld::start();
    let cfg = world.config(world.unbound.addr);
    let engine = Engine::new(cfg.clone()).expect("engine");

    // NXDOMAIN: a host without reverse DNS.
    let v = engine.evaluate(ip("192.0.2.50")).await;
    let e = evidence(&v, "rdns", Finding::NoPtr);
    assert_eq!((e.weight, e.detail.as_str()), (5, "NXDOMAIN"), "{v:#?}");
    assert_eq!(
        (v.action, v.reason),
        (Action::Limit, Reason::Reputation),
        "{v:#?}"
    );
    // The SOA's negative TTL (300s) clamped up to ttl_min.
    assert_eq!(v.ttl, cfg.policy.ttl_min);

    // The name exists but has no PTR (NOERROR, no data): also no PTR.
    let v = engine.evaluate(ip("192.0.2.51")).await;
    assert_eq!(
        evidence(&v, "rdns", Finding::NoPtr).detail,
        "no PTR record",
        "{v:#?}"
    );

    // SERVFAIL: we know nothing, so no weight and a short pass.
    let v = engine.evaluate(ip("203.0.113.7")).await;
    let e = evidence(&v, "rdns", Finding::DnsTempfail);
    assert_eq!(e.weight, 0);
    assert_eq!(
        e.detail,
        "SERVFAIL (Server Failure)",
        "{e:#?}\n{}",
        world.unbound.log()
    );
    assert_eq!(
        (v.action, v.score, v.reason, v.ttl),
        (Action::Pass, 0, Reason::Tempfail, cfg.policy.tempfail_ttl)
    );
    let stats = engine.stats();
    assert_eq!(
        (stats.no_ptr, stats.rdns_tempfail, stats.verdict_tempfail),
        (2, 1, 1),
        "{stats:#?}"
    );
    assert!(
        world.nsd.log().is_empty() || !world.nsd.log().contains("error"),
        "{}",
        world.nsd.log()
    );
}

#[tokio::test]
async fn resolver_timeout_is_a_dns_failure() {
    // A resolver that never answers, held open by the test.
    let silent = Forwarder::start(Mode::Blackhole);
    let rbl = Rbldnsd::start(&[zen_data()]);
    let mut cfg = config(silent.addr, vec![zen("zen.test")]);
    cfg.rdns.enabled = true;
    cfg.resolver.timeout = Duration::from_millis(300);
    let engine = Engine::new(cfg.clone()).expect("engine");
    let started = Instant::now();
    let v = engine.evaluate(ip("192.0.2.4")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        (v.action, v.score, v.reason, v.ttl),
        (Action::Pass, 0, Reason::Tempfail, cfg.policy.tempfail_ttl),
        "{v:#?}"
    );
    assert_eq!(evidence(&v, "rdns", Finding::DnsTempfail).detail, "timeout");
    evidence(&v, "dnsbl:zen.test", Finding::DnsTempfail);
    assert!(
        silent.count("4.2.0.192.in-addr.arpa.") >= 1,
        "{:?}",
        silent.queries()
    );
    let stats = engine.stats();
    assert_eq!(
        (
            stats.no_ptr,
            stats.rdns_tempfail,
            stats.zones["zen.test"].tempfail
        ),
        (0, 1, 1),
        "{stats:#?}"
    );

    // With rDNS failing but the blocklist answering, the listing still decides: a PTR could
    // only have added weight.
    let mut cfg = config(rbl.addr, vec![zen("zen.test")]);
    cfg.rdns.enabled = true; // rbldnsd refuses PTR queries: REFUSED is a failure too.
    let v = Engine::new(cfg.clone())
        .expect("engine")
        .evaluate(ip("192.0.2.4"))
        .await;
    evidence(&v, "rdns", Finding::DnsTempfail);
    assert_eq!(
        (v.action, v.score, v.reason, v.ttl),
        (
            Action::Drop,
            10,
            Reason::Reputation,
            cfg.policy.tempfail_ttl
        ),
        "{v:#?}"
    );
}

/// A listing's TXT reason only explains: a list whose TXT query is never answered must not
/// hold the verdict past its A answer (a held SYN is released at `datapath.hold_max`).
#[tokio::test]
async fn an_unanswered_txt_does_not_delay_the_verdict() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Swallow {
        upstream: rbl.addr,
        when: |_, rtype| rtype == RecordType::TXT,
    });
    let mut cfg = config(fwd.addr, vec![zen("zen.test")]);
    cfg.resolver.attempts = 1;
    // Waiting for the TXT would take its two 5 s tries: a verdict well inside that did not
    // wait (the bound tells the two behaviours apart; it is no speed target).
    cfg.resolver.timeout = Duration::from_secs(5);
    let engine = Engine::new(cfg).expect("engine");
    let started = Instant::now();
    let v = engine.evaluate(ip("192.0.2.2")).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}: {v:#?}");
    assert_eq!(
        (v.action, v.score, v.reason),
        (Action::Drop, 10, Reason::Reputation),
        "{v:#?}"
    );
    let e = evidence(&v, "dnsbl:zen.test", Finding::Listed);
    assert_eq!(e.detail, "127.0.0.2 (SBL)", "shown without its text");
    assert!(
        fwd.queries().iter().any(|q| q.rtype == RecordType::TXT),
        "the TXT was asked: {:?}",
        fwd.queries()
    );
}

/// Through a misbehaving resolver: an NXDOMAIN that carries an A record is no listing, and a
/// TTL with the top bit set is 0 (RFC 2181 section 8), not a day.
#[tokio::test]
async fn odd_answers_are_read_as_the_rfcs_say() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let nxdomain = Forwarder::start(Mode::Tamper {
        upstream: rbl.addr,
        f: |m| m.metadata.response_code = ResponseCode::NXDomain,
    });
    let engine = Engine::new(config(nxdomain.addr, vec![zen("zen.test")])).expect("engine");
    let v = engine.evaluate(ip("192.0.2.2")).await;
    assert_eq!((v.action, v.score), (Action::Pass, 0), "{v:#?}");
    assert_eq!(
        evidence(&v, "dnsbl:zen.test", Finding::NotListed).detail,
        "NXDOMAIN"
    );
    let top_bit = Forwarder::start(Mode::Tamper {
        upstream: rbl.addr,
        f: |m| m.answers.iter_mut().for_each(|r| r.ttl = u32::MAX),
    });
    let engine = Engine::new(config(top_bit.addr, vec![zen("zen.test")])).expect("engine");
    let v = engine.evaluate(ip("192.0.2.2")).await;
    let e = evidence(&v, "dnsbl:zen.test", Finding::Listed);
    assert_eq!(e.ttl, Some(Duration::ZERO), "{v:#?}");
    assert_eq!(v.ttl, PolicyConfig::default().ttl_min, "{v:#?}");
}

/// One verdict the way the daemon gets it (the budgeted queue), and how long it took.
async fn queued_verdict(cfg: ReputationConfig, peer: IpAddr) -> (Verdict, Duration) {
    let (engine, mut verdicts) = Engine::spawn(cfg).expect("engine");
    let started = Instant::now();
    assert_eq!(engine.submit(peer), Submit::Queued);
    let v = recv(&mut verdicts, 1, Duration::from_secs(10))
        .await
        .remove(0);
    (v, started.elapsed())
}

/// In the daemon, a zone that times out delays no drop the other answers already make (it
/// could only add weight); while an allowlist is the one out, the verdict waits for it.
/// `check` waits for every answer: it shows each lookup, and holds no SYN meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_blocklist_delays_no_drop() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Swallow {
        upstream: rbl.addr,
        when: |name, _| name.ends_with(".dead.test."),
    });
    let mut cfg = config(
        fwd.addr,
        vec![zen("zen.test"), DnsblConfig::new("dead.test", 5)],
    );
    // Waiting for the dead zone takes its two 3 s tries: a verdict well inside that did not
    // wait (the bounds tell the two behaviours apart; they are no speed target).
    cfg.resolver.timeout = Duration::from_secs(3);
    cfg.resolver.attempts = 1;
    let (v, took) = queued_verdict(cfg.clone(), ip("192.0.2.2")).await;
    assert!(took < Duration::from_secs(3), "took {took:?}: {v:#?}");
    assert_eq!(
        (v.action, v.score, v.reason, v.ttl),
        (
            Action::Drop,
            10,
            Reason::Reputation,
            Duration::from_secs(1200)
        ),
        "{v:#?}"
    );
    evidence(&v, "dnsbl:dead.test", Finding::NotAwaited);

    // `check` asks every zone to the end, the dead one too, and says so.
    let started = Instant::now();
    let v = Engine::new(cfg.clone())
        .expect("engine")
        .evaluate(ip("192.0.2.2"))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(3), "{v:#?}");
    assert_eq!(v.action, Action::Drop, "{v:#?}");
    evidence(&v, "dnsbl:dead.test", Finding::DnsTempfail);

    // rDNS is waited for: it says whether the drop is explained (FCrDNS).
    let mut with_rdns = cfg.clone();
    with_rdns.rdns.enabled = true; // rbldnsd refuses PTR queries: a quick failure.
    let (v, _) = queued_verdict(with_rdns, ip("192.0.2.2")).await;
    assert_eq!(v.action, Action::Drop, "{v:#?}");
    evidence(&v, "rdns", Finding::DnsTempfail);
    evidence(&v, "dnsbl:dead.test", Finding::NotAwaited);

    // The dead zone is an allowlist: it could outweigh the listing, so it is waited for.
    cfg.dnsbl[1].weight = -15;
    let (v, took) = queued_verdict(cfg, ip("192.0.2.2")).await;
    assert!(took >= Duration::from_secs(3), "{v:#?}");
    assert_eq!(
        (v.action, v.reason),
        (Action::Pass, Reason::Tempfail),
        "{v:#?}"
    );
    evidence(&v, "dnsbl:dead.test", Finding::DnsTempfail);
}

/// With two nameservers, one dead, no query waits for the dead one's timeout.
#[tokio::test]
async fn a_dead_nameserver_costs_no_timeout() {
    let dead = Forwarder::start(Mode::Blackhole);
    let rbl = Rbldnsd::start(&[zen_data()]);
    let mut cfg = config(dead.addr, vec![zen("zen.test")]);
    cfg.resolver.nameservers.push(Nameserver(rbl.addr));
    // A query that waited for the dead one would take its 3 s timeout: one well inside that
    // did not (the bound tells the two behaviours apart; it is no speed target).
    cfg.resolver.timeout = Duration::from_secs(3);
    let engine = Engine::new(cfg).expect("engine");
    for addr in [
        "192.0.2.2",
        "192.0.2.200",
        "192.0.2.4",
        "192.0.2.201",
        "192.0.2.9",
    ] {
        let started = Instant::now();
        let v = engine.evaluate(ip(addr)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500) && v.reason != Reason::Tempfail,
            "{addr} took {took:?}: {v:#?}"
        );
    }
    // The canary asks each alone: the dead one shows, and only it.
    engine.canary_round().await;
    let canary = engine.canary();
    let dead = &canary[&format!("nameserver {}", dead.addr)];
    assert!(
        !dead.ok && dead.detail.contains("does not answer"),
        "{canary:#?}"
    );
    assert!(
        canary[&format!("nameserver {}", rbl.addr)].ok,
        "{canary:#?}"
    );
    assert!(canary["zen.test"].ok, "{canary:#?}");
}

#[tokio::test]
async fn fcrdns_match_and_mismatch() {
    let world = RdnsWorld::start();
    let fwd = Forwarder::start(Mode::Forward {
        upstream: world.unbound.addr,
        delay: Duration::ZERO,
    });
    let mut cfg = world.config(fwd.addr);
    cfg.rdns.max_ptr_names = 2;
    let engine = Engine::new(cfg).expect("engine");

    let v = engine.evaluate(ip("192.0.2.60")).await;
    assert_eq!(
        evidence(&v, "rdns", Finding::Ptr).detail,
        "mail.mx.test.",
        "{v:#?}"
    );
    assert_eq!(
        evidence(&v, "fcrdns", Finding::FcrdnsMatch).detail,
        "mail.mx.test. -> 192.0.2.60"
    );
    assert_eq!((v.action, v.score), (Action::Pass, 0));

    // The PTR name resolves elsewhere.
    let v = engine.evaluate(ip("192.0.2.61")).await;
    assert_eq!(
        evidence(&v, "fcrdns", Finding::FcrdnsMismatch).weight,
        3,
        "{v:#?}"
    );
    assert_eq!((v.action, v.score), (Action::Pass, 3));

    // The PTR name does not exist.
    let v = engine.evaluate(ip("192.0.2.62")).await;
    evidence(&v, "fcrdns", Finding::FcrdnsMismatch);

    // Two PTR names, one confirms.
    let v = engine.evaluate(ip("192.0.2.63")).await;
    assert_eq!(
        evidence(&v, "fcrdns", Finding::FcrdnsMatch).detail,
        "mail63.mx.test. -> 192.0.2.63",
        "{v:#?}"
    );

    // Five PTR names: only max_ptr_names (2) of them are resolved.
    let before = fwd.queries().len();
    let v = engine.evaluate(ip("192.0.2.64")).await;
    let e = evidence(&v, "fcrdns", Finding::FcrdnsMismatch);
    assert_eq!(
        e.detail,
        "no name resolves back to 192.0.2.64 (checked 2 of 5 PTR names)"
    );
    let forward: Vec<_> = fwd.queries()[before..]
        .iter()
        .filter(|q| q.name.ends_with(".mx.test."))
        .cloned()
        .collect();
    assert_eq!(forward.len(), 2, "{forward:?}");

    // An IPv4 peer whose name only has an AAAA: A is what is asked, and it does not match.
    let v = engine.evaluate(ip("192.0.2.65")).await;
    evidence(&v, "fcrdns", Finding::FcrdnsMismatch);

    // IPv6: the ip6.arpa PTR, confirmed by AAAA (the name's A record is not asked).
    let v = engine.evaluate(ip("2001:db8::60")).await;
    assert_eq!(
        evidence(&v, "fcrdns", Finding::FcrdnsMatch).query,
        "v6.mx.test. AAAA",
        "{v:#?}"
    );
    assert_eq!(v.score, 0);
    let stats = engine.stats();
    assert_eq!(
        (stats.fcrdns_ok, stats.fcrdns_mismatch),
        (3, 4),
        "{stats:#?}"
    );
}

/// A PTR name with a space, UTF-8 or a control character is asked as it is: no host has it,
/// so it is a mismatch, never a DNS failure the sender could choose to avoid the weight.
#[tokio::test]
async fn malformed_ptr_names_are_mismatches() {
    let world = RdnsWorld::start();
    let engine = Engine::new(world.config(world.unbound.addr)).expect("engine");
    for addr in ["192.0.2.66", "192.0.2.67", "192.0.2.68"] {
        let v = engine.evaluate(ip(addr)).await;
        evidence(&v, "rdns", Finding::Ptr);
        let e = evidence(&v, "fcrdns", Finding::FcrdnsMismatch);
        assert_eq!((e.weight, v.score), (3, 3), "{addr}: {v:#?}");
    }
}

/// With more PTR names than max_ptr_names, the ones checked are the first in name order,
/// whatever order the resolver answers in.
#[tokio::test]
async fn fcrdns_checks_the_same_ptr_names_every_time() {
    let world = RdnsWorld::start();
    let mut cfg = world.config(world.unbound.addr);
    cfg.rdns.max_ptr_names = 1;
    let engine = Engine::new(cfg).expect("engine");
    for _ in 0..12 {
        let v = engine.evaluate(ip("192.0.2.69")).await;
        assert_eq!(
            evidence(&v, "fcrdns", Finding::FcrdnsMatch).detail,
            "a69.mx.test. -> 192.0.2.69",
            "{v:#?}"
        );
    }
}

#[tokio::test]
async fn verdict_ttl_follows_answers_within_bounds() {
    let list = |zone: &str, ttl: u64, addr: &str| {
        RblZone::new(
            zone,
            Duration::from_secs(ttl),
            vec![listing(addr, "127.0.0.2", "listed")],
        )
    };
    let rbl = Rbldnsd::start(&[
        list("short.test", 60, "192.0.2.2"),
        list("mid.test", 1200, "192.0.2.3"),
        list("long.test", 2 * 86_400, "192.0.2.4"),
    ]);
    let zones = ["short.test", "mid.test", "long.test"].map(zen).to_vec();
    let cfg = config(rbl.addr, zones);
    let (min, max) = (cfg.policy.ttl_min, cfg.policy.ttl_max);
    assert_eq!(
        (min, max),
        (Duration::from_secs(600), Duration::from_secs(6 * 3600))
    );
    let engine = Engine::new(cfg.clone()).expect("engine");
    assert_eq!(
        engine.evaluate(ip("192.0.2.2")).await.ttl,
        min,
        "60s is raised to ttl_min"
    );
    assert_eq!(
        engine.evaluate(ip("192.0.2.3")).await.ttl,
        Duration::from_secs(1200),
        "20m is kept"
    );
    assert_eq!(
        engine.evaluate(ip("192.0.2.4")).await.ttl,
        max,
        "2d is cut to ttl_max"
    );
    assert_eq!(
        engine.evaluate(ip("192.0.2.5")).await.ttl,
        cfg.policy.pass_ttl,
        "a pass lasts pass_ttl"
    );
}

#[tokio::test]
async fn static_lists_decide_without_dns() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::ZERO,
    });
    let mut cfg = config(fwd.addr, vec![zen("zen.test")]);
    cfg.rdns.enabled = true;
    cfg.lists.allow = vec!["192.0.2.0/28".parse().unwrap()];
    cfg.lists.deny = vec![
        "192.0.2.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    let engine = Engine::new(cfg).expect("engine");
    // Listed as XBL, but allowed: allow wins over deny and over lookups.
    let v = engine.evaluate(ip("192.0.2.4")).await;
    assert_eq!(
        (v.action, v.reason),
        (Action::Pass, Reason::Config),
        "{v:#?}"
    );
    assert_eq!(
        evidence(&v, "lists", Finding::StaticAllow).detail,
        "lists.allow 192.0.2.0/28"
    );
    let v = engine.evaluate(ip("192.0.2.200")).await;
    assert_eq!(
        (v.action, v.reason),
        (Action::Drop, Reason::Config),
        "{v:#?}"
    );
    let v = engine.evaluate(ip("2001:db8::1")).await;
    assert_eq!(v.action, Action::Drop);
    assert!(
        fwd.queries().is_empty(),
        "static decisions must not query DNS: {:?}",
        fwd.queries()
    );
}

/// A config for budget tests: one zone, no rDNS, so each evaluation is exactly one query.
fn budget_config(server: SocketAddr) -> ReputationConfig {
    let mut cfg = config(server, vec![zen("zen.test")]);
    cfg.resolver.max_lookups_per_sec = 10_000;
    cfg
}

/// Distinct unlisted addresses (NXDOMAIN: one query each, no TXT).
fn peers(n: u8) -> Vec<IpAddr> {
    (0..n).map(|i| IpAddr::from([203, 0, 113, i])).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submissions_coalesce() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::from_millis(300),
    });
    let (engine, mut verdicts) = Engine::spawn(budget_config(fwd.addr)).expect("engine");
    let peer = ip("192.0.2.4");
    assert_eq!(engine.submit(peer), Submit::Queued);
    for _ in 0..9 {
        assert_eq!(engine.submit(peer), Submit::Coalesced);
    }
    // The mapped form is the same peer.
    assert_eq!(engine.submit(ip("::ffff:192.0.2.4")), Submit::Coalesced);
    let v = recv(&mut verdicts, 1, Duration::from_secs(10)).await;
    assert_eq!((v[0].ip, v[0].action), (peer, Action::Drop));
    assert_eq!(
        fwd.count(&dnsbl_name(peer, "zen.test")),
        2,
        "one A, one TXT: {:?}",
        fwd.queries()
    );
    let stats = engine.stats();
    assert_eq!(
        (stats.submitted, stats.queued, stats.coalesced),
        (11, 1, 10),
        "{stats:#?}"
    );
    // Once delivered, the address can be evaluated again (the daemon decides when).
    assert_eq!(engine.submit(peer), Submit::Queued);
    recv(&mut verdicts, 1, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_cap_bounds_concurrent_lookups() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::from_millis(200),
    });
    let mut cfg = budget_config(fwd.addr);
    cfg.resolver.max_inflight = 3;
    let (engine, mut verdicts) = Engine::spawn(cfg).expect("engine");
    for p in peers(12) {
        assert_eq!(engine.submit(p), Submit::Queued);
    }
    let got = recv(&mut verdicts, 12, Duration::from_secs(20)).await;
    assert!(got.iter().all(|v| v.action == Action::Pass));
    assert_eq!(fwd.queries().len(), 12);
    assert_eq!(
        fwd.max_outstanding(),
        3,
        "at most max_inflight lookups at once, and the cap is used"
    );
    let stats = engine.stats();
    assert_eq!(
        (stats.in_flight, stats.queue_depth, stats.evaluations),
        (0, 0, 12),
        "{stats:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_cap_paces_lookups() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::ZERO,
    });
    let mut cfg = budget_config(fwd.addr);
    cfg.resolver.max_lookups_per_sec = 10;
    let (engine, mut verdicts) = Engine::spawn(cfg).expect("engine");
    for p in peers(30) {
        assert_eq!(engine.submit(p), Submit::Queued);
    }
    recv(&mut verdicts, 30, Duration::from_secs(20)).await;
    let q = fwd.queries();
    assert_eq!(q.len(), 30);
    // One second of burst (10), then 10 per second: the last of 30 starts after ~2 s.
    let span = q[29].at.duration_since(q[0].at);
    assert!(
        span >= Duration::from_millis(1800),
        "30 lookups at 10/s took only {span:?}"
    );
    let early = q
        .iter()
        .filter(|x| x.at.duration_since(q[0].at) < Duration::from_millis(500))
        .count();
    assert!(
        early <= 16,
        "{early} lookups in the first 500 ms (burst 10 + 5)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_peers_are_rejected_and_counted() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::from_millis(300),
    });
    let mut cfg = budget_config(fwd.addr);
    cfg.resolver.max_inflight = 1;
    cfg.resolver.queue_len = 4;
    let (engine, mut verdicts) = Engine::spawn(cfg).expect("engine");
    let results: Vec<Submit> = peers(20).into_iter().map(|p| engine.submit(p)).collect();
    let queued = results.iter().filter(|r| **r == Submit::Queued).count();
    let rejected = results.iter().filter(|r| **r == Submit::Rejected).count();
    assert_eq!(queued + rejected, 20);
    // The queue holds 4; the dispatcher may have taken one out already.
    assert!((4..=5).contains(&queued), "{results:?}");
    recv(&mut verdicts, queued, Duration::from_secs(10)).await;
    assert_eq!(fwd.queries().len(), queued, "rejected peers cost no query");
    let stats = engine.stats();
    assert_eq!(stats.rejected_queue_full as usize, rejected, "{stats:#?}");
    assert_eq!(stats.evaluations as usize, queued);
    // Nothing else arrives.
    assert!(verdicts.try_recv().is_err());
}

/// The budget's classes (issue 20): with the budget full of first SYNs — a spoofed flood's
/// shape — a proven-real peer (a retransmit, a returning source, one the MTA asked about) is
/// evaluated next; first SYNs are evaluated newest first, at most one second's budget of
/// them waits, and none older than a second (their sender, if real, has retransmitted).
// One thread: the dispatcher cannot run until the test awaits, so every submit below is
// queued before the first evaluation starts.
#[tokio::test]
async fn proven_real_peers_go_before_a_flood_of_first_syns() {
    let rbl = Rbldnsd::start(&[zen_data()]);
    let fwd = Forwarder::start(Mode::Forward {
        upstream: rbl.addr,
        delay: Duration::ZERO,
    });
    let mut cfg = config(fwd.addr, vec![zen("zen.test")]);
    cfg.resolver.max_lookups_per_sec = 5;
    let (engine, mut verdicts) = Engine::spawn(cfg).expect("engine");
    let now = tokio::time::Instant::now();
    // Stale first SYNs (their sender would have retransmitted): never evaluated.
    let stale: Vec<IpAddr> = (0..50u8).map(|i| IpAddr::from([198, 51, 100, i])).collect();
    for p in &stale {
        let seen = now - Duration::from_secs(2);
        assert_eq!(engine.submit_seen(*p, Class::First, seen), Submit::Queued);
    }
    // Fresh first SYNs, oldest to newest; then one proven-real peer.
    let fresh = peers(50);
    for p in &fresh {
        assert_eq!(engine.submit_seen(*p, Class::First, now), Submit::Queued);
    }
    let real = ip("192.0.2.99");
    assert_eq!(engine.submit(real), Submit::Queued);
    // The burst (5) starts at once: the real peer and the four newest first SYNs.
    let mut got: Vec<IpAddr> = recv(&mut verdicts, 5, Duration::from_secs(5))
        .await
        .iter()
        .map(|v| v.ip)
        .collect();
    let mut want = vec![real];
    want.extend(&fresh[46..]);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The first-SYN queue held one second's budget, the newest 5: one is left, evaluated
    // with the next token; the 95 others made room for newer ones, unevaluated.
    let later = recv(&mut verdicts, 1, Duration::from_secs(5)).await;
    assert_eq!(later[0].ip, fresh[45]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(verdicts.try_recv().is_err());
    let stats = engine.stats();
    assert_eq!(stats.evaluations, 6, "{stats:#?}");
    assert_eq!(stats.first_expired, 95, "{stats:#?}");
    assert!(
        fwd.queries()
            .iter()
            .all(|q| !q.name.contains(".100.51.198.")),
        "a stale first SYN was looked up"
    );
}

#[tokio::test]
async fn check_reports_text_and_json() {
    let rbl = Rbldnsd::start(&[zen_data(), dnswl_data()]);
    let cfg = config(rbl.addr, vec![zen("zen.test"), dnswl("wl.test")]);
    let report = check(cfg.clone(), ip("192.0.2.4")).await.expect("check");
    let json = report.to_json();
    assert_eq!(json["ip"], "192.0.2.4");
    assert_eq!(json["action"], "drop");
    assert_eq!(json["reason"], "reputation");
    assert_eq!(json["score"], 10);
    assert_eq!(json["ttl_secs"], 1200);
    let ev = json["evidence"].as_array().expect("evidence list");
    assert_eq!(ev.len(), 2, "{json}");
    for e in ev {
        for key in ["source", "result", "weight", "query"] {
            assert!(!e[key].is_null(), "evidence lacks {key}: {json}");
        }
    }
    assert_eq!(ev[0]["source"], "dnsbl:zen.test");
    assert_eq!(ev[0]["result"], "listed");
    assert_eq!(ev[0]["weight"], 10);
    assert_eq!(ev[1]["result"], "not_listed");
    let text = report.to_text();
    assert!(
        text.starts_with("192.0.2.4: drop, score 10, expires in 20m (source: reputation;"),
        "{text}"
    );
    assert!(
        text.contains("dnsbl:zen.test  listed")
            && text.contains("+10  4.2.0.192.zen.test. A -> 127.0.0.4 (XBL): XBL listed"),
        "{text}"
    );
    assert!(
        text.contains("not_listed") && text.contains("total"),
        "{text}"
    );
}

#[tokio::test]
async fn public_resolvers_are_warned_about() {
    // Building the engine sends nothing; the warning comes from the config alone.
    let mut cfg = config("8.8.8.8:53".parse().unwrap(), Vec::new());
    cfg.resolver
        .nameservers
        .push(Nameserver("127.0.0.1:53".parse().unwrap()));
    let engine = Engine::new(cfg).expect("engine");
    let w = engine.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("8.8.8.8") && w[0].contains("public resolver"),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_replaces_lists_and_keeps_counters() {
    let rbl = Rbldnsd::start(&[zen_data(), dnswl_data()]);
    let (engine, mut verdicts) =
        Engine::spawn(config(rbl.addr, vec![zen("zen.test")])).expect("engine");
    engine.submit(ip("198.51.100.10"));
    assert_eq!(
        recv(&mut verdicts, 1, Duration::from_secs(10)).await[0].action,
        Action::Drop
    );
    // Add the allowlist and tighten the budget.
    let mut cfg = config(rbl.addr, vec![zen("zen.test"), dnswl("wl.test")]);
    cfg.resolver.max_inflight = 1;
    cfg.policy.drop_threshold = 20;
    engine.reload(cfg.clone()).expect("reload");
    assert_eq!(engine.config(), cfg);
    engine.submit(ip("198.51.100.10"));
    let v = recv(&mut verdicts, 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!((v.action, v.score), (Action::Pass, -5), "{v:#?}");
    let stats = engine.stats();
    assert_eq!(
        (stats.evaluations, stats.zones["zen.test"].listed),
        (2, 2),
        "{stats:#?}"
    );
    // A bad config is refused and changes nothing.
    let mut bad = cfg.clone();
    bad.policy.limit_threshold = 0;
    assert!(engine.reload(bad).is_err());
    assert_eq!(engine.config(), cfg);
    // A zone the reload removes leaves the stats (and so status, JSON and the metrics);
    // the one kept keeps its counters.
    engine
        .reload(config(rbl.addr, vec![zen("zen.test")]))
        .expect("reload");
    let stats = engine.stats();
    assert_eq!(
        stats.zones.keys().collect::<Vec<_>>(),
        ["zen.test"],
        "{stats:#?}"
    );
    assert_eq!(stats.zones["zen.test"].listed, 2);
}
