//! What a run of the suite found: [`Report`], and the [`Progress`] events sent while it runs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::ops::Op;

/// A progress event (also logged with `tracing` at level INFO, target `conformance`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Progress {
    /// A check started.
    CheckStarted {
        /// The check's name.
        check: String,
    },
    /// One case of a property check finished (passed or failed).
    Case {
        /// The check's name.
        check: String,
        /// How many cases ran so far, this one included.
        done: u32,
        /// How many will run if none fails.
        total: u32,
    },
    /// A case failed; the suite now shrinks it to a minimal one.
    Shrinking {
        /// The check's name.
        check: String,
    },
    /// A check finished.
    CheckFinished {
        /// The check's name.
        check: String,
        /// Whether it passed (or was skipped).
        passed: bool,
        /// How long it took.
        took: Duration,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::CheckStarted { check } => write!(f, "{check}: started"),
            Progress::Case { check, done, total } => write!(f, "{check}: case {done}/{total}"),
            Progress::Shrinking { check } => {
                write!(f, "{check}: a case failed, shrinking it to a minimal one")
            }
            Progress::CheckFinished {
                check,
                passed,
                took,
            } => write!(
                f,
                "{check}: {} in {:.1}s",
                if *passed { "ok" } else { "FAILED" },
                took.as_secs_f64()
            ),
        }
    }
}

/// The outcome of a whole run: one entry per check.
#[derive(Clone, Debug)]
pub struct Report {
    /// The backend's name, from [`StoreFactory::name`](crate::StoreFactory::name).
    pub backend: String,
    /// The seed the random checks used (pass it back in
    /// [`Config::seed`](crate::Config::seed) to repeat them).
    pub seed: u64,
    /// Every check that ran or was skipped, in order.
    pub checks: Vec<CheckReport>,
}

/// The outcome of one check.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The check's name (a scenario name, `sequences` or `concurrency`).
    pub name: String,
    /// What happened.
    pub outcome: CheckOutcome,
    /// How long it took.
    pub took: Duration,
    /// What the check did, in one line, for checks whose size varies (how many faults the
    /// `fault_sweep` injected, how many builds the `load` check ran); `None` for the others.
    pub detail: Option<String>,
}

/// Passed, skipped or failed.
#[derive(Clone, Debug)]
pub enum CheckOutcome {
    /// The backend behaved as the contract says.
    Passed,
    /// Not applicable to this backend (the reason says which capability is missing).
    Skipped(String),
    /// The backend broke the contract (or the harness could not run the check).
    Failed(Failure),
}

/// How a check failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What was expected and what happened.
    pub message: String,
    /// For the `sequences` check: the minimal failing operation sequence.
    pub sequence: Option<FailingSequence>,
}

/// A minimal failing operation sequence, readable and replayable.
#[derive(Clone, Debug)]
pub struct FailingSequence {
    /// The operations, in order.
    pub ops: Vec<Op>,
    /// The same, as a numbered script with what each step resolved to.
    pub script: String,
    /// Where the sequence was saved as JSON for [`replay`](crate::replay), if saving worked.
    pub saved_to: Option<PathBuf>,
}

impl Report {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = (&CheckReport, &Failure)> {
        self.checks.iter().filter_map(|c| match &c.outcome {
            CheckOutcome::Failed(f) => Some((c, f)),
            _ => None,
        })
    }

    /// The report of the check named `name`, if it ran or was skipped.
    pub fn check(&self, name: &str) -> Option<&CheckReport> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Panics with the whole report if any check failed (for use in `#[test]`s).
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of {}: {} (seed {}; repeat with ZSTORE_CONFORMANCE_SEED={})",
            self.backend,
            if self.passed() { "passed" } else { "FAILED" },
            self.seed,
            self.seed
        )?;
        for check in &self.checks {
            match &check.outcome {
                CheckOutcome::Passed => match &check.detail {
                    Some(detail) => writeln!(f, "  ok      {} ({detail})", check.name)?,
                    None => writeln!(f, "  ok      {}", check.name)?,
                },
                CheckOutcome::Skipped(why) => writeln!(f, "  skipped {} ({why})", check.name)?,
                CheckOutcome::Failed(failure) => {
                    match &check.detail {
                        Some(detail) => writeln!(f, "  FAILED  {} ({detail})", check.name)?,
                        None => writeln!(f, "  FAILED  {}", check.name)?,
                    }
                    writeln!(f, "{failure}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.message.lines() {
            writeln!(f, "    {line}")?;
        }
        if let Some(seq) = &self.sequence {
            writeln!(f, "    minimal failing sequence ({} steps):", seq.ops.len())?;
            for line in seq.script.lines() {
                writeln!(f, "    {line}")?;
            }
            if let Some(path) = &seq.saved_to {
                writeln!(
                    f,
                    "    saved to {} (replay: `cargo xtask conformance --replay {}` or conformance::replay)",
                    path.display(),
                    path.display()
                )?;
            }
        }
        Ok(())
    }
}
