//! Calendar times: Unix seconds as a UTC date for the report's period and the year of syslog
//! stamps that carry none, a civil date as seconds, and how a stamp without an offset is
//! read — in the host's time zone, as Exim (without `log_timezone`) and traditional syslog
//! write it.

/// (year, month, day, hour, minute, second) of Unix time `t`, UTC (civil from days, Howard
/// Hinnant: the inverse of [`naive_seconds`]).
pub fn civil(t: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (t / 86_400) as i64;
    let secs = (t % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// `2026-12-05 07:12:01 UTC`.
pub fn stamp(t: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// The seconds of a civil date and `HH:MM:SS` counted as if it were UTC (days from civil,
/// Howard Hinnant); what zone it is in is the caller's to apply.
pub fn naive_seconds(y: i64, m: i64, d: i64, hms: &str) -> Option<i64> {
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
    Some(days * 86_400 + h * 3600 + min * 60 + s)
}

/// The zone of stamps that carry no offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// The host's (the `TZ` variable, else /etc/localtime), daylight saving included.
    Host,
    /// A fixed offset east of UTC, in seconds.
    Fixed(i64),
}

/// Reads naive stamps in a [`Zone`], remembering the offset of the last hour asked about: a
/// log's lines come in order, and zones change their offset on the hour.
#[derive(Debug)]
pub struct Local {
    zone: Zone,
    /// (naive hour, offset).
    last: Option<(i64, i64)>,
}

impl Local {
    pub fn new(zone: Zone) -> Self {
        Self { zone, last: None }
    }

    /// Unix seconds of the civil time `naive` (see [`naive_seconds`]) in the zone.
    pub fn unix(&mut self, naive: i64) -> Option<u64> {
        let hour = naive.div_euclid(3600);
        let offset = match (self.zone, self.last) {
            (Zone::Fixed(o), _) => o,
            (Zone::Host, Some((h, o))) if h == hour => o,
            (Zone::Host, _) => {
                let o = host_offset(hour * 3600)?;
                self.last = Some((hour, o));
                o
            }
        };
        u64::try_from(naive - offset).ok()
    }
}

/// The host zone's offset east of UTC at civil time `naive`, by libc's `mktime` (the tz
/// database's rules; a time skipped or repeated by a daylight-saving change is resolved as
/// `mktime` does).
fn host_offset(naive: i64) -> Option<i64> {
    let (y, mo, d, h, mi, s) = civil(u64::try_from(naive).ok()?);
    // SAFETY: `tm` is plain data; all zeroes is a valid value (a null `tm_zone`).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = i32::try_from(y - 1900).ok()?;
    tm.tm_mon = mo as i32 - 1;
    tm.tm_mday = d as i32;
    tm.tm_hour = h as i32;
    tm.tm_min = mi as i32;
    tm.tm_sec = s as i32;
    // Let mktime find out whether daylight saving time is in effect.
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, exclusively borrowed struct tm; mktime reads and normalises it.
    let t = unsafe { libc::mktime(&mut tm) };
    // `time_t` is i64 here, i32 on some targets: `as` widens either.
    (t != -1).then(|| naive - t as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(stamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(stamp(1_796_454_721), "2026-12-05 07:12:01 UTC");
        assert_eq!(stamp(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(naive_seconds(2026, 12, 5, "07:12:01"), Some(1_796_454_721));
        assert_eq!(naive_seconds(2026, 13, 5, "07:12:01"), None);
    }

    #[test]
    fn naive_stamps_at_a_fixed_offset() {
        let naive = naive_seconds(2026, 12, 5, "08:12:01").unwrap();
        assert_eq!(
            Local::new(Zone::Fixed(3600)).unix(naive),
            Some(1_796_454_721)
        );
    }

    /// The host's zone is libc's: run with TZ set in a child, so no other test sees it.
    #[test]
    fn naive_stamps_in_the_host_zone() {
        if let Ok(zone) = std::env::var("MXSCREEN_TEST_TZ_CHILD") {
            let mut local = Local::new(Zone::Host);
            // Central European: +1 in December, +2 (summer time) in July.
            let winter = naive_seconds(2026, 12, 5, "08:12:01").unwrap();
            let summer = naive_seconds(2026, 7, 5, "09:12:01").unwrap();
            assert_eq!(zone, "CET-1CEST,M3.5.0,M10.5.0/3");
            assert_eq!(local.unix(winter), Some(1_796_454_721));
            assert_eq!(local.unix(summer), Some(1_783_235_521));
            return;
        }
        let tz = "CET-1CEST,M3.5.0,M10.5.0/3";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "report::time::tests::naive_stamps_in_the_host_zone",
            ])
            .env("TZ", tz)
            .env("MXSCREEN_TEST_TZ_CHILD", tz)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
