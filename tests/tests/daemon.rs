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
    metrics::{samples, scrape},
    netns::{SERVER_IFACE, SERVER_V4},
};

const LISTED: &str = "192.0.2.20";
const LISTED_V6: &str = "2001:db8:1::20";
const CLEAN: &str = "192.0.2.21";
const LATER_LISTED: &str = "192.0.2.22";
/// Listed by forge.test with a TXT record that tries to read as log fields of its own.
const FORGER: &str = "192.0.2.23";
const FORGED_TXT: &str = "spam x\" action=\"pass\" ip=6.6.6.6 y=\"";
const VERDICT_WITHIN: Duration = Duration::from_secs(10);

/// Client and server namespaces; rbldnsd (zone bl.test lists LISTED and LISTED_V6 as
/// 127.0.0.2, zone later.test lists LATER_LISTED) and listeners on :25 and :2525 run in
/// the server namespace, where the daemon will run.
fn bed(tag: &str) -> Bed {
    Bed::new(
        tag,
        &[LISTED, CLEAN, LATER_LISTED, LISTED_V6, FORGER],
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
            RblZone::new(
                "forge.test",
                Duration::from_secs(900),
                vec![listing(FORGER, "127.0.0.2", FORGED_TXT)],
            ),
        ],
    )
}

/// Reputation sections: one DNSBL zone, no rDNS (no reverse zones here), nothing
/// pre-allowed (the test addresses are documentation ranges anyway), and no explained
/// refusals (no MTA here asks mxscreen: a dropped peer is refused at every SYN).
fn sections(rbl: SocketAddr, zone: &str) -> String {
    format!(
        "[resolver]\nnameservers = [\"{rbl}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"0s\"\n\n[lists]\nallow_defaults = false\n\n[[dnsbl]]\nzone = \"{zone}\"\nweight = 10\n"
    )
}

/// `first_contact = "pass"`: these tests are about what the daemon does with a peer's
/// verdict, and start from its first connection passing; first contact under the defaults
/// (hold) has its own test ([`a_spoofed_flood_spends_no_budget_real_senders_need`], and e2e).
const FIRST_CONTACT_PASS: &str = "first_contact = \"pass\"";

fn spec(b: &Bed, zone: &str) -> Spec {
    Spec {
        datapath: FIRST_CONTACT_PASS.into(),
        sections: sections(b.rbl_addr, zone),
        ..Default::default()
    }
}

/// The backend that refuses SYNs: the behaviours below run under both.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Ebpf,
    Nftables,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Nftables => "nftables",
        }
    }

    /// The test bed, its namespaces tagged apart per backend (`tag`, `tag` + `n`).
    fn bed(self, tag: &str) -> Bed {
        match self {
            Self::Ebpf => bed(tag),
            Self::Nftables => bed(&format!("{tag}n")),
        }
    }

    /// [`spec`] with `datapath.backend` set to this backend.
    fn spec(self, b: &Bed, zone: &str) -> Spec {
        let mut s = spec(b, zone);
        s.datapath = format!("{}\nbackend = \"{}\"", s.datapath, self.name());
        s
    }

    /// After a `kill -9`, mail flows: at once with eBPF (the program goes with the
    /// process), within the heartbeat's 5 s with nftables (the rules stay; their liveness
    /// element times out).
    #[track_caller]
    fn flows_after_kill(self, b: &Bed, src: &str, dst: SocketAddr) {
        if self == Self::Ebpf {
            return b.connects(src, dst);
        }
        flows_within(b, src, dst, Duration::from_secs(8), "the daemon died");
    }
}

/// Mail from `src` flows again within `within` of now (`since`: what happened now).
#[track_caller]
fn flows_within(b: &Bed, src: &str, dst: SocketAddr, within: Duration, since: &str) {
    let deadline = Instant::now() + within;
    while b
        .wire
        .connect(src, dst, Duration::from_millis(800))
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{src} -> {dst}: still refused {within:?} after {since}"
        );
    }
}

/// `status --json` says which backend screens.
fn screens_with(d: &MxDaemon, backend: Backend) {
    let s: serde_json::Value = serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(s["backend"]["name"], backend.name(), "{s}");
}

#[test]
fn new_peers_are_resolved_into_verdicts_the_datapath_enforces() {
    resolved_into_verdicts(Backend::Ebpf);
}

#[test]
fn nftables_enforces_verdicts_the_daemon_resolves() {
    resolved_into_verdicts(Backend::Nftables);
}

fn resolved_into_verdicts(backend: Backend) {
    let b = backend.bed("dv");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, backend.spec(&b, "bl.test"));
    screens_with(&d, backend);
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
    // `check` shows what the daemon holds, and which of it decides the SYNs.
    let check = || d.cli_ok(&["check", LISTED, "--config", d.config.to_str().unwrap()]);
    let out = check();
    assert!(
        out.contains("daemon holds:")
            && out.contains(&format!(
                "in force: its SYNs are dropped (verdict {LISTED}/32, reputation)"
            )),
        "{out}"
    );
    // Without `-c`, `check` explains by the config the daemon runs with (its zone lists
    // LISTED), not by the default file's or the built-in defaults.
    let by_daemon = d.cli_ok(&["check", LISTED]);
    let headline = |s: &str| s.split(" (source").next().unwrap().to_owned();
    assert_eq!(headline(&by_daemon), headline(&out), "{by_daemon}");
    assert!(by_daemon.contains("bl.test"), "{by_daemon}");
    let check_json = || -> serde_json::Value {
        serde_json::from_str(&d.cli_ok(&[
            "check",
            LISTED,
            "--json",
            "--config",
            d.config.to_str().unwrap(),
        ]))
        .unwrap()
    };
    // With the SYNs its verdict refused.
    let json = check_json();
    let hits = json["daemon"]["verdict"]["hits"].as_u64().unwrap_or(0);
    assert!(hits >= 1, "{json}");
    // An allow entry outranks the verdict, which stays: `check` says the allow decides, and
    // so does the wire.
    d.cli_ok(&["allow", LISTED]);
    let out = check();
    assert!(
        out.contains(&format!(
            "in force: its SYNs are passed (allowed {LISTED}/32, manual)"
        )) && out.contains("verdict "),
        "{out}"
    );
    let json = check_json();
    assert_eq!(json["daemon"]["in_force"]["list"], "allowed", "{json}");
    b.connects(LISTED, smtp4());
}

#[test]
fn an_interface_deleted_and_made_again_is_screened_again() {
    interface_made_again(Backend::Ebpf);
}

#[test]
fn nftables_an_interface_deleted_and_made_again_is_screened_again() {
    interface_made_again(Backend::Nftables);
}

/// A screened interface deleted (`status` says so, and that nothing is screened there) and
/// made again under its name (a VLAN's `ifdown`/`ifup`, a container's veth): within a
/// heartbeat or two the daemon screens it again, with what it held.
fn interface_made_again(backend: Backend) {
    let b = backend.bed("di");
    let mut spec = backend.spec(&b, "bl.test");
    spec.sections
        .push_str("\n[metrics]\nlisten = \"127.0.0.1:9725\"\n");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    // `mxscreen_attached_info` of the interface: 1 screened, 0 gone.
    let attached = || {
        let text = scrape(&b.wire.server, "127.0.0.1:9725".parse().unwrap());
        let series: Vec<(String, f64)> = samples(&text)
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(&format!(
                    "mxscreen_attached_info{{interface=\"{SERVER_IFACE}\""
                ))
            })
            .collect();
        assert_eq!(series.len(), 1, "{text}");
        series[0].1
    };
    assert_eq!(attached(), 1.0);
    d.cli_ok(&["block", CLEAN]);
    b.refused(CLEAN, smtp4());
    let status =
        || -> serde_json::Value { serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap() };
    b.wire.unplug();
    // The metrics first: `status` would publish them itself.
    d.wait_for("attached_info 0", Duration::from_secs(5), || {
        attached() == 0.0
    });
    let s = status();
    assert!(s["interfaces"][0]["down"].is_string(), "{s}");
    assert!(
        s["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with(&format!("{SERVER_IFACE}: nothing is screened there"))),
        "{s}"
    );
    b.wire.plug();
    for a in [CLEAN, LATER_LISTED] {
        b.wire.add_client_addr(a);
    }
    let again = if backend == Backend::Ebpf {
        "attached again"
    } else {
        "hooked again"
    };
    d.wait_for("attached_info 1 again", Duration::from_secs(5), || {
        attached() == 1.0
    });
    assert!(d.log_text().contains(again));
    assert!(status()["interfaces"][0]["down"].is_null());
    // Neighbours first (a port never screened), so a timeout below is a dropped SYN.
    b.connects(CLEAN, other4());
    b.refused(CLEAN, smtp4());
    b.connects(LATER_LISTED, smtp4());
}

#[test]
fn manual_block_unblock_allow_round_trip_and_survive_restart() {
    block_round_trip(Backend::Ebpf);
}

#[test]
fn nftables_block_unblock_allow_round_trip_and_survive_restart() {
    block_round_trip(Backend::Nftables);
}

fn block_round_trip(backend: Backend) {
    let b = backend.bed("dm");
    let mut d = MxDaemon::start(&b.wire.server, SERVER_IFACE, backend.spec(&b, "bl.test"));
    screens_with(&d, backend);
    b.connects(CLEAN, smtp4());
    let out = d.cli_ok(&["block", CLEAN, "--for", "1h", "--reason", "testing"]);
    assert!(
        out.starts_with(&format!("blocked {CLEAN}/32 for 1h (testing)")),
        "{out}"
    );
    b.refused(CLEAN, smtp4());
    b.connects(CLEAN, other4());
    // An expiry past what an entry can hold is bad input, refused in one line (the daemon
    // once overflowed adding it to the clock, and a debug build panicked).
    for huge in ["18446744073709551615s", "99999999999d", "36501d"] {
        let out = d.cli(&["block", "203.0.113.3", "--for", huge]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() == Some(2) && err.contains("longer than an entry can last"),
            "block --for {huge}: {err}"
        );
    }
    d.cli_ok(&["status"]);
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

    // kill -9: the kernel detaches the program with the daemon (nftables: the rules stop
    // dropping within 5 s), mail flows; restart: blocked.
    d.kill9();
    backend.flows_after_kill(&b, CLEAN, smtp4());
    d.restart();
    b.refused(CLEAN, smtp4());

    // Hung (SIGSTOP): a pause shorter than the heartbeat's 5 s still refuses (a busy moment
    // must not open the gate); then its last beat goes stale and every SYN passes (eBPF:
    // the program's stale check; nftables: the liveness element times out). Resumed
    // (SIGCONT): its next beat, within a second, refuses again.
    d.freeze(true);
    let stopped = Instant::now();
    b.refused(CLEAN, smtp4());
    flows_within(&b, CLEAN, smtp4(), Duration::from_secs(8), "SIGSTOP");
    eprintln!(
        "{} passes {:?} after SIGSTOP",
        backend.name(),
        stopped.elapsed()
    );
    d.freeze(false);
    let resumed = Instant::now();
    while b
        .wire
        .connect(CLEAN, smtp4(), REFUSED_WITHIN)
        .is_ok_and(|()| resumed.elapsed() < Duration::from_secs(6))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    b.refused(CLEAN, smtp4());
    eprintln!(
        "{} refuses again {:?} after SIGCONT",
        backend.name(),
        resumed.elapsed()
    );

    // A firewall reload (`nft flush ruleset`, the first line of nftables.conf) deletes the
    // nftables table: the daemon writes it again at its next heartbeat, the block with it.
    if backend == Backend::Nftables {
        b.wire.server.nft(&["flush", "ruleset"]);
        let flushed = Instant::now();
        while b
            .wire
            .connect(CLEAN, smtp4(), REFUSED_WITHIN)
            .is_ok_and(|()| flushed.elapsed() < Duration::from_secs(5))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        b.refused(CLEAN, smtp4());
        eprintln!(
            "nftables refuses again {:?} after the flush",
            flushed.elapsed()
        );
        let log = d.log_text();
        assert!(log.contains("writing it again"), "{log}");
        let status = d.cli_ok(&["status"]);
        assert!(
            status.lines().any(|l| l.starts_with("warning")
                && l.contains("the nftables table was deleted by someone else 1 time(s)")),
            "{status}"
        );
    }

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

    // An IPv4-mapped address (as dual-stack MTAs and Dovecot log IPv4 peers) is its IPv4
    // address: blocked, the IPv4 sender is refused; a mapped prefix shorter than /96 is
    // no IPv4 prefix and is refused with the reason.
    let mapped = format!("::ffff:{CLEAN}");
    let out = d.cli_ok(&["block", &mapped, "--reason", "from a dual-stack log"]);
    assert!(out.starts_with(&format!("blocked {CLEAN}/32")), "{out}");
    b.refused(CLEAN, smtp4());
    let out = d.cli_ok(&["unblock", &mapped]);
    assert!(out.starts_with(&format!("unblocked {CLEAN}/32")), "{out}");
    b.connects(CLEAN, smtp4());
    let out = d.cli(&["block", "::ffff:192.0.2.0/80"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("shorter than /96"),
        "{}",
        text(&out)
    );

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
    s.datapath = format!("mode = \"tc\"\n{FIRST_CONTACT_PASS}");
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

/// The nftables backend killed, the eBPF one started at once (a crash and a restart on the
/// other backend): the killed run's table is still beating at that start, so it is left;
/// once its heartbeat has run out it is removed, not kept for good.
#[test]
fn a_table_left_beating_by_a_killed_nftables_run_is_removed_once_it_stops() {
    let b = bed("dn");
    let mut s = spec(&b, "bl.test");
    s.datapath = format!("backend = \"nftables\"\n{FIRST_CONTACT_PASS}");
    let mut d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    d.cli_ok(&["block", CLEAN]);
    b.refused(CLEAN, smtp4());
    let tables = || b.wire.server.nft(&["list", "tables"]);
    d.kill9();
    let config = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        config.replace("backend = \"nftables\"", "backend = \"ebpf\""),
    )
    .unwrap();
    let from = d.log_text().len();
    d.restart();
    b.refused(CLEAN, smtp4());
    assert!(
        d.log_text()[from..].contains("nftables table in this network namespace is beating"),
        "{}",
        d.log_text()
    );
    d.wait_log(
        "removed the nftables table a run killed just before this start left",
        from,
        Duration::from_secs(10),
    );
    assert!(!tables().contains("mxscreen"), "{}", tables());
    b.refused(CLEAN, smtp4());
}

/// A tmpfs of its own for the state file, unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        mxscreen_tests::netns::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=64k",
                "mxs-test",
                dir.path().to_str().unwrap(),
            ],
        );
        Self(dir)
    }

    /// Fills the filesystem to the last byte.
    fn fill(&self) {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.0.path().join("filler").display()))
            .output();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.path().join("filler")).unwrap();
    }

    fn remount(&self, how: &str) {
        mxscreen_tests::netns::run(
            "mount",
            &[
                "-o",
                &format!("remount,{how}"),
                self.0.path().to_str().unwrap(),
            ],
        );
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Every command is all-or-nothing. A state write that fails (full disk, read-only mount)
/// changes nothing: the command fails in one line, the maps and the daemon's memory are as
/// before, the next successful write does not carry the failed change, and a restart shows
/// the same.
#[test]
fn failed_state_writes_change_nothing() {
    const FAILS: &str = "192.0.2.31";
    const STAYS: &str = "192.0.2.32";
    const LATER: &str = "192.0.2.33";
    let b = bed("ds");
    for a in [FAILS, STAYS, LATER] {
        b.wire.add_client_addr(a);
    }
    let fs = SmallFs::new();
    let mut s = spec(&b, "bl.test");
    s.state = Some(fs.0.path().join("state.json"));
    let mut d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    let failed = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("nothing changed") && err.lines().count() == 1,
            "{}",
            text(&out)
        );
    };
    d.cli_ok(&["block", STAYS]);
    let on_disk = || std::fs::read_to_string(&d.state).unwrap();

    // Full disk: block and unblock fail and change nothing.
    fs.fill();
    failed(d.cli(&["block", FAILS]));
    b.connects(FAILS, smtp4());
    failed(d.cli(&["unblock", STAYS]));
    b.refused(STAYS, smtp4());
    assert!(d.cli_ok(&["list", "--blocked"]).contains(STAYS));
    fs.free();
    d.cli_ok(&["block", LATER]);
    assert!(!on_disk().contains(FAILS) && on_disk().contains(STAYS) && on_disk().contains(LATER));
    b.connects(FAILS, smtp4());

    // Read-only mount: the same.
    fs.remount("ro");
    failed(d.cli(&["block", FAILS]));
    failed(d.cli(&["unblock", LATER]));
    failed(d.cli(&["allow", LATER]));
    b.refused(LATER, smtp4());
    b.connects(FAILS, smtp4());
    fs.remount("rw");

    // A restart shows what the operator was told.
    d.stop();
    d.restart();
    b.refused(STAYS, smtp4());
    b.refused(LATER, smtp4());
    b.connects(FAILS, smtp4());
    let list = d.cli_ok(&["list", "--blocked"]);
    assert!(
        !list.contains(FAILS) && list.contains(STAYS) && list.contains(LATER),
        "{list}"
    );
}

/// A FIFO (or any non-regular file) as the state file is refused in one line at start
/// instead of blocking the daemon forever.
#[test]
fn a_fifo_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("state.json");
    mxscreen_tests::netns::run("mkfifo", &[fifo.to_str().unwrap()]);
    let config = dir.path().join("mxscreen.toml");
    std::fs::write(
        &config,
        format!(
            "[datapath]\ninterfaces = [\"lo\"]\n[state]\nfile = {:?}\n[control]\nsocket = {:?}\n",
            fifo.display().to_string(),
            dir.path().join("c.sock").display().to_string()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(mxscreen_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("mxscreen run blocked on a FIFO state file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("is not a regular file"), "{err}");
}

/// Started without the privileges either backend needs (a user with no capabilities, in a
/// network namespace of its own), `mxscreen run` exits at once with one line giving each
/// backend's reason and what it needs.
#[test]
fn a_start_without_privileges_says_what_each_backend_needs() {
    let ns = mxscreen_tests::netns::NetNs::new("dp");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let config = dir.path().join("mxscreen.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\nfile = {:?}\n[control]\nsocket = {:?}\n[query]\nsocket = \"\"\n",
            dir.path().join("state.json").display().to_string(),
            dir.path().join("c.sock").display().to_string()
        ),
    )
    .unwrap();
    let out = ns.enter(|| {
        as_nobody(
            &mxscreen_bin(),
            &["run", "--config", config.to_str().unwrap(), "-i", "lo"],
        )
    });
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("mxscreen: the eBPF datapath could not be used")
            && last.contains("CAP_BPF")
            && last.contains("nor nftables")
            && last.contains("needs CAP_NET_ADMIN"),
        "{err}"
    );
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
    // `status` says so too: an operator who reads only it must learn the blocks are gone.
    let status = d.cli_ok(&["status"]);
    assert!(
        status.lines().any(|l| l.starts_with("warning")
            && l.contains("the state file did not parse")
            && l.contains(&moved[0])),
        "{status}"
    );
    // Without the state file the manual block is gone (the operator restores it from the
    // moved file); the daemon runs and enforces the rest.
    b.connects(CLEAN, smtp4());
}

/// QA (stop 43): with every control slot taken, one more command failed at once ("too many
/// control connections"). It now waits up to `SLOT_WAIT` for a slot, and is told to try
/// again only if none comes free.
#[test]
fn a_command_beyond_the_control_slots_waits_for_one() {
    use mxscreen::control::server::{MAX_CONNECTIONS, SLOT_WAIT};
    let b = bed("dw");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    // Idle connections take every slot (the server closes them after its idle timeout,
    // 10 s, longer than anything below).
    let mut held: Vec<std::os::unix::net::UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| std::os::unix::net::UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Nothing comes free: told to try again after the wait, not before.
    let t = Instant::now();
    let out = d.cli(&["stats"]);
    assert!(
        !out.status.success() && text(&out).contains("try again"),
        "{}",
        text(&out)
    );
    assert!(
        t.elapsed() >= SLOT_WAIT - Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    // One comes free a second into the wait: the command is served.
    std::thread::scope(|s| {
        let call = s.spawn(|| d.cli(&["stats"]));
        std::thread::sleep(Duration::from_secs(1));
        held.pop();
        let out = call.join().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    });
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
    // With the file mode opened up, the daemon's own check of the peer's credentials is
    // what refuses (its sentence, not the client's).
    std::fs::set_permissions(
        &d.socket,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = as_nobody(
        &mxscreen_bin(),
        &[
            "block",
            "192.0.2.99",
            "--socket",
            d.socket.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "mxscreen: permission denied: the mxscreen control socket is for root only",
    );
    assert!(!d.cli_ok(&["list", "--blocked"]).contains("192.0.2.99"));
}

/// A closed stdout (`list | head -1`, `status | true`) ends every command quietly: exit 0,
/// nothing on stderr. The reader is gone before the command writes, so the write must fail.
#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let b = bed("dp");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    d.cli_ok(&["block", LISTED]);
    let socket = d.socket.to_str().unwrap();
    for args in [
        vec!["list", "--socket", socket],
        vec!["list", "--json", "--socket", socket],
        vec!["stats", "--socket", socket],
        vec!["stats", "--watch", "--socket", socket],
        vec!["status", "--socket", socket],
        vec!["status", "--json", "--socket", socket],
        vec!["config", "default"],
        vec!["check", LISTED, "--config", d.config.to_str().unwrap()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut child = std::process::Command::new(mxscreen_bin())
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{args:?} did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out));
    }
}

/// Control connections are bounded and idle ones time out: 500 clients that connect and
/// say nothing hold no more than the bound of descriptors, are closed after the idle timeout,
/// and `status` answers again within it.
#[test]
fn idle_control_connections_are_bounded_and_time_out() {
    use mxscreen::control::server::{MAX_CONNECTIONS, MAX_WAITING};
    let b = bed("di");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    let pid = d.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let idle: Vec<std::os::unix::net::UnixStream> = (0..500)
        .map(|_| std::os::unix::net::UnixStream::connect(&d.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The slots, the connections waiting for one, and a few being refused.
    let bound = before + MAX_CONNECTIONS + MAX_WAITING + 8;
    assert!(
        fds() <= bound,
        "the daemon holds {} descriptors for 500 idle clients (had {before}, bound {bound})",
        fds()
    );
    let started = Instant::now();
    while !d.cli(&["status"]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "status never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every idle client has been closed by now (EOF, or an error reply then EOF).
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut s, &mut buf).expect("closed by the daemon");
    }
    assert!(
        fds() <= before + 2,
        "descriptors left: {} (had {before})",
        fds()
    );
}

/// `block` of a prefix wider than control.widest_block_v4/v6 fails (exit 1) unless --force.
#[test]
fn too_wide_blocks_need_force() {
    let b = bed("dw");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    for net in ["198.50.0.0/15", "2001:db8::/31"] {
        let out = d.cli(&["block", net]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("add --force"),
            "{}",
            text(&out)
        );
        assert!(!d.cli_ok(&["list", "--blocked"]).contains(net));
        let out = d.cli_ok(&["block", net, "--force"]);
        assert!(out.starts_with(&format!("blocked {net}")), "{out}");
        assert!(d.cli_ok(&["list", "--blocked"]).contains(net));
    }
    // The client's own /24 is not inside either.
    b.connects(CLEAN, smtp4());
}

/// An entry that expired counts as absent in the datapath's walk, so the shorter live prefix
/// under it decides: and so it does for `check` and the MTA's query socket (which once
/// stopped at the expired one, telling the MTA `block` for a sender the kernel let through,
/// and the reverse), and for `unblock`'s advice.
#[test]
fn an_expired_entry_gives_way_to_the_shorter_prefix_under_it() {
    expired_longest(Backend::Ebpf);
}

#[test]
fn nftables_an_expired_entry_gives_way_to_the_shorter_prefix_under_it() {
    expired_longest(Backend::Nftables);
}

fn expired_longest(backend: Backend) {
    let b = backend.bed("dz");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, backend.spec(&b, "bl.test"));
    let config = d.config.to_str().unwrap().to_owned();
    let check = || d.cli_ok(&["check", CLEAN, "--config", &config]);
    // Deny: a /32 block expires under a /24 one.
    d.cli_ok(&["block", "192.0.2.0/24"]);
    d.cli_ok(&["block", CLEAN, "--for", "2s"]);
    std::thread::sleep(Duration::from_secs(3));
    b.refused(CLEAN, smtp4());
    let q = d.query(CLEAN);
    assert!(
        q.starts_with("action=block") && q.contains("source=manual"),
        "{q}"
    );
    let c = check();
    assert!(
        c.contains("in force: its SYNs are dropped (blocked 192.0.2.0/24, manual)"),
        "{c}"
    );
    // Allow: a /32 allow expires under a /28 one, over the blocks.
    d.cli_ok(&["allow", "192.0.2.16/28"]);
    d.cli_ok(&["allow", CLEAN, "--for", "2s"]);
    std::thread::sleep(Duration::from_secs(3));
    b.connects(CLEAN, smtp4());
    let q = d.query(CLEAN);
    assert!(q.starts_with("action=allow"), "{q}");
    let c = check();
    assert!(
        c.contains("in force: its SYNs are passed (allowed 192.0.2.16/28, manual)"),
        "{c}"
    );
    // The advice for a /32 the /24 covers names the /24.
    let out = d.cli(&["unblock", "192.0.2.99"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("it is covered by 192.0.2.0/24"), "{err}");
}

/// Writes `config` to the daemon's file, sends SIGHUP and returns `status` once it tells
/// of a reload.
fn reloaded_with(d: &MxDaemon, config: &str) -> String {
    std::fs::write(&d.config, config).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let started = Instant::now();
    loop {
        let s = d.cli_ok(&["status"]);
        if s.contains("reload") {
            return s;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reload that fails is shown by `status` (when, and why) until one succeeds.
#[test]
fn status_shows_a_failed_reload() {
    let b = bed("df");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "bl.test"));
    let good = std::fs::read_to_string(&d.config).unwrap();
    let bad = good.replace("[policy]\n", "[policy]\nlimit_rate = 0\n");
    assert_ne!(bad, good);
    let status = reloaded_with(&d, &bad);
    assert!(
        status.contains("the last reload")
            && status.contains("failed")
            && status.contains("limit_rate"),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
    assert_eq!(json["reload"]["failed"], 1, "{json:#}");
    assert!(
        json["reload"]["error"].as_str().unwrap().contains(":"),
        "{json:#}"
    );
    std::fs::write(&d.config, &good).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let started = Instant::now();
    loop {
        let json: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
        if json["reload"]["ok"] == 1 {
            assert!(json["reload"]["error"].is_null(), "{json:#}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{json:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!d.cli_ok(&["status"]).contains("the last reload"));

    // A key only a restart applies: named in status (text and JSON) until the file says
    // what runs again.
    let moved = good.replace("[state]\nfile = \"", "[state]\nfile = \"/nonexistent");
    assert_ne!(moved, good);
    let started = Instant::now();
    let pending = |d: &MxDaemon, ok: u64| loop {
        let json: serde_json::Value =
            serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
        if json["reload"]["ok"] == ok {
            break json["reload"]["restart_pending"].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{json:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::fs::write(&d.config, &moved).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert_eq!(pending(&d, 2), serde_json::json!(["state.file"]));
    let status = d.cli_ok(&["status"]);
    assert!(
        status.contains("applied only at a restart") && status.contains("state.file"),
        "{status}"
    );
    std::fs::write(&d.config, &good).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert_eq!(pending(&d, 3), serde_json::json!([]));
    assert!(!d.cli_ok(&["status"]).contains("applied only at a restart"));
}

/// A config that validates but cannot be applied (more list entries than the maps hold)
/// changes nothing: the reload is shown failed and the running config, entries and all,
/// stays in force.
#[test]
fn a_reload_that_cannot_be_applied_keeps_the_running_config() {
    reload_beyond_the_maps(Backend::Ebpf);
}

#[test]
fn nftables_a_reload_that_cannot_be_applied_keeps_the_running_config() {
    reload_beyond_the_maps(Backend::Nftables);
}

fn reload_beyond_the_maps(backend: Backend) {
    let b = backend.bed("dk");
    let mut s = backend.spec(&b, "bl.test");
    s.datapath.push_str("\nmaps = { deny = 16, allow = 16 }");
    s.sections = s.sections.replace(
        "[lists]\nallow_defaults = false\n",
        &format!("[lists]\nallow_defaults = false\ndeny = [\"{CLEAN}\"]\n"),
    );
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    b.refused(CLEAN, smtp4());
    // Manual entries beside the config's: `config check` counts only the config's, so a
    // file of 30 deny entries validates (the maps hold 32 of a family), but with these five
    // it does not fit.
    for i in 1..=5 {
        d.cli_ok(&["block", &format!("198.51.100.{i}")]);
    }
    let good = std::fs::read_to_string(&d.config).unwrap();
    let many: Vec<String> = (1..=30).map(|i| format!("\"203.0.113.{i}\"")).collect();
    let too_many = good.replace(
        &format!("deny = [\"{CLEAN}\"]"),
        &format!("deny = [{}]", many.join(", ")),
    );
    assert_ne!(too_many, good);
    let status = reloaded_with(&d, &too_many);
    assert!(
        status.contains("the last reload")
            && status.contains("failed")
            && status.contains("applying the reloaded config"),
        "{status}"
    );
    let blocked = d.cli_ok(&["list", "--blocked"]);
    assert!(
        blocked.contains(&format!("{CLEAN}/32"))
            && blocked.contains("198.51.100.5/32")
            && !blocked.contains("203.0.113."),
        "{blocked}"
    );
    b.refused(CLEAN, smtp4());
}

/// A DNSBL cannot forge the verdict log line: a TXT record written to read as more fields
/// stays inside the quoted `reasons` value, and the line parses back (logfmt) to exactly one
/// action and one address.
#[test]
fn a_dnsbl_txt_record_cannot_forge_log_fields() {
    let b = bed("dx");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec(&b, "forge.test"));
    b.connects(FORGER, smtp4());
    assert_eq!(d.wait_verdict(FORGER, VERDICT_WITHIN), "drop");
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("mxscreen-verdict") && l.contains(FORGER))
        .unwrap_or_else(|| panic!("no verdict line:\n{log}"));
    let fields = mxscreen_tests::logfmt::parse(line);
    let all = |k: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(all("action"), ["drop"], "{line}");
    assert_eq!(all("ip"), [FORGER], "{line}");
    assert!(all("reasons")[0].contains(FORGED_TXT), "{line}");
    assert!(all("y").is_empty(), "{line}");
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
    observe_mode(Backend::Ebpf);
}

#[test]
fn nftables_observe_mode_resolves_and_counts_but_never_drops() {
    observe_mode(Backend::Nftables);
}

fn observe_mode(backend: Backend) {
    let b = backend.bed("do");
    let s = Spec {
        args: vec!["--observe".into()],
        ..backend.spec(&b, "bl.test")
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    screens_with(&d, backend);
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
    // The MTA is told what is enforced (nothing), and what would have been.
    let a = d.query(LISTED);
    assert!(
        a.starts_with("action=pass score=10 ") && a.ends_with(" observed=drop"),
        "{a}"
    );
    assert!(!a.contains("explain_in"), "{a}");
    assert_eq!(d.query(CLEAN), "action=pass source=manual observed=block");
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("observe (never drops)"), "{status}");
}

/// Sections for the MTA tests: explained refusals on (an hour, to every listed sender: there
/// is no reverse DNS here), a labelled class (with a space, so it is quoted), and the
/// Postfix policy service on a Unix socket in `run`.
fn mta_sections(rbl: SocketAddr, run: &std::path::Path) -> String {
    sections(rbl, "bl.test").replace(
        "explain_every = \"0s\"",
        "explain_every = \"1h\"\nexplain_to = \"all\"",
    ) + &format!(
        "[[dnsbl.code_weights]]\ncodes = [\"127.0.0.2\"]\nweight = 10\nlabel = \"SBL test\"\n\n[policy_service]\nlisten = \"unix:{}/policy.sock\"\n",
        run.display()
    )
}

/// What Exim's `${extract{KEY}{${readsocket{...}}}}` makes of the answer for `ip`: the real
/// exim4 binary expanding the README's kind of expression (`exim4 -be`).
fn exim_extract(socket: &std::path::Path, ip: &str, key: &str) -> String {
    let expr = format!(
        "${{extract{{{key}}}{{${{readsocket{{{}}}{{{ip}\\n}}{{2s}}{{}}{{action=unreachable}}}}}}}}",
        socket.display()
    );
    let out = std::process::Command::new(mxscreen_tests::dns::require_binary("exim4"))
        .arg("-be")
        .arg(&expr)
        .output()
        .expect("exim4 -be");
    assert!(out.status.success(), "exim4 -be {expr}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

/// One policy request on a (reused) connection; `None` when the service closed it.
fn policy_request(s: &mut std::os::unix::net::UnixStream, attrs: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    s.write_all(attrs.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n\n") {
        match s.read(&mut byte).unwrap() {
            0 => return None,
            _ => reply.push(byte[0]),
        }
    }
    Some(String::from_utf8(reply).unwrap())
}

/// The MTA's query socket against the real daemon: mode and group; an address never seen
/// answers `unknown` and is evaluated at once; a listed one gets every field, readable by
/// Exim's own `extract`, and says when its next explained connection is due; lists answer
/// `allow`/`block`; bad input gets one line and the daemon carries on.
#[test]
fn query_socket_answers_the_mta_in_one_line() {
    let b = bed("dq");
    let run = tempfile::tempdir().unwrap();
    let s = Spec {
        datapath: FIRST_CONTACT_PASS.into(),
        sections: mta_sections(b.rbl_addr, run.path()),
        run_dir: Some(run.path().to_path_buf()),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, s);
    let meta = std::fs::metadata(&d.query_socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    let exim_gid = nix::unistd::Group::from_name("Debian-exim")
        .unwrap()
        .unwrap()
        .gid;
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&meta),
        exim_gid.as_raw()
    );

    // Before any question, explanations are off: a listed sender's SYN after its verdict
    // is dropped without a word.
    b.connects(LISTED_V6, smtp6());
    assert_eq!(d.wait_verdict(LISTED_V6, VERDICT_WITHIN), "drop");
    b.refused(LISTED_V6, smtp6());
    assert_eq!(d.counter("explained"), 0);
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("off: no MTA has asked"), "{status}");

    // Never seen: the question alone starts its evaluation and waits for it; the answer
    // is the verdict. A `drop` answer is the peer's explanation: its next is a window away.
    let a = d.query(LISTED);
    assert!(a.starts_with("action=drop score=10 ttl="), "{a}");
    assert!(
        a.ends_with(" source=reputation zone=bl.test code=127.0.0.2 label=\"SBL test\" text=\"listed for testing\" explain_in=3600"),
        "{a}"
    );
    for (key, want) in [
        ("action", "drop"),
        ("zone", "bl.test"),
        ("code", "127.0.0.2"),
        ("label", "SBL test"),
        ("text", "listed for testing"),
        ("explain_in", "3600"),
    ] {
        assert_eq!(exim_extract(&d.query_socket, LISTED, key), want, "{key}");
    }
    b.refused(LISTED, smtp4());
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("explained:     on:"), "{status}");
    assert!(status.contains("the MTA last asked"), "{status}");
    // Now the MTA asks: the first SYN of LISTED_V6 after its verdict reaches the MTA (to be
    // refused with the reason), the next is dropped in the kernel, and `check` says when
    // the next explained one is due.
    b.connects(LISTED_V6, smtp6());
    assert_eq!(d.counter("explained"), 1);
    b.refused(LISTED_V6, smtp6());
    let check = d.cli_ok(&["check", LISTED_V6, "--config", d.config.to_str().unwrap()]);
    assert!(
        // An hour from the explained SYN, a moment ago: shown rounded, as 1h or 59m.
        (check.contains("next explained connection: in 1h")
            || check.contains("next explained connection: in 59m"))
            && check.contains("explained refusals: on"),
        "{check}"
    );

    b.connects(CLEAN, smtp4());
    assert_eq!(d.wait_verdict(CLEAN, VERDICT_WITHIN), "pass");
    let a = d.query(CLEAN);
    assert!(
        a.starts_with("action=pass score=0 ttl=") && a.ends_with(" source=reputation"),
        "{a}"
    );
    d.cli_ok(&["block", LATER_LISTED, "--for", "1h"]);
    let a = d.query(LATER_LISTED);
    assert!(
        a.starts_with("action=block ttl=") && a.ends_with(" source=manual"),
        "{a}"
    );
    d.cli_ok(&["allow", LATER_LISTED]);
    assert_eq!(d.query(LATER_LISTED), "action=allow source=manual");

    // Bad input: one line each, never a crash.
    for (bad, why) in [
        (&b"hello\n"[..], "not an IP address"),
        (b"192.0.2.0/24\n", "not an IP address"),
        (b"", "not an IP address"),
        (&[b'7'; 5000], "line too long"),
        (&[b'7'; 257], "line too long"),
    ] {
        let a = mxscreen_tests::daemon::query_socket(&d.query_socket, bad);
        assert!(
            a.starts_with("action=unknown error=\"") && a.contains(why),
            "{a}"
        );
    }
    // The longest line: 256 bytes without its newline (white space around an address is
    // trimmed).
    let longest = format!("{CLEAN:>256}\n");
    let a = mxscreen_tests::daemon::query_socket(&d.query_socket, longest.as_bytes());
    assert!(a.starts_with("action=pass "), "{a}");
    // An IPv4-mapped address gets the IPv4 answer, on both sockets (the countdowns aside:
    // a second may tick between two answers).
    let timeless = |a: String| -> Vec<String> {
        a.split(' ')
            .filter(|f| !f.starts_with("ttl=") && !f.starts_with("explain_in="))
            .map(String::from)
            .collect()
    };
    for ip in [CLEAN, LISTED] {
        let mapped = d.query(&format!("::ffff:{ip}"));
        assert!(!mapped.contains("unknown"), "{mapped}");
        assert_eq!(timeless(mapped), timeless(d.query(ip)));
    }

    // The policy service: the same answers as Postfix actions, on one reused connection.
    let mut p = std::os::unix::net::UnixStream::connect(run.path().join("policy.sock")).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = |ip: &str| {
        format!(
            "request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address={ip}\nclient_name=unknown\n\n"
        )
    };
    assert_eq!(
        policy_request(&mut p, &req(LISTED)).as_deref(),
        Some(&*format!(
            "action=554 5.7.1 Service unavailable; Client host [{LISTED}] blocked using bl.test, code 127.0.0.2 (SBL test); listed for testing\n\n"
        ))
    );
    assert_eq!(
        policy_request(&mut p, &req(CLEAN)).as_deref(),
        Some("action=DUNNO\n\n")
    );
    // At RCPT, mail to postmaster is never refused for a listing (RFC 5321).
    let to_postmaster = format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={LISTED}\nclient_name=unknown\nrecipient=Postmaster@example.org\n\n"
    );
    assert_eq!(
        policy_request(&mut p, &to_postmaster).as_deref(),
        Some("action=DUNNO\n\n")
    );
    // An authenticated client is the site's own user, never refused, wherever the service
    // sits among the restrictions.
    let authenticated = format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address={LISTED}\nclient_name=unknown\nsasl_method=plain\nsasl_username=roadwarrior\nrecipient=someone@example.net\n\n"
    );
    assert_eq!(
        policy_request(&mut p, &authenticated).as_deref(),
        Some("action=DUNNO\n\n")
    );
    assert_eq!(
        policy_request(&mut p, &req(&format!("::ffff:{LISTED}"))),
        policy_request(&mut p, &req(LISTED)),
    );
    assert_eq!(
        policy_request(&mut p, &req(LATER_LISTED)).as_deref(),
        Some("action=DUNNO\n\n")
    );
    // Malformed: logged and closed.
    let from = d.log_text().len();
    assert_eq!(policy_request(&mut p, "garbage\n\n"), None);
    d.wait_log("malformed policy request", from, Duration::from_secs(5));
    d.cli_ok(&["status"]);
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
    // How to start it: through systemd where the package's unit is installed.
    let unit = mxscreen::control::client::UNIT_PATHS
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    let start = if unit {
        "start it with `systemctl start mxscreen`"
    } else {
        "start it with `mxscreen run`"
    };
    assert!(
        err.contains("daemon is not running") && err.contains(start) && err.lines().count() == 1,
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

/// The balancer watch's window in these tests (`MXSCREEN_BALANCER_WINDOW`; 10 minutes in
/// production). Each burst below takes milliseconds; if a window boundary splits one, the
/// side with MIN_SYNS (300) of its 600 SYNs, or MIN_ASKS (20) of its 45 questions, decides.
const BALANCER_WINDOW: Duration = Duration::from_secs(3);

fn balancer_spec(b: &Bed, allow_defaults: bool) -> Spec {
    let mut sections = sections(b.rbl_addr, "bl.test");
    if allow_defaults {
        // The built-in allow list, private ranges included.
        sections = sections.replace("[lists]\nallow_defaults = false\n", "");
    }
    Spec {
        datapath: FIRST_CONTACT_PASS.into(),
        sections,
        env: vec![(
            "MXSCREEN_BALANCER_WINDOW".into(),
            format!("{}s", BALANCER_WINDOW.as_secs()),
        )],
        ..Default::default()
    }
}

/// Real SYN frames to port 25 from each of `sources` in turn, `count` in all, sent at once
/// from the client namespace onto the wire (from a thread of their own: the sender pins
/// itself to a CPU).
fn syn_burst(b: &Bed, sources: &[&str], count: u64) {
    use mxscreen_tests::{flood::Flood, packets::Frame};
    let frames: Vec<Vec<u8>> = sources
        .iter()
        .map(|s| Frame::syn(s.parse().unwrap()).build())
        .collect();
    let flood = Flood::new(&b.wire.client, "vc");
    std::thread::scope(|s| {
        s.spawn(|| flood.send(&frames, count, 0)).join().unwrap();
    });
}

/// `status --json`'s balancer check `name`.
fn balancer_check(d: &MxDaemon, name: &str) -> serde_json::Value {
    d.status()["balancer"][name].clone()
}

/// Waits until the balancer check `name` says `suspected`.
#[track_caller]
fn wait_suspected(d: &MxDaemon, name: &str, suspected: bool) {
    d.wait_for(
        &format!("balancer check {name} suspected = {suspected}"),
        BALANCER_WINDOW * 4,
        || balancer_check(d, name)["suspected"] == suspected,
    );
}

fn log_lines(d: &MxDaemon, needle: &str) -> usize {
    d.log_text().lines().filter(|l| l.contains(needle)).count()
}

/// A balancer or NAT in front: one source carries most SYNs to port 25 (its verdict's hits
/// against the datapath's counters), and `status`, `status --json`, the metrics and one log
/// line say so; spread traffic clears it (one more log line, and no second warning); most
/// SYNs from the built-in private ranges (a balancer on a private address) are noticed too.
#[test]
fn a_balancer_in_front_is_noticed_in_status_metrics_and_log() {
    balancer_noticed(Backend::Ebpf);
}

#[test]
fn nftables_a_balancer_in_front_is_noticed_in_status_metrics_and_log() {
    balancer_noticed(Backend::Nftables);
}

fn balancer_noticed(backend: Backend) {
    const BALANCER: &str = "198.51.100.7";
    const OTHERS: [&str; 4] = [
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.13",
        "198.51.100.14",
    ];
    const PRIVATE: &str = "10.20.30.40";
    let b = backend.bed("db");
    let metrics = format!("{SERVER_V4}:9725");
    let mut spec = balancer_spec(&b, true);
    spec.datapath = backend.spec(&b, "bl.test").datapath;
    spec.sections += &format!("\n[metrics]\nlisten = \"{metrics}\"\n");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    screens_with(&d, backend);
    // The balancer's first SYN makes it a peer with a (pass) verdict, as any sender.
    syn_burst(&b, &[BALANCER], 1);
    assert_eq!(d.wait_verdict(BALANCER, VERDICT_WITHIN), "pass");
    // Everything else comes from it too, but for a few others.
    syn_burst(&b, &[BALANCER], 600);
    syn_burst(&b, &OTHERS, 20);
    wait_suspected(&d, "one_source", true);
    let check = balancer_check(&d, "one_source");
    assert_eq!(check["source"], BALANCER, "{check}");
    assert!(check["share"].as_f64().unwrap() > 0.9, "{check}");
    let status = d.cli_ok(&["status"]);
    let warning = format!("one source, {BALANCER}, carried");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("warning") && l.contains(&warning)),
        "{status}"
    );
    let samples = samples(&scrape(&b.wire.server, metrics.parse().unwrap()));
    assert_eq!(
        samples.get("mxscreen_balancer_suspected{check=\"one_source\"}"),
        Some(&1.0),
        "{samples:?}"
    );
    assert_eq!(
        samples.get("mxscreen_balancer_suspected{check=\"private_sources\"}"),
        Some(&0.0)
    );
    assert_eq!(log_lines(&d, &warning), 1, "{}", d.log_text());
    // Spread traffic: no source over half. Cleared, said once.
    syn_burst(&b, &OTHERS, 600);
    wait_suspected(&d, "one_source", false);
    assert_eq!(log_lines(&d, "one_source no longer suspected"), 1);
    assert!(!d.cli_ok(&["status"]).contains(&warning));
    // A balancer on a private address: allow-listed, so it has no verdict; the built-in
    // private allow entries carry the SYNs.
    syn_burst(&b, &[PRIVATE], 600);
    wait_suspected(&d, "private_sources", true);
    assert!(
        d.cli_ok(&["status"])
            .contains("the built-in private ranges carried"),
        "{}",
        d.cli_ok(&["status"])
    );
    assert_eq!(log_lines(&d, &warning), 1, "{}", d.log_text());
}

/// The PROXY protocol in front of the MTA: it asks about clients whose SYN the datapath
/// never saw (the kernel saw the balancer). Questions about peers that did connect do not
/// count; questions about unseen ones, once they are most of a window's, are noticed.
#[test]
fn an_mta_asking_about_peers_the_datapath_never_saw_is_noticed() {
    unseen_noticed(Backend::Ebpf);
}

#[test]
fn nftables_an_mta_asking_about_peers_the_datapath_never_saw_is_noticed() {
    unseen_noticed(Backend::Nftables);
}

fn unseen_noticed(backend: Backend) {
    let b = backend.bed("dp");
    let mut spec = balancer_spec(&b, false);
    spec.datapath = backend.spec(&b, "bl.test").datapath;
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    screens_with(&d, backend);
    // A peer that connected: asked about as often as an MTA would, never suspicious.
    b.connects(CLEAN, smtp4());
    assert_eq!(d.wait_verdict(CLEAN, VERDICT_WITHIN), "pass");
    // 45 questions: however a window boundary splits them, one side has MIN_ASKS (20).
    for _ in 0..45 {
        d.query(CLEAN);
    }
    d.wait_for(
        "a window deciding on the MTA's questions",
        BALANCER_WINDOW * 4,
        || !balancer_check(&d, "unseen_peers")["since"].is_null(),
    );
    assert_eq!(balancer_check(&d, "unseen_peers")["suspected"], false);
    // Behind the PROXY protocol: every client the MTA asks about is one the kernel never
    // saw (documentation addresses no SYN came from).
    for i in 1..=45 {
        d.query(&format!("203.0.113.{i}"));
    }
    wait_suspected(&d, "unseen_peers", true);
    let status = d.cli_ok(&["status"]);
    assert!(
        status.contains("of the MTA's questions in the last 3s were about addresses whose SYN the datapath never saw"),
        "{status}"
    );
    assert_eq!(
        log_lines(&d, "were about addresses whose SYN the datapath never saw"),
        1
    );
}

/// Under `first_contact = "pass"` the MTA asks about a new peer while its verdict is still
/// being resolved (here: a DNS server that never answers). The datapath saw its SYN, so those
/// questions are not about unseen addresses, on either backend: the eBPF datapath keeps the
/// peer's first contact, the nftables backend the report it logged.
#[test]
fn questions_about_a_peer_being_resolved_are_not_about_an_unseen_one() {
    asked_while_resolving(Backend::Ebpf);
}

#[test]
fn nftables_questions_about_a_peer_being_resolved_are_not_about_an_unseen_one() {
    asked_while_resolving(Backend::Nftables);
}

fn asked_while_resolving(backend: Backend) {
    let b = backend.bed("dw");
    // Bound, never read: every lookup waits out the resolver's timeout.
    let silent = b
        .wire
        .server
        .enter(|| std::net::UdpSocket::bind("127.0.0.1:0"))
        .unwrap();
    let mut spec = backend.spec(&b, "bl.test");
    spec.sections = sections(silent.local_addr().unwrap(), "bl.test")
        .replace("timeout = \"1s\"", "timeout = \"10s\"");
    spec.env = balancer_spec(&b, false).env;
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    screens_with(&d, backend);
    b.connects(CLEAN, smtp4());
    // The report reaches the daemon's main loop within milliseconds; the verdict not for
    // 10 s.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.verdict(CLEAN),
        None,
        "resolved already: the DNS server answered?"
    );
    // 45 questions at once (each waits `query.wait_max` for the verdict): however a window
    // boundary splits them, one side has the watch's 20.
    std::thread::scope(|s| {
        for _ in 0..45 {
            s.spawn(|| d.query(CLEAN));
        }
    });
    d.wait_for(
        "a window deciding on the MTA's questions",
        BALANCER_WINDOW * 4,
        || !balancer_check(&d, "unseen_peers")["since"].is_null(),
    );
    let check = balancer_check(&d, "unseen_peers");
    assert_eq!(check["suspected"], false, "{check}");
}

/// A verdict outlives a change of listing (it holds until it expires, across restarts); a
/// sender delisted since need not wait: `forget` removes its verdict and its next SYN is
/// evaluated afresh, `recheck --now` evaluates at once and prints the new verdict. Manual
/// entries are untouched, and the answer says which still decide.
#[test]
fn forget_lets_a_delisted_sender_be_evaluated_afresh() {
    forget_and_evaluate_afresh(Backend::Ebpf);
}

#[test]
fn nftables_forget_lets_a_delisted_sender_be_evaluated_afresh() {
    forget_and_evaluate_afresh(Backend::Nftables);
}

fn forget_and_evaluate_afresh(backend: Backend) {
    let b = backend.bed("df");
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, backend.spec(&b, "bl.test"));
    screens_with(&d, backend);
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "drop");
    b.connects(LATER_LISTED, smtp4());
    assert_eq!(d.wait_verdict(LATER_LISTED, VERDICT_WITHIN), "pass");
    d.cli_ok(&["block", FORGER, "--reason", "by hand"]);
    // The listings change: LISTED is delisted, LATER_LISTED listed (the config now asks
    // later.test). The verdicts made before hold.
    d.write_config(&sections(b.rbl_addr, "later.test"));
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, Duration::from_secs(10));
    b.refused(LISTED, smtp4());
    assert_eq!(d.verdict(LATER_LISTED).as_deref(), Some("pass"));

    let out = d.cli_ok(&["forget", LISTED]);
    assert!(
        out.starts_with(&format!(
            "forgot the verdict of {LISTED}; the next SYN is evaluated afresh; manual entries are untouched"
        )),
        "{out}"
    );
    assert_eq!(d.verdict(LISTED), None);
    // Its next SYN is a first contact (it passes) and is evaluated: delisted, it passes.
    b.connects(LISTED, smtp4());
    assert_eq!(d.wait_verdict(LISTED, VERDICT_WITHIN), "pass");
    let lines = d
        .log_text()
        .lines()
        .filter(|l| l.contains("mxscreen-verdict") && l.contains(&format!("ip={LISTED} ")))
        .count();
    assert_eq!(lines, 2, "one evaluation before the forget, one after");
    b.connects(LISTED, smtp4());

    // recheck (the alias) --now: evaluated at once, the new verdict printed.
    let out = d.cli_ok(&["recheck", LATER_LISTED, "--now"]);
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("now: verdict") && last.contains(LATER_LISTED) && last.contains("drop"),
        "{out}"
    );
    b.refused(LATER_LISTED, smtp4());

    // A prefix: every verdict inside goes; the manual block inside stays, and is named.
    let out = d.cli_ok(&["forget", "192.0.2.0/24"]);
    assert!(
        out.starts_with("forgot 2 verdicts inside 192.0.2.0/24"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "manual entries are untouched and still decide: {FORGER}/32 blocked (`mxscreen unblock {FORGER}/32`)"
        )),
        "{out}"
    );
    assert_eq!(d.verdict(LATER_LISTED), None);
    b.refused(FORGER, smtp4());
    // Bad input: --now on a prefix.
    let out = d.cli(&["forget", "192.0.2.0/24", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--now evaluates one address"),
        "{}",
        text(&out)
    );
}

/// IPv6 rotation (README, *IPv6 networks that rotate*): two addresses of one /64, listed
/// and dropped, earn the network a verdict, so a third address of it, never seen, is refused
/// at its first SYN (first contact passes otherwise); `check` names the addresses that
/// earned it; `forget` of the network lets the third in again.
#[test]
fn a_rotating_ipv6_network_is_refused_as_a_whole() {
    rotating_network(Backend::Ebpf);
}

#[test]
fn nftables_a_rotating_ipv6_network_is_refused_as_a_whole() {
    rotating_network(Backend::Nftables);
}

fn rotating_network(backend: Backend) {
    const A: &str = "2001:db8:1::a1";
    const B: &str = "2001:db8:1::b2";
    const NEW: &str = "2001:db8:1::c3";
    let tag = if backend == Backend::Ebpf {
        "dR"
    } else {
        "dRn"
    };
    let b = Bed::new(
        tag,
        &[A, B, NEW],
        &[RblZone::new(
            "bl.test",
            Duration::from_secs(900),
            vec![
                listing(A, "127.0.0.2", "rotating"),
                listing(B, "127.0.0.2", "rotating"),
            ],
        )],
    );
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, backend.spec(&b, "bl.test"));
    screens_with(&d, backend);
    for ip in [A, B] {
        b.connects(ip, smtp6());
        assert_eq!(d.wait_verdict(ip, VERDICT_WITHIN), "drop");
    }
    d.wait_for("the network verdict", VERDICT_WITHIN, || {
        d.log_text()
            .contains("rotation: 2 addresses of 2001:db8:1::/64 hold drop verdicts")
    });
    b.refused(NEW, smtp6());
    let out = d.cli_ok(&["check", NEW, "--config", d.config.to_str().unwrap()]);
    assert!(
        out.contains("2001:db8:1::/64") && out.contains(A) && out.contains(B),
        "{out}"
    );
    let out = d.cli_ok(&["forget", "2001:db8:1::/64"]);
    assert!(
        out.starts_with("forgot 2 verdicts inside 2001:db8:1::/64"),
        "{out}"
    );
    b.connects(NEW, smtp6());
}

/// The defaults' `resolver.max_lookups_per_sec`: evaluations started per second.
const BUDGET: u64 = 200;
const CLEAN_V6: &str = "2001:db8:1::21";

/// `n` one-SYN frames from random IPv6 sources in 2001:db8::/32 (each in a /64 of its own,
/// never the bed's 2001:db8:1::/64), the same for the same `seed`.
fn spoofed_syns(n: usize, seed: u64) -> Vec<Vec<u8>> {
    use mxscreen_tests::packets::Frame;
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let w = |shift: u32| (x >> shift) as u16;
            let src =
                std::net::Ipv6Addr::new(0x2001, 0xdb8, w(48) | 0x8000, w(32), 0, 0, 0, w(16) | 1);
            Frame::syn(src.into()).build()
        })
        .collect()
}

/// Sends `frames` at `rate` a second, in 10 ms slices, from the client namespace.
fn paced_flood(b: &Bed, frames: &[Vec<u8>], rate: u64) {
    use mxscreen_tests::flood::Flood;
    let flood = Flood::new(&b.wire.client, "vc");
    let slice = (rate / 100).max(1) as usize;
    let start = Instant::now();
    for (i, chunk) in frames.chunks(slice).enumerate() {
        let due = start + Duration::from_millis(10 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        flood.send(chunk, chunk.len() as u64, 0);
    }
}

/// `mxscreen stats --json`'s engine section.
fn engine_stats(d: &MxDaemon) -> serde_json::Value {
    let s: serde_json::Value = serde_json::from_str(&d.cli_ok(&["stats", "--json"])).unwrap();
    s["engine"].clone()
}

/// During a flood of `rate` one-SYN sources a second for `secs`, a clean and a listed
/// sender (both never seen) connect from 1 s into it: the time the clean one's handshake
/// took, and the listed one's attempt (which must time out: its SYNs at 0, 1, 3 and 7 s all
/// dropped). Also checks the evaluations the flood's time cost stay within the budget.
fn senders_during_flood(
    b: &Bed,
    d: &MxDaemon,
    (rate, secs, seed): (u64, u64, u64),
    (clean, listed): (&str, &str),
    clean_within: Duration,
) -> Duration {
    let frames = spoofed_syns((rate * secs) as usize, seed);
    let before = engine_stats(d)["evaluations"].as_u64().unwrap();
    let started = Instant::now();
    let clean_took = std::thread::scope(|s| {
        s.spawn(|| paced_flood(b, &frames, rate));
        std::thread::sleep(Duration::from_secs(1));
        let listed_try = s.spawn(|| {
            b.wire
                .connect(listed, Bed::smtp_for(listed), Duration::from_secs(8))
        });
        let t = Instant::now();
        let c = b.wire.connect(clean, Bed::smtp_for(clean), clean_within);
        let took = t.elapsed();
        assert!(
            c.is_ok(),
            "{rate}/s flood: clean {clean} did not connect within {clean_within:?}: {c:?}\n{}",
            flood_evidence(d, clean)
        );
        match listed_try.join().unwrap() {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("{rate}/s flood: listed {listed} got {other:?}"),
        }
        took
    });
    let elapsed = started.elapsed().as_secs() + 1;
    let spent = engine_stats(d)["evaluations"].as_u64().unwrap() - before;
    // One second of burst, then the rate, over the flood and the listed sender's attempt.
    assert!(
        spent <= BUDGET * (elapsed + 1),
        "{rate}/s flood: {spent} evaluations in {elapsed} s, budget {BUDGET}/s"
    );
    assert_eq!(d.verdict(clean).as_deref(), Some("pass"));
    assert_eq!(d.verdict(listed).as_deref(), Some("drop"));
    clean_took
}

/// What a flood test that failed shows of the daemon: `clean`'s `check`, the stats and the
/// log's last lines.
fn flood_evidence(d: &MxDaemon, clean: &str) -> String {
    let log = d.log_text();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    format!(
        "check {clean}: {}\nstats: {}\nlog (last 40 lines):\n{}",
        text(&d.cli(&["check", clean])),
        text(&d.cli(&["stats", "--json"])),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Issue 20: under the defaults (`first_contact = "hold"`, the default budget), a flood of
/// random one-SYN sources spends no evaluation a real sender needs.
///
/// The rates, chosen to say what the design can and cannot do. Nothing tells a real sender
/// from a spoofed one at its first SYN; its retransmit (1 s later) proves it, but that SYN
/// is itself held while the verdict is made, so a sender whose first SYN was not evaluated
/// gets in on its next retransmit (3 s), never earlier — in a flood above the budget, first
/// SYNs are served newest first and a given one rarely is. So:
/// - 150 new sources a second (a scan, or a flood under the budget of 200 evaluations a
///   second): every first SYN is evaluated; the clean sender connects on its first
///   retransmit, within 1.5 s;
/// - 5 000 a second for 5 s (25 times the budget: every first SYN's evaluation competes
///   with two dozen spoofed ones; bounded so that a debug-build daemon and the datapath on
///   this shared 2-CPU machine are not the thing measured — `cargo xtask bench drop`
///   measures the datapath at full rate): the retransmit is proven real and evaluated at
///   once, and the clean sender connects on its second retransmit, within 4.5 s (before the
///   third, at 7 s).
///
/// In both the listed sender never connects (never released unevaluated), and the
/// evaluations stay within the budget.
#[test]
fn a_spoofed_flood_spends_no_budget_real_senders_need() {
    spoofed_flood(Backend::Ebpf);
}

#[test]
fn nftables_a_spoofed_flood_spends_no_budget_real_senders_need() {
    spoofed_flood(Backend::Nftables);
}

/// QA's finding (stop 43): a spoofed flood of more new sources than the per-source map holds
/// pushed the verdicts out of it and held a real sender until the flood ended (36 s with a
/// 1,024-entry map and 2,000 new sources a second). With maps that small and that flood, a
/// sender decided before keeps its verdict, and a new clean sender is not held past a
/// retransmit or two: the eBPF datapath holds nobody while new sources come faster than its
/// seen maps remember them; nftables' sets, full, refuse them and pass the source. Both count
/// what they let through unheld.
#[test]
fn a_flood_that_overruns_the_maps_keeps_verdicts_and_holds_nobody_for_long() {
    overrun_maps(Backend::Ebpf);
}

#[test]
fn nftables_a_flood_that_overruns_the_maps_keeps_verdicts_and_holds_nobody_for_long() {
    overrun_maps(Backend::Nftables);
}

fn overrun_maps(backend: Backend) {
    let b = backend.bed("dO");
    let d = flood_daemon(&b, backend, "maps = { verdicts = 1024, seen = 1024 }");
    // Decided before the flood: held once, then its verdict.
    b.wire
        .connect(CLEAN, Bed::smtp_for(CLEAN), Duration::from_secs(4))
        .expect("the clean sender connects before the flood");
    assert_eq!(d.verdict(CLEAN).as_deref(), Some("pass"));
    // 2,000 new sources a second for 6 s: the 1,024-entry maps turn over twice a second.
    let (rate, secs) = (2_000, 6);
    let frames = spoofed_syns((rate * secs) as usize, 3);
    let took = std::thread::scope(|s| {
        s.spawn(|| paced_flood(&b, &frames, rate));
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        let c = b.wire.connect(
            CLEAN_V6,
            Bed::smtp_for(CLEAN_V6),
            Duration::from_millis(4500),
        );
        assert!(
            c.is_ok(),
            "the new clean sender did not connect within 4.5 s: {c:?}\n{}",
            flood_evidence(&d, CLEAN_V6)
        );
        let took = t.elapsed();
        // Still in the flood: the sender decided before it has its verdict, and (eBPF)
        // status says first contact passes unheld, and why.
        assert_eq!(
            d.verdict(CLEAN).as_deref(),
            Some("pass"),
            "the flood pushed out a verdict"
        );
        if backend == Backend::Ebpf {
            let status = d.cli_ok(&["status"]);
            assert!(
                status.contains("first contact is passing unheld"),
                "{status}"
            );
        }
        took
    });
    eprintln!(
        "{}: the new clean sender connected after {took:?} into the flood",
        backend.name()
    );
    let s: serde_json::Value = serde_json::from_str(&d.cli_ok(&["stats", "--json"])).unwrap();
    assert!(s["datapath"]["unheld"].as_u64().unwrap_or(0) > 0, "{s}");
}

/// Each family's verdicts have a map of their own: `status` shows each, and warns when one
/// is nearly full while the other is empty (a sum of both read 50 %).
#[test]
fn status_warns_when_one_familys_verdict_map_is_nearly_full() {
    verdict_map_fill(Backend::Ebpf);
}

#[test]
fn nftables_status_warns_when_one_familys_verdict_map_is_nearly_full() {
    verdict_map_fill(Backend::Nftables);
}

fn verdict_map_fill(backend: Backend) {
    let b = backend.bed("dV");
    let d = flood_daemon(&b, backend, "maps = { verdicts = 2 }");
    b.wire
        .connect(CLEAN_V6, Bed::smtp_for(CLEAN_V6), Duration::from_secs(4))
        .expect("the clean sender connects");
    let _ = b.wire.connect(
        LISTED_V6,
        Bed::smtp_for(LISTED_V6),
        Duration::from_millis(300),
    );
    assert_eq!(d.wait_verdict(LISTED_V6, VERDICT_WITHIN), "drop");
    let status: serde_json::Value = serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap();
    let row = |name: &str| {
        let m = status["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {status}"));
        (
            m["entries"].as_u64().unwrap(),
            m["max_entries"].as_u64().unwrap(),
        )
    };
    assert_eq!(row("verdicts v6"), (2, 2), "{status}");
    assert_eq!(row("verdicts v4"), (0, 2), "{status}");
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("the verdicts v6 map holds 2 of 2")
            && !warnings.contains("verdicts v4 map"),
        "{warnings}"
    );
}

/// The daemon the flood tests run on `b` (with `CLEAN_V6` added as a client address), under
/// `backend`, with `datapath` lines added: only the resolver and the zone, as a new user
/// writes it, and two things this bed lacks: reverse zones (rDNS off) and an MTA asking
/// (explanations off).
fn flood_daemon(b: &Bed, backend: Backend, datapath: &str) -> MxDaemon {
    b.wire.add_client_addr(CLEAN_V6);
    let sections = format!(
        "[resolver]\nnameservers = [\"{}\"]\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"0s\"\n\n[lists]\nallow = []\n\n[[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n",
        b.rbl_addr
    );
    let d = MxDaemon::start(
        &b.wire.server,
        SERVER_IFACE,
        Spec {
            datapath: format!("backend = \"{}\"\n{datapath}", backend.name()),
            sections,
            ..Default::default()
        },
    );
    screens_with(&d, backend);
    d
}

fn spoofed_flood(backend: Backend) {
    let b = backend.bed("dF");
    let d = flood_daemon(&b, backend, "");
    let under = senders_during_flood(
        &b,
        &d,
        (150, 4, 1),
        (CLEAN, LISTED),
        Duration::from_millis(1500),
    );
    eprintln!("150/s flood: the clean sender connected after {under:?}");
    let over = senders_during_flood(
        &b,
        &d,
        (5_000, 5, 2),
        (CLEAN_V6, LISTED_V6),
        Duration::from_millis(4500),
    );
    eprintln!("5000/s flood: the clean sender connected after {over:?}");
    // The flood was above the budget: first SYNs were turned away unevaluated, by the
    // engine (too old to be worth a lookup, or their queue full) or already by the
    // datapath's event budget.
    let s: serde_json::Value = serde_json::from_str(&d.cli_ok(&["stats", "--json"])).unwrap();
    let turned_away = s["engine"]["first_expired"].as_u64().unwrap()
        + s["engine"]["rejected_queue_full"].as_u64().unwrap()
        + s["datapath"]["events_over_budget"].as_u64().unwrap_or(0);
    assert!(turned_away > 0, "{s}");
}
