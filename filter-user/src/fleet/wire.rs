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

use crate::{
    config::fleet::check_name,
    datapath::ListKind,
    state::{MAX_ENTRY_TTL, ManualEntry},
};

/// A record longer than this is malformed (a real one is a few hundred bytes).
pub const MAX_RECORD_BYTES: usize = 8 * 1024;
/// Longest `reason` of a manual entry, in bytes.
pub const MAX_REASON: usize = 1024;
/// Longest evidence summary of a verdict, in bytes.
pub const MAX_EVIDENCE: usize = 4096;
/// How long a removal (tombstone) is remembered, when the removed entry had no expiry of its
/// own: a host apart from the fleet for longer may bring back an entry removed meanwhile.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(30 * 86_400);
/// How far ahead of this host's clock a record's times may be: the hosts are meant to run
/// NTP, and this leaves room for one still settling after a boot. A record from further
/// ahead is malformed rather than clamped: the latest change of a key wins by its time, in
/// Redis and on every host alike (see `reconcile`), and a clamped time would be a different
/// value on each host (each clamps to its own clock), so the hosts would disagree about the
/// winner — while a record refused is refused by every host, and the log names the host
/// whose clock runs ahead.
pub const MAX_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The latest Unix millisecond a record read at `now_ms` may name as a time something
/// happened (a change, a verdict made): [`MAX_AHEAD`] from now.
pub fn latest_past(now_ms: u64) -> u64 {
    now_ms.saturating_add(millis(MAX_AHEAD))
}

/// The latest Unix millisecond a record read at `now_ms` may name as an expiry: no entry
/// lasts longer than a manual one can be made for here ([`MAX_ENTRY_TTL`]), with the same
/// room for a clock ahead.
pub fn latest_expiry(now_ms: u64) -> u64 {
    latest_past(now_ms).saturating_add(millis(MAX_ENTRY_TTL))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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

/// Parses and checks one record from the bus, with its sender when it names one.
pub fn decode(bytes: &[u8]) -> Result<Sent, Malformed> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(Malformed(format!(
            "{} bytes, more than {MAX_RECORD_BYTES}",
            bytes.len()
        )));
    }
    let sent: Sent = serde_json::from_slice(bytes).map_err(|e| Malformed(e.to_string()))?;
    sent.record.check(now_ms())?;
    if let Some(s) = &sent.sender
        && let Err(why) = check_name(&s.host)
    {
        return Err(Malformed(format!("sender {:?} {why}", s.host)));
    }
    Ok(sent)
}

/// A record as it travels: the record, and the process that last wrote or published it.
/// `sender` is absent from older hosts' records, and is not part of the record's meaning:
/// a host re-offering another host's entry (on joining) sends it as its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    #[serde(flatten)]
    pub record: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
}

/// Who sent a record: the host's fleet name and a random number drawn at each start, so a
/// process can tell its own messages from those of another host with its name (two cloned
/// VMs keeping one hostname).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    pub host: String,
    pub instance: u64,
}

impl Record {
    /// The record as `sender` writes it to Redis and the channel (`None`: as a bare
    /// record, the form older hosts wrote).
    pub fn encode(&self, sender: Option<&Sender>) -> String {
        let sent = Sent {
            record: self.clone(),
            sender: sender.cloned(),
        };
        serde_json::to_string(&sent).expect("a record serializes")
    }

    /// Checks every field of a record read at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), Malformed> {
        let bad = |m: String| Err(Malformed(m));
        let host = match self {
            Record::Verdict(v) => &v.host,
            Record::Manual(m) => &m.host,
            Record::Forget(f) => &f.host,
        };
        if let Err(why) = check_name(host) {
            return bad(format!("host {host:?} {why}"));
        }
        self.check_times(now_ms)?;
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

    /// Times something happened at most [`latest_past`], expiries at most
    /// [`latest_expiry`]: then no arithmetic on them overflows, and no host keeps an entry
    /// longer than it could make one itself.
    fn check_times(&self, now_ms: u64) -> Result<(), Malformed> {
        let happened = |field: &str, t: u64| {
            if t > latest_past(now_ms) {
                return Err(Malformed(format!(
                    "{field} is {} ahead of this host's clock, more than {} (is the clock of the host that sent it right?)",
                    ahead(t, now_ms),
                    crate::duration::format(MAX_AHEAD)
                )));
            }
            Ok(())
        };
        let expires = |field: &str, t: u64| {
            if t > latest_expiry(now_ms) {
                return Err(Malformed(format!(
                    "{field} is {} ahead, longer than an entry can last ({}, 100 years)",
                    ahead(t, now_ms),
                    crate::duration::format(MAX_ENTRY_TTL)
                )));
            }
            Ok(())
        };
        match self {
            Record::Verdict(v) => {
                happened("made_ms", v.made_ms)?;
                expires("expires_ms", v.expires_ms)
            }
            Record::Manual(m) => {
                happened("changed_ms", m.changed_ms)?;
                happened("created", m.created.saturating_mul(1000))?;
                m.expires_ms().map_or(Ok(()), |e| expires("expires", e))
            }
            Record::Forget(f) => {
                happened("changed_ms", f.changed_ms)?;
                expires("until_ms", f.until_ms)
            }
        }
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
            Record::Manual(m) => !m.removed && m.expires_ms().is_some_and(|e| e <= now_ms),
            Record::Forget(f) => f.until_ms <= now_ms,
        }
    }

    /// How long its Redis key lives: the entry's own lifetime, at most until
    /// [`latest_expiry`] (a PX Redis accepts, whatever the record says); `None` = no TTL.
    pub fn ttl(&self, now_ms: u64) -> Option<Duration> {
        let until = |ms: u64| {
            let ms = ms.min(latest_expiry(now_ms));
            Duration::from_millis(ms.saturating_sub(now_ms).max(1))
        };
        match self {
            Record::Verdict(v) => Some(until(v.expires_ms)),
            Record::Manual(m) if m.removed => Some(until(m.tombstone_until())),
            Record::Manual(m) => m.expires_ms().map(until),
            Record::Forget(f) => Some(until(f.until_ms)),
        }
    }
}

/// How far `t` is ahead of `now_ms`, for a message (to the second).
pub fn ahead(t: u64, now_ms: u64) -> String {
    crate::duration::format(Duration::from_secs(t.saturating_sub(now_ms) / 1000))
}

impl SharedVerdict {
    /// Until when (Unix ms) a host whose verdicts live at most `longest` keeps this one at
    /// `now_ms`: as the record says, but never longer than the host would keep a verdict of
    /// its own — from when it was made, nor from now (the maker's clock may run ahead).
    pub fn kept_until(&self, longest: Duration, now_ms: u64) -> u64 {
        let longest = millis(longest);
        self.expires_ms
            .min(self.made_ms.saturating_add(longest))
            .min(now_ms.saturating_add(longest))
    }
}

impl SharedManual {
    /// Unix milliseconds until which a removal is remembered: [`TOMBSTONE_TTL`] after it,
    /// or until the removed entry would have expired anyway, whichever is sooner.
    pub fn tombstone_until(&self) -> u64 {
        let t = self.changed_ms.saturating_add(millis(TOMBSTONE_TTL));
        self.expires_ms().map_or(t, |e| t.min(e))
    }

    /// The expiry in Unix milliseconds (`expires` is in seconds, as in the state file).
    pub fn expires_ms(&self) -> Option<u64> {
        self.expires.map(|e| e.saturating_mul(1000))
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

    /// `PREFIX:host:NAME`: left by a joined host, so it notices a Redis emptied under it.
    pub fn marker(&self, host: &str) -> String {
        format!("{}:host:{host}", self.prefix)
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
        assert_eq!(decode(r.encode(None).as_bytes()).unwrap().record, r);
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
        assert_eq!(decode(v.encode(None).as_bytes()).unwrap().record, v);
        assert!(v.expired(5) && !v.expired(4));
        let f = Record::Forget(SharedForget {
            net: "192.0.2.0/24".parse().unwrap(),
            host: "mx1".into(),
            changed_ms: 1,
            until_ms: 10,
        });
        assert_eq!(decode(f.encode(None).as_bytes()).unwrap().record, f);
        assert!(f.expired(10) && !f.expired(9));
        assert_eq!(Keys::new("p").of(&f), "p:forget:192.0.2.0/24");
        assert_eq!(v.ttl(4), Some(Duration::from_millis(1)));
    }

    #[test]
    fn malformed_records_are_refused() {
        let ok = Record::Manual(manual()).encode(None);
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

    /// QA: a verdict expiring 100 years ahead was applied as-is (the source dropped for
    /// 36 499 days); one from a host whose clock runs ahead lived that much longer.
    #[test]
    fn a_shared_verdict_is_kept_no_longer_than_this_host_keeps_its_own() {
        let hour = 3_600_000;
        let v = |made_ms: u64, expires_ms: u64| SharedVerdict {
            ip: "192.0.2.7".parse().unwrap(),
            action: Action::Drop,
            source: Reason::Reputation,
            score: 10,
            evidence: String::new(),
            expires_ms,
            host: "mx2".into(),
            made_ms,
            fcrdns: false,
        };
        let six = Duration::from_secs(6 * 3600);
        let now = 100 * hour;
        assert_eq!(v(now, now + hour).kept_until(six, now), now + hour);
        assert_eq!(v(now, u64::MAX).kept_until(six, now), now + 6 * hour);
        assert_eq!(
            v(now - 5 * hour, now + 5 * hour).kept_until(six, now),
            now + hour
        );
        // Made "in the future" by a clock ahead: from now at most.
        assert_eq!(
            v(now + 2 * hour, now + 8 * hour).kept_until(six, now),
            now + 6 * hour
        );
    }

    /// QA: `"expires":18446744073709551` was taken (and then failed every join: its PX was
    /// out of Redis's range), `20000000000000000` overflowed `e * 1000`; a change one day
    /// ahead of the clock beat every later change.
    #[test]
    fn times_out_of_range_are_malformed() {
        let now = now_ms();
        let day = 86_400_000;
        let ok = |r: &Record| r.check(now).is_ok();
        let mut m = manual();
        m.changed_ms = now;
        m.created = now / 1000;
        assert!(ok(&Record::Manual(m.clone())));
        for expires in [18_446_744_073_709_551, 20_000_000_000_000_000, u64::MAX] {
            let r = Record::Manual(SharedManual {
                expires: Some(expires),
                ..m.clone()
            });
            assert!(!ok(&r), "{expires}");
            assert!(r.ttl(now).unwrap() <= MAX_ENTRY_TTL + MAX_AHEAD);
            assert!(!r.expired(now));
        }
        let longest = (latest_expiry(now)) / 1000;
        assert!(ok(&Record::Manual(SharedManual {
            expires: Some(longest),
            ..m.clone()
        })));
        let ahead_by = |ms: u64| {
            Record::Manual(SharedManual {
                changed_ms: now + ms,
                ..m.clone()
            })
        };
        assert!(ok(&ahead_by(60_000)), "a clock a minute ahead is tolerated");
        let e = ahead_by(day).check(now).unwrap_err().to_string();
        assert!(
            e.contains("changed_ms is 1d ahead of this host's clock"),
            "{e}"
        );
        let created = Record::Manual(SharedManual {
            created: u64::MAX,
            ..m.clone()
        });
        assert!(!ok(&created));
        let f = |changed_ms, until_ms| {
            Record::Forget(SharedForget {
                net: "192.0.2.0/24".parse().unwrap(),
                host: "mx1".into(),
                changed_ms,
                until_ms,
            })
        };
        assert!(ok(&f(now, now + day)));
        assert!(!ok(&f(now + day, now + 2 * day)));
        assert!(!ok(&f(now, u64::MAX)));
    }

    #[test]
    fn the_sender_travels_beside_the_record() {
        let r = Record::Manual(manual());
        let me = Sender {
            host: "mx1".into(),
            instance: u64::MAX,
        };
        let sent = decode(r.encode(Some(&me)).as_bytes()).unwrap();
        assert_eq!((sent.record, sent.sender), (r.clone(), Some(me)));
        // An older host's record has none.
        assert_eq!(decode(r.encode(None).as_bytes()).unwrap().sender, None);
        let bad = r
            .encode(None)
            .replacen('{', r#"{"sender":{"host":"mx 1","instance":1},"#, 1);
        assert!(decode(bad.as_bytes()).is_err());
    }

    #[test]
    fn mapped_addresses_are_read_as_ipv4() {
        let mut m = manual();
        m.net = "::ffff:192.0.2.0/120".parse().unwrap();
        let r = decode(Record::Manual(m.clone()).encode(None).as_bytes())
            .unwrap()
            .record;
        assert_eq!(Keys::new("p").of(&r), "p:block:::ffff:192.0.2.0/120");
        let Record::Manual(got) = r.unmapped().unwrap() else {
            panic!("a manual record")
        };
        assert_eq!(got.net, "192.0.2.0/24".parse::<IpNet>().unwrap());
        m.net = "::ffff:0:0/64".parse().unwrap();
        assert!(Record::Manual(m).unmapped().is_err());

        let text = r#"{"kind":"verdict","ip":"::ffff:192.0.2.25","action":"drop","source":"reputation","score":10,"evidence":"","expires_ms":5,"host":"mx2","made_ms":1}"#;
        let Record::Verdict(v) = decode(text.as_bytes()).unwrap().record.unmapped().unwrap() else {
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
