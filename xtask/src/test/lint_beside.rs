//! `cargo xtask lint` run beside the builds and suites of `cargo xtask test`, not before them.
//!
//! Lint is CPU work — a clippy check build of every crate, for the host and for the bpf
//! target — while the suites mostly wait on the kernel, DNS servers and MTAs. Run first, it
//! was the longest step of a fresh run; run beside them it fills their idle CPU. It is niced
//! (19), so the builds and the suites' timed behaviours keep the CPU they need, and it has a
//! target directory of its own (`target/lint`), so it never waits on the build's lock. Its
//! failure fails the run like a failed suite.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::util::workspace_root;

pub struct LintBeside {
    child: Child,
    started: Instant,
    log: PathBuf,
}

impl LintBeside {
    /// Starts `xtask lint` (this very binary) niced, its output into `target/lint.log`.
    pub fn start() -> Result<Self> {
        let target = workspace_root().join("target");
        std::fs::create_dir_all(&target)?;
        let log = target.join("lint.log");
        let out = File::create(&log).with_context(|| format!("{}", log.display()))?;
        let child = Command::new("nice")
            .args(["-n", "19"])
            .arg(std::env::current_exe()?)
            .arg("lint")
            .env("CARGO_TARGET_DIR", target.join("lint"))
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting `xtask lint` beside the suites")?;
        Ok(Self {
            child,
            started: Instant::now(),
            log,
        })
    }

    /// Waits for it: whether it passed, and how long it ran. A failure prints its output.
    pub fn finish(mut self) -> Result<(bool, Duration)> {
        let ok = self.child.wait()?.success();
        let took = self.started.elapsed();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if !ok {
            eprintln!("\n=== lint (failed) ===\n{text}");
        } else {
            eprintln!("\n=== lint ===\nok ({})", self.log.display());
        }
        Ok((ok, took))
    }
}
