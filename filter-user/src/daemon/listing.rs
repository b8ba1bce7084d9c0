//! What the daemon holds, as `list` and `check` show it: list entries (naming the feeds that
//! list a prefix), verdicts, and network verdicts (naming the addresses that earned them).

use std::net::IpAddr;

use anyhow::Result;
use filter_common::{Action, ListEntry, Reason, Table, Verdict as MapVerdict};
use ipnet::IpNet;

use super::{Daemon, reactor::unix_expiry};
use crate::{
    control::protocol::{ListName, ListWhat, ListedEntry, LookupReply, Source},
    datapath::{ListKind, NetworkVerdict, clock},
};

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
    expires_ns == 0 || expires_ns > clock::now_ns()
}

impl Daemon {
    /// One list entry as `list` shows it.
    pub(super) fn listed(&self, table: Table, net: IpNet, e: &ListEntry) -> ListedEntry {
        let kind = match table {
            Table::Allow => Some(ListKind::Allow),
            Table::Deny => Some(ListKind::Deny),
            _ => None,
        };
        let manual = kind.and_then(|k| self.state.get(k, net));
        let source = match e.reason() {
            Reason::Config => self
                .protected
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
            feed: (!feeds.is_empty()).then(|| feeds.join(", ")),
        }
    }

    pub(super) fn verdict_entry(ip: IpAddr, v: &MapVerdict) -> ListedEntry {
        ListedEntry {
            list: ListName::Verdict,
            net: IpNet::from(ip),
            action: v.action(),
            source: Source::from(v.reason()),
            reason: None,
            created: None,
            expires: unix_expiry(v.expires_ns),
            hits: v.hits,
            feed: None,
        }
    }

    /// A network's verdict, with the addresses that earned it as its reason.
    fn network_entry(&self, v: &NetworkVerdict) -> ListedEntry {
        let members = match v.net {
            IpNet::V6(net) => self.rotation.members(&net),
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
            feed: None,
        }
    }

    pub(super) fn list(&mut self, what: ListWhat) -> Result<Vec<ListedEntry>> {
        let mut out = Vec::new();
        let tables = [
            (Table::Deny, ListWhat::Blocked),
            (Table::Allow, ListWhat::Allowed),
            (Table::Limit, ListWhat::All),
        ];
        for (table, wanted) in tables {
            if what == wanted || what == ListWhat::All {
                for (net, e, _) in self.maps.table_entries(table)? {
                    out.push(self.listed(table, net, &e));
                }
            }
        }
        if matches!(what, ListWhat::Verdicts | ListWhat::All) {
            for (ip, v) in self.maps.verdicts()? {
                if live(v.expires_ns) {
                    out.push(Self::verdict_entry(ip, &v));
                }
            }
            for v in self.maps.network_verdicts()? {
                if live(v.expires_ns) {
                    out.push(self.network_entry(&v));
                }
            }
        }
        Ok(out)
    }

    /// What applies to `ip`: the longest entry of each list, its verdict, its network's.
    pub(super) fn lookup(&mut self, ip: IpAddr) -> Result<LookupReply> {
        let mut reply = LookupReply {
            ip: Some(ip),
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
            reply.verdict = Some(Self::verdict_entry(ip, &v));
        }
        if let Some(v) = self.maps.network_verdict_for(ip)?
            && live(v.expires_ns)
        {
            reply.network_verdict = Some(self.network_entry(&v));
        }
        Ok(reply)
    }
}
