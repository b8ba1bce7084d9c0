//! `mxscreen forget ADDR|CIDR` (`recheck`): a verdict lasts up to `policy.ttl_max`, survives
//! restarts in the pinned maps and comes back from the fleet; a sender delisted meanwhile
//! should not have to wait. Forgetting removes the reputation and tempfail verdicts of the
//! address (or of every address inside the prefix) and the IPv6 network verdicts over them,
//! here and — through a tombstone, see [`crate::fleet::forget`] — on every host of the fleet
//! and in Redis. The sources' entries go whole, so the next SYN is a first contact and is
//! evaluated afresh; `--now` evaluates a forgotten address at once. Manual entries (`block`,
//! `allow`) and the config's lists are never touched: they are the operator's word, and the
//! answer says which of them still decide.

use std::net::IpAddr;

use anyhow::{Result, bail};
use filter_common::Reason;
use ipnet::IpNet;

use super::Daemon;
use crate::{fleet::wire::SharedForget, reputation::Submit};

/// What one forget removed.
#[derive(Debug, Default)]
pub(super) struct Forgotten {
    /// Sources whose verdicts went.
    pub(super) ips: Vec<IpAddr>,
    /// IPv6 networks whose verdicts went.
    pub(super) networks: Vec<IpNet>,
}

/// Verdicts `forget` removes: the engine's. (A config-list verdict would be made again the
/// same; manual entries are not verdicts.)
pub(super) fn forgettable(reason: Reason) -> bool {
    matches!(reason, Reason::Reputation | Reason::Tempfail)
}

/// Whether two prefixes share an address (one holds the other).
pub(super) fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Daemon {
    /// `mxscreen forget NET [--now]`: the daemon's sentence about what went, what the fleet
    /// was told and which manual entries still decide.
    pub(super) fn forget(&mut self, net: IpNet, now: bool) -> Result<String> {
        let net = net.trunc();
        let single = net.prefix_len() == net.max_prefix_len();
        if now && !single {
            bail!(
                "--now evaluates one address, not {net}: forget the prefix, then check its addresses"
            );
        }
        let gone = self.forget_verdicts(net)?;
        let mut message = describe(net, &gone);
        if self.fleet.name().is_some() {
            let lifetime = self.cfg.policy.longest_verdict();
            if self.fleet.forget(net, gone.ips.clone(), lifetime) {
                message.push_str("; on every host of the fleet too");
            } else {
                message.push_str(
                    "; the fleet's queue is full: forgotten on this host only, run it again",
                );
            }
        }
        if now {
            message.push_str(match self.engine.submit(net.addr()) {
                Submit::Queued | Submit::Coalesced => "; evaluating it now",
                Submit::Rejected => {
                    "; the engine's queue is full: it is evaluated at its next SYN instead"
                }
            });
        } else if !gone.ips.is_empty() || !gone.networks.is_empty() {
            message.push_str("; the next SYN is evaluated afresh");
        }
        message.push_str(&self.manual_note(net));
        tracing::info!(%net, verdicts = gone.ips.len(), networks = gone.networks.len(), now, "verdicts forgotten");
        Ok(message)
    }

    /// Another host forgot the verdicts inside a prefix: the copies held here go too.
    pub(super) fn forget_shared(&mut self, f: &SharedForget) {
        match self.forget_verdicts(f.net) {
            Ok(gone) => {
                tracing::info!(net = %f.net, host = %f.host, verdicts = gone.ips.len(), networks = gone.networks.len(), "verdicts forgotten by the fleet")
            }
            Err(e) => {
                tracing::warn!(net = %f.net, error = %format!("{e:#}"), "could not forget verdicts for the fleet")
            }
        }
    }

    /// Removes the engine's verdicts inside `net` (the sources' entries whole, so their next
    /// SYN is a first contact) and the network verdicts over them, and what the daemon keeps
    /// about them (rotation members, fleet origins); recounts the maps.
    fn forget_verdicts(&mut self, net: IpNet) -> Result<Forgotten> {
        let gone = self.verdicts.forget(self.maps.as_mut(), net)?;
        self.fleet.forget_origins(&gone.ips);
        self.take_census()?;
        Ok(gone)
    }

    /// Which manual entries still decide for `net` (forget never touches them).
    fn manual_note(&self, net: IpNet) -> String {
        let manual: Vec<String> = self
            .lists
            .state()
            .entries()
            .iter()
            .filter(|e| overlap(&e.net, &net))
            .map(|e| {
                let (what, undo) = match e.list {
                    crate::datapath::ListKind::Deny => ("blocked", "unblock"),
                    crate::datapath::ListKind::Allow => ("allowed", "unallow"),
                };
                format!("{} {what} (`mxscreen {undo} {}`)", e.net, e.net)
            })
            .collect();
        if manual.is_empty() {
            "; manual entries are untouched (there are none here)".into()
        } else {
            format!(
                "; manual entries are untouched and still decide: {}",
                manual.join(", ")
            )
        }
    }
}

/// `forgot the verdict of 192.0.2.7` / `forgot 3 verdicts inside 192.0.2.0/24, and the
/// network verdict of 2001:db8:1::/64` / `192.0.2.7: no verdict to forget`.
fn describe(net: IpNet, gone: &Forgotten) -> String {
    let single = net.prefix_len() == net.max_prefix_len();
    let mut out = match (gone.ips.len(), single) {
        (0, _) if gone.networks.is_empty() => format!("{}: no verdict to forget", shown(net)),
        (0, _) => format!("forgot no verdict of an address inside {}", shown(net)),
        (1, true) => format!("forgot the verdict of {}", net.addr()),
        (n, _) => format!(
            "forgot {n} verdict{} inside {net}",
            if n == 1 { "" } else { "s" }
        ),
    };
    if !gone.networks.is_empty() {
        let nets: Vec<String> = gone.networks.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            ", and the network verdict{} of {} (its addresses rotate)",
            if nets.len() == 1 { "" } else { "s" },
            nets.join(", ")
        ));
    }
    out
}

/// An address as itself, a prefix as a prefix.
fn shown(net: IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_answer_says_what_went() {
        let none = Forgotten::default();
        assert_eq!(
            describe(net("192.0.2.7/32"), &none),
            "192.0.2.7: no verdict to forget"
        );
        let one = Forgotten {
            ips: vec!["192.0.2.7".parse().unwrap()],
            networks: vec![],
        };
        assert_eq!(
            describe(net("192.0.2.7/32"), &one),
            "forgot the verdict of 192.0.2.7"
        );
        assert_eq!(
            describe(net("192.0.2.0/24"), &one),
            "forgot 1 verdict inside 192.0.2.0/24"
        );
        let rotating = Forgotten {
            ips: vec!["2001:db8:1::7".parse().unwrap(); 2],
            networks: vec![net("2001:db8:1::/64")],
        };
        assert_eq!(
            describe(net("2001:db8:1::/64"), &rotating),
            "forgot 2 verdicts inside 2001:db8:1::/64, and the network verdict of 2001:db8:1::/64 (its addresses rotate)"
        );
    }

    #[test]
    fn prefixes_overlap_when_one_holds_the_other() {
        assert!(overlap(&net("192.0.2.0/24"), &net("192.0.2.7/32")));
        assert!(overlap(&net("192.0.2.7/32"), &net("192.0.2.0/24")));
        assert!(!overlap(&net("192.0.2.0/25"), &net("192.0.2.128/25")));
        assert!(forgettable(Reason::Tempfail) && !forgettable(Reason::Manual));
    }
}
