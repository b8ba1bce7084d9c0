//! `[[lists.feed]]`: blocklist feed files — addresses and prefixes a downloader keeps
//! current — loaded into the datapath's lists and reloaded when the file changes.

use std::path::PathBuf;

use documented::DocumentedFields;
use serde::{Deserialize, Serialize};

use crate::invalid_key::InvalidKey;

/// One feed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, DocumentedFields)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// What `status`, `list`, `check` and the logs call the feed: letters, digits, `.`,
    /// `-` and `_`, unique among the feeds.
    pub name: String,
    /// The file, an absolute path. Its directory is watched (inotify): a file replaced by
    /// rename, as downloaders do, or rewritten in place is loaded again within a second, and
    /// only the difference reaches the datapath. A file that disappears keeps its entries
    /// until it is back.
    pub path: PathBuf,
    /// "cidr" (default): one address or prefix per line, IPv4 or IPv6. "rbldnsd": rbldnsd
    /// ip4set, ip4trie or ip6trie data (abbreviated prefixes like 192.0.2, ranges like
    /// 192.0.2.0-192.0.2.127, `!` exclusions, per-entry values ignored). "spamhaus-drop":
    /// Spamhaus DROP/EDROP/DROPv6 lines like `192.0.2.0/24 ; SBL123`, or their JSON-lines
    /// form. In every format `#` and `;` start comments; a line that does not parse is
    /// logged as file:line and skipped, and the rest loads.
    #[serde(default)]
    pub format: FeedFormat,
    /// What the datapath does with a SYN from a listed source: "drop" (default; never
    /// explained to the MTA, like a manual block), "limit" (the token bucket of a `limit`
    /// verdict, whatever the reputation says) or "allow" (always pass, as `lists.allow`).
    #[serde(default)]
    pub action: FeedAction,
    /// The widest IPv4 prefix an entry may be: a wider one (`0.0.0.0/1`, `224.0.0.0/3`: a
    /// broken list or script) is refused and logged as file:line, and the rest of the file
    /// loads. Default 8: FireHOL's level 1 lists bogon /8s and Spamhaus DROP /12s, while
    /// anything wider takes a sizable part of the Internet with it. 1 to 32; `0.0.0.0/0`
    /// never loads.
    #[serde(default = "default_widest_v4")]
    pub widest_v4: u8,
    /// The widest IPv6 prefix an entry may be, as `widest_v4`. Default 16: Spamhaus DROPv6
    /// lists /28s and the largest allocations to one network are /19s, while `2000::/3` is
    /// every global address. 1 to 128; `::/0` never loads.
    #[serde(default = "default_widest_v6")]
    pub widest_v6: u8,
    /// The share of its entries, in percent, a feed may lose at once. A read that loses
    /// more (and at least 10 entries), or that yields no entries at all while the last good
    /// load had some, keeps the last good load, logged and shown by `status`, until the file
    /// changes again or `mxscreen feed reload NAME --force` accepts it once: an emptied file,
    /// an error page saved as the list or a truncated download never empties the feed.
    /// Default 50: real lists churn a few percent a day; half of one gone at once is a
    /// broken download far more often than the news. 1 to 100 (100: only an empty read is
    /// held).
    #[serde(default = "default_max_shrink")]
    pub max_shrink: u8,
}

const fn default_widest_v4() -> u8 {
    8
}

const fn default_widest_v6() -> u8 {
    16
}

const fn default_max_shrink() -> u8 {
    50
}

/// The syntax of a feed file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedFormat {
    #[default]
    Cidr,
    Rbldnsd,
    SpamhausDrop,
}

/// What a feed's entries do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedAction {
    #[default]
    Drop,
    Limit,
    Allow,
}

impl FeedAction {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Drop => "drop",
            Self::Limit => "limit",
            Self::Allow => "allow",
        }
    }
}

impl FeedFormat {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cidr => "cidr",
            Self::Rbldnsd => "rbldnsd",
            Self::SpamhausDrop => "spamhaus-drop",
        }
    }
}

/// Names unique and plain, paths absolute, bounds and shares in range.
pub fn validate_feeds(feeds: &[FeedConfig]) -> Result<(), InvalidKey> {
    for (i, f) in feeds.iter().enumerate() {
        let key = |k: &str| format!("lists.feed[{i}].{k}");
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if f.name.is_empty() || f.name.len() > 64 || !f.name.chars().all(plain) {
            return Err(InvalidKey::new(
                key("name"),
                format!(
                    "{:?}: 1 to 64 letters, digits, '.', '-' or '_' are allowed",
                    f.name
                ),
            ));
        }
        if let Some(j) = feeds[..i].iter().position(|g| g.name == f.name) {
            return Err(InvalidKey::new(
                key("name"),
                format!("{:?} is already the name of lists.feed[{j}]", f.name),
            ));
        }
        if !f.path.is_absolute() {
            return Err(InvalidKey::new(
                key("path"),
                format!("{:?} is relative; use an absolute path", f.path),
            ));
        }
        if f.path.file_name().is_none() {
            return Err(InvalidKey::new(
                key("path"),
                format!("{:?} names no file", f.path),
            ));
        }
        for (k, widest, max) in [
            ("widest_v4", f.widest_v4, 32),
            ("widest_v6", f.widest_v6, 128),
        ] {
            if !(1..=max).contains(&widest) {
                return Err(InvalidKey::new(
                    key(k),
                    format!("/{widest}: 1 to {max} are allowed (a catch-all /0 never loads)"),
                ));
            }
        }
        if !(1..=100).contains(&f.max_shrink) {
            return Err(InvalidKey::new(
                key("max_shrink"),
                format!("{}: a percentage from 1 to 100", f.max_shrink),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(extra: &str) -> Result<Vec<FeedConfig>, String> {
        #[derive(Deserialize)]
        struct Lists {
            feed: Vec<FeedConfig>,
        }
        let text =
            format!("[[feed]]\nname = \"drop\"\npath = \"/var/lib/feeds/drop.txt\"\n{extra}");
        let lists: Lists = toml::from_str(&text).map_err(|e| e.to_string())?;
        validate_feeds(&lists.feed).map_err(|e| e.to_string())?;
        Ok(lists.feed)
    }

    #[test]
    fn bounds_and_shrink_have_safe_defaults() {
        let f = &feed("").unwrap()[0];
        assert_eq!((f.widest_v4, f.widest_v6, f.max_shrink), (8, 16, 50));
        let f = &feed("widest_v4 = 1\nwidest_v6 = 128\nmax_shrink = 100\n").unwrap()[0];
        assert_eq!((f.widest_v4, f.widest_v6, f.max_shrink), (1, 128, 100));
    }

    #[test]
    fn a_catch_all_bound_or_a_share_out_of_range_is_refused() {
        for (extra, key) in [
            ("widest_v4 = 0\n", "lists.feed[0].widest_v4"),
            ("widest_v4 = 33\n", "lists.feed[0].widest_v4"),
            ("widest_v6 = 0\n", "lists.feed[0].widest_v6"),
            ("widest_v6 = 129\n", "lists.feed[0].widest_v6"),
            ("max_shrink = 0\n", "lists.feed[0].max_shrink"),
            ("max_shrink = 101\n", "lists.feed[0].max_shrink"),
        ] {
            let e = feed(extra).unwrap_err();
            assert!(e.contains(key), "{extra}: {e}");
        }
    }
}
