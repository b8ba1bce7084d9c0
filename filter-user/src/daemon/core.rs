//! The daemon's state and everything it does to it: applying the config to the datapath,
//! keeping the lists in line with the config and the state file, writing verdicts, sweeping
//! expired entries and answering control requests. One owner (the main loop) — no locks.

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::Ebpf;
use filter_common::{Action, Counter, ListEntry, Reason, Verdict as MapVerdict, program_names};
use ipnet::IpNet;

use super::protect::{self, Protected};
use crate::{
    config::Config,
    control::protocol::{
        Body, InterfaceStatus, ListWhat, ListedEntry, LookupReply, MapFill, Reply, Request,
        StatsReply, StatusReply,
    },
    datapath::{Attached, DatapathMaps, ListKind, clock},
    reputation::{Engine, duration, verdict::Verdict},
    state::{ManualEntry, State, unix_now},
};

pub struct Daemon {
    pub cfg: Config,
    pub config_path: Option<PathBuf>,
    pub ebpf: Ebpf,
    pub maps: DatapathMaps,
    pub attached: Vec<Attached>,
    pub state: State,
    pub engine: Engine,
    pub protected: Vec<Protected>,
    pub started: Instant,
}

fn list_entry(reason: Reason, expires_ns: u64) -> ListEntry {
    ListEntry {
        reason: reason as u8,
        _pad: [0; 7],
        expires_ns,
        hits: 0,
    }
}

/// Boot-clock expiry for a wall-clock one (Unix seconds); 0 = never.
fn boot_expiry(expires_unix: Option<u64>) -> u64 {
    match expires_unix {
        None => 0,
        Some(t) => clock::expiry_after(Duration::from_secs(t.saturating_sub(unix_now()))),
    }
}

/// Wall-clock expiry (Unix seconds) of a datapath-clock one; `None` = never.
fn unix_expiry(expires_ns: u64) -> Option<u64> {
    clock::remaining(expires_ns).map(|left| unix_now() + left.as_secs())
}

/// Name of a stored action byte, as the datapath reads it (an unknown value passes).
fn action_name(a: u8) -> &'static str {
    Action::from_u8_or_pass(a).name()
}

/// Name of a stored reason byte (`manual`, `config`, `reputation`...).
fn reason_source(r: u8) -> &'static str {
    Reason::from_u8(r).name()
}

impl Daemon {
    /// Writes the runtime config and makes the tries match config + state exactly: entries
    /// this daemon owns (manual and config) that are no longer wanted are removed, wanted
    /// ones (re)inserted. Called at start (pinned tries may hold an older truth) and on reload.
    pub fn apply(&mut self) -> Result<()> {
        self.maps.set_config(&self.cfg.kernel())?;
        self.protected = protect::protected_set(&self.cfg.lists.allow);
        let mut want: Vec<(ListKind, IpNet, ListEntry)> = Vec::new();
        for p in &self.protected {
            want.push((ListKind::Allow, p.net, list_entry(Reason::Config, 0)));
        }
        for net in &self.cfg.lists.deny {
            want.push((ListKind::Deny, net.trunc(), list_entry(Reason::Config, 0)));
        }
        for e in self.state.entries() {
            want.push((
                e.list,
                e.net.trunc(),
                list_entry(Reason::Manual, boot_expiry(e.expires)),
            ));
        }
        for kind in [ListKind::Allow, ListKind::Deny] {
            for (net, entry) in self.maps.list_entries(kind)? {
                let ours = matches!(
                    Reason::from_u8(entry.reason),
                    Reason::Manual | Reason::Config
                );
                if ours && !want.iter().any(|(k, n, _)| *k == kind && *n == net) {
                    self.maps.list_remove(kind, net)?;
                }
            }
        }
        for (kind, net, entry) in want {
            self.maps.list_insert(kind, net, entry)?;
        }
        Ok(())
    }

    /// A new peer from the datapath: hand it to the engine's budgeted queue.
    pub fn on_new_peer(&mut self, ip: IpAddr) {
        let outcome = self.engine.submit(ip);
        tracing::debug!(%ip, ?outcome, "new peer");
    }

    /// A verdict from the engine: into the map, and one log line for humans and parsers.
    pub fn on_verdict(&mut self, v: &Verdict) {
        let entry = MapVerdict {
            action: v.action as u8,
            reason: v.reason as u8,
            _pad: [0; 6],
            expires_ns: clock::expiry_after(v.ttl),
            hits: 0,
        };
        if let Err(e) = self.maps.verdict_set(v.ip, entry) {
            tracing::warn!(ip = %v.ip, error = %e, "could not store verdict");
            return;
        }
        tracing::info!(
            target: "mxscreen::verdict",
            action = action_name(v.action as u8),
            ip = %v.ip,
            score = v.score,
            reasons = %reasons(v),
            ttl = v.ttl.as_secs(),
            source = reason_source(v.reason as u8),
            observe = self.cfg.policy.observe,
            "mxscreen-verdict"
        );
    }

    /// Removes expired manual entries (state file and tries) and expired verdicts.
    pub fn sweep(&mut self) -> Result<()> {
        for e in self.state.take_expired(unix_now())? {
            self.maps.list_remove(e.list, e.net)?;
            tracing::info!(list = ?e.list, net = %e.net, "manual entry expired");
        }
        let now = clock::now_ns();
        let expired: Vec<IpAddr> = self
            .maps
            .verdicts()?
            .into_iter()
            .filter(|(_, v)| v.expires_ns != 0 && v.expires_ns <= now)
            .map(|(ip, _)| ip)
            .collect();
        let removed = self.maps.verdicts_remove(&expired)?;
        if removed > 0 {
            tracing::debug!(removed, "expired verdicts removed");
        }
        Ok(())
    }

    /// Answers one control request. Changes reach the maps (and the state file) before the
    /// reply is sent, so a `block` has taken effect when the command returns.
    pub fn handle(&mut self, req: Request) -> Reply {
        let result = match req {
            Request::Block {
                net,
                ttl_secs,
                reason,
                force,
            } => self.block(net, ttl_secs, reason, force),
            Request::Unblock { net } => self.unlist(ListKind::Deny, net),
            Request::Allow {
                net,
                ttl_secs,
                reason,
            } => self.allow(net, ttl_secs, reason),
            Request::Unallow { net } => self.unlist(ListKind::Allow, net),
            Request::List { what } => self.list(what).map(|entries| Body::List { entries }),
            Request::Stats => self.stats().map(Body::Stats),
            Request::Status => self.status().map(Body::Status),
            Request::Lookup { ip } => self.lookup(ip).map(Body::Lookup),
        };
        match result {
            Ok(body) => Reply::Ok { body },
            Err(e) => Reply::Error {
                message: format!("{e:#}"),
            },
        }
    }

    fn manual(
        &mut self,
        list: ListKind,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
    ) -> Result<String> {
        let now = unix_now();
        let entry = ManualEntry {
            list,
            net,
            reason: reason.clone(),
            created: now,
            expires: ttl_secs.map(|t| now + t),
        };
        // State file first: if the map write then fails, a restart still applies the entry;
        // the other way round, an entry could be enforced but forgotten.
        self.state.upsert(entry)?;
        self.maps.list_insert(
            list,
            net,
            list_entry(Reason::Manual, boot_expiry(ttl_secs.map(|t| now + t))),
        )?;
        let verb = if list == ListKind::Deny {
            "blocked"
        } else {
            "allowed"
        };
        let span = ttl_secs.map_or("until removed".to_owned(), |t| {
            format!("for {}", duration::format(Duration::from_secs(t)))
        });
        tracing::info!(list = ?list, %net, ttl = ?ttl_secs, reason = reason.as_deref().unwrap_or(""), "manual entry added");
        Ok(format!(
            "{verb} {net} {span}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ))
    }

    fn block(
        &mut self,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    ) -> Result<Body> {
        let net = net.trunc();
        if let Some(p) = protect::fully_protected(&self.protected, &net) {
            anyhow::bail!(
                "{net} is protected ({}: {}) and can never be blocked",
                p.why,
                p.net
            );
        }
        let (w4, w6) = (
            self.cfg.control.widest_block_v4,
            self.cfg.control.widest_block_v6,
        );
        if !force && protect::too_wide(&net, w4, w6) {
            anyhow::bail!(
                "{net} is wider than /{} (control.widest_block_{}); add --force if you mean it",
                if net.addr().is_ipv4() { w4 } else { w6 },
                if net.addr().is_ipv4() { "v4" } else { "v6" }
            );
        }
        let mut message = self.manual(ListKind::Deny, net, ttl_secs, reason)?;
        let kept: Vec<String> = protect::carve_outs(&self.protected, &net)
            .iter()
            .map(|p| format!("{} ({})", p.net, p.why))
            .collect();
        if !kept.is_empty() {
            message.push_str(&format!("; still allowed inside it: {}", kept.join(", ")));
        }
        Ok(Body::Done { message })
    }

    fn allow(&mut self, net: IpNet, ttl_secs: Option<u64>, reason: Option<String>) -> Result<Body> {
        Ok(Body::Done {
            message: self.manual(ListKind::Allow, net.trunc(), ttl_secs, reason)?,
        })
    }

    fn unlist(&mut self, list: ListKind, net: IpNet) -> Result<Body> {
        let net = net.trunc();
        let (verb, cmd) = if list == ListKind::Deny {
            ("blocked", "unblock")
        } else {
            ("allowed", "unallow")
        };
        if self.state.get(list, net).is_none() {
            let by_config = match list {
                ListKind::Deny => self.cfg.lists.deny.iter().any(|n| n.trunc() == net),
                ListKind::Allow => self.protected.iter().any(|p| p.net == net),
            };
            if by_config {
                anyhow::bail!(
                    "{net} is {verb} by the config (or is the host's own address), not by hand: change the config and reload (SIGHUP)"
                );
            }
            let hint = match net.addr() {
                ip if net.prefix_len() == net.max_prefix_len() => {
                    match self.maps.list_match(list, ip)? {
                        Some(_) => {
                            let covering = self
                                .state
                                .entries()
                                .iter()
                                .find(|e| e.list == list && e.net.contains(&ip))
                                .map(|e| e.net.to_string());
                            format!(
                                " (it is covered by {}; `mxscreen {cmd}` that prefix)",
                                covering.unwrap_or_else(|| "a wider prefix".into())
                            )
                        }
                        None => String::new(),
                    }
                }
                _ => String::new(),
            };
            anyhow::bail!("{net} is not {verb} by hand{hint}");
        }
        self.state.remove(list, net)?;
        self.maps.list_remove(list, net)?;
        tracing::info!(list = ?list, %net, "manual entry removed");
        let mut message = if list == ListKind::Deny {
            format!("unblocked {net}")
        } else {
            format!("removed {net} from the allow list")
        };
        if list == ListKind::Deny
            && net.prefix_len() == net.max_prefix_len()
            && let Some(v) = self.maps.verdict_get(net.addr())?
            && Action::from_u8(v.action) != Some(Action::Pass)
            && clock::remaining(v.expires_ns).is_none_or(|d| !d.is_zero())
        {
            message.push_str(&format!(
                "; note: it still has a {} verdict from {}; `mxscreen allow {}` overrides it",
                action_name(v.action),
                reason_source(v.reason),
                net.addr()
            ));
        }
        Ok(Body::Done { message })
    }

    fn listed(&self, list: ListKind, net: IpNet, e: &ListEntry) -> ListedEntry {
        let manual = self.state.get(list, net);
        let source = match Reason::from_u8(e.reason) {
            Reason::Config => self
                .protected
                .iter()
                .find(|p| p.net == net)
                .map_or("config", |p| p.why),
            r => reason_source(r as u8),
        };
        ListedEntry {
            list: if list == ListKind::Deny {
                "blocked"
            } else {
                "allowed"
            }
            .into(),
            net,
            action: if list == ListKind::Deny {
                "drop"
            } else {
                "pass"
            }
            .into(),
            source: source.into(),
            reason: manual.and_then(|m| m.reason.clone()),
            created: manual.map(|m| m.created),
            expires: manual
                .and_then(|m| m.expires)
                .or_else(|| unix_expiry(e.expires_ns)),
            hits: e.hits,
        }
    }

    fn verdict_entry(&self, ip: IpAddr, v: &MapVerdict) -> ListedEntry {
        ListedEntry {
            list: "verdict".into(),
            net: IpNet::from(ip),
            action: action_name(v.action).into(),
            source: reason_source(v.reason).into(),
            reason: None,
            created: None,
            expires: unix_expiry(v.expires_ns),
            hits: v.hits,
        }
    }

    fn list(&mut self, what: ListWhat) -> Result<Vec<ListedEntry>> {
        let mut out = Vec::new();
        for (kind, wanted) in [
            (ListKind::Deny, ListWhat::Blocked),
            (ListKind::Allow, ListWhat::Allowed),
        ] {
            if what == wanted || what == ListWhat::All {
                for (net, e) in self.maps.list_entries(kind)? {
                    out.push(self.listed(kind, net, &e));
                }
            }
        }
        if matches!(what, ListWhat::Verdicts | ListWhat::All) {
            let now = clock::now_ns();
            for (ip, v) in self.maps.verdicts()? {
                if v.expires_ns == 0 || v.expires_ns > now {
                    out.push(self.verdict_entry(ip, &v));
                }
            }
        }
        Ok(out)
    }

    fn stats(&self) -> Result<StatsReply> {
        let counters = self.maps.counters()?;
        let datapath = Counter::ALL
            .iter()
            .map(|c| (c.name().to_owned(), counters[*c as usize]))
            .collect();
        let mut by_action = [0u64; 3];
        let mut by_reason = std::collections::BTreeMap::<&str, u64>::new();
        let now = clock::now_ns();
        for (_, v) in self.maps.verdicts()? {
            if v.expires_ns != 0 && v.expires_ns <= now {
                continue;
            }
            by_action[usize::from(v.action.min(2))] += 1;
            *by_reason.entry(reason_source(v.reason)).or_default() += 1;
        }
        Ok(StatsReply {
            datapath,
            verdicts_by_action: ["pass", "limit", "drop"]
                .iter()
                .zip(by_action)
                .map(|(n, c)| ((*n).to_owned(), c))
                .collect(),
            verdicts_by_reason: by_reason
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            engine: serde_json::to_value(self.engine.stats())?,
        })
    }

    fn status(&mut self) -> Result<StatusReply> {
        let mut programs = Vec::new();
        for name in [program_names::XDP, program_names::TC] {
            if let Some(p) = self.ebpf.program(name) {
                let id = p.info().map(|i| i.id()).unwrap_or(0);
                programs.push((name.to_owned(), id));
            }
        }
        let sizes = self.cfg.datapath.maps;
        let allow = self.maps.list_entries(ListKind::Allow)?.len() as u64;
        let deny = self.maps.list_entries(ListKind::Deny)?.len() as u64;
        let verdicts = self.maps.verdicts()?.len() as u64;
        let maps = vec![
            MapFill {
                name: "allow (v4+v6)".into(),
                entries: allow,
                max_entries: sizes.allow.saturating_mul(2),
            },
            MapFill {
                name: "deny (v4+v6)".into(),
                entries: deny,
                max_entries: sizes.deny.saturating_mul(2),
            },
            MapFill {
                name: "verdicts (v4+v6)".into(),
                entries: verdicts,
                max_entries: sizes.verdicts.saturating_mul(2),
            },
        ];
        let stats = self.engine.stats();
        Ok(StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_path.as_ref().map(|p| p.display().to_string()),
            observe: self.cfg.policy.observe,
            first_contact: self.cfg.datapath.first_contact.name().into(),
            ports: self.cfg.datapath.ports.clone(),
            interfaces: self
                .attached
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.iface.clone(),
                    mode: a.mode.to_string(),
                })
                .collect(),
            programs,
            maps,
            resolver: serde_json::json!({
                "nameservers": if self.cfg.resolver.nameservers.is_empty() { serde_json::json!("system (/etc/resolv.conf)") } else { serde_json::to_value(&self.cfg.resolver.nameservers)? },
                "queries_sent": stats.queries_sent,
                "in_flight": stats.in_flight,
                "queue_depth": stats.queue_depth,
                "rejected_queue_full": stats.rejected_queue_full,
                "verdict_tempfail": stats.verdict_tempfail,
                // Per zone: a non-zero error_codes means the list refuses our queries
                // (public resolver, over quota): fix the resolver setup, not the policy.
                "zones": stats.zones.iter().map(|(zone, z)| (zone.clone(), serde_json::json!({
                    "queries": z.queries, "listed": z.listed, "tempfail": z.tempfail,
                    "error_codes": z.error_codes, "outside_loopback": z.outside_loopback,
                }))).collect::<serde_json::Map<_, _>>(),
            }),
            warnings: self.status_warnings(&stats),
        })
    }

    /// Setup warnings plus a line per zone that has answered with refusal codes.
    fn status_warnings(&self, stats: &crate::reputation::Stats) -> Vec<String> {
        let mut w = self.engine.warnings();
        for (zone, z) in &stats.zones {
            if z.error_codes > 0 {
                w.push(format!(
                    "{zone} refused {} queries with error codes (127.255.255.x): those peers were not screened by it; check resolver.nameservers",
                    z.error_codes
                ));
            }
        }
        w
    }

    fn lookup(&mut self, ip: IpAddr) -> Result<LookupReply> {
        let mut reply = LookupReply {
            ip: Some(ip),
            ..Default::default()
        };
        for kind in [ListKind::Allow, ListKind::Deny] {
            if let Some(e) = self.maps.list_match(kind, ip)? {
                // The trie returns the value, not the prefix: name the longest listed prefix.
                let net = self
                    .maps
                    .list_entries(kind)?
                    .into_iter()
                    .filter(|(n, _)| n.contains(&ip))
                    .max_by_key(|(n, _)| n.prefix_len())
                    .map_or(IpNet::from(ip), |(n, _)| n);
                let entry = Some(self.listed(kind, net, &e));
                match kind {
                    ListKind::Allow => reply.allowed = entry,
                    ListKind::Deny => reply.blocked = entry,
                }
            }
        }
        if let Some(v) = self.maps.verdict_get(ip)?
            && (v.expires_ns == 0 || v.expires_ns > clock::now_ns())
        {
            reply.verdict = Some(self.verdict_entry(ip, &v));
        }
        Ok(reply)
    }

    /// Detaches every interface (in reverse order of attachment).
    pub fn detach_all(&mut self) {
        while let Some(a) = self.attached.pop() {
            let iface = a.iface.clone();
            if let Err(e) = a.detach(&mut self.ebpf) {
                tracing::warn!(%iface, error = %e, "detach failed (the link goes away with the process anyway)");
            }
        }
    }
}

/// The evidence that moved the score (or could not be had), as `source=result[detail](+w)`.
pub fn reasons(v: &Verdict) -> String {
    let mut parts = Vec::new();
    for e in &v.evidence {
        if e.weight != 0 || e.result.is_unknown() {
            let detail = if e.detail.is_empty() {
                String::new()
            } else {
                format!("[{}]", e.detail)
            };
            parts.push(format!(
                "{}={}{}({:+})",
                e.source,
                e.result.name(),
                detail,
                e.weight
            ));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}
