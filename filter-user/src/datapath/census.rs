//! What the maps hold, counted: cached verdicts by action and by reason, and the entries of
//! the allow and deny lists. One walk of the maps makes a [`Census`]; the daemon keeps it up
//! to date between walks, so `stats`, `status` and a metrics scrape read numbers instead of
//! walking a million verdicts each time.

use std::net::IpAddr;

use anyhow::Result;
use filter_common::{Action, PeerVerdict, Reason};

use super::{MapSizes, Table};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Live cached verdicts, indexed like [`Action::ALL`].
    pub by_action: [u64; Action::ALL.len()],
    /// Live cached verdicts, indexed like [`Reason::ALL`].
    pub by_reason: [u64; Reason::ALL.len()],
    /// Live cached verdicts, IPv4 then IPv6: each family has a verdict map of its own, and
    /// one can fill while the other is empty.
    pub by_family: [u64; 2],
    /// Allow-list prefixes (both families).
    pub allow: u64,
    /// Deny-list prefixes (both families).
    pub deny: u64,
}

fn action_slot(a: Action) -> usize {
    Action::ALL.iter().position(|x| *x == a).unwrap_or(0)
}

fn reason_slot(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

impl Census {
    /// The lists' entries and capacity, both families: the allow and the deny entries each
    /// against the list map they share (one per family, `datapath.maps.deny + allow`
    /// entries), so a row shows the room left to both. (The verdicts: [`Self::verdict_fill`].)
    pub fn list_fill(&self, sizes: &MapSizes) -> [(&'static str, u64, u64); 2] {
        let both = u64::from(sizes.lists()) * 2;
        [("allow", self.allow, both), ("deny", self.deny, both)]
    }

    /// Each family's verdicts against its own verdict map (`datapath.maps.verdicts`).
    pub fn verdict_fill(&self, sizes: &MapSizes) -> [(&'static str, u64, u64); 2] {
        let size = u64::from(sizes.peers);
        [
            ("verdicts v4", self.by_family[0], size),
            ("verdicts v6", self.by_family[1], size),
        ]
    }

    /// The families whose verdict map is at least 90 % full, with their fill: a new verdict
    /// there pushes out the least recently used one (eBPF) or removes the least needed
    /// (nftables).
    pub fn verdicts_near_full(&self, sizes: &MapSizes) -> Vec<(&'static str, u64, u64)> {
        self.verdict_fill(sizes)
            .into_iter()
            .filter(|(_, n, size)| *size > 0 && n * 10 >= size * 9)
            .collect()
    }

    /// Counts the verdicts that are live at `now_ns` and returns the expired ones beside.
    /// (An unknown action byte counts as `pass`, the action the datapath applies.)
    pub fn count_verdicts(
        &mut self,
        maps: &dyn crate::datapath::DatapathRead,
        now_ns: u64,
    ) -> Result<Vec<IpAddr>> {
        self.by_action = Default::default();
        self.by_reason = Default::default();
        self.by_family = Default::default();
        let mut expired = Vec::new();
        maps.for_each_verdict_chunk_without_pending_hits(&mut |chunk| {
            for (ip, v) in chunk {
                if !filter_common::live(v.expires_ns, now_ns) {
                    expired.push(ip);
                } else {
                    self.add(ip.is_ipv6(), &v);
                }
            }
            true
        })?;
        Ok(expired)
    }

    /// Counts the entries of both lists.
    pub fn count_lists(&mut self, maps: &dyn crate::datapath::Datapath) -> Result<()> {
        // From the lengths index the lists keep: no map walk, even with a million-line feed.
        self.allow = maps.table_len(Table::Allow);
        // What drops or limits by prefix: manual, config and feed entries, network verdicts.
        self.deny = maps.table_len(Table::Deny)
            + maps.table_len(Table::Limit)
            + maps.table_len(Table::PrefixVerdict);
        Ok(())
    }

    /// A verdict for `ip` written over `previous` (what the map held for that address, if
    /// anything). Between two walks this keeps the counts exact except for what the kernel
    /// does on its own: LRU evictions of a full map, and verdicts expiring (both settled by
    /// the next walk).
    pub fn replace(&mut self, ip: IpAddr, previous: Option<&PeerVerdict>, new: &PeerVerdict) {
        if let Some(p) = previous {
            for n in [
                &mut self.by_action[action_slot(p.action())],
                &mut self.by_reason[reason_slot(p.reason())],
                &mut self.by_family[usize::from(ip.is_ipv6())],
            ] {
                *n = n.saturating_sub(1);
            }
        }
        self.add(ip.is_ipv6(), new);
    }

    fn add(&mut self, v6: bool, v: &PeerVerdict) {
        self.by_action[action_slot(v.action())] += 1;
        self.by_reason[reason_slot(v.reason())] += 1;
        self.by_family[usize::from(v6)] += 1;
    }

    /// `(action, count)` for every action.
    pub fn verdicts_by_action(&self) -> impl Iterator<Item = (Action, u64)> + '_ {
        Action::ALL
            .iter()
            .copied()
            .zip(self.by_action.iter().copied())
    }

    /// `(reason, count)` for every reason.
    pub fn verdicts_by_reason(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .copied()
            .zip(self.by_reason.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_a_verdict_moves_it_between_slots() {
        let mut c = Census::default();
        let limit = PeerVerdict::new(Action::Limit, Reason::Reputation, 0);
        let drop = PeerVerdict::new(Action::Drop, Reason::Manual, 0);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        c.replace(v6, None, &limit);
        assert_eq!(c.by_action.iter().sum::<u64>(), 1);
        c.replace(v6, Some(&limit), &drop);
        assert_eq!(c.by_action.iter().sum::<u64>(), 1);
        let by_action: Vec<_> = c.verdicts_by_action().collect();
        assert_eq!(
            by_action,
            vec![(Action::Pass, 0), (Action::Limit, 0), (Action::Drop, 1)]
        );
        assert_eq!(c.by_reason[reason_slot(Reason::Manual)], 1);
        assert_eq!(c.by_reason[reason_slot(Reason::Reputation)], 0);
        assert_eq!(c.by_family, [0, 1]);
        // An entry the census never saw (written by another process) does not underflow.
        c.replace("192.0.2.1".parse().unwrap(), Some(&limit), &limit);
        assert_eq!(c.by_action, [0, 1, 1]);
        assert_eq!(c.by_family, [1, 1]);
    }

    /// One family's map nearly full is said, whatever the other holds.
    #[test]
    fn a_familys_verdict_map_near_full_is_found_alone() {
        let sizes = MapSizes {
            peers: 100,
            ..MapSizes::default()
        };
        let c = Census {
            by_family: [3, 90],
            ..Census::default()
        };
        assert_eq!(c.verdicts_near_full(&sizes), vec![("verdicts v6", 90, 100)]);
        let c = Census {
            by_family: [89, 0],
            ..Census::default()
        };
        assert!(c.verdicts_near_full(&sizes).is_empty());
    }
}
