//! A feed a downloader mangled never opens or closes the gate by surprise: a catch-all entry
//! is refused (the rest of the file loads), an emptied file, an error page or a truncated
//! download keeps the last good load until `mxscreen feed reload NAME --force`, an endless
//! line is refused without being read into memory or logged whole, and a FIFO at a feed's
//! path is never opened, nor keeps SIGTERM from stopping the daemon.

use std::{path::Path, time::Duration};

use mxscreen_tests::{
    bed::{Bed, smtp4},
    daemon::{MxDaemon, Spec, text},
    dns::RblZone,
    netns::SERVER_IFACE,
};

use super::{
    CLEAN, FEED_LATER, FEED_LISTED, FEED_LISTED_V6, LOADED_WITHIN, entries, feed_section,
    feed_status, replace, sections,
};

const CLEAN_V6: &str = "2001:db8:1::32";

fn bed(tag: &str) -> Bed {
    Bed::new(
        tag,
        &[FEED_LISTED, FEED_LISTED_V6, FEED_LATER, CLEAN, CLEAN_V6],
        &[RblZone::new("bl.test", Duration::from_secs(900), vec![])],
    )
}

fn start(b: &Bed, feeds: &str) -> MxDaemon {
    let spec = Spec {
        sections: sections(b.rbl_addr, feeds),
        ..Default::default()
    };
    MxDaemon::start(&b.wire.server, SERVER_IFACE, spec)
}

/// `0.0.0.0/0` and `::/0` (or /1 halves, or 224.0.0.0/3) in a drop feed would drop every
/// clean sender: each is refused and logged as file:line, the feed's other entries load, and
/// status counts them. A feed's `widest_v4`/`widest_v6` move the bound, but a /0 never loads.
#[test]
fn entries_wider_than_the_feeds_bound_are_refused_and_the_rest_loads() {
    let b = bed("fw");
    let dir = tempfile::tempdir().unwrap();
    let mangled = dir.path().join("mangled.txt");
    std::fs::write(
        &mangled,
        format!(
            "# a drop list a broken script wrote\n{FEED_LISTED}\n0.0.0.0/0\n::/0\n0.0.0.0/1\n\
             128.0.0.0/1\n::/1\n8000::/1\n224.0.0.0/3\n10.0.0.0/8\n{FEED_LISTED_V6}\n"
        ),
    )
    .unwrap();
    let widened = dir.path().join("widened.txt");
    std::fs::write(&widened, "0.0.0.0/0\n::/0\n198.51.100.0/24\n").unwrap();
    let feeds = format!(
        "{}\n{}widest_v4 = 1\nwidest_v6 = 1\n",
        feed_section("mangled", &mangled, "cidr", "drop"),
        feed_section("widened", &widened, "cidr", "drop")
    );
    let d = start(&b, &feeds);
    d.wait_for("both feeds loaded", LOADED_WITHIN, || {
        entries(&d, "mangled") == 3 && entries(&d, "widened") == 1
    });
    b.connects(CLEAN, smtp4());
    b.connects(CLEAN_V6, Bed::smtp_for(CLEAN_V6));
    b.refused(FEED_LISTED, smtp4());
    b.refused(FEED_LISTED_V6, Bed::smtp_for(FEED_LISTED_V6));
    let (m, w) = (d.feed("mangled"), d.feed("widened"));
    assert_eq!(
        (m["refused"].as_u64(), m["errors"].as_u64()),
        (Some(7), Some(0)),
        "{m}"
    );
    assert_eq!(w["refused"].as_u64(), Some(2), "{w}");
    let log = d.log_text();
    for (line, entry, bound) in [
        (3, "0.0.0.0/0", "/8"),
        (4, "::/0", "/16"),
        (9, "224.0.0.0/3", "/8"),
    ] {
        let at = format!(
            "{}:{line}: {entry} is wider than {bound}",
            mangled.display()
        );
        assert!(log.contains(&at), "{at} not in the log:\n{log}");
    }
    let at = format!("{}:1: 0.0.0.0/0 is wider than /1", widened.display());
    assert!(log.contains(&at), "{at} not in the log:\n{log}");
    let status = d.cli_ok(&["status"]);
    assert!(
        status.contains("mangled: 3 entries") && status.contains("7 entries refused as too wide"),
        "{status}"
    );
}

const HTML_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>503 Service Temporarily \
     Unavailable</title></head>\n<body>\n<center><h1>503 Service Temporarily Unavailable</h1>\
     </center>\n<hr><center>nginx</center>\n</body>\n</html>\n";

/// Forty entries, [`FEED_LISTED`] among them.
fn good_list() -> String {
    let mut text = format!("# a good download\n{FEED_LISTED}\n");
    for i in 1..40 {
        text.push_str(&format!("198.51.100.{i}\n"));
    }
    text
}

/// Replaces the feed file and waits until the daemon refused to load it; returns the log
/// from the replacement on.
fn replace_refused(d: &MxDaemon, path: &Path, content: &str) -> String {
    let from = d.log_text().len();
    replace(path, content);
    d.wait_log("keeping the last good load", from, LOADED_WITHIN);
    d.log_text()[from..].to_owned()
}

/// What `wget -O` leaves after a failed download (an empty file), an HTTP error page saved
/// as the list, and a truncated download each keep the last good load — logged, and shown
/// by `status` — until `mxscreen feed reload NAME --force` accepts the new file once.
#[test]
fn an_emptied_file_or_an_error_page_keeps_the_last_good_load() {
    let b = bed("fe");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.txt");
    std::fs::write(&path, good_list()).unwrap();
    let d = start(&b, &feed_section("dl", &path, "cidr", "drop"));
    d.wait_for("the good list loaded", LOADED_WITHIN, || {
        entries(&d, "dl") == 40
    });
    b.refused(FEED_LISTED, smtp4());

    for (what, content, why) in [
        ("an empty file", "", "no entries"),
        ("an error page", HTML_ERROR_PAGE, "no entries"),
    ] {
        let log = replace_refused(&d, &path, content);
        assert!(log.contains(why), "{what}: {log}");
        let f = d.feed("dl");
        assert_eq!(f["entries"].as_u64(), Some(40), "{what}: {f}");
        assert!(
            f["problem"].as_str().is_some_and(|p| p.contains(why)),
            "{what}: {f}"
        );
        b.refused(FEED_LISTED, smtp4());
    }
    let status = d.cli_ok(&["status"]);
    assert!(
        status.contains("dl: 40 entries") && status.contains("no entries"),
        "{status}"
    );

    // A truncated download: ten of the forty entries, FEED_LISTED not among them.
    let truncated: String = (1..11).map(|i| format!("198.51.100.{i}\n")).collect();
    let log = replace_refused(&d, &path, &truncated);
    assert!(
        log.contains("10 entries where the last good load had 40"),
        "{log}"
    );
    b.refused(FEED_LISTED, smtp4());
    // Not forced, a reload keeps refusing it, and says so (exit 1).
    let out = d.cli(&["feed", "reload", "dl"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("keeping the last good load"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(&d, "dl"), 40);
    // Forced, it is accepted once.
    let out = d.cli_ok(&["feed", "reload", "dl", "--force"]);
    assert!(out.contains("10 entries"), "{out}");
    let f = d.feed("dl");
    assert!(
        f["entries"].as_u64() == Some(10) && f["problem"].is_null(),
        "{f}"
    );
    b.connects(FEED_LISTED, smtp4());
    // Once: the next emptied file is refused again.
    replace_refused(&d, &path, "");
    assert_eq!(entries(&d, "dl"), 10);

    let out = d.cli(&["feed", "reload", "nope"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no feed named"),
        "{}",
        text(&out)
    );
}

/// A 50 MB "line" without a newline (a binary saved as the list) is refused without being
/// read into memory, and its log line is cut to a sane length; the rest of the file loads.
#[test]
fn an_endless_line_is_refused_unread_and_logged_cut() {
    let b = bed("fl");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.txt");
    std::fs::write(&path, format!("{FEED_LISTED}\n")).unwrap();
    let d = start(&b, &feed_section("long", &path, "cidr", "drop"));
    d.wait_for("the feed loaded", LOADED_WITHIN, || {
        entries(&d, "long") == 1
    });
    let peak_before = d.memory_kib("VmHWM:");

    let from = d.log_text().len();
    let mut content = format!("{FEED_LATER}\n").into_bytes();
    content.resize(content.len() + (50 << 20), b'7');
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, &content).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    d.wait_log("feed loaded", from, Duration::from_secs(20));

    let f = d.feed("long");
    assert_eq!(
        (f["entries"].as_u64(), f["errors"].as_u64()),
        (Some(1), Some(1)),
        "{f}"
    );
    b.refused(FEED_LATER, smtp4());
    b.connects(FEED_LISTED, smtp4());
    let log = d.log_text();
    let longest = log[from..].lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1024, "a log line of {longest} bytes");
    assert!(
        log[from..].contains(&format!("{}:2: a line longer than", path.display())),
        "{}",
        &log[from..]
    );
    let grew = d.memory_kib("VmHWM:").saturating_sub(peak_before);
    assert!(
        grew < 16 * 1024,
        "peak RSS grew by {grew} KiB reading the line"
    );
}

/// A FIFO at a feed's path (a downloader piping into it, or a mistake) is never opened — an
/// open() would block the reading thread until someone writes — and is reported; the other
/// feeds load; and SIGTERM still stops the daemon at once.
#[test]
fn a_fifo_at_a_feeds_path_is_never_opened_and_sigterm_still_stops_the_daemon() {
    let b = bed("ff");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.txt");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let regular = dir.path().join("regular.txt");
    std::fs::write(&regular, format!("{FEED_LISTED}\n")).unwrap();
    let feeds = format!(
        "{}\n{}",
        feed_section("fifo", &fifo, "cidr", "drop"),
        feed_section("regular", &regular, "cidr", "drop")
    );
    let mut d = start(&b, &feeds);
    d.wait_for("the FIFO reported", LOADED_WITHIN, || {
        feed_status(&d, "fifo").is_some_and(|f| {
            f["problem"]
                .as_str()
                .is_some_and(|p| p.contains("not a regular file"))
        })
    });
    d.wait_for("the regular feed loaded", LOADED_WITHIN, || {
        entries(&d, "regular") == 1
    });
    b.refused(FEED_LISTED, smtp4());
    assert!(
        d.log_text().contains("not a regular file (a FIFO)"),
        "{}",
        d.log_text()
    );
    // A reload reads every feed again: the FIFO is passed over again, nothing hangs.
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, LOADED_WITHIN);
    d.wait_log("not a regular file", from, LOADED_WITHIN);
    let stopping = std::time::Instant::now();
    d.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        stopping.elapsed()
    );
}
