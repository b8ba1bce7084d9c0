//! A feed inotify cannot see change is still read: its directory moved away and made anew
//! (a deploy tool's `mv feeds feeds.old; mkdir feeds`), or missing at start and created
//! later — the poll behind inotify finds both. A feed whose first load has no entries (an
//! error page saved before the daemon started) is shown as such in `status` and the
//! metrics, not as a healthy feed that happens to drop no one.

use std::{net::SocketAddr, time::Duration};

use mxscreen_tests::{
    bed::{Bed, smtp4},
    daemon::{MxDaemon, Spec},
    dns::RblZone,
    metrics::{samples, scrape},
    netns::SERVER_IFACE,
};

use super::{
    CLEAN, FEED_LATER, FEED_LISTED, FEED_LISTED_V6, LOADED_WITHIN, entries, feed_section, sections,
};

/// The feed poll's period (`feeds::watch::POLL`, 15 s) and a read after it.
const POLLED_WITHIN: Duration = Duration::from_secs(25);
const METRICS: &str = "127.0.0.1:9108";

#[test]
fn a_feed_inotify_cannot_see_is_polled_and_an_empty_first_load_is_shown() {
    let b = Bed::new(
        "fpl",
        &[FEED_LISTED, FEED_LISTED_V6, FEED_LATER, CLEAN],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    );
    let dir = tempfile::tempdir().unwrap();
    let feeds = dir.path().join("feeds");
    std::fs::create_dir(&feeds).unwrap();
    let moved = feeds.join("drop.txt");
    std::fs::write(&moved, format!("{FEED_LISTED}\n")).unwrap();
    let late = dir.path().join("late").join("drop.txt");
    let page = dir.path().join("page.txt");
    std::fs::write(
        &page,
        "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>bad gateway</body>\n</html>\n",
    )
    .unwrap();
    let spec = Spec {
        sections: sections(
            b.rbl_addr,
            &format!(
                "{}\n{}\n{}\n[metrics]\nlisten = \"{METRICS}\"\n",
                feed_section("moved", &moved, "cidr", "drop"),
                feed_section("late", &late, "cidr", "drop"),
                feed_section("page", &page, "cidr", "drop"),
            ),
        ),
        ..Default::default()
    };
    let d = MxDaemon::start(&b.wire.server, SERVER_IFACE, spec);
    d.wait_for("the feeds read", LOADED_WITHIN, || {
        entries(&d, "moved") == 1
            && d.feed("late")["problem"] == "file missing"
            && d.feed("page")["last_load"].as_u64().is_some()
    });
    // The error page loaded (a first load is taken as it is), and says what it is.
    let warning = d.feed("page")["warning"].as_str().unwrap_or("").to_owned();
    assert!(
        warning.starts_with("was loaded with no entries: all 4 lines malformed"),
        "{}",
        d.feed("page")
    );
    let status = d.cli_ok(&["status"]);
    assert!(status.contains(&format!("; {warning}")), "{status}");
    assert!(
        status.contains("last read not loaded: file missing (nothing loaded yet)"),
        "{status}"
    );
    let addr: SocketAddr = METRICS.parse().unwrap();
    let m = samples(&scrape(&b.wire.server, addr));
    for (series, value) in [
        (r#"mxscreen_feed_entries{feed="moved",action="drop"}"#, 1.0),
        (r#"mxscreen_feed_problem{feed="moved"}"#, 0.0),
        (r#"mxscreen_feed_problem{feed="late"}"#, 1.0),
        (r#"mxscreen_feed_problem{feed="page"}"#, 1.0),
        (r#"mxscreen_feed_lines_skipped{feed="page"}"#, 4.0),
        (
            r#"mxscreen_feed_last_load_timestamp_seconds{feed="late"}"#,
            0.0,
        ),
    ] {
        assert_eq!(m.get(series), Some(&value), "{series} in {m:#?}");
    }
    b.refused(FEED_LISTED, smtp4());

    let first_load = d.feed("moved")["last_load"].clone();
    // The directory moved away and made anew, the file in it listing another source; the
    // late feed's directory and file created. inotify watched neither.
    std::fs::rename(&feeds, dir.path().join("feeds.old")).unwrap();
    std::fs::create_dir(&feeds).unwrap();
    std::fs::write(&moved, format!("{FEED_LATER}\n")).unwrap();
    std::fs::create_dir(late.parent().unwrap()).unwrap();
    std::fs::write(&late, format!("{FEED_LISTED_V6}\n")).unwrap();
    d.wait_for("both read by the poll", POLLED_WITHIN, || {
        let (m, l) = (d.feed("moved"), d.feed("late"));
        m["last_load"] != first_load
            && m["problem"].is_null()
            && l["problem"].is_null()
            && entries(&d, "late") == 1
    });
    b.refused(FEED_LATER, smtp4());
    b.connects(FEED_LISTED, smtp4());
    b.refused(FEED_LISTED_V6, Bed::smtp_for(FEED_LISTED_V6));
    b.connects(CLEAN, smtp4());
    let m = samples(&scrape(&b.wire.server, addr));
    assert_eq!(
        m.get(r#"mxscreen_feed_problem{feed="late"}"#),
        Some(&0.0),
        "{m:#?}"
    );
}
