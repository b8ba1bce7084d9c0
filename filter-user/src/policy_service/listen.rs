//! Where the policy service listens: `policy_service.listen`, written as Postfix writes a
//! policy server's address — `unix:/run/mxscreen/policy.sock` or `inet:127.0.0.1:10040` —
//! or `""` for off (the default).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};

/// `policy_service.listen`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Listen {
    /// No policy service.
    #[default]
    Off,
    /// A Unix socket (mode 0660, the MTA's group).
    Unix(PathBuf),
    /// A TCP socket on a loopback address: the protocol has no authentication.
    Inet(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Listen::Off);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{s:?}: the socket path must be absolute, e.g. unix:/run/mxscreen/policy.sock"
                ));
            }
            return Ok(Listen::Unix(path.into()));
        }
        if let Some(addr) = s.strip_prefix("inet:") {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                format!(
                    "{s:?}: write inet:ADDRESS:PORT, e.g. inet:127.0.0.1:10040 or inet:[::1]:10040"
                )
            })?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "{s:?}: the policy service has no authentication; listen on a loopback address (127.0.0.1, ::1)"
                ));
            }
            return Ok(Listen::Inet(addr));
        }
        Err(format!(
            "{s:?}: write unix:/PATH or inet:127.0.0.1:PORT (or \"\" for off)"
        ))
    }
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Listen> for String {
    fn from(l: Listen) -> String {
        l.to_string()
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => Ok(()),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Inet(a) => write!(f, "inet:{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_style_addresses() {
        for s in [
            "unix:/run/mxscreen/policy.sock",
            "inet:127.0.0.1:10040",
            "inet:[::1]:10040",
            "",
        ] {
            let l: Listen = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
        }
        assert_eq!("".parse::<Listen>().unwrap(), Listen::Off);
        for (bad, why) in [
            ("inet:192.0.2.1:10040", "loopback"),
            ("inet:localhost:10040", "inet:ADDRESS:PORT"),
            ("unix:policy.sock", "absolute"),
            ("/run/mxscreen/policy.sock", "unix:/PATH"),
        ] {
            let e = bad.parse::<Listen>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
