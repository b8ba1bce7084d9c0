//! Where the time of a `cargo xtask test` run went: each step (setup, lint, each build, each
//! suite) timed as it runs and printed as a table at the end, passed or not.

use std::time::{Duration, Instant};

/// The steps timed so far, in order.
pub struct Timings {
    started: Instant,
    steps: Vec<(String, Duration, bool)>,
}

impl Timings {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Runs `step`, recording how long it took and whether it succeeded.
    pub fn time<T, E>(
        &mut self,
        name: impl Into<String>,
        step: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let t = Instant::now();
        let result = step();
        self.steps.push((name.into(), t.elapsed(), result.is_ok()));
        result
    }

    /// Records a step timed elsewhere (one that ran beside the others).
    pub fn record(&mut self, name: impl Into<String>, took: Duration, ok: bool) {
        self.steps.push((name.into(), took, ok));
    }

    /// Adds the steps of a run that went on beside this one (a lane of suites).
    pub fn absorb(&mut self, other: Self) {
        self.steps.extend(other.steps);
    }

    /// Marks the last step failed (a suite that ran to its end with failing tests).
    pub fn failed_last(&mut self) {
        if let Some(last) = self.steps.last_mut() {
            last.2 = false;
        }
    }

    /// The table: one row per step, then the whole run.
    pub fn table(&self) -> String {
        let mut out = String::from("where the time went:\n\n| step | time |\n|---|---:|\n");
        for (name, took, ok) in &self.steps {
            let mark = if *ok { "" } else { " (failed)" };
            out.push_str(&format!("| {name}{mark} | {} |\n", clock(*took)));
        }
        out.push_str(&format!(
            "| **total** | **{}** |\n",
            clock(self.started.elapsed())
        ));
        out
    }
}

/// `m:ss`, the way a person reads a build's duration.
fn clock(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_row_per_step_and_failures_marked() {
        let mut t = Timings::new();
        t.time("setup", || Ok::<_, ()>(())).unwrap();
        t.time("suite e2e", || Err::<(), _>(())).unwrap_err();
        let table = t.table();
        assert!(table.contains("| setup | 0:00 |"), "{table}");
        assert!(table.contains("| suite e2e (failed) | 0:00 |"), "{table}");
        assert!(table.contains("| **total** |"), "{table}");
        assert_eq!(clock(Duration::from_secs(754)), "12:34");
    }
}
