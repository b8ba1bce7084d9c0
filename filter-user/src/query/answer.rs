//! The answer to "what about this address?", and its one-line form for Exim's `readsocket`:
//!
//! ```text
//! action=drop score=15 ttl=512 source=reputation zone=zen.spamhaus.org code=127.0.0.2 label=SBL text="https://www.spamhaus.org/query/ip/192.0.2.11" explain_in=14398
//! ```
//!
//! `key=value` fields separated by one space, in this order, each present only when known.
//! A value is written bare when it is a non-empty run of printable characters without space,
//! `"` or `\`; otherwise, and always for `text` and `error` (free text), it is quoted with
//! `"` and `\` escaped by a backslash — exactly what Exim's `${extract{KEY}{...}}` reads back.
//! Control characters never reach the line (they become `?`): the answer is one line.

use std::{borrow::Cow, fmt::Write as _};

use filter_common::{Action, Reason};

use crate::reputation::Listing;

/// What mxscreen tells the MTA to do with a peer (the `action` field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Told {
    /// A verdict lets it through.
    Pass,
    /// A verdict limits its connections (the MTA may `delay` it).
    Limit,
    /// A verdict drops it: a connection that reaches the MTA is an explained one, to refuse
    /// with a 5xx naming the list.
    Drop,
    /// On the allow list (manual or config): never screened.
    Allow,
    /// On the deny list (manual, config or feed): the operator's word.
    Block,
    /// Nothing held: not seen yet (its evaluation has started), or expired.
    #[default]
    Unknown,
}

impl Told {
    pub const ALL: [Told; 6] = [
        Told::Pass,
        Told::Limit,
        Told::Drop,
        Told::Allow,
        Told::Block,
        Told::Unknown,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Told::Pass => "pass",
            Told::Limit => "limit",
            Told::Drop => "drop",
            Told::Allow => "allow",
            Told::Block => "block",
            Told::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the datapath refuses or slows such a peer (what observe mode leaves undone).
    pub const fn enforces(self) -> bool {
        matches!(self, Told::Limit | Told::Drop | Told::Block)
    }
}

impl From<Action> for Told {
    fn from(a: Action) -> Self {
        match a {
            Action::Pass => Told::Pass,
            Action::Limit => Told::Limit,
            Action::Drop => Told::Drop,
        }
    }
}

/// What the daemon holds about one peer, as the MTA is told.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub action: Told,
    /// The last evaluation's score, when its evidence is still held.
    pub score: Option<i32>,
    /// Seconds until the verdict or list entry expires; `None` = it never does.
    pub ttl: Option<u64>,
    /// Where the verdict or list entry comes from (`reputation`, `tempfail`, `manual`,
    /// `config`, `feed`).
    pub source: Option<Reason>,
    /// The strongest listing behind a verdict: `zone`, `code`, `label`, `text`.
    pub listing: Option<Listing>,
    /// Seconds until the datapath lets this dropped peer's next connection through to be
    /// explained (0: its next connection); only for a reputation `drop`.
    pub explain_in: Option<u64>,
    /// Observe mode: what would be enforced (`action` is then `pass`, as the datapath does).
    pub observed: Option<Told>,
    /// Why no answer could be given (bad input, a map read failing).
    pub error: Option<String>,
}

impl Answer {
    /// `action=unknown error="..."`: bad input or a failure; the MTA treats it as unknown.
    pub fn error(why: impl Into<String>) -> Self {
        Self {
            error: Some(why.into()),
            ..Self::default()
        }
    }

    /// The fields in protocol order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("action", self.action.name().to_owned())];
        if let Some(s) = self.score {
            f.push(("score", s.to_string()));
        }
        if let Some(t) = self.ttl {
            f.push(("ttl", t.to_string()));
        }
        if let Some(r) = self.source {
            f.push(("source", r.name().to_owned()));
        }
        if let Some(l) = &self.listing {
            f.push(("zone", l.zone.clone()));
            f.push(("code", l.code.to_string()));
            if !l.label.is_empty() {
                f.push(("label", l.label.clone()));
            }
            if !l.text.is_empty() {
                f.push(("text", l.text.clone()));
            }
        }
        if let Some(e) = self.explain_in {
            f.push(("explain_in", e.to_string()));
        }
        if let Some(o) = self.observed {
            f.push(("observed", o.name().to_owned()));
        }
        if let Some(e) = &self.error {
            f.push(("error", e.clone()));
        }
        f
    }

    /// The answer line, with its newline.
    pub fn line(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.fields() {
            if !out.is_empty() {
                out.push(' ');
            }
            let free_text = matches!(key, "text" | "error");
            let _ = write!(out, "{key}={}", quote(&value, free_text));
        }
        out.push('\n');
        out
    }
}

/// `value` as written in a line: bare if it can be, else quoted and escaped.
pub fn quote(value: &str, always: bool) -> Cow<'_, str> {
    let plain = |c: char| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\\';
    if !always && !value.is_empty() && value.chars().all(plain) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// Reads a line back into `(key, value)` pairs the way Exim's `${extract{KEY}{LINE}}` does:
/// fields separated by white space, a value either bare or in double quotes with
/// backslash escapes. For tests and tools; `None` if the line is not of that form.
pub fn parse(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        chars.next_if_eq(&'=')?;
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn get(fields: &[(String, String)], key: &str) -> Option<String> {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn the_issue_line_is_written_exactly() {
        let a = Answer {
            action: Told::Drop,
            score: Some(13),
            ttl: Some(512),
            source: Some(Reason::Reputation),
            listing: Some(Listing {
                zone: "zen.spamhaus.org".into(),
                code: Ipv4Addr::new(127, 0, 0, 2),
                label: "SBL".into(),
                text: "https://www.spamhaus.org/query/ip/192.0.2.11".into(),
            }),
            ..Answer::default()
        };
        assert_eq!(
            a.line(),
            "action=drop score=13 ttl=512 source=reputation zone=zen.spamhaus.org code=127.0.0.2 label=SBL text=\"https://www.spamhaus.org/query/ip/192.0.2.11\"\n"
        );
    }

    #[test]
    fn every_field_reads_back_whatever_the_text_holds() {
        let nasty = "Listed: see \"https://x.example/q?ip=1\" \\ back\nslash\ttab   spaces";
        let a = Answer {
            action: Told::Drop,
            score: Some(-5),
            ttl: None,
            source: Some(Reason::Reputation),
            listing: Some(Listing {
                zone: "bl.example".into(),
                code: Ipv4Addr::new(127, 0, 0, 4),
                label: "XBL infected".into(),
                text: nasty.into(),
            }),
            explain_in: Some(0),
            observed: None,
            error: None,
        };
        let line = a.line();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let f = parse(&line).unwrap();
        assert_eq!(get(&f, "action").as_deref(), Some("drop"));
        assert_eq!(get(&f, "score").as_deref(), Some("-5"));
        assert_eq!(get(&f, "ttl"), None);
        assert_eq!(get(&f, "label").as_deref(), Some("XBL infected"));
        assert_eq!(
            get(&f, "text").unwrap(),
            nasty.replace(['\n', '\t'], "?"),
            "{line}"
        );
        assert_eq!(get(&f, "explain_in").as_deref(), Some("0"));
        assert_eq!(f.len(), 8, "{f:?}");
    }

    #[test]
    fn each_action_has_its_name_and_unknown_is_the_default() {
        for t in Told::ALL {
            let a = Answer {
                action: t,
                ..Answer::default()
            };
            assert_eq!(a.line(), format!("action={}\n", t.name()));
            assert_eq!(Told::from_name(t.name()), Some(t));
        }
        assert_eq!(Answer::default().action, Told::Unknown);
        assert_eq!(
            Answer::error("not an IP address").line(),
            "action=unknown error=\"not an IP address\"\n"
        );
        assert_eq!(Told::from(Action::Limit), Told::Limit);
        assert!(Told::Block.enforces() && !Told::Allow.enforces());
    }

    #[test]
    fn quoting_only_where_needed() {
        assert_eq!(quote("zen.test", false), "zen.test");
        assert_eq!(quote("", false), "\"\"");
        assert_eq!(quote("a b", false), "\"a b\"");
        assert_eq!(quote("a\"b", false), "\"a\\\"b\"");
        assert_eq!(quote("plain", true), "\"plain\"");
        assert_eq!(parse("a=\"unterminated"), None);
        assert_eq!(parse("novalue"), None);
    }
}
