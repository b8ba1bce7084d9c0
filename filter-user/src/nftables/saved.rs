//! The verdicts a clean exit saves, for the next start to take back.
//!
//! The eBPF datapath keeps its verdicts in pinned maps, which outlive the daemon until the
//! host reboots. The nftables table is deleted at a clean exit (nothing of mxscreen's is left
//! in netfilter), its verdicts with it; so before deleting it the handle writes them to a file
//! beside the state file, and the next start takes them back (a crashed run's table, fresher,
//! goes first). The file is removed once read: a verdict an operator forgets afterwards
//! cannot come back from it. Expiries are kept as wall-clock times, so a verdict that expired
//! while the daemon was stopped is not taken back, and `check` and `list` go on counting a
//! source's hits from where they were.
//!
//! It is a cache, not the operator's state: one that cannot be read is logged and left (its
//! sources are evaluated again at their next SYN), never a reason not to start.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use filter_common::{Action, PeerVerdict, Reason, VERDICT_EXPLAIN, expiry::sort_key, live};
use serde::{Deserialize, Serialize};

use super::{
    Nftables,
    decide::Counted,
    errno,
    netlink::Netlink,
    ruleset,
    sets::{Family, key_addr, verdict_set},
    verdicts::{self, slot},
};
use crate::{atomic_file, datapath::clock};

/// The file's name in the state directory (the directory of `state.file`).
const FILE_NAME: &str = "nftables-verdicts.json";
const VERSION: u32 = 1;

/// Where a daemon whose state file is `state_file` saves its verdicts.
pub fn path_for(state_file: &Path) -> PathBuf {
    state_file
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(FILE_NAME)
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    verdicts: Vec<Saved>,
}

/// One verdict as saved.
#[derive(Serialize, Deserialize)]
struct Saved {
    ip: IpAddr,
    action: Action,
    reason: Reason,
    /// Unix seconds it expires at; none: never.
    expires: Option<u64>,
    /// A reputation `drop` that explains its refusals to the MTA.
    #[serde(default)]
    explain: bool,
    /// The SYNs it decided.
    #[serde(default)]
    hits: u64,
}

/// A verdict with its hits, as the handle keeps it.
pub type WithHits = (IpAddr, PeerVerdict, u64);

/// Writes `verdicts` (expired ones left out) as the whole file.
pub fn save(path: &Path, verdicts: &[WithHits]) -> Result<()> {
    let now = clock::now_ns();
    let verdicts = verdicts
        .iter()
        .filter(|(_, v, _)| live(v.expires_ns, now))
        .map(|(ip, v, hits)| Saved {
            ip: *ip,
            action: v.action(),
            reason: Reason::from_u8(v.reason),
            expires: clock::unix_expiry(v.expires_ns),
            explain: v.is_explained(),
            hits: *hits,
        })
        .collect();
    let body = serde_json::to_vec(&OnDisk {
        version: VERSION,
        verdicts,
    })?;
    atomic_file::write(path, &body).with_context(|| format!("writing {}", path.display()))
}

/// Reads the file and removes it: the verdicts in it still live (none if there is no file).
/// One that does not parse is moved aside (`….corrupt-<unix time>`) and reported.
pub fn take(path: &Path) -> Result<Vec<WithHits>> {
    let text = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.with_context(|| format!("reading {}", path.display()))?,
    };
    let parsed = serde_json::from_slice::<OnDisk>(&text)
        .map_err(anyhow::Error::from)
        .and_then(|d| {
            anyhow::ensure!(d.version == VERSION, "unknown version {}", d.version);
            Ok(d)
        });
    let disk = match parsed {
        // Read, it is spent (see the module's comment).
        Ok(d) => {
            let _ = std::fs::remove_file(path);
            d
        }
        Err(e) => {
            let moved = atomic_file::move_aside(path, clock::unix_now());
            return Err(e).with_context(|| match moved {
                Ok(aside) => format!(
                    "{} does not parse (moved to {})",
                    path.display(),
                    aside.display()
                ),
                Err(m) => format!(
                    "{} does not parse (and moving it aside failed: {m})",
                    path.display()
                ),
            });
        }
    };
    let now = clock::unix_now();
    // One verdict a source: a file edited by hand may list one twice, and a transaction
    // adding an element twice is refused whole (every verdict lost). The last one written
    // wins, as a later `verdict_set` would.
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<WithHits> = disk
        .verdicts
        .into_iter()
        .rev()
        .filter(|s| s.expires.is_none_or(|at| at > now) && seen.insert(s.ip))
        .map(|s| {
            let mut v = PeerVerdict::new(s.action, s.reason, clock::boot_expiry(s.expires));
            if s.explain && s.action == Action::Drop {
                v.flags |= VERDICT_EXPLAIN;
            }
            (s.ip, v, s.hits)
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// The live verdicts of a table a crashed run left (none if there is no such table): one
/// dump per family of its verdict maps, the reason in each element's user data. Their hits
/// start from 0 (README, *Persistence*).
pub(super) fn adopt(nl: &mut Netlink) -> Result<Vec<(IpAddr, PeerVerdict)>> {
    let mut out = Vec::new();
    for f in Family::ALL {
        let elems = match nl.dump(&verdict_set(f)) {
            Ok(e) => e,
            Err(e) if errno(&e) == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        for d in elems {
            let (Some(ip), Some(chain)) = (key_addr(&d.key), d.chain.as_deref()) else {
                continue;
            };
            let reason = d
                .userdata
                .first()
                .map_or(Reason::Unspecified, |r| Reason::from_u8(*r));
            let Some(action) = verdicts::action_of(chain) else {
                continue;
            };
            let expires = d.expires_ms.map_or(0, |ms| {
                clock::expiry_after(std::time::Duration::from_millis(ms))
            });
            let mut v = PeerVerdict::new(action, reason, expires);
            if chain == ruleset::V_EXPLAIN {
                v.flags |= VERDICT_EXPLAIN;
            }
            out.push((ip, v));
        }
    }
    if !out.is_empty() {
        tracing::info!(
            verdicts = out.len(),
            "taking back the verdicts of the table a crashed run left"
        );
    }
    Ok(out)
}

impl Nftables {
    /// Writes the verdicts with their hits to [`Nftables::saved`] (the table is about to be
    /// deleted). A failure is logged: the verdicts are evaluated again after the restart.
    pub(super) fn save_verdicts(&self) {
        let Some(path) = &self.saved else { return };
        let hits = self.verdict_hit_counts().unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "reading the verdicts' hits to save them");
            Default::default()
        });
        let all: Vec<WithHits> = self
            .verdicts
            .iter()
            .map(|(ip, v)| (*ip, *v, hits.get(ip).copied().unwrap_or(0)))
            .collect();
        match save(path, &all) {
            Ok(()) => {
                tracing::info!(verdicts = all.len(), file = %path.display(), "saved the verdicts for the next start")
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not save the verdicts: their sources are evaluated again after the restart")
            }
        }
    }

    /// Takes back the verdicts a clean exit saved (into a table that holds none yet); those
    /// over a verdict map's size, the soonest to expire, left out. A write that fails is
    /// logged and leaves no verdict behind: their sources are evaluated again.
    pub(super) fn take_back_saved(&mut self, mut saved: Vec<WithHits>) {
        // Never-expiring first, then the latest to expire.
        saved.sort_by_key(|(_, v, _)| std::cmp::Reverse(sort_key(v.expires_ns)));
        let mut room = [self.full_at(); 2];
        saved.retain(|(ip, ..)| {
            let left = &mut room[slot(Family::of(*ip))];
            let keep = *left > 0;
            *left = left.saturating_sub(1);
            keep
        });
        if saved.is_empty() {
            return;
        }
        let n = saved.len();
        let verdicts = saved.iter().map(|(ip, v, _)| (*ip, *v)).collect();
        if let Err(e) = self.verdicts_restore(verdicts) {
            tracing::warn!(error = %format!("{e:#}"), "could not take back the verdicts saved at the last exit: their sources are evaluated again");
            self.forget_elements();
            return;
        }
        for (ip, _, hits) in saved {
            if hits != 0 {
                self.carried.insert((ip, Counted::Verdict), hits);
            }
        }
        tracing::info!(
            verdicts = n,
            "took back the verdicts saved at the last exit"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use filter_common::NEVER;

    use super::*;

    #[test]
    fn a_saved_verdict_comes_back_once_and_an_expired_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("state.json"));
        let live = clock::expiry_after(Duration::from_secs(3600));
        let gone = clock::now_ns().saturating_sub(1).max(NEVER + 1);
        let mut explained = PeerVerdict::new(Action::Drop, Reason::Reputation, NEVER);
        explained.flags |= VERDICT_EXPLAIN;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        save(
            &path,
            &[
                (
                    a,
                    PeerVerdict::new(Action::Limit, Reason::Tempfail, live),
                    7,
                ),
                (b, explained, 0),
                (
                    c,
                    PeerVerdict::new(Action::Drop, Reason::Reputation, gone),
                    1,
                ),
            ],
        )
        .unwrap();
        let mut back = take(&path).unwrap();
        back.sort_by_key(|(ip, ..)| *ip);
        assert_eq!(back.len(), 2, "the expired verdict stays out");
        let (ip, v, hits) = back[0];
        assert_eq!(
            (ip, v.action(), v.reason, hits),
            (a, Action::Limit, Reason::Tempfail as u8, 7)
        );
        let left = clock::remaining(v.expires_ns).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3601));
        let (ip, v, _) = back[1];
        assert_eq!((ip, v.expires_ns), (b, NEVER));
        assert!(v.is_explained());
        assert!(take(&path).unwrap().is_empty(), "read once");
    }

    /// A source listed twice (a file edited by hand) comes back once, as its last entry:
    /// twice, the kernel refused the whole transaction and every verdict was lost.
    #[test]
    fn a_source_listed_twice_comes_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("state.json"));
        let live = clock::expiry_after(Duration::from_secs(3600));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let drop = PeerVerdict::new(Action::Drop, Reason::Reputation, live);
        let pass = PeerVerdict::new(Action::Pass, Reason::Reputation, live);
        save(&path, &[(a, drop, 1), (b, drop, 2), (a, pass, 3)]).unwrap();
        let back = take(&path).unwrap();
        let got: Vec<(IpAddr, Action, u64)> = back
            .iter()
            .map(|(ip, v, h)| (*ip, v.action(), *h))
            .collect();
        assert_eq!(got, [(b, Action::Drop, 2), (a, Action::Pass, 3)]);
    }

    #[test]
    fn a_file_that_does_not_parse_is_an_error_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(
            &path,
            b"{\"version\": 1, \"verdicts\": [{\"ip\": \"nope\"}]}",
        )
        .unwrap();
        let e = format!("{:#}", take(&path).unwrap_err());
        assert!(
            e.contains("does not parse (moved to") && e.contains(".corrupt-"),
            "{e}"
        );
        assert!(!path.exists());
        let aside = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(aside, 1, "kept aside for the operator");
    }
}
