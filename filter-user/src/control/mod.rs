//! The control socket: the one channel between the operator's CLI and the running daemon.
//!
//! - [`protocol`]: the messages and their framing (length-prefixed JSON, bounded).
//! - [`server`]: the daemon side (socket mode 0600, root peers only, removed on shutdown).
//! - [`client`]: the CLI side (checks the socket before connecting, says what to do).

pub mod client;
pub mod protocol;
pub mod server;

/// Default socket path (`control.socket`).
pub const DEFAULT_SOCKET: &str = "/run/mxscreen/control.sock";
