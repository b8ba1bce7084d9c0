//! The state file: manual blocks and allows (with reason, creation and expiry), the one
//! thing an operator typed that must survive anything. Written atomically on every change
//! (temp file, fsync, rename, fsync of the directory), reloaded at start. A file that cannot
//! be parsed is moved aside and reported — never silently discarded, never crashed on.
//!
//! Every change is all-or-nothing: the new entries are written to disk first and only then
//! become the entries in memory, so a failed write (full disk, read-only mount) changes
//! nothing, and a later successful write never carries a change the operator was told failed.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{atomic_file, datapath::ListKind};

/// Default path (`state.file`).
pub const DEFAULT_STATE_FILE: &str = "/var/lib/mxscreen/state.json";
const VERSION: u32 = 1;

/// The longest time a manual entry is made for (`--for`, `ttl_secs`): the bound of every
/// duration ([`crate::duration::MAX`]). Its expiry is kept in nanoseconds in the datapath and
/// as an element timeout in nftables: a bound well inside both, and past any block an
/// operator means to come back to.
pub const MAX_ENTRY_TTL: Duration = crate::duration::MAX;

/// Whether a manual entry can be made for `ttl`: above zero, at most [`MAX_ENTRY_TTL`].
pub fn check_entry_ttl(ttl: Duration) -> Result<(), String> {
    if ttl.is_zero() {
        return Err("an entry for 0s would be gone at once; leave --for out for one that stays until removed".into());
    }
    if ttl > MAX_ENTRY_TTL {
        return Err(entry_too_long(&crate::duration::format(ttl)));
    }
    Ok(())
}

/// Why `--for` as written (`shown`) cannot be: longer than [`MAX_ENTRY_TTL`].
pub fn entry_too_long(shown: &str) -> String {
    format!(
        "--for {shown} is longer than an entry can last ({}, 100 years); leave --for out for one that stays until removed",
        crate::duration::format(MAX_ENTRY_TTL)
    )
}

/// One manual entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualEntry {
    pub list: ListKind,
    pub net: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; absent = until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The fleet host the entry was made on, when another one (`[fleet]`); absent = here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    entries: Vec<ManualEntry>,
}

/// [`OnDisk`] as written, borrowing the entries.
#[derive(Serialize)]
struct OnDiskRef<'a> {
    version: u32,
    entries: &'a [ManualEntry],
}

/// The manual entries and the file they live in.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    entries: Vec<ManualEntry>,
    /// Where a file that did not parse at load was moved (`status` says so until a restart).
    moved_aside: Option<PathBuf>,
}

/// Now, in Unix seconds.
pub use crate::datapath::clock::unix_now;

/// `entries` as `block` and `allow` would have written them: an IPv4-mapped prefix
/// (`::ffff:192.0.2.25/128`, written before mxscreen read such addresses as IPv4; they never
/// matched a sender) in the IPv4 form it meant ([`crate::net::unmap`]), host bits cleared
/// (`192.0.2.1/24`, from a hand edit, is the /24 that `unblock 192.0.2.0/24` names), and
/// each prefix once per list: of two, the one made last. What changed is logged.
fn normalized(entries: Vec<ManualEntry>) -> Vec<ManualEntry> {
    let read = entries.len();
    let mut out: Vec<ManualEntry> = Vec::with_capacity(read);
    let mut rewritten = 0;
    for mut e in entries {
        let net = crate::net::unmap(e.net).unwrap_or(e.net).trunc();
        if net != e.net {
            rewritten += 1;
            e.net = net;
        }
        match out.iter_mut().find(|o| o.list == e.list && o.net == e.net) {
            Some(o) if e.created >= o.created => *o = e,
            Some(_) => {}
            None => out.push(e),
        }
    }
    if rewritten > 0 || out.len() < read {
        tracing::warn!(
            rewritten,
            duplicates = read - out.len(),
            "state file: entries rewritten in their canonical form (IPv4-mapped, host bits) or listed twice; the file is written so at the next change"
        );
    }
    out
}

impl State {
    /// Loads `path`. Missing: empty state. Unparsable: the file is renamed to
    /// `<path>.corrupt-<unix time>` and an error is logged naming both paths; the daemon starts
    /// with no manual entries rather than not at all (mail must flow), and the operator can
    /// restore from the moved file. Unreadable (I/O, permissions): an error, since moving it
    /// aside could fail the same way and writing over it would lose it.
    pub fn load(path: &Path) -> Result<Self> {
        let mut state = Self {
            path: path.to_path_buf(),
            entries: Vec::new(),
            moved_aside: None,
        };
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            // A FIFO would block the read forever, a device would feed us garbage.
            Ok(m) if !m.is_file() => anyhow::bail!(
                "state file {} is not a regular file; point state.file at a regular file (or a path that does not exist yet)",
                path.display()
            ),
            _ => {}
        }
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading state file {}", path.display()))?;
        match serde_json::from_str::<OnDisk>(&text) {
            Ok(d) if d.version == VERSION => state.entries = normalized(d.entries),
            parsed => {
                let why = match parsed {
                    Ok(d) => format!("unknown version {}", d.version),
                    Err(e) => e.to_string(),
                };
                let aside = atomic_file::move_aside(path, unix_now()).with_context(|| {
                    format!(
                        "state file {} is corrupt ({why}) and could not be moved aside",
                        path.display()
                    )
                })?;
                tracing::error!(
                    file = %path.display(), moved_to = %aside.display(), error = %why,
                    "state file is corrupt; moved aside, starting without manual entries"
                );
                state.moved_aside = Some(aside);
            }
        }
        Ok(state)
    }

    /// Where the file was moved at load because it did not parse, if it was.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.moved_aside.as_deref()
    }

    pub fn entries(&self) -> &[ManualEntry] {
        &self.entries
    }

    pub fn get(&self, list: ListKind, net: IpNet) -> Option<&ManualEntry> {
        self.entries.iter().find(|e| e.list == list && e.net == net)
    }

    /// Adds or replaces an entry. Saved before it counts: on error nothing changed.
    pub fn upsert(&mut self, entry: ManualEntry) -> Result<()> {
        let mut next = self.entries.clone();
        next.retain(|e| !(e.list == entry.list && e.net == entry.net));
        next.push(entry);
        self.commit(next)
    }

    /// Removes an entry (saving if it existed). On error nothing changed.
    pub fn remove(&mut self, list: ListKind, net: IpNet) -> Result<Option<ManualEntry>> {
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.list == list && e.net == net)
        else {
            return Ok(None);
        };
        let mut next = self.entries.clone();
        let gone = next.remove(i);
        self.commit(next)?;
        Ok(Some(gone))
    }

    /// Applies many changes (from the fleet) with one save: `upserts` added or replacing,
    /// `removals` removed. Returns whether anything changed (nothing is saved otherwise).
    /// On error nothing changed.
    pub fn merge(
        &mut self,
        upserts: Vec<ManualEntry>,
        removals: &[(ListKind, IpNet)],
    ) -> Result<bool> {
        let mut next = self.entries.clone();
        for entry in upserts {
            next.retain(|e| !(e.list == entry.list && e.net == entry.net));
            next.push(entry);
        }
        next.retain(|e| !removals.iter().any(|(l, n)| e.list == *l && e.net == *n));
        if next == self.entries {
            return Ok(false);
        }
        self.commit(next)?;
        Ok(true)
    }

    /// Removes and returns the entries expired at `now` (Unix seconds), saving if any. On
    /// error nothing changed (the datapath ignores expired entries meanwhile).
    pub fn take_expired(&mut self, now: u64) -> Result<Vec<ManualEntry>> {
        let (gone, keep): (Vec<_>, Vec<_>) = self
            .entries
            .iter()
            .cloned()
            .partition(|e| e.expires.is_some_and(|x| x <= now));
        if !gone.is_empty() {
            self.commit(keep)?;
        }
        Ok(gone)
    }

    /// Writes `entries` to disk, then makes them the entries in memory.
    fn commit(&mut self, entries: Vec<ManualEntry>) -> Result<()> {
        self.save(&entries)?;
        self.entries = entries;
        Ok(())
    }

    /// Writes `entries` atomically as the whole state.
    fn save(&self, entries: &[ManualEntry]) -> Result<()> {
        let mut body = serde_json::to_vec_pretty(&OnDiskRef {
            version: VERSION,
            entries,
        })?;
        body.push(b'\n');
        atomic_file::write(&self.path, &body)
            .with_context(|| format!("writing state file {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manual entry's time: above zero, at most 100 years; the raw protocol's own values
    /// too (`ttl_secs` of u64::MAX once overflowed the daemon's clock).
    #[test]
    fn an_entrys_time_is_bounded() {
        assert!(check_entry_ttl(Duration::from_secs(1)).is_ok());
        assert!(check_entry_ttl(MAX_ENTRY_TTL).is_ok());
        for bad in [
            Duration::ZERO,
            MAX_ENTRY_TTL + Duration::from_secs(1),
            Duration::from_secs(u64::MAX),
        ] {
            assert!(check_entry_ttl(bad).is_err(), "{bad:?}");
        }
    }

    fn entry(net: &str, expires: Option<u64>) -> ManualEntry {
        ManualEntry {
            list: ListKind::Deny,
            net: net.parse().unwrap(),
            reason: Some("r".into()),
            created: 1,
            expires,
            origin: None,
        }
    }

    #[test]
    fn round_trips_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let mut s = State::load(&path).unwrap();
        s.upsert(entry("192.0.2.1/32", None)).unwrap();
        s.upsert(entry("198.51.100.0/24", Some(100))).unwrap();
        s.upsert(entry("192.0.2.1/32", Some(5000))).unwrap(); // replaces
        let s2 = State::load(&path).unwrap();
        assert_eq!(s2.entries().len(), 2);
        assert_eq!(
            s2.get(ListKind::Deny, "192.0.2.1/32".parse().unwrap())
                .unwrap()
                .expires,
            Some(5000)
        );
        let mut s2 = s2;
        let gone = s2.take_expired(200).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(State::load(&path).unwrap().entries().len(), 1);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    /// Entries an older mxscreen kept in their IPv4-mapped form load as the IPv4 entries
    /// they meant (a duplicate of one already there is dropped).
    #[test]
    fn mapped_entries_load_as_ipv4() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = State::load(&path).unwrap();
        for net in [
            "::ffff:192.0.2.25/128",
            "192.0.2.7/32",
            "::ffff:192.0.2.7/128",
            "2001:db8::/32",
        ] {
            s.upsert(entry(net, None)).unwrap();
        }
        let mut nets: Vec<String> = State::load(&path)
            .unwrap()
            .entries()
            .iter()
            .map(|e| e.net.to_string())
            .collect();
        nets.sort();
        assert_eq!(nets, ["192.0.2.25/32", "192.0.2.7/32", "2001:db8::/32"]);
    }

    /// A hand-edited file: host bits are cleared, a prefix listed twice in one list is
    /// kept once (the one made last), and the same prefix in both lists stays in both.
    #[test]
    fn hand_edits_load_as_block_would_have_written_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let e = |list: &str, net: &str, created: u64| {
            format!(r#"{{"list":"{list}","net":"{net}","created":{created}}}"#)
        };
        let entries = [
            e("deny", "192.0.2.1/24", 1),
            e("deny", "192.0.2.0/24", 5),
            e("deny", "192.0.2.0/24", 3),
            e("allow", "192.0.2.0/24", 2),
            e("deny", "2001:db8::1/32", 4),
        ];
        fs::write(
            &path,
            format!(
                r#"{{"version":{VERSION},"entries":[{}]}}"#,
                entries.join(",")
            ),
        )
        .unwrap();
        let s = State::load(&path).unwrap();
        let got: Vec<(ListKind, String, u64)> = s
            .entries()
            .iter()
            .map(|e| (e.list, e.net.to_string(), e.created))
            .collect();
        assert_eq!(
            got,
            [
                (ListKind::Deny, "192.0.2.0/24".to_owned(), 5),
                (ListKind::Allow, "192.0.2.0/24".to_owned(), 2),
                (ListKind::Deny, "2001:db8::/32".to_owned(), 4),
            ]
        );
        assert!(
            s.get(ListKind::Deny, "192.0.2.0/24".parse().unwrap())
                .is_some()
        );
    }

    /// A failed write changes nothing, and the next successful write does not carry it.
    #[test]
    fn failed_writes_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = State::load(&path).unwrap();
        s.upsert(entry("192.0.2.1/32", None)).unwrap();
        // A path whose directory is a regular file: every write fails (ENOTDIR).
        let blocker = dir.path().join("a-file");
        fs::write(&blocker, "").unwrap();
        let mut s2 = State::load(&path).unwrap();
        s2.path = blocker.join("state.json");
        assert!(s2.upsert(entry("192.0.2.2/32", None)).is_err());
        assert!(
            s2.remove(ListKind::Deny, "192.0.2.1/32".parse().unwrap())
                .is_err()
        );
        assert_eq!(
            s2.entries(),
            s.entries(),
            "memory unchanged after failed writes"
        );
        s2.path = path.clone();
        s2.upsert(entry("192.0.2.3/32", None)).unwrap();
        let nets: Vec<String> = State::load(&path)
            .unwrap()
            .entries()
            .iter()
            .map(|e| e.net.to_string())
            .collect();
        assert_eq!(nets, ["192.0.2.1/32", "192.0.2.3/32"]);
    }

    #[test]
    fn a_fifo_is_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = format!("{:#}", State::load(&path).unwrap_err());
        assert!(
            e.contains("is not a regular file") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn merges_save_once_and_old_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // A file written before entries had an origin.
        fs::write(
            &path,
            r#"{"version":1,"entries":[{"list":"deny","net":"192.0.2.1/32","created":1}]}"#,
        )
        .unwrap();
        let mut s = State::load(&path).unwrap();
        assert_eq!(s.entries()[0].origin, None);
        let mut shared = entry("198.51.100.0/24", None);
        shared.origin = Some("mx2".into());
        let gone = (ListKind::Deny, "192.0.2.1/32".parse().unwrap());
        assert!(s.merge(vec![shared.clone()], &[gone]).unwrap());
        assert!(!s.merge(vec![shared.clone()], &[gone]).unwrap());
        assert_eq!(State::load(&path).unwrap().entries(), [shared]);
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{ this is not json").unwrap();
        let s = State::load(&path).unwrap();
        assert!(s.entries().is_empty());
        let moved: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(moved.len(), 1);
        assert!(moved[0].starts_with("state.json.corrupt-"), "{moved:?}");
        assert_eq!(
            fs::read_to_string(dir.path().join(&moved[0])).unwrap(),
            "{ this is not json"
        );
    }
}
