//! `cargo xtask bench NAME`: benchmarks are binaries of the tests crate (release build),
//! printing their tables; results and commands are recorded in BENCHMARKS.md.

use anyhow::Result;

use crate::util::{cargo, status};

pub fn run(name: &str, quick: bool) -> Result<()> {
    // The daemon, fleet, feeds and MTA benchmarks run the real release binary.
    crate::util::build(true)?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "mxscreen-tests",
        "--bin",
    ])
    .arg(binary(name));
    if quick {
        cmd.args(["--", "--quick"]);
    }
    status(&mut cmd)
}

/// The binary of benchmark `name`: `mta-dns` is bench_mta_dns.
pub fn binary(name: &str) -> String {
    format!("bench_{}", name.replace('-', "_"))
}
