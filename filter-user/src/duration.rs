//! Durations in config files as short human strings: `"90s"`, `"10m"`, `"24h"`, `"7d"`, and
//! sums of them such as `"1h30m"` or `"1h 30m"`. Units: `ms`, `s`, `m`, `h`, `d`, `w`.
//!
//! Use it on any `Duration` field with `#[serde(with = "mxscreen::duration")]`.
//! A bare number is refused on purpose: `ttl = 300` could mean seconds or minutes, and a
//! config that guesses wrong keeps a verdict for hours.
use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serializer, de};

/// The longest duration a config or command holds: 36500 days (100 years), past any interval
/// or expiry an operator means. Every duration ends up as nanoseconds in the datapath (`u64`:
/// 584 years) or as an offset from an `Instant`; this bound keeps both far from overflow, so
/// a value that parses can be used everywhere without a wrap or a panic.
pub const MAX: Duration = Duration::from_secs(36_500 * 86_400);

/// Why a duration string did not parse. The message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {why} (write e.g. \"90s\", \"10m\", \"24h\", \"7d\", \"1h30m\")"
)]
pub struct ParseDurationError {
    input: String,
    why: &'static str,
}

/// Why a duration past [`MAX`] is refused.
const TOO_LONG: &str = "longer than 36500d (100 years), the most any duration may be";

impl ParseDurationError {
    /// Whether the duration was well written but longer than [`MAX`] (a caller may say
    /// what the bound is for in its own words).
    pub fn too_long(&self) -> bool {
        self.why == TOO_LONG
    }
}

/// Parses `"90s"`, `"10m"`, `"1h30m"`, `"250ms"`...
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |why| ParseDurationError {
        input: input.to_owned(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => n
                .checked_mul(60)
                .map(Duration::from_secs)
                .ok_or_else(|| err("too large"))?,
            "h" => n
                .checked_mul(3600)
                .map(Duration::from_secs)
                .ok_or_else(|| err("too large"))?,
            "d" => n
                .checked_mul(86_400)
                .map(Duration::from_secs)
                .ok_or_else(|| err("too large"))?,
            "w" => n
                .checked_mul(604_800)
                .map(Duration::from_secs)
                .ok_or_else(|| err("too large"))?,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit (use ms, s, m, h, d or w)")),
        };
        total = total.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    if total > MAX {
        return Err(err(TOO_LONG));
    }
    Ok(total)
}

/// `d` in nanoseconds, as the datapath keeps windows and expiries (saturating; any parsed
/// duration, at most [`MAX`], fits).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Formats a duration the way [`parse`] reads it, largest units first (`"1h30m"`, `"250ms"`).
pub fn format(d: Duration) -> String {
    Formatted(d).to_string()
}

/// [`format`] without the allocation, for `Display` contexts.
pub struct Formatted(pub Duration);

impl fmt::Display for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        let mut secs = d.as_secs();
        for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= len {
                write!(f, "{}{unit}", secs / len)?;
                secs %= len;
            }
        }
        let ms = d.subsec_millis();
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

/// Serde `with` helper: serializes as [`format`], deserializes with [`parse`].
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Formatted(*d))
}

/// Serde `with` helper; see the module docs.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1w"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "-5s",
            "1.5h",
            "99999999999999999999s",
            "18446744073709551615s",
            "213504d",
            "36500d1s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let msg = parse("10").unwrap_err().to_string();
        assert!(
            msg.contains("missing unit") && msg.contains("\"90s\""),
            "{msg}"
        );
        assert_eq!(parse("36500d"), Ok(MAX));
        assert_eq!(nanos(MAX), 36_500 * 86_400 * 1_000_000_000);
        let e = parse("213504d").unwrap_err();
        assert!(e.too_long() && e.to_string().contains("36500d"), "{e}");
        assert!(!parse("10").unwrap_err().too_long());
    }

    #[test]
    fn format_round_trips() {
        for s in ["0s", "90s", "1m30s", "1h30m", "7d", "250ms", "1d1h1m1s"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)), Ok(d), "{s}");
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
