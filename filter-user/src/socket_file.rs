//! Unix socket files the daemon serves on (the control socket, the MTA's query socket, the
//! Postfix policy socket): created with their directory, a stale file left by a crash
//! replaced, a live one refused (another daemon answers there), mode and group set, and the
//! file removed when the guard drops.

use std::{
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::unistd::{Gid, Group, chown};

/// Removes the socket file when dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (its directory created if missing) with `mode` and, if given, `group`.
/// `what` names the socket in errors ("control socket"). Needs CAP_CHOWN to give the file
/// to a group the daemon is not a member of.
pub fn bind(
    path: &Path,
    mode: u32,
    group: Option<Gid>,
    what: &str,
) -> Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "another mxscreen daemon is already running (its {what} {} answers)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {what} {}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
    };
    if let Some(gid) = group {
        chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group id {gid}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    Ok((listener, file))
}

/// The id of group `name`, or `None` if the host has no such group.
pub fn group_id(name: &str) -> Result<Option<Gid>> {
    Ok(Group::from_name(name)
        .with_context(|| format!("looking up group {name}"))?
        .map(|g| g.gid))
}

/// The first of `names` that is a group on this host, with its id.
pub fn first_group<'a>(names: &[&'a str]) -> Option<(&'a str, Gid)> {
    names
        .iter()
        .find_map(|n| group_id(n).ok().flatten().map(|g| (*n, g)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_replaces_stale_refuses_live_and_removes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s.sock");
        let (l, f) = bind(&path, 0o660, None, "test socket").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind(&path, 0o660, None, "test socket").unwrap_err();
        assert!(
            err.to_string().contains("test socket") && err.to_string().contains("answers"),
            "{err}"
        );
        // A file nobody answers on (a crashed daemon's) is replaced.
        drop(l);
        std::mem::forget(f);
        assert!(path.exists());
        let (_l, f) = bind(&path, 0o600, group_id("root").unwrap(), "test socket").unwrap();
        drop(f);
        assert!(!path.exists());
        assert_eq!(group_id("no-such-group-mxscreen").unwrap(), None);
        assert_eq!(
            first_group(&["no-such-group-mxscreen", "root"]).unwrap().0,
            "root"
        );
    }
}
