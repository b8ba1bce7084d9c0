//! A config value that parses but cannot be used. Each section validates itself and names
//! the key (`policy.drop_threshold`, `dnsbl[1].zone`); the config loader turns that into a
//! `FILE:LINE:COL: key: message` line by finding the key in the file.

/// A semantic error in one key: which key (dotted, with `[i]` for array elements) and what is
/// wrong with it, saying what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidKey {
    pub key: String,
    pub message: String,
}

impl InvalidKey {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
