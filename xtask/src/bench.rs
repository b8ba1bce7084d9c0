//! `cargo xtask bench NAME`: benchmarks are binaries of the tests crate (release build),
//! printing their tables; results and commands are recorded in BENCHMARKS.md.

use std::process::Command;

use anyhow::Result;

use crate::util::{cargo, status};

pub fn run(name: &str, quick: bool) -> Result<()> {
    // The daemon benchmark runs the real release binary.
    crate::util::build(true)?;
    status(&mut command(name, quick))
}

/// The command that runs benchmark `name` (`--quick`: its smoke mode, as CI runs it).
pub fn command(name: &str, quick: bool) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "mxscreen-tests",
        "--bin",
        // `mta-dns` is the binary bench_mta_dns.
        &format!("bench_{}", name.replace('-', "_")),
    ]);
    if quick {
        cmd.args(["--", "--quick"]);
    }
    cmd
}
