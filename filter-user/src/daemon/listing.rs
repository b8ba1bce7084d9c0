//! What the daemon holds, as `list` and `check` show it: list entries (naming the feeds that
//! list a prefix), verdicts (naming the fleet host that made them), and network verdicts
//! (naming the addresses that earned them). A listing is streamed in chunks, the verdicts
//! read outside the main loop, so a million of them neither stall the daemon nor sit whole in
//! its memory.

use std::{net::IpAddr, sync::Arc};

use anyhow::Result;
use filter_common::{Action, ListEntry, PeerVerdict, Reason, Table};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Daemon, fleet::SharedOrigins};
use crate::{
    control::{
        protocol::{
            Body, ConfigInUse, ListName, ListWhat, ListedEntry, LookupReply, Reply, Source,
        },
        server::Answer,
    },
    datapath::{ListKind, NetworkVerdict, clock, clock::unix_expiry, explain::next_explained},
    state::unix_now,
};

/// Entries per frame of a listing.
const FRAME: usize = 4096;
/// Frames waiting for a slow reader before the producer waits too.
const FRAMES_AHEAD: usize = 2;

/// Which `list` table a list's entries are shown in, and what they do.
const fn shown_as(table: Table) -> (ListName, Action) {
    match table {
        Table::Allow => (ListName::Allowed, Action::Pass),
        Table::Deny => (ListName::Blocked, Action::Drop),
        Table::Limit => (ListName::Limited, Action::Limit),
        Table::PrefixVerdict => (ListName::Verdict, Action::Drop),
    }
}

fn live(expires_ns: u64) -> bool {
    filter_common::live(expires_ns, clock::now_ns())
}

impl Daemon {
    /// One list entry as `list` shows it.
    pub(super) fn listed(&self, table: Table, net: IpNet, e: &ListEntry) -> ListedEntry {
        let kind = match table {
            Table::Allow => Some(ListKind::Allow),
            Table::Deny => Some(ListKind::Deny),
            _ => None,
        };
        let manual = kind.and_then(|k| self.lists.state().get(k, net));
        let source = match e.reason() {
            Reason::Config => self
                .lists
                .protected()
                .iter()
                .find(|p| p.net == net)
                .map_or(Source::Config, |p| p.why),
            r => Source::from(r),
        };
        let feeds = self.maps.feeds_listing(table, net);
        let (list, action) = shown_as(table);
        ListedEntry {
            list,
            net,
            action,
            source,
            reason: manual.and_then(|m| m.reason.clone()),
            created: manual.map(|m| m.created),
            expires: manual
                .and_then(|m| m.expires)
                .or_else(|| unix_expiry(e.expires_ns)),
            hits: e.hits,
            origin: manual.and_then(|m| {
                m.origin
                    .clone()
                    .or_else(|| self.fleet.name().map(str::to_owned))
            }),
            feed: (!feeds.is_empty()).then(|| feeds.join(", ")),
        }
    }

    /// A verdict for `list` and `check`; with `[fleet]`, `origins` and this host's name
    /// (`me`) say which host made it.
    pub(super) fn verdict_entry(
        ip: IpAddr,
        v: &PeerVerdict,
        origins: &SharedOrigins,
        me: Option<&str>,
    ) -> ListedEntry {
        ListedEntry {
            list: ListName::Verdict,
            net: IpNet::from(ip),
            action: v.action(),
            source: Source::from(v.reason()),
            reason: None,
            created: None,
            expires: unix_expiry(v.expires_ns),
            hits: v.hits,
            origin: origins.host(ip).or(me).map(str::to_owned),
            feed: None,
        }
    }

    /// A network's verdict, with the addresses that earned it as its reason.
    fn network_entry(&self, v: &NetworkVerdict) -> ListedEntry {
        let members = match v.net {
            IpNet::V6(net) => self.verdicts.rotation().members(&net),
            IpNet::V4(_) => Vec::new(),
        };
        let reason = (!members.is_empty()).then(|| {
            let list: Vec<String> = members.iter().map(ToString::to_string).collect();
            format!(
                "{} addresses of {} hold drop verdicts: {}",
                members.len(),
                v.net,
                list.join(", ")
            )
        });
        ListedEntry {
            list: ListName::Verdict,
            net: v.net,
            action: v.action,
            source: Source::from(v.reason),
            reason,
            created: None,
            expires: unix_expiry(v.expires_ns),
            hits: v.hits,
            origin: self.fleet.name().map(str::to_owned),
            feed: None,
        }
    }

    /// `list`: the lists and network verdicts (read here), then the verdicts, streamed by a
    /// blocking task on a handle of its own while the main loop goes on.
    pub(super) fn list(&mut self, what: ListWhat) -> Result<Answer> {
        let mut first = Vec::new();
        let tables = [
            (Table::Deny, ListWhat::Blocked),
            (Table::Allow, ListWhat::Allowed),
            (Table::Limit, ListWhat::All),
        ];
        for (table, wanted) in tables {
            if what == wanted || what == ListWhat::All {
                for (net, e) in self.maps.table_entries(table)? {
                    first.push(self.listed(table, net, &e));
                }
            }
        }
        let verdicts = matches!(what, ListWhat::Verdicts | ListWhat::All);
        if verdicts {
            for v in self.maps.network_verdicts()? {
                if live(v.expires_ns) {
                    first.push(self.network_entry(&v));
                }
            }
        }
        let reader = verdicts.then(|| self.maps.reader()).transpose()?;
        let (tx, rx) = mpsc::channel(FRAMES_AHEAD);
        // A snapshot for the task: the daemon copies the origins only if it changes them
        // while the listing runs.
        let origins = Arc::clone(self.fleet.origins());
        let me = self.fleet.name().map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let frame = |entries: Vec<ListedEntry>| Reply::Ok {
                body: Body::List {
                    entries,
                    more: true,
                },
            };
            for chunk in first.chunks(FRAME) {
                if tx.blocking_send(frame(chunk.to_vec())).is_err() {
                    return; // the reader went away
                }
            }
            if let Some(reader) = reader {
                let read = reader.for_each_verdict_chunk(&mut |chunk| {
                    let entries: Vec<ListedEntry> = chunk
                        .iter()
                        .filter(|(_, v)| live(v.expires_ns))
                        .map(|(ip, v)| Self::verdict_entry(*ip, v, &origins, me.as_deref()))
                        .collect();
                    entries.is_empty() || tx.blocking_send(frame(entries)).is_ok()
                });
                if let Err(e) = read {
                    let message = format!("reading the verdicts: {e:#}");
                    let _ = tx.blocking_send(Reply::Error { message });
                    return;
                }
            }
            let _ = tx.blocking_send(Reply::Ok {
                body: Body::List {
                    entries: Vec::new(),
                    more: false,
                },
            });
        });
        Ok(Answer::Stream(rx))
    }

    /// What applies to `ip`: the longest entry of each list, its verdict (and when its next
    /// explained connection is due), its network's.
    pub(super) fn lookup(&mut self, ip: IpAddr) -> Result<LookupReply> {
        let mut reply = LookupReply {
            ip: Some(ip),
            observe: self.cfg.policy.observe,
            explain: self.explain_status(),
            // Absolute: `check` reads it from wherever it runs.
            config: Some(ConfigInUse {
                file: self.config_path.as_ref().map(|p| {
                    let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                    p.display().to_string()
                }),
            }),
            ..Default::default()
        };
        for table in [Table::Allow, Table::Deny, Table::Limit] {
            let Some((net, e)) = self.maps.list_lookup(table, ip)? else {
                continue;
            };
            let entry = Some(self.listed(table, net, &e));
            match table {
                Table::Allow => reply.allowed = entry,
                Table::Deny => reply.blocked = entry,
                _ => reply.limited = entry,
            }
        }
        if let Some(v) = self.maps.verdict_get(ip)?
            && live(v.expires_ns)
        {
            reply.verdict = Some(Self::verdict_entry(
                ip,
                &v,
                self.fleet.origins(),
                self.fleet.name(),
            ));
            reply.explain_next =
                next_explained(&v, &self.maps.config()?).map(|d| unix_now() + d.as_secs());
            if v.action() == Action::Drop && v.reason() == Reason::Reputation {
                reply.explainable = Some(v.is_explained());
            }
        }
        if let Some(v) = self.maps.network_verdict_for(ip)?
            && live(v.expires_ns)
        {
            reply.network_verdict = Some(self.network_entry(&v));
        }
        Ok(reply)
    }
}
