//! Addresses that must never be dropped, whatever a list, a DNSBL or an operator says: the
//! loopback range, the host's own addresses, and `lists.allow`. They go into the datapath's
//! allow list (which wins over everything), and `block` refuses to cover only them.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::control::protocol::Source;

/// A protected prefix and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    pub net: IpNet,
    /// [`Source::Loopback`], [`Source::Host`] or [`Source::Config`].
    pub why: Source,
}

/// Loopback, the host's own addresses (all interfaces, at the time of the call) and
/// `allow` from the config.
pub fn protected_set(config_allow: &[IpNet]) -> Vec<Protected> {
    let mut out = vec![
        Protected {
            net: "127.0.0.0/8".parse().expect("literal"),
            why: Source::Loopback,
        },
        Protected {
            net: "::1/128".parse().expect("literal"),
            why: Source::Loopback,
        },
    ];
    for ip in own_addresses() {
        let net = IpNet::from(ip);
        if !out.iter().any(|p| p.net.contains(&net)) {
            out.push(Protected {
                net,
                why: Source::Host,
            });
        }
    }
    for net in config_allow {
        // The built-in ranges hold loopback too: one entry a prefix.
        if out.iter().all(|p| p.net != net.trunc()) {
            out.push(Protected {
                net: net.trunc(),
                why: Source::Config,
            });
        }
    }
    out
}

/// Every address configured on any interface of this host (this network namespace).
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|sa| {
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// The protection a block of `net` would run into: `Some` when every address of `net` is
/// protected (the block could never apply), used to refuse it with the reason.
pub fn fully_protected<'a>(set: &'a [Protected], net: &IpNet) -> Option<&'a Protected> {
    set.iter().find(|p| p.net.contains(net))
}

/// Protected prefixes inside `net`: they stay reachable although `net` is blocked.
pub fn carve_outs<'a>(set: &'a [Protected], net: &IpNet) -> Vec<&'a Protected> {
    set.iter()
        .filter(|p| net.contains(&p.net) && p.net != *net)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_config_are_protected() {
        let set = protected_set(&["198.51.100.0/24".parse().unwrap()]);
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            fully_protected(&set, &n("127.0.0.1/32")).unwrap().why,
            Source::Loopback
        );
        assert_eq!(
            fully_protected(&set, &n("::1/128")).unwrap().why,
            Source::Loopback
        );
        assert_eq!(
            fully_protected(&set, &n("198.51.100.7/32")).unwrap().why,
            Source::Config
        );
        assert!(fully_protected(&set, &n("203.0.113.7/32")).is_none());
        assert_eq!(carve_outs(&set, &n("198.51.0.0/16")).len(), 1);
    }
}
