//! The metrics endpoint of a live daemon: the real `mxscreen run` in a namespace with a real
//! rbldnsd, real TCP handshakes making verdicts, then `GET /metrics` checked by Prometheus'
//! own `promtool check metrics` and value by value against `mxscreen stats --json` and
//! `status --json`. Needs root; run by `cargo xtask test metrics`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Stdio,
    time::{Duration, Instant},
};

use mxscreen_tests::{
    daemon::{MxDaemon, Spec},
    dns::{RblZone, Rbldnsd, listing},
    metrics::{http, samples, scrape},
    netns::{SERVER_IFACE, SERVER_V4, Wire},
};
use serde_json::Value;

const LISTED: &str = "192.0.2.20";
const CLEAN: &str = "192.0.2.21";
/// Listed by the test's feed.
const FED: &str = "203.0.113.9";
const METRICS: &str = "127.0.0.1:9725";

fn metrics_addr() -> SocketAddr {
    METRICS.parse().unwrap()
}

/// `promtool check metrics` on `text`: its complaints, empty when there are none.
fn promtool(text: &str) -> String {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || !said.is_empty(),
        "promtool failed silently"
    );
    said
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in the scrape"))
}

#[test]
fn metrics_match_stats_and_status_and_pass_promtool() {
    metrics_match("ebpf");
}

/// The same scrape, with the nftables backend screening: its counters (named counters),
/// sets and verdicts behind the same series.
#[test]
fn nftables_metrics_match_stats_and_status_and_pass_promtool() {
    metrics_match("nftables");
}

fn metrics_match(backend: &str) {
    let wire = Wire::new(&format!("mx{}", &backend[..1]));
    for a in [LISTED, CLEAN, FED] {
        wire.add_client_addr(a);
    }
    let feed_dir = tempfile::tempdir().unwrap();
    let feed = feed_dir.path().join("drop.txt");
    std::fs::write(&feed, format!("{FED}\n")).unwrap();
    let (rbl, _listener) = wire.server.enter(|| {
        let rbl = Rbldnsd::start(&[RblZone::new(
            "bl.test",
            Duration::from_secs(900),
            vec![listing(LISTED, "127.0.0.2", "listed for testing")],
        )]);
        let l = std::net::TcpListener::bind(format!("{SERVER_V4}:25")).unwrap();
        (rbl, l)
    });
    let spec = Spec {
        // First contacts pass: the scrape is checked against a listed peer's first
        // connection reaching the listener (the default, hold, is tested in daemon and e2e).
        datapath: format!("first_contact = \"pass\"\nbackend = \"{backend}\""),
        sections: format!(
            "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"0s\"\n\n[lists]\nallow = []\n\n[[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n\n[[lists.feed]]\nname = \"local-drop\"\npath = {:?}\nformat = \"cidr\"\naction = \"drop\"\n\n[metrics]\nlisten = \"{METRICS}\"\n",
            rbl.addr,
            feed.display().to_string()
        ),
        ..Default::default()
    };
    let mut d = MxDaemon::start(&wire.server, SERVER_IFACE, spec);
    let smtp: SocketAddr = format!("{SERVER_V4}:25").parse().unwrap();
    for src in [LISTED, CLEAN] {
        wire.connect(src, smtp, Duration::from_secs(5)).unwrap();
    }
    assert_eq!(d.wait_verdict(LISTED, Duration::from_secs(10)), "drop");
    assert_eq!(d.wait_verdict(CLEAN, Duration::from_secs(10)), "pass");
    // The listed peer is now dropped in the kernel: one dropped_verdict at least.
    assert!(
        wire.connect(LISTED, smtp, Duration::from_millis(800))
            .is_err()
    );
    d.cli_ok(&["block", "198.51.100.0/24", "--reason", "metrics test"]);
    d.wait_for("the feed loaded", Duration::from_secs(5), || {
        d.feed("local-drop")["entries"].as_u64() == Some(1)
    });
    assert!(wire.connect(FED, smtp, Duration::from_millis(800)).is_err());

    // Counters only grow: stats must lie between a scrape before and one after it. What
    // the census counts (verdicts, map fill) is refreshed by `stats` and read by a scrape.
    let before = samples(&scrape(&wire.server, metrics_addr()));
    let stats: Value = serde_json::from_str(&d.cli_ok(&["stats", "--json"])).unwrap();
    let status: Value = serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
    let text = scrape(&wire.server, metrics_addr());
    let after = samples(&text);

    let problems = promtool(&text);
    assert!(
        problems.trim().is_empty(),
        "promtool check metrics: {problems}\n{text}"
    );

    let counter = |series: &str, from_stats: u64| {
        let (lo, hi) = (value(&before, series), value(&after, series));
        assert!(
            lo <= from_stats as f64 && from_stats as f64 <= hi,
            "{series}: stats says {from_stats}, scrapes {lo}..{hi}"
        );
    };
    // Counts by name are objects keyed by name (`.datapath.dropped_verdict` in jq).
    for (name, v) in stats["datapath"].as_object().expect("datapath by name") {
        counter(
            &format!("mxscreen_datapath_packets_total{{outcome=\"{name}\"}}"),
            v.as_u64().unwrap(),
        );
    }
    assert!(stats["datapath"]["dropped_verdict"].as_u64().unwrap() >= 1);
    // The eBPF datapath's count of new sources, and the bound of its hold: both scraped, the
    // bound 0 as nothing is held here (`first_contact = "pass"`). (nftables' full sets refuse
    // instead: no such count.)
    let bound = "mxscreen_datapath_hold_bound_new_sources_per_second";
    if backend == "ebpf" {
        // Present; what it counts is the datapath suite's (its sources here may be seconds old).
        assert!(value(&after, "mxscreen_datapath_new_sources_per_second") >= 0.0);
        assert_eq!(value(&after, bound), 0.0);
    } else {
        assert!(!after.contains_key(bound), "{text}");
    }
    assert!(
        value(
            &after,
            "mxscreen_datapath_packets_total{outcome=\"dropped_verdict\"}"
        ) >= 1.0
    );
    for (action, n) in stats["verdicts_by_action"].as_object().unwrap() {
        let series = format!("mxscreen_verdicts_cached{{action=\"{action}\"}}");
        assert_eq!(value(&after, &series), n.as_f64().unwrap(), "{series}");
    }
    assert_eq!(stats["verdicts_by_action"]["drop"], 1);
    assert_eq!(
        value(&after, "mxscreen_verdicts_cached{action=\"drop\"}"),
        1.0
    );
    let by_source: BTreeMap<String, f64> = stats["verdicts_by_reason"]
        .as_object()
        .expect("verdicts_by_reason by name")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    for source in [
        "manual",
        "config",
        "reputation",
        "tempfail",
        "feed",
        "unspecified",
    ] {
        let series = format!("mxscreen_verdicts_cached_by_source{{source=\"{source}\"}}");
        assert_eq!(
            value(&after, &series),
            by_source.get(source).copied().unwrap_or(0.0),
            "{series}"
        );
    }
    let e = &stats["engine"];
    for (row, series) in [
        ("submitted", "mxscreen_engine_peers_submitted_total"),
        ("queued", "mxscreen_engine_peers_total{outcome=\"queued\"}"),
        (
            "rejected_queue_full",
            "mxscreen_engine_budget_rejections_total",
        ),
        ("evaluations", "mxscreen_engine_evaluations_total"),
        (
            "verdict_drop",
            "mxscreen_engine_verdicts_total{action=\"drop\"}",
        ),
        (
            "verdict_pass",
            "mxscreen_engine_verdicts_total{action=\"pass\"}",
        ),
        (
            "verdict_tempfail",
            "mxscreen_engine_tempfail_verdicts_total",
        ),
        ("queries_sent", "mxscreen_dns_queries_sent_total"),
    ] {
        counter(series, e[row].as_u64().unwrap());
    }
    let zone = &e["zones"]["bl.test"];
    for (row, result) in [
        ("listed", "listed"),
        ("not_listed", "not_listed"),
        ("tempfail", "tempfail"),
        ("error_codes", "error_code"),
    ] {
        counter(
            &format!("mxscreen_dnsbl_answers_total{{zone=\"bl.test\",result=\"{result}\"}}"),
            zone[row].as_u64().unwrap(),
        );
    }
    counter(
        "mxscreen_dnsbl_queries_total{zone=\"bl.test\"}",
        zone["queries"].as_u64().unwrap(),
    );
    // One A query per peer, timed: the histogram saw them (and the listed peer's TXT).
    assert!(
        value(
            &after,
            "mxscreen_dns_lookup_duration_seconds_count{zone=\"bl.test\"}"
        ) >= zone["queries"].as_f64().unwrap()
    );
    // A row per list (both families: they share a map per family) and per family's verdicts.
    let rows = status["maps"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{status}");
    for m in rows {
        let mut words = m["name"].as_str().unwrap().split(' ');
        let map = words.next().unwrap();
        let labels = match words.next() {
            Some(f @ ("v4" | "v6")) => format!("map=\"{map}\",family=\"{f}\""),
            _ => format!("map=\"{map}\""),
        };
        assert_eq!(
            value(&after, &format!("mxscreen_map_entries{{{labels}}}")),
            m["entries"].as_f64().unwrap(),
            "{labels}"
        );
        assert_eq!(
            value(
                &after,
                &format!("mxscreen_map_capacity_entries{{{labels}}}")
            ),
            m["max_entries"].as_f64().unwrap(),
            "{labels}"
        );
    }
    // The block and the feed's entry.
    assert_eq!(value(&after, "mxscreen_map_entries{map=\"deny\"}"), 2.0);
    // allow and deny share one list map per family: both rows show its room.
    let capacity = |map: &str| {
        value(
            &after,
            &format!("mxscreen_map_capacity_entries{{map=\"{map}\"}}"),
        )
    };
    assert_eq!(capacity("allow"), capacity("deny"));
    let mode = status["interfaces"][0]["mode"].as_str().unwrap();
    assert_eq!(
        value(
            &after,
            &format!(
                "mxscreen_attached_info{{interface=\"{SERVER_IFACE}\",mode=\"{mode}\",backend=\"{backend}\"}}"
            )
        ),
        1.0
    );
    assert_eq!(value(&after, "mxscreen_observe_mode"), 0.0);
    // The feed's hits, as `status` counted them (its census is the one the scrape reads).
    let feed_hits = status["feeds"][0]["hits"].as_u64().unwrap();
    assert!(feed_hits >= 1, "{status}");
    assert_eq!(
        value(&after, "mxscreen_feed_hits{feed=\"local-drop\"}"),
        feed_hits as f64
    );
    let version = status["version"].as_str().unwrap();
    assert_eq!(
        value(
            &after,
            &format!("mxscreen_build_info{{version=\"{version}\"}}")
        ),
        1.0
    );

    // Reloads: one that works, one that does not.
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, Duration::from_secs(10));
    std::fs::write(&d.config, "[policy]\ndrop_threshold = \"ten\"\n").unwrap();
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("reload failed", from, Duration::from_secs(10));
    let m = samples(&scrape(&wire.server, metrics_addr()));
    assert_eq!(
        value(&m, "mxscreen_config_reloads_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "mxscreen_config_reloads_total{result=\"failure\"}"),
        1.0
    );
    assert_eq!(value(&m, "mxscreen_config_last_reload_successful"), 0.0);
    // The reload that worked changed no key only a restart applies.
    assert_eq!(value(&m, "mxscreen_config_restart_pending_keys"), 0.0);

    // Only GET /metrics.
    assert_eq!(http(&wire.server, metrics_addr(), "GET", "/").0, 404);
    assert_eq!(
        http(&wire.server, metrics_addr(), "POST", "/metrics").0,
        405
    );
    d.stop();
}

/// Idle connections held open to the endpoint — any local user can open thousands on
/// loopback — never keep a scrape from being answered: the endpoint sheds the connection
/// idle the longest rather than queueing or refusing new ones, closes a connection that
/// sends no request, and holds a bounded number of descriptors whatever is thrown at it
/// (the daemon runs here under systemd's default soft limit of 1,024 descriptors).
#[test]
fn a_scrape_is_answered_while_thousands_of_idle_connections_are_held() {
    const HELD: usize = 3000;
    /// Behaviour bound, with a margin for a busy 2-CPU machine: the scrape itself takes
    /// milliseconds (the figure is printed).
    const ANSWERED_WITHIN: Duration = Duration::from_secs(5);
    const IDLE_METRICS: &str = "127.0.0.1:9726";
    let addr: SocketAddr = IDLE_METRICS.parse().unwrap();
    raise_open_files(HELD as u64 + 1000);
    let wire = Wire::new("mi");
    let d = MxDaemon::start(
        &wire.server,
        SERVER_IFACE,
        Spec {
            sections: format!(
                "[rdns]\nenabled = false\n\n[metrics]\nlisten = \"{IDLE_METRICS}\"\n"
            ),
            wrapper: ["prlimit", "--nofile=1024:1024", "--"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    );
    let fds_before = open_fds(d.pid());

    // Hold HELD connections that never send a byte (bounded: at most 20 s of trying).
    let (held, failed, took) = wire.server.enter(|| {
        let start = Instant::now();
        let (mut held, mut failed) = (Vec::with_capacity(HELD), 0);
        while held.len() < HELD && start.elapsed() < Duration::from_secs(20) {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
        (held, failed, start.elapsed())
    });
    eprintln!(
        "held {} idle connections ({failed} attempts failed) in {took:?}",
        held.len()
    );
    let fds_held = open_fds(d.pid());

    // A scrape now is answered at once.
    let start = Instant::now();
    let answer = wire.server.enter(|| get_metrics(addr, ANSWERED_WITHIN));
    let took = start.elapsed();
    eprintln!("scrape with {} idle connections held: {took:?}", held.len());
    let (status, body) = answer.unwrap_or_else(|e| {
        panic!(
            "no answer within {ANSWERED_WITHIN:?} with {} idle connections held: {e}",
            held.len()
        )
    });
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("mxscreen_build_info"), "{body}");
    assert_eq!(
        held.len(),
        HELD,
        "every connection was accepted, none refused"
    );

    // The newest held connection is still served; the oldest was shed to make room.
    let mut newest = held.last().unwrap().try_clone().unwrap();
    let (status, _) = request_on(&mut newest, addr, ANSWERED_WITHIN).expect("newest served");
    assert_eq!(status, 200);
    let mut oldest = held.first().unwrap().try_clone().unwrap();
    oldest
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(
        oldest.read(&mut [0u8; 16]).expect("the oldest was closed"),
        0,
        "EOF: shed"
    );
    // The daemon holds a bounded number of descriptors for all this.
    eprintln!("daemon descriptors: {fds_before} before, {fds_held} with the connections held");
    assert!(fds_held < fds_before + 200, "{fds_before} -> {fds_held}");
    drop(held);

    // A connection that sends nothing is closed by the endpoint (the header-read timeout),
    // within a few seconds.
    let start = Instant::now();
    let eof = wire.server.enter(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.read(&mut [0u8; 16])
    });
    eprintln!("a silent connection was closed after {:?}", start.elapsed());
    assert_eq!(eof.expect("closed, not timed out"), 0);
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// `GET /metrics` on a new connection, everything within `within`.
fn get_metrics(addr: SocketAddr, within: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, within)?;
    request_on(&mut s, addr, within)
}

/// `GET /metrics` over HTTP/1.0 on `s`: the status and the body, or an error after `within`.
fn request_on(
    s: &mut TcpStream,
    addr: SocketAddr,
    within: Duration,
) -> std::io::Result<(u16, String)> {
    s.set_read_timeout(Some(within))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {raw:?}")))?;
    Ok((status, body.to_owned()))
}

/// Raises this process's soft limit on open files to at least `n` (within the hard limit).
fn raise_open_files(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read the one struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < n {
            lim.rlim_cur = n.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= n,
        "RLIMIT_NOFILE hard limit {} is below the {n} this test needs",
        lim.rlim_max
    );
}

/// Descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}
