//! Helpers shared by the test suites and benchmarks.

pub mod bed;
pub mod daemon;
pub mod dns;
pub mod kernel;
pub mod mta;
pub mod netns;
pub mod packets;
pub mod reference;
pub mod testbed;
