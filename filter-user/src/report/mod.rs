//! `mxscreen report`: what enforcing would have changed, from mxscreen's decisions joined with
//! the MTA's own log. The daemon appends each drop and limit verdict to the decision log
//! (`log`, through the `recorder`'s thread); `sources` reads the MTA's log, which `mta_log`
//! turns into connection, rejection and acceptance events per peer address (`exim_log` reads
//! Exim's lines, `stamps` and `time` when they were written); `join` puts the two together
//! and `render` writes the text (`--json` serializes the join's report).

mod exim_log;
pub mod join;
pub mod log;
pub mod mta_log;
mod recorder;
pub mod render;
pub mod sources;
mod stamps;
mod time;

pub use recorder::Recorder;
