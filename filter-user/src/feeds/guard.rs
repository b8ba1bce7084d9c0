//! Whether a read of a feed is held back: a downloader that fails often leaves an empty file
//! (`wget -O`), an HTTP error page or a truncated download at the list's path, and loading
//! it would silently take away the feed's entries — for a drop feed, open the gate to what
//! it listed. Such a read keeps the last good load until the file changes again or the
//! operator accepts it (`mxscreen feed reload NAME --force`).

use super::read::Parsed;

/// A loss smaller than this many entries is never held back, whatever its share: a
/// hand-kept list of a few entries may lose most of them in one edit.
const MIN_HELD_LOSS: u64 = 10;

/// Why `parsed` is held back, if it is: it has no entries while the last good load
/// (`previous`, `None` before the first) had some, or it lost more than `max_shrink` percent
/// of that load's entries (and at least [`MIN_HELD_LOSS`]). The first load is never held:
/// there is nothing to keep.
pub fn holds(previous: Option<u64>, parsed: &Parsed, max_shrink: u8) -> Option<String> {
    let previous = previous.filter(|p| *p > 0)?;
    let entries = parsed.set.len() as u64;
    let skipped = if parsed.malformed > 0 {
        format!(" ({} lines skipped)", parsed.malformed)
    } else {
        String::new()
    };
    if entries == 0 {
        return Some(format!(
            "no entries{skipped} where the last good load had {previous}"
        ));
    }
    let lost = previous.saturating_sub(entries);
    if lost >= MIN_HELD_LOSS && lost * 100 > previous * u64::from(max_shrink) {
        return Some(format!(
            "{entries} entries where the last good load had {previous}{skipped}: more than \
             {max_shrink}% lost at once (max_shrink)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{Prefix, PrefixSet};

    fn parsed(entries: u32, malformed: u64) -> Parsed {
        let v4 = (0..entries)
            .map(|i| PrefixSet::pack_v4(0xc000_0200 + i, 32))
            .collect();
        Parsed {
            set: PrefixSet::from_unsorted(v4, Vec::new()),
            malformed,
            ..Parsed::default()
        }
    }

    #[test]
    fn an_empty_read_after_a_good_load_is_held() {
        let why = holds(Some(40), &parsed(0, 8), 50).unwrap();
        assert_eq!(
            why,
            "no entries (8 lines skipped) where the last good load had 40"
        );
        // Nothing to keep: the first load, or a feed that was empty.
        assert_eq!(holds(None, &parsed(0, 0), 50), None);
        assert_eq!(holds(Some(0), &parsed(0, 0), 50), None);
        // Even at 100%: an empty read is never a list's news.
        assert!(holds(Some(3), &parsed(0, 0), 100).is_some());
    }

    #[test]
    fn a_loss_beyond_the_share_is_held() {
        let why = holds(Some(40), &parsed(10, 0), 50).unwrap();
        assert!(
            why.starts_with("10 entries where the last good load had 40: more than 50%"),
            "{why}"
        );
        assert_eq!(holds(Some(40), &parsed(20, 0), 50), None);
        assert!(holds(Some(40), &parsed(19, 0), 50).is_some());
        assert_eq!(holds(Some(40), &parsed(10, 0), 80), None);
        assert_eq!(holds(Some(40), &parsed(1, 0), 100), None);
        // Growth and small losses pass.
        assert_eq!(holds(Some(40), &parsed(400, 0), 50), None);
        assert_eq!(holds(Some(12), &parsed(3, 0), 50), None);
        let _ = Prefix::V4(0, 0);
    }
}
