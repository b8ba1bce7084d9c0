//! Exim's mainlog lines (without their stamp) as events: `SMTP connection from`, `<=`
//! (accepted) and `rejected` lines, each naming the peer as `H=[name ][(helo) ][ip]:port`.
//! The peer is the bracket after the optional host name and parenthesised HELO — never a
//! bracket inside the HELO (`H=([198.51.100.21]) [192.0.2.11]:58889`: the client said
//! `[198.51.100.21]`, it connected from 192.0.2.11).

use std::net::IpAddr;

use super::mta_log::{MtaEvent, bracketed};

/// The event of one Exim line, `ports` being those mxscreen screens.
pub fn event(rest: &str, ports: &[u16]) -> Option<(IpAddr, MtaEvent)> {
    if let Some(from) = rest.strip_prefix("SMTP connection from ") {
        // The opening line (`+smtp_connection`) has the count; the closing one (`... closed
        // by QUIT`, `... lost`) starts the same way and is not a second connection.
        if !from.contains("(TCP/IP connection count") {
            return None;
        }
        // A connection to a port mxscreen does not screen is none enforcing would refuse.
        if !screened(from, ports) {
            return None;
        }
        return Some((host(from)?, MtaEvent::Connected));
    }
    // `1tAbCd-000123-AB <= a@b H=name (helo) [192.0.2.1]:51234 P=esmtp ...`; local
    // submissions (`U=` without `H=`) name no peer and are skipped.
    let mut words = rest.splitn(3, ' ');
    if let (Some(_id), Some("<="), Some(tail)) = (words.next(), words.next(), words.next()) {
        let peer = host(tail.split_once(" H=")?.1)?;
        // Authenticated mail (`A=`, or a protocol ending in `a`: esmtpa, esmtpsa) and mail
        // on an unscreened port (`I=[ip]:587`, `+incoming_interface`) pass enforcing.
        let authenticated =
            field(tail, "A").is_some() || field(tail, "P").is_some_and(|p| p.ends_with('a'));
        let event = if authenticated || !screened(tail, ports) {
            MtaEvent::AcceptedUnscreened
        } else {
            MtaEvent::Accepted
        };
        return Some((peer, event));
    }
    // `H=(helo) [192.0.2.1] F=<a@b> rejected RCPT <c@d>: ...`,
    // `H=[192.0.2.1] rejected connection in "connect" ACL`, `... rejected after DATA: ...`.
    let h = rest
        .strip_prefix("H=")
        .or_else(|| rest.split_once(" H=").map(|(_, h)| h))?;
    let peer = host(h)?;
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

/// The peer of `H=` (what follows it): `[ip]`, `name [ip]`, `(helo) [ip]` or
/// `name (helo) [ip]`, each with an optional `:port`.
fn host(text: &str) -> Option<IpAddr> {
    let mut rest = text;
    if !rest.starts_with(['(', '[']) {
        rest = rest.split_once(' ')?.1;
    }
    if rest.starts_with('(') {
        // The HELO may hold anything, brackets and spaces too: the peer follows `) [`.
        rest = &rest[rest.find(") [")? + 2..];
    }
    rest.starts_with('[').then(|| bracketed(rest))?
}

/// The value of a ` NAME=value` field of a line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, v) = line.split_once(&format!(" {name}="))?;
    v.split(' ').next()
}

/// Whether the line's local interface (`I=[192.0.2.2]:25`, logged with
/// `+incoming_interface`) is on a screened port; a line without one is taken as screened.
fn screened(line: &str, ports: &[u16]) -> bool {
    let port = field(line, "I")
        .and_then(|i| i.rsplit_once("]:"))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    port.is_none_or(|p| ports.contains(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_peer_follows_the_helo() {
        for (h, peer) in [
            ("[192.0.2.11]:58889", "192.0.2.11"),
            ("([198.51.100.21]) [192.0.2.11]:58889", "192.0.2.11"),
            ("mail.example (helo) [192.0.2.11]:1", "192.0.2.11"),
            ("mail.example [192.0.2.11]", "192.0.2.11"),
            (
                "(odd [203.0.113.1] helo) [2001:db8::25]:40000",
                "2001:db8::25",
            ),
        ] {
            assert_eq!(host(h), Some(ip(peer)), "{h}");
        }
        let rejected = "H=([198.51.100.21]) [192.0.2.11]:58889 F=<a@b> rejected RCPT <c@d>: listed";
        assert_eq!(event(rejected, &[25]).unwrap().0, ip("192.0.2.11"));
        let accepted = "1tXyZa-000123-AB <= a@b H=([198.51.100.21]) [192.0.2.11]:58889 P=esmtp S=1";
        assert_eq!(
            event(accepted, &[25]),
            Some((ip("192.0.2.11"), MtaEvent::Accepted))
        );
    }

    #[test]
    fn authenticated_or_unscreened_mail_is_apart() {
        let unscreened = |line: &str| event(line, &[25]).map(|(_, e)| e);
        for line in [
            "1tXyZa-000123-AB <= a@b H=(laptop) [192.0.2.30]:5000 I=[192.0.2.2]:587 P=esmtpsa X=TLS1.3 A=plain:roadwarrior S=1",
            "1tXyZa-000123-AB <= a@b H=(laptop) [192.0.2.30]:5000 P=esmtpa S=1",
            "1tXyZa-000123-AB <= a@b H=(laptop) [192.0.2.30]:5000 I=[192.0.2.2]:2525 P=esmtp S=1",
        ] {
            assert_eq!(
                unscreened(line),
                Some(MtaEvent::AcceptedUnscreened),
                "{line}"
            );
        }
        let port_25 =
            "1tXyZa-000123-AB <= a@b H=(x) [192.0.2.30]:5000 I=[192.0.2.2]:25 P=esmtps S=1";
        assert_eq!(unscreened(port_25), Some(MtaEvent::Accepted));
        let submission = "SMTP connection from [192.0.2.30]:5000 I=[192.0.2.2]:587 (TCP/IP connection count = 1)";
        assert_eq!(unscreened(submission), None);
    }
}
