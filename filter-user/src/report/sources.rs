//! Where the MTA's log comes from: the files `--mta-log` names, else the usual Debian paths
//! that exist (Exim's `/var/log/exim4/mainlog`, rsyslog's `/var/log/mail.log`, Postfix's
//! and Exim's syslog lines), else the journal's mail facility (`journalctl --facility=mail
//! -o short-iso`, the stamp [`super::mta_log`] reads). Each is read line by line into the
//! [`Join`], so a log of any size costs no memory.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{join::Join, mta_log::MtaLogReader};

/// The usual Debian paths, in the order they are read.
pub const DEFAULT_FILES: [&str; 2] = ["/var/log/exim4/mainlog", "/var/log/mail.log"];

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

/// The sources to read when `--mta-log` names none.
pub fn defaults() -> Vec<Source> {
    let files: Vec<Source> = DEFAULT_FILES
        .iter()
        .map(Path::new)
        .filter(|p| p.exists())
        .map(|p| Source::File(p.to_path_buf()))
        .collect();
    if files.is_empty() {
        vec![Source::Journal]
    } else {
        files
    }
}

/// Reads every source's events at or after `since` into `join`.
pub fn read_all(sources: &[Source], since: u64, now: u64, join: &mut Join) -> Result<()> {
    for source in sources {
        let reader = MtaLogReader::at(now);
        match source {
            Source::File(path) => {
                let file = File::open(path)
                    .with_context(|| format!("cannot read the MTA log {}", path.display()))?;
                read_lines(file, reader, join)
                    .with_context(|| format!("reading the MTA log {}", path.display()))?;
            }
            Source::Journal => read_journal(since, reader, join)?,
        }
    }
    Ok(())
}

fn read_journal(since: u64, reader: MtaLogReader, join: &mut Join) -> Result<()> {
    let mut child = Command::new("journalctl")
        .args(["--facility=mail", "-o", "short-iso", "--no-pager", "-q"])
        .arg(format!("--since=@{since}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "none of {} exists and journalctl could not be run: name the MTA's log with --mta-log FILE",
                DEFAULT_FILES.join(", ")
            )
        })?;
    let stdout = child.stdout.take().context("journalctl's output")?;
    read_lines(stdout, reader, join).context("reading journalctl's output")?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().context("waiting for journalctl")?;
    if !status.success() {
        bail!(
            "journalctl failed ({status}): {}; name the MTA's log with --mta-log FILE",
            stderr.trim()
        );
    }
    Ok(())
}

/// Lines of any encoding (a log may hold a client's raw bytes): read lossily, never refused.
fn read_lines(from: impl Read, mut reader: MtaLogReader, join: &mut Join) -> Result<()> {
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
