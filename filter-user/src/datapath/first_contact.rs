//! What the datapath does with a peer it has no decision for yet.

use serde::{Deserialize, Serialize};

/// What an unknown peer meets before its verdict exists (`datapath.first_contact`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstContact {
    /// Pass it (and resolve it in the background). No mail is ever delayed, and every new
    /// sender's first connection reaches the MTA, listed or not.
    Pass,
    /// Drop its SYNs for at most `hold_max`, so the retransmitted SYN (1 s later) meets the
    /// verdict: even a listed bot's first connection is refused. Costs a clean sender's first
    /// connection one SYN retransmit (about a second). The default: the promise that listed
    /// hosts never reach the MTA holds from their first SYN.
    #[default]
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
