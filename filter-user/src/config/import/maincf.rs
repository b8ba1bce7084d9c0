//! Postfix's main.cf as Postfix reads it (postconf(5)): `name = value` lines, a line that
//! starts with white space continuing the one before, comment lines (`#` first) and blank
//! lines skipped, even inside a continued value; a later setting wins; values refer to other
//! parameters as `$name`, `${name}` or `$(name)`, with `${name?text}` and `${name:text}`
//! (and their `{text}` forms) for "if set" and "if not set".

use std::collections::HashMap;

/// A parameter's setting: its value as written (continuations joined) and where.
#[derive(Clone, Debug)]
pub struct Setting {
    pub value: String,
    /// `file:line` of its first line.
    pub at: String,
    /// Each physical line of the value with its number, to say where a list item is.
    pub lines: Vec<(String, String)>,
}

/// The parameters of one or more main.cf files, read in order.
#[derive(Debug, Default)]
pub struct MainCf {
    params: HashMap<String, Setting>,
}

/// How many `$name` references one expansion resolves before it gives up: a main.cf whose
/// parameters each refer to the next several times grows exponentially (three references a
/// level, twenty levels: 3^20), which Postfix would refuse long before.
const MAX_REFERENCES: usize = 10_000;

/// What an expansion could not resolve.
#[derive(Debug, Default)]
pub struct Unresolved {
    /// Names set nowhere (expanded to their default, else to nothing).
    pub unknown: Vec<String>,
    /// References to a parameter being expanded, each as its chain (`a → b → a`): expanded
    /// to nothing (Postfix refuses such a file).
    pub loops: Vec<String>,
    /// Whether [`MAX_REFERENCES`] was reached (the rest expanded to nothing).
    pub too_many: bool,
}

/// One expansion's state: the parameters being expanded, and the references left.
struct Expansion<'a> {
    defaults: &'a dyn Fn(&str) -> Option<String>,
    stack: Vec<String>,
    left: usize,
    out: Unresolved,
}

impl MainCf {
    /// Reads `text` (from `file`); its settings override those read before.
    pub fn read(&mut self, file: &str, text: &str) {
        let mut current: Option<(String, Setting)> = None;
        for (i, raw) in text.lines().enumerate() {
            let at = format!("{file}:{}", i + 1);
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                if let Some((_, s)) = current.as_mut() {
                    s.value.push(' ');
                    s.value.push_str(trimmed);
                    s.lines.push((at, trimmed.to_owned()));
                }
                continue;
            }
            self.finish(current.take());
            if let Some((name, value)) = raw.split_once('=') {
                let value = value.trim().to_owned();
                let lines = vec![(at.clone(), value.clone())];
                current = Some((name.trim().to_owned(), Setting { value, at, lines }));
            }
        }
        self.finish(current);
    }

    fn finish(&mut self, setting: Option<(String, Setting)>) {
        if let Some((name, s)) = setting {
            self.params.insert(name, s);
        }
    }

    /// Sets `name` whatever was read (a master.cf `-o` override).
    pub fn set(&mut self, name: &str, setting: Setting) {
        self.params.insert(name.to_owned(), setting);
    }

    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.params.get(name)
    }

    /// `name`'s value with every `$reference` expanded; `None` if it is not set. Names that
    /// are set nowhere expand to `defaults(name)`, else to nothing; they, loops and an
    /// expansion cut short are returned in `unresolved`.
    pub fn expanded(
        &self,
        name: &str,
        defaults: &dyn Fn(&str) -> Option<String>,
        unresolved: &mut Unresolved,
    ) -> Option<String> {
        let s = self.params.get(name)?;
        let mut x = Expansion {
            defaults,
            stack: vec![name.to_owned()],
            left: MAX_REFERENCES,
            out: std::mem::take(unresolved),
        };
        let value = self.expand(&s.value, &mut x);
        *unresolved = x.out;
        Some(value)
    }

    /// The value of the parameter `name` inside an expansion (`None`: set nowhere, and no
    /// default).
    fn value_of(&self, name: &str, x: &mut Expansion<'_>) -> Option<String> {
        let Some(s) = self.params.get(name) else {
            return (x.defaults)(name);
        };
        if x.stack.iter().any(|n| n == name) {
            x.out
                .loops
                .push(format!("{} → {name}", x.stack.join(" → ")));
            return Some(String::new());
        }
        x.stack.push(name.to_owned());
        let value = self.expand(&s.value, x);
        x.stack.pop();
        Some(value)
    }

    /// `text` with every `$reference` expanded (see [`MainCf::expanded`]).
    fn expand(&self, text: &str, x: &mut Expansion<'_>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(literal) = after.strip_prefix('$') {
                out.push('$');
                rest = literal;
                continue;
            }
            let Some(reference) = Reference::parse(after) else {
                out.push('$');
                rest = after;
                continue;
            };
            rest = &after[reference.len..];
            if x.left == 0 {
                x.out.too_many = true;
                continue;
            }
            x.left -= 1;
            let value = self.value_of(reference.name, x);
            if value.is_none() && reference.test.is_none() {
                x.out.unknown.push(reference.name.to_owned());
            }
            let set = value.as_deref().is_some_and(|v| !v.is_empty());
            let text = match reference.test {
                None => value.unwrap_or_default(),
                Some(('?', t, _)) if set => self.expand(t, x),
                Some((':', t, _)) if !set => self.expand(t, x),
                Some(('?', _, Some(otherwise))) => self.expand(otherwise, x),
                Some(_) => String::new(),
            };
            out.push_str(&text);
        }
        out.push_str(rest);
        out
    }
}

/// One `$name`, `${name}`, `$(name)`, `${name?text}`, `${name:text}` or
/// `${name?{text}:{text}}` after its `$`.
struct Reference<'a> {
    name: &'a str,
    /// `?` or `:`, the text, and for `?{a}:{b}` the text when not set.
    test: Option<(char, &'a str, Option<&'a str>)>,
    /// Bytes it takes after the `$`.
    len: usize,
}

impl<'a> Reference<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let word = |t: &str| {
            t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(t.len())
        };
        let (open, close) = match s.chars().next()? {
            '{' => ('{', '}'),
            '(' => ('(', ')'),
            _ => {
                let n = word(s);
                return (n > 0).then(|| Self {
                    name: &s[..n],
                    test: None,
                    len: n,
                });
            }
        };
        let body_end = matching(s, open, close)?;
        let body = &s[1..body_end];
        let n = word(body);
        let name = &body[..n];
        let test = match body[n..].chars().next() {
            None => None,
            Some(op @ ('?' | ':')) => {
                let text = &body[n + 1..];
                Some(match braced_pair(text) {
                    Some((a, b)) => (op, a, Some(b)),
                    None => (
                        op,
                        text.strip_prefix('{')
                            .and_then(|t| t.strip_suffix('}'))
                            .unwrap_or(text),
                        None,
                    ),
                })
            }
            Some(_) => return None,
        };
        Some(Self {
            name,
            test,
            len: body_end + 1,
        })
    }
}

/// The index of the `close` that matches the `open` at 0.
fn matching(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// `{a}:{b}` as `(a, b)`.
fn braced_pair(s: &str) -> Option<(&str, &str)> {
    let end = matching(s, '{', '}')?;
    let rest = s[end + 1..].strip_prefix(':')?;
    let b_end = matching(rest, '{', '}')?;
    (b_end == rest.len() - 1).then(|| (&s[1..end], &rest[1..b_end]))
}

/// A Postfix time value (`60s`, `5m`, `1h`, `2d`, `1w`, or a bare number in `unit`) in
/// seconds.
pub fn time(value: &str, unit: char) -> Option<u64> {
    let v = value.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..digits].parse().ok()?;
    let unit = match &v[digits..] {
        "" => unit,
        u if u.len() == 1 => u.chars().next()?,
        _ => return None,
    };
    let scale = match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// A list value's items: Postfix separates them by commas and white space.
pub fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cf(text: &str) -> MainCf {
        let mut m = MainCf::default();
        m.read("main.cf", text);
        m
    }

    fn value(m: &MainCf, name: &str) -> String {
        m.expanded(name, &|_| None, &mut Unresolved::default())
            .unwrap()
    }

    #[test]
    fn continuations_comments_and_overrides() {
        let m = cf(
            "# header\npostscreen_dnsbl_sites = a.example*2,\n  # a comment inside\n\n\tb.example=127.0.0.2\nx=1\nx = 2\n",
        );
        let s = m.get("postscreen_dnsbl_sites").unwrap();
        assert_eq!(s.value, "a.example*2, b.example=127.0.0.2");
        assert_eq!(s.at, "main.cf:2");
        assert_eq!(
            s.lines[1],
            ("main.cf:5".to_owned(), "b.example=127.0.0.2".to_owned())
        );
        assert_eq!(value(&m, "x"), "2");
        assert_eq!(
            items("a, b\tc,,d").collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn references_expand() {
        let m = cf(
            "zen = zen.spamhaus.org\nsites = $zen*3 ${zen}=127.0.0.2 $(zen)\nempty =\n\
                    a = ${zen?yes} ${empty?no} ${empty:fallback} ${nothing?{set}:{unset}} $$x\n",
        );
        assert_eq!(
            value(&m, "sites"),
            "zen.spamhaus.org*3 zen.spamhaus.org=127.0.0.2 zen.spamhaus.org"
        );
        assert_eq!(value(&m, "a"), "yes  fallback unset $x");
        let mut u = Unresolved::default();
        let m = cf("a = $b\nb = $a\nc = $undefined_thing\n");
        m.expanded("a", &|_| None, &mut u);
        m.expanded("c", &|_| None, &mut u);
        assert_eq!(u.loops, ["a → b → a"]);
        assert_eq!(u.unknown, ["undefined_thing"]);
        assert!(!u.too_many);
    }

    /// A file whose expansion grows exponentially, or that refers to itself many times a
    /// line, ends at once (it once took minutes: 3^21 expansions).
    #[test]
    fn an_expansion_that_explodes_is_cut_short() {
        let mut text = "a0 = x\n".to_owned();
        for i in 1..=21 {
            let p = i - 1;
            text.push_str(&format!("a{i} = $a{p} $a{p} $a{p}\n"));
        }
        text.push_str("self = $self $self $self\n");
        let m = cf(&text);
        let started = std::time::Instant::now();
        let mut u = Unresolved::default();
        let v = m.expanded("a21", &|_| None, &mut u).unwrap();
        assert!(u.too_many && v.len() < 100_000, "{}", v.len());
        let mut u = Unresolved::default();
        assert_eq!(m.expanded("self", &|_| None, &mut u).unwrap(), "  ");
        assert_eq!(u.loops.len(), 3, "{:?}", u.loops);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn time_values() {
        assert_eq!(time("60s", 's'), Some(60));
        assert_eq!(time("5m", 's'), Some(300));
        assert_eq!(time("1", 'h'), Some(3600));
        assert_eq!(time("2d", 'h'), Some(172_800));
        assert_eq!(time("1w", 's'), Some(604_800));
        assert_eq!(time("5x", 's'), None);
        assert_eq!(time("", 's'), None);
    }
}
