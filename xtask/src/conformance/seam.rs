//! THE one place where xtask runs the conformance suite: as the backend crate's own
//! `tests/conformance.rs` (see [`super::libtest`]), sized for the lane.
//!
//! [`run_suite`] picks the executable and module for the target (`store-fake`'s
//! `report_busy` tests for [`SuiteTarget::Fake`], `store-zfs`'s `real_pool` tests on the
//! run's pool for [`SuiteTarget::Zfs`]), turns the lane's [`lane::config`] and the command line into
//! `ZSTORE_CONFORMANCE_*` variables and `--test-threads`, and reads the results off the run.
//! Everything around the seam (engines, pools, the VM, leak checks, the summary and the exit
//! status) is the same for every target.

use super::lane::{self, Lane};
use super::libtest::{self, SuiteRun};
use super::report::SuiteReport;
use crate::cli::SuiteArgs;
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

/// How many checks run at once (libtest's `--test-threads`): `--parallel`, else the lane's.
fn parallel(args: &SuiteArgs, lane: Lane) -> usize {
    args.lane
        .parallel
        .unwrap_or_else(|| lane::parallel(lane))
        .max(1)
}

/// The suite's knobs: the suite defaults, the lane's budget, the `ZSTORE_CONFORMANCE_*`
/// variables, then the command line.
///
/// # Errors
/// A malformed `ZSTORE_CONFORMANCE_*` variable.
pub(super) fn config(args: &SuiteArgs, lane: Lane) -> Result<conformance::Config> {
    let mut config = lane::config(lane)
        .with_env()
        .map_err(|e| XtaskError::Invalid(format!("conformance settings: {e}")))?;
    let l = &args.lane;
    config.cases = args.cases.unwrap_or(config.cases);
    config.max_ops = l.max_ops.unwrap_or(config.max_ops);
    config.concurrency_cases = l.concurrency_cases.unwrap_or(config.concurrency_cases);
    config.full_check_each_step &= !l.quick_checks;
    config.seed = args.seed.or(config.seed);
    Ok(config)
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
    args: &SuiteArgs,
    lane: Lane,
) -> Result<SuiteReport> {
    // `--lane` picks the sizes of another lane than the engine's.
    let lane = args.lane.lane.unwrap_or(lane);
    let self_test = args.lane.self_test_broken_store;
    if self_test && args.replay.is_some() {
        return Err(XtaskError::Invalid(
            "--replay runs a saved sequence against the store as it is; the self-test's \
             broken store is not replayed"
                .into(),
        ));
    }
    let config = config(args, lane)?;
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
    let only = if self_test {
        Some("self_test".to_owned())
    } else if let Some(file) = &args.replay {
        env.push((
            conformance::REPLAY_ENV.to_owned(),
            file.display().to_string(),
        ));
        Some("sequences".to_owned())
    } else {
        None
    };
    let exe = match &args.lane.test_exe {
        Some(exe) => exe.clone(),
        None => libtest::build(runner, package).await?,
    };
    announce(&config, self_test, parallel(args, lane));
    let run = SuiteRun {
        exe,
        module: module.to_owned(),
        only,
        threads: parallel(args, lane),
        env,
    };
    let mut report = run.run(runner).await?;
    // The self-test has a seed of its own.
    report.seed = (!self_test).then_some(seed);
    if !self_test {
        // A full run counts the self-test as one of its cases; only a self-test run is
        // decided by its verdict.
        report.self_test = None;
    }
    Ok(report)
}

/// Prints what the run will do.
fn announce(config: &conformance::Config, self_test: bool, parallel: usize) {
    if self_test {
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
        parallel,
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
