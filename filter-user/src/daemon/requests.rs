//! The daemon's answers to the operator's control requests. Changes reach the maps (and the
//! state file) before the reply is sent, so a `block` has taken effect when the command
//! returns. (`list` and `check`'s lookup are in [`super::listing`].)

use std::time::Duration;

use anyhow::{Result, bail};
use filter_common::{Action, Counter, ListEntry, Reason, Table, program_names};
use ipnet::IpNet;

use super::{Daemon, protect, reactor::boot_expiry};
use crate::{
    control::protocol::{
        Body, InterfaceStatus, MapFill, ProgramStatus, Reply, Request, ResolverStatus, Source,
        StatsReply, StatusReply,
    },
    datapath::{ListKind, clock},
    duration,
    reputation::Stats,
    state::{ManualEntry, unix_now},
};

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
                .manual(ListKind::Allow, net.trunc(), ttl_secs, reason)
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
    ) -> Result<String> {
        let now = unix_now();
        let expires = ttl_secs.map(|t| now + t);
        let entry = ManualEntry {
            list,
            net,
            reason: reason.clone(),
            created: now,
            expires,
        };
        // State file first: if the map write then fails, a restart still applies the entry;
        // the other way round, an entry could be enforced but forgotten.
        self.state.upsert(entry)?;
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
    ) -> Result<String> {
        let net = net.trunc();
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
        let mut message = self.manual(ListKind::Deny, net, ttl_secs, reason)?;
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
        self.state.remove(list, net)?;
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
        let fill = |name: &str, entries: u64, per_family: u32| MapFill {
            name: name.into(),
            entries,
            max_entries: per_family.saturating_mul(2),
        };
        let lists = |t: Table| self.maps.table_len(t);
        let maps = vec![
            fill("allow (v4+v6)", lists(Table::Allow), sizes.allow),
            fill(
                "deny (v4+v6)",
                lists(Table::Deny) + lists(Table::Limit) + lists(Table::PrefixVerdict),
                sizes.deny,
            ),
            fill(
                "verdicts (v4+v6)",
                self.maps.verdicts()?.len() as u64,
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
            feeds: self.feeds.status(&self.maps),
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
}

fn done(message: String) -> Body {
    Body::Done { message }
}
