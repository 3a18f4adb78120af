//! THE one place where xtask runs the conformance suite: as the backend crate's own
//! `tests/conformance.rs` (see [`super::libtest`]), sized for the lane.
//!
//! [`run_suite`] picks the executable and module for the target (`store-fake`'s
//! `report_busy` tests for [`SuiteTarget::Fake`], `store-zfs`'s `real_pool` tests on the
//! run's pool for [`SuiteTarget::Zfs`]), turns the lane's [`Budget`] and the command line into
//! `ZSTORE_CONFORMANCE_*` variables and `--test-threads`, and reads the results off the run.
//! Everything around the seam (engines, pools, the VM, leak checks, the summary and the exit
//! status) is the same for every target.

use std::path::PathBuf;

use super::lane::{Budget, Lane};
use super::libtest::{self, SuiteRun};
use super::report::SuiteReport;
use crate::error::{Result, XtaskError};
use crate::runner::Runner;

/// What the suite runs against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuiteTarget {
    /// The fake store (`store-fake`, plain directories, no ZFS).
    Fake,
    /// A ZFS pool prepared by xtask (or given with `--pool`).
    Zfs {
        /// The pool name (each check's cases are child datasets of it).
        pool: String,
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
    /// Run only the suite's self-test (its stores broken on purpose must be caught).
    pub self_test: bool,
    /// How many checks run at once (`None`: the lane's default).
    pub parallel: Option<usize>,
    /// The backend's conformance test executable, built elsewhere (the guest has no cargo);
    /// `None`: build it here.
    pub test_exe: Option<PathBuf>,
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
            test_exe: None,
        }
    }

    /// How many checks run at once (libtest's `--test-threads`).
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

/// Runs the conformance suite (or only its self-test, or one replay) against `target`; the
/// output streams to the terminal.
///
/// # Errors
/// A malformed setting, a test executable that cannot be built or run, or a run that ends
/// without reporting any check.
pub async fn run_suite(
    runner: &Runner,
    target: &SuiteTarget,
    opts: &SuiteOptions,
) -> Result<SuiteReport> {
    if opts.self_test && opts.replay.is_some() {
        return Err(XtaskError::Invalid(
            "--replay runs a saved sequence against the store as it is; the self-test's \
             broken store is not replayed"
                .into(),
        ));
    }
    let config = opts.config()?;
    let seed = config.seed.unwrap_or_else(random_seed);
    let (package, module, mut env) = match target {
        SuiteTarget::Fake => ("store-fake", "report_busy", Vec::new()),
        SuiteTarget::Zfs { pool, .. } => (
            "store-zfs",
            "real_pool",
            vec![
                (store_zfs::testing::POOL_ENV.to_owned(), pool.clone()),
                (
                    store_zfs::testing::REQUIRE_ZFS_ENV.to_owned(),
                    "1".to_owned(),
                ),
            ],
        ),
    };
    // One seed for every check.
    env.extend(
        conformance::Config {
            seed: Some(seed),
            ..config.clone()
        }
        .to_env(),
    );
    let only = if opts.self_test {
        Some("self_test".to_owned())
    } else if let Some(file) = &opts.replay {
        env.push((
            conformance::REPLAY_ENV.to_owned(),
            file.display().to_string(),
        ));
        Some("sequences".to_owned())
    } else {
        None
    };
    let exe = match &opts.test_exe {
        Some(exe) => exe.clone(),
        None => libtest::build(runner, package).await?,
    };
    announce(&config, opts);
    let run = SuiteRun {
        exe,
        module: module.to_owned(),
        only,
        threads: opts.parallel(),
        env,
    };
    let mut report = run.run(runner).await?;
    // The self-test has a seed of its own.
    report.seed = (!opts.self_test).then_some(seed);
    if !opts.self_test {
        // A full run counts the self-test as one of its cases; only a self-test run is
        // decided by its verdict.
        report.self_test = None;
    }
    Ok(report)
}

/// Prints what the run will do.
fn announce(config: &conformance::Config, opts: &SuiteOptions) {
    if opts.self_test {
        println!("suite: the self-test only (its own fixed sizes and seed)");
        return;
    }
    println!(
        "suite: {} sequences of up to {} steps ({} checks after each step), {} concurrency \
         cases, load {} builds ({} at once), {} checks at once",
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
        opts.parallel(),
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
