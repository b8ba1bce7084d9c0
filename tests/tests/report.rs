//! `mxscreen report` against the logs of a real Exim and a real Postfix: the asking bed (both
//! MTAs ask mxscreen) with the daemon in observe mode, so a listed sender's mail gets through
//! and is logged as accepted by each MTA, a relay attempt of it is refused by each MTA's own
//! rules, and a clean sender passes unremarked. The report must name the listed sender as
//! one enforcing would drop, with its evidence and each MTA's counts, and leave the clean
//! sender out — also after the daemon restarted. Needs root; run by `cargo xtask test e2e`.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use mxscreen_tests::{
    daemon::{MxDaemon, mxscreen_bin, text},
    mta::swaks,
    testbed::*,
};
use serde_json::Value;

const VERDICT_WITHIN: Duration = Duration::from_secs(10);
const SWAKS_OK: Duration = Duration::from_secs(8);
/// Either MTA writes a line this soon after the event that causes it.
const LOG_WITHIN: Duration = Duration::from_secs(5);

/// `mxscreen report --config <the daemon's> ARGS`.
fn report(d: &MxDaemon, args: &[&str]) -> Output {
    Command::new(mxscreen_bin())
        .arg("report")
        .arg("--config")
        .arg(&d.config)
        .args(args)
        .output()
        .expect("run mxscreen report")
}

/// `report --json` over the MTA logs `logs`, parsed.
#[track_caller]
fn report_json(d: &MxDaemon, logs: &[&Path]) -> Value {
    let mut args = vec!["--json".to_owned()];
    for l in logs {
        args.extend(["--mta-log".to_owned(), l.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = report(d, &args);
    assert!(out.status.success(), "report {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The report's entry for `ip` in its list `list` (`accepted` or `not_accepted`).
fn peer<'a>(r: &'a Value, list: &str, ip: &str) -> Option<&'a Value> {
    r[list].as_array()?.iter().find(|p| p["ip"] == ip)
}

/// Whether `ip` is anywhere in the report's peers.
fn listed_anywhere(r: &Value, ip: &str) -> bool {
    peer(r, "accepted", ip).is_some() || peer(r, "not_accepted", ip).is_some()
}

/// One message from `src` to `port` that the MTA must accept (observe mode refuses nothing).
#[track_caller]
fn accepted(b: &Testbed, src: &str, port: u16, tag: &str) {
    let r = b.mail_to_port(src, port, tag, SWAKS_OK);
    assert!(r.accepted, "{src} -> {port}: {tag}:\n{}", r.transcript);
}

/// A relay attempt from `src` on `port`: connected, refused by the MTA's own rules at RCPT.
#[track_caller]
fn relay_refused(b: &Testbed, src: &str, port: u16, tag: &str) {
    let to = "someone@elsewhere.test";
    let r = swaks(
        &b.wire.client,
        src,
        Testbed::server_for(src),
        port,
        to,
        tag,
        SWAKS_OK,
    );
    assert!(
        !r.accepted && r.transcript.contains("Connected to"),
        "{src} -> {port}: the relay attempt should be refused at RCPT:\n{}",
        r.transcript
    );
}

/// Asserts the listed sender's entry: would be dropped, with the DNSBL's evidence, observed,
/// `accepted` messages and `refused` RCPT refusals in `connections` connections.
#[track_caller]
fn assert_listed(r: &Value, accepted: u64, refused: u64, connections: u64) {
    let p = peer(r, "accepted", SBL).unwrap_or_else(|| panic!("{SBL} not in accepted: {r:#}"));
    assert_eq!(p["action"], "drop", "{p:#}");
    assert_eq!(p["observe"], true, "{p:#}");
    let evidence = p["evidence"].to_string();
    assert!(
        evidence.contains(&format!("dnsbl:{DNSBL_ZONE}=listed")) && evidence.contains("SBL"),
        "{p:#}"
    );
    assert_eq!(p["accepted"], accepted, "{p:#}");
    assert_eq!(p["connections"], connections, "{p:#}");
    assert_eq!(p["refused"]["RCPT"], refused, "{p:#}");
    assert!(
        r["would_drop"]["accepted_messages"].as_u64() >= Some(accepted),
        "{r:#}"
    );
    assert!(
        r["would_drop"]["refused_by_mta"].as_u64() >= Some(refused),
        "{r:#}"
    );
    assert!(!listed_anywhere(r, CLEAN), "{CLEAN} is clean: {r:#}");
}

/// Both MTAs let the listed sender's mail in under observe mode; the report over Exim's
/// mainlog, over Postfix's log and over both says what enforcing would have refused, and
/// still does after a restart (the decision log is on disk), with the decisions made since.
#[test]
fn report_joins_decisions_with_exim_and_postfix_logs() {
    let b = Testbed::asking("er", Attach::Xdp);
    let mut d = b.daemon(Tweaks {
        args: vec!["--observe".into()],
        ..Default::default()
    });
    let exim = b.exim.log();
    let postfix = b.postfix.as_ref().unwrap().log();

    accepted(&b, SBL, 25, "report-exim-0");
    assert_eq!(d.wait_verdict(SBL, VERDICT_WITHIN), "drop");
    accepted(&b, SBL, 25, "report-exim-1");
    relay_refused(&b, SBL, 25, "report-exim-relay");
    accepted(&b, CLEAN, 25, "report-exim-clean");
    accepted(&b, SBL, POSTFIX_PORT, "report-postfix-0");
    relay_refused(&b, SBL, POSTFIX_PORT, "report-postfix-relay");
    accepted(&b, CLEAN, POSTFIX_PORT, "report-postfix-clean");
    // Each MTA has logged what the report counts (Postfix's acceptance is its qmgr line).
    exim.wait_line(0, SBL, "rejected RCPT", LOG_WITHIN);
    postfix.wait_line(0, SBL, "reject: RCPT", LOG_WITHIN);
    let qmgr_lines = || {
        postfix
            .text()
            .lines()
            .filter(|l| l.contains("postfix/qmgr") && l.contains("from=<"))
            .count()
    };
    d.wait_for("Postfix's qmgr lines", LOG_WITHIN, || qmgr_lines() >= 2);

    let r = report_json(&d, &[&exim.path]);
    assert_listed(&r, 2, 1, 3);
    let r = report_json(&d, &[&postfix.path]);
    assert_listed(&r, 1, 1, 2);
    let r = report_json(&d, &[&exim.path, &postfix.path]);
    assert_listed(&r, 3, 2, 5);
    assert_eq!(r["would_drop"]["peers_with_accepted_mail"], 1, "{r:#}");
    assert!(
        r["oldest_decision"].as_u64() >= r["since"].as_u64(),
        "{r:#}"
    );

    // The text says the same, the list that matters first.
    let out = report(&d, &["--mta-log", exim.path.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let listed = t.find(&format!("  {SBL}  drop")).expect(&t);
    assert!(
        t.find("Accepted mail from peers") < Some(listed)
            && t.find("accepted no mail from") > Some(listed),
        "{t}"
    );
    assert!(!t.contains(CLEAN), "{t}");

    // The decision log survives a restart; the restarted daemon adds to it.
    d.stop();
    d.restart();
    accepted(&b, PBL, 25, "report-after-restart");
    assert_eq!(d.wait_verdict(PBL, VERDICT_WITHIN), "limit");
    d.wait_for("the limit decision in the report", LOG_WITHIN, || {
        listed_anywhere(&report_json(&d, &[&exim.path]), PBL)
    });
    let r = report_json(&d, &[&exim.path]);
    assert_listed(&r, 2, 1, 3);
    let pbl = peer(&r, "accepted", PBL).expect("PBL's message was accepted");
    assert_eq!(pbl["action"], "limit", "{r:#}");
    assert_eq!(r["would_limit"]["peers"], 1, "{r:#}");
}

/// A config whose state file is in `dir` (the report reads the decision log beside it).
fn config_in(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("mxscreen.toml");
    let state = dir.join("state.json");
    std::fs::write(
        &config,
        format!("[state]\nfile = {:?}\n", state.display().to_string()),
    )
    .unwrap();
    config
}

/// Bad input says what is wrong in one line: a bad `--since` is a usage error (2), an MTA
/// log that cannot be read a runtime error (1) naming it. No decisions yet is no error.
#[test]
fn report_refuses_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let run = |args: &[&str]| {
        Command::new(mxscreen_bin())
            .arg("report")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--since", "a week"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid duration") && err.lines().count() == 1,
        "{err}"
    );

    let missing = dir.path().join("no-such-mainlog");
    let out = run(&["--mta-log", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the MTA log") && err.contains("no-such-mainlog"),
        "{err}"
    );

    let empty = dir.path().join("mainlog");
    std::fs::write(&empty, "").unwrap();
    let out = run(&["--mta-log", empty.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["would_drop"]["peers"], 0, "{r:#}");
    assert_eq!(r["accepted"], serde_json::json!([]), "{r:#}");
    assert!(r["oldest_decision"].is_null(), "{r:#}");
    let out = run(&["--mta-log", empty.to_str().unwrap()]);
    assert!(text(&out).contains("none logged yet"), "{}", text(&out));
}

/// `date -u` of Unix time `t` shifted by `offset` seconds, in `format`.
fn date(t: u64, offset: i64, format: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}", t as i64 + offset), format])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The MTA's lines as Exim and Postfix write them, however they are configured, credited to
/// the right peer at the right time, and the mail enforcing would not refuse kept apart:
/// - the peer is the address after the HELO, even a HELO that is an address literal;
/// - Exim stamps with milliseconds (`+millisec`) and a zone (`log_timezone`) are read, and
///   stamps without a zone are the host's local time (here TZ is ten hours west of UTC:
///   read as UTC, they would fall before `--since 1h`);
/// - authenticated mail and mail on port 587 (not in `datapath.ports`) is counted apart;
/// - a Postfix message whose `client=` line is in `mail.log.1` and whose `qmgr` line is in
///   `mail.log` is one message.
#[test]
fn report_reads_each_stamp_and_peer_form_and_keeps_unscreened_mail_apart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (helo_peer, literal, roadwarrior, stamped) =
        ("192.0.2.11", "198.51.100.21", "192.0.2.30", "192.0.2.40");
    let decisions: String = [helo_peer, literal, roadwarrior, stamped]
        .iter()
        .map(|ip| {
            let d = mxscreen::report::log::Decision {
                at: now - 900,
                ip: ip.parse().unwrap(),
                action: "drop".into(),
                reason: "reputation".into(),
                score: 10,
                evidence: vec!["dnsbl:zen.spamhaus.org=listed(+10)".into()],
                observe: true,
            };
            format!("{}\n", serde_json::to_string(&d).unwrap())
        })
        .collect();
    std::fs::write(dir.path().join("decisions.jsonl"), decisions).unwrap();

    // Ten hours west of UTC, as a POSIX TZ (no tz database needed).
    const WEST: i64 = -36_000;
    let local = |ago: u64| date(now - ago, WEST, "+%Y-%m-%d %H:%M:%S");
    let utc = |ago: u64| date(now - ago, 0, "+%Y-%m-%d %H:%M:%S");
    let plus_one = |ago: u64| date(now - ago, 3600, "+%Y-%m-%d %H:%M:%S");
    let mainlog = dir.path().join("mainlog");
    let exim = [
        format!(
            "{} 1tAAAA-000001-AB <= a@b.example H=([{literal}]) [{helo_peer}]:58889 P=esmtp S=1",
            local(600)
        ),
        format!(
            "{} H=([{literal}]) [{helo_peer}]:58889 F=<a@b.example> rejected RCPT <c@d.example>: listed",
            local(590)
        ),
        format!(
            "{} +0000 1tAAAA-000002-AB <= a@b.example H=(x) [{stamped}]:1 P=esmtp S=1",
            utc(580)
        ),
        format!(
            "{}.227 1tAAAA-000003-AB <= a@b.example H=mx.b.example (x) [{stamped}]:1 P=esmtps S=1",
            local(570)
        ),
        format!(
            "{}.227 +0100 [4242] 1tAAAA-000004-AB <= a@b.example H=mx.b.example [{stamped}]:1 P=esmtp S=1",
            plus_one(560)
        ),
        format!(
            "{} 1tAAAA-000005-AB <= rw@example.org H=(laptop) [{roadwarrior}]:5000 I=[192.0.2.2]:587 P=esmtpsa A=plain:roadwarrior S=1",
            local(550)
        ),
    ];
    std::fs::write(&mainlog, exim.join("\n") + "\n").unwrap();
    let rfc = |ago: u64| date(now - ago, 0, "+%Y-%m-%dT%H:%M:%S+00:00");
    let rotated = dir.path().join("mail.log.1");
    let current = dir.path().join("mail.log");
    std::fs::write(
        &rotated,
        format!(
            "{} mx postfix/submission/smtpd[1]: 4F1A2B3C4D: client=unknown[{roadwarrior}], sasl_method=PLAIN, sasl_username=roadwarrior\n\
             {} mx postfix/smtpd[2]: 5A5A5A5A5A: client=unknown[{stamped}]\n",
            rfc(500),
            rfc(499)
        ),
    )
    .unwrap();
    std::fs::write(
        &current,
        format!(
            "{} mx postfix/qmgr[9]: 4F1A2B3C4D: from=<rw@example.org>, size=1, nrcpt=1 (queue active)\n\
             {} mx postfix/qmgr[9]: 5A5A5A5A5A: from=<a@b.example>, size=1, nrcpt=1 (queue active)\n",
            rfc(498),
            rfc(497)
        ),
    )
    .unwrap();

    let out = Command::new(mxscreen_bin())
        .args(["report", "--json", "--since", "1h", "--config"])
        .arg(&config)
        .args(["--mta-log"])
        .arg(&mainlog)
        .args(["--mta-log"])
        .arg(&rotated)
        .args(["--mta-log"])
        .arg(&current)
        .env("TZ", "<-10>10")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mta_events"], 8, "{r:#}");
    let p = peer(&r, "accepted", helo_peer).unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(
        (&p["accepted"], &p["refused"]["RCPT"]),
        (&1.into(), &1.into()),
        "{r:#}"
    );
    let p = peer(&r, "not_accepted", literal).unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(
        p["refused"],
        serde_json::json!({}),
        "the HELO is not the peer: {r:#}"
    );
    let p = peer(&r, "accepted", stamped).unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(p["accepted"], 4, "{r:#}");
    let p = peer(&r, "not_accepted", roadwarrior).unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(
        (&p["accepted"], &p["accepted_unscreened"]),
        (&0.into(), &2.into()),
        "{r:#}"
    );
    assert_eq!(r["would_drop"]["accepted_messages"], 5, "{r:#}");
    assert_eq!(r["would_drop"]["accepted_unscreened_messages"], 2, "{r:#}");
}
