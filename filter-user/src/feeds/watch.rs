//! Noticing that a feed file changed: inotify (through the notify crate) on the directories
//! that hold the files, since downloaders replace a file by renaming a new one over it — a
//! watch on the file itself would follow the old inode and miss the new one — and, behind
//! it, a look at every file every [`POLL`].
//!
//! inotify watches the directory's inode as it was when the watch was added. A directory
//! moved away and made anew (a deploy tool's `mv feeds feeds.old; mkdir feeds`), a
//! symlinked release directory swapped, a symlinked file whose target is edited, a directory
//! missing at start and created later: none of these reaches the old watch. The poll
//! compares each path's identity (device, inode, size, modification and change times,
//! symlinks followed) with its last look and reports a difference, so such a file is read
//! within [`POLL`], and a file that appears after the start is loaded.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{
    Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode},
};
use tokio::sync::mpsc::UnboundedSender;

/// How often every feed path is looked at, behind inotify. A `stat` per feed: nothing, at
/// this pace; what inotify misses waits at most this long.
pub const POLL: Duration = Duration::from_secs(15);

/// Watches the directories of some files; sends a file's index whenever something happens to
/// it (created, written and closed, renamed into place, removed), or the poll finds it
/// changed. Dropping it stops both.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

impl Watch {
    /// Starts watching. Returns the watch and, per directory that could not be watched, why
    /// (its files are still polled).
    pub fn start(
        files: Vec<PathBuf>,
        tx: UnboundedSender<usize>,
    ) -> notify::Result<(Self, Vec<(PathBuf, String)>)> {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        spawn_poll(files.clone(), tx.clone());
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

/// What a look at a path tells apart: another file (inode, device), other contents (size,
/// times), or no file. The change time catches a rewrite that keeps size and mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// `path`'s identity, symlinks followed; `None` when there is nothing to read there.
fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// The poll, on a thread of its own: a `stat` on a hung network file system blocks it, not
/// the daemon's loop (the same reason files are read on threads). It ends at its first look
/// after the watch's channel closed, that is after a reload replaced the watch.
fn spawn_poll(files: Vec<PathBuf>, tx: UnboundedSender<usize>) {
    let poll = move || {
        let mut last: Vec<Option<Identity>> = files.iter().map(|f| identity(f)).collect();
        loop {
            std::thread::sleep(POLL);
            if tx.is_closed() {
                return;
            }
            for (i, (file, seen)) in files.iter().zip(&mut last).enumerate() {
                let now = identity(file);
                if now != *seen {
                    *seen = now;
                    let _ = tx.send(i);
                }
            }
        }
    };
    // Without the poll inotify still works; a thread that cannot start is only logged.
    if let Err(e) = std::thread::Builder::new()
        .name("mxscreen-feed-poll".into())
        .spawn(poll)
    {
        tracing::warn!(error = %e, "cannot start the feed poll; feeds are read on inotify events and SIGHUP only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_tells_a_replaced_or_rewritten_file_apart() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("feed.txt");
        assert_eq!(identity(&f), None, "no file, nothing to read");
        std::fs::write(&f, "192.0.2.1\n").unwrap();
        let first = identity(&f).expect("a file");
        assert_eq!(identity(&f), Some(first), "unchanged");
        // Renamed over, as downloaders do: another inode.
        let new = dir.path().join("feed.txt.new");
        std::fs::write(&new, "192.0.2.2\n").unwrap();
        std::fs::rename(&new, &f).unwrap();
        let second = identity(&f).unwrap();
        assert_ne!(second.ino, first.ino);
        // Through a symlink swapped to another target.
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(identity(&link), Some(second), "the target's identity");
        let other = dir.path().join("other.txt");
        std::fs::write(&other, "192.0.2.3\n").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&other, &link).unwrap();
        assert_eq!(identity(&link), identity(&other));
        assert_ne!(identity(&link), Some(second));
    }
}
