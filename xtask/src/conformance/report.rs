//! Results of a conformance run: per-case results, the run report (also the JSON the guest
//! hands back to the host), progress lines, the summary table and the final line.

use std::io::Write;

use conformance::{CheckLine, LineVerdict, SelfTestVerdict};
use serde::{Deserialize, Serialize};

use crate::error::{EXIT_FAILED, EXIT_OK};
use crate::leaks::LeakReport;

/// What the suite reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Every case (one check of the suite), in the order run.
    pub cases: Vec<CheckLine>,
    /// The seed used, to repeat the run.
    pub seed: Option<u64>,
    /// For the suite's self-test (a deliberately broken store): whether it was caught.
    #[serde(default)]
    pub self_test: Option<SelfTestVerdict>,
}

/// A test executable run after the suite (store-zfs's integration tests in the guest).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRun {
    /// The executable's name.
    pub name: String,
    /// Whether it exited with status 0.
    pub passed: bool,
    /// Wall time in whole seconds.
    pub secs: u64,
    /// Its `test result:` line, or the end of its output when it failed.
    pub summary: String,
}

impl SuiteReport {
    fn count(&self, verdict: LineVerdict) -> usize {
        self.cases.iter().filter(|c| c.verdict == verdict).count()
    }
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(LineVerdict::Passed)
    }
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(LineVerdict::Failed)
    }
    /// Cases skipped as not applicable.
    pub fn skipped(&self) -> usize {
        self.count(LineVerdict::Skipped)
    }
}

/// The `crash: N rounds, K kills, V violations` part of a test's summary, if any.
pub fn crash_line(summary: &str) -> Option<&str> {
    let start = summary.find("crash: ")?;
    let rest = &summary[start + "crash: ".len()..];
    let end = rest.find(" violations").map(|i| i + " violations".len())?;
    rest[..end].contains(" rounds, ").then(|| &rest[..end])
}

/// How the run as a whole went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// The suite ran (cases may still have failed).
    Completed {
        /// The suite's report.
        report: SuiteReport,
    },
    /// Set-up or the suite itself failed before producing a report.
    Error {
        /// The error message.
        message: String,
        /// The exit status it maps to.
        exit_code: u8,
    },
}

/// A run's full report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The engine, as described to humans.
    pub engine: String,
    /// The pool used, if any.
    pub pool: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// The leak check (None if skipped, e.g. with --keep).
    pub leaks: Option<LeakReport>,
    /// Test executables run after the suite (`--with-store-zfs-tests`).
    #[serde(default)]
    pub tests: Vec<TestRun>,
}

impl RunReport {
    /// The process exit status this report calls for.
    pub fn exit_code(&self) -> u8 {
        let leaked = self.leaks.as_ref().is_some_and(|l| !l.clean());
        let tests_failed = self.tests.iter().any(|t| !t.passed);
        match &self.outcome {
            Outcome::Completed { report } => {
                let passed = match &report.self_test {
                    Some(verdict) => verdict.caught,
                    None => report.failed() == 0,
                };
                if passed && !leaked && !tests_failed {
                    EXIT_OK
                } else {
                    EXIT_FAILED
                }
            }
            Outcome::Error { exit_code, .. } => *exit_code,
        }
    }

    /// The summary table (failures first, then passes), on stdout.
    pub fn print_table(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "engine: {}", self.engine);
        if let Some(p) = &self.pool {
            let _ = writeln!(out, "pool:   {p}");
        }
        if let Outcome::Completed { report } = &self.outcome {
            if !report.cases.is_empty() {
                let width = report
                    .cases
                    .iter()
                    .map(|c| c.check.len())
                    .max()
                    .unwrap_or(4)
                    .max(4);
                let _ = writeln!(out, "{:<width$}  result  time", "case");
                let mut cases: Vec<&CheckLine> = report.cases.iter().collect();
                // Failures last, next to the final line, where they are seen.
                cases.sort_by_key(|c| c.verdict == LineVerdict::Failed);
                for c in cases {
                    let verdict = match c.verdict {
                        LineVerdict::Passed => "ok",
                        LineVerdict::Failed => "FAILED",
                        LineVerdict::Skipped => "skip",
                    };
                    let _ = writeln!(out, "{:<width$}  {verdict:<6}  {:>6.2} s", c.check, c.secs);
                    if let Some(m) = &c.detail {
                        for line in m.lines() {
                            let _ = writeln!(out, "    {line}");
                        }
                    }
                }
            }
            if let Some(seed) = report.seed {
                let _ = writeln!(out, "seed: {seed} (repeat with --seed {seed})");
            }
        }
    }

    /// How deep the run went, one line per kind of check that reports it: the fault points
    /// the sweep tried of those possible, the generated sequences' size, the load, and the
    /// kill -9 rounds of a crash test run after the suite (from its `crash: N rounds, ...`
    /// line). What CI's summary prints per lane.
    pub fn depth(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Outcome::Completed { report } = &self.outcome {
            for (check, what) in [
                ("fault_sweep", "fault sweep"),
                ("sequences", "sequences"),
                ("load", "load"),
            ] {
                let detail = report
                    .cases
                    .iter()
                    .find(|c| c.check == check)
                    .and_then(|c| c.detail.as_deref());
                if let Some(d) = detail {
                    // The detail's first clause is the size (see each check's detail line).
                    let head = d.split([';', ':']).next().unwrap_or(d).trim();
                    lines.push(format!("{what}: {head}"));
                }
            }
        }
        for t in &self.tests {
            if let Some(crash) = crash_line(&t.summary) {
                lines.push(format!("kill -9 ({}): {crash}", t.name));
            }
        }
        lines
    }

    /// The last line(s) of every conformance run, on stdout: the guest test results if any,
    /// `conformance: N passed, M failed`, and for the self-test its verdict.
    pub fn print_final_line(&self) {
        for t in &self.tests {
            println!(
                "guest test {}: {} in {} s ({})",
                t.name,
                if t.passed { "passed" } else { "FAILED" },
                t.secs,
                t.summary
            );
        }
        let leaks = match &self.leaks {
            Some(l) if !l.clean() => {
                format!(" ({} leftover(s), see leak check)", l.leftovers.len())
            }
            _ => String::new(),
        };
        match &self.outcome {
            Outcome::Completed { report } => {
                let skipped = match report.skipped() {
                    0 => String::new(),
                    n => format!(", {n} skipped"),
                };
                println!(
                    "conformance: {} passed, {} failed{skipped}{leaks}",
                    report.passed(),
                    report.failed()
                );
                if let Some(v) = &report.self_test {
                    println!(
                        "conformance self-test: {}: {}",
                        if v.caught { "passed" } else { "FAILED" },
                        v.explanation
                    );
                }
            }
            Outcome::Error { message, .. } => println!("conformance: error: {message}{leaks}"),
        }
        for line in self.depth() {
            println!("conformance depth: {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, passed: bool) -> CheckLine {
        CheckLine {
            check: name.into(),
            backend: "zfs-fuse".into(),
            verdict: if passed {
                LineVerdict::Passed
            } else {
                LineVerdict::Failed
            },
            secs: 0.1,
            detail: None,
        }
    }

    fn suite(cases: Vec<CheckLine>) -> SuiteReport {
        SuiteReport {
            cases,
            seed: Some(1),
            self_test: None,
        }
    }

    #[test]
    fn exit_codes() {
        let mut r = RunReport {
            engine: "zfs-fuse".into(),
            pool: None,
            outcome: Outcome::Completed {
                report: suite(vec![case("a", true)]),
            },
            leaks: Some(LeakReport::default()),
            tests: Vec::new(),
        };
        assert_eq!(r.exit_code(), EXIT_OK);
        r.leaks = Some(LeakReport {
            leftovers: vec!["pool x".into()],
        });
        assert_eq!(r.exit_code(), EXIT_FAILED, "a leak fails the run");
        r.leaks = None;
        r.tests.push(TestRun {
            name: "crash".into(),
            passed: false,
            secs: 3,
            summary: "test result: FAILED".into(),
        });
        assert_eq!(
            r.exit_code(),
            EXIT_FAILED,
            "a failed guest test fails the run"
        );
        r.tests.clear();
        r.outcome = Outcome::Completed {
            report: suite(vec![case("a", true), case("b", false)]),
        };
        assert_eq!(r.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn the_self_test_passes_only_when_the_broken_store_is_caught() {
        let mut report = suite(vec![case("sequences", false)]);
        report.self_test = Some(SelfTestVerdict {
            caught: true,
            explanation: "caught".into(),
        });
        let mut r = RunReport {
            engine: "zfs-fuse".into(),
            pool: None,
            outcome: Outcome::Completed { report },
            leaks: Some(LeakReport::default()),
            tests: Vec::new(),
        };
        assert_eq!(r.exit_code(), EXIT_OK);
        if let Outcome::Completed { report } = &mut r.outcome {
            report.self_test = Some(SelfTestVerdict {
                caught: false,
                explanation: "passed".into(),
            });
        }
        assert_eq!(r.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn json_round_trip() {
        let r = RunReport {
            engine: "kernel OpenZFS".into(),
            pool: Some("zt-x1".into()),
            outcome: Outcome::Error {
                message: "no".into(),
                exit_code: 2,
            },
            leaks: Some(LeakReport::default()),
            tests: vec![TestRun {
                name: "cancel".into(),
                passed: true,
                secs: 12,
                summary: "test result: ok. 4 passed".into(),
            }],
        };
        let text = serde_json::to_string(&r).expect("encode");
        assert!(text.contains(r#""status":"error""#), "{text}");
        assert_eq!(serde_json::from_str::<RunReport>(&text).expect("decode"), r);
    }

    #[test]
    fn depth_names_fault_points_sequences_load_and_kill_rounds() {
        let detail = |name: &str, d: &str| CheckLine {
            detail: Some(d.into()),
            ..case(name, true)
        };
        let r = RunReport {
            engine: "vm".into(),
            pool: None,
            outcome: Outcome::Completed {
                report: suite(vec![
                    case("store_basics", true),
                    detail(
                        "fault_sweep",
                        "104 of 104 fault points tried: 104 faults injected; 90 s",
                    ),
                    detail(
                        "sequences",
                        "40 cases of up to 30 steps run (600 steps); 9 s",
                    ),
                    detail("load", "100 builds checked of 100, in 25 chains; 80 s"),
                ]),
            },
            leaks: None,
            tests: vec![
                TestRun {
                    name: "test-kill9".into(),
                    passed: true,
                    secs: 170,
                    summary: "crash: 10 rounds, 10 kills, 0 violations; test result: ok.".into(),
                },
                TestRun {
                    name: "test-names".into(),
                    passed: true,
                    secs: 1,
                    summary: "test result: ok.".into(),
                },
            ],
        };
        assert_eq!(
            r.depth(),
            [
                "fault sweep: 104 of 104 fault points tried",
                "sequences: 40 cases of up to 30 steps run (600 steps)",
                "load: 100 builds checked of 100, in 25 chains",
                "kill -9 (test-kill9): 10 rounds, 10 kills, 0 violations",
            ]
        );
        assert_eq!(crash_line("crash: on zfs: 5 rounds, seed 1"), None);
        assert_eq!(crash_line("test result: ok."), None);
    }
}
