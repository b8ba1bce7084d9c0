//! mxscreen userspace: loader for the datapath, reputation engine, daemon and CLI.

pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod duration;
pub mod feeds;
pub mod fleet;
pub mod invalid_key;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod nftables;
pub mod policy_service;
pub mod query;
pub mod report;
pub mod reputation;
pub mod socket_file;
pub mod state;
