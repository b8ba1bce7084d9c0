//! Source verdicts: one element per source in the verdict map of its family, sending its SYNs
//! to its action's chain, with the verdict's expiry as the element's timeout (the kernel
//! forgets it then) and its reason in the element's user data (so a daemon that restarts
//! after a crash takes the verdicts back, [`super::Nftables::open`]). The handle keeps what it
//! wrote, so reads cost no round trip; hits are read on demand from the counters of the
//! source's decision element and, where it has one, its verdict element.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result};
use filter_common::{Action, Peer, PeerVerdict, Seen, expiry::sort_key};

use super::{
    Nftables, counters,
    decide::{Counted, Rewrite},
    lists::{timeout_ms, verdict_chain},
    netlink::{Elem, Netlink, Op, Stateful},
    netns,
    ruleset::{V_DROP, V_EXPLAIN, V_LIMIT, V_PASS},
    sets::{Family, addr_key, decide_set, explained_set, known_set, source_sets, verdict_set},
};
use crate::datapath::{NewPeer, clock};

/// A family's index in [`Nftables::verdict_count`].
pub(super) fn slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The action a verdict map's chain stands for.
pub fn action_of(chain: &str) -> Option<Action> {
    match chain {
        V_PASS => Some(Action::Pass),
        V_LIMIT => Some(Action::Limit),
        V_DROP | V_EXPLAIN => Some(Action::Drop),
        _ => None,
    }
}

impl Nftables {
    /// The per-source dynamic sets (reported, held, explained) of one family in the kernel.
    fn source_sets(&self, f: Family) -> Vec<String> {
        self.applied
            .as_ref()
            .map(|a| source_sets(a, f))
            .unwrap_or_default()
    }

    /// Sets `ip`'s verdict, replacing any (a reputation `drop` explains its next SYN again).
    /// A new source's verdict into a full map makes room first ([`Nftables::make_room`]).
    pub fn verdict_set(&mut self, ip: IpAddr, v: PeerVerdict) -> Result<()> {
        let ops = self.verdict_ops(ip, v);
        self.write(ops)
            .with_context(|| format!("writing the verdict for {ip} (is the verdict map full?)"))
    }

    /// [`Nftables::verdict_set`], its kernel write held back until
    /// [`Nftables::flush_later`] or the next write of any kind, whichever comes first (the
    /// bookkeeping, which the reads answer from, takes it at once).
    ///
    /// Why: a transaction that adds an element sending SYNs to a chain (every verdict's
    /// does) makes the kernel check the whole table for loops at commit, walking every
    /// element of every verdict map the rules use — 0.24 ms with 2,000 verdicts, 0.2 s
    /// with a million-/32 feed (`cargo xtask bench nft-table`). Written one by one, a burst
    /// of verdicts would queue behind that many commits; held back, a burst costs one.
    pub fn verdict_set_later(&mut self, ip: IpAddr, v: PeerVerdict) -> Result<()> {
        let ops = self.verdict_ops(ip, v);
        self.later.push(ops);
        Ok(())
    }

    /// Writes the verdicts held back, in one transaction (as few as the socket takes).
    pub fn flush_later(&mut self) -> Result<()> {
        if self.later.is_empty() {
            return Ok(());
        }
        let later = std::mem::take(&mut self.later);
        let n = later.len();
        let ops: Vec<Op> = later.into_iter().flatten().collect();
        self.write_now(ops)
            .with_context(|| format!("writing {n} verdicts (is the verdict map full?)"))
    }

    /// The bookkeeping of `ip`'s new verdict, and the writes that bring the kernel to it.
    fn verdict_ops(&mut self, ip: IpAddr, v: PeerVerdict) -> Vec<Op> {
        let f = Family::of(ip);
        let key = addr_key(ip);
        let mut ops = Vec::new();
        if !self.verdicts.contains_key(&ip) && self.verdict_count[slot(f)] >= self.full_at() {
            ops = self.make_room(f);
        }
        ops.push(Op::Destroy(verdict_set(f), vec![Elem::key(key.clone())]));
        let explained = self.applied.as_ref().and_then(|a| explained_set(a, f));
        if v.is_explained()
            && let Some(s) = explained
        {
            ops.push(Op::Destroy(s, vec![Elem::key(key.clone())]));
        }
        if let Some(a) = &self.applied {
            ops.push(Op::Destroy(known_set(a, f), vec![Elem::key(key)]));
        }
        ops.extend(self.verdicts_written(&[(ip, v)]));
        ops
    }

    /// Sets many verdicts at once, in one write (a daemon taking back the verdicts of the
    /// table it found, or writing the table again): as [`Nftables::verdict_set`] each, for
    /// sources that hold no verdict in the kernel yet.
    pub(super) fn verdicts_restore(&mut self, all: Vec<(IpAddr, PeerVerdict)>) -> Result<()> {
        let ops = self.verdicts_written(&all);
        self.write(ops)
            .with_context(|| format!("writing {} verdicts (is the verdict map full?)", all.len()))
    }

    /// Takes these verdicts into the bookkeeping (their hits start at 0) and returns the
    /// writes of their decision and verdict elements (the old ones already gone).
    fn verdicts_written(&mut self, all: &[(IpAddr, PeerVerdict)]) -> Vec<Op> {
        for (ip, v) in all {
            let mut stored = *v;
            stored.hits = 0;
            if self.verdicts.insert(*ip, stored).is_none() {
                self.verdict_count[slot(Family::of(*ip))] += 1;
            }
            // Seen by its verdict from now on (reported.rs).
            self.reported.remove(*ip);
            self.uncounted.remove(ip);
            self.carried.remove(&(*ip, Counted::Verdict));
        }
        let mut ops = self.redecide(all.iter().map(|(ip, _)| *ip), Rewrite::NewVerdict);
        let mut elems: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        for (ip, v) in all {
            let counted = v.action() == Action::Limit || !self.decided_by_verdict(*ip);
            if !counted {
                self.uncounted.insert(*ip);
            }
            elems
                .entry(verdict_set(Family::of(*ip)))
                .or_default()
                .push(verdict_elem(*ip, v, counted));
        }
        ops.extend(elems.into_iter().map(|(s, e)| Op::Add(s, e)));
        ops
    }

    /// Whether `ip`'s decision element is its verdict's (not a list's or a feed's, and not
    /// missing because a prefix decides it).
    pub(super) fn decided_by_verdict(&self, ip: IpAddr) -> bool {
        self.decided_chain(ip)
            .is_some_and(|c| action_of(c).is_some())
    }

    /// The SYNs `ip`'s verdict decided: in its decision element, in the verdict map's (while
    /// a list prefix that covers it is in the bookkeeping), and in decision elements of it
    /// that were rewritten or removed since it was set.
    fn verdict_hits(&self, ip: IpAddr) -> u64 {
        let d = if self.decided_by_verdict(ip) {
            self.element_hits(&decide_set(Family::of(ip)), ip)
        } else {
            0
        };
        d + self.element_hits(&verdict_set(Family::of(ip)), ip) + self.carried(ip, Counted::Verdict)
    }

    /// `ip`'s verdict (expired or not), with the SYNs it decided and, for an explained drop,
    /// when its next SYN is let through to be explained.
    pub fn verdict_get(&self, ip: IpAddr) -> Result<Option<PeerVerdict>> {
        let Some(mut v) = self.verdicts.get(&ip).copied() else {
            return Ok(None);
        };
        v.hits = self.verdict_hits(ip);
        v.explain_at_ns = self.explained_at(ip, &v);
        Ok(Some(v))
    }

    /// When `ip`'s next SYN is explained (the eBPF datapath's `explain_at_ns`; 0: its next
    /// one): while the explained set holds it, its SYNs are dropped, and the set's element
    /// is written by the kernel too (the rule that lets one through adds it), so only the
    /// kernel knows how long it has left.
    fn explained_at(&self, ip: IpAddr, v: &PeerVerdict) -> u64 {
        let Some(set) = (self.applied.as_ref())
            .filter(|_| v.is_explained())
            .and_then(|a| explained_set(a, Family::of(ip)))
        else {
            return 0;
        };
        let left = netns::within(&self.netns, || {
            Netlink::open(&self.shape.table)?.element_expiry(&set, &addr_key(ip))
        });
        match left {
            Ok(Some(Some(ms))) => clock::now_ns().saturating_add(ms.saturating_mul(1_000_000)),
            Ok(_) => 0,
            Err(e) => {
                tracing::debug!(%ip, error = %format!("{e:#}"), "reading the explained set");
                0
            }
        }
    }

    /// `ip`'s verdict as written (expired or not), without hits (no netlink read).
    pub fn verdict_held(&self, ip: IpAddr) -> Option<PeerVerdict> {
        self.verdicts.get(&ip).copied()
    }

    /// What is held for `ip`: its verdict as written (expired or not), without hits (no
    /// netlink read), and the report of a source without one ([`super::reported`]). A
    /// source with a verdict counts as seen, whether or not a report of it is held: the
    /// table keeps no first contact a restart or an old report could be told by.
    pub fn peer(&self, ip: IpAddr) -> Option<Peer> {
        let verdict = self.verdicts.get(&ip);
        let seen = self.reported.get(ip);
        if verdict.is_none() && seen.is_none() {
            return None;
        }
        let mut p = Peer::empty();
        if let Some(v) = verdict {
            p.set_verdict(v);
        }
        let seen = seen.unwrap_or(Seen {
            first_seen_ns: 1,
            last_event_ns: 0,
        });
        p.first_seen_ns = seen.first_seen_ns;
        p.last_event_ns = seen.last_event_ns;
        Some(p)
    }

    /// The daemon was told of these new peers (NFLOG): those without a verdict are held as
    /// seen until theirs is written ([`super::reported`]).
    pub fn peers_reported(&mut self, peers: &[NewPeer]) {
        for p in peers {
            if !self.verdicts.contains_key(&p.ip) {
                self.reported.note(p.ip, p.at_ns);
            }
        }
    }

    /// The MTA refused `ip` with its explained `drop` (that was its explanation): it goes
    /// into the explained set until `next_ns`, so its next SYN is dropped until then. `false`
    /// when `ip` holds no such verdict (or explanations are off: nothing to note).
    pub fn explained_until(&mut self, ip: IpAddr, next_ns: u64) -> Result<bool> {
        if !self.verdicts.get(&ip).is_some_and(|v| v.is_explained()) {
            return Ok(false);
        }
        let Some(set) = self
            .applied
            .as_ref()
            .and_then(|a| explained_set(a, Family::of(ip)))
        else {
            return Ok(false);
        };
        let mut elem = Elem::key(addr_key(ip));
        elem.timeout_ms = super::backend::explain_timeout_ms(next_ns);
        if elem.timeout_ms.is_none() {
            return Ok(true);
        }
        self.write(vec![
            Op::Destroy(set.clone(), vec![Elem::key(addr_key(ip))]),
            Op::Add(set, vec![elem]),
        ])
        .with_context(|| format!("noting the explanation of {ip}"))?;
        Ok(true)
    }

    /// The hits of `ip`'s element in `set` (0 once it expired, or if it has none).
    fn element_hits(&self, set: &str, ip: IpAddr) -> u64 {
        counters::one_element_hits(&self.netns, &self.shape.table, set, ip)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Removes `ip`'s verdict; `false` if it had none. It stays reported (its next SYN is not
    /// reported again within the dedup window).
    pub fn verdict_remove(&mut self, ip: IpAddr) -> Result<bool> {
        let Some(ops) = self.verdicts_gone(&[ip]) else {
            return Ok(false);
        };
        self.write(ops)?;
        Ok(true)
    }

    /// Takes these sources' verdicts out of the bookkeeping; the writes that take them out
    /// of the table (`None`: none of them had one).
    fn verdicts_gone(&mut self, ips: &[IpAddr]) -> Option<Vec<Op>> {
        let mut ops = Vec::new();
        for ip in ips {
            if self.verdicts.remove(ip).is_none() {
                continue;
            }
            self.verdict_count[slot(Family::of(*ip))] -= 1;
            self.uncounted.remove(ip);
            self.carried.remove(&(*ip, Counted::Verdict));
            ops.push(Op::Destroy(
                verdict_set(Family::of(*ip)),
                vec![Elem::key(addr_key(*ip))],
            ));
        }
        if ops.is_empty() {
            return None;
        }
        ops.extend(self.redecide(ips.iter().copied(), Rewrite::Changed));
        Some(ops)
    }

    /// How many verdicts of one family the verdict map holds.
    pub(super) fn full_at(&self) -> usize {
        self.shape.verdicts as usize
    }

    /// Room in `f`'s full verdict map for new verdicts: the eBPF datapath's per-source map is
    /// an LRU that evicts by itself, a verdict map refuses an element over its size. The
    /// 1/64 of the family's verdicts that matter least go, in the transaction of the new one:
    /// pass verdicts before the others (a source that loses one is evaluated again at its
    /// next SYN), then the soonest to expire. Once per 1/64 of the map's size, a walk of
    /// its verdicts.
    fn make_room(&mut self, f: Family) -> Vec<Op> {
        let mut candidates: Vec<(bool, u64, IpAddr)> = self
            .verdicts
            .iter()
            .filter(|(ip, _)| Family::of(**ip) == f)
            .map(|(ip, v)| (v.action() != Action::Pass, sort_key(v.expires_ns), *ip))
            .collect();
        let n = (self.full_at() / 64).max(1).min(candidates.len());
        if n == 0 {
            return Vec::new();
        }
        candidates.select_nth_unstable(n - 1);
        let ips: Vec<IpAddr> = candidates[..n].iter().map(|(_, _, ip)| *ip).collect();
        tracing::info!(
            family = f.digit(),
            evicted = n,
            size = self.full_at(),
            "the nftables verdict map is full: its pass verdicts and those expiring soonest make room (datapath.maps.verdicts)"
        );
        self.verdicts_gone(&ips).unwrap_or_default()
    }

    /// Every verdict written (expired ones included until removed), without hits.
    pub fn verdicts(&self) -> Vec<(IpAddr, PeerVerdict)> {
        self.verdicts.iter().map(|(ip, v)| (*ip, *v)).collect()
    }

    /// Forgets these sources altogether — verdict, report and hold — so their next SYN is a
    /// first contact; returns how many had a verdict.
    pub fn verdicts_remove(&mut self, ips: &[IpAddr]) -> Result<usize> {
        let before = self.verdicts.len();
        let mut ops = self.verdicts_gone(ips).unwrap_or_default();
        let n = before - self.verdicts.len();
        for f in Family::ALL {
            let keys: Vec<Elem> = ips
                .iter()
                .filter(|ip| Family::of(**ip) == f)
                .map(|ip| Elem::key(addr_key(*ip)))
                .collect();
            if keys.is_empty() {
                continue;
            }
            for s in self.source_sets(f) {
                ops.push(Op::Destroy(s, keys.clone()));
            }
        }
        for ip in ips {
            self.reported.remove(*ip);
        }
        self.write(ops)?;
        Ok(n)
    }

    /// Every verdict's hits: the counters of its elements (the verdict map's, where it has
    /// one, and its decision element's) and what rewritten elements counted before. Gets of
    /// those elements only: a dump of a map costs the square of its size.
    pub fn verdict_hit_counts(&self) -> Result<std::collections::HashMap<IpAddr, u64>> {
        let mut out = std::collections::HashMap::new();
        for f in Family::ALL {
            let counted: Vec<IpAddr> = self
                .verdicts
                .keys()
                .filter(|ip| Family::of(**ip) == f && !self.uncounted.contains(ip))
                .copied()
                .collect();
            out.extend(counters::elements_hits(
                &self.netns,
                &self.shape.table,
                &verdict_set(f),
                &counted,
            )?);
        }
        let decided: Vec<IpAddr> = self
            .verdicts
            .keys()
            .filter(|ip| self.decided_by_verdict(**ip))
            .copied()
            .collect();
        for (ip, n) in self.decide_hits_of(&decided)? {
            *out.entry(ip).or_default() += n;
        }
        for ((ip, whose), n) in &self.carried {
            if *whose == Counted::Verdict {
                *out.entry(*ip).or_default() += n;
            }
        }
        Ok(out)
    }
}

/// `ip`'s element in its verdict map: its action's chain, its expiry as the element's timeout
/// and its reason as user data.
///
/// `counted` gives it a hit counter. It counts only the SYNs the source's decision element
/// does not see: a limit verdict's under its rate, and all of a source no decision element of
/// its verdict decides (a covering prefix or a list's /32 decides it, until that expires in
/// the kernel and the walk reaches the verdict). A counter is per CPU (16 bytes a CPU), so a
/// verdict whose decision element counts for it has none: see `Nftables::uncounted`.
pub(super) fn verdict_elem(ip: IpAddr, v: &PeerVerdict, counted: bool) -> Elem {
    let mut elem = Elem::key(addr_key(ip));
    elem.goto = Some(verdict_chain(v.action(), v.is_explained()).to_owned());
    elem.timeout_ms = timeout_ms(v.expires_ns);
    elem.userdata = vec![v.reason];
    if counted {
        elem.stateful.push(Stateful::Counter);
    }
    elem
}
