//! Helpers shared by the test suites and benchmarks.

pub mod kernel;
pub mod packets;
pub mod netns;
pub mod dns;
pub mod daemon;
pub mod mta;
pub mod testbed;
