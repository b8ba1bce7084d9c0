//! Reading an MTA's log into per-peer events: Exim's mainlog and Postfix's mail log (syslog
//! lines, traditional or RFC 3339 stamps). Only what the report joins on is kept — the peer's
//! address, the time and whether the MTA saw a connection, refused something (and at which
//! stage) or accepted a message. Lines that are none of these are skipped, never an error:
//! a mail log is mostly lines the report does not need.

use std::{collections::HashMap, net::IpAddr};

/// What the MTA did with a peer, as one log line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtaEvent {
    /// A new SMTP connection (Exim `SMTP connection from`, Postfix `connect from`/`CONNECT from`).
    Connected,
    /// The MTA refused the peer at `stage` (`RCPT`, `MAIL`, `DATA`, `connection`, …).
    Refused { stage: String },
    /// The MTA accepted a message from the peer (Exim `<=`, Postfix `qmgr ... from=`).
    Accepted,
}

/// One event from the log: when (seconds since the Unix epoch, UTC), from whom, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub at: u64,
    pub peer: IpAddr,
    pub event: MtaEvent,
}

/// Reads lines of either MTA's log. Postfix names the client on the `smtpd ... client=` line
/// and the acceptance on a later `qmgr ... from=` line with only the queue id, so the reader
/// remembers queue ids until their `from=` line (or forgets the oldest past a bound).
pub struct MtaLogReader {
    /// Year for syslog stamps without one (`Dec  5 07:12:01`).
    year: i64,
    /// Latest time a stamp can be (Unix s); a later one is read as of the year before.
    latest: u64,
    queued: HashMap<String, IpAddr>,
    /// Connections postscreen passed on to smtpd, per peer, not yet met by smtpd's `connect
    /// from` line: that line is the same connection, already counted at postscreen's
    /// `CONNECT`.
    handed_on: HashMap<IpAddr, u32>,
}

/// Queue ids remembered at most; a log whose `client=` lines never meet a `from=` line (a cut
/// log) must not grow the map without end.
const QUEUED_MAX: usize = 100_000;

impl MtaLogReader {
    pub fn new(year: i64) -> Self {
        Self {
            year,
            latest: u64::MAX,
            queued: HashMap::new(),
            handed_on: HashMap::new(),
        }
    }

    /// A reader for a log read at `now` (Unix s): stamps without a year are of the last 12
    /// months (a day of slack for clocks and time zones).
    pub fn at(now: u64) -> Self {
        Self {
            latest: now + 86_400,
            ..Self::new(super::time::civil(now).0)
        }
    }

    /// The event one line records, if it records one the report uses.
    pub fn read_line(&mut self, line: &str) -> Option<LogEvent> {
        if let Some((at, rest)) = exim_stamp(line) {
            return exim_event(rest).map(|(peer, event)| LogEvent { at, peer, event });
        }
        let (mut at, rest) = syslog_stamp(line, self.year)?;
        if at > self.latest
            && let Some((last_year, _)) = syslog_stamp(line, self.year - 1)
        {
            // A stamp without a year past now is from last year (December read in January).
            at = last_year;
        }
        let (program, message) = syslog_program(rest)?;
        let (peer, event) = if program.starts_with("exim") {
            // Exim logging to syslog (`log_file_path = syslog`): its line without its stamp.
            exim_event(message)?
        } else {
            self.postfix_event(program, message)?
        };
        Some(LogEvent { at, peer, event })
    }

    fn postfix_event(&mut self, program: &str, message: &str) -> Option<(IpAddr, MtaEvent)> {
        if !program.starts_with("postfix") {
            return None;
        }
        let service = program.rsplit('/').next().unwrap_or(program);
        if let Some(rest) = message.strip_prefix("connect from ") {
            let peer = postfix_client(rest)?;
            if let Some(n) = self.handed_on.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    self.handed_on.remove(&peer);
                }
                return None;
            }
            return Some((peer, MtaEvent::Connected));
        }
        if service == "postscreen"
            && let Some(rest) = ["PASS OLD ", "PASS NEW ", "WHITELISTED ", "ALLOWLISTED "]
                .iter()
                .find_map(|p| message.strip_prefix(p))
        {
            if self.handed_on.len() >= QUEUED_MAX {
                self.handed_on.clear();
            }
            *self.handed_on.entry(bracketed(rest)?).or_default() += 1;
            return None;
        }
        if let Some(rest) = message.strip_prefix("CONNECT from ") {
            return Some((bracketed(rest)?, MtaEvent::Connected));
        }
        if let Some(reject) = message.split_once("reject: ").map(|(_, r)| r) {
            // `NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 ...` (smtpd) or
            // `NOQUEUE: reject: RCPT from [192.0.2.1]:51234: 550 ...` (postscreen).
            let (stage, rest) = reject.split_once(" from ")?;
            let peer = postfix_client(rest).or_else(|| bracketed(rest))?;
            return Some((
                peer,
                MtaEvent::Refused {
                    stage: stage.to_owned(),
                },
            ));
        }
        let (queue_id, rest) = message.split_once(": ")?;
        if service == "smtpd" {
            let peer = postfix_client(rest.strip_prefix("client=")?)?;
            if self.queued.len() >= QUEUED_MAX {
                self.queued.clear();
            }
            self.queued.insert(queue_id.to_owned(), peer);
            return None;
        }
        if service == "qmgr" && rest.starts_with("from=") {
            return Some((self.queued.remove(queue_id)?, MtaEvent::Accepted));
        }
        None
    }
}

/// `2026-12-05 07:12:01 ` (Exim's default stamp), then an optional `[pid] ` (`+pid`).
fn exim_stamp(line: &str) -> Option<(u64, &str)> {
    let date = line.get(..10)?;
    let time = line.get(11..19)?;
    if line.as_bytes().get(10) != Some(&b' ') {
        return None;
    }
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    let at = unix_time(y, m, d, time)?;
    let mut rest = line.get(19..)?.trim_start();
    if let Some(after) = rest.strip_prefix('[')
        && let Some((pid, tail)) = after.split_once("] ")
        && pid.bytes().all(|b| b.is_ascii_digit())
    {
        rest = tail;
    }
    Some((at, rest))
}

fn exim_event(rest: &str) -> Option<(IpAddr, MtaEvent)> {
    if let Some(from) = rest.strip_prefix("SMTP connection from ") {
        // The opening line (`+smtp_connection`) has the count; the closing one (`... closed
        // by QUIT`, `... lost`) starts the same way and is not a second connection.
        if !from.contains("(TCP/IP connection count") {
            return None;
        }
        return Some((bracketed(from)?, MtaEvent::Connected));
    }
    // `1tAbCd-000123-AB <= a@b H=name (helo) [192.0.2.1]:51234 P=esmtp ...`; local
    // submissions (`U=` without `H=`) name no peer and are skipped.
    let mut words = rest.splitn(3, ' ');
    if let (Some(_id), Some("<="), Some(tail)) = (words.next(), words.next(), words.next()) {
        let host = tail.split_once(" H=")?.1;
        return Some((bracketed(host)?, MtaEvent::Accepted));
    }
    // `H=(helo) [192.0.2.1] F=<a@b> rejected RCPT <c@d>: ...`,
    // `H=[192.0.2.1] rejected connection in "connect" ACL`, `... rejected after DATA: ...`.
    let host = rest
        .strip_prefix("H=")
        .or_else(|| rest.split_once(" H=").map(|(_, h)| h))?;
    let peer = bracketed(host)?;
    let (_, after) = rest.split_once(" rejected ")?;
    let stage = match after.split_once(' ') {
        Some(("after", tail)) => tail.split([' ', ':']).next().unwrap_or(tail),
        Some((word, _)) => word,
        None => after,
    };
    Some((
        peer,
        MtaEvent::Refused {
            stage: stage.trim_end_matches(':').to_owned(),
        },
    ))
}

/// The first `[address]` in `text` (Exim's `[192.0.2.1]:port`, Postfix's `[2001:db8::1]`).
fn bracketed(text: &str) -> Option<IpAddr> {
    let (_, open) = text.split_once('[')?;
    let (inside, _) = open.split_once(']')?;
    inside.strip_prefix("IPv6:").unwrap_or(inside).parse().ok()
}

/// Postfix's `name[address]` client form, possibly followed by `:` or `, ...`.
fn postfix_client(text: &str) -> Option<IpAddr> {
    let word = text.split([' ', ',']).next()?;
    let word = word.trim_end_matches(':');
    if word.starts_with('[') {
        return None;
    }
    bracketed(word)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Dec  5 07:12:01 host ` (traditional syslog, year supplied) or
/// `2026-12-05T07:12:01.123456+00:00 host ` (RFC 3339, offset applied).
fn syslog_stamp(line: &str, year: i64) -> Option<(u64, &str)> {
    let (stamp, rest) = if line.as_bytes().get(4) == Some(&b'-') {
        let (stamp, rest) = line.split_once(' ')?;
        (rfc3339(stamp)?, rest)
    } else {
        let month = MONTHS.iter().position(|m| line.get(..3) == Some(m))? as i64 + 1;
        let day = line.get(4..6)?.trim().parse().ok()?;
        (
            unix_time(year, month, day, line.get(7..15)?)?,
            line.get(16..)?,
        )
    };
    let (_host, rest) = rest.split_once(' ')?;
    Some((stamp, rest))
}

fn rfc3339(stamp: &str) -> Option<u64> {
    let mut parts = stamp.get(..10)?.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    let at = unix_time(y, m, d, stamp.get(11..19)?)? as i64;
    let zone = stamp
        .get(19..)?
        .trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "Z" | "" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            // `+01:00` (RFC 3339), or `+0100` (journalctl's `short-iso` on older systemd).
            let hm = zone.get(1..)?;
            let (h, m) = hm.split_once(':').or_else(|| hm.split_at_checked(2))?;
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    u64::try_from(at - offset).ok()
}

/// `postfix/smtpd[1234]: message` → (`postfix/smtpd`, `message`).
fn syslog_program(rest: &str) -> Option<(&str, &str)> {
    let (tag, message) = rest.split_once(": ")?;
    Some((tag.split('[').next()?, message))
}

/// Seconds since the epoch of a UTC date and `HH:MM:SS` (days from civil, Howard Hinnant).
fn unix_time(y: i64, m: i64, d: i64, hms: &str) -> Option<u64> {
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn read(lines: &[&str]) -> Vec<(IpAddr, MtaEvent)> {
        let mut reader = MtaLogReader::new(2026);
        lines
            .iter()
            .filter_map(|l| reader.read_line(l))
            .map(|e| (e.peer, e.event))
            .collect()
    }

    #[test]
    fn exim_mainlog_lines() {
        let got = read(&[
            "2026-12-05 07:12:01 SMTP connection from [192.0.2.10]:51234 (TCP/IP connection count = 1)",
            "2026-12-05 07:12:02 1tXyZa-000123-AB <= alice@example.org H=(client.example) [192.0.2.10]:51234 P=esmtp S=412 id=1@example.org",
            "2026-12-05 07:12:02 1tXyZa-000123-AB => bob <bob@mx.test> R=local_user T=mail_spool",
            "2026-12-05 07:12:02 1tXyZa-000123-AB Completed",
            "2026-12-05 07:12:02 SMTP connection from (client.example) [192.0.2.10]:51234 I=[192.0.2.2]:25 closed by QUIT",
            "2026-12-05 07:12:03 [4242] H=mail.example.net [2001:db8::25]:40000 F=<x@example.net> rejected RCPT <bob@mx.test>: listed at bl.test",
            "2026-12-05 07:12:04 H=(helo) [198.51.100.7] rejected connection in \"connect\" ACL",
            "2026-12-05 07:12:05 H=(helo) [198.51.100.8]:2525 F=<a@b> rejected after DATA: spam",
            "2026-12-05 07:12:06 1tXyZb-000124-AB <= root@mx.test U=root P=local S=300",
        ]);
        assert_eq!(
            got,
            vec![
                (ip("192.0.2.10"), MtaEvent::Connected),
                (ip("192.0.2.10"), MtaEvent::Accepted),
                (
                    ip("2001:db8::25"),
                    MtaEvent::Refused {
                        stage: "RCPT".into()
                    }
                ),
                (
                    ip("198.51.100.7"),
                    MtaEvent::Refused {
                        stage: "connection".into()
                    }
                ),
                (
                    ip("198.51.100.8"),
                    MtaEvent::Refused {
                        stage: "DATA".into()
                    }
                ),
            ]
        );
    }

    #[test]
    fn postfix_mail_log_lines() {
        let got = read(&[
            "Dec  5 07:12:01 mx postfix/smtpd[1234]: connect from unknown[192.0.2.10]",
            "Dec  5 07:12:02 mx postfix/smtpd[1234]: 4F1A2B3C4D: client=unknown[192.0.2.10]",
            "Dec  5 07:12:02 mx postfix/cleanup[1240]: 4F1A2B3C4D: message-id=<1@example.org>",
            "Dec  5 07:12:02 mx postfix/qmgr[99]: 4F1A2B3C4D: from=<alice@example.org>, size=412, nrcpt=1 (queue active)",
            "Dec  5 07:12:03 mx postfix/smtpd[1235]: NOQUEUE: reject: RCPT from mail.example.net[2001:db8::25]: 554 5.7.1 Service unavailable; Client host [2001:db8::25] blocked using bl.test; from=<x@example.net> to=<bob@mx.test> proto=ESMTP helo=<mail.example.net>",
            "2026-12-05T07:12:04.123456+00:00 mx postfix/postscreen[77]: CONNECT from [198.51.100.7]:51000 to [192.0.2.1]:25",
            "2026-12-05T07:12:05+01:00 mx postfix/postscreen[77]: NOQUEUE: reject: RCPT from [198.51.100.7]:51000: 550 5.7.1 Service unavailable; client [198.51.100.7] blocked using bl.test; from=<a@b>, to=<c@d>, proto=ESMTP, helo=<x>",
            "Dec  5 07:12:06 mx postfix/qmgr[99]: 0000000000: from=<never@queued>, size=1, nrcpt=1 (queue active)",
        ]);
        assert_eq!(
            got,
            vec![
                (ip("192.0.2.10"), MtaEvent::Connected),
                (ip("192.0.2.10"), MtaEvent::Accepted),
                (
                    ip("2001:db8::25"),
                    MtaEvent::Refused {
                        stage: "RCPT".into()
                    }
                ),
                (ip("198.51.100.7"), MtaEvent::Connected),
                (
                    ip("198.51.100.7"),
                    MtaEvent::Refused {
                        stage: "RCPT".into()
                    }
                ),
            ]
        );
    }

    /// Behind postscreen, a connection it passes on is logged by smtpd as well: one
    /// connection, not two.
    #[test]
    fn postscreen_hands_connections_on_to_smtpd() {
        let got = read(&[
            "Dec  5 07:12:01 mx postfix/postscreen[77]: CONNECT from [192.0.2.10]:51000 to [192.0.2.1]:25",
            "Dec  5 07:12:01 mx postfix/postscreen[77]: PASS OLD [192.0.2.10]:51000",
            "Dec  5 07:12:01 mx postfix/smtpd[78]: connect from x.example[192.0.2.10]",
            "Dec  5 07:12:09 mx postfix/smtpd[78]: connect from x.example[192.0.2.10]",
        ]);
        assert_eq!(
            got,
            vec![
                (ip("192.0.2.10"), MtaEvent::Connected),
                (ip("192.0.2.10"), MtaEvent::Connected),
            ]
        );
    }

    #[test]
    fn stamps_are_utc_seconds() {
        let mut reader = MtaLogReader::new(2026);
        let exim =
            "2026-12-05 07:12:01 SMTP connection from [192.0.2.10]:1 (TCP/IP connection count = 1)";
        let syslog = "Dec  5 07:12:01 mx postfix/smtpd[1]: connect from x[192.0.2.10]";
        let rfc = "2026-12-05T08:12:01+01:00 mx postfix/smtpd[1]: connect from x[192.0.2.10]";
        let journal = "2026-12-05T06:12:01-0100 mx postfix/smtpd[1]: connect from x[192.0.2.10]";
        let exim_syslog = "2026-12-05T07:12:01+0000 mx exim[7]: H=[192.0.2.10]:1 rejected connection in \"connect\" ACL";
        // 2026-12-05T07:12:01Z
        for line in [exim, syslog, rfc, journal, exim_syslog] {
            assert_eq!(reader.read_line(line).unwrap().at, 1_796_454_721, "{line}");
        }
    }

    #[test]
    fn a_stamp_without_a_year_is_of_the_last_twelve_months() {
        let line = "Dec 31 23:59:00 mx postfix/smtpd[1]: connect from x[192.0.2.10]";
        // Read on 2027-01-01T00:10:00Z: last December's line.
        let mut reader = MtaLogReader::at(1_798_762_200);
        assert_eq!(reader.read_line(line).unwrap().at, 1_798_761_540);
    }

    #[test]
    fn garbage_is_skipped() {
        let got = read(&[
            "",
            "x",
            "2026-13-45 99:99:99 H=[1.2.3.4] rejected RCPT",
            "Foo 99 ...",
            "\u{1F600}\u{1F600}\u{1F600}",
        ]);
        assert!(got.is_empty());
    }
}
