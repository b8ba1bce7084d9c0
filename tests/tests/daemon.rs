//! The daemon as an operator runs it: the real `mxscreen` binary in a namespace on a veth,
//! a real rbldnsd as its DNSBL, real TCP handshakes from a client namespace, and the CLI
//! talking to it over the control socket. Needs root; run by `cargo xtask test`.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use mxscreen_tests::{
    bed::{Bed, REFUSED_WITHIN, other4, smtp4, smtp6},
    daemon::{MxDaemon, Spec, as_nobody, mxscreen_bin, text},
    dns::{RblZone, listing},
    netns::{SERVER_IFACE, SERVER_V4},
};

const LISTED: &str = "192.0.2.20";
const LISTED_V6: &str = "2001:db8:1::20";
const CLEAN: &str = "192.0.2.21";
const LATER_LISTED: &str = "192.0.2.22";
const VERDICT_WITHIN: Duration = Duration::from_secs(10);

/// Client and server namespaces; rbldnsd (zone bl.test lists LISTED and LISTED_V6 as
/// 127.0.0.2, zone later.test lists LATER_LISTED) and listeners on :25 and :2525 run in
/// the server namespace, where the daemon will run.
fn bed(tag: &str) -> Bed {
    Bed::new(
        tag,
        &[LISTED, CLEAN, LATER_LISTED, LISTED_V6],
        &[
            RblZone::new(
                "bl.test",
                Duration::from_secs(900),
                vec![
                    listing(LISTED, "127.0.0.2", "listed for testing"),
                    listing(LISTED_V6, "127.0.0.2", "listed v6"),
                ],
            ),
            RblZone::new(
                "later.test",
                Duration::from_secs(900),
                vec![listing(LATER_LISTED, "127.0.0.2", "listed later")],
            ),
        ],
    )
}

/// Reputation sections: one DNSBL zone, no rDNS (no reverse zones here), nothing
/// pre-allowed (the test addresses are documentation ranges anyway), and no explained
/// refusals (no MTA here asks mxscreen: a dropped peer is refused at every SYN).
fn sections(rbl: SocketAddr, zone: &str) -> String {
    format!(
        "[resolver]\nnameservers = [\"{rbl}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"0s\"\n\n[lists]\nallow = []\n\n[[dnsbl]]\nzone = \"{zone}\"\nweight = 10\n"
    )
}

fn spec(b: &Bed, zone: &str) -> Spec {
    Spec {
        sections: sections(b.rbl_addr, zone),
        ..Default::default()
    }
}

#[test]
fn new_peers_are_resolved_into_verdicts_the_datapath_enforces() {
    let b = bed("dv");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    // First contact passes (first_contact = pass) and is reported; the DNSBL lists it.
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    b.refused(LISTED, smtp4());
    b.connects(LISTED, other4());
    // IPv6 the same way.
    b.connects(LISTED_V6, smtp6());
    assert_eq!(d.wait_verdict(LISTED_V6, VERDICT_WITHIN), "drop");
    b.refused(LISTED_V6, smtp6());
    // A clean peer gets a pass verdict and keeps connecting.
    b.connects(CLEAN, smtp4());
    assert_eq!(d.wait_verdict(CLEAN, VERDICT_WITHIN), "pass");
    b.connects(CLEAN, smtp4());
    // One log line per verdict, fixed tag, key=value fields.
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("mxscreen-verdict") && l.contains(&format!("ip={LISTED}")))
        .unwrap_or_else(|| panic!("no verdict line:\n{log}"));
    for field in [
        "action=\"drop\"",
        "score=10",
        "dnsbl:bl.test=listed",
        "ttl=",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert!(d.counter("dropped_verdict") >= 2);
    // `check` shows what the daemon holds.
    let out = d.cli_ok(&["check", LISTED, "--config", d.config.to_str().unwrap()]);
    assert!(
        out.contains("daemon holds:") && out.contains("verdict"),
        "{out}"
    );
}

#[test]
fn manual_block_unblock_allow_round_trip_and_survive_restart() {
    let b = bed("dm");
    let mut d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    b.connects(CLEAN, smtp4());
    let out = d.cli_ok(&["block", CLEAN, "--for", "1h", "--reason", "testing"]);
    assert!(
        out.starts_with(&format!("blocked {CLEAN}/32 for 1h (testing)")),
        "{out}"
    );
    b.refused(CLEAN, smtp4());
    b.connects(CLEAN, other4());
    let list = d.cli_ok(&["list", "--blocked"]);
    assert!(
        list.contains(&format!("{CLEAN}/32"))
            && list.contains("manual")
            && list.contains("testing"),
        "{list}"
    );

    // Restart (SIGTERM, then start): the block is back before any SYN.
    d.stop();
    b.connects(CLEAN, smtp4()); // no daemon, no program: mail flows
    d.restart();
    b.refused(CLEAN, smtp4());

    // kill -9: the kernel detaches the program with the daemon, mail flows; restart: blocked.
    d.kill9();
    b.connects(CLEAN, smtp4());
    d.restart();
    b.refused(CLEAN, smtp4());

    assert!(
        d.cli_ok(&["unblock", CLEAN])
            .starts_with(&format!("unblocked {CLEAN}/32"))
    );
    b.connects(CLEAN, smtp4());
    let out = d.cli(&["unblock", CLEAN]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not blocked by hand"),
        "{}",
        text(&out)
    );

    // Allow beats a DNSBL drop verdict.
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    b.refused(LISTED, smtp4());
    d.cli_ok(&["allow", LISTED, "--reason", "partner"]);
    b.connects(LISTED, smtp4());
    d.cli_ok(&["unallow", LISTED]);
    b.refused(LISTED, smtp4());

    // Guard rails: protected and over-wide blocks are refused with the reason.
    let out = d.cli(&["block", "127.0.0.1"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("protected (loopback"),
        "{}",
        text(&out)
    );
    let out = d.cli(&["block", "0.0.0.0/0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wider than /16"),
        "{}",
        text(&out)
    );
    let out = d.cli(&["block", SERVER_V4]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("protected (self"),
        "{}",
        text(&out)
    );
}

/// Kernels before 6.6 attach tc through netlink, a filter that outlives the daemon: killed
/// with -9, the daemon leaves it attached. The heartbeat in the config map makes it pass
/// every SYN within seconds (forced here with the legacy path on this kernel).
#[test]
fn legacy_tc_filter_fails_open_when_the_daemon_dies() {
    let b = bed("dl");
    let mut s = spec(&b, "bl.test");
    s.datapath = "mode = \"tc\"".into();
    s.env = vec![("MXSCREEN_TC_NETLINK".into(), "1".into())];
    let mut d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    d.cli_ok(&["block", CLEAN]);
    b.refused(CLEAN, smtp4());
    let filters = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &b.wire.server.name, "tc", "filter", "show"])
            .args(["dev", SERVER_IFACE, "ingress"])
            .output()
            .expect("tc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        filters().contains("mxscreen_tc"),
        "netlink filter: {}",
        filters()
    );
    d.kill9();
    let killed = Instant::now();
    // The filter is still there, the daemon is not: within the stale window, mail flows.
    assert!(
        filters().contains("mxscreen_tc"),
        "filter gone: {}",
        filters()
    );
    while b.wire.connect(CLEAN, smtp4(), REFUSED_WITHIN).is_err() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "still refused 10 s after the daemon died"
        );
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(4),
        "passed before the heartbeat went stale"
    );
    b.connects(CLEAN, other4());
    // Started again, it screens again at once.
    d.restart();
    b.refused(CLEAN, smtp4());
}

#[test]
fn corrupt_state_file_is_moved_aside_and_reported() {
    let b = bed("dc");
    let mut d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    d.cli_ok(&["block", CLEAN]);
    d.stop();
    std::fs::write(&d.state, "{\"version\": 1, \"entries\": [tru").unwrap();
    d.restart();
    let log = d.log_text();
    assert!(log.contains("state file is corrupt; moved aside"), "{log}");
    let moved: Vec<String> = std::fs::read_dir(d.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    // Without the state file the manual block is gone (the operator restores it from the
    // moved file); the daemon runs and enforces the rest.
    b.connects(CLEAN, smtp4());
}

#[test]
fn control_socket_is_root_only() {
    let b = bed("dr");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&d.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The tempdir is 0700: let nobody reach the socket file itself, so the socket's own
    // mode is what refuses.
    std::fs::set_permissions(
        d.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = as_nobody(
        &mxscreen_bin(),
        &["list", "--socket", d.socket.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("mxscreen: permission denied")
            && err.contains("root only")
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn sighup_applies_a_changed_zone() {
    let b = bed("dh");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    d.cli_ok(&["block", CLEAN]); // manual state must survive a reload
    d.write_config(&sections(b.rbl_addr, "later.test"));
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, Duration::from_secs(10));
    b.refused(CLEAN, smtp4());
    // New peers are judged by the new zone only: later.test lists LATER_LISTED...
    b.connects(LATER_LISTED, smtp4());
    assert_eq!(d.wait_verdict(LATER_LISTED, VERDICT_WITHIN), "drop");
    b.refused(LATER_LISTED, smtp4());
    // ...and bl.test is no longer asked: its IPv6 listing now passes.
    b.connects(LISTED_V6, smtp6());
    assert_eq!(d.wait_verdict(LISTED_V6, VERDICT_WITHIN), "pass");
    // An invalid config on SIGHUP changes nothing and says why.
    std::fs::write(&d.config, "[datapath]\nports = []\n").unwrap();
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log(
        "reload failed; keeping the running config",
        from,
        Duration::from_secs(10),
    );
    b.refused(CLEAN, smtp4());
    b.refused(LATER_LISTED, smtp4());
}

#[test]
fn observe_mode_resolves_and_counts_but_never_drops() {
    let b = bed("do");
    let s = Spec {
        args: vec!["--observe".into()],
        ..spec(&b, "bl.test")
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    d.cli_ok(&["block", CLEAN]);
    for _ in 0..3 {
        b.connects(LISTED, smtp4());
        b.connects(CLEAN, smtp4());
    }
    assert!(d.counter("observe_passed") >= 6);
    assert!(d.counter("dropped_verdict") >= 3 && d.counter("dropped_deny") >= 3);
    assert!(d.log_text().contains("observe=true"));
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("observe (never drops)"), "{status}");
}

#[test]
fn cli_without_a_daemon_and_bad_input_say_so_in_one_line() {
    let bin = mxscreen_bin();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = std::process::Command::new(&bin)
        .args(["list", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("daemon is not running")
            && err.contains("mxscreen run")
            && err.lines().count() == 1,
        "{err}"
    );
    for args in [
        &["block", "203.0.113.300"][..],
        &["block", "203.0.113.3", "--for", "soon"],
        &["block", "203.0.113.3", "--bogus"],
        &["check", "example.org"],
        &["list", "--blocked", "--allowed"],
    ] {
        let out = std::process::Command::new(&bin)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("mxscreen: "), "{err}");
    }
    // A bad config file: one line naming file, line and key; exit 1.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[datapath]\nports = [25]\nfirst_contact = \"sometimes\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:") && err.lines().count() == 1,
        "{err}"
    );
}
