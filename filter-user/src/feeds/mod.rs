//! Blocklist feeds (`[[lists.feed]]`): files of addresses and prefixes, read off the main
//! loop and loaded into the datapath's lists, then read again whenever the file changes.
//!
//! - this file: [`Feeds`], what the daemon holds: each feed's config and status, the watch,
//!   the debounce of change events and the reads in flight;
//! - [`read`]: reading a file, line by line in its format, into a prefix set, entries wider
//!   than the feed's bound refused;
//! - [`parse`]: the `cidr` and `spamhaus-drop` lines, and the prefixes every format shares;
//! - [`file`]: opening only regular files, lines read with a bound;
//! - [`guard`]: whether a read lost so much that it is held back (emptied file, error page);
//! - [`rbldnsd`]: rbldnsd's data syntax;
//! - [`watch`]: inotify on the feeds' directories.
//!
//! A file is read on a thread of its own, which nothing waits for: a read that never ends
//! (a hung network file system) neither blocks the main loop nor delays shutdown. The set it
//! yields goes to `DatapathMaps::feed_load`, which writes only the difference from the last
//! load — additions first, removals after — so a prefix listed before and after is never out
//! of the map, and an unchanged file writes nothing.

mod file;
mod guard;
pub mod parse;
mod rbldnsd;
pub mod read;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use filter_common::Table;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use self::{parse::Widest, read::Parsed, watch::Watch};
use crate::{
    control::{
        protocol::{Body, FeedStatus, Reply},
        server::Answer,
    },
    datapath::Datapath,
    reputation::config::{FeedAction, FeedConfig},
    state::unix_now,
};

/// How long a file must be quiet before it is read: a downloader writing in place triggers
/// many events; one read after the last is enough.
const SETTLE: Duration = Duration::from_millis(200);

/// When a read the datapath refused to load is read again (see [`Feeds::apply`]).
const LOAD_RETRY: Duration = Duration::from_secs(60);

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
    refused: u64,
    problem: Option<String>,
    /// A load taken with no entries: [`FeedStatus::warning`].
    warning: Option<String>,
    /// Reads started; a result from an older one is dropped.
    reads: u64,
    /// The next read is loaded even if the guard would hold it (`feed reload --force`).
    force: bool,
    /// The SYNs its entries decided, as the maps counted them at the last census (what
    /// `status` and a metrics scrape show).
    hits: u64,
}

/// What `feed reload` is told once the read it asked for is done: a sentence, or why the
/// file was not loaded.
pub type Outcome = Result<String, String>;
/// Who waits for a feed's next read to be done.
type Waiter = Box<dyn FnOnce(Outcome) + Send>;

/// A finished read of feed `index`.
pub struct Read {
    index: usize,
    read: u64,
    name: String,
    path: PathBuf,
    result: std::io::Result<Parsed>,
    took: Duration,
}

/// Each feed as of its last read, for a metrics scrape (which never waits for the daemon's
/// loop); `hits` is left 0 there, since it is read from the maps.
pub type Published = Arc<Mutex<Vec<FeedStatus>>>;

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
    /// `feed reload` requests waiting for their feed's next read, by feed name.
    waiters: Vec<(String, Waiter)>,
    published: Published,
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
            waiters: Vec::new(),
            published: Published::default(),
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
        // A `feed reload` waiting on a feed still configured gets the read started below.
        let mut waiters = std::mem::take(&mut self.waiters);
        for (name, tell) in waiters.extract_if(.., |(n, _)| !configs.iter().any(|c| c.name == *n)) {
            tell(Err(format!("{name} is no longer configured")));
        }
        *self = Self {
            configs,
            known,
            waiters,
            published: self.published.clone(),
            ..Self::default()
        };
        self.publish();
        let files: Vec<PathBuf> = self.configs.iter().map(|c| c.path.clone()).collect();
        if !files.is_empty() {
            match Watch::start(files, self.changes_tx.clone()) {
                Ok((watch, failed)) => {
                    for (dir, why) in failed {
                        tracing::warn!(dir = %dir.display(), error = %why, "cannot watch a feed directory; its feeds are read when the poll finds them changed (every {})", crate::duration::format(watch::POLL));
                    }
                    self._watch = Some(watch);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch feed files; they are read when the poll finds them changed (every {})", crate::duration::format(watch::POLL))
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

    /// `mxscreen feed reload NAME [--force]`: reads the feed now; `tell` learns how it went
    /// once the read is done. Forced, the read is loaded even if the guard would hold it.
    pub fn reload(&mut self, name: &str, force: bool, tell: Waiter) {
        let Some(index) = self.configs.iter().position(|c| c.name == name) else {
            let names: Vec<&str> = self.configs.iter().map(|c| c.name.as_str()).collect();
            let known = if names.is_empty() {
                "no feeds are configured".to_owned()
            } else {
                format!("the feeds are {}", names.join(", "))
            };
            tell(Err(format!("no feed named {name:?}; {known}")));
            return;
        };
        self.known[index].force |= force;
        self.waiters.push((name.to_owned(), tell));
        self.due.insert(index, Instant::now());
    }

    /// [`Feeds::reload`] for the control socket: the reply is sent once the read is done.
    pub fn reload_answer(&mut self, name: &str, force: bool) -> Answer {
        let (tx, rx) = mpsc::channel(1);
        let tell = move |outcome: Outcome| {
            let reply = match outcome {
                Ok(message) => Reply::Ok {
                    body: Body::Done { message },
                },
                Err(message) => Reply::Error { message },
            };
            let _ = tx.try_send(reply);
        };
        self.reload(name, force, Box::new(tell));
        Answer::Stream(rx)
    }

    /// Reads feed `index` on a thread of its own (see the module comment); its result comes
    /// back through `reads`.
    fn start_read(&mut self, index: usize) {
        let Some(cfg) = self.configs.get(index).cloned() else {
            return;
        };
        self.known[index].reads += 1;
        let read = self.known[index].reads;
        let tx = self.reads_tx.clone();
        let widest = Widest {
            v4: cfg.widest_v4,
            v6: cfg.widest_v6,
        };
        let reader = move || {
            let t = Instant::now();
            let result = read::read(&cfg.path, cfg.format, widest);
            let _ = tx.send(Read {
                index,
                read,
                name: cfg.name,
                path: cfg.path,
                result,
                took: t.elapsed(),
            });
        };
        // Detached: the process exits without waiting for it.
        if let Err(e) = std::thread::Builder::new()
            .name("mxscreen-feed".into())
            .spawn(reader)
        {
            tracing::warn!(feed = %self.configs[index].name, error = %e, "cannot start a thread to read a feed; retrying in a minute");
            self.due
                .insert(index, Instant::now() + Duration::from_secs(60));
        }
    }

    /// Loads a finished read into the maps and logs what it did. A file that cannot be read
    /// keeps the entries of its last load, and so does one the [`guard`] holds back.
    pub fn apply(&mut self, maps: &mut dyn Datapath, read: Read) -> Result<()> {
        let Some(cfg) = self.configs.get(read.index).cloned() else {
            return Ok(());
        };
        let Read {
            index,
            name,
            path,
            result,
            took,
            ..
        } = read;
        let force = std::mem::take(&mut self.known[index].force);
        let parsed = match result {
            Ok(p) => p,
            Err(e) => {
                self.not_read(index, &e);
                return Ok(());
            }
        };
        log_skipped(&name, &path, &parsed);
        let known = &self.known[index];
        let previous = known.last_load.map(|_| known.entries);
        if let Some(why) = guard::holds(previous, &parsed, cfg.max_shrink).filter(|_| !force) {
            self.held(index, &why);
            return Ok(());
        }
        let entries = parsed.set.len() as u64;
        // Taken (a first load, or forced) yet empty: it drops, limits or allows no one, which
        // `status` and the metrics say, not only the log.
        let warning = (entries == 0).then(|| empty_load(&parsed));
        if let Some(w) = &warning {
            tracing::warn!(feed = %name, path = %path.display(), lines = parsed.lines, "the feed {w}");
        }
        let change = match maps.feed_load(&name, table(cfg.action), parsed.set) {
            Ok(c) => c,
            Err(e) => {
                // The last load stays (a refused write changes nothing). Read again later,
                // unchanged file or not: the refusal may pass (a firewall reload deleted the
                // table mid-write, memory came back), and `status` says why until then.
                self.known[index].problem = Some(format!(
                    "not loaded: {e:#}; keeping the last load, reading it again in {}",
                    crate::duration::format(LOAD_RETRY)
                ));
                self.due.insert(index, Instant::now() + LOAD_RETRY);
                self.tell(&name, Err(format!("{name}: not loaded: {e:#}")));
                return Err(e);
            }
        };
        self.known[index] = Known {
            entries,
            last_load: Some(unix_now()),
            malformed: parsed.malformed,
            refused: parsed.refused,
            problem: None,
            warning,
            reads: self.known[index].reads,
            force: false,
            hits: self.known[index].hits,
        };
        tracing::info!(
            feed = %name,
            path = %path.display(),
            action = cfg.action.name(),
            entries,
            added = change.added,
            removed = change.removed,
            writes = change.writes,
            malformed = parsed.malformed,
            refused = parsed.refused,
            forced = force,
            read_ms = took.as_millis() as u64,
            "feed loaded"
        );
        let was = previous.map_or(String::new(), |p| format!(" (was {p})"));
        let forced = if force { ", accepted by --force" } else { "" };
        self.tell(
            &name,
            Ok(format!("{name}: loaded {entries} entries{was}{forced}")),
        );
        Ok(())
    }

    /// A read that failed: the last load stays; `status` and `feed reload` say why.
    fn not_read(&mut self, index: usize, e: &std::io::Error) {
        let cfg = &self.configs[index];
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "file missing".to_owned()
        } else {
            e.to_string()
        };
        let known = &mut self.known[index];
        tracing::warn!(feed = %cfg.name, path = %cfg.path.display(), error = %why, entries = known.entries, "feed not read; keeping the entries of its last load");
        known.problem = Some(why.clone());
        let name = cfg.name.clone();
        self.tell(&name, Err(format!("{name} not read: {why}")));
    }

    /// A read the guard holds back: the last good load stays; `status` and `feed reload`
    /// say why.
    fn held(&mut self, index: usize, why: &str) {
        let cfg = &self.configs[index];
        let name = cfg.name.clone();
        let why = format!(
            "{why}: keeping the last good load; `mxscreen feed reload {name} --force` accepts it"
        );
        tracing::warn!(feed = %name, path = %cfg.path.display(), "feed not loaded, {why}");
        self.known[index].problem = Some(why.clone());
        self.tell(&name, Err(format!("{name}: not loaded: {why}")));
    }

    /// Tells whoever waits for feed `name`'s read how it went, and the metrics what it
    /// changed (every read's outcome ends here).
    fn tell(&mut self, name: &str, outcome: Outcome) {
        for (_, tell) in self.waiters.extract_if(.., |(n, _)| n == name) {
            tell(outcome.clone());
        }
        self.publish();
    }

    /// Reads each feed's hits from the maps for `status` and the metrics (the daemon's
    /// census: at the minute sweep, `stats` and `status`). A feed whose hits cannot be read
    /// keeps its last.
    pub fn count_hits(&mut self, maps: &dyn Datapath) {
        for (c, k) in self.configs.iter().zip(&mut self.known) {
            if let Ok(n) = maps.feed_hits(&c.name) {
                k.hits = n;
            }
        }
        self.publish();
    }

    /// What a metrics scrape reads; see [`Published`].
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    fn publish(&self) {
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = self.status();
    }

    /// Each feed as `status` shows it, with the hits [`Self::count_hits`] last read (the
    /// daemon's `status` takes its census first, so they are read once, now).
    pub fn status(&self) -> Vec<FeedStatus> {
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
                refused: k.refused,
                problem: k.problem.clone(),
                warning: k.warning.clone(),
                hits: k.hits,
            })
            .collect()
    }
}

/// What `status` says of a load with no entries, and why it has none.
fn empty_load(parsed: &Parsed) -> String {
    match (parsed.malformed, parsed.refused) {
        (0, 0) => "was loaded with no entries (an empty file)".to_owned(),
        (m, 0) => format!(
            "was loaded with no entries: all {m} lines malformed (an error page or another file saved as the list?)"
        ),
        (m, r) => format!(
            "was loaded with no entries: {m} lines malformed, {r} entries refused as too wide"
        ),
    }
}

/// Logs the lines a read skipped and the entries it refused, each as file:line (the first
/// [`parse::KEPT_ERRORS`] of each, then how many more).
fn log_skipped(name: &str, path: &std::path::Path, parsed: &Parsed) {
    let path = path.display();
    for (line, why) in &parsed.errors {
        tracing::warn!(feed = %name, "feed line skipped: {path}:{line}: {why}");
    }
    if parsed.malformed > parsed.errors.len() as u64 {
        let more = parsed.malformed - parsed.errors.len() as u64;
        tracing::warn!(feed = %name, "{more} more malformed lines skipped in {path}");
    }
    for (line, why) in &parsed.refusals {
        tracing::warn!(feed = %name, "feed entry refused: {path}:{line}: {why} (lists.feed widest_v4/widest_v6)");
    }
    if parsed.refused > parsed.refusals.len() as u64 {
        let more = parsed.refused - parsed.refusals.len() as u64;
        tracing::warn!(feed = %name, "{more} more entries refused as too wide in {path}");
    }
}

/// Sleeps until `t`, or forever.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
