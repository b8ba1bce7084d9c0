//! `mxscreen config check`'s warnings: settings that are valid but known to hurt mail or
//! to switch screening off unnoticed. Warnings, not errors: each can be what an operator
//! means.
use std::net::IpAddr;

use super::Config;
use crate::{
    datapath::FirstContact,
    duration,
    reputation::{
        codes,
        config::{ExplainTo, public_resolvers},
        dnsbl::TXT_WAIT,
    },
};

/// Ports where mail clients log in to send (submission, submissions): screening them
/// refuses road-warriors on shared or listed addresses before they can authenticate.
const SUBMISSION_PORTS: &[u16] = &[587, 465];

impl Config {
    /// The known traps this config falls into, one readable line each. `resolv_conf` is
    /// the text of /etc/resolv.conf (the resolvers used when `resolver.nameservers` is empty).
    pub fn warnings(&self, resolv_conf: &str) -> Vec<String> {
        let mut out = Vec::new();
        let configured: Vec<IpAddr> = self.resolver.nameservers.iter().map(|n| n.0.ip()).collect();
        let (servers, from) = if configured.is_empty() {
            (system_nameservers(resolv_conf), "/etc/resolv.conf")
        } else {
            (configured, "resolver.nameservers")
        };
        let public = public_resolvers(servers);
        if !public.is_empty() && !self.dnsbl.is_empty() {
            let list: Vec<String> = public.iter().map(ToString::to_string).collect();
            out.push(format!(
                "{from} uses the public resolver {}: Spamhaus, DNSWL and most lists refuse queries from public resolvers, so the lists screen nothing; run a recursive resolver of your own (unbound on this host) and set resolver.nameservers",
                list.join(", ")
            ));
        }
        let screened: Vec<String> = self
            .datapath
            .ports
            .iter()
            .filter(|p| SUBMISSION_PORTS.contains(p))
            .map(ToString::to_string)
            .collect();
        if !screened.is_empty() {
            out.push(format!(
                "datapath.ports screens the submission port {}: mail clients on shared or listed addresses (mobile carriers, hotel Wi-Fi) are refused before they can log in; screen port 25 only and leave submission to the MTA's authentication",
                screened.join(", ")
            ));
        }
        let blocklists = self
            .dnsbl
            .iter()
            .any(|z| z.weight > 0 || z.code_weights.iter().any(|c| c.weight > 0));
        let allowlists = self
            .dnsbl
            .iter()
            .any(|z| z.weight < 0 || z.code_weights.iter().any(|c| c.weight < 0));
        if blocklists && !allowlists {
            out.push(
                "[[dnsbl]] has blocklists but no allowlist zone (a negative weight, e.g. list.dnswl.org): large providers' shared senders that show up on a blocklist have nothing to outweigh it".into(),
            );
        }
        out.extend(self.hold_warning());
        out.extend(self.dnsbl_warnings());
        if self.policy.explain_to == ExplainTo::Fcrdns
            && !self.rdns.enabled
            && !self.policy.explain_every.is_zero()
        {
            out.push(
                "policy.explain_to = \"fcrdns\" with rdns.enabled = false: no sender is forward-confirmed, so no refusal is ever explained; set explain_to = \"all\", turn rdns on, or explain_every = \"0s\"".into(),
            );
        }
        out.extend(self.short_ttl_warning());
        if !self.lists.allow_defaults {
            out.push(
                "lists.allow_defaults = false: loopback, RFC 1918, CGNAT, link-local and ULA sources are screened too; your internal relays and clients get \"no PTR\" and may be limited".into(),
            );
        }
        out
    }
}

impl Config {
    /// When `first_contact = "hold"` and the resolver's worst case (every try of a query
    /// timing out, plus a listing's TXT reason) is longer than `datapath.hold_max`: a list
    /// that stops answering then lets every held first SYN through before its verdict. Also
    /// logged by `run` at start.
    pub fn hold_warning(&self) -> Option<String> {
        let asks = !self.dnsbl.is_empty() || self.rdns.enabled;
        let r = &self.resolver;
        let worst = r.evaluation_worst_case();
        if self.datapath.first_contact != FirstContact::Hold || !asks {
            return None;
        }
        (worst > self.datapath.hold_max).then(|| {
            format!(
                "resolver.timeout ({}) × {} tries (1 + resolver.attempts), plus up to {} for a listing's TXT reason, is {}: longer than datapath.hold_max ({}), so while a list or resolver does not answer, held first SYNs are let through before their verdict; lower resolver.timeout or resolver.attempts, or raise datapath.hold_max",
                duration::format(r.timeout),
                r.attempts.saturating_add(1),
                duration::format(TXT_WAIT),
                duration::format(worst),
                duration::format(self.datapath.hold_max),
            )
        })
    }
}

impl Config {
    /// `[[dnsbl.code_weights]]` classes the zone's own `codes` leave out: their answers are
    /// ignored before any class is looked at, so the class never weighs.
    fn dnsbl_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, z) in self.dnsbl.iter().enumerate() {
            for (j, cw) in z.code_weights.iter().enumerate() {
                if !z.codes.is_empty() && !codes::overlap(&cw.codes, &z.codes) {
                    out.push(format!(
                        "dnsbl[{i}].code_weights[{j}] ({}) has no code the zone's codes let through: its answers are ignored and it never weighs; add them to dnsbl[{i}].codes",
                        cw.codes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        out
    }

    /// A verdict that expires before `datapath.dedup_window` has passed: the peer's SYNs
    /// within the window are not reported again, so it goes unscreened until the window
    /// ends.
    fn short_ttl_warning(&self) -> Option<String> {
        let p = &self.policy;
        let window = self.datapath.dedup_window;
        let (key, ttl) = [
            ("policy.tempfail_ttl", p.tempfail_ttl),
            ("policy.ttl_min", p.ttl_min),
            ("policy.pass_ttl", p.pass_ttl),
        ]
        .into_iter()
        .min_by_key(|(_, ttl)| *ttl)?;
        (ttl < window).then(|| {
            format!(
                "{key} ({}) is shorter than datapath.dedup_window ({}): a peer whose verdict expires is not reported again until the window ends, and passes unscreened meanwhile; raise {key} or lower dedup_window",
                duration::format(ttl),
                duration::format(window)
            )
        })
    }
}

/// The `nameserver` lines of resolv.conf text.
fn system_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(toml: &str, resolv: &str) -> Vec<String> {
        Config::from_toml_str(toml, "t.toml")
            .unwrap()
            .warnings(resolv)
    }

    #[test]
    fn each_trap_is_one_warning() {
        assert!(warnings("", "nameserver 127.0.0.1\n").is_empty());
        let w = warnings("", "# x\nnameserver 8.8.8.8\n");
        assert!(
            w.len() == 1 && w[0].contains("/etc/resolv.conf") && w[0].contains("8.8.8.8"),
            "{w:?}"
        );
        let w = warnings(
            "[resolver]\nnameservers = [\"1.1.1.1\"]\n",
            "nameserver 127.0.0.1\n",
        );
        assert!(
            w.len() == 1 && w[0].contains("resolver.nameservers"),
            "{w:?}"
        );
        let w = warnings("[datapath]\nports = [25, 587]\n", "");
        assert!(w.len() == 1 && w[0].contains("587"), "{w:?}");
        let w = warnings("[[dnsbl]]\nzone = \"bl.example\"\nweight = 10\n", "");
        assert!(w.len() == 1 && w[0].contains("allowlist"), "{w:?}");
        let w = warnings("[lists]\nallow_defaults = false\n", "");
        assert!(w.len() == 1 && w[0].contains("allow_defaults"), "{w:?}");
    }

    #[test]
    fn settings_that_do_nothing_are_warned_about() {
        let w = warnings(
            "[[dnsbl]]\nzone = \"bl.test\"\nweight = 10\ncodes = [\"127.0.0.2-127.0.0.11\"]\n[[dnsbl.code_weights]]\ncodes = [\"127.0.0.20\"]\nweight = 5\n[[dnsbl]]\nzone = \"wl.test\"\nweight = -5\n",
            "",
        );
        assert!(
            w.len() == 1 && w[0].contains("dnsbl[0].code_weights[0] (127.0.0.20)"),
            "{w:?}"
        );
        let w = warnings("[rdns]\nenabled = false\n", "");
        assert!(w.len() == 1 && w[0].contains("explain_to"), "{w:?}");
        assert!(
            warnings(
                "[rdns]\nenabled = false\n[policy]\nexplain_to = \"all\"\n",
                ""
            )
            .is_empty()
        );
        let w = warnings("[datapath]\ndedup_window = \"5m\"\n", "");
        assert!(
            w.len() == 1 && w[0].contains("policy.tempfail_ttl (2m)") && w[0].contains("(5m)"),
            "{w:?}"
        );
    }

    /// The defaults fit `hold_max`; a resolver that can take longer is warned about while
    /// first SYNs are held, not when they pass.
    #[test]
    fn a_resolver_slower_than_hold_max_is_warned_about() {
        let slow = "[resolver]\ntimeout = \"2s\"\nattempts = 1\n";
        let w = warnings(slow, "");
        assert!(
            w.len() == 1 && w[0].contains("datapath.hold_max (3s)") && w[0].contains("is 4s300ms"),
            "{w:?}"
        );
        assert!(warnings(&format!("{slow}[datapath]\nhold_max = \"5s\"\n"), "").is_empty());
        assert!(warnings(&format!("{slow}[datapath]\nfirst_contact = \"pass\"\n"), "").is_empty());
    }
}
