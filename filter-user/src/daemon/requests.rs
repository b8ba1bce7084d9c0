//! The daemon's answers to the operator's control requests. Changes reach the maps (and the
//! state file) before the reply is sent, so a `block` has taken effect when the command
//! returns.

use std::{net::IpAddr, time::Duration};

use anyhow::{Result, bail};
use filter_common::{Action, Counter, ListEntry, Reason, Verdict as MapVerdict, program_names};
use ipnet::IpNet;

use super::{
    Daemon, protect,
    reactor::{boot_expiry, unix_expiry},
};
use crate::{
    control::protocol::{
        Body, InterfaceStatus, ListName, ListWhat, ListedEntry, LookupReply, MapFill,
        ProgramStatus, Reply, Request, ResolverStatus, Source, StatsReply, StatusReply,
    },
    datapath::{ListKind, clock},
    duration,
    reputation::Stats,
    state::{ManualEntry, unix_now},
};

/// What `list` calls each list.
const fn list_name(kind: ListKind) -> ListName {
    match kind {
        ListKind::Deny => ListName::Blocked,
        ListKind::Allow => ListName::Allowed,
    }
}

impl Daemon {
    /// Answers one control request.
    pub fn handle(&mut self, req: Request) -> Reply {
        let result = match req {
            Request::Block {
                net,
                ttl_secs,
                reason,
                force,
            } => self.block(net, ttl_secs, reason, force).map(done),
            Request::Unblock { net } => self.unlist(ListKind::Deny, net).map(done),
            Request::Allow {
                net,
                ttl_secs,
                reason,
            } => self
                .manual(ListKind::Allow, net.trunc(), ttl_secs, reason, false)
                .map(done),
            Request::Unallow { net } => self.unlist(ListKind::Allow, net).map(done),
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
        force: bool,
    ) -> Result<String> {
        let now = unix_now();
        let expires = ttl_secs.map(|t| now + t);
        let entry = ManualEntry {
            list,
            net,
            reason: reason.clone(),
            created: now,
            expires,
            origin: None,
        };
        // State file first: if the map write then fails, a restart still applies the entry;
        // the other way round, an entry could be enforced but forgotten.
        self.state.upsert(entry.clone())?;
        self.maps.list_insert(
            list,
            net,
            ListEntry::new(Reason::Manual, boot_expiry(expires)),
        )?;
        let verb = match list {
            ListKind::Deny => "blocked",
            ListKind::Allow => "allowed",
        };
        let span = ttl_secs.map_or("until removed".to_owned(), |t| {
            format!("for {}", duration::format(Duration::from_secs(t)))
        });
        self.fleet.manual_set(&entry, force);
        tracing::info!(list = ?list, %net, ttl = ?ttl_secs, reason = reason.as_deref().unwrap_or(""), "manual entry added");
        Ok(format!(
            "{verb} {net} {span}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        ))
    }

    /// Whether this host may block `net`: never a protected prefix (loopback, its own
    /// addresses, `lists.allow`), and nothing wider than `control.widest_block_*` unless
    /// forced. Local blocks and the fleet's shared ones go through here alike.
    pub(super) fn check_block(&self, net: IpNet, force: bool) -> Result<()> {
        if let Some(p) = protect::fully_protected(&self.protected, &net) {
            bail!(
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
            let (widest, family) = if net.addr().is_ipv4() {
                (w4, "v4")
            } else {
                (w6, "v6")
            };
            bail!(
                "{net} is wider than /{widest} (control.widest_block_{family}); add --force if you mean it"
            );
        }
        Ok(())
    }

    fn block(
        &mut self,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    ) -> Result<String> {
        let net = net.trunc();
        self.check_block(net, force)?;
        let mut message = self.manual(ListKind::Deny, net, ttl_secs, reason, force)?;
        let kept: Vec<String> = protect::carve_outs(&self.protected, &net)
            .iter()
            .map(|p| format!("{} ({})", p.net, p.why))
            .collect();
        if !kept.is_empty() {
            message.push_str(&format!("; still allowed inside it: {}", kept.join(", ")));
        }
        Ok(message)
    }

    fn unlist(&mut self, list: ListKind, net: IpNet) -> Result<String> {
        let net = net.trunc();
        let (verb, cmd) = match list {
            ListKind::Deny => ("blocked", "unblock"),
            ListKind::Allow => ("allowed", "unallow"),
        };
        if self.state.get(list, net).is_none() {
            let by_config = match list {
                ListKind::Deny => self.cfg.lists.deny.iter().any(|n| n.trunc() == net),
                ListKind::Allow => self.protected.iter().any(|p| p.net == net),
            };
            if by_config {
                bail!(
                    "{net} is {verb} by the config (or is the host's own address), not by hand: change the config and reload (SIGHUP)"
                );
            }
            let mut hint = String::new();
            if net.prefix_len() == net.max_prefix_len()
                && self.maps.list_match(list, net.addr())?.is_some()
            {
                let covering = self
                    .state
                    .entries()
                    .iter()
                    .find(|e| e.list == list && e.net.contains(&net.addr()))
                    .map_or_else(|| "a wider prefix".into(), |e| e.net.to_string());
                hint = format!(" (it is covered by {covering}; `mxscreen {cmd}` that prefix)");
            }
            bail!("{net} is not {verb} by hand{hint}");
        }
        if let Some(gone) = self.state.remove(list, net)? {
            self.fleet.manual_removed(&gone);
        }
        self.maps.list_remove(list, net)?;
        tracing::info!(list = ?list, %net, "manual entry removed");
        let mut message = match list {
            ListKind::Deny => format!("unblocked {net}"),
            ListKind::Allow => format!("removed {net} from the allow list"),
        };
        if list == ListKind::Deny
            && net.prefix_len() == net.max_prefix_len()
            && let Some(v) = self.maps.verdict_get(net.addr())?
            && v.action() != Action::Pass
            && clock::remaining(v.expires_ns).is_none_or(|d| !d.is_zero())
        {
            message.push_str(&format!(
                "; note: it still has a {} verdict from {}; `mxscreen allow {}` overrides it",
                v.action().name(),
                v.reason().name(),
                net.addr()
            ));
        }
        Ok(message)
    }

    fn listed(&self, list: ListKind, net: IpNet, e: &ListEntry) -> ListedEntry {
        let manual = self.state.get(list, net);
        let source = match e.reason() {
            Reason::Config => self
                .protected
                .iter()
                .find(|p| p.net == net)
                .map_or(Source::Config, |p| p.why),
            r => Source::from(r),
        };
        ListedEntry {
            list: list_name(list),
            net,
            action: match list {
                ListKind::Deny => Action::Drop,
                ListKind::Allow => Action::Pass,
            },
            source,
            reason: manual.and_then(|m| m.reason.clone()),
            created: manual.map(|m| m.created),
            expires: manual
                .and_then(|m| m.expires)
                .or_else(|| unix_expiry(e.expires_ns)),
            hits: e.hits,
            origin: manual.and_then(|m| m.origin.clone().or_else(|| self.host())),
        }
    }

    /// This host's fleet name, for what it made itself (`None` when the fleet is off).
    fn host(&self) -> Option<String> {
        self.fleet.name().map(str::to_owned)
    }

    fn verdict_entry(&self, ip: IpAddr, v: &MapVerdict) -> ListedEntry {
        ListedEntry {
            list: ListName::Verdict,
            net: IpNet::from(ip),
            action: v.action(),
            source: Source::from(v.reason()),
            reason: None,
            created: None,
            expires: unix_expiry(v.expires_ns),
            hits: v.hits,
            origin: self
                .shared_origins
                .host(ip)
                .map(str::to_owned)
                .or_else(|| self.host()),
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
        let mut by_action: Vec<(Action, u64)> = Action::ALL.iter().map(|a| (*a, 0)).collect();
        let mut by_source = std::collections::BTreeMap::<Source, u64>::new();
        let now = clock::now_ns();
        for (_, v) in self.maps.verdicts()? {
            if v.expires_ns != 0 && v.expires_ns <= now {
                continue;
            }
            // The action the datapath applies: an unknown byte passes, here as there.
            if let Some(slot) = by_action.iter_mut().find(|(a, _)| *a == v.action()) {
                slot.1 += 1;
            }
            *by_source.entry(Source::from(v.reason())).or_default() += 1;
        }
        Ok(StatsReply {
            datapath,
            verdicts_by_action: by_action,
            verdicts_by_reason: by_source.into_iter().collect(),
            engine: self.engine.stats(),
        })
    }

    fn status(&mut self) -> Result<StatusReply> {
        let mut programs = Vec::new();
        for name in [program_names::XDP, program_names::TC] {
            if let Some(p) = self.ebpf.program(name) {
                let id = p.info().map(|i| i.id()).unwrap_or(0);
                programs.push(ProgramStatus {
                    name: name.to_owned(),
                    id,
                });
            }
        }
        let sizes = self.cfg.datapath.maps;
        let fill = |name: &str, entries: usize, per_family: u32| MapFill {
            name: name.into(),
            entries: entries as u64,
            max_entries: per_family.saturating_mul(2),
        };
        let maps = vec![
            fill(
                "allow (v4+v6)",
                self.maps.list_entries(ListKind::Allow)?.len(),
                sizes.allow,
            ),
            fill(
                "deny (v4+v6)",
                self.maps.list_entries(ListKind::Deny)?.len(),
                sizes.deny,
            ),
            fill(
                "verdicts (v4+v6)",
                self.maps.verdicts()?.len(),
                sizes.verdicts,
            ),
        ];
        let engine = self.engine.stats();
        Ok(StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_path.as_ref().map(|p| p.display().to_string()),
            observe: self.cfg.policy.observe,
            first_contact: self.cfg.datapath.first_contact,
            ports: self.cfg.datapath.ports.clone(),
            interfaces: self
                .attached
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.iface.clone(),
                    mode: a.mode,
                })
                .collect(),
            programs,
            maps,
            warnings: self.status_warnings(&engine),
            resolver: ResolverStatus {
                nameservers: self.cfg.resolver.nameservers.clone(),
                engine,
            },
            fleet: self.fleet.status().map(|mut f| {
                f.refused = self.fleet_refused;
                f
            }),
        })
    }

    /// Setup warnings plus a line per zone that has answered with refusal codes.
    fn status_warnings(&self, stats: &Stats) -> Vec<String> {
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
}

fn done(message: String) -> Body {
    Body::Done { message }
}
