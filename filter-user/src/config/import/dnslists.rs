//! One Exim `dnslists` condition's value (spec "Using DNS lists"): a list (`:` separated
//! unless `<X` names another separator) of items
//! `domain[,lookup-domain][(!)(=|==|&|=&)a.b.c.d,...][/key]`, and the `+include_unknown`,
//! `+exclude_unknown`, `+defer_unknown` switches.

use std::net::Ipv4Addr;

use super::{codes::Codes, exim};

/// One list item.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsList {
    /// The zone queried: the second domain of `a,b` (the first only gives the TXT).
    pub zone: String,
    /// The answer codes it is restricted to (a union), `None`: any.
    pub codes: Option<Vec<Codes>>,
    /// `!=`, `!&`: true when none of the answer's codes is in `codes`.
    pub negated: bool,
    /// `==`, `=&`: every code of a multi-address answer must match.
    pub all: bool,
    /// The key after `/`, when it is not the client's address.
    pub key: Option<String>,
    /// The item as written.
    pub text: String,
}

/// What an item or switch says.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    List(DnsList),
    /// `+include_unknown` or `+defer_unknown`: a failed lookup counts as listed / defers.
    Unknown(String),
    /// An item that does not parse, and why.
    Bad(String, String),
}

/// The items of a `dnslists` value.
pub fn parse(value: &str) -> Vec<Entry> {
    exim::list(value)
        .into_iter()
        .filter(|s| !s.is_empty())
        .filter_map(|item| match item.as_str() {
            "+exclude_unknown" => None,
            "+include_unknown" | "+defer_unknown" => Some(Entry::Unknown(item)),
            _ => Some(match list_item(&item) {
                Ok(l) => Entry::List(l),
                Err(why) => Entry::Bad(item, why),
            }),
        })
        .collect()
}

/// The keys that mean "the client's address", the default.
fn is_client_address(key: &str) -> bool {
    matches!(key, "$sender_host_address" | "${sender_host_address}")
}

fn list_item(item: &str) -> Result<DnsList, String> {
    let (head, key) = match item.split_once('/') {
        Some((h, k)) => (
            h,
            (!is_client_address(k.trim())).then(|| k.trim().to_owned()),
        ),
        None => (item, None),
    };
    let op_at = head.find(['!', '=', '&']).unwrap_or(head.len());
    let (domains, op) = head.split_at(op_at);
    let zone = domains
        .rsplit(',')
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches('.');
    if zone.is_empty() || zone.contains('$') || hickory_proto::rr::Name::from_ascii(zone).is_err() {
        return Err(format!(
            "{zone:?} is not a DNS domain (an expansion cannot be read here)"
        ));
    }
    let negated = op.starts_with('!');
    let op = op.trim_start_matches('!');
    let (kind, values) = [("==", "="), ("=&", "&"), ("=", "="), ("&", "&")]
        .iter()
        .find_map(|(prefix, kind)| op.strip_prefix(prefix).map(|v| ((*prefix, *kind), v)))
        .map_or((("", ""), ""), |x| x);
    let codes = if kind.1.is_empty() {
        None
    } else {
        let mut set = Vec::new();
        for v in values.split(',').map(str::trim) {
            let a: Ipv4Addr = v
                .parse()
                .map_err(|_| format!("{v:?} is not an IPv4 address"))?;
            set.push(if kind.1 == "&" {
                Codes::bitmask(a)
            } else {
                Codes::address(a)
            });
        }
        Some(set)
    };
    Ok(DnsList {
        zone: zone.to_ascii_lowercase(),
        codes,
        negated,
        all: matches!(kind.0, "==" | "=&"),
        key,
        text: item.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(v: &str) -> Vec<DnsList> {
        parse(v)
            .into_iter()
            .map(|e| match e {
                Entry::List(l) => l,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn items_with_codes_keys_and_separators() {
        let l = lists(
            "zen.spamhaus.org=127.0.0.2,127.0.0.3 : bl.spamcop.net/$sender_host_address : list.dnswl.org&0.0.0.2",
        );
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].zone, "zen.spamhaus.org");
        assert_eq!(l[0].codes.as_ref().unwrap().len(), 2);
        assert_eq!((l[1].codes.is_none(), l[1].key.is_none()), (true, true));
        let mask = &l[2].codes.as_ref().unwrap()[0];
        assert!(Codes::address("127.0.10.3".parse().unwrap()).within(*mask));
        let l =
            lists("<; sbl.spamhaus.org,sbl-xbl.spamhaus.org=127.0.0.2 ; dnsbl.example!==127.0.0.3");
        assert_eq!(l[0].zone, "sbl-xbl.spamhaus.org");
        assert!(l[1].negated && l[1].all);
        let l = lists("dsn.rfc-ignorant.org=127.0.0.2/$sender_address_domain");
        assert_eq!(l[0].key.as_deref(), Some("$sender_address_domain"));
        let l = lists("zen.spamhaus.org!&0.255.255.0");
        assert!(l[0].negated && l[0].codes.is_some());
    }

    #[test]
    fn switches_and_bad_items() {
        let e =
            parse("+include_unknown : bl.example : +exclude_unknown : $acl_c0 : zen=127.0.0.300");
        assert_eq!(e[0], Entry::Unknown("+include_unknown".into()));
        assert!(matches!(e[1], Entry::List(_)));
        assert!(matches!(e[2], Entry::Bad(..)));
        assert!(matches!(e[3], Entry::Bad(..)));
        assert_eq!(e.len(), 4);
    }
}
