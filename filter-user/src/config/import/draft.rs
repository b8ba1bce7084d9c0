//! What an import produces, whatever it read: a [`Draft`] of the mxscreen config and the
//! [`Notes`] on what could not be translated, written out as one commented TOML file.

use std::fmt::Display;

use super::zones::Zone;

/// What could not be translated, or translates with a difference: each names the line of the
/// source config and why.
#[derive(Debug, Default)]
pub struct Notes(Vec<String>);

impl Notes {
    /// A note on `what`, written at `at` (`file:line`; empty for a default nobody wrote).
    pub fn push(&mut self, at: &str, what: impl Display, why: &str) {
        let line = if at.is_empty() {
            format!("{what} (by default): {why}")
        } else {
            format!("{at}: {what}: {why}")
        };
        if !self.0.contains(&line) {
            self.0.push(line);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

/// A key of `[policy]` with the comment saying where its value comes from.
#[derive(Debug)]
pub struct Setting {
    pub key: &'static str,
    /// The value, already in TOML syntax.
    pub value: String,
    pub why: String,
}

/// A `[[lists.feed]]` table.
#[derive(Debug)]
pub struct Feed {
    pub name: String,
    pub path: String,
    pub action: &'static str,
    pub why: String,
}

/// The mxscreen config an import produces.
#[derive(Debug, Default)]
pub struct Draft {
    /// `postscreen` or `exim`, as on the command line.
    pub kind: &'static str,
    pub files: Vec<String>,
    /// How mxscreen's model differs from the source's, in general.
    pub differences: Vec<String>,
    pub policy: Vec<Setting>,
    /// Addresses and prefixes for `lists.allow` / `lists.deny`, each with where it is from.
    pub allow: Vec<(String, String)>,
    pub deny: Vec<(String, String)>,
    pub feeds: Vec<Feed>,
    pub zones: Vec<Zone>,
    pub notes: Notes,
}

/// `s` as a TOML string.
pub fn quote(s: &str) -> String {
    toml::Value::from(s).to_string()
}

/// Comment lines wrap here.
const WIDTH: usize = 96;

/// `text` as `# ` comment lines, long ones wrapped at spaces (continuations indented past
/// the line's own indentation and list marker).
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        let body = line.trim_start();
        let lead = &line[..line.len() - body.len()];
        let marker = if body.starts_with("- ") { "  " } else { "" };
        let mut current = format!("# {lead}");
        let mut empty = true;
        for word in body.split(' ') {
            if !empty && current.len() + 1 + word.len() > WIDTH {
                out.push_str(current.trim_end());
                out.push('\n');
                current = format!("# {lead}{marker}");
                empty = true;
            }
            if !empty {
                current.push(' ');
            }
            current.push_str(word);
            empty = false;
        }
        out.push_str(current.trim_end());
        out.push('\n');
    }
}

/// A TOML array of strings, on one line if it fits, else a few per line.
fn list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| quote(&s)).collect();
    let one = format!("[{}]", items.join(", "));
    if one.len() <= WIDTH - 8 {
        return one;
    }
    let mut out = String::from("[\n");
    let mut line = String::new();
    for item in items {
        if !line.is_empty() && line.len() + item.len() + 2 > WIDTH - 4 {
            out.push_str(&format!("    {}\n", line.trim_end()));
            line.clear();
        }
        line.push_str(&item);
        line.push_str(", ");
    }
    out.push_str(&format!("    {}\n]", line.trim_end()));
    out
}

impl Draft {
    /// The config as TOML, every value preceded by a comment naming where it comes from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        if self.zones.is_empty() {
            comment(
                &mut out,
                "No DNSBL was found: none is queried (mxscreen's built-in ones are not added).",
            );
            out.push_str("dnsbl = []\n");
        }
        out.push_str("\n[policy]\n");
        for s in &self.policy {
            comment(&mut out, &s.why);
            out.push_str(&format!("{} = {}\n", s.key, s.value));
        }
        out.push_str("\n[rdns]\n");
        comment(
            &mut out,
            &format!(
                "{} weighs no reverse DNS: nothing but the DNSBLs below scores (set `enabled = true` and mxscreen's missing-PTR weights to add it).",
                self.kind
            ),
        );
        out.push_str("enabled = false\n");
        self.lists(&mut out);
        for z in &self.zones {
            out.push_str("\n[[dnsbl]]\n");
            comment(&mut out, &z.sources.join("\n"));
            out.push_str(&format!(
                "zone = {}\nweight = {}\n",
                quote(&z.name),
                z.weight
            ));
            if !z.codes.is_empty() {
                out.push_str(&format!(
                    "codes = {}\n",
                    list(z.codes.iter().map(ToString::to_string))
                ));
            }
            for c in &z.classes {
                out.push_str(&format!(
                    "\n[[dnsbl.code_weights]]\ncodes = {}\nweight = {}\nlabel = {}\n",
                    list(c.codes.iter().map(ToString::to_string)),
                    c.weight,
                    quote(&c.label)
                ));
            }
        }
        out
    }

    fn header(&self, out: &mut String) {
        comment(
            out,
            &format!(
                "mxscreen config imported by `mxscreen config import {}` from {}.\n\
             Check it with `mxscreen config check FILE`, ask it about a few addresses with\n\
             `mxscreen check IP --config FILE`, and run it in observe mode before enforcing.",
                self.kind,
                self.files.join(", ")
            ),
        );
        out.push_str("#\n");
        if self.notes.is_empty() {
            comment(out, "Every line that matters to mxscreen was translated.");
        } else {
            comment(
                out,
                &format!(
                    "Not translated, or translated with a difference ({}):",
                    self.notes.len()
                ),
            );
            for n in self.notes.iter() {
                comment(out, &format!("  - {n}"));
            }
        }
        if !self.differences.is_empty() {
            out.push_str("#\n");
            comment(out, &format!("How mxscreen differs from {}:", self.kind));
            for d in &self.differences {
                comment(out, &format!("  - {d}"));
            }
        }
    }

    fn lists(&self, out: &mut String) {
        if self.allow.is_empty() && self.deny.is_empty() && self.feeds.is_empty() {
            return;
        }
        out.push_str("\n[lists]\n");
        for (key, nets) in [("allow", &self.allow), ("deny", &self.deny)] {
            if nets.is_empty() {
                continue;
            }
            out.push_str(&format!("{key} = [\n"));
            for (net, why) in nets {
                out.push_str(&format!("    {}, # {why}\n", quote(net)));
            }
            out.push_str("]\n");
        }
        for f in &self.feeds {
            out.push_str("\n[[lists.feed]]\n");
            comment(out, &f.why);
            out.push_str(&format!(
                "name = {}\npath = {}\nformat = \"cidr\"\naction = {}\n",
                quote(&f.name),
                quote(&f.path),
                quote(f.action)
            ));
        }
    }
}
