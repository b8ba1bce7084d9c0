//! The daemon's answers to the operator's control requests. Changes reach the maps (and the
//! state file) before the reply is sent, so a `block` has taken effect when the command
//! returns; each change is all-or-nothing (see `manual`).

use std::time::Duration;

use anyhow::{Result, bail};
use filter_common::{Action, ListEntry, Reason};
use ipnet::IpNet;

use super::{Daemon, protect, reactor::boot_expiry};
use crate::{
    control::{
        protocol::{Body, Reply, Request},
        server::Answer,
    },
    datapath::{ListKind, clock},
    duration,
    state::{ManualEntry, unix_now},
};

impl Daemon {
    /// Answers one control request.
    pub fn handle(&mut self, req: Request) -> Answer {
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
            Request::Forget { net, now } => self.forget(net, now).map(done),
            Request::List { what } => {
                return self.list(what).unwrap_or_else(|e| {
                    Answer::One(Reply::Error {
                        message: format!("{e:#}"),
                    })
                });
            }
            Request::Stats => self.stats().map(Body::Stats),
            Request::Status => self.status().map(Body::Status),
            Request::Lookup { ip } => self.lookup(ip).map(Body::Lookup),
        };
        Answer::One(match result {
            Ok(body) => Reply::Ok { body },
            Err(e) => Reply::Error {
                message: format!("{e:#}"),
            },
        })
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
        // All or nothing: the map first (a full map fails here, before anything else
        // changed), then the state file; if that write fails the map is put back as the
        // config and the unchanged state call for, so file, memory and map still agree.
        self.maps.list_insert(
            list,
            net,
            ListEntry::new(Reason::Manual, boot_expiry(expires)),
        )?;
        if let Err(e) = self.state.upsert(entry.clone()) {
            self.undo(list, net);
            return Err(e.context("nothing changed"));
        }
        self.recount_lists()?;
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
        // As in `manual`: map, then file, the map put back if the file cannot be written.
        self.maps.list_remove(list, net)?;
        match self.state.remove(list, net) {
            Err(e) => {
                self.undo(list, net);
                return Err(e.context("nothing changed"));
            }
            Ok(Some(gone)) => self.fleet.manual_removed(&gone),
            Ok(None) => {}
        }
        self.recount_lists()?;
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

    /// Undoes a map change whose state write failed (logged if even that fails: the next
    /// reload or restart rebuilds the lists from the file).
    fn undo(&mut self, list: ListKind, net: IpNet) {
        if let Err(e) = self.restore(list, net) {
            tracing::error!(%net, error = %format!("{e:#}"), "could not undo a map change; a reload (SIGHUP) rebuilds the lists");
        }
    }
}

fn done(message: String) -> Body {
    Body::Done { message }
}
