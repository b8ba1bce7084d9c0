//! `mxscreen check`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Result;
use filter_common::Action;

use super::{
    connect::Connect,
    out::{out, outln},
};
use crate::{
    config::Config,
    control::{
        client::ClientError,
        protocol::{ConfigInUse, ListName, ListedEntry, LookupReply},
    },
    duration, reputation,
};

/// Explain what mxscreen thinks of an address: every lookup (PTR, FCrDNS, each DNSBL/DNSWL
/// zone), its answer or error, the weight it adds, the score, the verdict and its expiry —
/// and what the running daemon currently holds for it, if one runs.
///
/// Needs neither the daemon nor root.
///
/// Examples:
///   mxscreen check 192.0.2.25
///   mxscreen check 2001:db8::25 --json
///   mxscreen check --ignore-lists 192.168.1.5
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The address to check (an IPv4-mapped one is checked as its IPv4 form).
    #[arg(value_parser = crate::net::parse_ip)]
    ip: IpAddr,
    /// One JSON object: ip, action, score, ttl_secs, evidence[], warnings[], daemon (what
    /// the running daemon holds; daemon.in_force: the entry that decides its SYNs).
    #[arg(long)]
    json: bool,
    /// Config file (default: the one the running daemon was started with; without a daemon,
    /// /etc/mxscreen/mxscreen.toml if it exists, else built-in defaults).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Control socket of a running daemon to ask as well (default: control.socket of the
    /// config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Skip lists.allow (built-in ranges included) and lists.deny: evaluate the DNS path
    /// (rDNS, every DNSBL/DNSWL zone) for an address a list covers, e.g. to see what the
    /// lists would say about a partner's relay.
    #[arg(long)]
    ignore_lists: bool,
}

pub fn main(a: Args) -> Result<()> {
    let (cfg, cfg_file) = Config::resolve(a.config.as_deref())?;
    // The daemon first: without `-c`, the config it runs with is the one to explain with.
    let connect = Connect {
        socket: a.socket.or_else(|| Some(cfg.control.socket.clone())),
        config: None,
    };
    let daemon: Result<LookupReply, String> =
        connect
            .call(|c| c.lookup(a.ip))
            .map_err(|e| match e.downcast_ref::<ClientError>() {
                Some(c) if c.is_not_running() => "not running".into(),
                _ => format!("{e:#}"),
            });
    let (cfg, unread) = match (&a.config, &daemon) {
        (None, Ok(l)) => the_daemons_config(l, (cfg, cfg_file)),
        _ => (cfg, None),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rcfg = cfg.reputation();
    if a.ignore_lists {
        rcfg.lists.allow.clear();
        rcfg.lists.allow_defaults = false;
        rcfg.lists.deny.clear();
    }
    let mut report = rt.block_on(reputation::check(rcfg, a.ip))?;
    report.warnings.extend(unread);
    // Observe mode as the running daemon has it (`--observe` is not in the file), else as
    // the config says.
    report.observe = match &daemon {
        Ok(l) => l.observe,
        Err(_) => cfg.policy.observe,
    };
    if a.json {
        let mut v = report.to_json();
        v["daemon"] = match &daemon {
            Ok(l) => {
                let mut d = serde_json::to_value(l)?;
                d["in_force"] = serde_json::to_value(in_force_entry(l))?;
                d
            }
            Err(e) => serde_json::json!({ "error": e }),
        };
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    out!("{}", report.to_text())?;
    match daemon {
        Ok(l) => {
            let rows: Vec<String> = held(&l).map(super::list::row).collect();
            if rows.is_empty() {
                outln!(
                    "daemon: holds nothing for {} (unknown: resolved at its next SYN, which first_contact = \"hold\" drops meanwhile and \"pass\" lets through)",
                    a.ip
                )?;
            } else {
                outln!("daemon holds:")?;
                for r in rows {
                    outln!("  {r}")?;
                }
                if l.observe {
                    outln!("  (observe mode: counted, never enforced)")?;
                } else if let Some(e) = in_force_entry(&l) {
                    outln!("  {}", in_force(e))?;
                }
            }
            let now = crate::state::unix_now();
            // Explanations are a drop verdict's: not when something before it decides (an
            // allow, a limit feed), nor in observe mode (nothing is dropped).
            let verdict_decides = in_force_entry(&l)
                .is_some_and(|e| e.list == ListName::Verdict && e.action == Action::Drop);
            match (verdict_decides, l.explain_next, l.explainable) {
                (false, ..) => {}
                (true, Some(at), _) => outln!("  {}", explained_line(at, now))?,
                (true, None, Some(false)) => outln!(
                    "  not explained: no forward-confirmed rDNS (policy.explain_to = \"fcrdns\"): every SYN is dropped in the kernel"
                )?,
                (true, None, _) => {}
            }
            outln!(
                "explained refusals: {}",
                super::status::explained(&l.explain, now)
            )?;
        }
        Err(e) => outln!("daemon: {e}")?,
    }
    Ok(())
}

/// The config of the daemon that answered (`l`), read from its file, in place of `own`
/// (the default file's, or the built-in defaults): a daemon started with `-c` elsewhere
/// screens by that file, and `check` explains what it would do. If that file cannot be read
/// here (another user's, since changed), `own` and a warning that says so.
fn the_daemons_config(l: &LookupReply, own: (Config, Option<PathBuf>)) -> (Config, Option<String>) {
    let Some(ConfigInUse { file }) = &l.config else {
        return (own.0, None);
    };
    let theirs = match file {
        Some(f) => Config::load(Path::new(f)),
        None => Ok(Config::default()),
    };
    match theirs {
        Ok(c) => (c, None),
        Err(e) => {
            let mine = own
                .1
                .map_or("the built-in defaults".into(), |f| f.display().to_string());
            let warning = format!(
                "the running daemon's config cannot be read here ({e}): explained with {mine}"
            );
            (own.0, Some(warning))
        }
    }
}

/// What the daemon holds for the address, in the datapath's order of precedence (allow,
/// deny, limit feeds, its verdict, its network's): the first one decides its SYNs.
fn held(l: &LookupReply) -> impl Iterator<Item = &ListedEntry> {
    [
        &l.allowed,
        &l.blocked,
        &l.limited,
        &l.verdict,
        &l.network_verdict,
    ]
    .into_iter()
    .flatten()
}

/// The entry that decides the address's SYNs (`None`: none, or observe mode): the first
/// one still in force. An expired one is still listed until the daemon's next sweep (up to a
/// minute), but the datapath has stopped applying it: the one after it decides.
fn in_force_entry(l: &LookupReply) -> Option<&ListedEntry> {
    let now = crate::state::unix_now();
    held(l)
        .find(|e| e.expires.is_none_or(|t| t > now))
        .filter(|_| !l.observe)
}

/// What the datapath does with the address's SYNs, by the entry that decides them.
fn in_force(e: &ListedEntry) -> String {
    let does = match e.action {
        Action::Pass => "passed",
        Action::Limit => "rate-limited",
        Action::Drop => "dropped",
    };
    format!(
        "in force: its SYNs are {does} ({} {}, {})",
        e.list.name(),
        e.net,
        e.source.name()
    )
}

/// When the dropped peer's next connection is let through to be told why.
fn explained_line(at: u64, now: u64) -> String {
    if at <= now {
        "next explained connection: its next one (the MTA asks mxscreen and refuses it with the reason)".into()
    } else {
        format!(
            "next explained connection: in {} (until then every SYN is dropped in the kernel)",
            duration::format(std::time::Duration::from_secs(at - now))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::Source;

    fn entry(list: ListName, action: Action, expires: Option<u64>) -> ListedEntry {
        ListedEntry {
            list,
            net: "203.0.113.21/32".parse().unwrap(),
            action,
            source: Source::Manual,
            reason: None,
            created: None,
            expires,
            hits: 0,
            origin: None,
            feed: None,
        }
    }

    /// An allow that has expired (listed until the sweep) no longer decides: the verdict
    /// behind it does.
    #[test]
    fn an_expired_entry_is_not_the_one_in_force() {
        let now = crate::state::unix_now();
        let mut l = LookupReply {
            allowed: Some(entry(ListName::Allowed, Action::Pass, Some(now - 1))),
            verdict: Some(entry(ListName::Verdict, Action::Drop, Some(now + 600))),
            ..LookupReply::default()
        };
        assert_eq!(in_force_entry(&l).map(|e| e.action), Some(Action::Drop));
        l.allowed.as_mut().unwrap().expires = Some(now + 60);
        assert_eq!(in_force_entry(&l).map(|e| e.action), Some(Action::Pass));
        l.observe = true;
        assert!(in_force_entry(&l).is_none());
    }

    /// The daemon's config file is explained with; one that cannot be read leaves the
    /// caller's own, and a warning naming both.
    #[test]
    fn explains_by_the_running_daemons_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mx.toml");
        std::fs::write(&file, "[policy]\nobserve = true\n").unwrap();
        let reply = |f: &Path| LookupReply {
            config: Some(ConfigInUse {
                file: Some(f.display().to_string()),
            }),
            ..LookupReply::default()
        };
        let (c, warning) = the_daemons_config(&reply(&file), (Config::default(), None));
        assert!(c.policy.observe && warning.is_none());
        let gone = dir.path().join("gone.toml");
        let (c, warning) = the_daemons_config(&reply(&gone), (Config::default(), None));
        assert!(!c.policy.observe);
        let warning = warning.unwrap();
        assert!(
            warning.contains("gone.toml") && warning.contains("the built-in defaults"),
            "{warning}"
        );
        // An older daemon that does not say: the caller's own.
        let (c, warning) = the_daemons_config(&LookupReply::default(), (Config::default(), None));
        assert!(!c.policy.observe && warning.is_none());
    }

    #[test]
    fn says_when_the_next_explained_connection_is_due() {
        assert!(explained_line(100, 100).contains("its next one"));
        assert!(explained_line(100 + 3 * 3600 + 59 * 60, 100).contains("in 3h59m"));
    }
}
