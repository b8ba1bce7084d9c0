//! `cargo xtask`: what cargo alone cannot do for mxscreen — bootstrap a fresh machine, run the
//! daemon as root, run every test suite, run the benchmarks.

mod apt;
mod bench;
mod deb;
mod lint;
mod postfix;
mod setup;
mod test;
mod timing;
mod util;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use setup::{Needs, setup};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark mxscreen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh Debian/Ubuntu machine lacks to build and run mxscreen
    /// (idempotent): the nightly toolchain's components, bpf-linker built against nightly's own
    /// LLVM, and (as root) gcc and zlib1g-dev. Never a package that would remove an
    /// installed one (an MTA, say): it refuses instead, naming it.
    Setup {
        /// Also what the test suites and benchmarks use: cargo-deb, their Debian packages
        /// (exim4-daemon-light among them, which replaces any other MTA: not on a mail
        /// server) and a privately unpacked Postfix.
        #[arg(long)]
        tests: bool,
        /// Install only the Debian packages, into the Debian root ROOT (a container's file
        /// system, entered with systemd-nspawn) instead of this machine. The package suite
        /// uses it to show that a build host keeps its MTA.
        #[arg(long, value_name = "ROOT")]
        root: Option<PathBuf>,
    },
    /// Build the eBPF object and the `mxscreen` binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up (what building and running needs), build (release) and run `mxscreen ARGS` as
    /// root.
    ///
    /// Example: `cargo xtask run -- run` attaches with built-in defaults to the
    /// default-route interface.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check formatting, clippy (host crates and the eBPF crate, warnings denied) and that no
    /// source file passes 400 lines of code. `test` runs it first.
    Lint,
    /// Set up (with the test packages), lint, then run every test suite (unit, in-kernel,
    /// namespaces, DNS, end-to-end) and report all failures together, and where the time
    /// went.
    Test {
        /// Only the suites whose names contain this (e.g. `datapath`, `unit`).
        filter: Option<String>,
        /// Let ignored (skipped) tests pass; by default a skipped test fails the run, locally
        /// as in CI, since a test that does not run proves nothing.
        #[arg(long)]
        allow_skips: bool,
    },
    /// Build the Debian package (target/debian/mxscreen_<version>-<rev>_amd64.deb) with
    /// cargo-deb, with generated man pages, completions and config, and print its path. Sets
    /// up only what building needs (and cargo-deb).
    Deb,
    /// Run a benchmark and print its table: `datapath`, `resolve`, `daemon`, `fleet`,
    /// `feeds`, `feed-writes`, `mta-dns`, `drop`, `mta`, `nft-load` or `nft-table`. `drop`
    /// and `mta` also append their run to BENCHMARKS.md, except with `--quick` (a smoke run
    /// of a minute or two, as CI does).
    Bench {
        #[arg(value_parser = ["datapath", "resolve", "daemon", "fleet", "feeds", "feed-writes", "mta-dns", "drop", "mta", "nft-load", "nft-table"])]
        name: String,
        /// A short run that checks the harness and records nothing (drop, mta).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup { tests, root } => {
            let needs = if tests { Needs::Tests } else { Needs::Build };
            match root {
                Some(root) => setup::setup_root(needs, root),
                None => setup(needs),
            }
        }
        Command::Build { release } => util::build(release),
        Command::Run { args } => {
            setup(Needs::Build)?;
            util::build(true)?;
            util::run_as_root(
                &util::workspace_root().join("target/release/mxscreen"),
                &args,
            )
        }
        Command::Lint => {
            setup(Needs::Build)?;
            lint::run()
        }
        Command::Test {
            filter,
            allow_skips,
        } => test::run(filter.as_deref(), allow_skips),
        Command::Deb => {
            setup(Needs::Package)?;
            println!("{}", deb::build()?.display());
            Ok(())
        }
        Command::Bench { name, quick } => {
            setup(Needs::Tests)?;
            bench::run(&name, quick)
        }
    }
}
