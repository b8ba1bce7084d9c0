//! The suites of `cargo xtask test`, in the order they run, and what each one runs.

use anyhow::{Result, bail};

use super::harness::{Harness, Threads};

/// The package holding the kernel, DNS, daemon and end-to-end suites (tests/tests/*.rs).
pub const TESTS_PACKAGE: &str = "mxscreen-tests";

/// What a suite runs.
pub enum Runs {
    /// Every crate's unit tests (each lib's and bin's test harness, xtask's own integration
    /// tests) and the doc tests.
    Unit,
    /// Integration tests of the tests crate, by file stem (tests/tests/NAME.rs).
    Tests(&'static [&'static str]),
    /// Benchmarks' `--quick` smoke runs, so the harnesses never rot (a minute or two each;
    /// they assert what they count, and record nothing). They run the benchmark binaries of
    /// this build against the release `mxscreen`: a smoke run's numbers are not the point.
    Benches(&'static [&'static str]),
}

pub struct Suite {
    /// The name `cargo xtask test NAME` selects it by.
    pub name: &'static str,
    pub runs: Runs,
    /// How many of its tests run at once.
    pub threads: Threads,
    /// Whether it needs the release build: the Debian package (its path in `MXSCREEN_DEB`)
    /// and target/release/mxscreen.
    pub release: bool,
    /// Which of the two lanes of a run it is in (see [`Lane`]).
    pub lane: Lane,
}

/// A run has two lanes of suites, side by side: most suites wait on the kernel, DNS servers
/// and MTAs rather than on the CPU, and their harnesses share nothing (each test has its own
/// namespaces, pin directory, ports and daemon), so two at a time take little longer than
/// one. `Beside` holds e2e, the short reputation, metrics and fleet suites, and the suites
/// that need the release build (made from the start of the run, see `release_beside`), so
/// that they come last and the package is made by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    First,
    Beside,
}

pub const SUITES: &[Suite] = &[
    Suite {
        name: "datapath",
        runs: Runs::Tests(&["datapath", "lists", "cache"]),
        threads: Threads::EachCpu,
        lane: Lane::First,
        release: false,
    },
    Suite {
        name: "netns",
        runs: Runs::Tests(&["netns", "nftables"]),
        threads: Threads::AtOnce(2),
        lane: Lane::First,
        release: false,
    },
    Suite {
        name: "daemon",
        runs: Runs::Tests(&["daemon", "feeds", "deploy"]),
        threads: Threads::AtOnce(2),
        lane: Lane::First,
        release: false,
    },
    // Last of its lane: xtask's eBPF build test builds in the release profile too, and
    // cargo lets one build at a time into a profile's directory, so run earlier it waits
    // for the release build beside it (most of its 3-5 minutes) while the suites behind it
    // wait too.
    Suite {
        name: "unit",
        runs: Runs::Unit,
        threads: Threads::EachCpu,
        lane: Lane::First,
        release: false,
    },
    Suite {
        name: "e2e",
        runs: Runs::Tests(&["e2e", "import", "report"]),
        threads: Threads::AtOnce(2),
        lane: Lane::Beside,
        release: false,
    },
    Suite {
        name: "reputation",
        runs: Runs::Tests(&["reputation"]),
        threads: Threads::AtOnce(1),
        lane: Lane::Beside,
        release: false,
    },
    Suite {
        name: "metrics",
        runs: Runs::Tests(&["metrics"]),
        threads: Threads::AtOnce(1),
        lane: Lane::Beside,
        release: false,
    },
    Suite {
        name: "fleet",
        runs: Runs::Tests(&["fleet"]),
        threads: Threads::AtOnce(1),
        lane: Lane::Beside,
        release: false,
    },
    Suite {
        name: "package",
        runs: Runs::Tests(&["package"]),
        threads: Threads::AtOnce(1),
        lane: Lane::Beside,
        release: true,
    },
    Suite {
        name: "bench",
        runs: Runs::Benches(&["drop", "mta", "feeds"]),
        threads: Threads::AtOnce(1),
        lane: Lane::Beside,
        release: true,
    },
];

/// The suites whose names contain `filter` (all without one).
pub fn select(filter: Option<&str>) -> Result<Vec<&'static Suite>> {
    let chosen: Vec<&Suite> = SUITES
        .iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect();
    if chosen.is_empty() {
        bail!(
            "no suite matches {filter:?}; suites: {}",
            SUITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(chosen)
}

impl Suite {
    /// The harnesses of `all` this suite runs.
    pub fn harnesses<'a>(&self, all: &'a [Harness]) -> Vec<&'a Harness> {
        all.iter()
            .filter(|h| match self.runs {
                Runs::Unit => !(h.integration && h.package == TESTS_PACKAGE),
                Runs::Tests(names) => {
                    h.integration
                        && h.package == TESTS_PACKAGE
                        && names.contains(&h.target.as_str())
                }
                Runs::Benches(_) => false,
            })
            .collect()
    }
}

/// Fails if an integration test of the tests crate belongs to no suite: it would never run.
pub fn check_every_test_has_a_suite(all: &[Harness]) -> Result<()> {
    let orphans: Vec<&str> = all
        .iter()
        .filter(|h| h.integration && h.package == TESTS_PACKAGE)
        .filter(|h| {
            !SUITES
                .iter()
                .any(|s| matches!(s.runs, Runs::Tests(n) if n.contains(&h.target.as_str())))
        })
        .map(|h| h.target.as_str())
        .collect();
    if !orphans.is_empty() {
        bail!(
            "tests/tests/{{{}}}.rs belong to no suite: add them to SUITES in xtask/src/test/suites.rs",
            orphans.join(",")
        );
    }
    Ok(())
}
