//! `postscreen_access_list` as mxscreen lists: `permit_mynetworks` puts `$mynetworks` in
//! `lists.allow`; a `cidr:` (or `texthash:`) table whose lines all permit, or all reject,
//! becomes a feed of that file (it stays current as the file changes); a table that mixes
//! them is copied into `lists.allow` and `lists.deny`. postscreen stops at the first entry
//! that matches, mxscreen lets an allow win over a deny: a reject that postscreen reaches
//! before an overlapping permit is named in a note.

use std::path::Path;

use ipnet::IpNet;

use super::{
    super::sections::ControlSection,
    draft::{Draft, Feed, Notes},
    maincf::{self, MainCf},
    postscreen::param,
};

/// One address or prefix of the access list, in the order postscreen evaluates them.
struct Entry {
    net: IpNet,
    permit: bool,
    at: String,
    /// Listed by a feed of its table rather than copied into the lists.
    in_feed: bool,
}

/// Reads the access list into `d`'s lists and feeds.
pub fn translate(cf: &MainCf, d: &mut Draft) {
    let (list, at) = param(cf, "postscreen_access_list", &mut d.notes);
    let deny_name = if cf.get("postscreen_blacklist_action").is_some()
        && cf.get("postscreen_denylist_action").is_none()
    {
        "postscreen_blacklist_action"
    } else {
        "postscreen_denylist_action"
    };
    let (deny_action, deny_at) = param(cf, deny_name, &mut d.notes);
    let enforced = deny_action.trim() != "ignore";
    let mut entries: Vec<Entry> = Vec::new();
    let items: Vec<&str> = maincf::items(&list).collect();
    for (i, item) in items.iter().enumerate() {
        let lower = item.to_ascii_lowercase();
        match lower.as_str() {
            "permit_mynetworks" => mynetworks(cf, &at, &mut entries, &mut d.notes),
            "permit" | "reject" => d.notes.push(
                &at,
                format!("postscreen_access_list: {item}"),
                "decides for every client; not translated",
            ),
            "dunno" => {
                if i + 1 < items.len() {
                    d.notes.push(
                        &at,
                        format!("postscreen_access_list: {}", items[i + 1..].join(" ")),
                        "after a bare dunno, never evaluated; not translated",
                    );
                }
                break;
            }
            _ => table(item, &at, enforced, &mut entries, d),
        }
    }
    conflicts(&entries, &mut d.notes);
    for e in entries.into_iter().filter(|e| !e.in_feed) {
        let net = e.net.to_string();
        if e.permit {
            if !d.allow.iter().any(|(n, _)| *n == net) {
                d.allow.push((net, e.at));
            }
        } else if !enforced {
            d.notes.push(
                &e.at,
                format!("reject {net}"),
                &format!(
                    "{deny_name} = ignore ({}): postscreen only logs it; not translated",
                    if deny_at.is_empty() {
                        "the default"
                    } else {
                        &deny_at
                    }
                ),
            );
        } else if let Some((widest, family)) = ControlSection::default().too_wide(&e.net) {
            d.notes.push(
                &e.at,
                format!("reject {net}"),
                &format!(
                    "wider than /{widest}, the widest lists.deny takes (control.widest_block_{family}); not translated: add it by hand, with that bound lowered, if you mean it"
                ),
            );
        } else if !d.deny.iter().any(|(n, _)| *n == net) {
            d.deny.push((net, e.at));
        }
    }
}

/// `permit_mynetworks`: the prefixes of `$mynetworks`.
fn mynetworks(cf: &MainCf, at: &str, entries: &mut Vec<Entry>, notes: &mut Notes) {
    let Some(setting) = cf.get("mynetworks") else {
        notes.push(at, "permit_mynetworks", "mynetworks is not set, so Postfix computes it (mynetworks_style); mxscreen's default lists.allow (loopback, RFC 1918, CGNAT, link-local, ULA) stands in for it");
        return;
    };
    let (value, _) = param(cf, "mynetworks", notes);
    for item in maincf::items(&value) {
        if host_bits(item) {
            notes.push(&setting.at, format!("mynetworks: {item}"), "a prefix with host bits set: Postfix fails the lookup (\"non-null host address bits\") and postscreen ignores the rest of its access list; translated as the prefix, fix it in main.cf");
        }
        match net(item) {
            Some(net) => entries.push(Entry {
                net,
                permit: true,
                at: format!("{} (mynetworks)", setting.at),
                in_feed: false,
            }),
            None => notes.push(
                &setting.at,
                format!("mynetworks: {item}"),
                "not an address or prefix (a table or file of them is not read); not translated",
            ),
        }
    }
}

/// An address or prefix as Postfix writes it (`[2001:db8::]/32`, `::ffff:192.0.2.0/120`),
/// IPv4-mapped IPv6 as the IPv4 it is.
fn net(text: &str) -> Option<IpNet> {
    let text = text.replace(['[', ']'], "");
    let net: IpNet = match text.parse() {
        Ok(n) => n,
        Err(_) => IpNet::from(text.parse::<std::net::IpAddr>().ok()?),
    };
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return IpNet::new(v4.into(), v6.prefix_len() - 96)
            .ok()
            .map(|n| n.trunc());
    }
    Some(net.trunc())
}

/// Whether a cidr table's `address/len` has bits set past `len` (`192.0.2.1/24`).
fn host_bits(pattern: &str) -> bool {
    let text = pattern.trim_start_matches('!').replace(['[', ']'], "");
    text.parse::<IpNet>().is_ok_and(|n| n != n.trunc())
}

/// One `type:table` of the access list.
fn table(item: &str, at: &str, enforced: bool, entries: &mut Vec<Entry>, d: &mut Draft) {
    let bare = item.strip_prefix("proxy:").unwrap_or(item);
    let Some((kind @ ("cidr" | "texthash"), path)) = bare.split_once(':') else {
        d.notes.push(at, format!("postscreen_access_list: {item}"), "only cidr: and texthash: tables are read (a database or service table cannot be); not translated");
        return;
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            d.notes.push(
                at,
                format!("postscreen_access_list: {item}"),
                &format!("cannot read {path}: {e}; not translated"),
            );
            return;
        }
    };
    let first = entries.len();
    let mut plain = Path::new(path).is_absolute();
    for (i, line) in text.lines().enumerate() {
        let line_at = format!("{path}:{}", i + 1);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t'])
            || t.starts_with(['!', '['])
            || t.starts_with("if ")
            || t == "endif"
        {
            plain = false;
        }
        let mut words = t.split_whitespace();
        let (Some(pattern), Some(result)) = (words.next(), words.next()) else {
            d.notes.push(&line_at, t, "a key without a result; skipped");
            continue;
        };
        let permit = match result.to_ascii_lowercase().as_str() {
            "permit" => true,
            "reject" => false,
            "dunno" => {
                d.notes.push(
                    &line_at,
                    t,
                    "dunno: mxscreen lists have no exceptions; skipped",
                );
                continue;
            }
            _ => {
                d.notes.push(
                    &line_at,
                    t,
                    "a result other than permit, reject or dunno; skipped",
                );
                continue;
            }
        };
        if host_bits(pattern) {
            // Not copied as a feed either: the feed would read the prefix.
            plain = false;
            d.notes.push(&line_at, t, "a prefix with host bits set: Postfix skips this rule (\"non-null host address bits\"); skipped here too");
            continue;
        }
        match net(pattern.trim_start_matches('!')) {
            Some(net) if !pattern.starts_with('!') => entries.push(Entry { net, permit, at: line_at, in_feed: false }),
            _ => d.notes.push(&line_at, t, "not an address or prefix mxscreen can list (negations and if/endif blocks are not read); skipped"),
        }
    }
    let mine = &entries[first..];
    let all_permit = mine.iter().all(|e| e.permit);
    let all_reject = mine.iter().all(|e| !e.permit);
    if mine.is_empty() || !plain || kind != "cidr" || !(all_permit || (all_reject && enforced)) {
        return;
    }
    let stem = Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("access");
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let action = if all_permit { "allow" } else { "drop" };
    d.feeds.push(Feed {
        name,
        path: path.to_owned(),
        action,
        why: format!("{at}: postscreen_access_list {item}: every line {}s: a feed of the file, reloaded when it changes.", if all_permit { "permit" } else { "reject" }),
    });
    for e in &mut entries[first..] {
        e.in_feed = true;
    }
}

/// Notes each reject that postscreen reaches before a permit covering some of the same
/// addresses: here the allow wins.
fn conflicts(entries: &[Entry], notes: &mut Notes) {
    for (i, r) in entries.iter().enumerate().filter(|(_, e)| !e.permit) {
        for p in entries[i + 1..].iter().filter(|e| e.permit) {
            if p.net.contains(&r.net) || r.net.contains(&p.net) {
                notes.push(&r.at, format!("reject {}", r.net), &format!("postscreen rejects it before reaching the permit of {} at {}; in mxscreen an allow wins over a deny", p.net, p.at));
            }
        }
    }
}
