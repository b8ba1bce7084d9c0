//! Blocklist feeds (`[[lists.feed]]`): files of addresses and prefixes, read off the main
//! loop and loaded into the datapath's lists, then read again whenever the file changes.
//!
//! - this file: [`Feeds`], what the daemon holds: each feed's config and status, the watch,
//!   the debounce of change events and the reads in flight;
//! - [`read`]: reading a file, line by line in its format, into a prefix set;
//! - [`parse`]: the `cidr` and `spamhaus-drop` lines, and the prefixes every format shares;
//! - [`rbldnsd`]: rbldnsd's data syntax;
//! - [`watch`]: inotify on the feeds' directories.
//!
//! A file is read on a blocking thread; the set it yields goes to `DatapathMaps::feed_load`,
//! which writes only the difference from the last load — additions first, removals after —
//! so a prefix listed before and after is never out of the map, and an unchanged file writes
//! nothing.

pub mod parse;
mod rbldnsd;
pub mod read;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use filter_common::Table;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use self::{read::Parsed, watch::Watch};
use crate::{
    control::protocol::FeedStatus,
    datapath::DatapathMaps,
    reputation::config::{FeedAction, FeedConfig},
    state::unix_now,
};

/// How long a file must be quiet before it is read: a downloader writing in place triggers
/// many events; one read after the last is enough.
const SETTLE: Duration = Duration::from_millis(200);

/// The table a feed's action fills.
pub const fn table(action: FeedAction) -> Table {
    match action {
        FeedAction::Drop => Table::Deny,
        FeedAction::Limit => Table::Limit,
        FeedAction::Allow => Table::Allow,
    }
}

/// What is known about one feed.
#[derive(Clone, Debug, Default)]
struct Known {
    entries: u64,
    last_load: Option<u64>,
    malformed: u64,
    problem: Option<String>,
    /// Reads started; a result from an older one is dropped.
    reads: u64,
}

/// A finished read of feed `index`.
pub struct Read {
    index: usize,
    read: u64,
    name: String,
    path: PathBuf,
    result: std::io::Result<Parsed>,
    took: Duration,
}

/// The feeds the daemon loads and watches.
pub struct Feeds {
    configs: Vec<FeedConfig>,
    known: Vec<Known>,
    _watch: Option<Watch>,
    changes: UnboundedReceiver<usize>,
    changes_tx: UnboundedSender<usize>,
    due: BTreeMap<usize, Instant>,
    reads: UnboundedReceiver<Read>,
    reads_tx: UnboundedSender<Read>,
}

impl Default for Feeds {
    fn default() -> Self {
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let (reads_tx, reads) = mpsc::unbounded_channel();
        Self {
            configs: Vec::new(),
            known: Vec::new(),
            _watch: None,
            changes,
            changes_tx,
            due: BTreeMap::new(),
            reads,
            reads_tx,
        }
    }
}

impl Feeds {
    /// Takes a (new) list of feeds: every feed is read now (an unchanged one writes nothing),
    /// the watch follows the new files. Returns the names of feeds no longer configured, for
    /// the caller to drop from the maps.
    pub fn configure(&mut self, configs: Vec<FeedConfig>) -> Vec<String> {
        let gone = self
            .configs
            .iter()
            .filter(|old| !configs.iter().any(|c| c.name == old.name))
            .map(|c| c.name.clone())
            .collect();
        let known = configs
            .iter()
            .map(|c| {
                let old = self.configs.iter().position(|o| o.name == c.name);
                old.map(|i| self.known[i].clone()).unwrap_or_default()
            })
            .collect();
        // Fresh channels: events and reads of the old configuration are dropped with them.
        *self = Self {
            configs,
            known,
            ..Self::default()
        };
        let files: Vec<PathBuf> = self.configs.iter().map(|c| c.path.clone()).collect();
        if !files.is_empty() {
            match Watch::start(files, self.changes_tx.clone()) {
                Ok((watch, failed)) => {
                    for (dir, why) in failed {
                        tracing::warn!(dir = %dir.display(), error = %why, "cannot watch a feed directory; its feeds load at start and on SIGHUP only");
                    }
                    self._watch = Some(watch);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch feed files; feeds load at start and on SIGHUP only")
                }
            }
        }
        let now = Instant::now();
        self.due = (0..self.configs.len()).map(|i| (i, now)).collect();
        gone
    }

    /// The next finished read, handling change events and starting reads meanwhile.
    pub async fn next(&mut self) -> Read {
        loop {
            let next_due = self.due.values().min().copied();
            tokio::select! {
                Some(i) = self.changes.recv() => {
                    self.due.insert(i, Instant::now() + SETTLE);
                }
                Some(read) = self.reads.recv() => {
                    if self.known.get(read.index).is_some_and(|k| k.reads == read.read) {
                        return read;
                    }
                }
                _ = sleep_until(next_due) => {
                    let now = Instant::now();
                    let ready: Vec<usize> =
                        self.due.iter().filter(|(_, t)| **t <= now).map(|(i, _)| *i).collect();
                    for i in ready {
                        self.due.remove(&i);
                        self.start_read(i);
                    }
                }
            }
        }
    }

    fn start_read(&mut self, index: usize) {
        let Some(cfg) = self.configs.get(index).cloned() else {
            return;
        };
        self.known[index].reads += 1;
        let read = self.known[index].reads;
        let tx = self.reads_tx.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let result = read::read(&cfg.path, cfg.format);
            let _ = tx.send(Read {
                index,
                read,
                name: cfg.name,
                path: cfg.path,
                result,
                took: t.elapsed(),
            });
        });
    }

    /// Loads a finished read into the maps and logs what it did. A file that cannot be read
    /// keeps the entries of its last load.
    pub fn apply(&mut self, maps: &mut DatapathMaps, read: Read) -> Result<()> {
        let Some(cfg) = self.configs.get(read.index) else {
            return Ok(());
        };
        let known = &mut self.known[read.index];
        let parsed = match read.result {
            Ok(p) => p,
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    "file missing".to_owned()
                } else {
                    e.to_string()
                };
                tracing::warn!(feed = %read.name, path = %read.path.display(), error = %why, entries = known.entries, "feed not read; keeping the entries of its last load");
                known.problem = Some(why);
                return Ok(());
            }
        };
        for (line, why) in &parsed.errors {
            tracing::warn!(feed = %read.name, "feed line skipped: {}:{line}: {why}", read.path.display());
        }
        if parsed.malformed > parsed.errors.len() as u64 {
            tracing::warn!(feed = %read.name, "{} more malformed lines skipped in {}", parsed.malformed - parsed.errors.len() as u64, read.path.display());
        }
        let entries = parsed.set.len() as u64;
        let change = maps.feed_load(&cfg.name, table(cfg.action), parsed.set)?;
        *known = Known {
            entries,
            last_load: Some(unix_now()),
            malformed: parsed.malformed,
            problem: None,
            reads: known.reads,
        };
        tracing::info!(
            feed = %cfg.name,
            path = %cfg.path.display(),
            action = cfg.action.name(),
            entries,
            added = change.added,
            removed = change.removed,
            writes = change.writes,
            malformed = parsed.malformed,
            read_ms = read.took.as_millis() as u64,
            "feed loaded"
        );
        Ok(())
    }

    /// Each feed as `status` shows it.
    pub fn status(&self, maps: &DatapathMaps) -> Vec<FeedStatus> {
        self.configs
            .iter()
            .zip(&self.known)
            .map(|(c, k)| FeedStatus {
                name: c.name.clone(),
                path: c.path.display().to_string(),
                format: c.format.name().into(),
                action: c.action.name().into(),
                entries: k.entries,
                last_load: k.last_load,
                errors: k.malformed,
                problem: k.problem.clone(),
                hits: maps.feed_hits(&c.name).unwrap_or(0),
            })
            .collect()
    }
}

/// Sleeps until `t`, or forever.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
