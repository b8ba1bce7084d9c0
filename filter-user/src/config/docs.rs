//! `mxscreen config default`: the complete default config, every section and key preceded by
//! its documentation. Values come from the `Default` impls and words from the fields' doc
//! comments (read at run time through `documented`), so neither can drift from the code and
//! there is one place to document a key: its field.

use documented::{DocumentedFields, Error};

use super::{
    Config, ControlSection, DatapathSection, FleetSection, MetricsSection, PolicyServiceSection,
    QuerySection, StateSection, fleet,
};
use crate::{
    datapath::MapSizes,
    reputation::config::{
        CodeWeight, DnsblConfig, FeedConfig, ListsConfig, PolicyConfig, RdnsConfig, ResolverConfig,
    },
};

/// The full default config as TOML, documented.
pub fn default_toml() -> String {
    documented_toml(&Config::default())
}

/// `cfg` as TOML with every section and key documented (each once, where it first appears).
pub fn documented_toml(cfg: &Config) -> String {
    let mut out = String::from(
        "# mxscreen configuration: every key with its default. Delete what you do not change.\n\
         # Durations are written like \"90s\", \"10m\", \"24h\", \"7d\".\n",
    );
    out.push('\n');
    out.push_str(&annotated_toml(cfg, &|_| true));
    out
}

/// `cfg` as TOML, every section and key preceded by its documentation (each once, where it
/// first appears). Sections and keys whose dotted path `active` refuses are written commented
/// out (`#key = value`), with the lines of their values, so the file still shows them.
pub fn annotated_toml(cfg: &Config, active: &dyn Fn(&str) -> bool) -> String {
    let body = toml::to_string_pretty(cfg).expect("a config serializes");
    let mut out = String::new();
    let mut documented: Vec<String> = Vec::new();
    let mut section = String::new();
    let mut commented = false;
    for line in body.lines() {
        let path = match key_path(&section, line) {
            Some(Line::Header(s)) => {
                section = s.clone();
                Some(s)
            }
            Some(Line::Key(p)) => Some(p),
            None => None,
        };
        if let Some(path) = &path {
            commented = !active(path);
            if !documented.contains(path) {
                if line.starts_with('[') && !out.is_empty() && !out.ends_with("\n\n") {
                    out.push('\n');
                }
                for l in doc_for(path).unwrap_or("").lines() {
                    out.push_str(format!("# {l}").trim_end());
                    out.push('\n');
                }
                documented.push(path.clone());
            }
        }
        // Lines that are neither (array elements, closing brackets) belong to the key above.
        if commented && !line.trim().is_empty() {
            out.push('#');
        }
        out.push_str(line);
        out.push('\n');
        if let Some(Line::Header(s)) = key_path("", line) {
            // Keys absent by default (serde writes no `None`) are shown commented out.
            for (key, example) in optional_examples(&s) {
                for l in doc_for(&format!("{s}.{key}")).unwrap_or("").lines() {
                    out.push_str(format!("# {l}").trim_end());
                    out.push('\n');
                }
                out.push_str(&format!("# {key} = {example}\n"));
            }
        }
    }
    out
}

/// Optional keys of a section and an example value for each.
fn optional_examples(section: &str) -> &'static [(&'static str, &'static str)] {
    match section {
        "fleet" => fleet::OPTIONAL_EXAMPLES,
        _ => &[],
    }
}

enum Line {
    /// `[datapath]`, `[[dnsbl]]`, `[[dnsbl.code_weights]]`: the section's dotted path.
    Header(String),
    /// `key = value` inside `section`: its dotted path.
    Key(String),
}

/// What a line of the serialized config is, if it is a header or a key (array elements and
/// closing brackets are neither).
fn key_path(section: &str, line: &str) -> Option<Line> {
    let t = line.trim();
    if t.starts_with('#') {
        return None;
    }
    if t.starts_with('[') && t.ends_with(']') && !t.contains(" = ") {
        return Some(Line::Header(t.trim_matches(['[', ']']).to_owned()));
    }
    let (key, _) = t.split_once(" = ")?;
    if key.starts_with('"') {
        return None;
    }
    Some(Line::Key(if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }))
}

/// The documentation of a section or key by its dotted path (`datapath`, `datapath.maps.seen`,
/// `dnsbl.code_weights.label`).
pub fn doc_for(path: &str) -> Option<&'static str> {
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    let docs: Result<&'static str, Error> = match parent {
        "" => Config::get_field_docs(key),
        "datapath" => DatapathSection::get_field_docs(key),
        "datapath.maps" => MapSizes::get_field_docs(key),
        "resolver" => ResolverConfig::get_field_docs(key),
        "dnsbl" => DnsblConfig::get_field_docs(key),
        "dnsbl.code_weights" => CodeWeight::get_field_docs(key),
        "rdns" => RdnsConfig::get_field_docs(key),
        "policy" => PolicyConfig::get_field_docs(key),
        "lists" => ListsConfig::get_field_docs(key),
        "lists.feed" => FeedConfig::get_field_docs(key),
        "control" => ControlSection::get_field_docs(key),
        "state" => StateSection::get_field_docs(key),
        "query" => QuerySection::get_field_docs(key),
        "policy_service" => PolicyServiceSection::get_field_docs(key),
        "metrics" => MetricsSection::get_field_docs(key),
        "fleet" => FleetSection::get_field_docs(key),
        _ => return None,
    };
    docs.ok().filter(|d| !d.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `config default` prints is a valid config equal to the defaults.
    #[test]
    fn default_toml_parses_back_to_the_defaults() {
        let text = default_toml();
        assert_eq!(
            Config::from_toml_str(&text, "default").unwrap(),
            Config::default(),
            "{text}"
        );
        assert!(text.contains("# Destination ports screened"), "{text}");
    }

    /// Every section and key `config default` prints has documentation, printed above it.
    #[test]
    fn every_printed_key_is_documented() {
        let text = default_toml();
        let seen = printed_keys_are_documented(&text);
        for key in [
            "dnsbl.code_weights",
            "dnsbl.code_weights.codes",
            "dnsbl.code_weights.weight",
            "dnsbl.code_weights.label",
            "datapath.maps.verdicts",
            "datapath.maps.seen",
            "datapath.maps.hit_counters",
            "policy.observe",
            "policy.v6_rotation_prefix",
            "lists.feed",
            "query.socket",
            "query.group",
            "policy_service.listen",
            "policy_service.limit_action",
            "fleet.prefix",
        ] {
            assert!(seen.iter().any(|s| s == key), "{key} not printed:\n{text}");
        }
        // Optional keys appear commented out, with their documentation.
        for (key, example) in fleet::OPTIONAL_EXAMPLES {
            let line = format!("# {key} = {example}");
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("{line}:\n{text}"));
            assert!(doc_for(&format!("fleet.{key}")).is_some(), "{key}");
            assert!(text[..at].ends_with("\n"), "{key}");
        }
        // Sections empty by default are documented too, key by key, once they are written.
        let cfg = Config::from_toml_str(
            "[[lists.feed]]\nname = \"drop\"\npath = \"/var/lib/feeds/drop.txt\"\nformat = \"spamhaus-drop\"\naction = \"limit\"\n",
            "feed.toml",
        )
        .unwrap();
        let text = documented_toml(&cfg);
        let seen = printed_keys_are_documented(&text);
        for key in ["name", "path", "format", "action"] {
            let key = format!("lists.feed.{key}");
            assert!(seen.contains(&key), "{key} not printed:\n{text}");
        }
        assert_eq!(Config::from_toml_str(&text, "again").unwrap(), cfg);
    }

    /// Checks that every key `text` prints has its documentation above its first occurrence;
    /// returns the keys seen.
    fn printed_keys_are_documented(text: &str) -> Vec<String> {
        let mut section = String::new();
        let mut seen = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let path = match key_path(&section, line) {
                Some(Line::Header(s)) => {
                    section = s.clone();
                    s
                }
                Some(Line::Key(p)) => p,
                None => continue,
            };
            assert!(doc_for(&path).is_some(), "{path} has no documentation");
            if !seen.contains(&path) {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "{path} printed without its doc:\n{text}"
                );
                seen.push(path);
            }
        }
        seen
    }
}
