//! `mxscreen config import postscreen`: Postfix's postscreen DNSBL policy as mxscreen
//! config. What is read (postconf(5), Postfix 2.8 to 3.x):
//!
//! - `postscreen_dnsbl_sites`: `domain[=filter][*weight]` entries → `[[dnsbl]]` tables;
//! - `postscreen_dnsbl_threshold` → `policy.drop_threshold` (postscreen has no limit step);
//! - `postscreen_dnsbl_allowlist_threshold` (`..._whitelist_...` before 3.6) →
//!   `policy.allowlist_threshold`;
//! - `postscreen_dnsbl_action = ignore` → `policy.observe`;
//! - `postscreen_dnsbl_min_ttl`, `_max_ttl` (`postscreen_dnsbl_ttl` before 3.1) → verdict
//!   lives;
//! - `postscreen_access_list` → `lists.allow`/`lists.deny` or feeds ([`super::access`]);
//! - a master.cf's `-o` overrides of the port-25 postscreen, in place of main.cf's values
//!   ([`super::mastercf`]).

use std::time::Duration;

use super::{
    access,
    codes::parse_postscreen_filter,
    draft::{Draft, Notes, Setting, quote},
    maincf::{self, MainCf, Unresolved},
    mastercf,
    zones::{self, Item},
};
use crate::duration;

/// Postfix's defaults for the parameters read here (postconf(5)).
fn default_of(name: &str) -> Option<String> {
    let v = match name {
        "postscreen_dnsbl_threshold" => "1",
        "postscreen_dnsbl_action" | "postscreen_denylist_action" => "ignore",
        "postscreen_dnsbl_min_ttl" => "60s",
        "postscreen_dnsbl_ttl" => "1h",
        "postscreen_access_list" => "permit_mynetworks",
        "postscreen_dnsbl_allowlist_threshold" | "postscreen_dnsbl_whitelist_threshold" => "0",
        _ => return None,
    };
    Some(v.to_owned())
}

/// The tests postscreen runs besides the DNSBL one, which mxscreen has no counterpart for.
const OTHER_TESTS: &[(&str, &str)] = &[
    ("postscreen_greet_action", "ignore"),
    ("postscreen_pipelining_enable", "no"),
    ("postscreen_non_smtp_command_enable", "no"),
    ("postscreen_bare_newline_enable", "no"),
];

const DIFFERENCES: &[&str] = &[
    "postscreen adds the weight of every postscreen_dnsbl_sites entry whose filter matches a reply, each entry once; mxscreen queries each zone once and gives an answer code the weight of its first [[dnsbl.code_weights]] class. The classes are ordered and weighed so that every answer code scores as in postscreen; the notes name the entries where that cannot hold.",
    "An entry without a filter counts any reply in postscreen, 127.255.255.x refusals and addresses outside 127.0.0.0/8 included; mxscreen never counts those (a refusal or a resolver's rewrite is not a listing).",
    "postscreen decides after the client connected, then rejects (enforce: 550 after RCPT) or hangs up (drop: 521); mxscreen drops the SYN, so the sender sees a timeout and retries, unless policy.explain_every lets one connection through to be told why.",
    "postscreen remembers a passed test for the reply TTL within postscreen_dnsbl_min_ttl..max_ttl and a failed one not at all; mxscreen keeps a pass for pass_ttl (an allowlisted one for its listing's TTL) and a drop for its listings' TTL, within ttl_min..ttl_max.",
    "postscreen's greet, pipelining, non-SMTP-command and bare-newline tests have no counterpart: mxscreen decides before a connection exists (datapath.first_contact = \"hold\" is the nearest thing to the greet wait).",
];

/// Translates the postscreen settings of `files` (name and text, later ones overriding).
pub fn import(files: &[(String, String)]) -> Draft {
    let mut d = Draft {
        kind: "postscreen",
        files: files.iter().map(|(n, _)| n.clone()).collect(),
        differences: DIFFERENCES.iter().map(|s| (*s).to_owned()).collect(),
        ..Draft::default()
    };
    // A master.cf's overrides win over main.cf, wherever it stands among the files.
    let (master, main): (Vec<_>, Vec<_>) = files
        .iter()
        .partition(|(_, text)| mastercf::is_master_cf(text));
    let mut cf = MainCf::default();
    for (name, text) in main {
        cf.read(name, text);
    }
    for (name, text) in master {
        mastercf::apply(name, text, &mut cf, &mut d.notes);
    }
    let items = sites(&cf, &mut d.notes);
    if items.is_empty() {
        d.notes.push(
            &d.files.join(", "),
            "postscreen_dnsbl_sites",
            "not set, or empty: postscreen queries no DNSBL",
        );
    }
    d.zones = zones::build(items, "postscreen", &mut d.notes);
    policy(&cf, &mut d);
    access::translate(&cf, &mut d);
    for (name, off) in OTHER_TESTS {
        if let Some(s) = cf.get(name).filter(|s| s.value != *off) {
            d.notes.push(
                &s.at,
                format!("{name} = {}", s.value),
                "postscreen's own test; mxscreen has none like it",
            );
        }
    }
    d
}

/// The value of `name`, expanded, with unknown references noted; its default if not set.
pub(super) fn param(cf: &MainCf, name: &str, notes: &mut Notes) -> (String, String) {
    let mut unresolved = Unresolved::default();
    let (value, at) = match cf.expanded(name, &default_of, &mut unresolved) {
        Some(v) => (v, cf.get(name).map_or_else(String::new, |s| s.at.clone())),
        None => (default_of(name).unwrap_or_default(), String::new()),
    };
    for u in unresolved.unknown {
        notes.push(
            &at,
            format!("{name}: ${u}"),
            "refers to a parameter set nowhere in the files read: it expanded to nothing",
        );
    }
    for chain in unresolved.loops {
        notes.push(
            &at,
            format!("{name}: {chain}"),
            "a parameter that refers to itself (Postfix refuses such a main.cf): expanded to nothing",
        );
    }
    if unresolved.too_many {
        notes.push(
            &at,
            format!("{name}: $references"),
            "expands to more references than a main.cf could mean: the rest expanded to nothing",
        );
    }
    (value, at)
}

/// Where a value comes from, for a comment: `name = value (file:line)` or Postfix's default.
fn origin(name: &str, value: &str, at: &str) -> String {
    if at.is_empty() {
        format!("{name} is not set: Postfix's default {value}")
    } else {
        format!("{name} = {value} ({at})")
    }
}

/// `postscreen_dnsbl_sites` as items, each with the line it is written on.
fn sites(cf: &MainCf, notes: &mut Notes) -> Vec<Item> {
    let Some(setting) = cf.get("postscreen_dnsbl_sites") else {
        return Vec::new();
    };
    // Without references, each entry is named by its own line; with them, by the first.
    let lines = if setting.value.contains('$') {
        let (value, at) = param(cf, "postscreen_dnsbl_sites", notes);
        vec![(at, value)]
    } else {
        setting.lines.clone()
    };
    let mut out = Vec::new();
    for (at, text) in &lines {
        for entry in maincf::items(text) {
            match site(entry, at) {
                Ok(item) => out.push(item),
                Err(why) => notes.push(at, entry, &why),
            }
        }
    }
    out
}

/// One `domain[=filter][*weight]` entry, parsed as postscreen does (the weight after the
/// first `*`, the filter after the first `=`).
fn site(entry: &str, at: &str) -> Result<Item, String> {
    let (rest, weight) = match entry.split_once('*') {
        Some((r, w)) => (
            r,
            w.parse::<i32>()
                .map_err(|_| format!("weight {w:?} is not a whole number"))?,
        ),
        None => (entry, 1),
    };
    let (domain, filter) = match rest.split_once('=') {
        Some((d, f)) => (d, Some(f)),
        None => (rest, None),
    };
    let zone = domain.trim_end_matches('.').to_ascii_lowercase();
    if zone.is_empty() || hickory_proto::rr::Name::from_ascii(&zone).is_err() || !zone.contains('.')
    {
        return Err(format!("{domain:?} is not a DNS domain"));
    }
    let codes = filter
        .map(parse_postscreen_filter)
        .transpose()?
        .map(|c| vec![c]);
    Ok(Item {
        zone,
        codes,
        negated: false,
        weight,
        label: filter.unwrap_or("any reply").to_owned(),
        text: entry.to_owned(),
        at: at.to_owned(),
    })
}

/// Thresholds, action and verdict lives.
fn policy(cf: &MainCf, d: &mut Draft) {
    let (t, at) = param(cf, "postscreen_dnsbl_threshold", &mut d.notes);
    let threshold = match t.trim().parse::<i32>() {
        Ok(v) if v >= 1 => v,
        _ => {
            d.notes.push(
                &at,
                format!("postscreen_dnsbl_threshold = {t}"),
                "not a score of 1 or more (0 or less would fail every client): written as 1",
            );
            1
        }
    };
    let why = origin("postscreen_dnsbl_threshold", &t, &at);
    d.policy.push(Setting {
        key: "drop_threshold",
        value: threshold.to_string(),
        why: format!("{why}: a score this high fails the DNSBL test."),
    });
    d.policy.push(Setting {
        key: "limit_threshold",
        value: threshold.to_string(),
        why: "postscreen has no step between passing and failing: nothing is only limited.".into(),
    });

    let name = if cf.get("postscreen_dnsbl_allowlist_threshold").is_some()
        || cf.get("postscreen_dnsbl_whitelist_threshold").is_none()
    {
        "postscreen_dnsbl_allowlist_threshold"
    } else {
        "postscreen_dnsbl_whitelist_threshold"
    };
    let (a, at) = param(cf, name, &mut d.notes);
    match a.trim().parse::<i32>() {
        Ok(v) if v < 0 => d.policy.push(Setting {
            key: "allowlist_threshold",
            value: v.to_string(),
            why: format!("{}: a score this low is allowlisted (postscreen skips its other tests; mxscreen keeps the pass as long as the allowlisting answers' TTL, unheld).", origin(name, &a, &at)),
        }),
        Ok(_) => {}
        Err(_) => d.notes.push(&at, format!("{name} = {a}"), "not a whole number"),
    }

    let (action, at) = param(cf, "postscreen_dnsbl_action", &mut d.notes);
    match action.trim() {
        "ignore" => d.policy.push(Setting { key: "observe", value: "true".into(), why: format!("{}: postscreen only logs a failed DNSBL test; mxscreen decides, logs and counts, and drops nothing (lists and feeds included).", origin("postscreen_dnsbl_action", &action, &at)) }),
        "enforce" | "drop" => {}
        other => d.notes.push(&at, format!("postscreen_dnsbl_action = {other}"), "not ignore, enforce or drop"),
    }
    lives(cf, d);
}

/// `postscreen_dnsbl_min_ttl`/`max_ttl` (or the older `postscreen_dnsbl_ttl`) as
/// `ttl_min`, `ttl_max` and `pass_ttl`.
fn lives(cf: &MainCf, d: &mut Draft) {
    let read = |name: &str, unit: char, notes: &mut Notes| -> Option<(u64, String)> {
        let (v, at) = param(cf, name, notes);
        let why = origin(name, &v, &at);
        match maincf::time(&v, unit) {
            Some(secs) if secs > 0 => Some((secs, why)),
            _ => {
                notes.push(&at, format!("{name} = {v}"), "not a time value");
                None
            }
        }
    };
    let min = read("postscreen_dnsbl_min_ttl", 's', &mut d.notes);
    let max = if cf.get("postscreen_dnsbl_max_ttl").is_some() {
        read("postscreen_dnsbl_max_ttl", 'h', &mut d.notes)
    } else {
        read("postscreen_dnsbl_ttl", 'h', &mut d.notes)
    };
    let (Some((mut min, min_why)), Some((max, max_why))) = (min, max) else {
        return;
    };
    if max < min {
        d.notes.push(
            &max_why,
            "a maximum TTL below the minimum",
            "postscreen then uses the maximum; so does ttl_min here",
        );
        min = max;
    }
    let life = |s: u64| quote(&duration::format(Duration::from_secs(s)));
    d.policy.push(Setting {
        key: "ttl_min",
        value: life(min),
        why: format!("{min_why}: the shortest life of a verdict."),
    });
    d.policy.push(Setting {
        key: "ttl_max",
        value: life(max),
        why: format!("{max_why}: the longest life of a verdict..."),
    });
    d.policy.push(Setting {
        key: "pass_ttl",
        value: life(max),
        why: "... and of a pass (postscreen's pass lives its reply's TTL within these bounds)."
            .into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn import_text(text: &str) -> (Draft, Config) {
        let d = import(&[("main.cf".into(), text.into())]);
        let cfg = Config::from_toml_str(&d.render(), "imported").unwrap();
        (d, cfg)
    }

    #[test]
    fn sites_thresholds_and_lives() {
        let (d, cfg) = import_text(
            "mynetworks = 127.0.0.0/8\nzen = zen.spamhaus.org\npostscreen_dnsbl_sites = ${zen}=127.0.0.[2..11]*3,\n\
             \tbl.spamcop.net list.dnswl.org=127.0.[0..255].[2..3]*-4\n\
             postscreen_dnsbl_threshold = 3\npostscreen_dnsbl_whitelist_threshold = -2\n\
             postscreen_dnsbl_action = enforce\npostscreen_dnsbl_min_ttl = 2m\npostscreen_dnsbl_max_ttl = 2\n",
        );
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        let p = &cfg.policy;
        assert_eq!(
            (p.drop_threshold, p.limit_threshold, p.allowlist_threshold),
            (3, 3, -2)
        );
        assert!(!p.observe);
        assert_eq!(
            (
                p.ttl_min.as_secs(),
                p.ttl_max.as_secs(),
                p.pass_ttl.as_secs()
            ),
            (120, 7200, 7200)
        );
        let zones: Vec<(&str, i32)> = cfg
            .dnsbl
            .iter()
            .map(|z| (z.zone.as_str(), z.weight))
            .collect();
        assert_eq!(
            zones,
            [
                ("zen.spamhaus.org", 3),
                ("bl.spamcop.net", 1),
                ("list.dnswl.org", -4)
            ]
        );
        assert_eq!(cfg.dnsbl[2].codes.len(), 2);
        assert!(!cfg.rdns.enabled);
    }

    #[test]
    fn postfix_defaults_apply_when_nothing_is_set() {
        let (d, cfg) = import_text("postscreen_dnsbl_sites = bl.example\n");
        let p = &cfg.policy;
        assert_eq!((p.drop_threshold, p.allowlist_threshold), (1, 0));
        // postscreen_dnsbl_action defaults to ignore: postscreen only logs.
        assert!(p.observe);
        assert_eq!((p.ttl_min.as_secs(), p.ttl_max.as_secs()), (60, 3600));
        let text = d.render();
        assert!(
            text.contains("postscreen_dnsbl_threshold is not set: Postfix's default 1"),
            "{text}"
        );
        // permit_mynetworks without mynetworks: mxscreen's default allow list stays.
        assert_eq!(
            cfg.lists.allow,
            crate::reputation::config::ListsConfig::default().allow
        );
        assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
    }

    #[test]
    fn what_cannot_be_read_is_named_with_its_line() {
        let (d, cfg) = import_text(
            "postscreen_dnsbl_sites =\n  good.example*2\n  bad..example*2\n  x.example=127.0.0.[9..2]\n  \
             y.example*two\n  z.example=10.0.0.1*5\npostscreen_dnsbl_threshold = $undefined_threshold\n\
             postscreen_pipelining_enable = yes\n",
        );
        let notes: Vec<&String> = d.notes.iter().collect();
        for needle in [
            "main.cf:3: bad..example*2",
            "main.cf:4: x.example=127.0.0.[9..2]",
            "main.cf:5: y.example*two",
            "main.cf:6: z.example: 10.0.0.1",
            "$undefined_threshold",
            "main.cf:8: postscreen_pipelining_enable",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(needle)),
                "{needle} not in {notes:#?}"
            );
        }
        assert_eq!(cfg.dnsbl.len(), 1);
        assert_eq!(cfg.policy.drop_threshold, 1);
    }

    #[test]
    fn access_lists_become_lists_or_feeds() {
        let dir = tempfile::tempdir().unwrap();
        let allow = dir.path().join("allow.cidr");
        std::fs::write(
            &allow,
            "# partners\n192.0.2.0/24 permit\n2001:db8::/32 permit\n",
        )
        .unwrap();
        let mixed = dir.path().join("mixed.cidr");
        std::fs::write(
            &mixed,
            "198.51.100.7 reject\n198.51.100.0/24 permit\n203.0.113.0/24 reject\n192.0.2.1/24 permit\n20.0.0.0/8 reject\n",
        )
        .unwrap();
        let (d, cfg) = import_text(&format!(
            "mynetworks = 127.0.0.0/8 [::1]/128 [::ffff:10.0.0.0]/104\npostscreen_access_list = permit_mynetworks,\n  \
             cidr:{} proxy:cidr:{} hash:/etc/postfix/x\npostscreen_denylist_action = drop\npostscreen_dnsbl_sites = bl.example\n",
            allow.display(),
            mixed.display()
        ));
        let nets = |v: &[ipnet::IpNet]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            nets(&cfg.lists.allow),
            ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "198.51.100.0/24"]
        );
        assert_eq!(nets(&cfg.lists.deny), ["198.51.100.7/32", "203.0.113.0/24"]);
        let f = &cfg.lists.feed[0];
        assert_eq!(
            (f.name.as_str(), f.path.as_path(), f.action.name()),
            ("allow", allow.as_path(), "allow")
        );
        let notes: Vec<&String> = d.notes.iter().collect();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("reject 198.51.100.7/32") && n.contains("allow wins")),
            "{notes:#?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("hash:/etc/postfix/x")),
            "{notes:#?}"
        );
        // Host bits set: Postfix skips the rule, and says so; so does the import.
        assert!(
            notes
                .iter()
                .any(|n| n
                    .contains("mixed.cidr:4: 192.0.2.1/24 permit: a prefix with host bits set")),
            "{notes:#?}"
        );
        // Wider than lists.deny takes: left out, and said so (a valid config either way).
        assert!(
            notes
                .iter()
                .any(|n| n.contains("mixed.cidr:5: reject 20.0.0.0/8")
                    && n.contains("wider than /16")),
            "{notes:#?}"
        );
    }

    /// master.cf's overrides of the port-25 postscreen are what its clients get: honoured,
    /// each named; those of a postscreen on another port are named, not translated.
    #[test]
    fn master_cf_overrides_of_the_port_25_postscreen() {
        let master = "smtp      inet  n       -       y       -       1       postscreen\n  \
                      -o postscreen_dnsbl_threshold=8\n  -o postscreen_dnsbl_sites=zen.spamhaus.org*8\n\
                      2525      inet  n       -       y       -       1       postscreen\n  \
                      -o postscreen_dnsbl_action=ignore\n\
                      smtpd     pass  -       -       y       -       -       smtpd\n";
        let d = import(&[
            ("main.cf".into(), "postscreen_dnsbl_sites = bl.example*2\npostscreen_dnsbl_threshold = 2\npostscreen_dnsbl_action = enforce\n".into()),
            ("master.cf".into(), master.into()),
        ]);
        let cfg = Config::from_toml_str(&d.render(), "imported").unwrap();
        assert_eq!(cfg.policy.drop_threshold, 8);
        let zones: Vec<(&str, i32)> = cfg
            .dnsbl
            .iter()
            .map(|z| (z.zone.as_str(), z.weight))
            .collect();
        assert_eq!(zones, [("zen.spamhaus.org", 8)]);
        assert!(!cfg.policy.observe);
        let notes: Vec<&String> = d.notes.iter().collect();
        for needle in [
            "master.cf:2: smtp -o postscreen_dnsbl_threshold=8: an override of the port-25 postscreen",
            "master.cf:3: smtp -o postscreen_dnsbl_sites=zen.spamhaus.org*8: an override",
            "master.cf:5: 2525 -o postscreen_dnsbl_action=ignore: an override of a postscreen on another port",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(needle)),
                "{needle} not in {notes:#?}"
            );
        }
        // No postscreen on port 25: said.
        let d = import(&[
            (
                "main.cf".into(),
                "postscreen_dnsbl_sites = bl.example\n".into(),
            ),
            ("master.cf".into(), "smtp inet n - y - - smtpd\n".into()),
        ]);
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("runs no postscreen on port 25")),
            "{:?}",
            d.notes
        );
    }
}
