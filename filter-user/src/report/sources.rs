//! Where the MTA's log comes from: the files `--mta-log` names, else the usual Debian paths
//! that exist (Exim's `/var/log/exim4/mainlog`, rsyslog's `/var/log/mail.log`, Postfix's
//! and Exim's syslog lines) with their rotations that reach into the period (`mainlog.1`,
//! `mainlog.2.gz`, …: Debian rotates Exim's log daily, so a week is eight files), else the
//! journal's mail facility (`journalctl --facility=mail -o short-iso`, the stamp
//! [`super::mta_log`] reads). A `.gz` file is read through `gzip -dc` (gzip is essential on
//! Debian), the journal through `journalctl`. Each is read line by line into the [`Join`],
//! so a log of any size costs no memory.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, Result, bail};

use super::{join::Join, mta_log::MtaLogReader, time::Zone};

/// The usual Debian paths, in the order they are read.
pub const DEFAULT_FILES: [&str; 2] = ["/var/log/exim4/mainlog", "/var/log/mail.log"];

/// Rotations looked for beside a default path (logrotate's `rotate` for Exim's log is 10).
const MAX_ROTATIONS: u32 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// `journalctl --facility=mail`.
    Journal,
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Journal => "the journal, facility mail".into(),
        }
    }
}

/// The sources to read when `--mta-log` names none, for a period from `since`.
pub fn defaults(since: u64) -> Vec<Source> {
    let files: Vec<Source> = DEFAULT_FILES
        .iter()
        .flat_map(|p| with_rotations(Path::new(p), since))
        .map(Source::File)
        .collect();
    if files.is_empty() {
        vec![Source::Journal]
    } else {
        files
    }
}

/// `path`'s rotations last written at or after `since` (older ones hold no line of the
/// period), oldest first, then `path` itself if it exists.
fn with_rotations(path: &Path, since: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for n in (1..=MAX_ROTATIONS).rev() {
        for suffix in [format!(".{n}"), format!(".{n}.gz")] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let rotated = PathBuf::from(name);
            let modified = fs::metadata(&rotated)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
            if modified.is_some_and(|m| m.as_secs() >= since) {
                out.push(rotated);
            }
        }
    }
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// Reads every source's events at or after `since` into `join`, for a host screening
/// `ports`. One reader reads them all, in order: a Postfix message's `client=` line may be
/// in a rotation and its `qmgr from=` line in the next file (so name rotations oldest first).
pub fn read_all(
    sources: &[Source],
    since: u64,
    now: u64,
    ports: &[u16],
    join: &mut Join,
) -> Result<()> {
    // The logs are this host's: stamps without an offset are in its zone.
    let reader = &mut MtaLogReader::at(now, Zone::Host, ports.to_vec());
    for source in sources {
        match source {
            Source::File(path) if path.extension().is_some_and(|e| e == "gz") => {
                // Opened here first, so an unreadable file gets the same error as any other.
                File::open(path)
                    .with_context(|| format!("cannot read the MTA log {}", path.display()))?;
                let mut gzip = Command::new("gzip");
                gzip.arg("-dc").arg("--").arg(path);
                read_command(gzip, &path.display().to_string(), reader, join)?;
            }
            Source::File(path) => {
                let file = File::open(path)
                    .with_context(|| format!("cannot read the MTA log {}", path.display()))?;
                read_lines(file, reader, join)
                    .with_context(|| format!("reading the MTA log {}", path.display()))?;
            }
            Source::Journal => {
                let mut journalctl = Command::new("journalctl");
                journalctl
                    .args(["--facility=mail", "-o", "short-iso", "--no-pager", "-q"])
                    .arg(format!("--since=@{since}"));
                read_command(journalctl, "the journal", reader, join).with_context(|| {
                    format!(
                        "none of {} exists: name the MTA's log with --mta-log FILE",
                        DEFAULT_FILES.join(", ")
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Reads the output of `cmd` (`what` names it in errors); a failed run is an error with
/// what the command said.
fn read_command(
    mut cmd: Command,
    what: &str,
    reader: &mut MtaLogReader,
    join: &mut Join,
) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program} to read {what}"))?;
    let stdout = child.stdout.take().context("the command's output")?;
    read_lines(stdout, reader, join).with_context(|| format!("reading {what}"))?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {program}"))?;
    if !status.success() {
        bail!("{program} failed on {what} ({status}): {}", stderr.trim());
    }
    Ok(())
}

/// Lines of any encoding (a log may hold a client's raw bytes): read lossily, never refused.
fn read_lines(from: impl Read, reader: &mut MtaLogReader, join: &mut Join) -> Result<()> {
    let mut lines = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if let Some(event) = reader.read_line(text.trim_end()) {
            join.add(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::report::{join::DecisionsRead, log::Decision};

    #[test]
    fn rotations_reaching_into_the_period_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("mainlog");
        let week_ago = SystemTime::now() - Duration::from_secs(8 * 86_400);
        for name in [
            "mainlog",
            "mainlog.1",
            "mainlog.2.gz",
            "mainlog.3.gz",
            "mainlog.x",
        ] {
            let f = File::create(dir.path().join(name)).unwrap();
            if name == "mainlog.3.gz" {
                f.set_modified(week_ago).unwrap();
            }
        }
        let since = week_ago.duration_since(UNIX_EPOCH).unwrap().as_secs() + 86_400;
        let names: Vec<String> = with_rotations(&base, since)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["mainlog.2.gz", "mainlog.1", "mainlog"]);
    }

    /// An observe-mode drop verdict for `ip`, made before the logs' lines.
    fn observed_drop(ip: &str) -> Decision {
        Decision {
            at: 1_796_454_000,
            ip: ip.parse().unwrap(),
            action: "drop".into(),
            reason: "reputation".into(),
            score: 10,
            evidence: Vec::new(),
            observe: true,
        }
    }

    /// What the decisions' reading tells the report when it is not the point of a test.
    fn no_decision_log() -> DecisionsRead {
        DecisionsRead {
            decision_log: String::new(),
            unreadable: 0,
            oldest: None,
        }
    }

    /// A rotated, compressed log reads like the plain one.
    #[test]
    fn gzip_compressed_logs_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mainlog.2");
        let line = "2026-12-05 07:12:02 1tXyZa-000123-AB <= a@b.example H=(x) [192.0.2.20]:1 P=esmtp S=1\n";
        fs::write(&path, line.repeat(3)).unwrap();
        let status = Command::new("gzip").arg(&path).status().unwrap();
        assert!(status.success());
        let decision = observed_drop("192.0.2.20");
        let mut join = Join::new(&[decision], 1_796_454_000);
        let gz = Source::File(dir.path().join("mainlog.2.gz"));
        read_all(&[gz], 1_796_454_000, 1_796_460_000, &[25], &mut join).unwrap();
        let read = no_decision_log();
        let r = join.finish(1_796_460_000, read, Vec::new());
        assert_eq!(r.accepted.first().map(|p| p.accepted), Some(3));
        let bad = Source::File(dir.path().join("missing.gz"));
        let err = read_all(&[bad], 0, 0, &[25], &mut Join::new(&[], 0)).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read the MTA log"),
            "{err:#}"
        );
    }

    /// A Postfix message whose `client=` line is in the rotation and whose `qmgr from=` line
    /// is in the current file is one accepted message.
    #[test]
    fn a_message_split_by_rotation_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("mail.log.1");
        let new = dir.path().join("mail.log");
        fs::write(
            &old,
            "2026-12-05T07:12:02+00:00 mx postfix/smtpd[1]: 4F1A2B3C4D: client=x[192.0.2.20]\n",
        )
        .unwrap();
        fs::write(
            &new,
            "2026-12-05T07:12:03+00:00 mx postfix/qmgr[9]: 4F1A2B3C4D: from=<a@b.example>, size=1, nrcpt=1 (queue active)\n",
        )
        .unwrap();
        let decision = observed_drop("192.0.2.20");
        let mut join = Join::new(&[decision], 1_796_454_000);
        let files = [Source::File(old), Source::File(new)];
        read_all(&files, 1_796_454_000, 1_796_460_000, &[25], &mut join).unwrap();
        let read = no_decision_log();
        let r = join.finish(1_796_460_000, read, Vec::new());
        assert_eq!(r.accepted.first().map(|p| p.accepted), Some(1));
    }
}
