//! Helpers shared by the test suites and benchmarks.

pub mod bed;
pub mod bench;
pub mod daemon;
pub mod dns;
pub mod flood;
pub mod kernel;
pub mod logfmt;
pub mod metrics;
pub mod mta;
pub mod netns;
pub mod packets;
pub mod postfix;
pub mod readme;
pub mod receivers;
pub mod redis;
pub mod reference;
pub mod smtp;
pub mod testbed;
