//! The prefix lists in the table: entries of one's own (operators', the config's, the host's,
//! network verdicts), each an element with its expiry and a counter of its own, and feeds,
//! whose prefixes point to their feed's chain (one counter per feed). A prefix listed by two
//! feeds of one kind points to the first loaded; when that one drops it, it is pointed to the
//! next. A feed's /32 and /128 prefixes are in their length's map only for the sources of
//! the exact set, the one walk that looks them up (every other one's decision element decides
//! it): a feed of host addresses is held once, in the decision map. This file computes the
//! element writes; [`super::Nftables`] applies them, after the rules have a set for every
//! length in use.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use filter_common::{Action, Reason};
use ipnet::IpNet;

use super::{
    decide::host,
    netlink::{Elem, Op},
    ruleset::{V_DROP, V_EXPLAIN, V_LIMIT, V_PASS, feed_chain},
    sets::{Family, Kind, key},
};
use crate::datapath::{Prefix, PrefixSet, clock};

/// An entry of one's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Own {
    pub reason: Reason,
    /// Datapath-clock expiry (CLOCK_MONOTONIC_COARSE ns); 0 = never.
    pub expires_ns: u64,
    /// A network verdict's action.
    pub action: Action,
}

/// A feed as the table holds it.
pub struct Feed {
    pub id: u32,
    pub name: String,
    pub kind: Kind,
    pub set: PrefixSet,
}

#[derive(Default)]
pub struct Lists {
    pub own: HashMap<(Kind, Prefix), Own>,
    pub feeds: Vec<Feed>,
    /// Elements per set: the lengths in use.
    pub count: HashMap<(Kind, Family, u8), u64>,
    next_feed: u32,
}

/// The family of a prefix.
pub fn family(p: Prefix) -> Family {
    match p {
        Prefix::V4(..) => Family::V4,
        Prefix::V6(..) => Family::V6,
    }
}

/// The chain a verdict's or a network verdict's element sends packets to: `explained` for a
/// source's reputation `drop` marked for explaining (`PeerVerdict::is_explained`), as the
/// eBPF datapath explains; a network verdict never is.
pub fn verdict_chain(action: Action, explained: bool) -> &'static str {
    match action {
        Action::Pass => V_PASS,
        Action::Limit => V_LIMIT,
        Action::Drop if explained => V_EXPLAIN,
        Action::Drop => V_DROP,
    }
}

/// Milliseconds until a datapath-clock expiry (at least 1: an entry written already expired
/// lives a millisecond); `None` for "never".
pub fn timeout_ms(expires_ns: u64) -> Option<u64> {
    clock::remaining(expires_ns).map(|d| (d.as_millis() as u64).max(1))
}

impl Lists {
    /// The lengths in use, per kind and family (what the rules look up).
    pub fn lengths(&self) -> BTreeMap<(Kind, Family), BTreeSet<u8>> {
        let mut out: BTreeMap<(Kind, Family), BTreeSet<u8>> = BTreeMap::new();
        for ((k, f, l), n) in &self.count {
            if *n > 0 {
                out.entry((*k, *f)).or_default().insert(*l);
            }
        }
        out
    }

    /// Lists holding nothing that number the feeds as these do (a feed's id names its chain
    /// and counter): what a table written again starts from, each feed then loaded anew.
    pub fn emptied(&self) -> Self {
        Self {
            feeds: self
                .feeds
                .iter()
                .map(|f| Feed {
                    id: f.id,
                    name: f.name.clone(),
                    kind: f.kind,
                    set: PrefixSet::default(),
                })
                .collect(),
            next_feed: self.next_feed,
            ..Self::default()
        }
    }

    /// Feeds by id with their kind (what the rules give a chain each).
    pub fn feed_kinds(&self) -> BTreeMap<u32, Kind> {
        self.feeds.iter().map(|f| (f.id, f.kind)).collect()
    }

    /// The element of an own entry.
    fn own_elem(kind: Kind, p: Prefix, o: &Own) -> Elem {
        let mut e = Elem::key(key(p.net()));
        e.timeout_ms = timeout_ms(o.expires_ns);
        if kind == Kind::Network {
            e.goto = Some(verdict_chain(o.action, false).to_owned());
        }
        e
    }

    /// Sets an own entry; the writes that make the table hold it, `None` for an entry set
    /// again as it was (left alone: a rewrite restarts its element's hit counter, and the
    /// daemon sets every entry again at each reload).
    pub fn own_set(&mut self, kind: Kind, net: IpNet, o: Own) -> Option<Vec<Op>> {
        let p = Prefix::new(net);
        let set = kind.set(family(p), p.prefix_len());
        let elem = Self::own_elem(kind, p, &o);
        match self.own.insert((kind, p), o) {
            Some(old) if old == o => None,
            // Replaced: the old element goes first (its data or expiry may differ).
            Some(_) => Some(vec![
                Op::Destroy(set.clone(), vec![Elem::key(elem.key.clone())]),
                Op::Add(set, vec![elem]),
            ]),
            None => {
                self.counted(kind, p, true);
                Some(vec![Op::Add(set, vec![elem])])
            }
        }
    }

    /// Removes an own entry; `None` if there was none.
    pub fn own_remove(&mut self, kind: Kind, net: IpNet) -> Option<Vec<Op>> {
        let p = Prefix::new(net);
        self.own.remove(&(kind, p))?;
        self.counted(kind, p, false);
        let set = kind.set(family(p), p.prefix_len());
        Some(vec![Op::Destroy(set, vec![Elem::key(key(p.net()))])])
    }

    fn counted(&mut self, kind: Kind, p: Prefix, up: bool) {
        let n = self
            .count
            .entry((kind, family(p), p.prefix_len()))
            .or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    /// The feed named `name`, registered (with a fresh id and counter) if new.
    pub fn feed_index(&mut self, name: &str, kind: Kind) -> usize {
        if let Some(i) = self.feeds.iter().position(|f| f.name == name) {
            return i;
        }
        self.next_feed += 1;
        self.feeds.push(Feed {
            id: self.next_feed,
            name: name.to_owned(),
            kind,
            set: PrefixSet::default(),
        });
        self.feeds.len() - 1
    }

    /// The feed whose chain a prefix of `kind` points to, with feed `i` listing it or not.
    fn owner(&self, kind: Kind, p: Prefix, i: usize, has: bool) -> Option<u32> {
        self.feeds
            .iter()
            .enumerate()
            .find(|(j, f)| f.kind == kind && if *j == i { has } else { f.set.contains(p) })
            .map(|(_, f)| f.id)
    }

    /// Refuses, before anything is written, additions to feed `i` that would take a set past
    /// `limit` elements (so a feed too big is refused whole and its last load stays).
    pub fn fits(&self, i: usize, added: &PrefixSet, limit: u32) -> anyhow::Result<()> {
        let kind = self.feeds[i].kind;
        let mut new: HashMap<(Family, u8), u64> = HashMap::new();
        for p in added.iter() {
            if self.owner(kind, p, i, false).is_none() {
                *new.entry((family(p), p.prefix_len())).or_default() += 1;
            }
        }
        for ((f, len), n) in new {
            let held = self.count.get(&(kind, f, len)).copied().unwrap_or(0);
            if held + n > u64::from(limit) {
                anyhow::bail!(
                    "feed {}: {n} new /{len} prefixes do not fit beside the {held} held ({limit} at most: datapath.maps.deny + allow); its last load stays",
                    self.feeds[i].name
                );
            }
        }
        Ok(())
    }

    /// The writes that take feed `i` from listing the prefixes `ps` to not (`has` false) or
    /// the other way round; the feed's set itself is not changed.
    ///
    /// A full-length prefix (/32, /128) is counted (its length is in use, its set declared)
    /// but written only for a source of `walked`, the exact set: every other source's
    /// decision element decides it and its walk skips the full-length sets, so the element
    /// would only take memory and make every commit's loop check longer (a million-/32
    /// feed was held twice). [`Lists::host_elems`] writes and removes a source's as it
    /// enters and leaves the exact set.
    pub fn feed_writes(
        &mut self,
        i: usize,
        ps: &PrefixSet,
        has: bool,
        walked: &HashMap<IpAddr, u64>,
    ) -> Vec<Op> {
        let kind = self.feeds[i].kind;
        let mut adds: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        let mut dels: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        let mut destroys: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        for p in ps.iter() {
            let before = self.owner(kind, p, i, !has);
            let after = self.owner(kind, p, i, has);
            if before == after {
                continue;
            }
            match (before, after) {
                (None, Some(_)) => self.counted(kind, p, true),
                (Some(_), None) => self.counted(kind, p, false),
                _ => {}
            }
            let host = host(p.net());
            if host.is_some_and(|ip| !walked.contains_key(&ip)) {
                continue;
            }
            let set = kind.set(family(p), p.prefix_len());
            let k = key(p.net());
            if before.is_some() {
                // A host element is there only by the exact set's bookkeeping: destroyed, so
                // a slip in it costs an element, never the whole transaction.
                let gone = if host.is_some() {
                    &mut destroys
                } else {
                    &mut dels
                };
                gone.entry(set.clone())
                    .or_default()
                    .push(Elem::key(k.clone()));
            }
            if let Some(id) = after {
                let mut e = Elem::key(k);
                e.goto = Some(feed_chain(id));
                adds.entry(set).or_default().push(e);
            }
        }
        let mut ops: Vec<Op> = dels.into_iter().map(|(s, e)| Op::Delete(s, e)).collect();
        ops.extend(destroys.into_iter().map(|(s, e)| Op::Destroy(s, e)));
        ops.extend(adds.into_iter().map(|(s, e)| Op::Add(s, e)));
        ops
    }

    /// The full-length feed elements of `ip`, by set: one per kind some feed lists it in,
    /// pointing to the first loaded's chain. They are in the table while `ip` is in the
    /// exact set (the only walk that looks them up), and only then ([`Lists::feed_writes`]).
    pub fn host_elems(&self, ip: IpAddr) -> Vec<(String, Elem)> {
        let p = Prefix::new(IpNet::from(ip));
        Kind::ALL
            .into_iter()
            .filter(|k| !k.counts())
            .filter_map(|kind| {
                let f = self
                    .feeds
                    .iter()
                    .find(|f| f.kind == kind && f.set.contains(p))?;
                let mut e = Elem::key(key(p.net()));
                e.goto = Some(feed_chain(f.id));
                Some((kind.set(family(p), p.prefix_len()), e))
            })
            .collect()
    }
}
