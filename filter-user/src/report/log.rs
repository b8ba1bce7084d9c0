//! The decision log: one JSON line per drop or limit verdict (observe-mode ones too), kept under
//! the state directory so `report` can look back across restarts. Bounded by size: when the
//! file passes `cap` bytes it is renamed to `<name>.1` (replacing the previous one), so the log
//! never holds more than twice the cap. A line that does not parse (a torn write at a crash, a
//! hand edit) is skipped and counted, never fatal.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::reputation::Verdict;

/// One decision, as `check` would show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub ip: IpAddr,
    /// `drop` or `limit`.
    pub action: String,
    /// The verdict's source: `reputation` (the score) or `config` (`lists.deny`).
    pub reason: String,
    pub score: i32,
    /// The evidence that moved the score, as the verdict log line and `check` name it
    /// (`dnsbl:zen.example=listed[127.0.0.2 (SBL)](+10)`).
    pub evidence: Vec<String>,
    /// Whether observe mode only counted it.
    pub observe: bool,
}

/// The log's cap: 16 MiB a file (about 50 000 decisions of ~300 bytes), so at most 32 MiB on
/// disk — weeks of a busy MX's drop and limit verdicts, far more than `report --since 7d`
/// needs; not a config key, as nothing but disk space would make one worth changing.
pub const CAP: u64 = 16 << 20;

/// The log's name in the state directory (the directory of `state.file`).
const FILE_NAME: &str = "decisions.jsonl";

/// Where the decision log of a daemon whose state file is `state_file` lives.
pub fn path_for(state_file: &Path) -> PathBuf {
    state_file
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(FILE_NAME)
}

impl Decision {
    /// The decision a verdict records, made now.
    pub fn of(v: &Verdict, observe: bool) -> Self {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            at,
            ip: v.ip,
            action: v.action.name().to_owned(),
            reason: v.reason.name().to_owned(),
            score: v.score,
            evidence: v.reason_parts(),
            observe,
        }
    }
}

pub struct DecisionLog {
    path: PathBuf,
    cap: u64,
}

/// What reading the log found: the decisions in order, and how many lines were skipped.
#[derive(Debug, Default)]
pub struct Read {
    pub decisions: Vec<Decision>,
    pub bad_lines: usize,
    /// When the oldest decision the log still holds was made (any, not only those read): a
    /// period reaching further back is not covered.
    pub oldest: Option<u64>,
}

impl DecisionLog {
    pub fn new(path: PathBuf, cap: u64) -> Self {
        Self { path, cap }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn previous(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends one decision, first rotating the file if it has passed the cap.
    pub fn append(&self, decision: &Decision) -> io::Result<()> {
        if fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.cap) {
            fs::rename(&self.path, self.previous())?;
        }
        let mut line = serde_json::to_vec(decision).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write per line: appends of a line this short are not interleaved.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)
    }

    /// Decisions at or after `since`, oldest first, from the previous file then the current one.
    pub fn read_since(&self, since: u64) -> io::Result<Read> {
        let mut read = Read::default();
        for path in [self.previous(), self.path.clone()] {
            read_file(&path, since, &mut read)?;
        }
        Ok(read)
    }
}

fn read_file(path: &Path, since: u64, read: &mut Read) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Decision>(&line) {
            Ok(d) => {
                read.oldest = Some(read.oldest.map_or(d.at, |o| o.min(d.at)));
                if d.at >= since {
                    read.decisions.push(d);
                }
            }
            Err(_) => read.bad_lines += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(at: u64) -> Decision {
        Decision {
            at,
            ip: "192.0.2.10".parse().unwrap(),
            action: "drop".into(),
            reason: "Reputation".into(),
            score: 7,
            evidence: vec!["bl.test 127.0.0.2 +7".into()],
            observe: true,
        }
    }

    #[test]
    fn rotates_at_the_cap_and_reads_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = DecisionLog::new(dir.path().join("decisions.jsonl"), 300);
        for at in 0..10 {
            log.append(&decision(at)).unwrap();
        }
        let current = fs::metadata(dir.path().join("decisions.jsonl"))
            .unwrap()
            .len();
        let previous = fs::metadata(dir.path().join("decisions.jsonl.1"))
            .unwrap()
            .len();
        assert!(
            current < 300 + 200 && previous < 300 + 200,
            "{current} {previous}"
        );
        let read = log.read_since(0).unwrap();
        let times: Vec<u64> = read.decisions.iter().map(|d| d.at).collect();
        // Older lines fell out with an earlier rotation; what is left is in order and ends last.
        assert!(
            times.windows(2).all(|w| w[0] < w[1]) && times.last() == Some(&9),
            "{times:?}"
        );
        let recent = log.read_since(8).unwrap();
        assert_eq!(recent.decisions.len(), 2);
        assert_eq!(recent.oldest, times.first().copied());
    }

    #[test]
    fn corrupt_lines_are_counted_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = DecisionLog::new(path.clone(), 1 << 20);
        log.append(&decision(1)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at\":2,\"ip\":\"192.0.2.1\ntorn\n\xff\xfe\n\n")
            .unwrap();
        log.append(&decision(3)).unwrap();
        let read = log.read_since(0).unwrap();
        assert_eq!(read.decisions, vec![decision(1), decision(3)]);
        assert_eq!(read.bad_lines, 3);
    }
}
