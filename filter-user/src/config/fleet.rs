//! `[fleet]`: the MX hosts of one fleet share reputation verdicts and manual entries through
//! Redis or Valkey. Off unless `redis` is set. The section only says where the bus is and
//! who this host is; what travels on it and how is [`crate::fleet`]'s business.

use std::path::PathBuf;

use documented::DocumentedFields;
use redis::{ConnectionAddr, IntoConnectionInfo as _};
use serde::{Deserialize, Serialize};

use crate::invalid_key::InvalidKey;

/// Default `prefix`.
pub const DEFAULT_PREFIX: &str = "mxscreen";
/// The port of a Sentinel written without one.
const SENTINEL_PORT: u16 = 26379;

/// `[fleet]`: share verdicts and manual entries with the other MX hosts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSection {
    /// Redis or Valkey shared by the fleet; no value (the default) keeps this host on its
    /// own. "redis://HOST:6379/DB", "rediss://..." for TLS, or through Sentinel
    /// "redis+sentinel://S1:26379,S2:26379/MASTER_NAME/DB" ("rediss+sentinel://" for TLS).
    /// A password may be written in the URL ("redis://:PASSWORD@HOST/0") or, better, in
    /// password_file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// File holding the Redis password (one line, mode 0600); it wins over a password in
    /// the URL. Never given on the command line. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// This host's name in the fleet, shown by `list` beside what it shared. Unique per
    /// host: 1 to 64 letters, digits, '.', '-' or '_'. Default: the hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prefix of every Redis key and channel, so several fleets (or other programs) can
    /// share one Redis. Default "mxscreen".
    pub prefix: String,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            redis: None,
            password_file: None,
            name: None,
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

/// What `config default` shows, commented out, for the keys that are absent by default.
pub const OPTIONAL_EXAMPLES: &[(&str, &str)] = &[
    ("redis", "\"redis://127.0.0.1:6379/0\""),
    ("password_file", "\"/etc/mxscreen/redis.password\""),
    ("name", "\"mx1.example.net\""),
];

/// Where the bus is, parsed from `fleet.redis`.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// One Redis/Valkey server.
    Direct(redis::ConnectionInfo),
    /// A primary found through Sentinels.
    Sentinel {
        sentinels: Vec<ConnectionAddr>,
        master: String,
        db: i64,
        tls: bool,
        password: Option<String>,
    },
}

impl FleetSection {
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }

    pub fn validate(&self) -> Result<(), InvalidKey> {
        if let Some(url) = &self.redis {
            parse_endpoint(url).map_err(|m| InvalidKey::new("fleet.redis", m))?;
        }
        if let Some(p) = &self.password_file
            && !p.is_absolute()
        {
            return Err(InvalidKey::new(
                "fleet.password_file",
                format!("{p:?} is relative; use an absolute path"),
            ));
        }
        if let Some(name) = &self.name
            && let Err(why) = check_name(name)
        {
            return Err(InvalidKey::new("fleet.name", format!("{name:?} {why}")));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err(InvalidKey::new(
                "fleet.prefix",
                format!(
                    "{:?}: 1 to 64 letters, digits, '.', '_', ':' or '-' are allowed",
                    self.prefix
                ),
            ));
        }
        Ok(())
    }

    /// The endpoint (`None` when the fleet is off).
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.redis
            .as_deref()
            .map(|u| parse_endpoint(u).expect("validated"))
    }
}

/// A host name as the fleet carries it (also checked on every entry received).
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("is not a fleet host name: 1 to 64 letters, digits, '.', '-' or '_'");
    }
    Ok(())
}

/// The URL without its password, for logs and `status`.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!(
            "{:?} is not a URL; write redis://HOST:6379/0",
            redacted(url)
        )
    })?;
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" => url
            .into_connection_info()
            .map(Endpoint::Direct)
            .map_err(|e| format!("{}: {e}", redacted(url))),
        "redis+sentinel" | "rediss+sentinel" => parse_sentinel(rest, scheme == "rediss+sentinel")
            .map_err(|m| format!("{}: {m}", redacted(url))),
        other => Err(format!(
            "unknown scheme {other:?}; use redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel://"
        )),
    }
}

/// `[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER_NAME[/DB]`.
fn parse_sentinel(rest: &str, tls: bool) -> Result<Endpoint, String> {
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let password = auth
        .and_then(|a| a.split_once(':').map(|(_, p)| p).or(Some(a)))
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("no master name; write redis+sentinel://HOST:26379/MASTER_NAME/0")?;
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let master = parts
        .next()
        .ok_or("no master name; write redis+sentinel://HOST:26379/MASTER_NAME/0")?
        .to_owned();
    let db = match parts.next() {
        None => 0,
        Some(d) => d
            .parse()
            .map_err(|_| format!("database {d:?} is not a number"))?,
    };
    let mut sentinels = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => (
                host,
                port.parse()
                    .map_err(|_| format!("port {port:?} of {h:?} is not a number"))?,
            ),
            _ => (h, SENTINEL_PORT),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err("a Sentinel address is empty".into());
        }
        sentinels.push(if tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        });
    }
    Ok(Endpoint::Sentinel {
        sentinels,
        master,
        db,
        tls,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert!(matches!(
            parse_endpoint("redis://127.0.0.1:6379/0"),
            Ok(Endpoint::Direct(_))
        ));
        assert!(matches!(
            parse_endpoint("rediss://:pw@redis.example:6380/2"),
            Ok(Endpoint::Direct(_))
        ));
        let Ok(Endpoint::Sentinel {
            sentinels,
            master,
            db,
            tls,
            password,
        }) = parse_endpoint("redis+sentinel://:s3cret@10.0.0.1,10.0.0.2:26380/mx/3")
        else {
            panic!("sentinel form");
        };
        assert_eq!(sentinels.len(), 2);
        assert_eq!(sentinels[0], ConnectionAddr::Tcp("10.0.0.1".into(), 26379));
        assert_eq!(sentinels[1], ConnectionAddr::Tcp("10.0.0.2".into(), 26380));
        assert_eq!((master.as_str(), db, tls), ("mx", 3, false));
        assert_eq!(password.as_deref(), Some("s3cret"));
        for bad in [
            "127.0.0.1:6379",
            "http://x",
            "redis+sentinel://h:1",
            "redis+sentinel://h:x/m",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("redis://:pw@h:6379/0"),
            "redis://***@h:6379/0".to_owned()
        );
        assert_eq!(redacted("redis://h/0"), "redis://h/0");
    }

    #[test]
    fn names_and_prefixes_are_checked() {
        let mut f = FleetSection {
            name: Some("mx 1".into()),
            ..Default::default()
        };
        assert_eq!(f.validate().unwrap_err().key, "fleet.name");
        f.name = Some("mx1.example".into());
        f.prefix = "a b".into();
        assert_eq!(f.validate().unwrap_err().key, "fleet.prefix");
        f.prefix = "mx:prod".into();
        assert!(f.validate().is_ok());
    }
}
