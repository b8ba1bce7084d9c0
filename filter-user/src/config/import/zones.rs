//! From what a postscreen or Exim config says about each DNSBL zone ([`Item`]s: a set of
//! answer codes and a weight, possibly several per zone) to mxscreen's `[[dnsbl]]` tables,
//! where each zone is queried once and an answer code takes the weight of the first
//! `[[dnsbl.code_weights]]` class it matches.
//!
//! postscreen adds the weight of every entry whose filter a reply matches, each entry once.
//! For one answer code that is reproduced exactly when a zone's filters are disjoint or
//! nested: classes are written narrowest first, each weighing its own entry plus every entry
//! whose filter contains it. Filters that overlap without nesting, and answers of several
//! codes across nested filters, are named in a note.

use super::{codes::Codes, draft::Notes};
use crate::reputation::codes::CodeSpec;

/// One thing a config says about a zone.
#[derive(Clone, Debug)]
pub struct Item {
    /// Lower case, without a trailing dot.
    pub zone: String,
    /// The answer codes it counts (a union); `None`: any answer.
    pub codes: Option<Vec<Codes>>,
    /// Exim's `!=`/`!&`: the zone counts when none of its codes is in `codes`.
    pub negated: bool,
    pub weight: i32,
    /// How the config wrote the codes (`127.0.0.[10;11]`), for the class's label.
    pub label: String,
    /// The whole entry as the config wrote it (`zen.spamhaus.org=127.0.0.[10;11]*8`).
    pub text: String,
    /// `file:line`, where the config says it.
    pub at: String,
}

/// A `[[dnsbl]]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    pub name: String,
    pub weight: i32,
    /// Only answers matching these count (empty: any).
    pub codes: Vec<CodeSpec>,
    pub classes: Vec<Class>,
    /// Where the config says what this table says (`main.cf:12: zen.spamhaus.org*3`).
    pub sources: Vec<String>,
}

/// A `[[dnsbl.code_weights]]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    pub codes: Vec<CodeSpec>,
    pub weight: i32,
    pub label: String,
}

/// Groups `items` by zone (in the order zones first appear) and builds each zone's table;
/// `source` (`postscreen`, `exim`) names the config read in notes.
pub fn build(items: Vec<Item>, source: &str, notes: &mut Notes) -> Vec<Zone> {
    let mut order: Vec<String> = Vec::new();
    for i in &items {
        if !order.contains(&i.zone) {
            order.push(i.zone.clone());
        }
    }
    order
        .into_iter()
        .filter_map(|zone| {
            let mine: Vec<Item> = items.iter().filter(|i| i.zone == zone).cloned().collect();
            zone_table(zone, mine, source, notes)
        })
        .collect()
}

/// An item's codes as mxscreen sees them: only answers in 127.0.0.0/8 count.
fn seen(codes: &[Codes]) -> Vec<Codes> {
    codes
        .iter()
        .map(|c| c.in_loopback())
        .filter(|c| !c.is_empty())
        .collect()
}

fn specs(codes: &[Codes]) -> Option<Vec<CodeSpec>> {
    let mut out: Vec<CodeSpec> = Vec::new();
    for c in codes {
        for s in c.specs()? {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Some(out)
}

fn within(a: &[Codes], b: &[Codes]) -> bool {
    a.iter().all(|x| b.iter().any(|y| x.within(*y)))
}

fn overlaps(a: &[Codes], b: &[Codes]) -> bool {
    a.iter().any(|x| b.iter().any(|y| x.overlaps(*y)))
}

fn size(c: &[Codes]) -> u64 {
    c.iter().map(|c| c.size()).sum()
}

fn zone_table(name: String, items: Vec<Item>, source: &str, notes: &mut Notes) -> Option<Zone> {
    let mut any: Option<Item> = None;
    let mut filtered: Vec<(Item, Vec<Codes>)> = Vec::new();
    for item in merged(items) {
        match &item.codes {
            None => any = Some(item),
            Some(codes) => {
                let codes = seen(codes);
                if codes.is_empty() {
                    notes.push(&item.at, format!("{}: {}", item.zone, item.label), "matches no answer in 127.0.0.0/8, and mxscreen counts no other (an answer outside it is a resolver's rewrite, not a listing)");
                } else {
                    filtered.push((item, codes));
                }
            }
        }
    }
    let negated: Vec<usize> = (0..filtered.len())
        .filter(|i| filtered[*i].0.negated)
        .collect();
    if let Some(&n) = negated.first()
        && (filtered.len() > 1 || any.is_some())
    {
        let (item, _) = filtered.remove(n);
        notes.push(&item.at, format!("{}!={}", item.zone, item.label), "a negated code list on a zone the config also uses otherwise cannot be weighed in one [[dnsbl]] table");
    }
    let base = any.as_ref().map_or(0, |a| a.weight);
    let mut sources: Vec<String> = any
        .iter()
        .map(|a| format!("{}: {}", a.at, a.text))
        .collect();
    sources.extend(
        filtered
            .iter()
            .map(|(i, _)| format!("{}: {}", i.at, i.text)),
    );
    if let [(item, codes)] = filtered.as_slice()
        && item.negated
    {
        let Some(excluded) = specs(codes) else {
            notes.push(&item.at, &item.label, "too many answer codes to write");
            return None;
        };
        let class = Class {
            codes: excluded,
            weight: 0,
            label: format!("not {}", item.label),
        };
        return Some(Zone {
            name,
            weight: item.weight,
            codes: Vec::new(),
            classes: vec![class],
            sources,
        });
    }
    if filtered.is_empty() {
        return any.map(|a| Zone {
            name,
            weight: a.weight,
            codes: Vec::new(),
            classes: Vec::new(),
            sources,
        });
    }
    if any.is_none() && filtered.len() == 1 {
        let (item, codes) = &filtered[0];
        let Some(codes) = specs(codes) else {
            notes.push(&item.at, &item.label, "too many answer codes to write");
            return None;
        };
        return Some(Zone {
            name,
            weight: item.weight,
            codes,
            classes: Vec::new(),
            sources,
        });
    }
    note_overlaps(any.as_ref(), &filtered, source, notes);
    filtered.sort_by_key(|(_, c)| size(c));
    let mut classes = Vec::new();
    let mut all = Vec::new();
    for (i, (item, codes)) in filtered.iter().enumerate() {
        let containing: i32 = filtered
            .iter()
            .enumerate()
            .filter(|(j, (_, c))| *j != i && within(codes, c) && !within(c, codes))
            .map(|(_, (o, _))| o.weight)
            .sum();
        let Some(class_codes) = specs(codes) else {
            notes.push(&item.at, &item.label, "too many answer codes to write");
            continue;
        };
        all.extend(codes.iter().copied());
        classes.push(Class {
            codes: class_codes,
            weight: item.weight + containing + base,
            label: item.label.clone(),
        });
    }
    let codes = if any.is_some() {
        Vec::new()
    } else {
        specs(&all).unwrap_or_default()
    };
    Some(Zone {
        name,
        weight: base,
        codes,
        classes,
        sources,
    })
}

/// Items with the same codes (and negation) are one class: their weights add up.
fn merged(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for item in items {
        match out
            .iter_mut()
            .find(|o| o.codes == item.codes && o.negated == item.negated)
        {
            Some(o) => {
                o.weight += item.weight;
                o.at = format!("{}, {}", o.at, item.at);
                o.text = format!("{} {}", o.text, item.text);
            }
            None => out.push(item),
        }
    }
    out
}

/// Notes where an answer weighs otherwise than in postscreen. mxscreen adds the weight of
/// each class an answer's codes hit, once per class; the classes fold in the weight of
/// every entry whose filter holds theirs, so that one code weighs as in postscreen. An
/// answer carrying codes of two classes inside one entry (an entry without a filter holds
/// all of them, and the codes of none) then counts that entry once per class, where
/// postscreen counts it once: the model cannot say "once per answer" for a class in a class.
/// Filters that overlap without one holding the other are named too (a code in both takes
/// the class written first).
fn note_overlaps(
    any: Option<&Item>,
    filtered: &[(Item, Vec<Codes>)],
    source: &str,
    notes: &mut Notes,
) {
    for (i, (a, ca)) in filtered.iter().enumerate() {
        for (b, cb) in &filtered[i + 1..] {
            if overlaps(ca, cb) && !within(ca, cb) && !within(cb, ca) {
                let what = format!("{}: {} and {}", a.zone, a.label, b.label);
                let at = format!("{}, {}", a.at, b.at);
                notes.push(&at, what, &format!("filters that overlap without one containing the other: a code in both takes the narrower class's weight only ({source} adds both)"));
            }
        }
    }
    let mut wider: Vec<(&Item, Vec<&str>)> = Vec::new();
    if let Some(a) = any {
        let mut inner: Vec<&str> = filtered.iter().map(|(i, _)| i.label.as_str()).collect();
        inner.push("any code outside them");
        wider.push((a, inner));
    }
    for (a, ca) in filtered {
        let inner: Vec<&str> = filtered
            .iter()
            .filter(|(_, cb)| within(cb, ca) && !within(ca, cb))
            .map(|(b, _)| b.label.as_str())
            .collect();
        if !inner.is_empty() {
            wider.push((a, inner));
        }
    }
    for (outer, inner) in wider.into_iter().filter(|(o, _)| o.weight != 0) {
        let w = outer.weight;
        let effect = if w > 0 {
            format!(
                "scores more here than in {source}, and may be dropped where {source} lets it through"
            )
        } else {
            format!("scores less here than in {source}")
        };
        let holds = inner.join("; ");
        notes.push(&outer.at, format!("{}: {}", outer.zone, outer.text), &format!("an answer carrying codes of two of the classes it holds ({holds}) counts its weight {w} once for each here, once in {source}: such an answer {effect}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::import::codes::parse_postscreen_filter;

    fn item(zone: &str, filter: Option<&str>, weight: i32, line: u32) -> Item {
        Item {
            zone: zone.into(),
            codes: filter.map(|f| vec![parse_postscreen_filter(f).unwrap()]),
            negated: false,
            weight,
            label: filter.unwrap_or("any").into(),
            text: format!("{zone}={}*{weight}", filter.unwrap_or("any")),
            at: format!("main.cf:{line}"),
        }
    }

    fn classes(z: &Zone) -> Vec<(String, i32)> {
        z.classes
            .iter()
            .map(|c| {
                let codes: Vec<String> = c.codes.iter().map(ToString::to_string).collect();
                (codes.join(" "), c.weight)
            })
            .collect()
    }

    #[test]
    fn one_entry_is_a_plain_table() {
        let mut notes = Notes::default();
        let z = build(
            vec![item("bl.spamcop.net", None, 2, 1)],
            "postscreen",
            &mut notes,
        );
        assert_eq!(
            (z[0].weight, z[0].codes.len(), z[0].classes.len()),
            (2, 0, 0)
        );
        let z = build(
            vec![item("b.barracudacentral.org", Some("127.0.0.2"), 7, 1)],
            "postscreen",
            &mut notes,
        );
        assert_eq!(z[0].codes, vec!["127.0.0.2".parse().unwrap()]);
        assert!(notes.is_empty());
    }

    #[test]
    fn disjoint_entries_are_classes_of_one_zone() {
        let mut notes = Notes::default();
        let z = build(
            vec![
                item("zen", Some("127.0.0.[10;11]"), 8, 1),
                item("zen", Some("127.0.0.[4..7]"), 6, 2),
                item("zen", Some("127.0.0.3"), 4, 3),
                item("zen", Some("127.0.0.2"), 3, 4),
            ],
            "postscreen",
            &mut notes,
        );
        assert_eq!(z.len(), 1);
        assert_eq!(
            classes(&z[0]),
            [
                ("127.0.0.3".into(), 4),
                ("127.0.0.2".into(), 3),
                ("127.0.0.10/31".into(), 8),
                ("127.0.0.4/30".into(), 6)
            ]
        );
        assert_eq!(z[0].codes.len(), 4);
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn nested_entries_add_up_and_say_so() {
        let mut notes = Notes::default();
        let z = build(
            vec![
                item("zen", None, 1, 1),
                item("zen", Some("127.0.0.[2..11]"), 2, 2),
                item("zen", Some("127.0.0.2"), 4, 3),
            ],
            "postscreen",
            &mut notes,
        );
        assert_eq!(z[0].weight, 1);
        assert_eq!(
            classes(&z[0]),
            [("127.0.0.2".into(), 7), ("127.0.0.2-127.0.0.11".into(), 3)]
        );
        assert!(z[0].codes.is_empty());
        // Both wider entries can count twice for one answer (127.0.0.2 and 127.0.0.3).
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

    /// postscreen counts each entry once per answer: an entry without a filter adds its
    /// weight once, however many classes an answer hits. mxscreen cannot say that; the
    /// note names the entry and which way the score goes.
    #[test]
    fn an_entry_without_a_filter_counts_once_per_class_and_says_so() {
        let mut notes = Notes::default();
        let z = build(
            vec![
                item("zen.x.test", None, 2, 1),
                item("zen.x.test", Some("127.0.0.[10;11]"), -2, 1),
            ],
            "postscreen",
            &mut notes,
        );
        // One code scores as in postscreen: 127.0.0.10 2 - 2, 127.0.0.4 2.
        assert_eq!(z[0].weight, 2);
        assert_eq!(classes(&z[0]), [("127.0.0.10/31".into(), 0)]);
        // 127.0.0.4 and 127.0.0.10 in one answer: 2 + 0 here, 2 - 2 in postscreen.
        let notes: Vec<&String> = notes.iter().collect();
        assert_eq!(notes.len(), 1, "{notes:#?}");
        assert!(
            notes[0].starts_with("main.cf:1: zen.x.test: zen.x.test=any*2: an answer carrying codes of two of the classes it holds (127.0.0.[10;11]; any code outside them) counts its weight 2")
                && notes[0].contains("may be dropped where postscreen lets it through"),
            "{notes:#?}"
        );
    }

    #[test]
    fn duplicates_merge_and_outside_loopback_is_noted() {
        let mut notes = Notes::default();
        let z = build(
            vec![
                item("wl", Some("127.0.0.18"), -1, 1),
                item("wl", Some("127.0.0.18"), -1, 2),
                item("bogus", Some("10.0.0.1"), 3, 3),
            ],
            "postscreen",
            &mut notes,
        );
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].weight, -2);
        assert_eq!(notes.len(), 1);
    }
}
