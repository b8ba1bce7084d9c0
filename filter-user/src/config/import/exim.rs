//! An Exim run-time configuration as Exim reads it (spec chapter 6): comment lines (`#`
//! first) skipped, also inside continuations; a trailing `\` continues a line (leading white
//! space of the next dropped); macros (`NAME = value`, `NAME == value` redefines) replaced in
//! every later physical line, in definition order; `.ifdef`/`.ifndef`/`.elifdef`/`.elifndef`
//! /`.else`/`.endif` by "did a macro substitution happen on the line"; `.include` and
//! `.include_if_exists`; `begin acl` up to the next `begin`, where `name:` starts an ACL and a
//! verb starts a statement whose conditions and modifiers follow, one per line.

use std::path::{Path, PathBuf};

use super::draft::Notes;

/// The ACL verbs.
const VERBS: &[&str] = &[
    "accept", "defer", "deny", "discard", "drop", "require", "warn",
];
/// How deep `.include` may nest.
const MAX_INCLUDE: usize = 10;

/// A condition or modifier of a statement: `[!]name = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub negated: bool,
    pub name: String,
    pub value: String,
    pub at: String,
}

/// An ACL statement: its verb and its conditions and modifiers, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub verb: String,
    pub conditions: Vec<Condition>,
    pub at: String,
}

/// What the import needs of an Exim configuration.
#[derive(Debug, Default)]
pub struct Exim {
    /// Main-section options (`acl_smtp_rcpt = acl_check_rcpt`), with where they are set.
    pub options: Vec<(String, String, String)>,
    /// The ACLs in file order.
    pub acls: Vec<(String, Vec<Statement>)>,
}

impl Exim {
    pub fn option(&self, name: &str) -> Option<(&str, &str)> {
        self.options
            .iter()
            .rev()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, at)| (v.as_str(), at.as_str()))
    }

    /// The value of `hostlist NAME = ...` and where it is set.
    pub fn hostlist(&self, name: &str) -> Option<(&str, &str)> {
        self.options
            .iter()
            .rev()
            .find(|(n, _, _)| {
                let mut words = n.split_whitespace();
                words.next() == Some("hostlist") && words.next() == Some(name)
            })
            .map(|(_, v, at)| (v.as_str(), at.as_str()))
    }
}

/// The items of an Exim list (spec "List construction"): `:`-separated unless it starts
/// with `<X` naming another separator; a doubled separator is one literal character (IPv6
/// in a colon list: `::::1`); items trimmed, empty ones kept (in a host list, an empty item
/// is a local caller, no IP host).
pub fn list(value: &str) -> Vec<String> {
    let value = value.trim();
    let (sep, body) = match value.strip_prefix('<') {
        Some(rest) if !rest.is_empty() => {
            let c = rest.chars().next().expect("not empty");
            (c, &rest[c.len_utf8()..])
        }
        _ => (':', value),
    };
    let mut items = Vec::new();
    let mut item = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != sep {
            item.push(c);
        } else if chars.peek() == Some(&sep) {
            chars.next();
            item.push(sep);
        } else {
            items.push(item.trim().to_owned());
            item.clear();
        }
    }
    items.push(item.trim().to_owned());
    items
}

/// The reading state across files: macros, conditional skips, the section.
#[derive(Default)]
struct Reader {
    macros: Vec<(String, String)>,
    /// Per open `.if...`: (this branch is taken, some branch was taken).
    ifs: Vec<(bool, bool)>,
    in_acl: bool,
    /// A logical line being continued, with where it started.
    pending: Option<(String, String)>,
    exim: Exim,
}

/// Reads `files` (name and text) in order, as one configuration.
pub fn read(files: &[(String, String)], notes: &mut Notes) -> Exim {
    let mut r = Reader::default();
    for (name, text) in files {
        r.file(name, text, 0, notes);
    }
    r.exim
}

impl Reader {
    fn file(&mut self, name: &str, text: &str, depth: usize, notes: &mut Notes) {
        for (i, raw) in text.lines().enumerate() {
            let at = format!("{name}:{}", i + 1);
            // A macro definition's own name is not replaced, only its value.
            let (line, substituted) =
                match definition_name(raw.trim()).filter(|_| self.pending.is_none()) {
                    Some(end) => {
                        let raw = raw.trim();
                        (
                            format!("{}{}", &raw[..end], self.substitute(&raw[end..]).0),
                            false,
                        )
                    }
                    None => self.substitute(raw),
                };
            let t = line.trim();
            if let Some(directive) = t.strip_prefix('.')
                && self.pending.is_none()
            {
                self.directive(directive, substituted, &at, name, depth, notes);
                continue;
            }
            if !self.taken() || t.is_empty() && self.pending.is_none() || t.starts_with('#') {
                continue;
            }
            let (start, mut logical) = self.pending.take().unwrap_or((at, String::new()));
            match t.strip_suffix('\\') {
                Some(more) => {
                    logical.push_str(more);
                    self.pending = Some((start, logical));
                }
                None => {
                    logical.push_str(t);
                    self.logical(&logical, &start);
                }
            }
        }
        if let Some((start, logical)) = self.pending.take() {
            self.logical(&logical, &start);
        }
    }

    /// Whether every open `.if...` branch is taken.
    fn taken(&self) -> bool {
        self.ifs.iter().all(|(now, _)| *now)
    }

    /// The line with every macro replaced, and whether any was.
    fn substitute(&self, raw: &str) -> (String, bool) {
        let mut line = raw.to_owned();
        let mut any = false;
        for (name, value) in &self.macros {
            if line.contains(name.as_str()) {
                line = line.replace(name.as_str(), value);
                any = true;
            }
        }
        (line, any)
    }

    fn directive(
        &mut self,
        d: &str,
        defined: bool,
        at: &str,
        file: &str,
        depth: usize,
        notes: &mut Notes,
    ) {
        let word = d.split_whitespace().next().unwrap_or("");
        let arg = d[word.len()..].trim().trim_matches('"');
        match word {
            "ifdef" => self.ifs.push((defined, defined)),
            "ifndef" => self.ifs.push((!defined, !defined)),
            "elifdef" | "elifndef" => {
                let cond = if word == "elifdef" { defined } else { !defined };
                if let Some((now, done)) = self.ifs.last_mut() {
                    *now = !*done && cond;
                    *done |= *now;
                }
            }
            "else" => {
                if let Some((now, done)) = self.ifs.last_mut() {
                    *now = !*done;
                    *done = true;
                }
            }
            "endif" => {
                self.ifs.pop();
            }
            "include" | "include_if_exists" if self.taken() => {
                let path = Path::new(file)
                    .parent()
                    .map_or_else(|| PathBuf::from(arg), |dir| dir.join(arg));
                match std::fs::read_to_string(&path) {
                    Ok(text) if depth < MAX_INCLUDE => {
                        self.file(&path.display().to_string(), &text, depth + 1, notes)
                    }
                    Ok(_) => notes.push(
                        at,
                        format!(".{word} {arg}"),
                        "includes nest too deep; not read",
                    ),
                    Err(_) if word == "include_if_exists" => {}
                    Err(e) => notes.push(
                        at,
                        format!(".include {arg}"),
                        &format!("cannot be read ({e}); not translated"),
                    ),
                }
            }
            _ => {}
        }
    }

    fn logical(&mut self, line: &str, at: &str) {
        if let Some(section) = line.strip_prefix("begin ") {
            self.in_acl = section.trim() == "acl";
            return;
        }
        if let Some((name, value, redefine)) = macro_definition(line) {
            match self.macros.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) if redefine => *v = value,
                Some(_) => {}
                None => self.macros.push((name, value)),
            }
            return;
        }
        if !self.in_acl {
            if let Some((name, value)) = line.split_once('=') {
                self.exim.options.push((
                    name.trim().to_owned(),
                    value.trim().to_owned(),
                    at.to_owned(),
                ));
            }
            return;
        }
        if let Some(name) = line
            .strip_suffix(':')
            .filter(|n| !n.contains(char::is_whitespace))
        {
            self.exim.acls.push((name.to_owned(), Vec::new()));
            return;
        }
        let Some((_, statements)) = self.exim.acls.last_mut() else {
            return;
        };
        let word = line.split_whitespace().next().unwrap_or("");
        if VERBS.contains(&word) {
            statements.push(Statement {
                verb: word.to_owned(),
                conditions: Vec::new(),
                at: at.to_owned(),
            });
            let rest = line[word.len()..].trim();
            if let (Some(s), false) = (statements.last_mut(), rest.is_empty()) {
                s.conditions.extend(condition(rest, at));
            }
        } else if let Some(s) = statements.last_mut() {
            s.conditions.extend(condition(line, at));
        }
    }
}

/// Where the name of a macro definition ends: a line starting with an upper-case letter,
/// then letters, digits and underscores, then `=`.
fn definition_name(line: &str) -> Option<usize> {
    if !line.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    line[end..].trim_start().starts_with('=').then_some(end)
}

/// `NAME = value` (or `NAME == value`, a redefinition).
fn macro_definition(line: &str) -> Option<(String, String, bool)> {
    let end = definition_name(line)?;
    let name = &line[..end];
    let rest = line[end..].trim_start().strip_prefix('=')?;
    let (value, redefine) = match rest.strip_prefix('=') {
        Some(v) => (v, true),
        None => (rest, false),
    };
    Some((name.to_owned(), value.trim().to_owned(), redefine))
}

/// `[!]name = value`, `endpass` or another word alone.
fn condition(text: &str, at: &str) -> Option<Condition> {
    let (negated, text) = match text.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, text),
    };
    let (name, value) = text.split_once('=').unwrap_or((text, ""));
    Some(Condition {
        negated,
        name: name.trim().to_owned(),
        value: value.trim().to_owned(),
        at: at.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exim(text: &str) -> Exim {
        let mut notes = Notes::default();
        read(&[("exim.conf".into(), text.into())], &mut notes)
    }

    #[test]
    fn statements_macros_conditionals_and_continuations() {
        let e = exim(
            "CHECK_RCPT_IP_DNSBLS = zen.spamhaus.org\nacl_smtp_rcpt = acl_check_rcpt\n\
             begin acl\n\nacl_check_rcpt:\n  accept  hosts = :\n\
             # a comment\n  .ifdef CHECK_RCPT_IP_DNSBLS\n  warn    dnslists = CHECK_RCPT_IP_DNSBLS : \\\n\
             # inside\n                     bl.spamcop.net\n          add_header = X-Warn: listed\n  .endif\n\
             .ifdef NOT_DEFINED\n  deny dnslists = never.example\n.else\n  deny  ! verify = sender\n.endif\n\
             begin routers\nx:\n  driver = redirect\n",
        );
        assert_eq!(
            e.option("acl_smtp_rcpt"),
            Some(("acl_check_rcpt", "exim.conf:2"))
        );
        assert_eq!(e.acls.len(), 1);
        let (name, s) = &e.acls[0];
        assert_eq!(name, "acl_check_rcpt");
        assert_eq!(s.len(), 3, "{s:#?}");
        assert_eq!(s[1].verb, "warn");
        assert_eq!(s[1].at, "exim.conf:9");
        assert_eq!(
            s[1].conditions[0].value,
            "zen.spamhaus.org : bl.spamcop.net"
        );
        assert_eq!(s[1].conditions[1].name, "add_header");
        assert_eq!(
            (s[2].conditions[0].negated, s[2].conditions[0].name.as_str()),
            (true, "verify")
        );
    }

    #[test]
    fn macros_redefine_in_order() {
        let e = exim(
            "LISTS = a.example\nLISTS == LISTS : b.example\nbegin acl\nc:\n  deny dnslists = LISTS\n",
        );
        assert_eq!(e.acls[0].1[0].conditions[0].value, "a.example : b.example");
    }
}
