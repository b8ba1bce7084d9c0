//! The sections for the MTA behind mxscreen: `[query]`, the socket Exim's `readsocket` asks,
//! and `[policy_service]`, the Postfix policy service. Both answer from what the daemon
//! holds and never wait on DNS.
//!
//! A field's doc comment is what `mxscreen config default` prints above the key.

use std::path::PathBuf;

use documented::DocumentedFields;
use serde::{Deserialize, Serialize};

use crate::{invalid_key::InvalidKey, policy_service::Listen};

/// Groups the query socket is given when `query.group` is empty: the first that exists.
pub const MTA_GROUPS: &[&str] = &["Debian-exim", "exim", "postfix"];
/// ... and the policy socket, when `policy_service.group` is empty.
pub const POSTFIX_GROUPS: &[&str] = &["postfix"];

/// `[query]`: the socket the MTA asks about a connecting peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySection {
    /// Unix socket for Exim's readsocket: the MTA writes one address and a newline, mxscreen
    /// answers one line of key=value fields (action, score, ttl, source, zone, code, label,
    /// text, explain_in) and closes. Mode 0660. Default /run/mxscreen/query.sock; "" turns it
    /// off.
    pub socket: PathBuf,
    /// Group of the socket: the group the MTA runs as. Default "": the first of Debian-exim,
    /// exim and postfix that exists on the host (root's group if none does).
    pub group: String,
    /// How long a question about a peer whose evaluation is under way (its first contact
    /// reached the MTA: `first_contact = "pass"`, or a DNSBL slower than `hold_max`) waits
    /// for the verdict before answering `unknown`. Applies to the policy service too.
    /// Default "4s", which covers a DNSBL answering within the resolver's timeout and
    /// retry; keep the MTA's own timeout for the question above it (the README's snippets
    /// use 6 s). "0s": never wait.
    #[serde(with = "crate::duration")]
    pub wait_max: std::time::Duration,
}

impl Default for QuerySection {
    fn default() -> Self {
        Self {
            socket: crate::query::DEFAULT_SOCKET.into(),
            group: String::new(),
            wait_max: std::time::Duration::from_secs(4),
        }
    }
}

impl QuerySection {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if !self.socket.as_os_str().is_empty() && !self.socket.is_absolute() {
            return Err(InvalidKey::new(
                "query.socket",
                format!(
                    "{:?} is relative; use an absolute path such as /run/mxscreen/query.sock",
                    self.socket
                ),
            ));
        }
        super::check_socket_path("query.socket", &self.socket)?;
        if self.wait_max > std::time::Duration::from_secs(30) {
            return Err(InvalidKey::new(
                "query.wait_max",
                "is over 30s: the MTA holds a connection open that long for its answer; use at most 30s",
            ));
        }
        check_group("query.group", &self.group)
    }
}

/// `[policy_service]`: Postfix's SMTPD access policy delegation protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyServiceSection {
    /// Where the policy service listens, as Postfix names it in check_policy_service:
    /// "inet:127.0.0.1:10040" (loopback only: the protocol has no authentication; what
    /// Debian's chrooted smtpd can reach) or "unix:/run/mxscreen/policy.sock" (mode 0660; an
    /// smtpd that is not chrooted). Default "": off.
    pub listen: Listen,
    /// What Postfix is told for a peer mxscreen limits. Default "DUNNO": the datapath already
    /// paces its connections; "SLEEP 10" or "DEFER_IF_PERMIT 4.7.1 ..." are other choices.
    /// A peer to drop is told "554 5.7.1 ..." naming the list and code, a blocked one "554
    /// 5.7.1 ... blocked by local policy"; any other, "DUNNO".
    pub limit_action: String,
    /// Group of a unix: socket: the group Postfix runs as. Default "": postfix, if it exists.
    pub group: String,
}

impl Default for PolicyServiceSection {
    fn default() -> Self {
        Self {
            listen: Listen::Off,
            limit_action: "DUNNO".into(),
            group: String::new(),
        }
    }
}

impl PolicyServiceSection {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let a = self.limit_action.trim();
        if a.is_empty() || a != self.limit_action || a.contains(|c: char| c.is_control()) {
            return Err(InvalidKey::new(
                "policy_service.limit_action",
                "must be one Postfix action on one line, such as DUNNO or SLEEP 10",
            ));
        }
        if let Listen::Unix(path) = &self.listen {
            super::check_socket_path("policy_service.listen", path)?;
        }
        check_group("policy_service.group", &self.group)
    }
}

fn check_group(key: &str, group: &str) -> Result<(), InvalidKey> {
    if group.contains(|c: char| c.is_whitespace() || c == ':' || c.is_control()) {
        return Err(InvalidKey::new(
            key,
            format!("{group:?} is not a group name"),
        ));
    }
    Ok(())
}
