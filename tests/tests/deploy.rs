//! What an operator meets on a live MX (issue 19), against the real daemon and real DNS
//! servers: a resolver that lies limits nobody (the resolver canary), an access key in a
//! zone's name never leaves the config, `lists.allow` adds to the built-in ranges, and
//! `config check` warns about the known traps. Needs root; run by `cargo xtask test daemon`.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use mxscreen_tests::{
    bed::{Bed, smtp4},
    daemon::{MxDaemon, Spec, mxscreen_bin, text},
    dns::{AuthZone, Nsd, RblZone, Unbound, listing},
    metrics::{samples, scrape},
    netns::{NetNs, SERVER_IFACE},
};

const LISTED: &str = "192.0.2.20";
const CLEAN: &str = "192.0.2.21";
const VERDICT_WITHIN: Duration = Duration::from_secs(10);
/// The canary runs at start; its first round is done well within this.
const CANARY_WITHIN: Duration = Duration::from_secs(10);
const METRICS: &str = "127.0.0.1:9726";
/// A Spamhaus-DQS-like access key: it must appear nowhere but the config file.
const KEY: &str = "aip7yig6sahg6ehsohn5shco3z";

fn metrics_addr() -> SocketAddr {
    METRICS.parse().unwrap()
}

/// bl.test (rbldnsd, with RFC 5782's test point, like every real list) lists LISTED.
fn bl_test() -> RblZone {
    RblZone::new(
        "bl.test",
        Duration::from_secs(900),
        vec![listing(LISTED, "127.0.0.2", "listed for testing")],
    )
}

/// `mxscreen ARGS` run inside `ns` (where the test's DNS servers are).
fn mxscreen_in(ns: &NetNs, args: &[&str]) -> std::process::Output {
    ns.enter(|| {
        Command::new(mxscreen_bin())
            .args(args)
            .output()
            .expect("run mxscreen")
    })
}

/// The canary's result for `source` in `status --json`.
fn canary(d: &MxDaemon, source: &str) -> serde_json::Value {
    d.status()["resolver"]["canary"][source].clone()
}

#[test]
fn a_lying_resolver_limits_and_drops_nobody() {
    let b = Bed::new("yl", &[LISTED, CLEAN], &[bl_test()]);
    // One server lies both ways: everything.test lists every name (127.0.0.1 too), and
    // nothing.test and the reverse zone of the senders answer NXDOMAIN for every name.
    let (_nsd, unbound) = b.wire.server.enter(|| {
        let nsd = Nsd::start(&[
            AuthZone::new("everything.test", &["* IN A 127.0.0.2"]),
            AuthZone::new("nothing.test", &[]),
            AuthZone::new("2.0.192.in-addr.arpa", &[]),
        ]);
        let unbound = Unbound::start(&[
            ("bl.test", b.rbl_addr),
            ("everything.test", nsd.addr),
            ("nothing.test", nsd.addr),
            ("2.0.192.in-addr.arpa", nsd.addr),
        ]);
        (nsd, unbound)
    });
    // Without the canary, CLEAN would score 10 (everything.test) + 5 (no PTR): dropped.
    let sections = format!(
        "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n\n[rdns]\ncanary_ptr = \"{CLEAN}\"\n\n\
         [policy]\nexplain_every = \"0s\"\n\n[lists]\nallow_defaults = false\n\n\
         [[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n\n[[dnsbl]]\nzone = \"everything.test\"\nweight = 10\n\n\
         [[dnsbl]]\nzone = \"nothing.test\"\nweight = 10\n\n[metrics]\nlisten = \"{METRICS}\"\n",
        unbound.addr
    );
    // About the canary, not first contact: the sender's first SYN passes while it is judged.
    let d = MxDaemon::start(
        &b.wire.server,
        SERVER_IFACE,
        Spec {
            sections,
            datapath: "first_contact = \"pass\"".into(),
            ..Default::default()
        },
    );
    d.wait_for("the canary's first round", CANARY_WITHIN, || {
        !canary(&d, "rdns").is_null() && !canary(&d, "nothing.test").is_null()
    });
    for (source, ok) in [
        ("bl.test", true),
        ("everything.test", false),
        ("nothing.test", false),
        ("rdns", false),
    ] {
        let c = canary(&d, source);
        assert_eq!(c["ok"], ok, "{source}: {c}");
    }
    assert!(
        canary(&d, "everything.test")["detail"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{}",
        d.status()
    );
    // The sender is judged on what still counts: nothing.
    b.connects(CLEAN, smtp4());
    assert_eq!(d.wait_verdict(CLEAN, VERDICT_WITHIN), "pass");
    b.connects(CLEAN, smtp4());
    // A healthy zone beside the lying ones still screens.
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    b.refused(LISTED, smtp4());
    // status, its warnings, the metrics and the log say so.
    let warnings = d.status()["warnings"].to_string();
    for source in ["everything.test", "nothing.test", "rdns"] {
        assert!(
            warnings.contains(&format!("resolver canary failed for {source}")),
            "{warnings}"
        );
    }
    let text = d.cli_ok(&["status"]);
    assert!(text.contains("everything.test FAILED"), "{text}");
    let m = samples(&scrape(&b.wire.server, metrics_addr()));
    for (source, v) in [("bl.test", 1.0), ("everything.test", 0.0), ("rdns", 0.0)] {
        let series = format!("mxscreen_dns_canary_ok{{source=\"{source}\"}}");
        assert_eq!(m.get(&series), Some(&v), "{series}: {m:?}");
    }
    let log = d.log_text();
    assert!(
        log.contains("resolver canary failed") && log.contains("everything.test"),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("mxscreen-verdict") && l.contains(&format!("ip={CLEAN}")))
        .unwrap_or_else(|| panic!("no verdict line for {CLEAN}:\n{log}"));
    assert!(
        line.contains("dnsbl:everything.test=canary_failed") && line.contains("rdns=canary_failed"),
        "{line}"
    );
}

#[test]
fn a_key_in_a_zone_name_never_leaves_the_config() {
    let zone = format!("{KEY}.zen.dq.test");
    let b = Bed::new(
        "yk",
        &[LISTED, CLEAN],
        &[RblZone::new(
            &zone,
            Duration::from_secs(900),
            vec![listing(LISTED, "127.0.0.2", "listed, see the list's site")],
        )],
    );
    let sections = format!(
        "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n\
         [lists]\nallow_defaults = false\n\n[[dnsbl]]\nzone = \"{zone}\"\nweight = 10\n\n\
         [metrics]\nlisten = \"{METRICS}\"\n",
        b.rbl_addr
    );
    let d = MxDaemon::start(
        &b.wire.server,
        SERVER_IFACE,
        Spec {
            sections,
            ..Default::default()
        },
    );
    // Held (the default), and no MTA asks: never let through to be explained.
    b.refused(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    b.connects(CLEAN, smtp4());
    assert_eq!(d.wait_verdict(CLEAN, VERDICT_WITHIN), "pass");
    d.wait_for("the canary's first round", CANARY_WITHIN, || {
        canary(&d, "zen.dq.test")["ok"] == true
    });
    // The MTA's answer names the list by its display name.
    let answer = d.query(LISTED);
    assert!(answer.contains("zone=zen.dq.test"), "{answer}");
    let config = d.config.to_str().unwrap();
    let check = mxscreen_in(&b.wire.server, &["check", LISTED, "--config", config]);
    let check_json = mxscreen_in(
        &b.wire.server,
        &["check", LISTED, "--json", "--config", config],
    );
    assert!(
        text(&check).contains("dnsbl:zen.dq.test"),
        "{}",
        text(&check)
    );
    let shown = [
        ("the query socket's answer", answer),
        ("check", text(&check)),
        ("check --json", text(&check_json)),
        ("status --json", d.status().to_string()),
        ("stats", d.cli_ok(&["stats", "--json"])),
        ("/metrics", scrape(&b.wire.server, metrics_addr())),
        ("the daemon's log", d.log_text()),
    ];
    for (what, out) in shown {
        assert!(!out.contains(KEY), "{what} shows the key:\n{out}");
    }
}

/// Writes `text` as a config file in `dir`; returns its path.
fn config_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn allow_adds_to_the_builtin_ranges_and_config_check_warns_of_traps() {
    let b = Bed::new("ya", &[CLEAN], &[bl_test()]);
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[resolver]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n\
         [policy]\nexplain_to = \"all\"\n\n\
         [[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n\n[[dnsbl]]\nzone = \"wl.test\"\nweight = -10\ncanary = false\n\n",
        b.rbl_addr
    );
    let partner = config_file(
        dir.path(),
        "partner.toml",
        &format!("{base}[lists]\nallow = [\"198.51.100.0/24\"]\n"),
    );
    let strict = config_file(
        dir.path(),
        "strict.toml",
        &format!("{base}[lists]\nallow = [\"198.51.100.0/24\"]\nallow_defaults = false\n"),
    );
    let check = |ip: &str, cfg: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "check",
            ip,
            "--json",
            "--config",
            cfg,
            "--socket",
            "/nonexistent",
        ];
        args.extend(extra);
        let out = mxscreen_in(&b.wire.server, &args);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    // One partner range keeps RFC 1918 allowed, and allows the partner.
    for ip in ["192.168.1.5", "198.51.100.7"] {
        let v = check(ip, &partner, &[]);
        assert_eq!(
            (v["action"].as_str(), v["static"].as_bool()),
            (Some("pass"), Some(true)),
            "{ip}: {v}"
        );
    }
    // allow_defaults = false drops the built-in ranges, not the partner.
    let v = check("192.168.1.5", &strict, &[]);
    assert_eq!(v["static"], false, "{v}");
    assert_eq!(check("198.51.100.7", &strict, &[])["static"], true);
    // --ignore-lists evaluates the DNS path for an address a list covers.
    let v = check("192.168.1.5", &partner, &["--ignore-lists"]);
    assert_eq!(v["static"], false, "{v}");
    assert!(v["evidence"].to_string().contains("dnsbl:bl.test"), "{v}");
    // config check: the traps are warnings, and the check still passes.
    let traps = config_file(
        dir.path(),
        "traps.toml",
        "[datapath]\nports = [25, 587]\n\n[resolver]\nnameservers = [\"8.8.8.8\"]\n\n\
         [[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n\n[lists]\nallow_defaults = false\n",
    );
    let out = Command::new(mxscreen_bin())
        .args(["config", "check", &traps])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for needle in [
        "8.8.8.8",
        "587",
        "no allowlist zone",
        "allow_defaults = false",
    ] {
        assert!(err.contains(needle), "{needle} not warned about:\n{err}");
    }
    let out = Command::new(mxscreen_bin())
        .args(["config", "check", &partner])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
}
