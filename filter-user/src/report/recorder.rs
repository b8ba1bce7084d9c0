//! The daemon's side of the decision log: the verdict writer hands each drop and limit
//! verdict to [`Recorder::record`], which queues it for a thread of its own that appends it
//! to the [`DecisionLog`]. The reactor never waits on the disk: a slow or full disk loses
//! decisions (counted, and said once in the log), never screening time. The queue is
//! bounded, so a stuck disk cannot grow the daemon's memory either.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
};

use filter_common::Action;

use super::log::{Decision, DecisionLog};
use crate::reputation::Verdict;

/// Decisions queued at most while the thread writes: a burst of new listed peers (each one
/// verdict) waits here; past this they are lost and counted.
const QUEUE: usize = 4096;

pub struct Recorder {
    queue: Option<SyncSender<Decision>>,
    lost: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writing thread for the log at `path` (capped at `cap` bytes a file).
    pub fn start(path: PathBuf, cap: u64) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Decision>(QUEUE);
        let log = DecisionLog::new(path, cap);
        let spawned = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                // Said once per run of failures, not once per decision.
                let mut failing = false;
                for d in rx {
                    match log.append(&d) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(path = %log.path().display(), error = %e, "could not append to the decision log; `mxscreen report` will miss decisions");
                        }
                        Err(_) => {}
                    }
                }
            });
        let queue = match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the decision log's thread; `mxscreen report` will have no decisions");
                None
            }
        };
        Self {
            queue,
            lost: Arc::default(),
        }
    }

    /// Queues a verdict for the log if it drops or limits (passes are not what enforcing
    /// would change).
    pub fn record(&self, v: &Verdict, observe: bool) {
        if v.action == Action::Pass {
            return;
        }
        let Some(queue) = &self.queue else { return };
        match queue.try_send(Decision::of(v, observe)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                if self.lost.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "the decision log is not keeping up; decisions are being lost for `mxscreen report`"
                    );
                }
            }
        }
    }
}
