//! What `list`, `check` and the lookups show: map entries as the operator reads them, with
//! where they came from. A listing is streamed in chunks, the verdicts read outside the main
//! loop, so a million of them neither stall the daemon nor sit whole in its memory.

use std::{net::IpAddr, sync::Arc};

use anyhow::Result;
use filter_common::{Action, ListEntry, Reason, Verdict as MapVerdict};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Daemon, reactor::unix_expiry, shared::SharedOrigins};
use crate::{
    control::{
        protocol::{Body, ListName, ListWhat, ListedEntry, LookupReply, Reply, Source},
        server::Answer,
    },
    datapath::{ListKind, clock, explain::next_explained},
    state::unix_now,
};

/// Entries per frame of a listing.
const FRAME: usize = 4096;
/// Frames waiting for a slow reader before the producer waits too.
const FRAMES_AHEAD: usize = 2;

/// What `list` calls each list.
const fn list_name(kind: ListKind) -> ListName {
    match kind {
        ListKind::Deny => ListName::Blocked,
        ListKind::Allow => ListName::Allowed,
    }
}

impl Daemon {
    pub(super) fn listed(&self, list: ListKind, net: IpNet, e: &ListEntry) -> ListedEntry {
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
            origin: manual.and_then(|m| {
                m.origin
                    .clone()
                    .or_else(|| self.fleet.name().map(str::to_owned))
            }),
        }
    }

    /// A verdict for `list` and `check`; with `[fleet]`, `origins` and this host's name
    /// (`me`) say which host made it.
    pub(super) fn verdict_entry(
        ip: IpAddr,
        v: &MapVerdict,
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
        }
    }

    /// `list`: the lists (read here, they are small), then the verdicts, streamed by a
    /// blocking task on a handle of its own while the main loop goes on.
    pub(super) fn list(&mut self, what: ListWhat) -> Result<Answer> {
        let mut lists = Vec::new();
        for (kind, wanted) in [
            (ListKind::Deny, ListWhat::Blocked),
            (ListKind::Allow, ListWhat::Allowed),
        ] {
            if what == wanted || what == ListWhat::All {
                for (net, e) in self.maps.list_entries(kind)? {
                    lists.push(self.listed(kind, net, &e));
                }
            }
        }
        let verdicts = matches!(what, ListWhat::Verdicts | ListWhat::All)
            .then(|| self.maps.verdict_reader())
            .transpose()?;
        let (tx, rx) = mpsc::channel(FRAMES_AHEAD);
        // A snapshot for the task: the daemon copies the origins only if it changes them
        // while the listing runs.
        let origins = Arc::clone(&self.shared_origins);
        let me = self.fleet.name().map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let frame = |entries: Vec<ListedEntry>| Reply::Ok {
                body: Body::List {
                    entries,
                    more: true,
                },
            };
            for chunk in lists.chunks(FRAME) {
                if tx.blocking_send(frame(chunk.to_vec())).is_err() {
                    return; // the reader went away
                }
            }
            if let Some(reader) = verdicts {
                let now = clock::now_ns();
                let read = reader.for_each_chunk(|chunk| {
                    let entries: Vec<ListedEntry> = chunk
                        .iter()
                        .filter(|(_, v)| v.expires_ns == 0 || v.expires_ns > now)
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

    pub(super) fn lookup(&mut self, ip: IpAddr) -> Result<LookupReply> {
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
            reply.verdict = Some(Self::verdict_entry(
                ip,
                &v,
                &self.shared_origins,
                self.fleet.name(),
            ));
            reply.explain_next =
                next_explained(&v, &self.maps.config()?).map(|d| unix_now() + d.as_secs());
        }
        Ok(reply)
    }
}
