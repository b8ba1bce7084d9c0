//! The fleet's part of the `status` reply: whether the link to Redis is up and what went
//! over it, filled by the fleet task (`fleet::link`). Re-exported by [`super::protocol`].

use serde::{Deserialize, Serialize};

/// Whether the fleet bus is reachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetLink {
    /// Connected and in sync: changes travel both ways.
    Up,
    /// Not connected (never yet, or lost): this host screens alone and retries with backoff.
    #[default]
    Down,
}

/// The fleet link and what went over it (counters since the daemon started; a field an
/// older daemon does not send is its default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetStatus {
    /// This host's name in the fleet.
    pub host: String,
    /// The Redis URL, without its password.
    pub redis: String,
    pub link: FleetLink,
    /// Unix seconds since the link has been in its current state.
    pub since: u64,
    /// Why the link last went down or could not come up.
    pub last_error: Option<String>,
    /// Times the link came up (the first connection included).
    pub connects: u64,
    pub verdicts_sent: u64,
    pub verdicts_received: u64,
    pub manual_sent: u64,
    pub manual_received: u64,
    /// New peers this host evaluated after claiming them for the fleet,
    pub claims_won: u64,
    /// ... whose evaluation another host had claimed,
    pub claims_lost: u64,
    /// ... and of those, the ones evaluated here after all because no verdict came in time.
    pub claims_timed_out: u64,
    /// Entries read from the bus that did not parse or check out, logged and ignored.
    pub malformed: u64,
    /// Shared entries this host refused (a block covering a protected address, a block
    /// wider than `control.widest_block_*` made without --force).
    pub refused: u64,
    /// Messages from another process using this host's fleet name (two hosts with one
    /// name: set a distinct `fleet.name` on each).
    pub name_clashes: u64,
    /// Unix seconds of the latest of them.
    pub name_clash_at: Option<u64>,
    /// Times this host found Redis emptied under it (its marker key gone) and filled it
    /// again.
    pub refills: u64,
    /// Times the fleet task failed (a bug, logged) and was restarted.
    pub task_restarts: u64,
}
