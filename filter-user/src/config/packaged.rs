//! The config the Debian package installs as `/etc/mxscreen/mxscreen.toml`: observe mode on
//! and the metrics endpoint on loopback, every other key shown with its built-in default,
//! commented out. Generated from the code (`mxscreen-assets` writes it at package build), so
//! it names every key there is and cannot drift from the defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Config, docs::annotated_toml};

/// Where the packaged config serves metrics: loopback only, for a Prometheus on the host (or
/// behind the operator's own proxy); nothing is exposed to the network by installing.
pub const PACKAGED_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9725);

/// The keys the packaged config sets; everything else stays at the built-in default.
const SET: &[&str] = &["policy", "policy.observe", "metrics", "metrics.listen"];

const HEADER: &str = "\
# mxscreen configuration, as installed by the Debian package.
#
# policy.observe = true: a fresh install screens nothing. Every new peer is looked up, every
# verdict is logged (journalctl -u mxscreen MXSCREEN_ACTION=drop) and counted (mxscreen
# stats: observe_passed), but nothing is dropped or limited. After a few days, run
#   mxscreen report
# which joins the drop and limit verdicts with your MTA's log and says what enforcing would
# have changed: first the peers whose mail the MTA accepted, with their evidence (README:
# \"Observe first\"). Then set observe = false and run `systemctl reload mxscreen`: the
# change applies live.
#
# Every other key is shown with its built-in default, commented out: to change one, remove
# the '#' before it and before its [section] line. metrics.listen serves Prometheus metrics on
# loopback. Durations are written like \"90s\", \"10m\", \"24h\", \"7d\". Check a change with
#   mxscreen config check /etc/mxscreen/mxscreen.toml
";

/// The packaged config's values.
pub fn packaged() -> Config {
    let mut cfg = Config::default();
    cfg.policy.observe = true;
    cfg.metrics.listen = Some(PACKAGED_METRICS_LISTEN);
    cfg
}

/// The packaged config file's text.
pub fn packaged_toml() -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    out.push_str(&annotated_toml(&packaged(), &|path| SET.contains(&path)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_toml;

    #[test]
    fn packaged_config_parses_to_defaults_plus_observe_and_metrics() {
        let text = packaged_toml();
        let cfg = Config::from_toml_str(&text, "mxscreen.toml").unwrap();
        assert_eq!(cfg, packaged(), "{text}");
        let mut expected = Config::default();
        assert_ne!(cfg, expected);
        expected.policy.observe = true;
        expected.metrics.listen = Some("127.0.0.1:9725".parse().unwrap());
        assert_eq!(cfg, expected);
        assert!(
            text.lines()
                .next()
                .unwrap()
                .starts_with("# mxscreen configuration")
                && text.contains("policy.observe = true: a fresh install screens nothing"),
            "{text}"
        );
        assert!(text.contains("\n[policy]\n") && text.contains("\nobserve = true\n"));
        assert!(text.contains("\n[metrics]\n") && text.contains("\nlisten = \"127.0.0.1:9725\"\n"));
    }

    /// Every key `config default` prints is in the packaged file, commented out with its
    /// default: line by line, the file is the fully written-out config with a '#' before
    /// every line of what it does not set.
    #[test]
    fn every_other_key_is_there_commented_with_its_default() {
        let text = packaged_toml();
        let written_out = format!("{HEADER}\n{}", annotated_toml(&packaged(), &|_| true));
        let (lines, full): (Vec<&str>, Vec<&str>) =
            (text.lines().collect(), written_out.lines().collect());
        assert_eq!(lines.len(), full.len());
        for (l, f) in lines.iter().zip(&full) {
            assert!(*l == *f || l.strip_prefix('#') == Some(f), "{l:?} vs {f:?}");
            let set = *l == *f && (f.contains(" = ") || f.starts_with('[')) && !f.starts_with('#');
            assert_eq!(
                set,
                [
                    "[policy]",
                    "observe = true",
                    "[metrics]",
                    "listen = \"127.0.0.1:9725\""
                ]
                .contains(f),
                "only observe and listen (and their sections) are set: {f}"
            );
        }
        let keys = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#') && l.contains(" = "))
                .map(|l| l.split(" = ").next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(keys(&written_out), keys(&default_toml()));
    }
}
