//! A conformance run on this machine's ZFS (kernel or zfs-fuse) or on the fake store:
//! prepare the engine, create the pool, run the suite, destroy the pool, undo the engine
//! preparation, check for leftovers. Cleanup runs on every path, including SIGINT/SIGTERM.

use super::lane::Lane;
use super::report::{Outcome, RunReport};
use super::seam::{self, SuiteOptions, SuiteTarget};
use crate::cancel::Cancel;
use crate::cli::SuiteArgs;
use crate::engine::{self, EngineChoice, LocalEngine};
use crate::error::{Result, XtaskError};
use crate::leaks::{self, Footprint};
use crate::runner::Runner;
use store_zfs::Engine;
use store_zfs::testing::pool::{self, PoolName};

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
        let opts = options(Lane::Fake, args);
        let outcome = suite(runner, cancel, &SuiteTarget::Fake, &opts).await;
        return RunReport {
            engine: "fake (store-fake on plain directories, no ZFS)".into(),
            pool: None,
            outcome,
            leaks: Some(Default::default()),
            tests: Vec::new(),
        };
    }
    let engine = match engine::prepare_local(runner, choice).await {
        Ok(e) => e,
        Err(e) => return error_report(format!("{choice:?}"), None, e),
    };
    let opts = options(
        match engine.kind() {
            Engine::ZfsFuse => Lane::ZfsFuse,
            _ => Lane::Kernel,
        },
        args,
    );
    eprintln!("xtask: engine: {}", engine.describe());
    let described = engine.describe();
    let mut fp = Footprint {
        daemon: engine.started_daemon(),
        ..Footprint::default()
    };
    let (outcome, pool_name) = with_pool(runner, cancel, &engine, args, &opts, &mut fp).await;
    let tests = if args.lane.then_run_tests.is_empty() || cancel.is_cancelled() {
        Vec::new()
    } else {
        super::guest_tests::run(runner, &args.lane.then_run_tests).await
    };
    let finished = engine.finish(args.keep).await;
    let leaks = if args.keep {
        eprintln!("xtask: --keep: leak check skipped");
        None
    } else {
        let report = leaks::check(&fp).await;
        report.print(if std::env::var_os("ZSTORE_VM").is_some() {
            "guest"
        } else {
            "host"
        });
        Some(report)
    };
    let outcome = match (outcome, finished) {
        (Outcome::Completed { .. }, Err(e)) => error_outcome(e),
        (o, _) => o,
    };
    RunReport {
        engine: described,
        pool: pool_name,
        outcome,
        leaks,
        tests,
    }
}

/// The suite options for `lane` (unless `--lane` overrides it) from the command line.
fn options(lane: Lane, args: &SuiteArgs) -> SuiteOptions {
    SuiteOptions {
        cases: args.cases,
        max_ops: args.lane.max_ops,
        concurrency_cases: args.lane.concurrency_cases,
        quick_checks: args.lane.quick_checks,
        seed: args.seed,
        replay: args.replay.clone(),
        self_test: args.lane.self_test_broken_store,
        parallel: args.lane.parallel,
        test_exe: args.lane.test_exe.clone(),
        ..SuiteOptions::for_lane(args.lane.lane.unwrap_or(lane))
    }
}

/// Creates (or checks) the pool, runs the suite, destroys the pool it created.
async fn with_pool(
    runner: &Runner,
    cancel: &Cancel,
    engine: &LocalEngine,
    args: &SuiteArgs,
    opts: &SuiteOptions,
    fp: &mut Footprint,
) -> (Outcome, Option<String>) {
    let dir = args.file.dir();
    let zfs = crate::pool::runner();
    let (name, mountpoint, created) = match &args.pool {
        Some(name) => match existing_pool(&*zfs, name, args.allow_nonempty).await {
            Ok(mnt) => (name.clone(), mnt, None),
            Err(e) => return (error_outcome(e), Some(name.to_string())),
        },
        None => match args
            .file
            .create_fresh(&*zfs, &engine.kind().to_string())
            .await
        {
            Ok((_, name, rec)) => {
                fp.pools.push(rec.name.clone());
                fp.files.extend([rec.vdev.clone(), dir.record_path(&name)]);
                fp.dirs.push(rec.mountpoint.clone());
                (name, rec.mountpoint.clone(), Some(rec))
            }
            Err(e) => return (error_outcome(e), None),
        },
    };
    eprintln!("xtask: pool {name} mounted at {}", mountpoint.display());
    if cancel.is_cancelled() {
        // Interrupted while the pool was being made: skip the suite, still clean up below.
        eprintln!("xtask: interrupted before the suite started");
    }
    let target = SuiteTarget::Zfs {
        pool: name.to_string(),
    };
    let outcome = if cancel.is_cancelled() {
        error_outcome(XtaskError::Interrupted)
    } else {
        suite(runner, cancel, &target, opts).await
    };
    if let Some(rec) = created {
        if args.keep {
            eprintln!(
                "xtask: --keep: pool {} kept (vdev {}); remove it with: cargo xtask pool destroy {}",
                rec.name,
                rec.vdev.display(),
                rec.name
            );
        } else if let Err(e) = pool::destroy(&*zfs, &dir, &name).await {
            eprintln!("xtask: destroying pool {name} failed: {e}");
            return (error_outcome(e.into()), Some(name.to_string()));
        }
    }
    (outcome, Some(name.to_string()))
}

/// Checks an operator-given pool: it must exist and (unless allowed) hold nothing.
async fn existing_pool(
    runner: &dyn store_zfs::Runner,
    name: &PoolName,
    allow_nonempty: bool,
) -> Result<std::path::PathBuf> {
    if !pool::exists(runner, name).await? {
        return Err(XtaskError::Invalid(format!("--pool {name}: no such pool")));
    }
    if !allow_nonempty {
        if let Some(why) = pool::why_not_empty(runner, name).await? {
            return Err(XtaskError::Invalid(format!(
                "--pool {name} already holds data ({why}); the suite would write into it. \
                 Use an empty pool, or pass --allow-nonempty"
            )));
        }
    }
    let mnt = pool::property(runner, name.as_str(), "mountpoint").await?;
    if !mnt.starts_with('/') {
        return Err(XtaskError::Invalid(format!(
            "--pool {name} is not mounted (mountpoint={mnt})"
        )));
    }
    Ok(mnt.into())
}

async fn suite(
    runner: &Runner,
    cancel: &Cancel,
    target: &SuiteTarget,
    opts: &SuiteOptions,
) -> Outcome {
    match cancel.run(seam::run_suite(runner, target, opts)).await {
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
