//! mxscreen userspace: loader for the datapath, reputation engine, daemon and CLI.

pub mod datapath;
pub mod logging;
pub mod reputation;
