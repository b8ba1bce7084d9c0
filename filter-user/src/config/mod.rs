//! The configuration file (TOML, default `/etc/mxscreen/mxscreen.toml`): the one loader for
//! every section. It owns reading the file, its errors (each one line naming file, line,
//! column and key) and the key documentation `mxscreen config default` prints.
//!
//! The sections themselves live with the code that reads them: `[datapath]`, `[control]`,
//! `[state]` and `[metrics]` in [`sections`], the reputation engine's `[resolver]`, `[[dnsbl]]`, `[rdns]`,
//! `[policy]` and `[lists]` in [`crate::reputation::config`]. Every section has a documented
//! default, so no file at all is a valid, complete configuration. Unknown keys are errors.
//! `config check` and `run` validate with the same code, before anything is touched.

mod docs;
mod error;
pub mod fleet;
pub mod import;
pub mod mta;
pub mod packaged;
pub mod sections;
mod traps;

use std::path::{Path, PathBuf};

use documented::DocumentedFields;
use filter_common::{DatapathConfig, FLAG_HOLD, FLAG_OBSERVE};
use serde::{Deserialize, Serialize};

pub use self::{
    docs::default_toml,
    error::{ConfigError, Located, read_file},
    fleet::FleetSection,
    mta::{PolicyServiceSection, QuerySection},
    sections::{ControlSection, DatapathSection, MetricsSection, StateSection},
};
use crate::{
    datapath::FirstContact,
    duration,
    invalid_key::InvalidKey,
    reputation::config::{
        DnsblConfig, ListsConfig, PolicyConfig, RdnsConfig, ReputationConfig, ResolverConfig,
        default_dnsbls, validate_dnsbls,
    },
};

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mxscreen/mxscreen.toml";

/// New-peer events each CPU may write per second, per lookup per second the engine may
/// spend (`resolver.max_lookups_per_sec`): headroom for sources it takes from its queue.
const EVENTS_PER_LOOKUP: u32 = 4;

/// The whole file. (serde cannot combine `flatten` with `deny_unknown_fields`, so the engine's
/// sections are fields here rather than one flattened [`ReputationConfig`].)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where and how the kernel program screens.
    pub datapath: DatapathSection,
    /// How the reputation engine talks DNS, and how much of it it may do.
    pub resolver: ResolverConfig,
    /// A DNSBL or DNS allowlist zone (RFC 5782), one [[dnsbl]] table each. Writing any
    /// [[dnsbl]] replaces the built-in zones (so one can be dropped); `dnsbl = []` queries
    /// no list at all. Optional keys: `name`, the zone's display name in 5xx texts, logs,
    /// metrics and fleet records (default: the zone without key-like labels; set it for a
    /// zone holding an access key, e.g. `name = "spamhaus-zen"` beside `zone =
    /// "KEY.zen.dq.spamhaus.net"`).
    #[serde(default = "default_dnsbls")]
    pub dnsbl: Vec<DnsblConfig>,
    /// Reverse DNS: a missing PTR and a DNS failure are different things.
    pub rdns: RdnsConfig,
    /// From a score to a verdict, how long it lasts, and what limit means.
    pub policy: PolicyConfig,
    /// Static decisions, before and instead of any lookup; allow wins over deny.
    pub lists: ListsConfig,
    /// The operator's control socket.
    pub control: ControlSection,
    /// Where manual blocks and allows are kept.
    pub state: StateSection,
    /// The socket the MTA (Exim's readsocket) asks about a connecting peer; on by default.
    pub query: QuerySection,
    /// The Postfix policy service (check_policy_service); off by default.
    pub policy_service: PolicyServiceSection,
    /// The Prometheus endpoint (off unless `listen` is set).
    pub metrics: MetricsSection,
    /// Sharing verdicts and manual blocks and allows with the other MX hosts of a fleet
    /// through Redis or Valkey. Off unless redis is set. Each host keeps its own config
    /// lists and screens alone whenever the bus is down.
    pub fleet: FleetSection,
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
            query: QuerySection::default(),
            policy_service: PolicyServiceSection::default(),
            metrics: MetricsSection::default(),
            fleet: FleetSection::default(),
        }
    }
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Self = error::parse(text, origin)?;
        cfg.validate().map_err(|e| error::locate(text, origin, e))?;
        Ok(cfg)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_file(path)?, &path.display().to_string())
    }

    /// `path` if given; else the default path if it exists; else the built-in defaults.
    /// Returns the config and the file it came from.
    pub fn resolve(path: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        match path {
            Some(p) => Ok((Self::load(p)?, Some(p.to_path_buf()))),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => Ok((
                Self::load(Path::new(DEFAULT_CONFIG_PATH))?,
                Some(DEFAULT_CONFIG_PATH.into()),
            )),
            None => Ok((Self::default(), None)),
        }
    }

    /// Every section's checks, in file order; the first failure is reported. Then what
    /// `run` would otherwise find only at start: lists the maps cannot hold.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        self.datapath.validate()?;
        self.resolver.validate()?;
        validate_dnsbls(&self.dnsbl)?;
        self.rdns.validate()?;
        self.policy.validate()?;
        self.lists.validate()?;
        self.control.validate()?;
        self.state.validate()?;
        self.query.validate()?;
        self.policy_service.validate()?;
        self.fleet.validate()?;
        self.lists_as_meant()?;
        self.lists_fit()
    }

    /// `lists.allow` and `lists.deny` as the operator means them. A prefix with host bits
    /// set is a typo more often than not (`192.0.2.7/3` for `/32` would deny 192.0.0.0/3),
    /// so it is refused, as Postfix refuses it in a cidr table. A deny entry may be no wider
    /// than a block by hand without --force (`control.widest_block_*`): a catch-all there
    /// drops every sender's mail.
    fn lists_as_meant(&self) -> Result<(), InvalidKey> {
        for (key, nets) in [
            ("lists.allow", &self.lists.allow),
            ("lists.deny", &self.lists.deny),
        ] {
            if let Some(n) = nets.iter().find(|n| n.addr() != n.network()) {
                return Err(InvalidKey::new(
                    key,
                    format!(
                        "{n} has host bits set: write its network ({}) or the address alone",
                        n.trunc()
                    ),
                ));
            }
        }
        for n in &self.lists.deny {
            if let Some((widest, family)) = self.control.too_wide(n) {
                return Err(InvalidKey::new(
                    "lists.deny",
                    format!(
                        "{n} is wider than /{widest}, the widest prefix denied by hand (control.widest_block_{family}); lower that bound if you mean it"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether the config's own list entries fit the list maps (one a family, sized by
    /// `datapath.maps.deny` and `allow` together); the host's own addresses, manual entries
    /// and feeds come on top, and are refused when they come.
    fn lists_fit(&self) -> Result<(), InvalidKey> {
        let room = self.datapath.maps.lists() as usize;
        let nets = self
            .lists
            .allow_list()
            .into_iter()
            .chain(self.lists.deny.iter().copied());
        let (v4, v6) = nets.fold((0, 0), |(v4, v6), n| match n {
            ipnet::IpNet::V4(_) => (v4 + 1, v6),
            ipnet::IpNet::V6(_) => (v4, v6 + 1),
        });
        if let Some(n) = [v4, v6].into_iter().find(|n| *n > room) {
            return Err(InvalidKey::new(
                "lists.deny",
                format!(
                    "{n} entries of one family with lists.allow (and its built-in ranges) do not fit the list maps' {room} (datapath.maps.deny + allow): raise those"
                ),
            ));
        }
        Ok(())
    }

    /// The runtime config the kernel program reads: `[datapath]` and the datapath side of
    /// `[policy]` (limit rate and burst, observe).
    pub fn kernel(&self) -> DatapathConfig {
        let d = &self.datapath;
        let mut c = DatapathConfig::empty();
        let ok = c.set_ports(&d.ports);
        debug_assert!(ok, "validated");
        c.set_limit(self.policy.limit_rate, self.policy.limit_burst);
        c.dedup_window_ns = duration::nanos(d.dedup_window);
        c.hold_window_ns = duration::nanos(d.hold_max);
        // Events past a few times what the engine can evaluate would only be turned away:
        // the datapath stops writing them (per CPU) and the sources report again at their
        // next SYN. Retransmits and returning senders still get through the budget.
        c.events_per_s = self
            .resolver
            .max_lookups_per_sec
            .saturating_mul(EVENTS_PER_LOOKUP);
        c.explain_window_ns = duration::nanos(self.policy.explain_every);
        if d.first_contact == FirstContact::Hold {
            c.flags |= FLAG_HOLD;
        }
        if self.policy.observe {
            c.flags |= FLAG_OBSERVE;
        }
        c
    }

    /// The sections the reputation engine reads.
    pub fn reputation(&self) -> ReputationConfig {
        ReputationConfig {
            resolver: self.resolver.clone(),
            dnsbl: self.dnsbl.clone(),
            rdns: self.rdns.clone(),
            policy: self.policy.clone(),
            lists: self.lists.clone(),
        }
    }
}

/// A Unix socket's path must fit `sun_path` (108 bytes with its NUL): a longer one binds
/// nowhere, and would fail only at `run`.
pub(crate) fn check_socket_path(key: &str, path: &Path) -> Result<(), InvalidKey> {
    const SUN_PATH: usize = 108;
    let len = path.as_os_str().len();
    if len >= SUN_PATH {
        return Err(InvalidKey::new(
            key,
            format!(
                "{path:?} is {len} bytes; a Unix socket's path must be under {SUN_PATH}: use a shorter one"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::datapath::AttachMode;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml")
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.dnsbl.len(), 2);
        assert_eq!(cfg.policy.drop_threshold, 10);
        let k = cfg.kernel();
        assert_eq!((k.port_count, k.ports[0], k.flags), (1, 25, FLAG_HOLD));
        assert_eq!(k.limit_interval_ns, 10_000_000_000);
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        assert_eq!(parse(&text).unwrap(), Config::default(), "{text}");
    }

    #[test]
    fn datapath_keys_reach_the_kernel_config() {
        let c = parse(
            "[datapath]\nports = [25, 2525]\nfirst_contact = \"hold\"\nhold_max = \"2s\"\nmode = \"tc\"\n[policy]\nobserve = true\nlimit_rate = 60\n",
        )
        .unwrap();
        assert_eq!(c.datapath.mode, AttachMode::Tc);
        let k = c.kernel();
        assert_eq!(k.limit_interval_ns, 1_000_000_000);
        assert_eq!((k.port_count, k.ports[1]), (2, 2525));
        assert_eq!(
            k.flags,
            FLAG_HOLD | FLAG_OBSERVE,
            "FLAG_EXPLAIN is the daemon's, while an MTA asks"
        );
        assert_eq!(k.hold_window_ns, 2_000_000_000);
    }

    #[test]
    fn full_reputation_config_parses() {
        let cfg = parse(
            r#"
            [resolver]
            nameservers = ["127.0.0.1", "127.0.0.2:5353", "[::1]:53"]
            timeout = "500ms"
            attempts = 0
            [[dnsbl]]
            zone = "bl.example"
            weight = 7
            codes = ["127.0.0.2", "127.0.0.4/30", "127.0.0.10-127.0.0.11"]
            [[dnsbl.code_weights]]
            codes = ["127.0.0.10-127.0.0.11"]
            weight = 3
            label = "PBL"
            [rdns]
            enabled = false
            [policy]
            ttl_max = "1d"
            [lists]
            allow = ["192.0.2.0/24"]
            deny = ["2001:db8::/32"]
            "#,
        )
        .unwrap()
        .reputation();
        assert_eq!(
            cfg.resolver.nameservers[1].0,
            "127.0.0.2:5353".parse().unwrap()
        );
        assert_eq!(cfg.resolver.nameservers[0].0.port(), 53);
        assert_eq!(cfg.resolver.timeout, Duration::from_millis(500));
        assert_eq!(cfg.dnsbl.len(), 1);
        assert_eq!(cfg.dnsbl[0].code_weights[0].label, "PBL");
        assert!(!cfg.rdns.enabled);
        assert_eq!(cfg.policy.ttl_max, Duration::from_secs(86_400));
        assert_eq!(cfg.lists.deny.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_line() {
        let msg = err("[policy]\ndrop_threshold = 12\ndrop_treshold = 3\n");
        assert!(
            msg.starts_with("test.toml:3:1: policy.drop_treshold: "),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        let msg = err("[resolvr]\n");
        assert!(
            msg.contains("resolvr") && msg.starts_with("test.toml:1:"),
            "{msg}"
        );
        let msg = err("[[dnsbl]]\nzone = \"a.example\"\nweight = 1\nwieght = 2\n");
        assert!(msg.starts_with("test.toml:4:1: dnsbl[0].wieght: "), "{msg}");
        let msg = err("[policy]\nobserve = true\n[policy]\n");
        assert!(msg.starts_with("test.toml:3:2: policy: duplicate"), "{msg}");
        let msg = err("[datapath]\nportz = [25]\n");
        assert!(msg.starts_with("test.toml:2:1: datapath.portz: "), "{msg}");
    }

    #[test]
    fn type_errors_name_line_and_key() {
        let msg = err("[policy]\nttl_min = \"10\"\n");
        assert!(
            msg.starts_with("test.toml:2:11: policy.ttl_min: ") && msg.contains("missing unit"),
            "{msg}"
        );
        let msg =
            err("[[dnsbl]]\nzone = \"a.example\"\nweight = 1\ncodes = [\"127.0.0.9-127.0.0.2\"]\n");
        assert!(
            msg.starts_with("test.toml:4:")
                && msg.contains("dnsbl[0].codes")
                && msg.contains("range start"),
            "{msg}"
        );
        let msg = err("[resolver]\nnameservers = [\"resolver.example\"]\n");
        assert!(
            msg.starts_with("test.toml:2:")
                && msg.contains("resolver.nameservers: invalid nameserver"),
            "{msg}"
        );
        let msg = err("[lists]\nallow = [\"192.0.2.0/33\"]\n");
        assert!(
            msg.starts_with("test.toml:2:") && msg.contains("lists.allow"),
            "{msg}"
        );
        let msg = err("[[dnsbl]]\nzone = \"a.example\"\n");
        assert!(msg.contains("weight"), "{msg}");
        // No duration past 36500d: each becomes nanoseconds or an Instant offset.
        for (text, key) in [
            (
                "[resolver]\ncanary_every = \"18446744073709551615s\"\n",
                "resolver.canary_every",
            ),
            (
                "[policy]\nexplain_every = \"213504d\"\n",
                "policy.explain_every",
            ),
            (
                "[datapath]\ndedup_window = \"36501d\"\n",
                "datapath.dedup_window",
            ),
        ] {
            let msg = err(text);
            assert!(
                msg.starts_with("test.toml:2:") && msg.contains(key) && msg.contains("36500d"),
                "{msg}"
            );
        }
        let msg = err("[datapath]\nmode = \"fast\"\n");
        assert!(msg.starts_with("test.toml:2:8: datapath.mode: "), "{msg}");
    }

    /// Configs with one bad value: the text, the line and the key its error must name.
    const VALUE_ERRORS: &[(&str, usize, &str)] = &[
        (
            "[policy]\nlimit_threshold = 8\ndrop_threshold = 6\n",
            3,
            "policy.drop_threshold",
        ),
        (
            "[policy]\nlimit_threshold = 0\n",
            2,
            "policy.limit_threshold",
        ),
        (
            "[policy]\nttl_min = \"2h\"\nttl_max = \"1h\"\n",
            3,
            "policy.ttl_max",
        ),
        (
            "[policy]\ntempfail_ttl = \"0s\"\n",
            2,
            "policy.tempfail_ttl",
        ),
        ("[policy]\nlimit_rate = 0\n", 2, "policy.limit_rate"),
        (
            "[policy]\nlimit_burst = 4294967295\n",
            2,
            "policy.limit_burst",
        ),
        ("[datapath]\nhold_max = \"0s\"\n", 2, "datapath.hold_max"),
        (
            "[query]\nsocket = \"/run/mxscreen/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"\n",
            2,
            "query.socket",
        ),
        (
            "[datapath]\nmaps = { deny = 1, allow = 1 }\n[lists]\ndeny = [\"192.0.2.1\", \"192.0.2.2\", \"192.0.2.3\"]\nallow_defaults = false\n",
            4,
            "lists.deny",
        ),
        ("[lists]\ndeny = [\"0.0.0.0/0\"]\n", 2, "lists.deny"),
        ("[lists]\ndeny = [\"192.0.2.7/3\"]\n", 2, "lists.deny"),
        ("[lists]\nallow = [\"192.0.2.7/24\"]\n", 2, "lists.allow"),
        (
            "[control]\nwidest_block_v6 = 48\n[lists]\ndeny = [\"2001:db8::/32\"]\n",
            4,
            "lists.deny",
        ),
        ("[resolver]\nmax_inflight = 0\n", 2, "resolver.max_inflight"),
        ("[resolver]\ntimeout = \"0s\"\n", 2, "resolver.timeout"),
        ("[rdns]\nmax_ptr_names = 0\n", 2, "rdns.max_ptr_names"),
        (
            "[[dnsbl]]\nzone = \"a.example\"\nweight = 1\n[[dnsbl]]\nzone = \"b.example\"\nweight = 2\n[[dnsbl]]\nzone = \"A.example.\"\nweight = 2\n",
            8,
            "dnsbl[2].zone",
        ),
        ("[[dnsbl]]\nzone = \"\"\nweight = 1\n", 2, "dnsbl[0].zone"),
        (
            "[[dnsbl]]\nzone = \"bl example\"\nweight = 1\n",
            2,
            "dnsbl[0].zone",
        ),
        ("[datapath]\nports = []\n", 2, "datapath.ports"),
        ("[datapath]\nports = [0]\n", 2, "datapath.ports"),
        ("[datapath]\nports = [25, 25]\n", 2, "datapath.ports"),
        (
            "[datapath]\ndedup_window = \"0s\"\n",
            2,
            "datapath.dedup_window",
        ),
        ("[datapath]\npin_dir = \"bpf/mx\"\n", 2, "datapath.pin_dir"),
        (
            "[datapath]\ninterfaces = [\"eth0\", \"a/b\"]\n",
            2,
            "datapath.interfaces[1]",
        ),
        (
            "[datapath.maps]\nverdicts = 0\n",
            2,
            "datapath.maps.verdicts",
        ),
        (
            "[policy]\nv6_rotation_after = 1\n",
            2,
            "policy.v6_rotation_after",
        ),
        (
            "[policy]\nv6_rotation_prefix = 128\n",
            2,
            "policy.v6_rotation_prefix",
        ),
        (
            "[[lists.feed]]\nname = \"a b\"\npath = \"/f\"\n",
            2,
            "lists.feed[0].name",
        ),
        (
            "[[lists.feed]]\nname = \"a\"\npath = \"/f\"\n[[lists.feed]]\nname = \"a\"\npath = \"/g\"\n",
            5,
            "lists.feed[1].name",
        ),
        (
            "[[lists.feed]]\nname = \"a\"\npath = \"feeds/a\"\n",
            3,
            "lists.feed[0].path",
        ),
        (
            "[[lists.feed]]\nname = \"a\"\npath = \"/f\"\nformat = \"csv\"\n",
            4,
            "lists.feed[0].format",
        ),
        ("\n[control]\nsocket = \"\"\n", 3, "control.socket"),
        ("[state]\nfile = \"\"\n", 2, "state.file"),
        ("[query]\nsocket = \"q.sock\"\n", 2, "query.socket"),
        ("[query]\ngroup = \"a b\"\n", 2, "query.group"),
        (
            "[policy_service]\nlisten = \"inet:192.0.2.1:10040\"\n",
            2,
            "policy_service.listen",
        ),
        (
            "[policy_service]\nlimit_action = \"\"\n",
            2,
            "policy_service.limit_action",
        ),
        ("[fleet]\nredis = \"http://h\"\n", 2, "fleet.redis"),
        ("[fleet]\nname = \"\"\n", 2, "fleet.name"),
        (
            "[fleet]\npassword_file = \"pw\"\n",
            2,
            "fleet.password_file",
        ),
    ];

    /// Value errors: one line, `FILE:LINE:COL: key: what is wrong and what is allowed`.
    #[test]
    fn value_errors_name_line_and_key() {
        for (text, line, key) in VALUE_ERRORS {
            let msg = err(text);
            let (at, rest) = msg.split_once(&format!(": {key}: ")).unwrap_or(("", ""));
            assert!(
                at.starts_with(&format!("test.toml:{line}:")) && !rest.is_empty(),
                "{key}: {msg}"
            );
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn value_errors_say_what_is_allowed() {
        let ports: Vec<String> = (1..=70).map(|p| p.to_string()).collect();
        let msg = err(&format!("[datapath]\nports = [{}]\n", ports.join(", ")));
        assert!(
            msg.starts_with("test.toml:2:1: datapath.ports: 70 ports given; 1 to 64 are allowed"),
            "{msg}"
        );
        // A value left at its default is reported at the table that made it wrong.
        let msg = err("[policy]\nlimit_threshold = 12\n");
        assert!(msg.starts_with("test.toml:1:"), "{msg}");
        assert!(
            msg.contains("policy.drop_threshold: 10 is below policy.limit_threshold (12)"),
            "{msg}"
        );
    }

    #[test]
    fn empty_dnsbl_list_disables_lists() {
        assert!(parse("dnsbl = []\n").unwrap().dnsbl.is_empty());
    }

    #[test]
    fn public_resolvers_are_spotted() {
        let cfg = parse(
            "[resolver]\nnameservers = [\"127.0.0.1\", \"8.8.8.8\", \"[2606:4700:4700::1111]:53\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.reputation().public_nameservers().len(), 2);
    }

    /// A deny entry wider than a block by hand, or any list prefix with host bits, is
    /// refused with what to write instead; lowering the bound lets a wide deny through.
    #[test]
    fn list_prefixes_are_taken_as_meant() {
        let err = |text: &str| {
            Config::from_toml_str(text, "t.toml")
                .unwrap_err()
                .to_string()
        };
        let msg = err("[lists]\ndeny = [\"192.0.2.7/3\"]\n");
        assert!(
            msg.contains("has host bits set") && msg.contains("192.0.0.0/3"),
            "{msg}"
        );
        let msg = err("[lists]\ndeny = [\"10.0.0.0/8\"]\n");
        assert!(
            msg.contains("wider than /16") && msg.contains("control.widest_block_v4"),
            "{msg}"
        );
        let cfg = Config::from_toml_str(
            "[control]\nwidest_block_v4 = 8\n[lists]\ndeny = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.lists.deny.len(), 2);
    }
}
