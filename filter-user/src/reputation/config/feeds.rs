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

/// Names unique and plain, paths absolute.
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
    }
    Ok(())
}
