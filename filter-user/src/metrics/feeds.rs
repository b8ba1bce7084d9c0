//! Each blocklist feed (`status`'s feed lines): its entries, when it last loaded, the lines
//! its last load skipped, whether something is wrong with it — the last read not loaded
//! (file missing, held back by the guard, refused by the datapath) or the last load empty —
//! and its hits. Read from what the feeds publish at each read's outcome and at each census
//! (the minute sweep, `stats`, `status`): a scrape never waits for the daemon's loop, so a
//! feed's hits are as of the last census, up to a minute old.

use std::sync::{Arc, Mutex};

use ::metrics::{Unit, describe_gauge, gauge};
use anyhow::Result;

use super::Families;
use crate::control::protocol::FeedStatus;

const ENTRIES: &str = "mxscreen_feed_entries";
const LAST_LOAD: &str = "mxscreen_feed_last_load_timestamp_seconds";
const SKIPPED: &str = "mxscreen_feed_lines_skipped";
const PROBLEM: &str = "mxscreen_feed_problem";
const HITS: &str = "mxscreen_feed_hits";

/// The feeds' published state (`feeds::Published`: the feeds sit beside this module, not
/// below it, so the type is spelled out).
pub struct FeedFamilies(pub Arc<Mutex<Vec<FeedStatus>>>);

impl Families for FeedFamilies {
    fn describe(&self) {
        describe_gauge!(
            ENTRIES,
            Unit::Count,
            "Prefixes a feed holds in the datapath from its last load, by feed and action."
        );
        describe_gauge!(
            LAST_LOAD,
            Unit::Seconds,
            "Unix time of a feed's last load (0: not loaded since start)."
        );
        describe_gauge!(
            SKIPPED,
            Unit::Count,
            "Lines a feed's last load skipped as malformed."
        );
        describe_gauge!(
            PROBLEM,
            "1 while a feed's last read was not loaded (missing, unreadable, held back, refused) \
             or its last load holds no entries; 0 otherwise (status says why)."
        );
        describe_gauge!(
            HITS,
            Unit::Count,
            "SYNs a feed's entries decided, as the maps counted them at the daemon's last census \
             (at most a minute old); what status shows as its hits."
        );
    }

    fn update(&self) -> Result<()> {
        let feeds = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for f in feeds {
            let feed = f.name.clone();
            gauge!(ENTRIES, "feed" => feed.clone(), "action" => f.action.clone())
                .set(f.entries as f64);
            gauge!(LAST_LOAD, "feed" => feed.clone()).set(f.last_load.unwrap_or(0) as f64);
            gauge!(SKIPPED, "feed" => feed.clone()).set(f.errors as f64);
            gauge!(HITS, "feed" => feed.clone()).set(f.hits as f64);
            let trouble = f.problem.is_some() || f.warning.is_some();
            gauge!(PROBLEM, "feed" => feed).set(if trouble { 1.0 } else { 0.0 });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_in_trouble_is_one_series_at_one() {
        let published = Arc::new(Mutex::new(Vec::new()));
        *published.lock().unwrap() = vec![
            FeedStatus {
                name: "drop".into(),
                action: "drop".into(),
                entries: 1669,
                last_load: Some(1_700_000_000),
                errors: 2,
                hits: 42,
                ..Default::default()
            },
            FeedStatus {
                name: "edrop".into(),
                action: "drop".into(),
                problem: Some("file missing".into()),
                ..Default::default()
            },
            FeedStatus {
                name: "partners".into(),
                action: "allow".into(),
                last_load: Some(1_700_000_000),
                warning: Some("was loaded with no entries (an empty file)".into()),
                ..Default::default()
            },
        ];
        let text = crate::metrics::testing::render(&[&FeedFamilies(published)]);
        for line in [
            r#"mxscreen_feed_entries{feed="drop",action="drop"} 1669"#,
            r#"mxscreen_feed_last_load_timestamp_seconds{feed="drop"} 1700000000"#,
            r#"mxscreen_feed_lines_skipped{feed="drop"} 2"#,
            r#"mxscreen_feed_problem{feed="drop"} 0"#,
            r#"mxscreen_feed_hits{feed="drop"} 42"#,
            r#"mxscreen_feed_last_load_timestamp_seconds{feed="edrop"} 0"#,
            r#"mxscreen_feed_problem{feed="edrop"} 1"#,
            r#"mxscreen_feed_problem{feed="partners"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
