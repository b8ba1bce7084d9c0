//! Reading a feed file into a [`PrefixSet`], line by line, in any of the three formats. A
//! line that does not parse is recorded with its number and skipped, and so is an entry
//! wider than the feed's bound ([`Widest`]); the rest loads. How the file is opened and its
//! lines read (regular files only, lines bounded) is in [`super::file`].

use std::{
    io::{self, BufReader},
    path::Path,
};

use super::{
    file::{Line, MAX_LINE, next_line, open_regular},
    parse::{Collector, Widest, cidr_line, spamhaus_line},
    rbldnsd,
};
use crate::{datapath::PrefixSet, reputation::config::FeedFormat};

/// Malformed lines and refused entries kept with their message (the counts go on): enough
/// to show in the log.
pub const KEPT_ERRORS: usize = 20;

/// A file read into prefixes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub set: PrefixSet,
    /// Non-blank, non-comment lines.
    pub lines: u64,
    /// Lines that did not parse (or were too long to read).
    pub malformed: u64,
    /// The first [`KEPT_ERRORS`] of them: line number and what is wrong.
    pub errors: Vec<(u64, String)>,
    /// Lines whose entry is wider than the feed's bound.
    pub refused: u64,
    /// The first [`KEPT_ERRORS`] of them: line number and why.
    pub refusals: Vec<(u64, String)>,
}

impl Parsed {
    fn malformed(&mut self, number: u64, why: String) {
        self.malformed += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push((number, why));
        }
    }
}

/// Reads `path` in `format`, refusing entries wider than `widest`.
pub fn read(path: &Path, format: FeedFormat, widest: Widest) -> io::Result<Parsed> {
    let mut reader = BufReader::with_capacity(1 << 16, open_regular(path)?);
    let mut out = Parsed::default();
    let mut found = Collector::bounded(widest);
    let mut line = Vec::with_capacity(256);
    let mut number = 0u64;
    while let Some(read) = next_line(&mut reader, &mut line)? {
        number += 1;
        if let Line::TooLong(len) = read {
            out.lines += 1;
            out.malformed(
                number,
                format!("a line longer than {MAX_LINE} bytes ({len} bytes): not read"),
            );
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let mark = found.mark();
        let result = match format {
            FeedFormat::Cidr => cidr_line(&text),
            FeedFormat::SpamhausDrop => spamhaus_line(&text),
            FeedFormat::Rbldnsd => rbldnsd::line(&text, &mut found),
        };
        match result {
            Ok(listed) => {
                if let Some(p) = listed {
                    found.push(p);
                }
                if let Some((wide, bound)) = found.end_line(mark) {
                    out.lines += 1;
                    out.refused += 1;
                    if out.refusals.len() < KEPT_ERRORS {
                        let why = format!("{} is wider than /{bound}", wide.net());
                        out.refusals.push((number, why));
                    }
                } else if listed.is_some() || found.mark() != mark {
                    out.lines += 1;
                }
            }
            Err(why) => {
                out.lines += 1;
                out.malformed(number, why);
            }
        }
    }
    let excluded = std::mem::take(&mut found.excluded);
    let mut set = PrefixSet::from_unsorted(found.v4, found.v6);
    if !excluded.is_empty() {
        set = rbldnsd::exclude(set, &excluded);
    }
    out.set = set;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDEST: Widest = Widest { v4: 8, v6: 16 };

    #[test]
    fn a_file_loads_around_its_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.txt");
        std::fs::write(
            &path,
            "# header\n192.0.2.1\n192.0.2.1\nbogus line\n198.51.100.0/24\n\n2001:db8::/32\n",
        )
        .unwrap();
        let r = read(&path, FeedFormat::Cidr, WIDEST).unwrap();
        assert_eq!((r.lines, r.malformed, r.set.len()), (5, 1, 3));
        assert_eq!(
            r.errors,
            vec![(4, "not an address or prefix: \"bogus\"".into())]
        );
        assert!(read(&dir.path().join("missing"), FeedFormat::Cidr, WIDEST).is_err());
    }
}
