//! `mxscreen status`.

use anyhow::Result;

use super::{
    connect::Connect,
    out::{out, outln},
};
use crate::{
    control::{
        client::Client,
        protocol::{
            ExplainStatus, FeedStatus, FleetLink, FleetStatus, ResolverStatus, StatusReply,
        },
    },
    duration,
    state::unix_now,
};

/// What the daemon is doing: interfaces and attach modes, program ids, map fill levels,
/// uptime, feeds (entries, last load, lines skipped), resolver health, the fleet link (up or
/// down, since when), the config file in use
/// and any warnings.
///
/// Examples:
///   mxscreen status
///   mxscreen status --json
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// One JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub fn main(a: Args) -> Result<()> {
    let s = a.connect.call(Client::status)?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
    } else {
        out!("{}", text(&s))?;
    }
    Ok(())
}

/// The status as aligned text, a label column and a value column.
fn text(s: &StatusReply) -> String {
    let mut out = format!(
        "mxscreen {} running for {}\n",
        s.version,
        duration::format(std::time::Duration::from_secs(s.uptime_secs.max(1)))
    );
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{:<15}{value}\n", format!("{label}:")));
    };
    line(
        "config",
        s.config_file
            .as_deref()
            .unwrap_or("built-in defaults")
            .into(),
    );
    let mode = if s.observe {
        "observe (never drops)"
    } else {
        "enforcing"
    };
    line(
        "mode",
        format!("{mode}, first contact: {}", s.first_contact.name()),
    );
    line("explained", explained(&s.explain, unix_now()));
    line("ports", format!("{:?}", s.ports));
    line("backend", backend(&s.backend));
    for i in &s.interfaces {
        match &i.down {
            None => line("interface", format!("{} ({})", i.name, i.mode)),
            Some(why) => line("interface", format!("{}: NOT SCREENED: {why}", i.name)),
        }
    }
    for p in &s.programs {
        line("program", format!("{} id {}", p.name, p.id));
    }
    for m in &s.maps {
        line(
            "map",
            format!("{:<18} {:>9} / {}", m.name, m.entries, m.max_entries),
        );
    }
    for f in &s.feeds {
        line("feed", feed(f));
    }
    resolver(&s.resolver, &mut line);
    if let Some(r) = &s.reload {
        let ago = duration::format(std::time::Duration::from_secs(
            unix_now().saturating_sub(r.at).max(1),
        ));
        let last = if r.error.is_some() {
            "failed"
        } else {
            "applied"
        };
        line(
            "reload",
            format!(
                "last {ago} ago, {last} ({} applied, {} failed)",
                r.ok, r.failed
            ),
        );
    }
    if let Some(f) = &s.fleet {
        fleet(f, &mut line);
    }
    for w in &s.warnings {
        line("warning", w.clone());
    }
    out
}

fn fleet(f: &FleetStatus, line: &mut impl FnMut(&str, String)) {
    let since = unix_now().saturating_sub(f.since);
    let since = duration::format(std::time::Duration::from_secs(since.max(1)));
    let state = match f.link {
        FleetLink::Up => format!("up for {since}"),
        FleetLink::Down if f.since == 0 => "down (never connected yet)".to_owned(),
        FleetLink::Down => format!("DOWN for {since}: screening alone"),
    };
    line("fleet", format!("{} as {}: {state}", f.redis, f.host));
    if f.link == FleetLink::Down
        && let Some(e) = &f.last_error
    {
        line("fleet error", e.clone());
    }
    if let Some(at) = f.name_clash_at {
        let ago = duration::format(std::time::Duration::from_secs(
            unix_now().saturating_sub(at).max(1),
        ));
        line(
            "fleet warning",
            format!(
                "another host uses the fleet name {} ({} messages, the last {ago} ago): set a distinct fleet.name on each host",
                f.host, f.name_clashes
            ),
        );
    }
    line(
        "fleet shared",
        format!(
            "verdicts {} sent, {} received; manual {} sent, {} received; claims {} won, {} lost ({} timed out); {} malformed, {} refused",
            f.verdicts_sent,
            f.verdicts_received,
            f.manual_sent,
            f.manual_received,
            f.claims_won,
            f.claims_lost,
            f.claims_timed_out,
            f.malformed,
            f.refused
        ),
    );
}

/// `drop-list: 1000000 entries (drop, cidr), loaded 2m ago, 3 lines skipped, 512 hits, /path`
fn feed(f: &FeedStatus) -> String {
    let loaded = match f.last_load {
        Some(t) => format!(
            "loaded {} ago",
            duration::format(std::time::Duration::from_secs(
                unix_now().saturating_sub(t).max(1)
            ))
        ),
        None => "not loaded yet".into(),
    };
    let mut out = format!(
        "{}: {} entries ({}, {}), {loaded}, {} lines skipped, ",
        f.name, f.entries, f.action, f.format, f.errors
    );
    if f.refused > 0 {
        out.push_str(&format!("{} entries refused as too wide, ", f.refused));
    }
    out.push_str(&format!("{} hits, {}", f.hits, f.path));
    if let Some(w) = &f.warning {
        out.push_str(&format!("; {w}"));
    }
    if let Some(p) = &f.problem {
        let kept = if f.last_load.is_some() {
            "entries of the last load kept"
        } else {
            "nothing loaded yet"
        };
        out.push_str(&format!("; last read not loaded: {p} ({kept})"));
    }
    out
}

/// Explained refusals in one line: on or off, and why; when the MTA last asked.
pub fn explained(e: &ExplainStatus, now: u64) -> String {
    let ago = |at: u64| {
        duration::format(std::time::Duration::from_secs(
            now.saturating_sub(at).max(1),
        ))
    };
    if e.every_secs == 0 {
        return "off (policy.explain_every = \"0s\")".into();
    }
    let every = duration::format(std::time::Duration::from_secs(e.every_secs));
    match (e.on, e.mta_last_asked) {
        (true, Some(at)) => {
            let whom = if e.to == "all" {
                "a listed sender"
            } else {
                "a listed sender with forward-confirmed rDNS"
            };
            format!(
                "on: one connection per {every} of {whom} reaches the MTA to be refused with the listing (the MTA last asked {} ago)",
                ago(at)
            )
        }
        (_, None) => "off: no MTA has asked mxscreen since it started (listed senders are dropped without a word until one does)".into(),
        (false, Some(at)) => format!(
            "off: the MTA last asked {} ago, more than policy.explain_every ({every}) (listed senders are dropped without a word until it asks again)",
            ago(at)
        ),
    }
}

fn resolver(r: &ResolverStatus, line: &mut impl FnMut(&str, String)) {
    let servers = if r.nameservers.is_empty() {
        "system (/etc/resolv.conf)".to_owned()
    } else {
        let names: Vec<String> = r.nameservers.iter().map(ToString::to_string).collect();
        names.join(", ")
    };
    line("resolver", servers);
    let e = &r.engine;
    line(
        "lookups",
        format!(
            "{} queries sent, {} in flight, {} queued, {} turned away (queue full), {} first SYNs unevaluated (too old or displaced), {} tempfail verdicts",
            e.queries_sent,
            e.in_flight,
            e.queue_depth,
            e.rejected_queue_full,
            e.first_expired,
            e.verdict_tempfail
        ),
    );
    if !r.canary.is_empty() {
        let parts: Vec<String> = r
            .canary
            .iter()
            .map(|(s, c)| match (c.ok, c.allowlist_weight < 0) {
                (true, _) => format!("{s} ok"),
                (false, false) => format!("{s} FAILED"),
                (false, true) => {
                    format!("{s} FAILED (an allowlist: no drop or limit it could outweigh)")
                }
            })
            .collect();
        line("canary", parts.join(", "));
    }
    for (zone, z) in &e.zones {
        line(
            "zone",
            format!(
                "{zone}: {} queries, {} listed, {} tempfail, {} error codes, {} outside 127/8",
                z.queries, z.listed, z.tempfail, z.error_codes, z.outside_loopback
            ),
        );
    }
}

/// Which backend screens; with `auto` on nftables, why eBPF was not used.
fn backend(b: &crate::control::protocol::BackendStatus) -> String {
    match &b.ebpf_error {
        Some(why) => format!(
            "{} ({}: eBPF could not be used: {why})",
            b.name, b.requested
        ),
        // As configured: the name says it all.
        None if b.requested == b.name => b.name.clone(),
        None => format!("{} ({})", b.name, b.requested),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `status` prints text, never a JSON blob.
    #[test]
    fn status_text_has_no_json() {
        let mut s = StatusReply::default();
        s.resolver
            .engine
            .zones
            .insert("bl.test".into(), Default::default());
        let t = text(&s);
        assert!(!t.contains('{') && !t.contains('}'), "{t}");
        assert!(
            t.contains("resolver:      system (/etc/resolv.conf)"),
            "{t}"
        );
        assert!(t.contains("zone:          bl.test: 0 queries"), "{t}");
    }
}
