//! Verdicts for whole networks (`Table::PrefixVerdict`): an IPv6 network whose addresses
//! rotate gets a `drop` verdict of its own once enough of them hold one (the daemon decides;
//! see `daemon::rotation`). The datapath applies it to a source without a live verdict of its
//! own, after the allow, deny and limit lists.

use std::net::IpAddr;

use anyhow::Result;
use filter_common::{Action, Reason, Table};
use ipnet::IpNet;

use super::{maps::DatapathMaps, prefix::Prefix};

/// A network's verdict as userspace sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkVerdict {
    pub net: IpNet,
    pub action: Action,
    pub reason: Reason,
    /// Datapath-clock expiry; 0 = never.
    pub expires_ns: u64,
    /// SYNs it decided.
    pub hits: u64,
}

impl DatapathMaps {
    /// Sets (or replaces) the verdict of a network.
    pub fn network_verdict_set(
        &mut self,
        net: IpNet,
        action: Action,
        reason: Reason,
        expires_ns: u64,
    ) -> Result<()> {
        self.entry_insert(Table::PrefixVerdict, net, reason, expires_ns, action as u8)
    }

    /// Removes a network's verdict; `false` if it had none.
    pub fn network_verdict_remove(&mut self, net: IpNet) -> Result<bool> {
        self.entry_remove(Table::PrefixVerdict, net)
    }

    /// Every network verdict (expired ones included).
    pub fn network_verdicts(&self) -> Result<Vec<NetworkVerdict>> {
        let mut out = Vec::new();
        for ((table, p), v) in &self.lists.own {
            if *table == Table::PrefixVerdict {
                out.push(self.network_verdict(*p, v)?);
            }
        }
        Ok(out)
    }

    /// The verdict of the longest network covering `ip`, live or not.
    pub fn network_verdict_for(&self, ip: IpAddr) -> Result<Option<NetworkVerdict>> {
        let Some((net, _)) = self.list_lookup(Table::PrefixVerdict, ip)? else {
            return Ok(None);
        };
        let p = Prefix::new(net);
        match self.lists.own.get(&(Table::PrefixVerdict, p)) {
            Some(v) => Ok(Some(self.network_verdict(p, v)?)),
            None => Ok(None),
        }
    }

    fn network_verdict(&self, p: Prefix, v: &filter_common::ListValue) -> Result<NetworkVerdict> {
        Ok(NetworkVerdict {
            net: p.net(),
            action: Action::from_u8_or_pass(v.action),
            reason: Reason::from_u8(v.reason),
            expires_ns: v.expires_ns,
            hits: self.hit_count(v.slot)?,
        })
    }
}
