//! Working in the table's network namespace from any thread: the daemon runs in it all along,
//! a test's thread may be in another for a moment.

use std::os::fd::{AsRawFd as _, OwnedFd};

use anyhow::{Context as _, Result};

/// The calling thread's network namespace.
const HERE: &str = "/proc/thread-self/ns/net";

/// The calling thread's network namespace, held open.
pub fn current() -> Result<OwnedFd> {
    Ok(std::fs::File::open(HERE)
        .context("opening the network namespace")?
        .into())
}

/// Runs `f` in the network namespace `netns`: on this thread if it is there already, else on a
/// thread of its own that joins it first. Only the latter needs CAP_SYS_ADMIN (setns), which a
/// container (Docker with NET_ADMIN added) may not give, though the daemon there is in the
/// table's namespace all along.
pub fn within<T: Send>(netns: &OwnedFd, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    if in_namespace(netns) {
        return f();
    }
    let ns = netns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on this short-lived thread only; `ns` is a namespace fd kept open
            // by the caller for the whole scope.
            if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("joining the table's network namespace");
            }
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Whether the calling thread is in the network namespace `netns` (same inode on nsfs).
pub fn in_namespace(netns: &OwnedFd) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(here) = std::fs::metadata(HERE) else {
        return false;
    };
    let there = netns
        .try_clone()
        .and_then(|fd| std::fs::File::from(fd).metadata());
    there.is_ok_and(|t| t.dev() == here.dev() && t.ino() == here.ino())
}
