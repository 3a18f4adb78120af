//! THE one place where xtask calls the conformance suite.
//!
//! [`run_suite`] picks the factory for the target (`store-fake` for [`SuiteTarget::Fake`], a
//! [`ZfsStore`](store_zfs::ZfsStore) on a fresh child dataset per case for
//! [`SuiteTarget::Zfs`]), sizes the suite for the lane ([`Budget`]), and calls
//! [`conformance::run`] or [`conformance::replay_with`]. Everything around the seam (engines,
//! pools, the VM, leak checks, the summary and the exit status) is the same for every target.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::lane::{Budget, Lane};
use super::report::{CaseResult, CaseStatus, SuiteReport};
use super::selftest;
use crate::error::{Result, XtaskError};
use store_fake::BusyPolicy;
use store_fake::testing::FakeFactory;
use store_zfs::Engine;
use store_zfs::testing::ZfsFactory;

/// What the suite runs against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuiteTarget {
    /// The fake store (`store-fake`, plain directories, no ZFS).
    Fake,
    /// A ZFS pool prepared by xtask (or given with `--pool`).
    Zfs {
        /// The pool name.
        pool: String,
        /// Where its root dataset is mounted.
        mountpoint: PathBuf,
        /// Which ZFS implementation serves it.
        kind: Engine,
    },
}

/// Suite parameters from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteOptions {
    /// Which lane's default sizes to use.
    pub lane: Lane,
    /// Number of generated `sequences` cases.
    pub cases: Option<u32>,
    /// Longest generated sequence.
    pub max_ops: Option<usize>,
    /// Cases of the `concurrency` property.
    pub concurrency_cases: Option<u32>,
    /// Compare only what each step touched.
    pub quick_checks: bool,
    /// Seed for generated cases.
    pub seed: Option<u64>,
    /// A recorded failing sequence to replay.
    pub replay: Option<PathBuf>,
    /// Run the suite's self-test (a deliberately broken store) instead of the suite.
    pub self_test: bool,
    /// How many groups of checks run at once (`None`: the lane's default).
    pub parallel: Option<usize>,
}

impl SuiteOptions {
    /// The options for `lane` with nothing overridden.
    pub fn for_lane(lane: Lane) -> Self {
        Self {
            lane,
            cases: None,
            max_ops: None,
            concurrency_cases: None,
            quick_checks: false,
            seed: None,
            replay: None,
            self_test: false,
            parallel: None,
        }
    }

    /// How many groups of checks run at once.
    pub fn parallel(&self) -> usize {
        self.parallel
            .unwrap_or_else(|| Budget::for_lane(self.lane).parallel)
            .max(1)
    }

    /// The suite's knobs: the suite defaults, the lane's budget, the `ZSTORE_CONFORMANCE_*`
    /// variables, then these options.
    ///
    /// # Errors
    /// A malformed `ZSTORE_CONFORMANCE_*` variable.
    pub fn config(&self) -> Result<conformance::Config> {
        let mut config = conformance::Config::default();
        Budget::for_lane(self.lane).apply(&mut config);
        let mut config = config
            .with_env()
            .map_err(|e| XtaskError::Invalid(format!("conformance settings: {e}")))?;
        if let Some(n) = self.cases {
            config.cases = n;
        }
        if let Some(n) = self.max_ops {
            config.max_ops = n;
        }
        if let Some(n) = self.concurrency_cases {
            config.concurrency_cases = n;
        }
        if self.quick_checks {
            config.full_check_each_step = false;
        }
        if self.seed.is_some() {
            config.seed = self.seed;
        }
        Ok(config)
    }
}

/// Runs the conformance suite (or its self-test) against `target`, printing progress on
/// stdout.
pub async fn run_suite(target: &SuiteTarget, opts: &SuiteOptions) -> Result<SuiteReport> {
    let mut config = opts.config()?;
    if opts.self_test && opts.replay.is_none() {
        selftest::configure(&mut config, opts);
        let (mut report, cases) = match target {
            SuiteTarget::Fake => {
                let factory =
                    selftest::BrokenFactory::new(FakeFactory::new(BusyPolicy::ReportBusy));
                let cases = factory.counter();
                (run_one(factory, opts, config).await?, cases)
            }
            SuiteTarget::Zfs { pool, kind, .. } => {
                let factory = selftest::BrokenFactory::new(ZfsFactory::new(pool, kind));
                let cases = factory.counter();
                (run_one(factory, opts, config).await?, cases)
            }
        };
        let mut verdict = selftest::verdict(&report);
        verdict.explanation.push_str(&format!(
            " ({} cases run, shrinking included)",
            cases.load(Ordering::Relaxed)
        ));
        report.self_test = Some(verdict);
        return Ok(report);
    }
    match (target, opts.self_test) {
        (SuiteTarget::Fake, false) => {
            run_with(FakeFactory::new(BusyPolicy::ReportBusy), opts, config).await
        }
        (SuiteTarget::Zfs { pool, kind, .. }, false) => {
            run_with(ZfsFactory::new(pool, kind), opts, config).await
        }
        // Replaying a sequence the self-test saved: against the same broken store.
        (SuiteTarget::Fake, true) => {
            run_one(
                selftest::BrokenFactory::new(FakeFactory::new(BusyPolicy::ReportBusy)),
                opts,
                config,
            )
            .await
        }
        (SuiteTarget::Zfs { pool, kind, .. }, true) => {
            let factory = selftest::BrokenFactory::new(ZfsFactory::new(pool, kind));
            run_one(factory, opts, config).await
        }
    }
}

/// Runs the checks in [`SuiteOptions::parallel`] groups at once (one `conformance::run` per
/// group, each with its own clone of the factory), and merges their reports in the suite's
/// order. A replay, or a single group, is one plain run.
async fn run_with<F: conformance::StoreFactory + Clone>(
    factory: F,
    opts: &SuiteOptions,
    mut config: conformance::Config,
) -> Result<SuiteReport> {
    let names: Vec<&str> = conformance::check_names()
        .into_iter()
        .filter(|c| {
            config
                .only
                .as_ref()
                .is_none_or(|o| o.iter().any(|n| n == c))
        })
        .collect();
    let groups = super::lane::split(&names, opts.parallel(), &config);
    if opts.replay.is_some() || groups.len() < 2 {
        return run_one(factory, opts, config).await;
    }
    // One seed for every group, so the report's seed repeats the whole run.
    let seed = *config.seed.get_or_insert_with(random_seed);
    announce(&config);
    println!("suite: {} groups of checks at once", groups.len());
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for group in groups {
        let mut config = config.clone();
        config.only = Some(group);
        let done = Arc::clone(&done);
        config.progress = Some(Arc::new(move |ev: &conformance::Progress| {
            print_progress(&done, ev)
        }));
        tasks.push(tokio::spawn(conformance::run(factory.clone(), config)));
    }
    let mut checks = Vec::new();
    let mut backend = String::new();
    for task in tasks {
        let report = task
            .await
            .map_err(|e| XtaskError::Invalid(format!("a group of checks panicked: {e}")))?;
        backend = report.backend;
        checks.extend(report.checks);
    }
    let order = |name: &str| names.iter().position(|n| *n == name).unwrap_or(usize::MAX);
    checks.sort_by_key(|c| order(&c.name));
    Ok(convert(&conformance::Report {
        backend,
        seed,
        checks,
    }))
}

/// Prints what the run will do.
fn announce(config: &conformance::Config) {
    println!(
        "suite: {} sequences of up to {} steps ({} checks after each step), {} concurrency \
         cases, load {} builds ({} at once){}",
        config.cases,
        config.max_ops,
        if config.full_check_each_step {
            "full"
        } else {
            "quick"
        },
        config.concurrency_cases,
        config.load_builds,
        config.load_jobs,
        config
            .only
            .as_ref()
            .map(|o| format!("; only {}", o.join(", ")))
            .unwrap_or_default()
    );
}

/// A seed from the clock and the pid.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Any 64 bits of the clock mixed with the pid make a seed.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

/// One `conformance::run` (or `replay_with`) of every selected check.
async fn run_one<F: conformance::StoreFactory>(
    factory: F,
    opts: &SuiteOptions,
    mut config: conformance::Config,
) -> Result<SuiteReport> {
    announce(&config);
    let done = Arc::new(AtomicUsize::new(0));
    config.progress = Some(Arc::new(move |ev: &conformance::Progress| {
        print_progress(&done, ev)
    }));
    let report = match &opts.replay {
        Some(file) => conformance::replay_with(factory, file.clone(), config)
            .await
            .map_err(|e| XtaskError::Invalid(format!("--replay {}: {e}", file.display())))?,
        None => conformance::run(factory, config).await,
    };
    Ok(convert(&report))
}

/// One line per finished check, a line every tenth case of a property (so a slow lane shows
/// it is alive), and a note when a failing case is being shrunk.
fn print_progress(done: &AtomicUsize, ev: &conformance::Progress) {
    match ev {
        conformance::Progress::CheckFinished {
            check,
            passed,
            took,
        } => {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let verdict = if *passed { "ok" } else { "FAILED" };
            println!(
                "[{n:>3}] {check} ... {verdict} ({:.2} s)",
                took.as_secs_f64()
            );
        }
        conformance::Progress::Case {
            check,
            done: d,
            total,
        } if *d == 1 || d % 10 == 0 || d == total => {
            println!("      {check}: case {d}/{total}");
        }
        conformance::Progress::Shrinking { check } => {
            println!("      {check}: a case failed, shrinking it");
        }
        _ => {}
    }
}

fn convert(report: &conformance::Report) -> SuiteReport {
    let cases = report
        .checks
        .iter()
        .map(|c| {
            let (status, mut message, steps) = match &c.outcome {
                conformance::CheckOutcome::Passed => (CaseStatus::Passed, None, None),
                conformance::CheckOutcome::Skipped(why) => {
                    (CaseStatus::Skipped, Some(why.clone()), None)
                }
                conformance::CheckOutcome::Failed(f) => {
                    let mut m = f.message.clone();
                    if let Some(seq) = &f.sequence {
                        m.push_str(&format!(
                            "\nminimal failing sequence ({} steps):\n{}",
                            seq.ops.len(),
                            seq.script
                        ));
                        if let Some(p) = &seq.saved_to {
                            m.push_str(&format!(
                                "\nreplay: cargo xtask conformance --replay {}",
                                p.display()
                            ));
                        }
                    }
                    (
                        CaseStatus::Failed,
                        Some(m),
                        f.sequence.as_ref().map(|s| s.ops.len()),
                    )
                }
            };
            if let Some(detail) = &c.detail {
                message = Some(match message {
                    Some(m) => format!("{detail}\n{m}"),
                    None => detail.clone(),
                });
            }
            CaseResult {
                name: c.name.clone(),
                status,
                secs: c.took.as_secs_f64(),
                message,
                steps,
            }
        })
        .collect();
    SuiteReport {
        cases,
        seed: Some(report.seed),
        self_test: None,
    }
}
