//! IPv6 sources that rotate inside their network: a verdict per address lets every new
//! address through first (and costs a lookup each). The daemon keeps the IPv6 addresses
//! holding `drop` verdicts by network (`policy.v6_rotation_prefix`, /64 by default); once
//! `policy.v6_rotation_after` distinct ones (2) hold one at the same time, the network gets
//! a `drop` verdict of its own, expiring with the latest of theirs. One listed address never
//! takes its neighbours with it, and an address with a verdict of its own keeps it: the
//! datapath applies a network's verdict only to sources without one.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
};

use filter_common::Action;
use ipnet::Ipv6Net;

/// A network that has just earned (or extended) a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Earned {
    pub net: Ipv6Net,
    /// Datapath-clock expiry: the latest of its members'.
    pub expires_ns: u64,
    /// The addresses whose verdicts earned it.
    pub members: Vec<Ipv6Addr>,
}

#[derive(Debug, Default)]
pub struct Rotation {
    prefix: u8,
    /// 0: off.
    after: usize,
    /// Addresses with a live drop verdict, and its expiry, by network.
    drops: HashMap<Ipv6Net, BTreeMap<Ipv6Addr, u64>>,
    /// Networks holding a verdict, with its expiry.
    held: HashMap<Ipv6Net, u64>,
}

impl Rotation {
    pub fn new(prefix: u8, after: u32) -> Self {
        Self {
            prefix,
            after: after as usize,
            ..Self::default()
        }
    }

    /// Takes new settings, forgetting what was learnt under other ones; `true` if they
    /// changed (the caller removes the networks' verdicts and learns again).
    pub fn configure(&mut self, prefix: u8, after: u32) -> bool {
        let changed = (prefix, after as usize) != (self.prefix, self.after);
        if changed {
            *self = Self::new(prefix, after);
        }
        changed
    }

    /// A verdict was stored for `ip`. Returns the network's verdict to set when this one
    /// brings it to the threshold (or extends one it holds).
    pub fn on_verdict(&mut self, ip: IpAddr, action: Action, expires_ns: u64) -> Option<Earned> {
        let IpAddr::V6(addr) = ip else {
            return None;
        };
        if self.after == 0 {
            return None;
        }
        let net = Ipv6Net::new(addr, self.prefix).ok()?.trunc();
        let members = self.drops.entry(net).or_default();
        if action != Action::Drop {
            members.remove(&addr);
            return None;
        }
        members.insert(addr, expires_ns);
        if members.len() < self.after {
            return None;
        }
        // A member that never expires makes the network's verdict never expire.
        let expires_ns = if members.values().any(|e| *e == 0) {
            0
        } else {
            members.values().copied().max().unwrap_or(0)
        };
        if self.held.get(&net) == Some(&expires_ns) {
            return None;
        }
        self.held.insert(net, expires_ns);
        Some(Earned {
            net,
            expires_ns,
            members: members.keys().copied().collect(),
        })
    }

    /// The addresses that earned `net` its verdict, if it holds one.
    pub fn members(&self, net: &Ipv6Net) -> Vec<Ipv6Addr> {
        match self.held.get(net) {
            Some(_) => self
                .drops
                .get(net)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Forgets a network's verdict and its members (`mxscreen forget`): it is earned again
    /// only by new drop verdicts.
    pub fn forget_network(&mut self, net: &Ipv6Net) {
        self.held.remove(net);
        self.drops.remove(net);
    }

    /// Forgets what expired by `now`; returns the networks whose verdict did.
    pub fn sweep(&mut self, now: u64) -> Vec<Ipv6Net> {
        let live = |e: &u64| *e == 0 || *e > now;
        for members in self.drops.values_mut() {
            members.retain(|_, e| live(e));
        }
        self.drops.retain(|_, m| !m.is_empty());
        let expired: Vec<Ipv6Net> = self
            .held
            .iter()
            .filter(|(_, e)| !live(e))
            .map(|(n, _)| *n)
            .collect();
        for net in &expired {
            self.held.remove(net);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn two_addresses_of_one_network_earn_it_a_verdict() {
        let mut r = Rotation::new(64, 2);
        assert_eq!(r.on_verdict(ip("2001:db8:1:2::a"), Action::Drop, 100), None);
        // Another network, a pass, and IPv4 do not count.
        assert_eq!(r.on_verdict(ip("2001:db8:1:3::b"), Action::Drop, 100), None);
        assert_eq!(r.on_verdict(ip("2001:db8:1:2::c"), Action::Pass, 100), None);
        assert_eq!(r.on_verdict(ip("192.0.2.7"), Action::Drop, 100), None);
        let earned = r
            .on_verdict(ip("2001:db8:1:2::d"), Action::Drop, 300)
            .unwrap();
        assert_eq!(earned.net.to_string(), "2001:db8:1:2::/64");
        assert_eq!(earned.expires_ns, 300);
        assert_eq!(earned.members.len(), 2);
        // The same again changes nothing; a later member extends it.
        assert_eq!(r.on_verdict(ip("2001:db8:1:2::d"), Action::Drop, 300), None);
        assert_eq!(
            r.on_verdict(ip("2001:db8:1:2::e"), Action::Drop, 500)
                .unwrap()
                .expires_ns,
            500
        );
        assert_eq!(r.members(&earned.net).len(), 3);
        // Expiry forgets members and the network's verdict.
        assert_eq!(r.sweep(400), Vec::<Ipv6Net>::new());
        assert_eq!(r.sweep(600), vec![earned.net]);
        assert!(r.members(&earned.net).is_empty());
    }

    #[test]
    fn off_means_off() {
        let mut r = Rotation::new(64, 0);
        for a in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
            assert_eq!(r.on_verdict(ip(a), Action::Drop, 0), None);
        }
    }
}
