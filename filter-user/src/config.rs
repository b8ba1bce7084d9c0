//! The daemon's configuration file (TOML, default `/etc/mxscreen/mxscreen.toml`): the
//! datapath section lives here, the reputation engine's sections in
//! [`crate::reputation::config`]. Every section has a documented default, so no file at all
//! is a valid, complete configuration. Unknown keys are errors.

use std::{path::Path, time::Duration};

use filter_common::{DatapathConfig, FLAG_HOLD, FLAG_OBSERVE, MAX_PORTS};
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{AttachMode, MapSizes},
    reputation::{
        config::{
            ConfigError, DnsblConfig, ListsConfig, PolicyConfig, RdnsConfig, ResolverConfig,
            default_dnsbls, parse_toml, read_file,
        },
        duration,
    },
};

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mxscreen/mxscreen.toml";

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub datapath: DatapathSection,
    pub resolver: ResolverConfig,
    #[serde(default = "default_dnsbls")]
    pub dnsbl: Vec<DnsblConfig>,
    pub rdns: RdnsConfig,
    pub policy: PolicyConfig,
    pub lists: ListsConfig,
    pub control: ControlSection,
    pub state: StateSection,
}

/// `[control]`: the operator's socket and the guard rails on what it may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket of the daemon (mode 0600, root only). Default `/run/mxscreen/control.sock`.
    pub socket: std::path::PathBuf,
    /// Widest IPv4 prefix `block` accepts without `--force`. Default `16`: a /16 is already
    /// 65 536 addresses; a typo like `block 0.0.0.0/0` must not shut the MX.
    pub widest_block_v4: u8,
    /// Widest IPv6 prefix `block` accepts without `--force`. Default `32` (one allocation).
    pub widest_block_v6: u8,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            socket: crate::control::DEFAULT_SOCKET.into(),
            widest_block_v4: 16,
            widest_block_v6: 32,
        }
    }
}

/// `[state]`: where manual blocks and allows are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSection {
    /// Default `/var/lib/mxscreen/state.json`.
    pub file: std::path::PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            file: crate::state::DEFAULT_STATE_FILE.into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            datapath: DatapathSection::default(),
            resolver: ResolverConfig::default(),
            dnsbl: default_dnsbls(),
            rdns: RdnsConfig::default(),
            policy: PolicyConfig::default(),
            lists: ListsConfig::default(),
            control: ControlSection::default(),
            state: StateSection::default(),
        }
    }
}

/// What an unknown peer meets before its verdict exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstContact {
    /// Pass it (and resolve it in the background). No mail is ever delayed.
    #[default]
    Pass,
    /// Drop its SYNs for at most `hold_max`, so the retransmitted SYN (1 s later) meets the
    /// verdict: even a listed bot's first connection is refused. Costs a clean sender's first
    /// connection about a second.
    Hold,
}

impl FirstContact {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Hold => "hold",
        }
    }
}

/// `[datapath]`: where and how the kernel program screens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatapathSection {
    /// Interfaces to attach to. Default: empty, meaning the interface of the default route.
    pub interfaces: Vec<String>,
    /// `auto` (native XDP, else generic XDP, else tc), `xdp`, `xdp-generic` or `tc`.
    pub mode: AttachMode,
    /// Destination ports screened. Default `[25]`: the MX port. Submission ports (587, 465)
    /// carry authenticated users and are better left to the MTA.
    pub ports: Vec<u16>,
    /// See [`FirstContact`]. Default `pass`.
    pub first_contact: FirstContact,
    /// Longest hold of an unknown peer with `first_contact = "hold"`. Default `3s`: covers
    /// TCP's first SYN retransmit (1 s) and a slow DNSBL answer, and never more.
    #[serde(with = "duration")]
    pub hold_max: Duration,
    /// An unknown peer is reported to the daemon at most once per this window. Default `30s`.
    #[serde(with = "duration")]
    pub dedup_window: Duration,
    /// Map capacities.
    pub maps: MapSizes,
    /// Where maps are pinned so they survive restarts. Default `/sys/fs/bpf/mxscreen`.
    pub pin_dir: std::path::PathBuf,
}

impl Default for DatapathSection {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: AttachMode::Auto,
            ports: vec![25],
            first_contact: FirstContact::Pass,
            hold_max: Duration::from_secs(3),
            dedup_window: Duration::from_secs(30),
            maps: MapSizes::default(),
            pin_dir: crate::datapath::load::DEFAULT_PIN_DIR.into(),
        }
    }
}

impl DatapathSection {
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("datapath.{k}"), m));
        if self.ports.is_empty() || self.ports.len() > MAX_PORTS {
            return bad("ports", format!("needs 1 to {MAX_PORTS} ports"));
        }
        if self.ports.contains(&0) {
            return bad("ports", "port 0 is not a port".into());
        }
        if self.hold_max > Duration::from_secs(30) {
            return bad(
                "hold_max",
                "more than 30s would make clean senders give up".into(),
            );
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Self = parse_toml(text, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_file(path)?, &path.display().to_string())
    }

    /// `path` if given; else the default path if it exists; else the built-in defaults.
    /// Returns the config and the file it came from.
    pub fn resolve(path: Option<&Path>) -> Result<(Self, Option<std::path::PathBuf>), ConfigError> {
        match path {
            Some(p) => Ok((Self::load(p)?, Some(p.to_path_buf()))),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => Ok((
                Self::load(Path::new(DEFAULT_CONFIG_PATH))?,
                Some(DEFAULT_CONFIG_PATH.into()),
            )),
            None => Ok((Self::default(), None)),
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.datapath
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                message,
            })?;
        if self.control.widest_block_v4 > 32 || self.control.widest_block_v6 > 128 {
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "control.widest_block_v4/v6".into(),
                message: "a prefix length is at most 32 (IPv4) or 128 (IPv6)".into(),
            });
        }
        self.reputation().validate().map_err(|e| e.at(origin))
    }

    /// The runtime config the kernel program reads: `[datapath]` and the datapath side of
    /// `[policy]` (limit rate and burst, observe).
    pub fn kernel(&self) -> DatapathConfig {
        let d = &self.datapath;
        let mut c = DatapathConfig::empty();
        let ok = c.set_ports(&d.ports);
        debug_assert!(ok, "validated");
        c.set_limit(self.policy.limit_rate, self.policy.limit_burst);
        c.dedup_window_ns = d.dedup_window.as_nanos() as u64;
        c.hold_window_ns = d.hold_max.as_nanos() as u64;
        if d.first_contact == FirstContact::Hold {
            c.flags |= FLAG_HOLD;
        }
        if self.policy.observe {
            c.flags |= FLAG_OBSERVE;
        }
        c
    }

    /// The sections the reputation engine reads.
    pub fn reputation(&self) -> crate::reputation::config::ReputationConfig {
        crate::reputation::config::ReputationConfig {
            resolver: self.resolver.clone(),
            dnsbl: self.dnsbl.clone(),
            rdns: self.rdns.clone(),
            policy: self.policy.clone(),
            lists: self.lists.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml_str("", "t").unwrap(), Config::default());
        let k = Config::default().kernel();
        assert_eq!((k.port_count, k.ports[0], k.flags), (1, 25, 0));
        assert_eq!(k.limit_interval_ns, 10_000_000_000);
    }

    #[test]
    fn datapath_keys_reach_the_kernel_config() {
        let c = Config::from_toml_str(
            "[datapath]\nports = [25, 2525]\nfirst_contact = \"hold\"\nhold_max = \"2s\"\nmode = \"tc\"\n[policy]\nobserve = true\nlimit_rate = 60\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.datapath.mode, AttachMode::Tc);
        let k = c.kernel();
        assert_eq!(k.limit_interval_ns, 1_000_000_000);
        assert_eq!((k.port_count, k.ports[1]), (2, 2525));
        assert_eq!(k.flags, FLAG_HOLD | FLAG_OBSERVE);
        assert_eq!(k.hold_window_ns, 2_000_000_000);
    }

    #[test]
    fn errors_name_the_line_or_key() {
        let e = Config::from_toml_str("[datapath]\nportz = [25]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:2:"), "{e}");
        assert!(e.contains("portz"), "{e}");
        let e = Config::from_toml_str("[datapath]\nports = []\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f.toml: datapath.ports: needs 1 to 64 ports");
        let e = Config::from_toml_str("[datapath]\nmode = \"fast\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:2:"), "{e}");
    }
}

/// The full default config as TOML, every key preceded by its documentation: values come from
/// the `Default` impls (so they cannot drift), words from [`KEY_DOCS`].
pub fn default_toml() -> String {
    let body = toml::to_string_pretty(&Config::default()).expect("the default config serializes");
    let mut out = String::from(
        "# mxscreen configuration: every key with its default. Delete what you do not change.\n\
         # Durations are written like \"90s\", \"10m\", \"24h\", \"7d\".\n\n",
    );
    let mut section = String::new();
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.trim_matches(['[', ']']).to_owned();
            if let Some(doc) = doc_for(&section) {
                push_doc(&mut out, doc);
            }
        } else if let Some((key, _)) = trimmed.split_once(" = ")
            && !key.starts_with('"')
            && let Some(doc) = doc_for(&format!("{section}.{key}"))
        {
            push_doc(&mut out, doc);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn push_doc(out: &mut String, doc: &str) {
    for l in doc.lines() {
        out.push_str("# ");
        out.push_str(l);
        out.push('\n');
    }
}

fn doc_for(key: &str) -> Option<&'static str> {
    KEY_DOCS.iter().find(|(k, _)| *k == key).map(|(_, d)| *d)
}

/// One line of documentation per section and key, printed by `mxscreen config default`.
/// The reasons behind each default are in the doc comments of the config structs.
pub const KEY_DOCS: &[(&str, &str)] = &[
    ("datapath", "Where and how the kernel program screens."),
    (
        "datapath.interfaces",
        "Interfaces to attach to; empty = the default-route interface.",
    ),
    (
        "datapath.mode",
        "auto (native XDP, else generic XDP, else tc), xdp, xdp-generic or tc.",
    ),
    ("datapath.ports", "Destination ports screened (1 to 64)."),
    (
        "datapath.first_contact",
        "pass: unknown peers pass while resolved; hold: their SYNs are dropped until the verdict (at most hold_max).",
    ),
    (
        "datapath.hold_max",
        "Longest hold of an unknown peer with first_contact = \"hold\".",
    ),
    (
        "datapath.dedup_window",
        "An unknown peer is reported to the daemon at most once per window.",
    ),
    (
        "datapath.pin_dir",
        "Where the maps are pinned so they survive restarts.",
    ),
    (
        "datapath.maps",
        "Map capacities (per address family); changing them recreates the maps.",
    ),
    (
        "datapath.maps.verdicts",
        "Cached verdicts (LRU, preallocated).",
    ),
    (
        "datapath.maps.seen",
        "Recently reported unknown peers (LRU, preallocated).",
    ),
    (
        "datapath.maps.buckets",
        "Token buckets of limited sources (LRU, preallocated).",
    ),
    ("datapath.maps.deny", "Deny prefixes (allocated on use)."),
    ("datapath.maps.allow", "Allow prefixes (allocated on use)."),
    (
        "resolver",
        "How the reputation engine talks DNS, and how much of it it may do.",
    ),
    (
        "resolver.nameservers",
        "Recursive resolvers, \"ip\" or \"ip:port\"; empty = /etc/resolv.conf. Use your own (unbound on the MX): DNSBLs refuse public resolvers.",
    ),
    ("resolver.timeout", "How long one query may take."),
    ("resolver.attempts", "Retries after a failed attempt."),
    ("resolver.max_inflight", "Peers being resolved at once."),
    (
        "resolver.max_lookups_per_sec",
        "New evaluations started per second; beyond it peers stay unknown (and pass).",
    ),
    (
        "resolver.queue_len",
        "Peers waiting for an evaluation; beyond it peers stay unknown (and pass).",
    ),
    (
        "resolver.cache_size",
        "The resolver's own answer cache (verdicts are cached in the maps already).",
    ),
    (
        "rdns",
        "Reverse DNS: a missing PTR vs a DNS failure are different things.",
    ),
    ("rdns.enabled", "Look up PTR and forward-confirm it."),
    (
        "rdns.missing_ptr_weight",
        "Score added when the address has no PTR (NXDOMAIN or no record).",
    ),
    (
        "rdns.fcrdns_mismatch_weight",
        "Score added when no PTR name resolves back to the address.",
    ),
    ("rdns.max_ptr_names", "PTR names forward-checked at most."),
    (
        "policy",
        "From a score to a verdict, and how long it lasts.",
    ),
    (
        "policy.limit_threshold",
        "Score at or above which the peer is rate-limited.",
    ),
    (
        "policy.drop_threshold",
        "Score at or above which the peer is dropped.",
    ),
    (
        "policy.ttl_min",
        "Shortest life of a limit/drop verdict (answers' TTLs are clamped to ttl_min..ttl_max).",
    ),
    ("policy.ttl_max", "Longest life of a limit/drop verdict."),
    ("policy.pass_ttl", "Life of a pass verdict."),
    (
        "policy.tempfail_ttl",
        "Life of a verdict made while DNS was failing.",
    ),
    (
        "policy.limit_rate",
        "What a limit verdict means in the datapath: SYNs per minute per source.",
    ),
    (
        "policy.limit_burst",
        "... with bursts of up to this many SYNs.",
    ),
    (
        "policy.observe",
        "Decide, log and count, but never drop or limit (also `mxscreen run --observe`).",
    ),
    (
        "lists",
        "Static decisions, before and instead of any lookup; allow wins over deny.",
    ),
    (
        "lists.allow",
        "Always pass (and never drop) these prefixes.",
    ),
    ("lists.deny", "Always drop these prefixes."),
    ("control", "The operator's control socket."),
    (
        "control.socket",
        "Unix socket of the daemon (mode 0600, root only).",
    ),
    (
        "control.widest_block_v4",
        "Widest IPv4 prefix `block` accepts without --force.",
    ),
    (
        "control.widest_block_v6",
        "Widest IPv6 prefix `block` accepts without --force.",
    ),
    ("state", "Where manual blocks and allows are kept."),
    ("state.file", "JSON, written atomically on every change."),
    (
        "dnsbl",
        "A DNSBL or DNS allowlist zone (RFC 5782). Writing any [[dnsbl]] replaces the defaults.",
    ),
    ("dnsbl.zone", "The zone queried."),
    (
        "dnsbl.weight",
        "Score added by a listing (negative for allowlists).",
    ),
    (
        "dnsbl.codes",
        "Answer codes that count (addresses, CIDRs or a-b ranges); empty = all of 127.0.0.0/8 but 127.255.255.0/24.",
    ),
    (
        "dnsbl.error_codes",
        "Answer codes that mean the zone refused the query (never a listing).",
    ),
    (
        "dnsbl.code_weights",
        "Per-code weights overriding `weight`, e.g. SBL vs PBL.",
    ),
];

#[cfg(test)]
mod default_doc_tests {
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
}
