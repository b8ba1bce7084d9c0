//! Which hosts an Exim `hosts` condition exempts from its statement, as far as a SYN can tell
//! them (spec "Host lists"). A host list is matched item by item, the first match deciding
//! (a `!item` that matches: no match); past the last item, the list matches if that item was
//! negated. So `!hosts = a : b` and `hosts = !a : !b` both hold for every host except those
//! of `a` and `b`: the statement applies to everyone else. That is the form mxscreen can
//! keep — by allowing the exempted hosts — when every item is an address, a prefix or a
//! hostlist of them. Any other form (a statement for some hosts only), or an item only a
//! connection can tell (a host name, a lookup, a file, `@[]`), cannot be kept.
//!
//! `+relay_from_hosts` is the MTA's own relays: its exemption is documented as holding
//! for every MX connection, so it never stops a translation; what of it resolves to
//! addresses is allowed all the same (a relay on a public address must not be dropped).

use ipnet::IpNet;

use super::exim::{self, Condition, Exim};
use crate::reputation::config::builtin_allow;

/// The named list of the MTA's own relays.
const RELAYS: &str = "relay_from_hosts";
/// How deep hostlists may refer to hostlists.
const MAX_DEPTH: usize = 10;

/// The hosts a `hosts` condition exempts from its statement.
#[derive(Debug, Default, PartialEq)]
pub struct Exempted {
    /// Addresses and prefixes, each with the item that names it (`+partners`, `192.0.2.0/24`),
    /// outside mxscreen's built-in allow list (those pass already).
    pub nets: Vec<(IpNet, String)>,
    /// Items of `+relay_from_hosts` that cannot be told by address, and why: ignored.
    pub relays_unresolved: Vec<(String, String)>,
}

/// What a `hosts` condition exempts, or why it is more than an exemption mxscreen can keep.
pub fn exempted(c: &Condition, cfg: &Exim) -> Result<Exempted, String> {
    let items: Vec<String> = exim::list(&c.value)
        .into_iter()
        .filter(|i| !i.is_empty())
        .collect();
    // `!hosts = a : b` (every item plain) or `hosts = !a : !b` (every item negated).
    let all_negated = items.iter().all(|i| i.starts_with('!'));
    let all_plain = items.iter().all(|i| !i.starts_with('!'));
    if items.is_empty() || !(c.negated && all_plain || !c.negated && all_negated) {
        return Err(
            "it applies to some hosts only, which mxscreen cannot tell before the connection"
                .into(),
        );
    }
    let mut out = Exempted::default();
    for item in &items {
        let item = item.trim_start_matches('!').trim();
        if item.strip_prefix('+') == Some(RELAYS) {
            relays(cfg, &mut out);
            continue;
        }
        for net in nets(item, cfg, 0)? {
            push(&mut out.nets, net, item);
        }
    }
    Ok(out)
}

/// `+relay_from_hosts`: what resolves is allowed, what does not is ignored (and said).
fn relays(cfg: &Exim, out: &mut Exempted) {
    let Some((value, _)) = cfg.hostlist(RELAYS) else {
        return;
    };
    for item in exim::list(value).into_iter().filter(|i| !i.is_empty()) {
        if item.starts_with('!') {
            // An exception to the relays: nothing to allow.
            continue;
        }
        match nets(&item, cfg, 1) {
            Ok(nets) => {
                for net in nets {
                    push(&mut out.nets, net, &format!("+{RELAYS}"));
                }
            }
            Err(why) => out.relays_unresolved.push((item, why)),
        }
    }
}

fn push(nets: &mut Vec<(IpNet, String)>, net: IpNet, via: &str) {
    let builtin = builtin_allow().iter().any(|b| b.contains(&net));
    if !builtin && !nets.iter().any(|(n, _)| *n == net) {
        nets.push((net, via.to_owned()));
    }
}

/// The addresses one plain item stands for, or why it cannot be told by address.
fn nets(item: &str, cfg: &Exim, depth: usize) -> Result<Vec<IpNet>, String> {
    if let Some(name) = item.strip_prefix('+') {
        let Some((value, _)) = cfg.hostlist(name) else {
            return Err(format!("`{item}` names no hostlist of the files read"));
        };
        if depth >= MAX_DEPTH {
            return Err(format!("`{item}`: hostlists nest too deep"));
        }
        let mut out = Vec::new();
        for inner in exim::list(value).into_iter().filter(|i| !i.is_empty()) {
            if inner.starts_with('!') {
                return Err(format!("`{item}` holds an exception (`{inner}`)"));
            }
            out.extend(nets(&inner, cfg, depth + 1).map_err(|why| format!("{item}: {why}"))?);
        }
        return Ok(out);
    }
    if let Some(net) = address(item) {
        return Ok(vec![net]);
    }
    Err(format!("`{item}` is {}", what(item)))
}

/// An address or prefix (Exim masks host bits off a prefix, so does this).
fn address(item: &str) -> Option<IpNet> {
    match item.parse::<IpNet>() {
        Ok(n) => Some(n.trunc()),
        Err(_) => item.parse::<std::net::IpAddr>().ok().map(IpNet::from),
    }
}

/// What an item mxscreen cannot resolve is, for the note.
fn what(item: &str) -> &'static str {
    if item == "*" {
        "every host"
    } else if item.starts_with('@') {
        "the local host's own names, addresses or MX, known to Exim only"
    } else if item.contains(';') {
        "a lookup, which only Exim can run"
    } else if item.starts_with('/') {
        "a file of hosts, which is not read"
    } else if item.starts_with('^') || item.contains('*') {
        "a host name pattern, matched on the client's reverse DNS"
    } else if item.contains('$') {
        "an expansion, which only Exim can run"
    } else {
        "a host name, matched on the client's reverse DNS"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::import::draft::Notes;

    fn cfg(text: &str) -> Exim {
        exim::read(&[("exim.conf".into(), text.into())], &mut Notes::default())
    }

    fn cond(negated: bool, value: &str) -> Condition {
        Condition {
            negated,
            name: "hosts".into(),
            value: value.into(),
            at: "exim.conf:9".into(),
        }
    }

    fn nets(e: &Exempted) -> Vec<String> {
        e.nets.iter().map(|(n, via)| format!("{n} {via}")).collect()
    }

    #[test]
    fn exemptions_by_address_and_hostlist() {
        let c = cfg("hostlist relay_from_hosts = 127.0.0.1 : 203.0.113.9\n\
             hostlist partners = 192.0.2.0/24 : 198.51.100.7 : 2001::db8::::/32\nhostlist both = +partners\n");
        let e = exempted(&cond(true, "+relay_from_hosts : +partners"), &c).unwrap();
        assert_eq!(
            nets(&e),
            [
                "203.0.113.9/32 +relay_from_hosts",
                "192.0.2.0/24 +partners",
                "198.51.100.7/32 +partners",
                "2001:db8::/32 +partners"
            ]
        );
        let e = exempted(
            &cond(false, "!+relay_from_hosts : ! 192.0.2.1/24 : !10.1.0.0/16"),
            &c,
        )
        .unwrap();
        assert_eq!(
            nets(&e),
            [
                "203.0.113.9/32 +relay_from_hosts",
                "192.0.2.0/24 192.0.2.1/24"
            ]
        );
        let e = exempted(&cond(true, "<; +both ; 2001:db8:1::1"), &c).unwrap();
        assert_eq!(e.nets.len(), 4);
    }

    #[test]
    fn what_cannot_be_told_by_address() {
        let c = cfg(
            "hostlist relay_from_hosts = net-lsearch;/etc/exim4/relays : 127.0.0.1\n\
             hostlist partners = 192.0.2.0/24 : mx.partner.example\nhostlist odd = !192.0.2.1 : 192.0.2.0/24\n",
        );
        // The relays' own lookup is ignored, and said.
        let e = exempted(&cond(true, "+relay_from_hosts"), &c).unwrap();
        assert!(e.nets.is_empty());
        assert_eq!(e.relays_unresolved.len(), 1, "{e:?}");
        for (negated, value, needle) in [
            (true, "+partners", "mx.partner.example` is a host name"),
            (true, "@[]", "the local host"),
            (true, "net-lsearch;/etc/exim4/hosts", "a lookup"),
            (true, "+unknown", "names no hostlist"),
            (true, "+odd", "holds an exception"),
            (true, "*", "every host"),
            (false, "192.0.2.0/24", "some hosts only"),
            (false, "!+partners : 198.51.100.0/24", "some hosts only"),
            (true, "!192.0.2.1", "some hosts only"),
        ] {
            let err = exempted(&cond(negated, value), &c).unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
        }
    }
}
