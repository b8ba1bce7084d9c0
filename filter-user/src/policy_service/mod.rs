//! The Postfix policy service: the SMTPD access policy delegation protocol ([`codec`]) on a
//! Unix or loopback TCP socket ([`server`]), giving the query socket's answers
//! ([`crate::query`]) as Postfix actions ([`action`]):
//!
//! | mxscreen says | Postfix is told |
//! |---|---|
//! | `drop` | `554 5.7.1 Service unavailable; Client host [IP] blocked using ZONE, code CODE (LABEL); TEXT` |
//! | `block` | `554 5.7.1 Service unavailable; Client host [IP] blocked by local policy` |
//! | `limit` | `policy_service.limit_action` (`DUNNO` by default) |
//! | `pass`, `allow`, `unknown` | `DUNNO` |
//! | anything, for an authenticated client (`sasl_username`) | `DUNNO` |

pub mod action;
pub mod codec;
pub mod listen;
pub mod server;

pub use action::action_for;
pub use listen::Listen;
