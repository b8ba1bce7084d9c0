//! Parts of the `status` reply that watches outside the main loop fill: the balancer watch
//! (`daemon::balancer`) and explained refusals (the MTA's questions, `query::asks`).
//! Re-exported by [`super::protocol`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The balancer watch's last window (see `daemon::balancer`): what it measured and what it
/// suspects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerStatus {
    /// The window's length.
    pub window_secs: u64,
    /// SYNs to the screened ports in the last window.
    pub syns: u64,
    /// The MTA's questions about addresses on no list in the last window.
    pub asks: u64,
    /// One source carried most of the SYNs (`source`: which).
    pub one_source: BalancerCheck,
    /// The built-in private ranges carried most of the SYNs.
    pub private_sources: BalancerCheck,
    /// Most questions were about addresses whose SYN the datapath never saw.
    pub unseen_peers: BalancerCheck,
}

/// One of the balancer watch's checks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BalancerCheck {
    /// As of the last window with enough traffic to tell.
    pub suspected: bool,
    /// The share (0 to 1) that window measured.
    pub share: f64,
    /// The source that carried it (`one_source` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// Unix seconds since `suspected` has had its value; `None` before any window decided.
    #[serde(default)]
    pub since: Option<u64>,
}

/// Explained refusals as they stand: the datapath lets a listed sender's connection through
/// to be refused with the listing only while an MTA asks (see `policy.explain_every`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainStatus {
    /// Whether the datapath explains now (a window is set and the MTA asked within it).
    pub on: bool,
    /// `policy.explain_every` in seconds; 0: off by config.
    pub every_secs: u64,
    /// `policy.explain_to`: `fcrdns` or `all`.
    pub to: String,
    /// Unix seconds of the MTA's last question (query socket or policy service); `None`:
    /// none since the daemon started.
    pub mta_last_asked: Option<u64>,
}
