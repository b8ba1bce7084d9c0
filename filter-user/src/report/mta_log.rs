//! Reading an MTA's log into per-peer events: Exim's mainlog ([`super::exim_log`]) and
//! Postfix's mail log (syslog lines, traditional or RFC 3339 stamps: [`super::stamps`]). Only
//! what the report joins on is kept — the peer's address, the time and whether the MTA saw a
//! connection, refused something (and at which stage) or accepted a message, and whether
//! enforcing would have screened that message at all. Lines that are none of these are
//! skipped, never an error: a mail log is mostly lines the report does not need.

use std::{collections::HashMap, net::IpAddr};

use super::{
    exim_log, stamps,
    time::{Local, Zone},
};

/// What the MTA did with a peer, as one log line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MtaEvent {
    /// A new SMTP connection (Exim `SMTP connection from`, Postfix `connect from`/`CONNECT from`).
    Connected,
    /// The MTA refused the peer at `stage` (`RCPT`, `MAIL`, `DATA`, `connection`, …).
    Refused { stage: String },
    /// The MTA accepted a message from the peer (Exim `<=`, Postfix `qmgr ... from=`).
    Accepted,
    /// The MTA accepted a message that enforcing would not have refused: from an
    /// authenticated client (Exim `A=`, Postfix `sasl_username=`) or on a port mxscreen does
    /// not screen (Exim `I=[ip]:587`).
    AcceptedUnscreened,
}

/// One event from the log: when (seconds since the Unix epoch, UTC), from whom, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub at: u64,
    pub peer: IpAddr,
    pub event: MtaEvent,
}

/// Reads lines of either MTA's log, one reader for all of them in order (rotations oldest
/// first): Postfix names the client on the `smtpd ... client=` line and the acceptance on a
/// later `qmgr ... from=` line with only the queue id, which may be in the next file after a
/// rotation; the reader remembers queue ids until their `from=` line (or forgets the oldest
/// past a bound).
pub struct MtaLogReader {
    /// Year for syslog stamps without one (`Dec  5 07:12:01`).
    year: i64,
    /// Latest time a stamp can be (Unix s); a later one is read as of the year before.
    latest: u64,
    /// Stamps without an offset are read in this zone.
    local: Local,
    /// The ports mxscreen screens (`datapath.ports`).
    ports: Vec<u16>,
    /// Queue id → the client, and whether it authenticated.
    queued: HashMap<String, (IpAddr, bool)>,
    /// Connections postscreen passed on to smtpd, per peer, not yet met by smtpd's `connect
    /// from` line: that line is the same connection, already counted at postscreen's
    /// `CONNECT`.
    handed_on: HashMap<IpAddr, u32>,
}

/// Queue ids remembered at most; a log whose `client=` lines never meet a `from=` line (a cut
/// log) must not grow the map without end.
const QUEUED_MAX: usize = 100_000;

impl MtaLogReader {
    /// A reader of stamps of `year` where they carry none, in `zone` where they carry no
    /// offset, for a host screening `ports`.
    pub fn new(year: i64, zone: Zone, ports: Vec<u16>) -> Self {
        Self {
            year,
            latest: u64::MAX,
            local: Local::new(zone),
            ports,
            queued: HashMap::new(),
            handed_on: HashMap::new(),
        }
    }

    /// A reader for a log read at `now` (Unix s): stamps without a year are of the last 12
    /// months (a day of slack for clocks and time zones), stamps without an offset in `zone`
    /// (the host's, [`Zone::Host`], for a log written on this host).
    pub fn at(now: u64, zone: Zone, ports: Vec<u16>) -> Self {
        Self {
            latest: now + 86_400,
            ..Self::new(super::time::civil(now).0, zone, ports)
        }
    }

    /// The event one line records, if it records one the report uses.
    pub fn read_line(&mut self, line: &str) -> Option<LogEvent> {
        if let Some((stamp, rest)) = stamps::exim(line) {
            let (peer, event) = exim_log::event(rest, &self.ports)?;
            let at = self.unix(stamp)?;
            return Some(LogEvent { at, peer, event });
        }
        let (stamp, rest) = stamps::syslog(line, self.year)?;
        let mut at = self.unix(stamp)?;
        if at > self.latest
            && let Some((last_year, _)) = stamps::syslog(line, self.year - 1)
        {
            // A stamp without a year past now is from last year (December read in January).
            at = self.unix(last_year)?;
        }
        let (program, message) = syslog_program(rest)?;
        let (peer, event) = if program.starts_with("exim") {
            // Exim logging to syslog (`log_file_path = syslog`): its line without its stamp.
            exim_log::event(message, &self.ports)?
        } else {
            self.postfix_event(program, message)?
        };
        Some(LogEvent { at, peer, event })
    }

    /// A stamp as Unix seconds: by its offset, else in the reader's zone.
    fn unix(&mut self, s: stamps::Stamp) -> Option<u64> {
        match s.offset {
            Some(offset) => u64::try_from(s.naive - offset).ok(),
            None => self.local.unix(s.naive),
        }
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
            // `CONNECT from [192.0.2.1]:51000 to [192.0.2.2]:25`: a port mxscreen does not
            // screen is no connection enforcing would refuse.
            let port = rest
                .rsplit_once("]:")
                .and_then(|(_, p)| p.parse::<u16>().ok());
            if port.is_some_and(|p| !self.ports.contains(&p)) {
                return None;
            }
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
            let client = rest.strip_prefix("client=")?;
            let peer = postfix_client(client)?;
            // `client=x[192.0.2.1], sasl_method=PLAIN, sasl_username=roadwarrior`: an
            // authenticated client, which enforcing does not refuse.
            let authenticated = client.contains(", sasl_username=");
            if self.queued.len() >= QUEUED_MAX {
                self.queued.clear();
            }
            self.queued
                .insert(queue_id.to_owned(), (peer, authenticated));
            return None;
        }
        if service == "qmgr" && rest.starts_with("from=") {
            let (peer, authenticated) = self.queued.remove(queue_id)?;
            let event = if authenticated {
                MtaEvent::AcceptedUnscreened
            } else {
                MtaEvent::Accepted
            };
            return Some((peer, event));
        }
        None
    }
}

/// The first `[address]` in `text` (Exim's `[192.0.2.1]:port`, Postfix's `[2001:db8::1]`).
pub(super) fn bracketed(text: &str) -> Option<IpAddr> {
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

/// `postfix/smtpd[1234]: message` → (`postfix/smtpd`, `message`).
fn syslog_program(rest: &str) -> Option<(&str, &str)> {
    let (tag, message) = rest.split_once(": ")?;
    Some((tag.split('[').next()?, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn read(lines: &[&str]) -> Vec<(IpAddr, MtaEvent)> {
        let mut reader = MtaLogReader::new(2026, Zone::Fixed(0), vec![25]);
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
        let mut reader = MtaLogReader::new(2026, Zone::Fixed(0), vec![25]);
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
        let mut reader = MtaLogReader::at(1_798_762_200, Zone::Fixed(0), vec![25]);
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

    /// Exim with `log_timezone = true`, `+millisec`, or both: every line read, the offset
    /// applied.
    #[test]
    fn exim_stamps_with_zone_and_milliseconds() {
        let mut reader = MtaLogReader::new(2026, Zone::Fixed(0), vec![25]);
        let tail = " H=(x) [192.0.2.10]:1 rejected connection in \"connect\" ACL";
        for (stamp, at) in [
            ("2026-12-05 07:12:01 +0000", 1_796_454_721),
            ("2026-12-05 07:12:01.227", 1_796_454_721),
            ("2026-12-05 08:12:01.227 +0100", 1_796_454_721),
            ("2026-12-05 02:12:01 -0500 [77]", 1_796_454_721),
        ] {
            let line = format!("{stamp}{tail}");
            assert_eq!(reader.read_line(&line).map(|e| e.at), Some(at), "{line}");
        }
    }

    /// Stamps without an offset are the writer's local time: read in the reader's zone.
    #[test]
    fn naive_stamps_are_local_time() {
        let mut reader = MtaLogReader::new(2026, Zone::Fixed(3600), vec![25]);
        for line in [
            "2026-12-05 08:12:01 SMTP connection from [192.0.2.10]:1 (TCP/IP connection count = 1)",
            "Dec  5 08:12:01 mx postfix/smtpd[1]: connect from x[192.0.2.10]",
            "2026-12-05 07:12:01 +0000 SMTP connection from [192.0.2.10]:1 (TCP/IP connection count = 1)",
        ] {
            assert_eq!(reader.read_line(line).unwrap().at, 1_796_454_721, "{line}");
        }
    }

    /// Authenticated Postfix clients (submission) are accepted apart: enforcing never
    /// refuses them. So are postscreen connections to a port mxscreen does not screen.
    #[test]
    fn postfix_authenticated_mail_is_apart() {
        let got = read(&[
            "Dec  5 07:12:02 mx postfix/submission/smtpd[1234]: 4F1A2B3C4D: client=unknown[192.0.2.30], sasl_method=PLAIN, sasl_username=roadwarrior",
            "Dec  5 07:12:02 mx postfix/qmgr[99]: 4F1A2B3C4D: from=<rw@example.org>, size=412, nrcpt=1 (queue active)",
            "Dec  5 07:12:04 mx postfix/postscreen[77]: CONNECT from [198.51.100.7]:51000 to [192.0.2.1]:2525",
        ]);
        assert_eq!(got, vec![(ip("192.0.2.30"), MtaEvent::AcceptedUnscreened)]);
    }
}
