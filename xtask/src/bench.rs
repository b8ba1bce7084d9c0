//! `cargo xtask bench NAME`: benchmarks are binaries of the tests crate (release build),
//! printing their tables; results and commands are recorded in BENCHMARKS.md.

use anyhow::Result;

use crate::util::{cargo, status};

pub fn run(name: &str) -> Result<()> {
    // The daemon benchmark runs the real release binary.
    status(cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "filter-user",
        "--bin",
        "mxscreen",
    ]))?;
    status(cargo().args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "mxscreen-tests",
        "--bin",
        // `mta-dns` is the binary bench_mta_dns.
        &format!("bench_{}", name.replace('-', "_")),
    ]))
}
