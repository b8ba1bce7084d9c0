//! mxscreen userspace: loader for the datapath, reputation engine, daemon and CLI.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod logging;
pub mod reputation;
pub mod state;
