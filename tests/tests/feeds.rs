//! Feeds and rotating IPv6 networks with the real daemon: feed files loaded, replaced by
//! rename as downloaders do, shown by `status`, named by `list` and `check`; a million-line
//! feed loaded and enforced; IPv6 addresses of one /64 giving it a verdict. Real TCP
//! handshakes from a client namespace, a real rbldnsd. Run in the `daemon` suite.
//!
//! - [`shared`]: every real feed file in `../shared/data/feeds/` loads with its exact entries;
//! - [`mangled`]: a feed a downloader mangled never opens or closes the gate by surprise;
//! - [`moved`]: a feed inotify cannot see change is polled; an empty first load is shown.

#[path = "feeds/mangled.rs"]
mod mangled;
#[path = "feeds/moved.rs"]
mod moved;
#[path = "feeds/shared.rs"]
mod shared;

use std::{path::Path, time::Duration};

use mxscreen_tests::{
    bed::{Bed, million_line_feed, smtp4},
    daemon::{MxDaemon, Spec, ndjson},
    dns::{RblZone, listing},
    netns::SERVER_IFACE,
};

const FEED_LISTED: &str = "192.0.2.30";
const FEED_LISTED_V6: &str = "2001:db8:1::30";
const FEED_LATER: &str = "192.0.2.31";
const CLEAN: &str = "192.0.2.32";
const LOADED_WITHIN: Duration = Duration::from_secs(5);
/// These tests are about feeds and start from an unknown peer's first connection passing;
/// first contact under the defaults (hold) is tested in the daemon and e2e suites.
const FIRST_CONTACT_PASS: &str = "first_contact = \"pass\"";

/// No DNSBL lists anything here: what the feeds do is all that happens.
fn sections(rbl: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[resolver]\nnameservers = [\"{rbl}\"]\ntimeout = \"1s\"\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"0s\"\n\n[lists]\nallow = []\n\n{extra}\n\n[[dnsbl]]\nzone = \"bl.test\"\nweight = 10\n"
    )
}

fn feed_section(name: &str, path: &Path, format: &str, action: &str) -> String {
    format!(
        "[[lists.feed]]\nname = {name:?}\npath = {:?}\nformat = {format:?}\naction = {action:?}\n",
        path.display().to_string()
    )
}

/// The status entry of feed `name`, once the daemon has one.
fn feed_status(d: &MxDaemon, name: &str) -> Option<serde_json::Value> {
    d.status()["feeds"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
}

/// Replaces `path` as downloaders do: a new file beside it, renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn entries(d: &MxDaemon, feed: &str) -> u64 {
    d.feed(feed)["entries"].as_u64().unwrap()
}

/// The datapath lines of a test: first contacts pass, on the named backend.
fn datapath(backend: &str) -> String {
    format!("{FIRST_CONTACT_PASS}\nbackend = {backend:?}\n")
}

#[test]
fn a_feed_is_loaded_replaced_by_rename_and_named_everywhere() {
    feed_loaded_replaced_and_named("ebpf");
}

#[test]
fn nftables_a_feed_is_loaded_replaced_by_rename_and_named_everywhere() {
    feed_loaded_replaced_and_named("nftables");
}

fn feed_loaded_replaced_and_named(backend: &str) {
    let b = Bed::new(
        if backend == "ebpf" { "fd" } else { "fdn" },
        &[FEED_LISTED, FEED_LISTED_V6, FEED_LATER, CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.txt");
    std::fs::write(
        &path,
        format!("# a test feed\n{FEED_LISTED}\nnot-an-address\n{FEED_LISTED_V6}/128 ; v6\n"),
    )
    .unwrap();
    let spec = Spec {
        datapath: datapath(backend),
        sections: sections(
            b.rbl_addr,
            &feed_section("local-drop", &path, "cidr", "drop"),
        ),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    d.wait_for("feed loaded", LOADED_WITHIN, || {
        entries(&d, "local-drop") == 2
    });
    b.refused(FEED_LISTED, smtp4());
    b.refused(FEED_LISTED_V6, Bed::smtp_for(FEED_LISTED_V6));
    b.connects(CLEAN, smtp4());
    // The bad line is logged as file:line, and counted.
    let log = d.log_text();
    let at = format!("{}:3: not an address or prefix", path.display());
    assert!(log.contains(&at), "{at} not in the log:\n{log}");
    let f = d.feed("local-drop");
    assert_eq!(
        (f["errors"].as_u64(), f["action"].as_str()),
        (Some(1), Some("drop"))
    );
    assert!(
        f["last_load"].as_u64().is_some() && f["problem"].is_null(),
        "{f}"
    );
    let status = d.cli_ok(&["status"]);
    assert!(
        status.contains("local-drop: 2 entries (drop, cidr)") && status.contains("1 lines skipped"),
        "{status}"
    );
    // `list` and `check` name the feed.
    let list = d.cli_ok(&["list", "--blocked"]);
    let row = list
        .lines()
        .find(|l| l.contains(&format!("{FEED_LISTED}/32")))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("feed") && row.contains("local-drop"), "{row}");
    let rows = ndjson(&d.cli_ok(&["list", "--blocked", "--json"]));
    assert!(
        rows.iter()
            .any(|e| e["net"] == format!("{FEED_LISTED}/32") && e["feed"] == "local-drop"),
        "{rows:?}"
    );
    let check = d.cli_ok(&["check", FEED_LISTED, "--config", d.config.to_str().unwrap()]);
    assert!(
        check.contains("daemon holds:")
            && check.contains("feed local-drop")
            && check.contains(&format!(
                "in force: its SYNs are dropped (blocked {FEED_LISTED}/32, feed)"
            )),
        "{check}"
    );

    // Replaced by rename: the new address is refused, the old one connects again. It is
    // written IPv4-mapped, as dual-stack MTAs log IPv4 peers: it means the IPv4 address.
    let from = d.log_text().len();
    replace(&path, &format!("::ffff:{FEED_LATER}\n{FEED_LISTED_V6}\n"));
    d.wait_log("feed loaded", from, LOADED_WITHIN);
    b.refused(FEED_LATER, smtp4());
    b.connects(FEED_LISTED, smtp4());
    b.refused(FEED_LISTED_V6, Bed::smtp_for(FEED_LISTED_V6));
    assert!(
        d.log_text()[from..].contains("added=1 removed=1 writes=2"),
        "{}",
        d.log_text()
    );
    // The same content again (the address in its IPv4 form): read, nothing written.
    let from = d.log_text().len();
    replace(&path, &format!("{FEED_LATER}\n{FEED_LISTED_V6}\n"));
    d.wait_log("feed loaded", from, LOADED_WITHIN);
    assert!(
        d.log_text()[from..].contains("writes=0"),
        "{}",
        d.log_text()
    );
    // The file goes away: its entries stay, status says why.
    std::fs::remove_file(&path).unwrap();
    d.wait_for("missing file reported", LOADED_WITHIN, || {
        d.feed("local-drop")["problem"] == "file missing"
    });
    assert_eq!(entries(&d, "local-drop"), 2);
    b.refused(FEED_LATER, smtp4());
}

/// What a feed lists is what the MTA is told, in the datapath's precedence: a drop feed's
/// entry `block`, a limit feed's `limit` (the query socket once skipped limit feeds and
/// answered `pass`), both `source=feed`; and `unblock` of a feed's address says a feed lists
/// it rather than pointing at a wider prefix that does not exist.
#[test]
fn feeds_entries_are_what_the_mta_is_told() {
    feeds_told("ebpf");
}

#[test]
fn nftables_feeds_entries_are_what_the_mta_is_told() {
    feeds_told("nftables");
}

fn feeds_told(backend: &str) {
    let b = Bed::new(
        if backend == "ebpf" { "ft" } else { "ftn" },
        &[FEED_LISTED, FEED_LATER, CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let (drop, limit) = (dir.path().join("drop.txt"), dir.path().join("limit.txt"));
    let allow = dir.path().join("allow.txt");
    std::fs::write(&drop, format!("{FEED_LISTED}\n")).unwrap();
    std::fs::write(&limit, format!("{FEED_LATER}/32\n")).unwrap();
    std::fs::write(&allow, format!("{CLEAN}/31\n")).unwrap();
    let feeds = feed_section("dropped", &drop, "cidr", "drop")
        + &feed_section("limited", &limit, "cidr", "limit")
        + &feed_section("allowed", &allow, "cidr", "allow");
    let spec = Spec {
        datapath: datapath(backend),
        sections: sections(b.rbl_addr, &feeds),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    d.wait_for("feeds loaded", LOADED_WITHIN, || {
        entries(&d, "dropped") == 1 && entries(&d, "limited") == 1 && entries(&d, "allowed") == 1
    });
    let q = d.query(FEED_LISTED);
    assert!(
        q.starts_with("action=block") && q.contains("source=feed"),
        "{q}"
    );
    let q = d.query(FEED_LATER);
    assert!(
        q.starts_with("action=limit") && q.contains("source=feed"),
        "{q}"
    );
    let out = d.cli(&["unblock", FEED_LISTED]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a feed lists it"), "{err}");
    // A manual change a feed overrides says so: an unblock that leaves the source refused,
    // a block that leaves it passing.
    d.cli_ok(&["block", FEED_LISTED]);
    let out = d.cli_ok(&["unblock", FEED_LISTED]);
    assert!(
        out.contains(&format!(
            "note: feed dropped lists {FEED_LISTED}/32: it is still dropped here"
        )),
        "{out}"
    );
    d.cli_ok(&["block", FEED_LATER]);
    let out = d.cli_ok(&["unblock", FEED_LATER]);
    assert!(
        out.contains(&format!(
            "note: limit feed limited lists {FEED_LATER}/32: it is still rate-limited here"
        )),
        "{out}"
    );
    let out = d.cli_ok(&["block", CLEAN]);
    let covering = format!("{CLEAN}/31")
        .parse::<ipnet::IpNet>()
        .unwrap()
        .trunc();
    assert!(
        out.contains(&format!(
            "note: allow feed allowed lists {covering}, and allow wins: it still passes here"
        )),
        "{out}"
    );
    b.connects(CLEAN, smtp4());
    let out = d.cli_ok(&["unblock", CLEAN]);
    assert_eq!(out.trim(), format!("unblocked {CLEAN}/32"));
}

/// A read the maps cannot hold is not loaded, and `status` says so (it once showed the feed
/// as loaded, no problem); the last load stays, and a file that fits loads.
#[test]
fn a_feed_the_maps_cannot_hold_is_shown_not_loaded() {
    feed_too_big("ebpf");
}

#[test]
fn nftables_a_feed_the_maps_cannot_hold_is_shown_not_loaded() {
    feed_too_big("nftables");
}

fn feed_too_big(backend: &str) {
    let b = Bed::new(
        if backend == "ebpf" { "fb" } else { "fbn" },
        &[FEED_LISTED, CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    std::fs::write(&path, format!("{FEED_LISTED}\n")).unwrap();
    let spec = Spec {
        datapath: format!("{}maps = {{ deny = 64, allow = 64 }}\n", datapath(backend)),
        sections: sections(b.rbl_addr, &feed_section("big", &path, "cidr", "drop")),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    d.wait_for("feed loaded", LOADED_WITHIN, || entries(&d, "big") == 1);
    let many: String = (0..400)
        .map(|i| format!("198.18.{}.{}\n", i / 200, i % 200))
        .collect();
    replace(&path, &format!("{FEED_LISTED}\n{many}"));
    d.wait_for("the refusal in status", LOADED_WITHIN, || {
        d.feed("big")["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("not loaded"))
    });
    assert_eq!(entries(&d, "big"), 1);
    b.refused(FEED_LISTED, smtp4());
    let status = d.cli_ok(&["status"]);
    assert!(status.contains("not loaded"), "{status}");
    replace(&path, &format!("{FEED_LISTED}\n198.18.0.1\n"));
    d.wait_for("the smaller file loaded", LOADED_WITHIN, || {
        entries(&d, "big") == 2 && d.feed("big")["problem"].is_null()
    });
}

/// IPv6 senders rotate inside their /64: two addresses of one network with drop verdicts
/// give the network a drop verdict, so a third, never seen, is refused at its first SYN;
/// one listed address alone takes nobody with it, and an address's own verdict stays.
#[test]
fn rotating_ipv6_addresses_give_their_network_a_verdict() {
    rotation("ebpf");
}

#[test]
fn nftables_rotating_ipv6_addresses_give_their_network_a_verdict() {
    rotation("nftables");
}

fn rotation(backend: &str) {
    let (first, second, neighbour, newcomer) = (
        "2001:db8:1::40",
        "2001:db8:1::41",
        "2001:db8:1::42",
        "2001:db8:1::43",
    );
    let b = Bed::new(
        if backend == "ebpf" { "fr" } else { "frn" },
        &[first, second, neighbour, newcomer],
        &[RblZone::new(
            "bl.test",
            Duration::from_secs(900),
            vec![
                listing(first, "127.0.0.2", "rotating"),
                listing(second, "127.0.0.2", "rotating"),
            ],
        )],
    );
    let spec = Spec {
        datapath: datapath(backend),
        sections: sections(b.rbl_addr, ""),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    let smtp6 = Bed::smtp_for(first);
    let within = Duration::from_secs(10);
    b.connects(first, smtp6);
    assert_eq!(d.wait_verdict(first, within), "drop");
    // One listed address: its neighbour is looked up as usual (and is clean).
    b.connects(neighbour, smtp6);
    assert_eq!(d.wait_verdict(neighbour, within), "pass");
    b.connects(second, smtp6);
    assert_eq!(d.wait_verdict(second, within), "drop");
    d.wait_log("rotation: 2 addresses of 2001:db8:1::/64", 0, within);
    // Never seen, refused at its first SYN, and never looked up.
    b.refused(newcomer, smtp6);
    assert_eq!(d.verdict(newcomer), None);
    // The neighbour's own pass verdict stays in force.
    b.connects(neighbour, smtp6);
    let list = d.cli_ok(&["list", "--verdicts"]);
    assert!(
        list.lines()
            .any(|l| l.contains("2001:db8:1::/64") && l.contains("drop")),
        "{list}"
    );
    let check = d.cli_ok(&["check", newcomer, "--config", d.config.to_str().unwrap()]);
    assert!(
        check.contains("2001:db8:1::/64")
            && check.contains("2 addresses of 2001:db8:1::/64 hold drop verdicts"),
        "{check}"
    );
    // New settings by SIGHUP: the old networks' verdicts go and the networks are learnt
    // again from the verdicts held, as at a start (they once stayed, unexplained, and the
    // count started from nothing).
    let good = std::fs::read_to_string(&d.config).unwrap();
    let reload = |policy: &str| {
        let from = d.log_text().len();
        let text = good.replace("[policy]\n", &format!("[policy]\n{policy}\n"));
        std::fs::write(&d.config, text).unwrap();
        d.signal(nix::sys::signal::Signal::SIGHUP);
        d.wait_log("config reloaded", from, within);
        from
    };
    let from = reload("v6_rotation_prefix = 48");
    d.wait_log("rotation: 2 addresses of 2001:db8:1::/48", from, within);
    let list = d.cli_ok(&["list", "--verdicts"]);
    assert!(
        list.contains("2001:db8:1::/48") && !list.contains("2001:db8:1::/64"),
        "{list}"
    );
    b.refused(newcomer, smtp6);
    // Off: no network verdict is left to refuse a never-seen neighbour.
    reload("v6_rotation_after = 0");
    let list = d.cli_ok(&["list", "--verdicts"]);
    assert!(!list.contains("2001:db8:1::/"), "{list}");
    b.connects(newcomer, smtp6);
}

/// A million-line feed (IPv4 addresses and prefixes, as large drop lists are) is loaded
/// whole and enforced. How soon, and in how much memory: `cargo xtask bench feeds`.
#[test]
fn a_million_line_feed_is_loaded_and_enforced() {
    let b = Bed::new(
        "fm",
        &[FEED_LISTED, CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("million.txt");
    std::fs::write(&path, million_line_feed(FEED_LISTED)).unwrap();
    let spec = Spec {
        datapath: datapath("ebpf"),
        sections: sections(b.rbl_addr, &feed_section("big", &path, "cidr", "drop")),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    // A bound for a hang, not a speed (this is the debug build, about ten times slower
    // at reading the file than the release build the benchmark times).
    d.wait_for("a million entries", Duration::from_secs(120), || {
        entries(&d, "big") == 1_000_000
    });
    b.refused(FEED_LISTED, smtp4());
    b.connects(CLEAN, smtp4());
    // The peak RSS the README promises depends on the decision cache's slot array (16 MiB
    // by default) being mapped once: the kernel maps an array's every page at mmap, so each
    // handle mapping it again counted it in full (four mappings, 140 MiB at this feed).
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", d.pid())).unwrap();
    let big = large_bpf_map_mappings(&maps);
    assert_eq!(
        big.len(),
        1,
        "one writable mapping of a BPF map of 1 MiB or more (the decision cache's slots), \
         not {big:?}:\n{maps}"
    );
}

/// The sizes of the writable shared mappings of BPF maps of 1 MiB or more in a
/// `/proc/PID/maps` text (the ring buffer's are smaller, or read-only).
fn large_bpf_map_mappings(maps: &str) -> Vec<u64> {
    maps.lines()
        .filter(|l| l.ends_with("anon_inode:bpf-map"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (from, to) = range.split_once('-')?;
            let len = u64::from_str_radix(to, 16).ok()? - u64::from_str_radix(from, 16).ok()?;
            (perms.starts_with("rw") && len >= 1 << 20).then_some(len)
        })
        .collect()
}
