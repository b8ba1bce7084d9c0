//! Noticing that a feed file changed: inotify (through the notify crate) on the directories
//! that hold the files, since downloaders replace a file by renaming a new one over it — a
//! watch on the file itself would follow the old inode and miss the new one.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use notify::{
    Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode},
};
use tokio::sync::mpsc::UnboundedSender;

/// Watches the directories of some files; sends a file's index whenever something happens to
/// it (created, written and closed, renamed into place, removed). Dropping it stops.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

impl Watch {
    /// Starts watching. Returns the watch and, per directory that could not be watched, why.
    pub fn start(
        files: Vec<PathBuf>,
        tx: UnboundedSender<usize>,
    ) -> notify::Result<(Self, Vec<(PathBuf, String)>)> {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        let handler = move |event: notify::Result<Event>| {
            let Ok(event) = event else {
                return;
            };
            if !touches(&event.kind) {
                return;
            }
            for path in &event.paths {
                for (i, f) in files.iter().enumerate() {
                    if path == f {
                        let _ = tx.send(i);
                    }
                }
            }
        };
        let mut watcher = notify::recommended_watcher(handler)?;
        let mut failed = Vec::new();
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                failed.push((dir, e.to_string()));
            }
        }
        Ok((Self { _watcher: watcher }, failed))
    }
}

/// Whether an event can change what the file holds: everything but opening and reading it.
fn touches(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
