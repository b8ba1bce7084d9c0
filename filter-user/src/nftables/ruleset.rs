//! The table's rules, chains, counters and set declarations, written as an `nft` script and
//! applied by `nft -f -` as one transaction. They change only with the config, the screened
//! interfaces and the prefix lengths in use; the elements (what changes all the time) are
//! written over netlink ([`super::netlink`]) and survive every rewrite of the rules.
//!
//! The path of a SYN (`ingress`, on the screened interfaces, netdev family):
//!
//! ```text
//! ingress:  TCP SYN without ACK to a screened port, per family:
//!   1. @decide4/6 (one lookup, in the same rule): a source one exact element decides,
//!      precedence resolved by the daemon (decide.rs) ─► its chain: v_pass | v_limit |
//!      v_drop | v_explain | to_allow | to_deny | feed_N
//!   2. else ─► subject4 | subject6
//!           not subject: count passed_not_subject
//! subject4/6:
//!   1. @known4/6 (one lookup): unknown and already reported ─► count unknown, accept
//!   2. @exact4/6 (one lookup): a source with an exact element (a /32 or /128 entry, a
//!      verdict) its decision element may not decide ─► walk4/6, the whole walk below
//!   3. the walk, for sources a prefix decides (a lookup per length in use, longest first;
//!      the first hit decides); without the exact sets and @verdict4/6 but in walk4/6 (a
//!      feed's /32 and /128 elements are written only for the sources of @exact4/6):
//!           allow sets ─► to_allow   allow feeds ─► feed_N ─► to_allow
//!           deny sets ─► to_deny     drop feeds ─► feed_N ─► feed_drop
//!           limit feeds ─► feed_N ─► bucket (per-source token bucket) ─► over_rate
//!           @verdict4/6 ─► v_pass | v_limit ─► bucket | v_drop | v_explain
//!           network verdict sets ─► v_drop …
//!   4. unknown_peer: held (or, without hold, over the budget before: @tried) ─►
//!      report_again; seen within the dedup window ─► back into @known, unknown, accept;
//!      reported before (@returning) ─► report_back; with hold, held over both budgets
//!      and its hold over (@tried) ─► hold_over; over the first SYNs' budget ─►
//!      over_budget: into @holding (or @tried), events_over_budget ─► first_contact (the
//!      set full: unknown, accept); else add to @seen (and @holding and @recent, or
//!      @known), NFLOG "first" ─► events_emitted ─► reported
//!   report_again (hold): reported within 0.8 s (@recent) ─► first_contact; over the
//!      second budget ─► again_over_budget: into @tried, events_over_budget ─►
//!      first_contact (the set full: unknown, accept); else as above, NFLOG "again"
//!   report_again (no hold), hold_over, report_back: over the second budget ─►
//!      events_over_budget, unknown, accept; else into @seen and @known, NFLOG "again"
//!      (or "back") ─► events_emitted ─► reported_pass (never held)
//!   reported, reported_pass: into @returning ─► first_contact | unknown, accept
//!   first_contact: held (hold) | unknown, accept
//! every chain that drops (to_deny, feed_drop, over_rate, v_drop, held) drops in one rule
//! that also checks @alive and counts; without a live element ─► stale: passed_stale,
//! accept (the daemon is dead or hung)
//!
//! Each SYN meets as few rules and jumps as it can: every one costs (`bench_drop --nft`
//! measures the hand-written one-rule set given each promise beside the backend).
//!
//! Fragments: a non-first fragment has no TCP header, and never matches the ingress rule
//! (it passes, counted passed_not_subject): for IPv4 the rule says so (`ip frag-off & 0x1fff
//! == 0`), because the kernel's fast payload read takes a non-first IPv4 fragment's data
//! for a TCP header (an IPv6 one it does not). A first fragment whose TCP header is whole
//! and says SYN is screened; one too short to hold the flags never matches.
//! ```

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    time::Duration,
};

use filter_common::Counter;

use super::{
    netlink::Tally,
    sets::{
        ALIVE, Family, Kind, decide_set, exact_set, explained, known_set, meter, nft_time,
        source_sets_timed, verdict_set, walk_chain,
    },
    unknown,
};

/// Everything the script depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub table: String,
    /// Interfaces whose ingress is screened (none: the table holds no hook yet).
    pub devices: Vec<String>,
    pub ports: Vec<u16>,
    pub observe: bool,
    /// `first_contact = "hold"`: how long an unknown peer's SYNs are dropped.
    pub hold: Option<Duration>,
    pub dedup: Duration,
    /// New-peer reports a second, first SYNs and the rest each (0: unlimited).
    pub events_per_s: u32,
    /// A reputation drop lets one SYN through per this window (`None`: never).
    pub explain: Option<Duration>,
    pub limit_per_minute: u64,
    pub limit_burst: u64,
    /// The NFLOG group new peers are reported on.
    pub log_group: u16,
    /// Elements each set may hold: source verdicts and the dynamic sets (allocated on use,
    /// unlike the eBPF datapath's preallocated seen maps, so they keep the verdicts' room;
    /// a full one refuses, and the source passes), list sets.
    pub verdicts: u32,
    pub lists: u32,
    /// Prefix lengths in use per kind and family (longest first when written).
    pub lengths: BTreeMap<(Kind, Family), BTreeSet<u8>>,
    /// Feeds by id, with the kind of their entries.
    pub feeds: BTreeMap<u32, Kind>,
    /// The feed maps declared sized ([`sized_maps`]); every other feed map is unsized.
    pub sized: BTreeSet<(Kind, Family, u8)>,
}

/// A feed's map made holding at least this many prefixes is declared sized, the kernel's
/// fixed hash: its 16 MiB of buckets (for `lists` elements) then cost less than the
/// resizable hash's larger elements, and a commit's loop check walks it faster (BENCHMARKS.md,
/// "A feed's maps, unsized"). Below, unsized: a feed spread over many lengths would
/// otherwise take 16 MiB for each.
pub const SIZED_FROM: u64 = 262_144;

/// Which feed maps of `lengths` are declared sized: a map keeps what it was made as for its
/// life (`prev`, the shape applied last, says which are made), and one made now is sized if
/// its length holds [`SIZED_FROM`] prefixes or more by `count` (the writes it is made for are
/// in the bookkeeping already).
pub fn sized_maps(
    prev: Option<&Shape>,
    lengths: &BTreeMap<(Kind, Family), BTreeSet<u8>>,
    count: &HashMap<(Kind, Family, u8), u64>,
) -> BTreeSet<(Kind, Family, u8)> {
    let made = |k: Kind, f: Family, len: u8| {
        prev.is_some_and(|p| p.lengths.get(&(k, f)).is_some_and(|l| l.contains(&len)))
    };
    let mut sized = BTreeSet::new();
    for ((kind, f), lens) in lengths.iter().filter(|((k, _), _)| !k.counts()) {
        for &len in lens {
            let key = (*kind, *f, len);
            let yes = if made(*kind, *f, len) {
                prev.is_some_and(|p| p.sized.contains(&key))
            } else {
                // A full-length map holds only the exact set's sources however many its
                // feeds list (`Lists::feed_writes`): never worth the fixed hash's buckets.
                len != f.bits() && count.get(&key).copied().unwrap_or(0) >= SIZED_FROM
            };
            if yes {
                sized.insert(key);
            }
        }
    }
    sized
}

/// The chains verdict maps send packets to.
pub const V_PASS: &str = "v_pass";
pub const V_LIMIT: &str = "v_limit";
pub const V_DROP: &str = "v_drop";
pub const V_EXPLAIN: &str = "v_explain";
/// The chains of an allowed and a denied source (own entries, and allow feeds after counting).
pub const TO_ALLOW: &str = "to_allow";
pub const TO_DENY: &str = "to_deny";
/// The chain of a SYN over its source's rate (a limit verdict's decision element goes there).
pub const OVER_RATE: &str = "over_rate";

/// A feed's chain (and the named counter of its hits).
pub fn feed_chain(id: u32) -> String {
    format!("{FEED_CHAIN}{id}")
}

/// Whether `chain` is a feed's ([`feed_chain`]; not `feed_drop`, where they all go on).
pub fn is_feed_chain(chain: &str) -> bool {
    chain
        .strip_prefix(FEED_CHAIN)
        .is_some_and(|id| id.parse::<u32>().is_ok())
}

const FEED_CHAIN: &str = "feed_";

impl Shape {
    /// How long an idle source's token bucket is kept: long enough to refill.
    fn meter_timeout(&self) -> Duration {
        let refill = self.limit_burst.saturating_mul(60) / self.limit_per_minute.max(1);
        Duration::from_secs(refill.max(60))
    }

    /// The dynamic sets (name, family, timeout) this shape uses.
    fn dynamic_sets(&self) -> Vec<(String, Family, Duration)> {
        let mut v = Vec::new();
        for f in Family::ALL {
            v.push((meter(f, self), f, self.meter_timeout()));
            v.extend(
                source_sets_timed(self, f)
                    .into_iter()
                    .map(|(name, timeout)| (name, f, timeout)),
            );
        }
        v
    }

    /// What a refusing outcome does: drop, or in observe mode count that and pass.
    fn refuse(&self) -> &'static str {
        if self.observe {
            "counter name \"observe_passed\" accept"
        } else {
            "drop"
        }
    }
}

/// The chains the script always has (the base chain `ingress` comes and goes with devices).
const CHAINS: &[&str] = &[
    "stale",
    "subject4",
    "subject6",
    walk_chain(Family::V4),
    walk_chain(Family::V6),
    TO_ALLOW,
    TO_DENY,
    "feed_drop",
    "bucket",
    OVER_RATE,
    V_PASS,
    V_LIMIT,
    V_DROP,
    V_EXPLAIN,
    "held",
];

/// The script taking the table from `prev` (what was applied last; `None` for a table that
/// is not there) to `next`, as one transaction. A named counter it creates starts from its
/// entry in `seeds`, if any (`add` leaves an existing one as it is).
///
/// Only a script from `None` makes the table: one from a `prev` fails as a whole if the
/// table is gone (someone's `nft flush ruleset`), so the daemon finds out and writes all of
/// it again ([`super::Nftables::rebuild`]) rather than a table of rules without elements.
pub fn script(prev: Option<&Shape>, next: &Shape, seeds: &HashMap<String, Tally>) -> String {
    let t = &next.table;
    let mut s = String::new();
    if prev.is_none() {
        let _ = writeln!(s, "add table netdev {t}");
    }
    let names = Counter::ALL
        .iter()
        .map(|c| c.name().to_owned())
        .chain(next.feeds.keys().map(|id| feed_chain(*id)));
    for name in names {
        match seeds.get(&name) {
            Some(Tally { packets, bytes }) => {
                let _ = writeln!(
                    s,
                    "add counter netdev {t} {name} {{ packets {packets} bytes {bytes} }}"
                );
            }
            None => {
                let _ = writeln!(s, "add counter netdev {t} {name}");
            }
        }
    }
    declare_sets(&mut s, next);
    unknown::declare(&mut s, next);
    for c in CHAINS
        .iter()
        .chain(unknown::CHAINS)
        .map(|c| c.to_string())
        .chain(next.feeds.keys().map(|id| feed_chain(*id)))
    {
        let _ = writeln!(s, "add chain netdev {t} {c}\nflush chain netdev {t} {c}");
    }
    let devices_change = prev.is_none_or(|p| p.devices != next.devices);
    if let Some(p) = prev {
        if devices_change && !p.devices.is_empty() {
            let _ = writeln!(
                s,
                "flush chain netdev {t} ingress\ndelete chain netdev {t} ingress"
            );
        }
        retire(&mut s, p, next);
    }
    write_rules(&mut s, next);
    if !next.devices.is_empty() {
        let devs: Vec<String> = next.devices.iter().map(|d| format!("\"{d}\"")).collect();
        if devices_change {
            let _ = writeln!(
                s,
                "add chain netdev {t} ingress {{ type filter hook ingress devices = {{ {} }} priority -500; policy accept; }}",
                devs.join(", ")
            );
        } else {
            let _ = writeln!(s, "flush chain netdev {t} ingress");
        }
        let ports: Vec<String> = next.ports.iter().map(u16::to_string).collect();
        // One port is a compare, several an (anonymous) set lookup; none screens nothing
        // (as the eBPF datapath's empty config).
        let dport = match ports.len() {
            0 => None,
            1 => Some(ports[0].clone()),
            _ => Some(format!("{{ {} }}", ports.join(", "))),
        };
        if let Some(dport) = dport {
            for f in Family::ALL {
                let (p, subject) = (
                    f.proto(),
                    format!(
                        "meta protocol {}{} tcp flags & (syn | ack) == syn tcp dport {dport}",
                        f.proto(),
                        f.not_a_later_fragment()
                    ),
                );
                // The decision in the rule that matches the subject: a decided source (most
                // SYNs of a flood) meets one rule and one jump; the others match again.
                let _ = writeln!(
                    s,
                    "add rule netdev {t} ingress {subject} {p} saddr vmap @{}\nadd rule netdev {t} ingress {subject} goto subject{}",
                    decide_set(f),
                    f.digit()
                );
            }
        }
        let _ = writeln!(
            s,
            "add rule netdev {t} ingress counter name \"passed_not_subject\""
        );
    }
    s
}

/// Declares every set the shape uses (`add` leaves an existing set and its elements alone).
fn declare_sets(s: &mut String, next: &Shape) {
    let t = &next.table;
    let _ = writeln!(
        s,
        "add set netdev {t} {ALIVE} {{ type inet_proto; flags timeout; }}"
    );
    for f in Family::ALL {
        // No set-wide counter: a verdict's element carries one only where its decision
        // element does not count its SYNs (verdicts.rs).
        let _ = writeln!(
            s,
            "add map netdev {t} {} {{ type {} : verdict; flags timeout; size {}; }}",
            verdict_set(f),
            f.addr_type(),
            next.verdicts
        );
        // One element per source some exact element decides (a verdict, a /32 or /128
        // entry of a list or a feed): at most the verdicts and every list's exact entries.
        // No set-wide counter: each element carries its own, and a limit verdict's its
        // token bucket too (decide.rs).
        let _ = writeln!(
            s,
            "add map netdev {t} {} {{ type {} : verdict; flags timeout; size {}; }}",
            decide_set(f),
            f.addr_type(),
            next.verdicts.saturating_add(next.lists.saturating_mul(5))
        );
        // At most every source the decision map could hold.
        let _ = writeln!(
            s,
            "add set netdev {t} {} {{ type {}; flags timeout; size {}; }}",
            exact_set(f),
            f.addr_type(),
            next.verdicts.saturating_add(next.lists.saturating_mul(5))
        );
    }
    for ((kind, f), lens) in &next.lengths {
        for len in lens {
            let what = if kind.is_map() {
                format!(
                    "map netdev {t} {} {{ type {} : verdict;",
                    kind.set(*f, *len),
                    f.addr_type()
                )
            } else {
                format!(
                    "set netdev {t} {} {{ type {};",
                    kind.set(*f, *len),
                    f.addr_type()
                )
            };
            // A feed's map has no `size` unless [`sized_maps`] chose it: without timeouts a
            // sized set is the kernel's fixed hash, whose bucket array is allocated whole
            // for `size` elements (16 MiB at the default 1,114,112) however few it holds,
            // and a feed uses a map per prefix length (FireHOL level 1 and Spamhaus DROP
            // took 330 MiB). Unsized, it is a resizable hash grown with its elements;
            // `Lists::fits` bounds it.
            let extra = if kind.counts() {
                format!(" flags timeout; counter; size {};", next.lists)
            } else if next.sized.contains(&(*kind, *f, *len)) {
                format!(" size {};", next.lists)
            } else {
                String::new()
            };
            let _ = writeln!(s, "add {what}{extra} }}");
        }
    }
    for (name, f, timeout) in next.dynamic_sets() {
        let _ = writeln!(
            s,
            "add set netdev {t} {name} {{ type {}; flags dynamic,timeout; timeout {}; size {}; }}",
            f.addr_type(),
            nft_time(timeout),
            next.verdicts
        );
    }
}

/// Deletes what `prev` had and `next` has not (after every chain was flushed above, nothing
/// refers to them any more): dynamic sets of old windows, the sets of prefix lengths no
/// longer in use (emptied by the writes before), feeds' chains and counters.
fn retire(s: &mut String, prev: &Shape, next: &Shape) {
    let t = &next.table;
    for ((kind, f), lens) in &prev.lengths {
        let kept = next.lengths.get(&(*kind, *f));
        for len in lens.iter().filter(|l| kept.is_none_or(|k| !k.contains(l))) {
            let what = if kind.is_map() { "map" } else { "set" };
            let _ = writeln!(s, "delete {what} netdev {t} {}", kind.set(*f, *len));
        }
    }
    let keep: BTreeSet<String> = next.dynamic_sets().into_iter().map(|d| d.0).collect();
    for (name, _, _) in prev.dynamic_sets() {
        if !keep.contains(&name) {
            let _ = writeln!(s, "delete set netdev {t} {name}");
        }
    }
    for id in prev.feeds.keys().filter(|id| !next.feeds.contains_key(id)) {
        let c = feed_chain(*id);
        let _ = writeln!(
            s,
            "flush chain netdev {t} {c}\ndelete chain netdev {t} {c}\ndelete counter netdev {t} {c}"
        );
    }
    unknown::retire(s, prev, next);
}

fn write_rules(s: &mut String, n: &Shape) {
    let t = &n.table;
    let mut rule = |chain: &str, body: &str| {
        let _ = writeln!(s, "add rule netdev {t} {chain} {body}");
    };
    let refuse = n.refuse();
    // A refusing chain drops (and counts) only while the heartbeat's element lives; else its
    // second rule passes the SYN as stale. One rule, not a check and then a drop: each rule
    // a SYN meets costs.
    let mut refusing = |chain: &str, counter: &str| {
        rule(
            chain,
            &format!("meta l4proto @{ALIVE} counter name \"{counter}\" {refuse}"),
        );
        rule(chain, "goto stale");
    };
    refusing(TO_DENY, "dropped_deny");
    refusing("feed_drop", "dropped_feed");
    refusing(OVER_RATE, "limited");
    refusing(V_DROP, "dropped_verdict");
    refusing("held", "held");
    rule("stale", "counter name \"passed_stale\" accept");
    for f in Family::ALL {
        let (chain, p) = (format!("subject{}", f.digit()), f.proto());
        // The cache of unknown reported sources (the decision map was looked up in the
        // ingress rule): one lookup, before the walk of the prefix sets.
        rule(
            &chain,
            &format!(
                "{p} saddr @{} counter name \"unknown\" accept",
                known_set(n, f)
            ),
        );
        // A source with an exact element its decision element may not decide takes the
        // whole walk; the others skip the exact sets and the verdict map, which cannot
        // hold them (sets.rs, `exact_set`).
        rule(
            &chain,
            &format!("{p} saddr @{} goto {}", exact_set(f), walk_chain(f)),
        );
        walk(&mut rule, &chain, f, n, false);
        walk(&mut rule, walk_chain(f), f, n, true);
    }
    rule(TO_ALLOW, "counter name \"passed_allow\" accept");
    for (id, kind) in &n.feeds {
        let next = match kind {
            Kind::FeedAllow => TO_ALLOW,
            Kind::FeedLimit => "bucket",
            _ => "feed_drop",
        };
        rule(
            &feed_chain(*id),
            &format!("counter name \"{}\" goto {next}", feed_chain(*id)),
        );
    }
    for f in Family::ALL {
        rule(
            "bucket",
            &format!(
                "meta protocol {p} update @{m} {{ {p} saddr limit rate over {}/minute burst {} packets }} goto over_rate",
                n.limit_per_minute,
                n.limit_burst,
                p = f.proto(),
                m = meter(f, n)
            ),
        );
    }
    rule("bucket", "counter name \"passed_limit\" accept");
    rule(V_PASS, "counter name \"passed_verdict\" accept");
    rule(V_LIMIT, "goto bucket");
    if let Some(every) = n.explain {
        for f in Family::ALL {
            let (p, e) = (f.proto(), explained(f, every));
            rule(
                V_EXPLAIN,
                &format!("meta protocol {p} {p} saddr @{e} goto {V_DROP}"),
            );
            rule(
                V_EXPLAIN,
                &format!(
                    "meta protocol {p} add @{e} {{ {p} saddr }} counter name \"explained\" accept"
                ),
            );
        }
    }
    rule(V_EXPLAIN, &format!("goto {V_DROP}"));
    unknown::rules(&mut rule, n);
}

/// The walk of family `f`'s prefix sets in `chain`, in the datapath's precedence (the first
/// hit decides), and on to the unknown sources' rules: with the exact sets (full-length
/// prefixes of the lists and feeds) and the verdict map if `exact`, else without them.
fn walk(rule: &mut impl FnMut(&str, &str), chain: &str, f: Family, n: &Shape, exact: bool) {
    for kind in Kind::ALL {
        if kind == Kind::Network && exact {
            rule(
                chain,
                &format!("{} saddr vmap @{}", f.proto(), verdict_set(f)),
            );
        }
        let Some(lens) = n.lengths.get(&(kind, f)) else {
            continue;
        };
        // Network verdicts never decide in the decision map: all of their lengths, always.
        let skip = |len: u8| !exact && kind != Kind::Network && len == f.bits();
        for len in lens.iter().rev().filter(|l| !skip(**l)) {
            let set = kind.set(f, *len);
            let body = match kind {
                Kind::OwnAllow => format!("{} @{set} goto {TO_ALLOW}", f.source(*len)),
                Kind::OwnDeny => format!("{} @{set} goto {TO_DENY}", f.source(*len)),
                _ => format!("{} vmap @{set}", f.source(*len)),
            };
            rule(chain, &body);
        }
    }
    rule(chain, "goto unknown_peer");
}

pub use super::nft::{apply, query};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_map_is_sized_only_if_made_holding_many_and_stays_as_made() {
        let (big, small) = (
            (Kind::FeedDeny, Family::V4, 24),
            (Kind::FeedDeny, Family::V4, 16),
        );
        let own = (Kind::OwnDeny, Family::V4, 32);
        // Full length: the map holds only the exact set's sources, however many are listed.
        let hosts = (Kind::FeedDeny, Family::V4, 32);
        let lengths: BTreeMap<(Kind, Family), BTreeSet<u8>> = [
            ((Kind::FeedDeny, Family::V4), BTreeSet::from([32, 24, 16])),
            ((Kind::OwnDeny, Family::V4), BTreeSet::from([32])),
        ]
        .into();
        let mut count = HashMap::from([
            (big, SIZED_FROM),
            (small, SIZED_FROM - 1),
            (own, SIZED_FROM),
            (hosts, 10 * SIZED_FROM),
        ]);
        let made = sized_maps(None, &lengths, &count);
        // Own entries' sets have timeouts (the resizable hash whatever their size): not here.
        assert_eq!(made, BTreeSet::from([big]));
        // Made: each stays as it was made, whatever it holds now.
        let mut prev = Shape {
            lengths: lengths.clone(),
            sized: made,
            ..Shape::default()
        };
        count.insert(big, 1);
        count.insert(small, 10 * SIZED_FROM);
        assert_eq!(
            sized_maps(Some(&prev), &lengths, &count),
            BTreeSet::from([big])
        );
        // A length out of use and back is made again: by what it holds then.
        prev.lengths.clear();
        assert_eq!(
            sized_maps(Some(&prev), &lengths, &count),
            BTreeSet::from([small])
        );
    }

    #[test]
    fn feed_chains_are_told_from_the_others() {
        assert!(is_feed_chain(&feed_chain(7)));
        for c in ["feed_drop", "feed_", "feed_7x", TO_DENY, V_DROP, OVER_RATE] {
            assert!(!is_feed_chain(c), "{c}");
        }
    }
}
