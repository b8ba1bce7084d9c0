//! The time stamps that start MTA log lines: Exim's (`2026-12-05 07:12:01`, with
//! `log_selector = +millisec` a `.227`, with `log_timezone = true` a ` +0100`), traditional
//! syslog's (`Dec  5 07:12:01`, no year, no zone) and RFC 3339's
//! (`2026-12-05T07:12:01.123456+00:00`, or `+0000` as older journalctl writes it). A stamp
//! without an offset is the writer's local time: [`Stamp::offset`] is `None` and the reader
//! applies the host's zone.

use super::time::naive_seconds;

/// A stamp: its civil time as seconds (as if UTC) and its offset east of UTC, if written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub naive: i64,
    pub offset: Option<i64>,
}

/// Exim's stamp, then an optional `[pid] ` (`+pid`): the stamp and the rest of the line.
pub fn exim(line: &str) -> Option<(Stamp, &str)> {
    if line.as_bytes().get(10) != Some(&b' ') {
        return None;
    }
    let naive = ymd(line.get(..10)?, line.get(11..19)?)?;
    let mut rest = line.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let mut rest = rest.trim_start();
    let mut offset = None;
    if let Some((zone, tail)) = rest.split_once(' ')
        && zone.starts_with(['+', '-'])
        && zone.len() == 5
    {
        offset = Some(hhmm(zone)?);
        rest = tail;
    }
    if let Some(after) = rest.strip_prefix('[')
        && let Some((pid, tail)) = after.split_once("] ")
        && pid.bytes().all(|b| b.is_ascii_digit())
    {
        rest = tail;
    }
    Some((Stamp { naive, offset }, rest))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A syslog line's stamp (traditional, of `year`, or RFC 3339) and host: the stamp and the
/// rest of the line after the host.
pub fn syslog(line: &str, year: i64) -> Option<(Stamp, &str)> {
    let (stamp, rest) = if line.as_bytes().get(4) == Some(&b'-') {
        let (stamp, rest) = line.split_once(' ')?;
        (rfc3339(stamp)?, rest)
    } else {
        let month = MONTHS.iter().position(|m| line.get(..3) == Some(m))? as i64 + 1;
        let day = line.get(4..6)?.trim().parse().ok()?;
        let naive = naive_seconds(year, month, day, line.get(7..15)?)?;
        (
            Stamp {
                naive,
                offset: None,
            },
            line.get(16..)?,
        )
    };
    let (_host, rest) = rest.split_once(' ')?;
    Some((stamp, rest))
}

fn rfc3339(stamp: &str) -> Option<Stamp> {
    let naive = ymd(stamp.get(..10)?, stamp.get(11..19)?)?;
    let zone = stamp
        .get(19..)?
        .trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "" => None,
        "Z" => Some(0),
        _ => Some(hhmm(zone)?),
    };
    Some(Stamp { naive, offset })
}

/// `2026-12-05` and `07:12:01` as naive seconds.
fn ymd(date: &str, time: &str) -> Option<i64> {
    let mut parts = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    naive_seconds(y, m, d, time)
}

/// `+01:00` (RFC 3339) or `+0100` (Exim, journalctl's `short-iso` on older systemd) as
/// seconds east of UTC.
fn hhmm(zone: &str) -> Option<i64> {
    let sign = match zone.get(..1)? {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let hm = zone.get(1..)?;
    let (h, m) = hm.split_once(':').or_else(|| hm.split_at_checked(2))?;
    Some(sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 10:31:34, as if UTC.
    const NAIVE: i64 = 1_796_639_494;

    #[test]
    fn exim_stamps_with_milliseconds_and_zones() {
        for (line, offset) in [
            ("2026-12-07 10:31:34 H=x", None),
            ("2026-12-07 10:31:34 +0000 H=x", Some(0)),
            ("2026-12-07 10:31:34.227 H=x", None),
            ("2026-12-07 10:31:34.227 +0100 H=x", Some(3600)),
            ("2026-12-07 10:31:34.227 -0530 [4242] H=x", Some(-19_800)),
            ("2026-12-07 10:31:34 [4242] H=x", None),
        ] {
            assert_eq!(
                exim(line),
                Some((
                    Stamp {
                        naive: NAIVE,
                        offset
                    },
                    "H=x"
                )),
                "{line}"
            );
        }
        assert_eq!(exim("2026-12-07T10:31:34 x"), None);
    }

    #[test]
    fn syslog_stamps() {
        let (s, rest) = syslog("Dec  7 10:31:34 mx postfix/smtpd[1]: x", 2026).unwrap();
        assert_eq!(
            (s.naive, s.offset, rest),
            (NAIVE, None, "postfix/smtpd[1]: x")
        );
        let (s, _) = syslog("2026-12-07T11:31:34.5+01:00 mx p: x", 0).unwrap();
        assert_eq!((s.naive - NAIVE, s.offset), (3600, Some(3600)));
        let (s, _) = syslog("2026-12-07T10:31:34Z mx p: x", 0).unwrap();
        assert_eq!(s.offset, Some(0));
        let (s, _) = syslog("2026-12-07T10:31:34 mx p: x", 0).unwrap();
        assert_eq!(s.offset, None);
    }
}
