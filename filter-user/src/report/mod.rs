//! `mxscreen report`: what enforcing would have changed, from mxscreen's decisions joined with
//! the MTA's own log. `mta_log` reads Exim's mainlog and Postfix's mail log into connection,
//! rejection and acceptance events per peer address.

pub mod log;
pub mod mta_log;
