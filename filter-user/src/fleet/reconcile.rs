//! The reconciliation rule, for manual entries made while hosts were apart (or at the same
//! moment): **the latest change of a key wins** — a key being one address or prefix in one
//! list (`block 192.0.2.0/24` and `allow 192.0.2.0/24` are two keys) — and a removal is a
//! change like any other, kept as a tombstone (in Redis and here) so that an `unblock`
//! made on one host is not undone by another host that still holds the block. Changes are
//! ordered by their wall-clock time in milliseconds, then by host name (bytes), so every
//! host and Redis pick the same winner.
//!
//! A manual entry always beats a verdict: they live in different maps and the datapath
//! looks at allow, then deny, then verdicts. Verdicts themselves need no rule: the newest
//! evaluation of an address replaces the key.
//!
//! The rule is applied twice with the same order: in Redis, atomically, by
//! [`SET_IF_NEWER`] (so two hosts writing one key at once cannot both win), and here by
//! [`Mirror::offer`] for what arrives on the change channel (so a change that lost in Redis
//! is not applied late by a slow subscriber).

use std::collections::HashMap;

use ipnet::IpNet;

use super::wire::{Keys, SharedManual};
use crate::datapath::ListKind;

/// Whether change `a` is later than change `b` of the same key.
pub fn later(a: &SharedManual, b: &SharedManual) -> bool {
    (a.changed_ms, a.host.as_bytes()) > (b.changed_ms, b.host.as_bytes())
}

/// Stores a manual record unless Redis holds a later change of its key, and publishes it
/// when stored. KEYS: the entry's key, the change channel. ARGV: the record, its
/// changed_ms, its host, the key's TTL in ms (0 = none), the latest changed_ms the writer
/// accepts (`wire::latest_past`). Returns 1 if stored, else the value held. An existing
/// value that does not parse loses (it is overwritten), and so does one whose change is
/// further ahead of the writer's clock than a host accepts (`wire::MAX_AHEAD`): the hosts
/// ignore it as malformed, so it must not keep their changes out of Redis either. Host
/// names compare byte by byte, as in [`later`], not by the server's locale.
pub const SET_IF_NEWER: &str = r#"
local function later(a_ms, a_host, b_ms, b_host)
  if a_ms ~= b_ms then return a_ms > b_ms end
  for i = 1, math.min(#a_host, #b_host) do
    local x, y = string.byte(a_host, i), string.byte(b_host, i)
    if x ~= y then return x > y end
  end
  return #a_host > #b_host
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' and type(c.changed_ms) == 'number' and type(c.host) == 'string'
     and c.changed_ms <= tonumber(ARGV[5])
     and not later(tonumber(ARGV[2]), ARGV[3], c.changed_ms, c.host) then
    return cur
  end
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"#;

/// The fleet task's view of every manual key: this host's entries and the fleet's, with
/// tombstones. Seeded from the state file at start, it is what a (re)joining host offers
/// Redis, and the referee for changes arriving on the channel.
#[derive(Debug)]
pub struct Mirror {
    keys: Keys,
    entries: HashMap<String, SharedManual>,
}

impl Mirror {
    pub fn new(keys: Keys) -> Self {
        Self {
            keys,
            entries: HashMap::new(),
        }
    }

    /// Takes `m` if it is later than what is held for its key; returns whether it did.
    pub fn offer(&mut self, m: &SharedManual) -> bool {
        let key = self.keys.manual(m.list, m.net);
        match self.entries.get(&key) {
            Some(held) if !later(m, held) => false,
            _ => {
                self.entries.insert(key, m.clone());
                true
            }
        }
    }

    /// The change held for a key.
    pub fn held(&self, list: ListKind, net: IpNet) -> Option<&SharedManual> {
        self.entries.get(&self.keys.manual(list, net))
    }

    /// Forgets expired entries and tombstones past their lifetime.
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|_, m| {
            if m.removed {
                m.tombstone_until() > now_ms
            } else {
                m.expires_ms().is_none_or(|e| e > now_ms)
            }
        });
    }

    pub fn all(&self) -> impl Iterator<Item = &SharedManual> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ms: u64, host: &str, removed: bool) -> SharedManual {
        SharedManual {
            list: ListKind::Deny,
            net: "203.0.113.7/32".parse().unwrap(),
            reason: Some(format!("by {host}")),
            created: ms / 1000,
            expires: None,
            host: host.into(),
            changed_ms: ms,
            removed,
            force: false,
        }
    }

    /// Two hosts apart: mx1 unblocks at t=2s, mx2 re-blocks at t=3s. Whatever order the
    /// changes arrive in, the block from mx2 wins everywhere; the other way round, the
    /// tombstone does.
    #[test]
    fn latest_change_wins_in_any_order() {
        let keys = Keys::new("mx");
        let unblock = change(2000, "mx1", true);
        let reblock = change(3000, "mx2", false);
        for order in [[&unblock, &reblock], [&reblock, &unblock]] {
            let mut m = Mirror::new(keys.clone());
            m.offer(&change(1000, "mx1", false));
            for c in order {
                m.offer(c);
            }
            assert_eq!(m.all().next().unwrap(), &reblock);
        }
        let late_unblock = change(4000, "mx1", true);
        let mut m = Mirror::new(keys.clone());
        assert!(m.offer(&reblock));
        assert!(m.offer(&late_unblock));
        assert!(!m.offer(&reblock), "an earlier change never comes back");
        assert!(m.all().next().unwrap().removed);
    }

    #[test]
    fn same_millisecond_is_decided_by_host_name_bytes() {
        let a = change(5000, "MX-b", false);
        let b = change(5000, "mx-a", true);
        // 'm' (0x6d) > 'M' (0x4d): byte order, whatever the locale says.
        assert!(later(&b, &a) && !later(&a, &b));
        assert!(!later(&a, &a), "a change is not later than itself");
    }

    #[test]
    fn prune_drops_expired_entries_and_old_tombstones() {
        let mut m = Mirror::new(Keys::new("mx"));
        let mut expiring = change(1000, "mx1", false);
        expiring.expires = Some(10);
        m.offer(&expiring);
        let mut tomb = change(1000, "mx1", true);
        tomb.net = "203.0.113.8/32".parse().unwrap();
        m.offer(&tomb);
        m.prune(9_000);
        assert_eq!(m.len(), 2);
        m.prune(10_000);
        assert_eq!(m.len(), 1, "the entry expired");
        m.prune(1000 + super::super::wire::TOMBSTONE_TTL.as_millis() as u64);
        assert_eq!(m.len(), 0, "the tombstone lived its lifetime");
    }

    /// QA: `"expires":20000000000000000` (seconds) overflowed `e * 1000` here and killed
    /// the fleet task. The bus refuses such a record now; the arithmetic holds regardless.
    #[test]
    fn prune_survives_any_expiry() {
        let mut m = Mirror::new(Keys::new("mx"));
        let mut far = change(1000, "mx1", false);
        far.expires = Some(20_000_000_000_000_000);
        m.offer(&far);
        let mut tomb = far.clone();
        tomb.removed = true;
        tomb.net = "203.0.113.8/32".parse().unwrap();
        m.offer(&tomb);
        m.prune(u64::MAX - 1);
        assert_eq!(m.len(), 1, "the entry lives on, the tombstone is pruned");
    }
}
