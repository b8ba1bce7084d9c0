//! The MTA asks mxscreen: what the daemon holds about one peer, answered in one line without
//! ever waiting on DNS or on the daemon's main loop.
//!
//! - [`answer`]: the answer and its line (`action=drop score=15 ... text="..."`), quoted so
//!   Exim's `${extract{KEY}{...}}` reads every field;
//! - [`evidence`]: the bounded cache of the last evaluations' evidence (score, strongest
//!   listing) the maps do not hold;
//! - [`oracle`]: the answer for an address, from a second handle on the maps, the lists and
//!   the evidence cache; an address never seen starts its evaluation;
//! - [`server`]: the query socket for Exim's `readsocket` (one address in, one line out);
//! - [`asks`]: what the MTA asked about, counted for the balancer watch.
//!
//! The Postfix policy service ([`crate::policy_service`]) gives the same answers in its own
//! protocol.

pub mod answer;
pub mod asks;
pub mod evidence;
pub mod oracle;
pub mod server;

pub use answer::{Answer, Told};
pub use asks::MtaAsks;
pub use evidence::EvidenceCache;
pub use oracle::Oracle;

/// Default path of the query socket (`query.socket`).
pub const DEFAULT_SOCKET: &str = "/run/mxscreen/query.sock";
