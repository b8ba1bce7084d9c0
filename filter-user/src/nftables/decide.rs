//! The decision maps (`decide4`, `decide6`): for every source whose decision one exact
//! element makes — its verdict, or a /32 or /128 entry of a list or a feed — the chain that
//! decision goes to, *with the precedence already resolved here*, so its SYNs cost one
//! lookup instead of one per table and prefix length in use.
//!
//! A source goes into the map only when no prefix of a table looked up before its deciding
//! element covers it (an allow /64 over a verdict, a deny /48 over an allow feed's /128...);
//! such a source is left to the walk of the prefix sets, which decides it as before. So an
//! element's timeout is that of its deciding element, and when a covering prefix expires in
//! the kernel the walk still answers right (only slower). Every write that can change a
//! source's resolution re-resolves the sources it covers, in the same transaction.
//!
//! The other half: the cache of unknown, reported sources (`known4/6`, filled by the rules)
//! is flushed with every list change, since any prefix may now cover one of them; a verdict
//! write removes its source from it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use anyhow::Result;
use ipnet::IpNet;

use super::{
    Nftables, counters,
    lists::{timeout_ms, verdict_chain},
    netlink::{Elem, Op, Stateful},
    ruleset::{self, OVER_RATE, TO_ALLOW, TO_DENY, V_LIMIT, feed_chain},
    sets::{Family, Kind, addr_key, decide_set, exact_set, known_set, verdict_set},
    verdicts::{action_of, verdict_elem},
};
use crate::datapath::{Prefix, PrefixSet, clock};

/// The list kinds looked up before a source's verdict, in the rules' order.
const BEFORE_VERDICT: [Kind; 5] = [
    Kind::OwnAllow,
    Kind::FeedAllow,
    Kind::OwnDeny,
    Kind::FeedDeny,
    Kind::FeedLimit,
];

/// What a decision element holds: its chain, and the deciding element's expiry (0: never).
pub type Decision = (String, u64);

/// Whose hits a source's decision element counts: its verdict's, or its own /32 or /128
/// entry's in a list of `Kind` (a feed's entries count per feed, not in the element).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Counted {
    Verdict,
    Own(Kind),
}

/// Which decision elements [`Nftables::redecide`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Rewrite {
    /// Those whose decision changed.
    Changed,
    /// Every one (their expressions changed: a new token bucket), hits carried over.
    All,
    /// Every one, for a new verdict: its hits start again.
    NewVerdict,
}

type Lengths = BTreeMap<(Kind, Family), BTreeSet<u8>>;

impl Nftables {
    /// Whether a list of `kind` (own entries or a feed) holds exactly `p`; the chain it
    /// sends `p`'s SYNs to, with its expiry.
    fn exact(&self, kind: Kind, p: Prefix) -> Option<Decision> {
        if let Some(o) = self.lists.own.get(&(kind, p)) {
            let chain = if kind == Kind::OwnAllow {
                TO_ALLOW
            } else {
                TO_DENY
            };
            return Some((chain.to_owned(), o.expires_ns));
        }
        let f = self
            .lists
            .feeds
            .iter()
            .find(|f| f.kind == kind && f.set.contains(p))?;
        Some((feed_chain(f.id), 0))
    }

    /// What decides `ip`'s SYNs if one exact element does (`None`: a prefix, or nothing).
    fn resolve(&self, ip: IpAddr, lengths: &Lengths) -> Option<Decision> {
        let f = Family::of(ip);
        for kind in BEFORE_VERDICT {
            let Some(lens) = lengths.get(&(kind, f)) else {
                continue;
            };
            for len in lens.iter().rev() {
                let p = Prefix::new(IpNet::new(ip, *len).expect("length in range"));
                if let Some(d) = self.exact(kind, p) {
                    // The longest covering prefix of the first table that has one decides.
                    return (*len == f.bits()).then_some(d);
                }
            }
        }
        let v = self.verdicts.get(&ip)?;
        Some((
            verdict_chain(v.action(), v.is_explained()).to_owned(),
            v.expires_ns,
        ))
    }

    /// The writes that bring these sources' decision elements to what they resolve to now
    /// (after the bookkeeping changed), rewriting unchanged ones too as `rewrite` says.
    ///
    /// A verdict's SYNs are counted by its decision element while it has one, else by its
    /// element in the verdict map. When a rewrite destroys a live verdict's decision element,
    /// what it counted is kept in `carried` (unless the verdict is new), and a verdict element
    /// written without a counter (`uncounted`) is written again with one.
    pub(super) fn redecide(
        &mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        rewrite: Rewrite,
    ) -> Vec<Op> {
        let lengths = self.lists.lengths();
        let mut walks = Vec::new();
        let plan: Vec<(IpAddr, Option<Decision>)> = ips
            .into_iter()
            .filter_map(|ip| {
                let want = self.resolve(ip, &lengths);
                let walk = self.walk_expiry(ip, want.as_ref());
                if self.walked.get(&ip) != walk.as_ref() {
                    walks.push((ip, walk));
                }
                let changed = self.decided.get(&ip) != want.as_ref();
                (changed || rewrite != Rewrite::Changed).then_some((ip, want))
            })
            .collect();
        // Whose hits the decision elements about to be destroyed counted (a new verdict's
        // start again).
        let losing: HashMap<IpAddr, Counted> = plan
            .iter()
            .filter_map(|(ip, _)| Some((*ip, self.counts_for(*ip)?)))
            .filter(|(_, c)| !(rewrite == Rewrite::NewVerdict && matches!(c, Counted::Verdict)))
            .collect();
        let ips: Vec<IpAddr> = losing.keys().copied().collect();
        for (ip, n) in self.decision_hits_of(&ips) {
            *self.carried.entry((ip, losing[&ip])).or_default() += n;
        }
        let mut gone: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        let mut new: BTreeMap<String, Vec<Elem>> = BTreeMap::new();
        for (ip, want) in plan {
            let set = decide_set(Family::of(ip));
            if self.decided.contains_key(&ip) {
                gone.entry(set.clone())
                    .or_default()
                    .push(Elem::key(addr_key(ip)));
            }
            match want {
                Some((chain, expires_ns)) => {
                    let mut e = self.decision_elem(ip, &chain);
                    e.timeout_ms = timeout_ms(expires_ns);
                    new.entry(set).or_default().push(e);
                    self.decided.insert(ip, (chain, expires_ns));
                }
                None => {
                    self.decided.remove(&ip);
                }
            }
            // Its verdict's SYNs no longer meet that verdict's decision element: its element
            // in the verdict map counts them from now on.
            if !self.decided_by_verdict(ip)
                && self.uncounted.remove(&ip)
                && let Some(v) = self.verdicts.get(&ip)
                && clock::remaining(v.expires_ns) != Some(Duration::ZERO)
            {
                let set = verdict_set(Family::of(ip));
                gone.entry(set.clone())
                    .or_default()
                    .push(Elem::key(addr_key(ip)));
                new.entry(set).or_default().push(verdict_elem(ip, v, true));
            }
        }
        for (ip, walk) in walks {
            let set = exact_set(Family::of(ip));
            let was = self.walked.remove(&ip).is_some();
            if was {
                gone.entry(set.clone())
                    .or_default()
                    .push(Elem::key(addr_key(ip)));
            }
            if let Some(expires_ns) = walk {
                let mut e = Elem::key(addr_key(ip));
                e.timeout_ms = timeout_ms(expires_ns);
                new.entry(set).or_default().push(e);
                self.walked.insert(ip, expires_ns);
            }
            // Its full-length feed elements, which only the whole walk looks up, are in the
            // table while it takes that walk (`Lists::feed_writes`): written as it enters
            // (destroyed first, so a stray one cannot fail the transaction), destroyed as it
            // leaves. The feeds' bookkeeping is the change's already.
            if was != walk.is_some() {
                for (set, e) in self.lists.host_elems(ip) {
                    gone.entry(set.clone())
                        .or_default()
                        .push(Elem::key(e.key.clone()));
                    if !was {
                        new.entry(set).or_default().push(e);
                    }
                }
            }
        }
        let mut ops: Vec<Op> = gone.into_iter().map(|(s, e)| Op::Destroy(s, e)).collect();
        ops.extend(new.into_iter().map(|(s, e)| Op::Add(s, e)));
        ops
    }

    /// Whether `ip`'s SYNs must take the whole walk, given its decision element `want`, and
    /// until when (0: never): `Some` if it has an exact element (its verdict, a /32 or /128
    /// entry of a list or a feed) that `want` may not decide — it has none (a shorter prefix
    /// outranks it, and that prefix may expire in the kernel first), a limit verdict's (under
    /// the rate the element does not match), or one of several (the deciding one may expire
    /// first) — until the last of them expires. See [`exact_set`].
    fn walk_expiry(&self, ip: IpAddr, want: Option<&Decision>) -> Option<u64> {
        let host = Prefix::new(IpNet::from(ip));
        let verdict = self.verdicts.get(&ip).map(|v| v.expires_ns);
        let own = [Kind::OwnAllow, Kind::OwnDeny]
            .into_iter()
            .filter_map(|k| self.lists.own.get(&(k, host)).map(|o| o.expires_ns));
        let feeds = self
            .lists
            .feeds
            .iter()
            .filter(|f| f.set.contains(host))
            .map(|_| 0);
        let expiries: Vec<u64> = verdict.into_iter().chain(own).chain(feeds).collect();
        let decides_alone = expiries.len() == 1 && want.is_some_and(|(chain, _)| chain != V_LIMIT);
        if expiries.is_empty() || decides_alone {
            return None;
        }
        Some(if expiries.contains(&0) {
            0
        } else {
            expiries.into_iter().max().unwrap_or(0)
        })
    }

    /// Whose hits `ip`'s decision element counts, if it has one and that entry or verdict
    /// is still in the bookkeeping.
    pub(super) fn counts_for(&self, ip: IpAddr) -> Option<Counted> {
        let chain = self.decided_chain(ip)?;
        if action_of(chain).is_some() {
            return self.verdicts.contains_key(&ip).then_some(Counted::Verdict);
        }
        let kind = match chain {
            TO_ALLOW => Kind::OwnAllow,
            TO_DENY => Kind::OwnDeny,
            _ => return None,
        };
        let host = Prefix::new(IpNet::from(ip));
        self.lists
            .own
            .contains_key(&(kind, host))
            .then_some(Counted::Own(kind))
    }

    /// What decision elements of `ip` counted for `whose` before rewrites destroyed them.
    pub(super) fn carried(&self, ip: IpAddr, whose: Counted) -> u64 {
        self.carried.get(&(ip, whose)).copied().unwrap_or(0)
    }

    /// The SYNs these sources' decision elements decided so far. A failed read counts
    /// nothing: hits are reports, never decisions.
    fn decision_hits_of(&self, ips: &[IpAddr]) -> HashMap<IpAddr, u64> {
        self.decide_hits_of(ips).unwrap_or_else(|e| {
            tracing::debug!(error = %format!("{e:#}"), "reading the decision maps' hits");
            HashMap::new()
        })
    }

    /// The element deciding `ip` with `chain`: it counts its hits (a verdict's or an own
    /// entry's, which `check`, `list` and the balancer read), and a limit verdict's carries
    /// the source's token bucket, so the one lookup decides a source over its rate (to
    /// `over_rate`); under it the lookup does not match, and the walk finds the verdict and
    /// passes the SYN through the meter as before (`bucket`), at most `limit_rate` a minute
    /// per source.
    ///
    /// A feed's entry has no counter of its own: its SYNs are counted per feed, in its
    /// chain's named counter, and nothing reads an entry's. One would cost a per-CPU
    /// allocation (16 bytes a CPU: 1 GiB for a million-/32 feed on 64 CPUs) and a cache
    /// miss on every SYN it decides.
    ///
    /// The kernel runs an element's expressions in order and stops at the first that does
    /// not match: the bucket goes before the counter, so a SYN under the rate (which the
    /// walk then counts in the verdict map's element) is not counted here as well.
    fn decision_elem(&self, ip: IpAddr, chain: &str) -> Elem {
        let mut e = Elem::key(addr_key(ip));
        if chain == V_LIMIT {
            e.goto = Some(OVER_RATE.to_owned());
            e.stateful.push(Stateful::LimitOver {
                per_minute: self.shape.limit_per_minute,
                burst: u32::try_from(self.shape.limit_burst).unwrap_or(u32::MAX),
            });
        } else {
            e.goto = Some(chain.to_owned());
        }
        if !ruleset::is_feed_chain(chain) {
            e.stateful.push(Stateful::Counter);
        }
        e
    }

    /// Rewrites the limit verdicts' decision elements (their buckets carry the rate and
    /// burst, which just changed).
    pub(super) fn limits_changed(&mut self) -> Vec<Op> {
        let limited: Vec<IpAddr> = self
            .decided
            .iter()
            .filter(|(_, (c, _))| c == V_LIMIT)
            .map(|(ip, _)| *ip)
            .collect();
        self.redecide(limited, Rewrite::All)
    }

    /// The writes that follow a change of list prefixes (after the bookkeeping took it):
    /// the sources they cover (`ips`, [`Nftables::covered_by`]) re-resolved, and the cache
    /// of unknown sources emptied.
    pub(super) fn list_changed(&mut self, ips: &[IpAddr]) -> Vec<Op> {
        let mut ops = self.redecide(ips.iter().copied(), Rewrite::Changed);
        ops.extend(self.flush_known());
        ops
    }

    /// Every source a decision element could be about that a prefix of `changed` covers:
    /// the same before and after the bookkeeping takes the change (a host entry covers
    /// itself either way).
    pub(super) fn covered_by(&self, changed: &[&PrefixSet]) -> Vec<IpAddr> {
        let ips: BTreeSet<IpAddr> = changed.iter().flat_map(|c| self.covered(c)).collect();
        ips.into_iter().collect()
    }

    /// Empties both families' caches of unknown sources.
    pub(super) fn flush_known(&self) -> Vec<Op> {
        let Some(a) = &self.applied else {
            return Vec::new();
        };
        Family::ALL
            .iter()
            .map(|f| Op::Flush(known_set(a, *f)))
            .collect()
    }

    /// Every source a decision element could be about that a prefix of `changed` covers.
    fn covered(&self, changed: &PrefixSet) -> Vec<IpAddr> {
        let mut exact = Vec::new();
        let mut shorter: BTreeMap<Family, BTreeSet<u8>> = BTreeMap::new();
        for p in changed.iter() {
            let net = p.net();
            if net.prefix_len() == net.max_prefix_len() {
                exact.push(net.addr());
            } else {
                shorter
                    .entry(Family::of(net.addr()))
                    .or_default()
                    .insert(net.prefix_len());
            }
        }
        if shorter.is_empty() {
            return exact;
        }
        let under = |ip: &IpAddr| {
            shorter.get(&Family::of(*ip)).is_some_and(|lens| {
                lens.iter().any(|l| {
                    changed.contains(Prefix::new(IpNet::new(*ip, *l).expect("length in range")))
                })
            })
        };
        let candidates = self
            .verdicts
            .keys()
            .chain(self.decided.keys())
            .copied()
            .chain(self.lists.own.keys().map(|(_, p)| p.net()).filter_map(host))
            .chain(
                self.lists
                    .feeds
                    .iter()
                    .flat_map(|f| f.set.iter().map(Prefix::net).filter_map(host)),
            );
        let mut out: BTreeSet<IpAddr> = candidates.filter(under).collect();
        out.extend(exact);
        out.into_iter().collect()
    }

    /// The SYNs the decision elements of these sources decided, whatever the maps' size (a
    /// million-/32 feed decides in them too): gets of those elements, never a dump.
    pub(super) fn decide_hits_of(&self, ips: &[IpAddr]) -> Result<HashMap<IpAddr, u64>> {
        let mut out = HashMap::new();
        for f in Family::ALL {
            let of: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| Family::of(*ip) == f)
                .collect();
            out.extend(counters::elements_hits(
                &self.netns,
                &self.shape.table,
                &decide_set(f),
                &of,
            )?);
        }
        Ok(out)
    }

    /// The chain `ip`'s decision element sends to, if it has one.
    pub(super) fn decided_chain(&self, ip: IpAddr) -> Option<&str> {
        self.decided.get(&ip).map(|(c, _)| c.as_str())
    }
}

/// The address of a host prefix (/32, /128).
pub(super) fn host(net: IpNet) -> Option<IpAddr> {
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}
