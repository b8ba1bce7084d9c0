//! End to end, the way an operator sees it: a real Exim with its own ACLs on an MTA host, real
//! rbldnsd/nsd behind a real unbound, senders using swaks from many addresses, and the real
//! `mxscreen run` on the MTA host's interface, in native XDP, in tc mode and on the nftables
//! backend (every scenario runs in each), and once in an unprivileged container. Each scenario asserts on what the sender saw (swaks' result, or a
//! TCP handshake) and on what Exim logged (or never logged). See `mxscreen_tests::testbed`
//! for the layout. Needs root; run by `cargo xtask test e2e`.

use std::time::{Duration, Instant};

use mxscreen_tests::{
    daemon::MxDaemon,
    mta::{MtaLog, Smtp, TAG_ACL, TAG_DNSBL, TAG_RDNS},
    testbed::*,
};

/// A verdict is in the map this soon after first contact (4 lookups against loopback
/// servers; the DNS-timeout scenario waits out a 1 s resolver timeout and one retry).
const VERDICT_WITHIN: Duration = Duration::from_secs(10);
/// A dropped SYN: the handshake must not complete before TCP's first retransmit (1 s).
const REFUSED_WITHIN: Duration = Duration::from_millis(800);
/// swaks' connect timeout where the connection must fail: covers the first two SYN
/// retransmits (1 s, 3 s), so a refusal is not just one lost packet.
const SWAKS_REFUSED: Duration = Duration::from_secs(4);
/// swaks' timeout where the message must get through.
const SWAKS_OK: Duration = Duration::from_secs(8);
/// Exim writes a line this soon after the event that causes it.
const LOG_WITHIN: Duration = Duration::from_secs(5);

fn bed(tag: &str, attach: Attach) -> Testbed {
    Testbed::new(tag, attach)
}

/// Sends a message from `src` to port 25 that must be accepted; returns swaks' outcome.
#[track_caller]
fn accepted(b: &Testbed, src: &str, tag: &str) -> Smtp {
    let r = b.mail_within(src, tag, SWAKS_OK);
    assert!(
        r.accepted,
        "{src}: message {tag} should be accepted:\n{}\nexim main log:\n{}",
        r.transcript,
        b.exim.mainlog()
    );
    r
}

/// Sends a message from `src` whose TCP connection must never be established.
#[track_caller]
fn refused_smtp(b: &Testbed, src: &str, tag: &str) -> Smtp {
    let r = b.mail_within(src, tag, SWAKS_REFUSED);
    assert!(
        r.connect_failed(),
        "{src}: the connection for {tag} should fail at SYN:\n{}",
        r.transcript
    );
    r
}

/// A TCP handshake from `src` to the MTA's `port` that must complete.
#[track_caller]
fn connects(b: &Testbed, src: &str, port: u16) {
    if let Err(e) = b.connect(src, port, Duration::from_secs(5)) {
        panic!("{src} -> port {port} should connect: {e}");
    }
}

/// Waits until Exim logged message `tag` from `src` (after `mark`) as received and as having
/// passed its own RCPT ACL: the message really reached the MTA.
#[track_caller]
fn reached_exim(b: &Testbed, mark: usize, src: &str, tag: &str) {
    b.exim
        .wait_line(mark, src, &format!("id={tag}@{FORWARD_ZONE}"), LOG_WITHIN);
    b.exim.wait_line(mark, src, TAG_ACL, LOG_WITHIN);
}

/// A handshake to port 25 whose very first SYN gets through: it completes before TCP would
/// retransmit (1 s), so no drop was papered over by a retry.
#[track_caller]
fn first_syn_passes(b: &Testbed, src: &str) {
    if let Err(e) = b.connect(src, 25, Duration::from_millis(900)) {
        panic!("{src}: the first SYN to port 25 should pass at once: {e}");
    }
}

/// A TCP handshake from `src` to port 25 whose SYN must be dropped.
#[track_caller]
fn refused(b: &Testbed, src: &str) {
    match b.connect(src, 25, REFUSED_WITHIN) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("{src} -> port 25: expected the SYN to be dropped, got {other:?}"),
    }
}

/// The daemon's verdict log line for `ip` (`mxscreen-verdict ... ip=<ip> ...`).
#[track_caller]
fn verdict_line(d: &MxDaemon, ip: &str) -> String {
    let log = d.log_text();
    let needle = format!("ip={ip} ");
    log.lines()
        .rev()
        .find(|l| l.contains("mxscreen-verdict") && l.contains(&needle))
        .unwrap_or_else(|| panic!("no verdict line for {ip}:\n{log}"))
        .to_owned()
}

#[track_caller]
fn assert_has(line: &str, fields: &[&str]) {
    for f in fields {
        assert!(line.contains(f), "{f:?} missing in: {line}");
    }
}

/// The `list --verdicts --json` entry for `ip`.
fn verdict_entry(d: &MxDaemon, ip: &str) -> serde_json::Value {
    d.verdict_entry(ip).unwrap_or_else(|| {
        panic!(
            "no verdict for {ip} in {}",
            d.cli_ok(&["list", "--verdicts", "--json"])
        )
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Listed senders (SBL- and XBL-like, IPv4 and IPv6): once the verdict is in, their TCP
/// connections fail and Exim never hears of them. The first contact passes (first_contact =
/// pass) and Exim's own DNSBL `warn` agrees it is listed.
fn listed_senders_never_reach_exim(attach: Attach) {
    let b = bed("el", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    for ip in [SBL, XBL, XBL6] {
        let first = b.exim.mark();
        accepted(&b, ip, &format!("first-contact-{}", ip.replace(':', "-")));
        b.exim.wait_line(first, ip, TAG_DNSBL, LOG_WITHIN);
        assert_eq!(d.wait_verdict(ip, VERDICT_WITHIN), "drop", "{ip}");
        let mark = b.exim.mark();
        refused(&b, ip);
        refused_smtp(&b, ip, &format!("listed-{}", ip.replace(':', "-")));
        assert_eq!(
            b.exim.lines_since(mark, ip),
            Vec::<String>::new(),
            "Exim saw a dropped sender {ip}"
        );
        // No PTR either (+5): bots rarely have one; the listing alone is the drop class.
        let class = if ip == SBL { "(SBL)" } else { "(XBL)" };
        assert_has(
            &verdict_line(&d, ip),
            &[
                "action=\"drop\"",
                "score=15",
                "dnsbl:zen.test=listed",
                class,
                "(+10)",
                "source=\"reputation\"",
            ],
        );
    }
    assert!(
        d.counter("dropped_verdict") >= 6,
        "{}",
        d.cli_ok(&["stats"])
    );
}

/// Clean senders (FCrDNS, on no list; IPv4 and IPv6) are untouched: accepted before and
/// after their verdict, and each message went through Exim's whole RCPT ACL.
fn clean_senders_are_untouched_and_meet_exims_acls(attach: Attach) {
    let b = bed("ec", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    for ip in [CLEAN, CLEAN6, CLEAN_B] {
        let mark = b.exim.mark();
        let t = ip.replace(':', "-");
        accepted(&b, ip, &format!("clean-first-{t}"));
        assert_eq!(d.wait_verdict(ip, VERDICT_WITHIN), "pass", "{ip}");
        accepted(&b, ip, &format!("clean-second-{t}"));
        let acl = b.exim.wait_line(mark, ip, TAG_ACL, LOG_WITHIN);
        assert!(
            acl.contains(".clients.test"),
            "Exim did not verify {ip}'s rDNS: {acl}"
        );
        for id in [
            format!("clean-first-{t}@clients.test"),
            format!("clean-second-{t}@clients.test"),
        ] {
            b.exim.wait_line(mark, ip, &format!("id={id}"), LOG_WITHIN);
        }
        let lines = b.exim.lines_since(mark, ip);
        assert!(
            !lines
                .iter()
                .any(|l| l.contains(TAG_DNSBL) || l.contains(TAG_RDNS)),
            "{lines:#?}"
        );
        assert_eq!(
            lines.iter().filter(|l| l.contains(TAG_ACL)).count(),
            2,
            "{lines:#?}"
        );
        assert_has(
            &verdict_line(&d, ip),
            &["action=\"pass\"", "score=0", "ttl=3600"],
        );
    }
    assert_eq!(b.exim.rejectlog(), "", "Exim rejected something");
}

/// rDNS evidence by its weights: no PTR (5) is the limit class; a PTR that does not
/// forward-confirm (3) stays below it and passes. Exim's own rDNS `warn` agrees on both.
fn reverse_dns_counts_by_its_weights(attach: Attach) {
    let b = bed("er", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    let mark = b.exim.mark();
    accepted(&b, NO_PTR, "no-ptr-first");
    assert_eq!(d.wait_verdict(NO_PTR, VERDICT_WITHIN), "limit");
    assert_has(
        &verdict_line(&d, NO_PTR),
        &["action=\"limit\"", "score=5", "rdns=no_ptr[NXDOMAIN](+5)"],
    );
    b.exim.wait_line(mark, NO_PTR, TAG_RDNS, LOG_WITHIN);
    // Limited, not refused: the next message (within the burst) is accepted.
    accepted(&b, NO_PTR, "no-ptr-second");

    accepted(&b, BAD_FCRDNS, "fcrdns-first");
    assert_eq!(d.wait_verdict(BAD_FCRDNS, VERDICT_WITHIN), "pass");
    assert_has(
        &verdict_line(&d, BAD_FCRDNS),
        &["action=\"pass\"", "score=3", "fcrdns=fcrdns_mismatch"],
    );
    accepted(&b, BAD_FCRDNS, "fcrdns-second");
    let tagged = b
        .exim
        .lines_since(mark, BAD_FCRDNS)
        .iter()
        .filter(|l| l.contains(TAG_RDNS))
        .count();
    assert_eq!(
        tagged,
        2,
        "Exim's rDNS warn should tag both messages:\n{}",
        b.exim.mainlog()
    );
}

/// A sender on the DNSBL and, with high trust, on the DNSWL passes; Exim's own DNSBL `warn`
/// still sees the listing (what stays in the MTA's ACLs is the MTA's business).
fn dnswl_listing_outweighs_a_dnsbl_listing(attach: Attach) {
    let b = bed("ew", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    let mark = b.exim.mark();
    accepted(&b, WHITELISTED, "dnswl-first");
    assert_eq!(d.wait_verdict(WHITELISTED, VERDICT_WITHIN), "pass");
    assert_has(
        &verdict_line(&d, WHITELISTED),
        &[
            "action=\"pass\"",
            "score=-5",
            "dnsbl:zen.test=listed",
            "dnsbl:dnswl.test=listed",
        ],
    );
    accepted(&b, WHITELISTED, "dnswl-second");
    let tags = b
        .exim
        .lines_since(mark, WHITELISTED)
        .iter()
        .filter(|l| l.contains(TAG_DNSBL))
        .count();
    assert_eq!(tags, 2, "{}", b.exim.mainlog());
}

/// A DNSBL answering 127.255.255.254 ("you query through a public resolver") has not
/// listed anyone: the sender passes and mxscreen warns the operator.
fn dnsbl_error_code_is_not_a_listing(attach: Attach) {
    let b = bed("ee", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    let mark = b.exim.mark();
    accepted(&b, ERROR_CODE, "errcode-first");
    assert_eq!(d.wait_verdict(ERROR_CODE, VERDICT_WITHIN), "pass");
    accepted(&b, ERROR_CODE, "errcode-second");
    // Both messages reached Exim and went through its ACLs.
    reached_exim(&b, mark, ERROR_CODE, "errcode-first");
    reached_exim(&b, mark, ERROR_CODE, "errcode-second");
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("127.255.255.254") && l.contains("zen.test")),
        "no warning about the error code:\n{log}"
    );
    assert_has(
        &verdict_line(&d, ERROR_CODE),
        &["action=\"pass\"", "error_code", "source=\"tempfail\""],
    );
    // `status` names the zone that refuses us, where an operator looks first.
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("zen.test refused 1 queries"), "{status}");
}

/// A DNS server that never answers: the sender is accepted (fail-open) and its verdict is
/// short-lived (tempfail_ttl, 2 min, instead of the pass_ttl hour).
fn dns_timeout_fails_open_with_a_short_verdict(attach: Attach) {
    let b = bed("et", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    let mark = b.exim.mark();
    accepted(&b, SLOW_DNS, "slow-first");
    reached_exim(&b, mark, SLOW_DNS, "slow-first");
    assert_eq!(d.wait_verdict(SLOW_DNS, VERDICT_WITHIN), "pass");
    let e = verdict_entry(&d, SLOW_DNS);
    assert_eq!(e["source"], "tempfail", "{e:#}");
    let left = e["expires"].as_u64().unwrap().saturating_sub(unix_now());
    assert!(
        left <= 120,
        "a tempfail verdict should live at most 2 minutes, not {left}s: {e:#}"
    );
    assert_has(
        &verdict_line(&d, SLOW_DNS),
        &["action=\"pass\"", "dns_tempfail", "ttl=120"],
    );
    assert!(
        b.silent.count(&format!("{}.", ptr_name(SLOW_DNS))) >= 1,
        "the silent server was never asked"
    );
    accepted(&b, SLOW_DNS, "slow-second");
    reached_exim(&b, mark, SLOW_DNS, "slow-second");
}

fn ptr_name(ip: &str) -> String {
    let o: Vec<&str> = ip.split('.').rev().collect();
    format!("{}.in-addr.arpa", o.join("."))
}

/// The limit class (PBL-like): the first connections get through, a burst beyond the bucket
/// is refused at SYN (Exim never sees those), and a later retry — TCP's own SYN retransmit —
/// gets through. 60 SYNs a minute with bursts of 3, so "later" is about a second.
fn limit_class_is_rate_limited_at_syn(attach: Attach) {
    let b = bed("ep", attach);
    let d = b.daemon(Tweaks {
        policy: "limit_rate = 60\nlimit_burst = 3".into(),
        ..Tweaks::first_contact_pass()
    });
    accepted(&b, PBL, "pbl-first");
    assert_eq!(d.wait_verdict(PBL, VERDICT_WITHIN), "limit");
    assert_has(
        &verdict_line(&d, PBL),
        &["action=\"limit\"", "score=5", "dnsbl:zen.test=listed"],
    );
    let mark = b.exim.mark();
    let (mut through, mut refusals) = (0, 0);
    for _ in 0..10 {
        match b.connect(PBL, 25, Duration::from_millis(300)) {
            Ok(()) => through += 1,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                refusals += 1;
                break;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    assert!(
        (1..=4).contains(&through) && refusals == 1,
        "a burst of 10: {through} through, {refusals} refused"
    );
    assert!(d.counter("limited") >= 1);
    // Exim logged exactly the connections that got through.
    let deadline = Instant::now() + LOG_WITHIN;
    while b.exim.connections_since(mark, PBL) < through && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        b.exim.connections_since(mark, PBL),
        through,
        "{}",
        b.exim.mainlog()
    );
    // A real MTA retries: its first SYN meets the empty bucket and is refused, TCP
    // retransmits it after a second, and that one meets a fresh token.
    let limited = d.counter("limited");
    let mark = b.exim.mark();
    let r = accepted(&b, PBL, "pbl-retry");
    assert!(r.elapsed < SWAKS_OK, "{r:?}");
    assert!(
        d.counter("limited") > limited,
        "the retry's first SYN was not refused"
    );
    assert!(
        r.elapsed >= Duration::from_millis(900),
        "the retry got in before TCP's first retransmit: {r:?}"
    );
    reached_exim(&b, mark, PBL, "pbl-retry");
}

/// The operator's commands, live: `block` of a clean sender refuses its very next SYN (it
/// still reaches the MTA host's other ports), `unblock` lets it back in, `allow` lets a listed
/// sender in, `unallow` undoes that. How long the commands take: `cargo xtask bench daemon`.
fn operator_commands_act_on_the_next_syn(attach: Attach) {
    let b = bed("eo", attach);
    let d = b.daemon(Tweaks::first_contact_pass());
    accepted(&b, CLEAN, "before-block");
    assert_eq!(d.wait_verdict(CLEAN, VERDICT_WITHIN), "pass");

    // The block is in the map when the command returns: the very next SYN is dropped.
    let out = d.cli_ok(&["block", CLEAN, "--reason", "e2e"]);
    assert!(out.starts_with(&format!("blocked {CLEAN}/32")), "{out}");
    let mark = b.exim.mark();
    refused(&b, CLEAN);
    refused_smtp(&b, CLEAN, "while-blocked");
    assert_eq!(b.exim.lines_since(mark, CLEAN), Vec::<String>::new());
    // Only the screened port: ssh (a plain listener) and submission (the same Exim) answer.
    connects(&b, CLEAN, OTHER_PORT);
    let r = b.mail_to_port(CLEAN, SUBMISSION_PORT, "blocked-on-587", SWAKS_OK);
    assert!(r.accepted, "{}", r.transcript);
    b.exim
        .wait_line(mark, CLEAN, &format!(":{SUBMISSION_PORT}"), LOG_WITHIN);
    assert!(d.counter("dropped_deny") >= 2);

    // unblock, allow and unallow act as directly: the very next SYN meets the new state.
    let out = d.cli_ok(&["unblock", CLEAN]);
    assert!(out.starts_with(&format!("unblocked {CLEAN}/32")), "{out}");
    first_syn_passes(&b, CLEAN);
    let mark = b.exim.mark();
    accepted(&b, CLEAN, "after-unblock");
    b.exim.wait_line(mark, CLEAN, TAG_ACL, LOG_WITHIN);

    // allow beats a DNSBL drop verdict; Exim's own DNSBL warn still tags the message.
    connects(&b, SBL, 25);
    assert_eq!(d.wait_verdict(SBL, VERDICT_WITHIN), "drop");
    refused(&b, SBL);
    d.cli_ok(&["allow", SBL, "--reason", "partner"]);
    first_syn_passes(&b, SBL);
    let mark = b.exim.mark();
    accepted(&b, SBL, "allowed-listed");
    b.exim.wait_line(mark, SBL, TAG_DNSBL, LOG_WITHIN);
    d.cli_ok(&["unallow", SBL]);
    refused(&b, SBL);
}

/// `kill -9` of the daemon: the kernel detaches the program with it, so clean mail still
/// flows (everything does: fail-open). Restart: the pinned verdicts and the state file's
/// blocks are enforced again before any new lookup. So are they after a clean stop (the
/// nftables table is deleted at exit: its verdicts are saved and taken back).
fn kill9_fails_open_and_restart_restores_blocks(attach: Attach) {
    let b = bed("ek", attach);
    let mut d = b.daemon(Tweaks::first_contact_pass());
    connects(&b, SBL, 25);
    assert_eq!(d.wait_verdict(SBL, VERDICT_WITHIN), "drop");
    d.cli_ok(&["block", CLEAN_B]);
    refused(&b, SBL);
    refused(&b, CLEAN_B);

    d.kill9();
    let mark = b.exim.mark();
    accepted(&b, CLEAN, "during-outage");
    accepted(&b, CLEAN_B, "blocked-during-outage");
    connects(&b, SBL, 25);
    b.exim.wait_line(mark, CLEAN, TAG_ACL, LOG_WITHIN);

    d.restart();
    refused(&b, SBL);
    refused(&b, CLEAN_B);
    let mark = b.exim.mark();
    refused_smtp(&b, SBL, "after-restart");
    assert_eq!(b.exim.lines_since(mark, SBL), Vec::<String>::new());
    accepted(&b, CLEAN, "after-restart-clean");

    // A clean stop and start: the first SYN meets the verdict, no lookup first (with
    // first_contact = "pass" a source without one would be let through), and its hits are
    // kept.
    let before = verdict_entry(&d, SBL);
    assert!(before["hits"].as_u64().unwrap() >= 2, "{before}");
    d.stop();
    accepted(&b, CLEAN_B, "stopped");
    d.restart();
    refused(&b, SBL);
    refused(&b, CLEAN_B);
    let after = verdict_entry(&d, SBL);
    assert_eq!(after["action"], "drop", "{after}");
    let expires = |e: &serde_json::Value| e["expires"].as_u64().expect("the verdict expires");
    assert!(
        expires(&after).abs_diff(expires(&before)) <= 2,
        "the same expiry: {before} {after}"
    );
    assert!(
        after["hits"].as_u64() >= before["hits"].as_u64(),
        "hits kept: {before} {after}"
    );
}

/// `--observe`: every decision is made, logged and counted, nothing is refused.
fn observe_mode_refuses_nothing_and_logs_verdicts(attach: Attach) {
    let b = bed("eb", attach);
    let d = b.daemon(Tweaks {
        args: vec!["--observe".into()],
        ..Default::default()
    });
    // Observe mode never holds, whatever first_contact says (the default: hold).
    first_syn_passes(&b, SBL);
    accepted(&b, SBL, "observe-first");
    assert_eq!(d.wait_verdict(SBL, VERDICT_WITHIN), "drop");
    d.cli_ok(&["block", CLEAN]);
    let mark = b.exim.mark();
    for i in 0..2 {
        accepted(&b, SBL, &format!("observe-listed-{i}"));
        accepted(&b, CLEAN, &format!("observe-blocked-{i}"));
    }
    assert_eq!(
        b.exim
            .lines_since(mark, SBL)
            .iter()
            .filter(|l| l.contains(TAG_DNSBL))
            .count(),
        2
    );
    assert_has(&verdict_line(&d, SBL), &["action=\"drop\"", "observe=true"]);
    // The limit class is not limited either: a burst well beyond limit_burst gets through.
    accepted(&b, PBL, "observe-pbl");
    assert_eq!(d.wait_verdict(PBL, VERDICT_WITHIN), "limit");
    for _ in 0..8 {
        connects(&b, PBL, 25);
    }
    assert!(
        d.counter("observe_passed") >= 4 + 5,
        "{}",
        d.cli_ok(&["stats"])
    );
    // What would have been refused is still counted as such (that is what observe is for).
    assert!(
        d.counter("dropped_verdict") >= 2 && d.counter("dropped_deny") >= 2,
        "{}",
        d.cli_ok(&["stats"])
    );
    assert!(d.cli_ok(&["status"]).contains("observe (never drops)"));
}

/// The README's way in: observe from the config first, then `observe = false` and SIGHUP —
/// the running daemon enforces the verdicts it already holds, without a restart.
fn observe_then_enforce_with_sighup(attach: Attach) {
    let b = bed("ei", attach);
    let d = b.daemon(Tweaks {
        policy: "observe = true".into(),
        ..Default::default()
    });
    accepted(&b, SBL, "observed-first");
    assert_eq!(d.wait_verdict(SBL, VERDICT_WITHIN), "drop");
    accepted(&b, SBL, "observed-second");
    d.write_config(&Testbed::sections("observe = false"));
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, Duration::from_secs(10));
    let mark = b.exim.mark();
    refused(&b, SBL);
    refused_smtp(&b, SBL, "enforced");
    assert_eq!(b.exim.lines_since(mark, SBL), Vec::<String>::new());
    accepted(&b, CLEAN, "enforced-clean");
    assert!(d.cli_ok(&["status"]).contains("enforcing"));
}

/// The built-in defaults (`first_contact = "hold"`; an Exim that does not ask mxscreen): a
/// listed sender's very first connection is held and then refused (Exim never logs it at
/// all); a clean sender's first connection completes on TCP's first SYN retransmit (1 s),
/// not at once and not on the second (3 s), and its message is delivered through Exim's
/// ACLs; an allowlisted sender is never held, even while its DNS never answers.
fn defaults_hold_first_contact(attach: Attach) {
    defaults_hold_first_contact_on(&bed("eh", attach));
}

fn defaults_hold_first_contact_on(b: &Testbed) {
    let d = b.daemon(Tweaks::default());
    // Allowed before it is ever seen: its first SYN passes at once, though its DNS would
    // never answer (a hold would last hold_max).
    d.cli_ok(&["allow", SLOW_DNS]);
    first_syn_passes(b, SLOW_DNS);
    for ip in [SBL, XBL6] {
        refused_smtp(b, ip, &format!("hold-listed-{}", ip.replace(':', "-")));
        assert_eq!(d.verdict(ip).as_deref(), Some("drop"));
        assert_eq!(
            b.exim.lines_since(0, ip),
            Vec::<String>::new(),
            "Exim saw {ip}"
        );
    }
    for ip in [CLEAN, CLEAN6] {
        let t = Instant::now();
        connects(b, ip, 25);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{ip}: the first connection took {took:?}, not one SYN retransmit"
        );
        // Its pass is cached: later connections are not held.
        first_syn_passes(b, ip);
        let tag = format!("hold-clean-{}", ip.replace(':', "-"));
        let mark = b.exim.mark();
        accepted(b, ip, &tag);
        reached_exim(b, mark, ip, &tag);
    }
    assert!(d.counter("held") >= 4, "{}", d.cli_ok(&["stats"]));
    // DNS that never answers (allowed no more): the hold ends, at the latest after
    // hold_max (3 s), and the sender gets in on a SYN retransmit: hold never turns a DNS
    // outage into refused mail.
    d.cli_ok(&["unallow", SLOW_DNS]);
    let r = accepted(b, SLOW_DNS, "hold-slow-dns");
    // In on the retransmit 7 s after the first SYN at the latest (the next is at 15 s).
    assert!(
        r.elapsed < Duration::from_secs(15),
        "first message took {:?}",
        r.elapsed
    );
    assert_eq!(verdict_entry(&d, SLOW_DNS)["source"], "tempfail");
}

/// The built-in defaults (`first_contact = "hold"`, explained refusals at their default,
/// to FCrDNS senders) behind a Postfix that asks the policy service with the README's
/// snippets: a listed sender without forward-confirmed rDNS never reaches Postfix, though
/// Postfix asks; a clean sender's first connection completes on TCP's first SYN retransmit
/// and its message is delivered; an allowlisted sender is never held.
fn postfix_under_the_defaults(attach: Attach) {
    let b = Testbed::asking("ed", attach);
    let d = b.daemon(Tweaks {
        // The built-in window, written out (the bed turns explanations off otherwise).
        policy: "explain_every = \"4h\"".into(),
        ..Tweaks::default()
    });
    let pf = b.postfix.as_ref().unwrap().log();
    d.cli_ok(&["allow", NO_PTR]);
    // Not held: no SYN counted as held (a held one would also cost the mail a retransmit,
    // a second, but how long a whole session takes depends on how busy the machine is).
    let held = d.counter("held");
    let r = b.mail_postfix(NO_PTR, "pf-defaults-allowed", SWAKS_OK);
    assert!(r.accepted, "{}\n{}", r.transcript, pf.text());
    assert_eq!(
        d.counter("held"),
        held,
        "an allowlisted sender was held: {:?}",
        r.elapsed
    );
    let t = Instant::now();
    let r = b.mail_postfix(CLEAN, "pf-defaults-clean", SWAKS_OK);
    assert!(r.accepted, "{}\n{}", r.transcript, pf.text());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "the clean first contact took {took:?}, not one SYN retransmit"
    );
    // Postfix has asked (for the clean sender): explanations are on, but not for a sender
    // without forward-confirmed rDNS.
    let mark = pf.mark();
    for ip in [SBL, XBL6] {
        let r = b.mail_postfix(ip, "pf-defaults-listed", SWAKS_REFUSED);
        assert!(r.connect_failed(), "{ip}: {}", r.transcript);
        assert_eq!(d.verdict(ip).as_deref(), Some("drop"));
        let r = b.mail_postfix(ip, "pf-defaults-listed-again", SWAKS_REFUSED);
        assert!(r.connect_failed(), "{ip}: {}", r.transcript);
        assert_eq!(
            pf.lines_since(mark, ip),
            Vec::<String>::new(),
            "Postfix saw {ip}"
        );
    }
    assert_eq!(d.counter("explained"), 0, "{}", d.cli_ok(&["stats"]));
}

/// The explain window of the asking scenarios: long enough to prove the SYNs inside it are
/// dropped (two refusals take ~5 s), short enough to wait out.
const EXPLAIN: Duration = Duration::from_secs(8);

/// First contact through the MTA's question alone: the question starts the evaluation (no
/// SYN needed) and waits for it, so the answer is the verdict.
#[track_caller]
fn asked_first(d: &MxDaemon, ip: &str, want: &str) {
    let a = d.query(ip);
    assert!(a.starts_with(&format!("action={want} ")), "{ip}: {a}");
    assert_eq!(d.wait_verdict(ip, VERDICT_WITHIN), want, "{ip}");
}

fn explain_tweaks() -> Tweaks {
    Tweaks {
        policy: format!("explain_every = \"{}s\"", EXPLAIN.as_secs()),
        ..Default::default()
    }
}

/// Keeps the MTA asking (a question about a clean sender each second, as an MTA with mail
/// coming in does) until `ip`'s next connection is the explained one again.
#[track_caller]
fn asking_until_due(d: &MxDaemon, ip: &str) {
    let deadline = Instant::now() + EXPLAIN + Duration::from_secs(5);
    loop {
        d.query(CLEAN);
        let check = d.cli_ok(&["check", ip, "--config", d.config.to_str().unwrap()]);
        if check.contains("next explained connection: its next one") {
            return;
        }
        assert!(Instant::now() < deadline, "never due again: {check}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The explained connection of a listed mail server ([`SBL_MTA`], forward-confirmed rDNS)
/// through the MTA on `port`: its SYN reaches the MTA, which refuses the user's recipient at
/// RCPT with a reply starting `refusal` and naming zone, code and text, and accepts mail to
/// postmaster (RFC 5321), which is delivered.
#[track_caller]
fn explained_at_rcpt(b: &Testbed, port: u16, refusal: &str) {
    let server = std::net::SocketAddr::new(Testbed::server_for(SBL_MTA), port);
    let src = SBL_MTA.parse().unwrap();
    let to = |l: &str| format!("RCPT TO:<{l}@{MAIL_DOMAIN}>\r\n");
    let (user, postmaster) = (to(RECIPIENT), to("postmaster"));
    let got = b
        .wire
        .client
        .enter(|| {
            mxscreen_tests::smtp::replies(
                src,
                server,
                Duration::from_secs(5),
                &[
                    "EHLO mail25.clients.test\r\n",
                    "MAIL FROM:<ops@clients.test>\r\n",
                    &user,
                    &postmaster,
                    "DATA\r\n",
                    "Subject: listed?\r\n\r\nwhy are we listed\r\n.\r\n",
                ],
            )
        })
        .unwrap_or_else(|| panic!("{SBL_MTA}: the explained connection never reached port {port}"));
    let rcpt = &got[3];
    assert!(
        rcpt.starts_with(refusal)
            && rcpt.contains("zen.test")
            && rcpt.contains("127.0.0.2")
            && rcpt.contains("SBL-like: spam source"),
        "the user's RCPT should be refused with the listing: {got:#?}"
    );
    assert!(got[4].starts_with("250"), "postmaster refused: {got:#?}");
    assert!(
        got[6].starts_with("250"),
        "mail to postmaster not taken: {got:#?}"
    );
}

/// The server's error reply as one line: swaks shows it as `<** 554-...` continuation lines
/// (Exim wraps long messages and repeats the codes on each line), joined here as one
/// `554 5.7.1 ...` with the later lines' codes left out.
fn error_reply(transcript: &str) -> String {
    let parts: Vec<(&str, &str)> = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("<** "))
        .filter_map(|l| Some((l.get(..3)?, l.get(4..)?)))
        .collect();
    let Some((code, first)) = parts.first() else {
        return String::new();
    };
    let enhanced = first.split_whitespace().next().unwrap_or("");
    let mut out = format!("{code} {first}");
    for (_, t) in &parts[1..] {
        out.push(' ');
        out.push_str(t.strip_prefix(enhanced).map_or(*t, str::trim_start));
    }
    out
}

/// A road-warrior on a listed address (a mobile carrier's shared address, XBL-listed): its
/// authenticated submission on `submission` goes in — the snippets ask mxscreen about port
/// 25 only, and the datapath does not screen submission — while `smtp` refuses the same
/// address (a 554 from the MTA for its explained connection, or its SYN dropped). The MTA
/// logged the message as authenticated (`needle`).
#[track_caller]
fn road_warrior_submits(b: &Testbed, d: &MxDaemon, ports: (u16, u16), log: &MtaLog, needle: &str) {
    let (smtp, submission) = ports;
    asked_first(d, XBL, "drop");
    let mark = log.mark();
    let r = b.submit(
        XBL,
        submission,
        &format!("road-warrior-{submission}"),
        SWAKS_OK,
    );
    assert!(
        r.accepted,
        "an authenticated submission on {submission} from listed {XBL} was refused:\n{}\n{}",
        r.transcript,
        log.text()
    );
    log.wait_line(mark, XBL, needle, LOG_WITHIN);
    let r = b.mail_to_port(XBL, smtp, &format!("road-warrior-{smtp}"), SWAKS_OK);
    assert!(
        !r.accepted,
        "port {smtp} let listed {XBL} in:\n{}",
        r.transcript
    );
}

/// A peer blocked by hand while its connection was already open (its SYN went through
/// before the block; the MTA is still resolving its PTR, which takes a second for
/// SLOW_DNS) is refused by the README's snippet when the MTA asks: `block` means a 554
/// with `want` in it, to Exim and Postfix alike. Unblocks it again.
#[track_caller]
fn blocked_while_connecting(b: &Testbed, d: &MxDaemon, port: u16, want: &str) {
    std::thread::scope(|s| {
        let sending =
            s.spawn(|| b.mail_to_port(SLOW_DNS, port, &format!("blocked-{port}"), SWAKS_OK));
        b.wait_established(SLOW_DNS, port, Duration::from_secs(5));
        d.cli_ok(&["block", SLOW_DNS, "--reason", "e2e"]);
        let r = sending.join().expect("swaks thread");
        let reply = error_reply(&r.transcript);
        assert!(
            !r.accepted && reply.starts_with('5') && reply.contains(want),
            "port {port}: a peer blocked mid-connection should be refused with {want:?}: {reply}\n{}",
            r.transcript
        );
    });
    d.cli_ok(&["unblock", SLOW_DNS]);
}

/// Explained refusals with the README's Exim snippets, word for word, under the defaults
/// (`first_contact = "hold"`, `explain_to = "fcrdns"`): before Exim has asked anything a
/// listed mail server's connections are dropped at SYN; once it asks, the first connection
/// after the verdict reaches Exim, which refuses it at RCPT with the listing and takes mail
/// to postmaster; within the window its connections are dropped at SYN (Exim logs nothing);
/// after the window (Exim still asking) it is explained again. A listed sender without
/// forward-confirmed rDNS never reaches Exim. A peer blocked by hand is refused as such, the
/// limit class gets in at once (the kernel paces it; the snippet adds no `delay`), a clean
/// sender goes straight in, a road-warrior on a listed address submits on 587, and with
/// mxscreen stopped the fail string lets mail in.
fn exim_asks_mxscreen_and_explains_refusals(attach: Attach) {
    let b = Testbed::asking("ex", attach);
    let mut d = b.daemon(explain_tweaks());
    // No MTA has asked yet: a listed mail server is dropped without a word.
    refused_smtp(&b, SBL_MTA, "ask-before-any-question");
    assert_eq!(d.wait_verdict(SBL_MTA, VERDICT_WITHIN), "drop");
    refused(&b, SBL_MTA);
    assert_eq!(d.counter("explained"), 0, "{}", d.cli_ok(&["stats"]));
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("off: no MTA has asked"), "{status}");

    // Exim asks (its connect ACL, for a clean sender's mail): explanations are on.
    accepted(&b, CLEAN, "ask-clean");
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("explained:     on:"), "{status}");
    let mark = b.exim.mark();
    explained_at_rcpt(
        &b,
        25,
        "550 5.7.1 Client [192.0.2.25] listed in zen.test (127.0.0.2)",
    );
    let line = b.exim.wait_line(mark, SBL_MTA, "rejected RCPT", LOG_WITHIN);
    assert!(
        line.contains("mxscreen: listed in zen.test (127.0.0.2 SBL)"),
        "{line}"
    );
    // The explained session's last line, before the window's are counted.
    b.exim
        .wait_line(mark, SBL_MTA, "closed by QUIT", LOG_WITHIN);
    assert_eq!(d.counter("explained"), 1, "{}", d.cli_ok(&["stats"]));
    let mark = b.exim.mark();
    refused(&b, SBL_MTA);
    refused_smtp(&b, SBL_MTA, "ask-within-window");
    assert_eq!(b.exim.lines_since(mark, SBL_MTA), Vec::<String>::new());
    // No forward-confirmed rDNS: never explained, Exim never sees it.
    let mark = b.exim.mark();
    refused_smtp(&b, SBL, "ask-no-fcrdns");
    assert_eq!(d.wait_verdict(SBL, VERDICT_WITHIN), "drop");
    refused(&b, SBL);
    assert_eq!(b.exim.lines_since(mark, SBL), Vec::<String>::new());

    asking_until_due(&d, SBL_MTA);
    explained_at_rcpt(&b, 25, "550 5.7.1 ");
    assert_eq!(d.counter("explained"), 2);

    road_warrior_submits(
        &b,
        &d,
        (25, SUBMISSION_PORT),
        &b.exim.log(),
        "A=plain:roadwarrior",
    );
    blocked_while_connecting(
        &b,
        &d,
        25,
        &format!("Client [{SLOW_DNS}] blocked by local policy"),
    );

    asked_first(&d, PBL, "limit");
    let r = accepted(&b, PBL, "ask-limit");
    assert!(
        r.elapsed < Duration::from_secs(5),
        "delayed: {:?}",
        r.elapsed
    );

    asked_first(&d, CLEAN_B, "pass");
    accepted(&b, CLEAN_B, "ask-clean-b");

    d.stop();
    let mark = b.exim.mark();
    accepted(&b, SBL_MTA, "ask-mxscreen-stopped");
    b.exim.wait_line(mark, SBL_MTA, TAG_ACL, LOG_WITHIN);
}

/// The README's snippets word for word, with nothing but them between a listed sender and
/// the MTA's acceptance (the test MTAs' own DNSBL checks only tag the log), refuse a listed
/// sender's first contact when the DNSBL answers after the connect ACL asked: under
/// `first_contact = "pass"` its first SYN reaches Exim and Postfix while mxscreen's
/// resolver takes 700 ms per answer; the question waits for the evaluation under way, and
/// the sender is refused at RCPT with the listing.
fn snippets_refuse_a_first_contact_with_a_slow_dnsbl(attach: Attach) {
    let b = Testbed::asking("es", attach);
    let slow = b.wire.server.enter(|| {
        mxscreen_tests::dns::Forwarder::start(mxscreen_tests::dns::Mode::Forward {
            upstream: mxscreen_tests::mta::RESOLVER,
            delay: Duration::from_millis(700),
        })
    });
    let d = b.daemon(Tweaks {
        nameserver: Some(slow.addr),
        ..Tweaks::first_contact_pass()
    });
    let mark = b.exim.mark();
    let r = b.mail_within(SBL, "slow-dnsbl-exim", SWAKS_OK);
    let reply = error_reply(&r.transcript);
    assert!(
        !r.accepted
            && reply.starts_with(&format!(
                "550 5.7.1 Client [{SBL}] listed in zen.test (127.0.0.2)"
            )),
        "a listed first contact should be refused at RCPT: {reply}\n{}",
        r.transcript
    );
    b.exim.wait_line(mark, SBL, "rejected RCPT", LOG_WITHIN);
    let pf = b.postfix.as_ref().unwrap().log();
    let mark = pf.mark();
    let r = b.mail_postfix(XBL, "slow-dnsbl-postfix", SWAKS_OK);
    assert!(
        !r.accepted
            && r.transcript.contains("554 5.7.1")
            && r.transcript
                .contains("blocked using zen.test, code 127.0.0.4"),
        "{}\n{}",
        r.transcript,
        pf.text()
    );
    pf.wait_line(mark, XBL, "reject: RCPT from", LOG_WITHIN);
    assert_eq!(
        d.counter("explained"),
        0,
        "first contacts, not explanations"
    );
}

/// A real Postfix, chrooted as Debian ships it, with the README's main.cf and master.cf
/// snippets and the policy service on loopback TCP: the explained connection of a listed
/// sender is refused with a 554 naming zone and code (the client sees it, Postfix logs it),
/// the next one is dropped at SYN; a peer blocked by hand is refused as such; the limit
/// class and a clean sender get DUNNO and are accepted; a road-warrior on a listed address
/// submits on the submission port; with mxscreen stopped, `default_action=DUNNO` lets mail
/// in.
fn postfix_asks_the_policy_service(attach: Attach) {
    let b = Testbed::asking("ef", attach);
    let mut d = b.daemon(explain_tweaks());
    let pf = b.postfix.as_ref().unwrap().log();
    let via_postfix = |ip: &str, tag: &str| {
        let r = b.mail_postfix(ip, tag, SWAKS_OK);
        assert!(r.accepted, "{ip}: {tag}:\n{}\n{}", r.transcript, pf.text());
        r
    };
    // Postfix asks (its policy request at RCPT, for a clean sender): explanations are on.
    via_postfix(CLEAN, "pf-clean-first");
    let mark = pf.mark();
    explained_at_rcpt(&b, POSTFIX_PORT, "554 5.7.1");
    let why = "blocked using zen.test, code 127.0.0.2 (SBL); SBL-like: spam source";
    let line = pf.wait_line(mark, SBL_MTA, "reject: RCPT from", LOG_WITHIN);
    assert!(line.contains(why), "{line}");
    // The explained session's last line, before the window's are counted.
    pf.wait_line(mark, SBL_MTA, "disconnect from", LOG_WITHIN);
    let mark = pf.mark();
    let r = b.mail_postfix(SBL_MTA, "pf-within-window", SWAKS_REFUSED);
    assert!(r.connect_failed(), "{}", r.transcript);
    assert_eq!(pf.lines_since(mark, SBL_MTA), Vec::<String>::new());
    // No forward-confirmed rDNS: never explained, Postfix never sees it.
    let mark = pf.mark();
    let r = b.mail_postfix(SBL, "pf-no-fcrdns", SWAKS_REFUSED);
    assert!(r.connect_failed(), "{}", r.transcript);
    assert_eq!(pf.lines_since(mark, SBL), Vec::<String>::new());

    road_warrior_submits(
        &b,
        &d,
        (POSTFIX_PORT, POSTFIX_SUBMISSION_PORT),
        &pf,
        "sasl_username=roadwarrior",
    );
    blocked_while_connecting(
        &b,
        &d,
        POSTFIX_PORT,
        &format!("Service unavailable; Client host [{SLOW_DNS}] blocked by local policy"),
    );

    asked_first(&d, PBL, "limit");
    via_postfix(PBL, "pf-limit");
    asked_first(&d, CLEAN_B, "pass");
    via_postfix(CLEAN_B, "pf-clean");
    let log = pf.text();
    for ip in [PBL, CLEAN, CLEAN_B] {
        assert!(
            !pf.lines_since(0, ip).iter().any(|l| l.contains("reject")),
            "{log}"
        );
    }

    d.stop();
    via_postfix(SBL_MTA, "pf-mxscreen-stopped");
}

/// The examples the package ships carry the README's MTA snippets word for word, so what an
/// operator copies from /usr/share/doc/mxscreen/examples is what this suite runs.
#[test]
fn the_packaged_examples_carry_the_readme_snippets() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples");
    for (snippet, file) in [
        ("exim-main", "exim4-acl.conf"),
        ("exim-acl", "exim4-acl.conf"),
        ("exim-rcpt", "exim4-acl.conf"),
        ("postfix-main", "postfix-main.cf"),
        ("postfix-master", "postfix-master.cf"),
    ] {
        let text = std::fs::read_to_string(examples.join(file)).expect(file);
        let want = mxscreen_tests::readme::snippet(snippet);
        assert!(
            text.contains(&want),
            "{file} lacks the README's {snippet}:\n{want}"
        );
    }
    let toml = mxscreen_tests::readme::snippet("postfix-mxscreen");
    let main_cf = std::fs::read_to_string(examples.join("postfix-main.cf")).unwrap();
    for line in toml.lines() {
        assert!(
            main_cf.contains(&format!("#   {line}")),
            "postfix-main.cf lacks {line:?}"
        );
    }
}

/// An unprivileged LXC container (the MTA host's network namespace owned by a user namespace
/// of its own, the daemon without CAP_BPF) and every datapath key at its default: `auto`
/// picks nftables, says why in its start line, `status` and `status --json`, and screens the
/// container's Exim under the defaults, as [`defaults_hold_first_contact`] checks.
#[test]
fn an_unprivileged_container_gets_nftables_and_says_why() {
    let b = bed("eu", Attach::Container);
    let d = b.daemon(Tweaks::default());
    let status: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["status", "--json"])).expect("status --json");
    let backend = &status["backend"];
    assert_eq!(backend["name"], "nftables", "{status:#}");
    assert_eq!(backend["requested"], "auto", "{status:#}");
    let why = backend["ebpf_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("not permitted") && !why.contains('\n'),
        "the kernel's refusal, in one line: {status:#}"
    );
    let text = d.cli_ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("backend:") && l.contains("nftables") && l.contains(why)),
        "{text}"
    );
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("screening with nftables") && l.contains(why)),
        "no start line saying why:\n{log}"
    );
    drop(d);
    defaults_hold_first_contact_on(&b);
}

macro_rules! in_every_datapath {
    ($($scenario:ident),* $(,)?) => {
        mod xdp {
            $( #[test] fn $scenario() { super::$scenario(super::Attach::Xdp) } )*
        }
        mod tc {
            $( #[test] fn $scenario() { super::$scenario(super::Attach::Tc) } )*
        }
        mod nftables {
            $( #[test] fn $scenario() { super::$scenario(super::Attach::Nftables) } )*
        }
    };
}

in_every_datapath!(
    listed_senders_never_reach_exim,
    clean_senders_are_untouched_and_meet_exims_acls,
    reverse_dns_counts_by_its_weights,
    dnswl_listing_outweighs_a_dnsbl_listing,
    dnsbl_error_code_is_not_a_listing,
    dns_timeout_fails_open_with_a_short_verdict,
    limit_class_is_rate_limited_at_syn,
    operator_commands_act_on_the_next_syn,
    kill9_fails_open_and_restart_restores_blocks,
    observe_mode_refuses_nothing_and_logs_verdicts,
    observe_then_enforce_with_sighup,
    defaults_hold_first_contact,
    exim_asks_mxscreen_and_explains_refusals,
    postfix_asks_the_policy_service,
    snippets_refuse_a_first_contact_with_a_slow_dnsbl,
    postfix_under_the_defaults,
);
