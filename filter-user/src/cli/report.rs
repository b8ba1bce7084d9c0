//! `mxscreen report`.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};

use super::out::outln;
use crate::{
    config::Config,
    report::{
        join::{DecisionsRead, Join},
        log::{self, DecisionLog},
        render,
        sources::{self, Source},
    },
};

/// What enforcing would have changed: mxscreen's drop and limit decisions over the period
/// (observe mode's too) joined with the MTA's log — peers that would have been dropped or
/// limited, their connections, how many the MTA refused anyway, and first the list that
/// matters: those whose mail the MTA accepted, with their evidence. Read it before turning
/// observe mode off. Mail enforcing would not refuse — from authenticated clients, or on a
/// port the config's datapath.ports leaves out — is counted apart (accepted_unscreened).
///
/// The decisions come from the decision log beside the state file (state.file's directory),
/// which the daemon keeps across restarts (16 MiB, one rotation). The MTA's log: each
/// --mta-log FILE (Exim's mainlog or Postfix's mail log, traditional or RFC 3339 syslog
/// stamps, read in the host's time zone where they carry no offset; a .gz file is
/// decompressed; name rotations oldest first); by default /var/log/exim4/mainlog and
/// /var/log/mail.log that exist, with their rotations (.1, .2.gz, ...) written in the period,
/// else the journal's mail facility. Needs no running daemon, but root (the state directory
/// is private to it).
///
/// Examples:
///   mxscreen report
///   mxscreen report --since 24h --mta-log /var/log/exim4/mainlog
///   mxscreen report --mta-log /var/log/mail.log.1 --mta-log /var/log/mail.log --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// How far back: 24h, 7d, 2w...
    #[arg(long, default_value = "7d", value_parser = super::parse_duration)]
    since: Duration,
    /// The MTA's log (Exim's mainlog, Postfix's mail log, or a .gz of one); repeat for several.
    #[arg(long = "mta-log", value_name = "FILE")]
    mta_log: Vec<PathBuf>,
    /// One JSON object: since, until, decision_log, oldest_decision, mta_logs, mta_events,
    /// unreadable_decisions, would_drop, would_limit, accepted[], not_accepted[].
    #[arg(long)]
    json: bool,
    /// Config file, for state.file and datapath.ports (default: /etc/mxscreen/mxscreen.toml
    /// if it exists, else built-in defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn main(a: Args) -> Result<()> {
    let (cfg, _) = Config::resolve(a.config.as_deref())?;
    let now = crate::state::unix_now();
    let since = now.saturating_sub(a.since.as_secs());
    let decisions = DecisionLog::new(log::path_for(&cfg.state.file), log::CAP);
    let read = decisions.read_since(since).with_context(|| {
        format!(
            "cannot read the decision log {}",
            decisions.path().display()
        )
    })?;
    let sources = if a.mta_log.is_empty() {
        sources::defaults(since)
    } else {
        a.mta_log.into_iter().map(Source::File).collect()
    };
    let mut join = Join::new(&read.decisions, since);
    sources::read_all(&sources, since, now, &cfg.datapath.ports, &mut join)?;
    let report = join.finish(
        now,
        DecisionsRead {
            decision_log: decisions.path().display().to_string(),
            unreadable: read.bad_lines,
            oldest: read.oldest,
        },
        sources.iter().map(Source::name).collect(),
    );
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        outln!("{}", render::text(&report).trim_end())?;
    }
    Ok(())
}
