//! `mxscreen config import exim`: the `dnslists` conditions of Exim's ACLs as mxscreen
//! config. Exim stops at the first statement whose conditions all hold; mxscreen adds
//! weights. The translation keeps Exim's outcome for every host a statement lists:
//!
//! - `deny`/`drop dnslists = ...`: each listing weighs the drop threshold;
//! - `warn dnslists = ...` with a `delay` (and `defer`): a listing weighs 1, the limit
//!   threshold, and all of them together stay below the drop threshold (a delay slows a
//!   sender, as mxscreen's limit does, and refuses nobody);
//! - `warn` without a delay: weight 0 (looked up and shown as evidence, as Exim logs it);
//! - `accept dnslists = ...`: an allowlist weighing minus every other listing together, so
//!   a listed host always passes (where Exim's statement order says otherwise, a note says);
//! - statements with conditions mxscreen cannot see at connect time (senders, recipients,
//!   verify, `condition = ${...}`...) are not translated, and a note says so;
//! - hosts a statement exempts (`!hosts = +partners`), or an `accept hosts = ...` lets
//!   through ahead of a statement that drops or limits, go in `lists.allow` (noted), so a
//!   host Exim accepts is never dropped.

use super::{
    dnslists::{self, DnsList, Entry},
    draft::{Draft, Setting},
    exim::{self, Statement},
    hostlist,
    zones::{self, Item},
};

/// The ACL options in the order Exim runs them during a connection.
const RUN_ORDER: &[&str] = &[
    "acl_smtp_connect",
    "acl_smtp_helo",
    "acl_smtp_mail",
    "acl_smtp_rcpt",
    "acl_smtp_predata",
    "acl_smtp_data",
];

/// Modifiers: they change what a statement does, never whether it applies.
const MODIFIERS: &[&str] = &[
    "message",
    "log_message",
    "logwrite",
    "add_header",
    "remove_header",
    "set",
    "control",
    "delay",
    "endpass",
    "continue",
    "queue",
    "udpsend",
    "debug",
    "log_reject_target",
];

const DIFFERENCES: &[&str] = &[
    "Exim stops at the first ACL statement whose conditions all hold; mxscreen adds weights. A deny listing weighs the drop threshold, a delaying warn (or a defer) listing 1, the limit threshold, and an accept listing minus all of them: an allowlisted host always passes, wherever its accept stands.",
    "Exim checks dnslists when the ACL runs (at RCPT for acl_smtp_rcpt) and refuses with a 5xx; mxscreen drops the SYN, so the sender sees a timeout and retries, unless policy.explain_every lets one connection through to be told why.",
    "Exim ignores answers outside 127.0.0.0/8, as mxscreen does; mxscreen also never counts 127.255.255.x (the list refusing the query), which Exim counts as listed unless the item names its codes.",
    "A lookup that fails is \"not listed\" for Exim (+exclude_unknown) and adds nothing in mxscreen either; a verdict it leaves open is a short pass (policy.tempfail_ttl).",
];

/// What a translated statement does to a listed host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Drop,
    Limit,
    Log,
    Allow,
}

/// A translated dnslists item with its statement's effect and place.
struct Listed {
    list: DnsList,
    effect: Effect,
    acl: usize,
    index: usize,
    at: String,
    verb: String,
}

/// Translates the dnslists conditions of `files` (name and text, read as one config).
pub fn import(files: &[(String, String)]) -> Draft {
    let mut d = Draft {
        kind: "exim",
        files: files.iter().map(|(n, _)| n.clone()).collect(),
        differences: DIFFERENCES.iter().map(|s| (*s).to_owned()).collect(),
        ..Draft::default()
    };
    let cfg = exim::read(files, &mut d.notes);
    let mut listed = Vec::new();
    for (acl, (_, statements)) in run_order(&cfg, &mut d).into_iter().enumerate() {
        for (index, s) in statements.iter().enumerate() {
            statement(s, &cfg, (acl, index), &mut listed, &mut d);
        }
        // An `accept hosts = ...` ends the ACL for those hosts: a statement after it that
        // drops or limits never sees them.
        for (index, s) in statements.iter().enumerate() {
            let Some(hosts) = accepts_hosts(s) else {
                continue;
            };
            let shields = listed.iter().any(|l| {
                l.acl == acl && l.index > index && matches!(l.effect, Effect::Drop | Effect::Limit)
            });
            if shields {
                accepted_ahead(s, hosts, &cfg, &mut d);
            }
        }
    }
    if listed.is_empty() {
        d.notes.push(
            &d.files.join(", "),
            "dnslists",
            "no dnslists condition found in the ACLs that run",
        );
    }
    weigh(listed, &mut d);
    d
}

/// The ACLs the acl_smtp_* options name, in the order they run; all of them, in file order,
/// when no option names one (an ACL file on its own).
fn run_order(cfg: &exim::Exim, d: &mut Draft) -> Vec<(String, Vec<Statement>)> {
    let named: Vec<(&str, &str)> = RUN_ORDER.iter().filter_map(|o| cfg.option(o)).collect();
    if named.is_empty() {
        return cfg.acls.clone();
    }
    let mut out = Vec::new();
    for (name, at) in named {
        match cfg.acls.iter().find(|(n, _)| n == name) {
            Some(acl) => out.push(acl.clone()),
            None => d.notes.push(at, name, "names no ACL of the begin acl section (an inline or file ACL is not read); not translated"),
        }
    }
    out
}

/// Reads one statement's dnslists items into `listed`, or notes why it is not translated.
/// `place` is the statement's ACL (in run order) and its index there.
fn statement(
    s: &Statement,
    cfg: &exim::Exim,
    (acl, index): (usize, usize),
    listed: &mut Vec<Listed>,
    d: &mut Draft,
) {
    let lists: Vec<_> = s
        .conditions
        .iter()
        .filter(|c| c.name == "dnslists")
        .collect();
    if lists.is_empty() {
        return;
    }
    let what = format!("{} dnslists = {}", s.verb, lists[0].value);
    let skip = |d: &mut Draft, why: &str| {
        d.notes
            .push(&s.at, &what, &format!("{why}; not translated"))
    };
    if lists.len() > 1 || lists[0].negated {
        return skip(
            d,
            "a statement that needs several lists at once, or a host not listed, is no sum of weights",
        );
    }
    let mut exemptions = Vec::new();
    for c in s
        .conditions
        .iter()
        .filter(|c| c.name != "dnslists" && !MODIFIERS.contains(&c.name.as_str()))
    {
        let written = format!(
            "{}{} = {}",
            if c.negated { "!" } else { "" },
            c.name,
            c.value
        );
        if c.name == "hosts" {
            match hostlist::exempted(c, cfg) {
                Ok(e) => exemptions.push((written, e)),
                Err(why) => return skip(d, &format!("it also needs `{written}`: {why}")),
            }
        } else if !holds_at_connect(c) {
            return skip(
                d,
                &format!(
                    "it also needs `{written}`, which mxscreen cannot see before the connection"
                ),
            );
        }
    }
    let delays = s.conditions.iter().any(|c| c.name == "delay");
    let effect = match s.verb.as_str() {
        "deny" | "drop" => Effect::Drop,
        "defer" => Effect::Limit,
        "warn" if delays => Effect::Limit,
        "warn" => Effect::Log,
        "accept" => Effect::Allow,
        other => return skip(d, &format!("`{other}` has no counterpart in mxscreen")),
    };
    for (written, e) in exemptions {
        exempt(s, &written, e, effect, d);
    }
    for entry in dnslists::parse(&lists[0].value) {
        match entry {
            Entry::List(list) if list.key.is_some() => d.notes.push(&s.at, &list.text, "looks up another key than the client's address (a domain, an MX or NS address); not translated"),
            Entry::List(list) => {
                if list.all {
                    d.notes.push(&s.at, &list.text, "== and =& need every address of a multi-address answer to match; mxscreen weighs each code (the same for one-address answers)");
                }
                listed.push(Listed { list, effect, acl, index, at: s.at.clone(), verb: s.verb.clone() });
            }
            Entry::Unknown(switch) => d.notes.push(&s.at, &switch, "a failed lookup never counts as listed in mxscreen (nor defers)"),
            Entry::Bad(item, why) => d.notes.push(&s.at, &item, &format!("{why}; not translated")),
        }
    }
}

/// The `hosts` condition of an `accept` whose only condition it is (modifiers aside), for
/// hosts listed plainly: what Exim accepts at once, whoever else the ACL refuses.
fn accepts_hosts(s: &Statement) -> Option<&exim::Condition> {
    if s.verb != "accept" {
        return None;
    }
    let mut conditions = s
        .conditions
        .iter()
        .filter(|c| !MODIFIERS.contains(&c.name.as_str()));
    match (conditions.next(), conditions.next()) {
        (Some(c), None) if c.name == "hosts" && !c.negated => Some(c),
        _ => None,
    }
}

/// The hosts an `accept hosts = ...` lets through ahead of a statement that would drop or
/// limit them: in `lists.allow` (as an exemption), or a note when they cannot be told by
/// address.
fn accepted_ahead(s: &Statement, hosts: &exim::Condition, cfg: &exim::Exim, d: &mut Draft) {
    let written = format!("hosts = {}", hosts.value);
    // `accept hosts = a : b` lets a and b through as `!hosts = a : b` exempts them.
    let as_exemption = exim::Condition {
        negated: true,
        ..hosts.clone()
    };
    match hostlist::exempted(&as_exemption, cfg) {
        Ok(e) => {
            let names = allow_nets(s, &written, e, d);
            if !names.is_empty() {
                d.notes.push(&s.at, format!("accept {written}"), &format!("accepts {} before the dnslists statements after it: in lists.allow, so that they are never dropped; there an allow passes every check", names.join(", ")));
            }
        }
        Err(why) => d.notes.push(
            &s.at,
            format!("accept {written}"),
            &format!("{why}; Exim accepts those hosts before the dnslists statements after it, mxscreen does not: put them in lists.allow"),
        ),
    }
}

/// Conditions other than `hosts` that hold for every connection mxscreen screens: the
/// exemption of authenticated clients (port 25 senders do not authenticate) and the
/// local-domains restriction.
fn holds_at_connect(c: &exim::Condition) -> bool {
    let v = c.value.replace(' ', "");
    match c.name.as_str() {
        "authenticated" => c.negated && v == "*",
        "domains" => !c.negated && v == "+local_domains",
        _ => false,
    }
}

/// Keeps the hosts a statement exempts (`written`, its `hosts` condition) from what it does:
/// a statement that could drop or limit them puts them in `lists.allow` (broader than Exim:
/// an allow passes every check, and said so); an allowlist or a logging statement counts
/// for them too, which drops nobody.
fn exempt(s: &Statement, written: &str, e: hostlist::Exempted, effect: Effect, d: &mut Draft) {
    for (item, why) in &e.relays_unresolved {
        d.notes.push(&s.at, format!("{written}: {item}"), &format!("{why}: the relays' exemption is ignored, as for every MX connection; put relays that send on a screened port in lists.allow"));
    }
    if e.nets.is_empty() {
        return;
    }
    let names: Vec<String> = e.nets.iter().map(|(n, _)| n.to_string()).collect();
    match effect {
        Effect::Drop | Effect::Limit => {
            allow_nets(s, written, e, d);
            d.notes.push(&s.at, format!("{} {written}", s.verb), &format!("exempts {} from this statement: in lists.allow, so that they are never dropped; there an allow passes every check, not only this statement's lists", names.join(", ")));
        }
        Effect::Allow => d.notes.push(
            &s.at,
            format!("{} {written}", s.verb),
            &format!(
                "exempts {} from this allowlist: here it counts for them too",
                names.join(", ")
            ),
        ),
        Effect::Log => {}
    }
}

/// Puts the addresses and prefixes of `e` in `lists.allow`, each once, saying which
/// statement let them through; returns them as written.
fn allow_nets(s: &Statement, written: &str, e: hostlist::Exempted, d: &mut Draft) -> Vec<String> {
    let mut names = Vec::new();
    for (net, via) in e.nets {
        let net = net.to_string();
        names.push(net.clone());
        if !d.allow.iter().any(|(n, _)| *n == net) {
            d.allow.push((
                net,
                format!("{}: {via}, exempted by `{} {written}`", s.at, s.verb),
            ));
        }
    }
    names
}

/// Weighs the listings (see the module comment), notes where Exim's order gives another
/// outcome, and builds the zones and thresholds.
fn weigh(listed: Vec<Listed>, d: &mut Draft) {
    let limits = listed.iter().filter(|l| l.effect == Effect::Limit).count() as i32;
    let drop = limits + 1;
    let weight = |e: Effect| match e {
        Effect::Drop => drop,
        Effect::Limit => 1,
        Effect::Log | Effect::Allow => 0,
    };
    let positive: i32 = listed.iter().map(|l| weight(l.effect)).sum();
    let allow = -positive.max(1);
    for a in listed.iter().filter(|l| l.effect == Effect::Allow) {
        for p in listed
            .iter()
            .filter(|l| matches!(l.effect, Effect::Drop | Effect::Limit))
        {
            let why = if p.acl != a.acl {
                "runs in another ACL, which an accept does not end"
            } else if p.index < a.index {
                "comes first in the same ACL"
            } else {
                continue;
            };
            d.notes.push(&a.at, format!("accept dnslists {}", a.list.text), &format!("`{} dnslists {}` ({}) {why}: Exim applies it to a host both list, here the allowlist wins", p.verb, p.list.text, p.at));
        }
    }
    let items = listed
        .into_iter()
        .map(|l| {
            let codes_text = l.list.text.split('/').next().unwrap_or("");
            let label = codes_text
                .find(['!', '=', '&'])
                .map_or("any", |i| &codes_text[i..])
                .to_owned();
            Item {
                weight: if l.effect == Effect::Allow {
                    allow
                } else {
                    weight(l.effect)
                },
                zone: l.list.zone,
                codes: l.list.codes,
                negated: l.list.negated,
                label,
                text: format!("{} dnslists {}", l.verb, l.list.text),
                at: l.at,
            }
        })
        .collect();
    d.zones = zones::build(items, "exim", &mut d.notes);
    d.policy.push(Setting {
        key: "drop_threshold",
        value: drop.to_string(),
        why: "A listing of a deny or drop statement weighs this much.".into(),
    });
    let why = if limits == 0 {
        "No statement only delays: a listing that counts drops."
    } else {
        "A listing of a warn statement with a delay, or of a defer, weighs 1: limited (rate-limited SYNs), never dropped, however many of them."
    };
    d.policy.push(Setting {
        key: "limit_threshold",
        value: "1".into(),
        why: why.into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, reputation::codes::any_matches};

    fn import_text(text: &str) -> (Draft, Config) {
        let d = import(&[("exim.conf".into(), text.into())]);
        let cfg = Config::from_toml_str(&d.render(), "imported").unwrap();
        (d, cfg)
    }

    /// The weight one answer code gets from zone `zone` (0 if it does not count).
    fn weight(cfg: &Config, zone: &str, code: &str) -> i32 {
        let z = cfg.dnsbl.iter().find(|z| z.zone == zone).unwrap();
        let code = code.parse().unwrap();
        if !z.codes.is_empty() && !any_matches(&z.codes, code) {
            return 0;
        }
        z.code_weights
            .iter()
            .find(|c| any_matches(&c.codes, code))
            .map_or(z.weight, |c| c.weight)
    }

    #[test]
    fn deny_warn_with_delay_and_accept_keep_exims_outcome() {
        let (d, cfg) = import_text(
            "acl_smtp_rcpt = check_rcpt\nbegin acl\ncheck_rcpt:\n  accept dnslists = list.dnswl.org&0.0.0.2\n  \
             deny !authenticated = *\n       dnslists = zen.spamhaus.org=127.0.0.2,127.0.0.3 : bl.spamcop.net\n  \
             warn dnslists = zen.spamhaus.org=127.0.0.10,127.0.0.11\n       delay = 15s\n  \
             warn dnslists = dnsbl.sorbs.net\n       log_message = listed\n  accept\n",
        );
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        let p = &cfg.policy;
        assert_eq!((p.limit_threshold, p.drop_threshold), (1, 2));
        assert_eq!(weight(&cfg, "zen.spamhaus.org", "127.0.0.2"), 2);
        assert_eq!(weight(&cfg, "zen.spamhaus.org", "127.0.0.10"), 1);
        assert_eq!(weight(&cfg, "zen.spamhaus.org", "127.0.0.4"), 0);
        assert_eq!(weight(&cfg, "bl.spamcop.net", "127.0.0.2"), 2);
        assert_eq!(weight(&cfg, "dnsbl.sorbs.net", "127.0.0.5"), 0);
        // The allowlist outweighs every listing together: 2 + 1 + 2.
        assert_eq!(weight(&cfg, "list.dnswl.org", "127.0.15.2"), -5);
        assert_eq!(weight(&cfg, "list.dnswl.org", "127.0.15.1"), 0);
    }

    #[test]
    fn negations_and_what_cannot_be_seen_at_connect() {
        let (d, cfg) = import_text(
            "begin acl\nrcpt:\n  deny dnslists = +include_unknown : dnsbl.example!=127.0.0.3 : b.example==127.0.0.2\n  \
             deny senders = :\n       dnslists = c.example\n  deny dnslists = d.example/$sender_helo_name\n  \
             deny dnslists = e.example\n       dnslists = f.example\n  require dnslists = g.example\n  \
             deny dnslists = h.example\n  accept dnslists = wl.example\n",
        );
        assert_eq!(weight(&cfg, "dnsbl.example", "127.0.0.3"), 0);
        assert_eq!(weight(&cfg, "dnsbl.example", "127.0.0.2"), 1);
        assert_eq!(weight(&cfg, "b.example", "127.0.0.2"), 1);
        let zones: Vec<&str> = cfg.dnsbl.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(
            zones,
            ["dnsbl.example", "b.example", "h.example", "wl.example"]
        );
        let notes: Vec<&String> = d.notes.iter().collect();
        for needle in [
            "exim.conf:3: +include_unknown",
            "b.example==127.0.0.2: ==",
            "exim.conf:4: deny dnslists = c.example: it also needs `senders = :`",
            "d.example/$sender_helo_name: looks up another key",
            "exim.conf:7: deny dnslists = e.example: a statement that needs several lists",
            "exim.conf:9: require dnslists = g.example: `require`",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(needle)),
                "{needle} not in {notes:#?}"
            );
        }
        // An accept after the denies it would cancel: Exim denies first; said so.
        assert!(
            notes
                .iter()
                .any(|n| n.contains("accept dnslists wl.example") && n.contains("comes first")),
            "{notes:#?}"
        );
    }

    /// The hosts a statement exempts are never dropped by it: addresses and hostlists of
    /// them go to lists.allow (said so), anything else leaves the statement untranslated.
    #[test]
    fn exempted_hosts_are_allowed_or_the_statement_is_left_out() {
        let (d, cfg) = import_text(
            "hostlist relay_from_hosts = 127.0.0.1\nhostlist partners = 192.0.2.0/24 : 198.51.100.7\n\
             acl_smtp_rcpt = acl_check_rcpt\nbegin acl\nacl_check_rcpt:\n  \
             deny  !hosts = +relay_from_hosts : +partners\n        dnslists = zen.spamhaus.org\n  \
             deny  hosts = !+relay_from_hosts : !192.0.2.0/24\n        dnslists = bl.spamcop.net\n  \
             deny  !hosts = +partners\n        dnslists = b.barracudacentral.org\n  \
             deny  !hosts = +relay_from_hosts : mx.partner.example\n        dnslists = psbl.surriel.com\n  \
             deny  !hosts = +relay_from_hosts\n        dnslists = dnsbl.sorbs.net\n  accept\n",
        );
        let allow: Vec<String> = cfg.lists.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["192.0.2.0/24", "198.51.100.7/32"]);
        let zones: Vec<&str> = cfg.dnsbl.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(
            zones,
            [
                "zen.spamhaus.org",
                "bl.spamcop.net",
                "b.barracudacentral.org",
                "dnsbl.sorbs.net"
            ]
        );
        let notes: Vec<&String> = d.notes.iter().collect();
        for needle in [
            "exim.conf:6: deny !hosts = +relay_from_hosts : +partners: exempts 192.0.2.0/24, 198.51.100.7/32",
            "exim.conf:8: deny hosts = !+relay_from_hosts : !192.0.2.0/24: exempts 192.0.2.0/24",
            "exim.conf:10: deny !hosts = +partners: exempts",
            "exim.conf:12: deny dnslists = psbl.surriel.com: it also needs `!hosts = +relay_from_hosts : mx.partner.example`: `mx.partner.example` is a host name",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(needle)),
                "{needle} not in {notes:#?}"
            );
        }
        assert_eq!(notes.len(), 4, "{notes:#?}");
    }

    /// `accept hosts = ...` ahead of the dnslists statements lets those hosts through
    /// before any list is looked up: they are allowed; after them, or in another ACL, it
    /// changes nothing; a host name among them is noted.
    #[test]
    fn hosts_accepted_ahead_of_the_lists_are_allowed() {
        let (d, cfg) = import_text(
            "hostlist partners = 192.0.2.0/24 : 198.51.100.7
             acl_smtp_connect = acl_check_connect
acl_smtp_rcpt = acl_check_rcpt
begin acl
             acl_check_connect:
  accept hosts = 203.0.113.9
             acl_check_rcpt:
  accept hosts = +partners
  accept hosts = mx.partner.example
               accept authenticated = *
  deny dnslists = zen.spamhaus.org
               accept hosts = 203.0.113.5
  accept
",
        );
        let allow: Vec<String> = cfg.lists.allow.iter().map(ToString::to_string).collect();
        assert_eq!(allow, ["192.0.2.0/24", "198.51.100.7/32"]);
        let notes: Vec<&String> = d.notes.iter().collect();
        for needle in [
            "exim.conf:8: accept hosts = +partners: accepts 192.0.2.0/24, 198.51.100.7/32 before the dnslists statements",
            "exim.conf:9: accept hosts = mx.partner.example: `mx.partner.example` is a host name",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(needle)),
                "{needle} not in {notes:#?}"
            );
        }
        assert_eq!(notes.len(), 2, "{notes:#?}");
    }
}
