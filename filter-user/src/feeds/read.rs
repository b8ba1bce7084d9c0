//! Reading a feed file into a [`PrefixSet`], line by line, in any of the three formats. A
//! line that does not parse is recorded with its number and skipped; the rest loads.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::Path,
};

use super::{
    parse::{Collector, cidr_line, spamhaus_line},
    rbldnsd,
};
use crate::{datapath::PrefixSet, reputation::config::FeedFormat};

/// Malformed lines kept with their message (the count goes on): enough to show in the log.
pub const KEPT_ERRORS: usize = 20;

/// A file read into prefixes.
#[derive(Debug, Default)]
pub struct Parsed {
    pub set: PrefixSet,
    /// Non-blank, non-comment lines.
    pub lines: u64,
    /// Lines that did not parse.
    pub malformed: u64,
    /// The first [`KEPT_ERRORS`] of them: line number and what is wrong.
    pub errors: Vec<(u64, String)>,
}

/// Reads `path` in `format`.
pub fn read(path: &Path, format: FeedFormat) -> io::Result<Parsed> {
    let file = File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut out = Parsed::default();
    let mut found = Collector::default();
    let mut line = Vec::with_capacity(256);
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let text = String::from_utf8_lossy(&line);
        let result = match format {
            FeedFormat::Cidr => cidr_line(&text),
            FeedFormat::SpamhausDrop => spamhaus_line(&text),
            FeedFormat::Rbldnsd => rbldnsd::line(&text, &mut found),
        };
        match result {
            Ok(None) => {}
            Ok(Some(p)) => {
                out.lines += 1;
                found.push(p);
            }
            Err(why) => {
                out.lines += 1;
                out.malformed += 1;
                if out.errors.len() < KEPT_ERRORS {
                    out.errors.push((number, why));
                }
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

    #[test]
    fn a_file_loads_around_its_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.txt");
        std::fs::write(
            &path,
            "# header\n192.0.2.1\n192.0.2.1\nbogus line\n198.51.100.0/24\n\n2001:db8::/32\n",
        )
        .unwrap();
        let r = read(&path, FeedFormat::Cidr).unwrap();
        assert_eq!((r.lines, r.malformed, r.set.len()), (5, 1, 3));
        assert_eq!(
            r.errors,
            vec![(4, "not an address or prefix: \"bogus\"".into())]
        );
        assert!(read(&dir.path().join("missing"), FeedFormat::Cidr).is_err());
    }
}
