//! The daemon's answers to the operator's control requests. Changes reach the maps (and the
//! state file) before the reply is sent, so a `block` has taken effect when the command
//! returns; each change is all-or-nothing (see `lists`). With `[fleet]` a manual change's
//! reply waits (briefly) for the fleet to take it, and says so when the fleet holds a later
//! change of the key, which stays in force.

use std::time::Duration;

use anyhow::Result;
use filter_common::{Action, Table};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{Daemon, lists::ListOwner, protect};
use crate::{
    control::{
        protocol::{Body, Reply, Request},
        server::Answer,
    },
    datapath::{ListKind, clock},
    duration,
    fleet::ChangeOutcome,
    state::{ManualEntry, unix_now},
};

/// How long a manual change's reply waits for the fleet to say whether it took the change
/// (Redis answers in milliseconds, or within 2 s the link is down); past this the reply is
/// sent without, and the change is shared when the fleet can.
const FLEET_ANSWER: Duration = Duration::from_secs(3);

/// A manual change made here: the operator's sentence, and the fleet's word on it to come.
struct Change {
    message: String,
    fleet: Option<ChangeOutcome>,
}

impl Daemon {
    /// Answers one control request.
    pub fn handle(&mut self, req: Request) -> Answer {
        let result = match req {
            Request::Block {
                net,
                ttl_secs,
                reason,
                force,
            } => return changed(self.block(net, ttl_secs, reason, force)),
            Request::Unblock { net } => return changed(self.unlist(ListKind::Deny, net)),
            Request::Allow {
                net,
                ttl_secs,
                reason,
            } => {
                return changed(self.manual(ListKind::Allow, net.trunc(), ttl_secs, reason, false));
            }
            Request::Unallow { net } => return changed(self.unlist(ListKind::Allow, net)),
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
            Request::FeedReload { name, force } => return self.feeds.reload_answer(&name, force),
        };
        Answer::One(match result {
            Ok(body) => Reply::Ok { body },
            Err(e) => Reply::Error {
                message: format!("{e:#}"),
            },
        })
    }

    /// A manual entry (see [`super::lists::ListOwner::add`]), shared with the fleet.
    fn manual(
        &mut self,
        list: ListKind,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    ) -> Result<Change> {
        // The CLI checks it too; another client may not.
        if let Some(t) = ttl_secs {
            crate::state::check_entry_ttl(Duration::from_secs(t)).map_err(anyhow::Error::msg)?;
        }
        let now = unix_now();
        let entry = ManualEntry {
            list,
            net,
            reason: reason.clone(),
            created: now,
            expires: ttl_secs.map(|t| now.saturating_add(t)),
            origin: None,
        };
        self.lists.add(self.maps.as_mut(), &self.cfg, &entry)?;
        self.recount_lists()?;
        let verb = match list {
            ListKind::Deny => "blocked",
            ListKind::Allow => "allowed",
        };
        let span = ttl_secs.map_or("until removed".to_owned(), |t| {
            format!("for {}", duration::format(Duration::from_secs(t)))
        });
        let fleet = self.fleet.manual_set(&entry, force);
        tracing::info!(list = ?list, %net, ttl = ?ttl_secs, reason = reason.as_deref().unwrap_or(""), "manual entry added");
        let message = format!(
            "{verb} {net} {span}{}",
            reason.map(|r| format!(" ({r})")).unwrap_or_default()
        );
        Ok(Change { message, fleet })
    }

    fn block(
        &mut self,
        net: IpNet,
        ttl_secs: Option<u64>,
        reason: Option<String>,
        force: bool,
    ) -> Result<Change> {
        let net = net.trunc();
        self.lists.check_block(&self.cfg, net, force)?;
        let mut change = self.manual(ListKind::Deny, net, ttl_secs, reason, force)?;
        let kept: Vec<String> = protect::carve_outs(self.lists.protected(), &net)
            .iter()
            .map(|p| format!("{} ({})", p.net, p.why))
            .collect();
        if !kept.is_empty() {
            change
                .message
                .push_str(&format!("; still allowed inside it: {}", kept.join(", ")));
        }
        if let Some(note) = ListOwner::still_decided(self.maps.as_ref(), Table::Allow, net)? {
            change.message.push_str(&format!("; note: {note}"));
        }
        Ok(change)
    }

    /// Removes a manual entry (see [`super::lists::ListOwner::remove`]), shared with the
    /// fleet.
    fn unlist(&mut self, list: ListKind, net: IpNet) -> Result<Change> {
        let net = net.trunc();
        let gone = self
            .lists
            .remove(self.maps.as_mut(), &self.cfg, list, net)?;
        let fleet = gone.and_then(|gone| self.fleet.manual_removed(&gone));
        self.recount_lists()?;
        tracing::info!(list = ?list, %net, "manual entry removed");
        let mut message = match list {
            ListKind::Deny => format!("unblocked {net}"),
            ListKind::Allow => format!("removed {net} from the allow list"),
        };
        // What still refuses it: a feed, the config or a wider block (the first found).
        let still = match list {
            ListKind::Deny => [Table::Deny, Table::Limit]
                .into_iter()
                .find_map(|t| ListOwner::still_decided(self.maps.as_ref(), t, net).transpose())
                .transpose()?,
            ListKind::Allow => None,
        };
        if let Some(note) = still {
            message.push_str(&format!("; note: {note}"));
        } else if list == ListKind::Deny
            && net.prefix_len() == net.max_prefix_len()
            && let Some(v) = self.maps.verdict_without_hits(net.addr())?
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
        Ok(Change { message, fleet })
    }
}

fn done(message: String) -> Body {
    Body::Done { message }
}

/// The answer to a manual change: its sentence at once without the fleet, else once the
/// fleet has taken the change (at most [`FLEET_ANSWER`] later), with a warning when it holds
/// a later change of the key.
fn changed(result: Result<Change>) -> Answer {
    let Change { message, fleet } = match result {
        Ok(c) => c,
        Err(e) => {
            return Answer::One(Reply::Error {
                message: format!("{e:#}"),
            });
        }
    };
    let Some(outcome) = fleet else {
        return Answer::One(Reply::Ok {
            body: done(message),
        });
    };
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let warning = tokio::time::timeout(FLEET_ANSWER, outcome)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let message = match warning {
            Some(w) => format!("{message}; warning: {w}"),
            None => message,
        };
        let _ = tx
            .send(Reply::Ok {
                body: done(message),
            })
            .await;
    });
    Answer::Stream(rx)
}
