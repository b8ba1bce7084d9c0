//! What travels on the fleet bus: one JSON record per shared entry, stored under its own
//! Redis key (with the entry's TTL) and published whole on the change channel, so a
//! receiver never needs a second round trip. Anything read from the bus goes through
//! [`decode`], which bounds its size and checks every field; the daemon then checks the
//! entry exactly as it checks a local one.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use filter_common::{Action, Reason};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{config::fleet::check_name, datapath::ListKind, state::ManualEntry};

/// A record longer than this is malformed (a real one is a few hundred bytes).
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
/// Longest `reason` of a manual entry, in bytes.
pub const MAX_REASON: usize = 1024;
/// Longest evidence summary of a verdict, in bytes.
pub const MAX_EVIDENCE: usize = 4096;
/// How long a removal (tombstone) is remembered, when the removed entry had no expiry of its
/// own: a host apart from the fleet for longer may bring back an entry removed meanwhile.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// One shared entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Verdict(SharedVerdict),
    Manual(SharedManual),
    /// `mxscreen forget`: the verdicts inside a prefix made before it are void (a tombstone
    /// for verdicts; see `super::forget`).
    Forget(SharedForget),
}

/// A `forget` made on one host: every verdict for an address inside `net` made before
/// `changed_ms` is void, on every host and in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedForget {
    pub net: IpNet,
    /// The host it was made on.
    pub host: String,
    /// Unix milliseconds of the forget.
    pub changed_ms: u64,
    /// Unix milliseconds until which it is remembered: as long as a verdict made before it
    /// can live.
    pub until_ms: u64,
}

/// A reputation verdict one host made, for every host's verdict map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedVerdict {
    pub ip: IpAddr,
    pub action: Action,
    /// `reputation` or `tempfail` (config-list verdicts are each host's own).
    pub source: Reason,
    pub score: i32,
    /// The evidence summary of the verdict log line (`Verdict::reasons`).
    pub evidence: String,
    /// Unix milliseconds.
    pub expires_ms: u64,
    /// The host that evaluated it.
    pub host: String,
    /// Unix milliseconds.
    pub made_ms: u64,
    /// The sender's reverse DNS was forward-confirmed (each host applies its own
    /// `policy.explain_to`). Absent from older hosts' records: not confirmed.
    #[serde(default)]
    pub fcrdns: bool,
}

/// A manual block or allow (or its removal: a tombstone) made on one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedManual {
    pub list: ListKind,
    pub net: IpNet,
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix seconds the entry was made (as in the state file).
    pub created: u64,
    /// Unix seconds; `None` = until removed.
    #[serde(default)]
    pub expires: Option<u64>,
    /// The host the change was made on.
    pub host: String,
    /// Unix milliseconds of the change: the later change of a key wins (see `reconcile`).
    pub changed_ms: u64,
    /// A removal (`unblock`, `unallow`).
    #[serde(default)]
    pub removed: bool,
    /// A block made with --force (wider than `control.widest_block_*`).
    #[serde(default)]
    pub force: bool,
}

/// Why a record read from the bus was ignored.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses and checks one record from the bus.
pub fn decode(bytes: &[u8]) -> Result<Record, Malformed> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Malformed(format!(
            "{} bytes, more than {MAX_RECORD_BYTES}",
            bytes.len()
        )));
    }
    let record: Record = serde_json::from_slice(bytes).map_err(|e| Malformed(e.to_string()))?;
    record.check()?;
    Ok(record)
}

impl Record {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }

    fn check(&self) -> Result<(), Malformed> {
        let bad = |m: String| Err(Malformed(m));
        let host = match self {
            Record::Verdict(v) => &v.host,
            Record::Manual(m) => &m.host,
            Record::Forget(f) => &f.host,
        };
        if let Err(why) = check_name(host) {
            return bad(format!("host {host:?} {why}"));
        }
        match self {
            Record::Verdict(v) => {
                if !matches!(v.source, Reason::Reputation | Reason::Tempfail) {
                    return bad(format!(
                        "a verdict from {:?} is not shared",
                        v.source.name()
                    ));
                }
                if v.evidence.len() > MAX_EVIDENCE || v.evidence.contains(char::is_control) {
                    return bad("evidence too long or with control characters".into());
                }
            }
            Record::Manual(m) => {
                if m.net.trunc() != m.net {
                    return bad(format!("{} has host bits set", m.net));
                }
                if m.reason
                    .as_ref()
                    .is_some_and(|r| r.len() > MAX_REASON || r.contains(char::is_control))
                {
                    return bad("reason too long or with control characters".into());
                }
            }
            Record::Forget(f) => {
                if f.net.trunc() != f.net {
                    return bad(format!("{} has host bits set", f.net));
                }
            }
        }
        Ok(())
    }

    /// The record with an IPv4-mapped address (`::ffff:192.0.2.25`, which a host that kept
    /// the mapped form may have shared) as its IPv4 form, as everywhere in mxscreen
    /// ([`crate::net::unmap`]); a mapped prefix shorter than /96 is malformed. Applied after
    /// the check that a stored record is under its own key, which is the key of its form
    /// as written.
    pub fn unmapped(self) -> Result<Self, Malformed> {
        Ok(match self {
            Record::Verdict(v) => Record::Verdict(SharedVerdict {
                ip: v.ip.to_canonical(),
                ..v
            }),
            Record::Manual(m) => Record::Manual(SharedManual {
                net: crate::net::unmap(m.net).map_err(Malformed)?,
                ..m
            }),
            Record::Forget(f) => Record::Forget(SharedForget {
                net: crate::net::unmap(f.net).map_err(Malformed)?,
                ..f
            }),
        })
    }

    /// Whether the entry has expired at `now_ms` (a tombstone never "expires" this way; its
    /// key's TTL ends it).
    pub fn expired(&self, now_ms: u64) -> bool {
        match self {
            Record::Verdict(v) => v.expires_ms <= now_ms,
            Record::Manual(m) => !m.removed && m.expires.is_some_and(|e| e * 1000 <= now_ms),
            Record::Forget(f) => f.until_ms <= now_ms,
        }
    }

    /// How long its Redis key lives: the entry's own lifetime; `None` = no TTL.
    pub fn ttl(&self, now_ms: u64) -> Option<Duration> {
        let until = |ms: u64| Duration::from_millis(ms.saturating_sub(now_ms).max(1));
        match self {
            Record::Verdict(v) => Some(until(v.expires_ms)),
            Record::Manual(m) if m.removed => Some(until(m.tombstone_until())),
            Record::Manual(m) => m.expires.map(|e| until(e * 1000)),
            Record::Forget(f) => Some(until(f.until_ms)),
        }
    }
}

impl SharedManual {
    /// Unix milliseconds until which a removal is remembered: [`TOMBSTONE_TTL`] after it,
    /// or until the removed entry would have expired anyway, whichever is sooner.
    pub fn tombstone_until(&self) -> u64 {
        let t = self
            .changed_ms
            .saturating_add(TOMBSTONE_TTL.as_millis() as u64);
        self.expires.map_or(t, |e| t.min(e.saturating_mul(1000)))
    }

    /// A local state entry as the fleet carries it: `changed_ms` from its creation time, the
    /// host it was made on (this one if the state file does not say).
    pub fn from_entry(e: &ManualEntry, me: &str) -> Self {
        Self {
            list: e.list,
            net: e.net,
            reason: e.reason.clone(),
            created: e.created,
            expires: e.expires,
            host: e.origin.clone().unwrap_or_else(|| me.to_owned()),
            changed_ms: e.created.saturating_mul(1000),
            removed: false,
            force: false,
        }
    }

    /// The state-file entry for a shared one (not for a tombstone).
    pub fn to_entry(&self, me: &str) -> ManualEntry {
        ManualEntry {
            list: self.list,
            net: self.net,
            reason: self.reason.clone(),
            created: self.created,
            expires: self.expires,
            origin: (self.host != me).then(|| self.host.clone()),
        }
    }
}

/// The Redis names of one fleet: every key and the change channel start with the prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// `PREFIX:verdict:IP`
    pub fn verdict(&self, ip: IpAddr) -> String {
        format!("{}:verdict:{ip}", self.prefix)
    }

    /// `PREFIX:block:NET` or `PREFIX:allow:NET`
    pub fn manual(&self, list: ListKind, net: IpNet) -> String {
        let l = match list {
            ListKind::Deny => "block",
            ListKind::Allow => "allow",
        };
        format!("{}:{l}:{net}", self.prefix)
    }

    /// `PREFIX:forget:NET`
    pub fn forget(&self, net: IpNet) -> String {
        format!("{}:forget:{net}", self.prefix)
    }

    /// `PREFIX:claim:IP`: who is evaluating a new peer.
    pub fn claim(&self, ip: IpAddr) -> String {
        format!("{}:claim:{ip}", self.prefix)
    }

    /// `PREFIX:changes`: every change, published as its record.
    pub fn channel(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// SCAN patterns of every shared entry but the forgets.
    pub fn patterns(&self) -> [String; 3] {
        ["verdict", "block", "allow"].map(|k| format!("{}:{k}:*", self.prefix))
    }

    /// SCAN pattern of the forgets (read first on joining: they void verdicts).
    pub fn forget_pattern(&self) -> String {
        format!("{}:forget:*", self.prefix)
    }

    pub fn of(&self, r: &Record) -> String {
        match r {
            Record::Verdict(v) => self.verdict(v.ip),
            Record::Manual(m) => self.manual(m.list, m.net),
            Record::Forget(f) => self.forget(f.net),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual() -> SharedManual {
        SharedManual {
            list: ListKind::Deny,
            net: "192.0.2.0/24".parse().unwrap(),
            reason: Some("spam run".into()),
            created: 1_700_000_000,
            expires: None,
            host: "mx1".into(),
            changed_ms: 1_700_000_000_123,
            removed: false,
            force: false,
        }
    }

    #[test]
    fn records_round_trip() {
        let r = Record::Manual(manual());
        assert_eq!(decode(r.encode().as_bytes()).unwrap(), r);
        let v = Record::Verdict(SharedVerdict {
            ip: "2001:db8::7".parse().unwrap(),
            action: Action::Drop,
            source: Reason::Reputation,
            score: 10,
            evidence: "dnsbl:bl.test=listed[127.0.0.2](+10)".into(),
            expires_ms: 5,
            host: "mx2".into(),
            made_ms: 1,
            fcrdns: true,
        });
        assert_eq!(decode(v.encode().as_bytes()).unwrap(), v);
        assert!(v.expired(5) && !v.expired(4));
        let f = Record::Forget(SharedForget {
            net: "192.0.2.0/24".parse().unwrap(),
            host: "mx1".into(),
            changed_ms: 1,
            until_ms: 10,
        });
        assert_eq!(decode(f.encode().as_bytes()).unwrap(), f);
        assert!(f.expired(10) && !f.expired(9));
        assert_eq!(Keys::new("p").of(&f), "p:forget:192.0.2.0/24");
        assert_eq!(v.ttl(4), Some(Duration::from_millis(1)));
    }

    #[test]
    fn malformed_records_are_refused() {
        let ok = Record::Manual(manual()).encode();
        let cases = [
            "".to_owned(),
            "{".to_owned(),
            "[]".to_owned(),
            r#"{"kind":"verdict"}"#.to_owned(),
            r#"{"kind":"bomb","x":1}"#.to_owned(),
            ok.replace("192.0.2.0/24", "192.0.2.1/24"),
            ok.replace("192.0.2.0/24", "300.0.2.0/24"),
            ok.replace("\"mx1\"", "\"mx 1\""),
            ok.replace("\"mx1\"", "\"\""),
            ok.replace("spam run", "a\\nb"),
            ok.replace("\"deny\"", "\"maybe\""),
            ok.replace("spam run", &"x".repeat(MAX_RECORD_BYTES)),
        ];
        for c in cases {
            assert!(decode(c.as_bytes()).is_err(), "{c}");
        }
    }

    #[test]
    fn mapped_addresses_are_read_as_ipv4() {
        let mut m = manual();
        m.net = "::ffff:192.0.2.0/120".parse().unwrap();
        let r = decode(Record::Manual(m.clone()).encode().as_bytes()).unwrap();
        assert_eq!(Keys::new("p").of(&r), "p:block:::ffff:192.0.2.0/120");
        let Record::Manual(got) = r.unmapped().unwrap() else {
            panic!("a manual record")
        };
        assert_eq!(got.net, "192.0.2.0/24".parse::<IpNet>().unwrap());
        m.net = "::ffff:0:0/64".parse().unwrap();
        assert!(Record::Manual(m).unmapped().is_err());

        let text = r#"{"kind":"verdict","ip":"::ffff:192.0.2.25","action":"drop","source":"reputation","score":10,"evidence":"","expires_ms":5,"host":"mx2","made_ms":1}"#;
        let Record::Verdict(v) = decode(text.as_bytes()).unwrap().unmapped().unwrap() else {
            panic!("a verdict")
        };
        assert_eq!(v.ip, "192.0.2.25".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn tombstones_live_until_the_entry_would_have_expired() {
        let mut m = manual();
        m.removed = true;
        m.changed_ms = 0;
        let r = Record::Manual(m.clone());
        assert_eq!(r.ttl(0), Some(TOMBSTONE_TTL));
        m.expires = Some(10);
        assert_eq!(
            Record::Manual(m).ttl(4000),
            Some(Duration::from_millis(6000))
        );
        assert_eq!(Record::Manual(manual()).ttl(0), None);
    }
}
