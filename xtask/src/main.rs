//! `cargo xtask`: what cargo alone cannot do for mxscreen — bootstrap a fresh machine, run the
//! daemon as root, run every test suite, run the benchmarks.

mod bench;
mod deb;
mod lint;
mod postfix;
mod setup;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark mxscreen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh Debian/Ubuntu machine lacks (idempotent): rust-src for the nightly
    /// toolchain, bpf-linker built against nightly's own LLVM, and (as root) the Debian
    /// packages the tests use.
    Setup,
    /// Build the eBPF object and the `mxscreen` binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build (release) and run `mxscreen ARGS` as root.
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
    /// Set up, lint, then run every test suite (unit, in-kernel, namespaces, DNS,
    /// end-to-end) and report all failures together.
    Test {
        /// Only the suites whose names contain this (e.g. `datapath`, `unit`).
        filter: Option<String>,
        /// Let ignored (skipped) tests pass; by default a skipped test fails the run, locally
        /// as in CI, since a test that does not run proves nothing.
        #[arg(long)]
        allow_skips: bool,
    },
    /// Build the Debian package (target/debian/mxscreen_<version>-<rev>_amd64.deb) with
    /// cargo-deb, with generated man pages, completions and config, and print its path.
    Deb,
    /// Run a benchmark and print its table: `datapath`, `resolve`, `daemon`, `fleet`,
    /// `mta-dns`, `drop` or `mta`. `drop` and `mta` also append their run to BENCHMARKS.md,
    /// except with `--quick` (a smoke run of a minute or two, as CI does).
    Bench {
        #[arg(value_parser = ["datapath", "resolve", "daemon", "fleet", "mta-dns", "drop", "mta"])]
        name: String,
        /// A short run that checks the harness and records nothing (drop, mta).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::setup().map(|_| ()),
        Command::Build { release } => util::build(release),
        Command::Run { args } => {
            setup::setup()?;
            util::build(true)?;
            util::run_as_root(
                &util::workspace_root().join("target/release/mxscreen"),
                &args,
            )
        }
        Command::Lint => {
            setup::setup()?;
            lint::run()
        }
        Command::Test {
            filter,
            allow_skips,
        } => {
            setup::setup()?;
            lint::run()?;
            test::run(filter.as_deref(), allow_skips)
        }
        Command::Deb => {
            setup::setup()?;
            println!("{}", deb::build()?.display());
            Ok(())
        }
        Command::Bench { name, quick } => {
            setup::setup()?;
            bench::run(&name, quick)
        }
    }
}
