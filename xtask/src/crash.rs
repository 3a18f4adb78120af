//! `cargo xtask crash`: the crash test ([`conformance::crash`]: real processes killed with
//! `kill -9` at random moments, the store reopened and checked after each kill) on a fresh
//! pool, or on the fake. The test itself is the backend's `tests/kill9.rs` (store-zfs's, or
//! store-fake's for `--engine fake`); xtask builds it, prepares the engine and the pool, runs
//! it with the `ZSTORE_CRASH_*` variables, destroys the pool and checks for leftovers. The
//! test prints one line per round and ends with `crash: N rounds, K kills, V violations`.
//!
//! `--engine vm` runs the whole thing (parent and children) inside the OpenZFS guest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::cancel::Cancel;
use crate::cli::VmOptions;
use crate::conformance::libtest;
use crate::engine::EngineChoice;
use crate::error::{EXIT_FAILED, EXIT_OK, Result, XtaskError};
use crate::pool::RunPool;
use crate::runner::{Cmd, Runner};
use crate::vm::{self, GUEST_CTL, GuestExit};

/// The test `conformance::crash_test!` generates.
const TEST: &str = "kill_9_at_random_moments_loses_nothing";

/// `crash` options.
#[derive(Debug, Args)]
pub struct CrashArgs {
    /// Where the store lives: a ZFS engine (auto: kernel OpenZFS if present, else
    /// zfs-fuse), vm (OpenZFS in the qemu guest), or fake (store-fake in a temporary
    /// directory).
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineChoice,
    /// Rounds (one kill each).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub rounds: u64,
    /// Seed of every random choice [default: from the clock; printed].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Each kill lands at a random moment up to this long after the child starts [default:
    /// 1500, or 6000 inside the qemu guest].
    #[arg(long, value_name = "MS")]
    pub max_delay_ms: Option<u64>,
    /// Keep the pool (and the journal) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// The backend's crash test executable, built elsewhere (the guest has no cargo).
    #[arg(long, value_name = "FILE", hide = true)]
    pub test_exe: Option<PathBuf>,
    /// The pool's file, size and name prefix.
    #[command(flatten)]
    pub file: crate::pool::PoolArgs,
    /// VM options (--engine vm).
    #[command(flatten)]
    pub vm: VmOptions,
}

/// Runs `crash`; returns the exit status.
pub async fn crash(runner: &Runner, cancel: &Cancel, args: &CrashArgs) -> Result<u8> {
    if args.rounds == 0 {
        return Err(XtaskError::Invalid("--rounds must be at least 1".into()));
    }
    if args.engine == EngineChoice::Vm {
        return in_vm(runner, cancel, args).await;
    }
    let package = if args.engine == EngineChoice::Fake {
        "store-fake"
    } else {
        "store-zfs"
    };
    let exe = match &args.test_exe {
        Some(exe) => exe.clone(),
        None => build(runner, package).await?,
    };
    // Without --seed or --max-delay-ms the test's own defaults apply (a seed from the clock,
    // printed; kills within 1.5 s).
    let mut env = vec![(conformance::crash::ROUNDS_ENV, args.rounds.to_string())];
    if let Some(ms) = args.max_delay_ms {
        env.push((conformance::crash::MAX_DELAY_ENV, ms.to_string()));
    }
    if let Some(seed) = args.seed {
        env.push((conformance::crash::SEED_ENV, seed.to_string()));
    }
    if args.keep {
        env.push((conformance::crash::KEEP_ENV, "1".into()));
    }
    if args.engine == EngineChoice::Fake {
        return cancel.run(run_test(runner, &exe, &env)).await;
    }
    on_pool(runner, cancel, args, &exe, env).await
}

/// Builds `package`'s crash test; returns its executable.
async fn build(runner: &Runner, package: &str) -> Result<PathBuf> {
    libtest::build_tests(runner, package, &["--test", "kill9"])
        .await?
        .into_iter()
        .find_map(|(name, exe)| (name == "kill9").then_some(exe))
        .ok_or_else(|| XtaskError::Invalid(format!("cargo built no kill9 test of {package}")))
}

/// Runs the test executable, its output streaming to the terminal; the exit status.
async fn run_test(runner: &Runner, exe: &Path, env: &[(&str, String)]) -> Result<u8> {
    let mut cmd = Cmd::new(exe).args([TEST, "--exact", "--nocapture"]);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let status = runner
        .spawn(&cmd, |_| {})?
        .wait()
        .await
        .map_err(|e| XtaskError::io("waiting for the crash test", exe, e))?;
    Ok(if status.success() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// A fresh pool on the local engine, the test on it, then the pool destroyed and the machine
/// checked for leftovers (each one fails the run).
async fn on_pool(
    runner: &Runner,
    cancel: &Cancel,
    args: &CrashArgs,
    exe: &Path,
    mut env: Vec<(&str, String)>,
) -> Result<u8> {
    let pool = RunPool::fresh(runner, args.engine, &args.file, "crash").await?;
    env.push((store_zfs::testing::POOL_ENV, pool.name.to_string()));
    env.push((store_zfs::testing::REQUIRE_ZFS_ENV, "1".into()));
    let ran = cancel.run(run_test(runner, exe, &env)).await;
    let leaks = pool.finish(args.keep).await;
    let mut status = ran?;
    for l in leaks?.map(|l| l.leftovers).unwrap_or_default() {
        println!("  VIOLATION left behind: {l}");
        status = EXIT_FAILED;
    }
    Ok(status)
}

/// Runs `crash --engine kernel` inside the OpenZFS guest with the crash test built here,
/// streaming its output.
async fn in_vm(runner: &Runner, cancel: &Cancel, args: &CrashArgs) -> Result<u8> {
    args.file.bytes()?;
    let ctl = PathBuf::from(GUEST_CTL);
    let mut argv: Vec<OsString> = vec![
        "crash".into(),
        "--engine".into(),
        "kernel".into(),
        "--rounds".into(),
        args.rounds.to_string().into(),
        "--max-delay-ms".into(),
        args.max_delay_ms.unwrap_or(6000).to_string().into(),
        "--test-exe".into(),
        ctl.join("test-crash").into(),
    ];
    if let Some(seed) = args.seed {
        argv.extend(["--seed".into(), seed.to_string().into()]);
    }
    argv.extend(args.file.guest_args());
    let (image, mut spec) = vm::guest_xtask(runner, cancel, &args.vm, argv).await?;
    spec.files
        .push((build(runner, "store-zfs").await?, "test-crash".into()));
    // The parent and the children all run inside the guest.
    let (outcome, host_leaks) = vm::boot(runner, cancel, &image, &spec, "crash").await?;
    if let Some((why, _)) = outcome.exit.failure(&args.vm) {
        return Err(XtaskError::VmFailed(why));
    }
    println!(
        "crash: (the above ran in the OpenZFS guest; it ended with {:?})",
        outcome.exit
    );
    Ok(match outcome.exit {
        GuestExit::Exited(0) if host_leaks.clean() => EXIT_OK,
        _ => EXIT_FAILED,
    })
}
