//! The control socket: the one channel between the operator's CLI and the running daemon.
//!
//! - [`protocol`]: the requests and replies, every field typed.
//! - [`frame`]: how they travel (length-prefixed JSON, bounded before allocating).
//! - [`server`]: the daemon side (socket mode 0600, root peers only, removed on shutdown).
//! - [`client`]: the CLI side (one method per request; checks the socket before connecting).
//! - [`watch`]: the status parts the balancer watch and the MTA's questions fill.
//! - [`fleet_status`]: the status part the fleet task fills.

pub mod client;
pub mod fleet_status;
pub mod frame;
pub mod protocol;
pub mod server;
pub mod watch;

/// Default socket path (`control.socket`).
pub const DEFAULT_SOCKET: &str = "/run/mxscreen/control.sock";
