//! How a config file fails. Every error is one line, `FILE:LINE:COL: key: what is wrong and
//! what is allowed`, whether TOML rejected the text, serde rejected a type or a section's own
//! validation rejected a value: the position is found by walking the file's spanned parse
//! tree, so an operator never has to hunt for the key.

use std::{fmt, ops::Range, path::Path};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use crate::invalid_key::InvalidKey;

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not `source`: the io error is part of this one-line message, not a cause to print again.
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{0}")]
    At(Located),
}

/// An error at a place in the file.
#[derive(Debug)]
pub struct Located {
    pub origin: String,
    pub line: usize,
    pub column: usize,
    /// The key concerned, dotted (`datapath.ports`, `dnsbl[1].zone`); empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    /// The key an error is about (empty for a read or syntax error).
    pub fn key(&self) -> &str {
        match self {
            Self::Read { .. } => "",
            Self::At(l) => &l.key,
        }
    }
}

/// Reads a config file's text, naming the file in the error. Only regular files are read:
/// a FIFO or a device would block the daemon or feed it garbage.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    let err = |error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    std::fs::read_to_string(path).map_err(err)
}

/// Parses TOML text into `T`; a syntax or type error becomes one located line naming the key.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, at);
        ConfigError::At(Located {
            origin: origin.to_owned(),
            line,
            column,
            key: key_at(text, at).unwrap_or_else(|| word_at(text, at)),
            message: e.message().trim().replace('\n', " "),
        })
    })
}

/// Places a validation error in the file: at its key if the file writes it, else at the
/// nearest enclosing table the file writes (a value left at its default is judged against
/// one the file sets), else at the top.
pub fn locate(text: &str, origin: &str, e: InvalidKey) -> ConfigError {
    let at = DeTable::parse(text)
        .ok()
        .and_then(|doc| find(doc.get_ref(), &segments(&e.key)))
        .map_or(0, |span| span.start);
    let (line, column) = line_col(text, at);
    ConfigError::At(Located {
        origin: origin.to_owned(),
        line,
        column,
        key: e.key,
        message: e.message,
    })
}

/// The bare key or table name at byte `at` (where a document too broken to walk, e.g. one
/// with a duplicate key, still names what is wrong).
fn word_at(text: &str, at: usize) -> String {
    let rest = text.get(at..).unwrap_or("");
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .collect()
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
    (line, column)
}

/// `dnsbl[1].code_weights[0].codes` as `[("dnsbl", Some(1)), ("code_weights", Some(0)),
/// ("codes", None)]`.
fn segments(key: &str) -> Vec<(&str, Option<usize>)> {
    key.split('.')
        .map(|seg| match seg.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
            None => (seg, None),
        })
        .collect()
}

/// The span of the deepest part of `path` the document writes.
fn find(table: &DeTable<'_>, path: &[(&str, Option<usize>)]) -> Option<Range<usize>> {
    let ((name, index), rest) = path.split_first()?;
    let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
    let mut best = key.span();
    let mut value = value;
    if let Some(i) = index {
        let DeValue::Array(items) = value.get_ref() else {
            return Some(best);
        };
        let Some(item) = items.get(*i) else {
            return Some(best);
        };
        best = item.span();
        value = item;
    }
    match value.get_ref() {
        DeValue::Table(inner) if !rest.is_empty() => find(inner, rest).or(Some(best)),
        _ => Some(best),
    }
}

/// The dotted key whose key or value covers byte `at`. A table's span is only its header,
/// so every table is searched, whatever its span.
fn key_at(text: &str, at: usize) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    search_table(doc.get_ref(), at, "")
}

fn search_table(table: &DeTable<'_>, at: usize, prefix: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        let deeper =
            match v.get_ref() {
                DeValue::Table(t) => search_table(t, at, &path),
                // An array of tables is searched element by element (`dnsbl[1].zone`).
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item
                    .get_ref()
                {
                    DeValue::Table(t) => search_table(t, at, &format!("{path}[{i}]")),
                    _ => None,
                }),
                _ => None,
            };
        deeper.or_else(|| (k.span().contains(&at) || v.span().contains(&at)).then_some(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[datapath]\nports = [25]\n\n[[dnsbl]]\nzone = \"a.example\"\nweight = 1\n[[dnsbl]]\nzone = \"b.example\"\nweight = 2\n";

    #[test]
    fn locates_keys_array_elements_and_ancestors() {
        let at = |key: &str| match locate(TEXT, "f", InvalidKey::new(key, "bad")) {
            ConfigError::At(l) => (l.line, l.column),
            ConfigError::Read { .. } => unreachable!(),
        };
        assert_eq!(at("datapath.ports"), (2, 1));
        assert_eq!(at("dnsbl[1].zone"), (8, 1));
        // Not written: the array element's header.
        assert_eq!(at("dnsbl[1].codes"), (7, 1));
        // Not written: the enclosing table the file does write.
        assert_eq!(at("datapath.hold_max"), (1, 2));
        assert_eq!(at("policy.ttl_max"), (1, 1));
    }

    #[test]
    fn names_the_key_under_a_position() {
        assert_eq!(key_at(TEXT, 14).as_deref(), Some("datapath.ports"));
        let zone_b = TEXT.find("b.example").unwrap();
        assert_eq!(key_at(TEXT, zone_b).as_deref(), Some("dnsbl[1].zone"));
    }

    #[test]
    fn only_regular_files_are_read() {
        let e = read_file(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
