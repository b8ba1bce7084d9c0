//! `cargo xtask bench NAME`: benchmarks are binaries of the tests crate (release build),
//! printing their tables; results and commands are recorded in BENCHMARKS.md.

use anyhow::Result;

use crate::util::{cargo, status};

pub fn run(name: &str, quick: bool) -> Result<()> {
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
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "mxscreen-tests",
        "--bin",
        &format!("bench_{name}"),
    ]);
    if quick {
        cmd.args(["--", "--quick"]);
    }
    status(&mut cmd)
}
