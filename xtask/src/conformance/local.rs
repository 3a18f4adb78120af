//! A conformance run on this machine's ZFS (kernel or zfs-fuse) or on the fake store:
//! prepare the engine, create the pool, run the suite, destroy the pool, undo the engine
//! preparation, check for leftovers. Cleanup runs on every path, including SIGINT/SIGTERM.

use super::lane::Lane;
use super::report::{Outcome, RunReport};
use super::seam::{self, SuiteTarget};
use crate::cancel::Cancel;
use crate::cli::SuiteArgs;
use crate::engine::EngineChoice;
use crate::error::XtaskError;
use crate::pool::RunPool;
use crate::runner::Runner;
use store_zfs::Engine;

/// Runs the suite on a local engine (`auto`, `kernel`, `zfs-fuse` or `fake`).
pub async fn run(
    runner: &Runner,
    cancel: &Cancel,
    choice: EngineChoice,
    args: &SuiteArgs,
) -> RunReport {
    if args.lane.with_store_zfs_tests {
        return error_report(
            format!("{choice:?}"),
            None,
            XtaskError::Invalid(
                "--with-store-zfs-tests is for --engine vm (on the host, `cargo test -p \
                 store-zfs` runs them)"
                    .into(),
            ),
        );
    }
    if choice == EngineChoice::Fake {
        let outcome = suite(runner, cancel, &SuiteTarget::Fake, args, Lane::Fake).await;
        return RunReport {
            engine: "fake (store-fake on plain directories, no ZFS)".into(),
            pool: None,
            outcome,
            leaks: Some(Default::default()),
            tests: Vec::new(),
        };
    }
    let pool = match &args.pool {
        Some(name) => RunPool::existing(runner, choice, name, args.allow_nonempty).await,
        None => RunPool::fresh(runner, choice, &args.file, "conformance").await,
    };
    let pool = match pool {
        Ok(p) => p,
        Err(e) => {
            return error_report(
                format!("{choice:?}"),
                args.pool.as_ref().map(|n| n.to_string()),
                e,
            );
        }
    };
    let lane = match pool.engine.kind() {
        Engine::ZfsFuse => Lane::ZfsFuse,
        _ => Lane::Kernel,
    };
    let described = pool.engine.describe();
    let pool_name = Some(pool.name.to_string());
    let target = SuiteTarget::Zfs {
        pool: pool.name.to_string(),
    };
    let outcome = if cancel.is_cancelled() {
        // Interrupted while the pool was being made: skip the suite, still clean up below.
        error_outcome(XtaskError::Interrupted)
    } else {
        suite(runner, cancel, &target, args, lane).await
    };
    let tests = if args.lane.then_run_tests.is_empty() || cancel.is_cancelled() {
        Vec::new()
    } else {
        super::guest_tests::run(runner, &args.lane.then_run_tests).await
    };
    let (outcome, leaks) = match (outcome, pool.finish(args.keep).await) {
        (o, Ok(leaks)) => (o, leaks),
        (Outcome::Completed { .. }, Err(e)) => (error_outcome(e), None),
        (o, Err(e)) => {
            eprintln!("xtask: cleaning up after the suite failed: {e}");
            (o, None)
        }
    };
    RunReport {
        engine: described,
        pool: pool_name,
        outcome,
        leaks,
        tests,
    }
}

async fn suite(
    runner: &Runner,
    cancel: &Cancel,
    target: &SuiteTarget,
    args: &SuiteArgs,
    lane: Lane,
) -> Outcome {
    match cancel
        .run(seam::run_suite(runner, target, args, lane))
        .await
    {
        Ok(report) => Outcome::Completed { report },
        Err(e) => error_outcome(e),
    }
}

fn error_outcome(e: XtaskError) -> Outcome {
    Outcome::Error {
        message: e.to_string(),
        exit_code: e.exit_code(),
    }
}

fn error_report(engine: String, pool: Option<String>, e: XtaskError) -> RunReport {
    RunReport {
        engine,
        pool,
        outcome: error_outcome(e),
        leaks: None,
        tests: Vec::new(),
    }
}
