//! Real feeds, kept working: every file in `../shared/data/feeds/` (beside the checkout; see
//! its SOURCES.md) loads through the daemon, as a new user would configure it, with exactly
//! its entries, no line skipped, and only the catch-alls refused; `check` finds addresses of
//! it in the datapath's lists and others not. The files are read where they are, never copied
//! into the repository.
//!
//! The expected numbers were counted independently of mxscreen (a Python reading of each
//! format: non-comment lines, duplicates removed, entries wider than /8 or /16 refused).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use mxscreen_tests::{
    bed::Bed,
    daemon::{MxDaemon, Spec},
    dns::RblZone,
    netns::SERVER_IFACE,
};

use super::{CLEAN, feed_section, feed_status, replace, sections};

/// One shared file and what loading it must give.
struct SharedFeed {
    file: &'static str,
    format: &'static str,
    entries: u64,
    /// Catch-all entries refused by the default bounds (/8, /16).
    refused: u64,
    /// Addresses the file lists, with the entry that lists them.
    listed: &'static [(&'static str, &'static str)],
}

const SHARED: &[SharedFeed] = &[
    SharedFeed {
        file: "firehol/firehol_level1.netset",
        format: "cidr",
        // 4,631 entries; 224.0.0.0/3 (multicast and class E) is a catch-all.
        entries: 4_630,
        refused: 1,
        listed: &[
            ("1.10.16.9", "1.10.16.0/20"),
            ("223.254.1.1", "223.254.0.0/16"),
        ],
    },
    SharedFeed {
        file: "firehol/firehol_level2.netset",
        format: "cidr",
        entries: 17_924,
        refused: 0,
        listed: &[("1.12.48.131", "1.12.48.131/32")],
    },
    SharedFeed {
        file: "firehol/firehol_level3.netset",
        format: "cidr",
        entries: 12_917,
        refused: 0,
        listed: &[("99.199.186.159", "99.199.186.159/32")],
    },
    SharedFeed {
        file: "firehol/firehol_level4.netset",
        format: "cidr",
        entries: 131_420,
        refused: 0,
        listed: &[
            ("1.0.170.50", "1.0.170.50/32"),
            ("104.239.41.123", "104.239.41.123/32"),
        ],
    },
    SharedFeed {
        file: "firehol/spamhaus_drop.netset",
        format: "cidr",
        entries: 1_599,
        refused: 0,
        listed: &[("168.151.240.77", "168.151.240.0/21")],
    },
    SharedFeed {
        file: "firehol/spamhaus_edrop.netset",
        format: "cidr",
        entries: 336,
        refused: 0,
        listed: &[("111.68.76.5", "111.68.76.0/24")],
    },
    SharedFeed {
        file: "firehol/blocklist_de.ipset",
        format: "cidr",
        entries: 24_880,
        refused: 0,
        listed: &[("108.62.62.221", "108.62.62.221/32")],
    },
    SharedFeed {
        file: "firehol/blocklist_de_mail.ipset",
        format: "cidr",
        entries: 12_200,
        refused: 0,
        listed: &[("223.236.99.217", "223.236.99.217/32")],
    },
    SharedFeed {
        file: "firehol/dshield.netset",
        format: "cidr",
        entries: 20,
        refused: 0,
        listed: &[("91.230.168.200", "91.230.168.0/24")],
    },
    SharedFeed {
        file: "spamhaus/drop.txt",
        format: "spamhaus-drop",
        entries: 1_385,
        refused: 0,
        listed: &[("168.151.56.1", "168.151.56.0/21")],
    },
    SharedFeed {
        file: "spamhaus/dropv6.txt",
        format: "spamhaus-drop",
        entries: 78,
        refused: 0,
        listed: &[
            ("2a07:7700::1", "2a07:7700::/29"),
            ("2c0f:6c0::9", "2c0f:6c0::/28"),
        ],
    },
    SharedFeed {
        file: "spamhaus/edrop.txt",
        format: "spamhaus-drop",
        entries: 289,
        refused: 0,
        listed: &[("113.26.202.3", "113.26.202.0/24")],
    },
    SharedFeed {
        file: "spamhaus/edrop-merged-notice.txt",
        format: "spamhaus-drop",
        entries: 0,
        refused: 0,
        listed: &[],
    },
    SharedFeed {
        file: "spamhaus/drop_v4.json",
        // 1,670 records, one of them twice.
        format: "spamhaus-drop",
        entries: 1_669,
        refused: 0,
        listed: &[("168.151.145.4", "168.151.145.0/24")],
    },
    SharedFeed {
        file: "spamhaus/drop_v4-2025-04-15.json",
        format: "spamhaus-drop",
        entries: 1_406,
        refused: 0,
        listed: &[("168.196.236.1", "168.196.236.0/22")],
    },
    SharedFeed {
        file: "rbldnsd/expurgate-running-config.combined",
        format: "rbldnsd",
        // 307 entry lines, 4 of them repeated; eight `0.0.0.0/1 128.0.0.0/1 ::/0` catch-alls.
        entries: 279,
        refused: 24,
        listed: &[
            ("108.177.8.1", "108.177.8.0/21"),
            ("149.96.220.2", "149.96.220.2/32"),
        ],
    },
    SharedFeed {
        file: "rbldnsd/expurgate-spf-protection-outlook-com.combined",
        format: "rbldnsd",
        entries: 9,
        refused: 3,
        listed: &[
            ("40.107.3.4", "40.107.0.0/16"),
            ("2a01:111:f400::1", "2a01:111:f400::/48"),
        ],
    },
];

/// Listed by none of the files (and, for the rbldnsd data, what its catch-alls would have
/// taken).
const UNLISTED: &[&str] = &["9.9.9.9", "2620:fe::fe"];

/// `../shared/data/feeds` beside the workspace root, as CI checks it out.
fn shared_feeds() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let dir = root.join("../shared/data/feeds");
    assert!(
        dir.join("SOURCES.md").is_file(),
        "the shared feed files are missing: {} must hold shared/data/feeds (see its SOURCES.md)",
        dir.display()
    );
    dir
}

/// The feed's name in the config: the file name, made plain.
fn name_of(file: &str) -> String {
    file.rsplit('/')
        .next()
        .unwrap()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
}

/// What the running daemon holds for `ip` (`check --json`'s `daemon.blocked`).
fn blocked(d: &MxDaemon, ip: &str) -> serde_json::Value {
    let out = d.cli_ok(&[
        "check",
        ip,
        "--json",
        "--config",
        d.config.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("check --json");
    v["daemon"]["blocked"].clone()
}

/// Loads one feed as the only one configured (a SIGHUP reload) and waits for its first load.
fn load(d: &MxDaemon, rbl: std::net::SocketAddr, name: &str, path: &Path, format: &str) {
    let from = d.log_text().len();
    d.write_config(&sections(rbl, &feed_section(name, path, format, "drop")));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, Duration::from_secs(10));
    d.wait_for(&format!("{name} loaded"), Duration::from_secs(20), || {
        feed_status(d, name).is_some_and(|f| !f["last_load"].is_null())
    });
}

#[test]
fn every_shared_feed_loads_with_its_exact_entries() {
    let dir = shared_feeds();
    let b = Bed::new(
        "fs",
        &[CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let spec = Spec {
        sections: sections(b.rbl_addr, ""),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    for s in SHARED {
        let name = name_of(s.file);
        load(&d, b.rbl_addr, &name, &dir.join(s.file), s.format);
        let f = d.feed(&name);
        assert_eq!(
            (
                f["entries"].as_u64(),
                f["errors"].as_u64(),
                f["refused"].as_u64()
            ),
            (Some(s.entries), Some(0), Some(s.refused)),
            "{}: {f}",
            s.file
        );
        assert!(f["problem"].is_null(), "{}: {f}", s.file);
        for (ip, net) in s.listed {
            let held = blocked(&d, ip);
            assert!(
                held["net"] == *net && held["feed"] == name.as_str(),
                "{}: {ip} should be blocked by {net}: {held}",
                s.file
            );
        }
        for ip in UNLISTED {
            assert!(blocked(&d, ip).is_null(), "{}: {ip} is not listed", s.file);
        }
    }
}

/// Spamhaus merged EDROP into DROP and replaced edrop.txt by a notice without entries: a
/// downloader that keeps fetching it would empty the feed. The last good load stays until the
/// operator accepts the change (`feed reload --force`), and then the feed is empty.
#[test]
fn edrop_becoming_the_merge_notice_keeps_its_entries_until_forced() {
    let shared = shared_feeds();
    let b = Bed::new(
        "fn",
        &[CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edrop.txt");
    std::fs::copy(shared.join("spamhaus/edrop.txt"), &path).unwrap();
    let spec = Spec {
        sections: sections(
            b.rbl_addr,
            &feed_section("edrop", &path, "spamhaus-drop", "drop"),
        ),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    d.wait_for("edrop loaded", Duration::from_secs(10), || {
        super::entries(&d, "edrop") == 289
    });
    let from = d.log_text().len();
    let notice = std::fs::read_to_string(shared.join("spamhaus/edrop-merged-notice.txt")).unwrap();
    replace(&path, &notice);
    d.wait_log("keeping the last good load", from, Duration::from_secs(10));
    assert_eq!(super::entries(&d, "edrop"), 289);
    assert_eq!(blocked(&d, "113.26.202.3")["feed"], "edrop");
    let out = d.cli_ok(&["feed", "reload", "edrop", "--force"]);
    assert!(out.contains("0 entries"), "{out}");
    assert_eq!(super::entries(&d, "edrop"), 0);
    assert!(blocked(&d, "113.26.202.3").is_null());
}
