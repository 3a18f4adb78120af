//! `cargo xtask crash`: crash safety with real processes. A child process (this binary's
//! hidden `crash-child`) drives random operations on a store on a real pool — builds with
//! and without a base, several at once, deletes, cache copies released (published or
//! discarded) or dropped, `delete_cache` — journaling each before and after it. The parent
//! `kill -9`s it at a random moment, waits for the `zfs` commands it left running, reopens the
//! store and checks it against the journal: every result the child saw committed is there and
//! complete, every other one complete or absent, every cache at a released version (whole,
//! never mixed, empty only if allowed), `state_dir` untouched, nothing temporary left, and an
//! interrupted id can be built again. It prints one line per round and ends with
//! `crash: N rounds, K kills, V violations` (exit 0 only with 0 violations and a kill in every
//! round).
//!
//! `--engine vm` runs the whole thing (parent and child) inside the OpenZFS guest.

mod child;
mod journal;
mod model;
mod rng;
mod rounds;
mod target;
mod verify;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use self::rounds::{Plan, Tally};
use self::target::Target;
use crate::cancel::Cancel;
use crate::cli::VmOptions;
use crate::engine::{self, EngineChoice};
use crate::error::{EXIT_FAILED, EXIT_OK, Result, XtaskError};
use crate::leaks::{self, Footprint};
use crate::pool::{self};
use crate::runner::{Cmd, Runner};
use crate::vm::{self, GuestExit};

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
    /// The pool's file, size and name prefix.
    #[command(flatten)]
    pub file: crate::pool::PoolArgs,
    /// VM options (--engine vm).
    #[command(flatten)]
    pub vm: VmOptions,
}

/// `crash-child` options (started by `crash`, never by hand).
#[derive(Debug, Args)]
pub struct CrashChildArgs {
    /// `zfs:<dataset>` or `fake:<root>`.
    #[arg(long)]
    pub target: String,
    /// The journal to append to.
    #[arg(long)]
    pub journal: PathBuf,
    /// Seed of the child's choices.
    #[arg(long)]
    pub seed: u64,
    /// The round (makes ids unique).
    #[arg(long)]
    pub round: u64,
}

/// Runs `crash`; returns the exit status.
pub async fn crash(runner: &Runner, cancel: &Cancel, args: &CrashArgs) -> Result<u8> {
    if args.rounds == 0 {
        return Err(XtaskError::Invalid("--rounds must be at least 1".into()));
    }
    let seed = args.seed.unwrap_or_else(clock_seed);
    if args.engine == EngineChoice::Vm {
        return in_vm(runner, cancel, args, seed).await;
    }
    let plan = Plan {
        rounds: args.rounds,
        seed,
        max_delay: Duration::from_millis(args.max_delay_ms.unwrap_or(1500)),
    };
    println!(
        "crash: {} rounds, seed {seed} (repeat with --seed {seed}), kills within {} ms of each \
         child's start",
        plan.rounds,
        plan.max_delay.as_millis()
    );
    let started = Instant::now();
    let tally = match args.engine {
        EngineChoice::Fake => on_fake(runner, cancel, &plan, args.keep).await?,
        local => on_pool(runner, cancel, local, &plan, args).await?,
    };
    Ok(summary(&tally, plan.rounds, started.elapsed()))
}

/// Prints the closing line; returns the exit status.
fn summary(t: &Tally, planned: u64, took: Duration) -> u8 {
    println!(
        "crash: {} results read back in full, {} interrupted ids built again, {:.0} s",
        t.results_checked,
        t.rebuilt,
        took.as_secs_f64()
    );
    for v in &t.violations {
        println!("  VIOLATION {v}");
    }
    println!(
        "crash: {} rounds, {} kills, {} violations",
        t.rounds,
        t.kills,
        t.violations.len()
    );
    if t.violations.is_empty() && t.rounds == planned && t.kills == planned {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// Runs `crash-child` (never returns unless set-up fails).
pub async fn crash_child(args: &CrashChildArgs) -> Result<u8> {
    let target = Target::parse(&args.target).map_err(XtaskError::Invalid)?;
    child::run(&target, &args.journal, args.seed, args.round)
        .await
        .map_err(XtaskError::Invalid)?;
    Ok(EXIT_FAILED)
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id())
}

/// Opens the store once to create it and write the sentinel in `state_dir`.
async fn set_up(target: &Target) -> Result<()> {
    let opened = target.open().await.map_err(XtaskError::Invalid)?;
    let (name, content) = verify::SENTINEL;
    let path = opened.store.state_dir().join(name);
    std::fs::write(&path, content).map_err(|e| XtaskError::io("writing the sentinel", &path, e))?;
    opened.idle().await;
    Ok(())
}

async fn on_fake(runner: &Runner, cancel: &Cancel, plan: &Plan, keep: bool) -> Result<Tally> {
    let work = tempfile::Builder::new()
        .prefix("zstore-crash-")
        .tempdir()
        .map_err(|e| XtaskError::io("creating a work directory", std::env::temp_dir(), e))?;
    let target = Target::Fake(work.path().join("store"));
    set_up(&target).await?;
    let journal = work.path().join("journal");
    let tally = rounds::run(runner, cancel, &target, &journal, work.path(), plan).await;
    if keep {
        println!(
            "crash: --keep: store and journal in {}",
            work.keep().display()
        );
    } else {
        keep_work_if_violated(work, &tally);
    }
    tally
}

/// Keeps the work directory (journal and the logs of the children whose rounds broke a
/// promise) when the run found a violation, so it can be looked into; removes it otherwise.
fn keep_work_if_violated(work: tempfile::TempDir, tally: &Result<Tally>) {
    if tally.as_ref().is_ok_and(|t| !t.violations.is_empty()) {
        println!(
            "crash: the journal and the logs of the rounds with violations are kept in {}",
            work.keep().display()
        );
    }
}

async fn on_pool(
    runner: &Runner,
    cancel: &Cancel,
    choice: EngineChoice,
    plan: &Plan,
    args: &CrashArgs,
) -> Result<Tally> {
    let engine = engine::prepare_local(runner, choice).await?;
    eprintln!("xtask: crash: engine: {}", engine.describe());
    let (dir, name, record) = args
        .file
        .create_fresh(runner, &engine.kind().to_string())
        .await?;
    eprintln!(
        "xtask: crash: pool {name} mounted at {}",
        record.mountpoint.display()
    );
    let work = tempfile::Builder::new()
        .prefix("zstore-crash-")
        .tempdir()
        .map_err(|e| XtaskError::io("creating a work directory", std::env::temp_dir(), e))?;
    let dataset = format!("{name}/crash");
    let ran = async {
        runner
            .check(&Cmd::new("zfs").args(["create", "--", &dataset]))
            .await?;
        let target = Target::Zfs(dataset.clone());
        set_up(&target).await?;
        let journal = work.path().join("journal");
        rounds::run(runner, cancel, &target, &journal, work.path(), plan).await
    }
    .await;
    let mut fp = Footprint {
        daemon: engine.started_daemon(),
        ..Footprint::default()
    };
    let cleaned = if args.keep {
        println!(
            "crash: --keep: pool {name} and journal {} kept; remove the pool with: cargo xtask \
             pool destroy {name}",
            work.keep().display()
        );
        Ok(())
    } else {
        keep_work_if_violated(work, &ran);
        fp.pools.push(record.name.clone());
        fp.files
            .extend([record.vdev.clone(), dir.root().join(format!("{name}.json"))]);
        fp.dirs.push(record.mountpoint.clone());
        pool::destroy(runner, &dir, &name).await
    };
    let finished = engine.finish(args.keep).await;
    let mut tally = ran?;
    cleaned?;
    finished?;
    if !args.keep {
        let leaks = leaks::check(runner, &fp).await;
        leaks.print(if std::env::var_os("ZSTORE_VM").is_some() {
            "guest"
        } else {
            "host"
        });
        tally.violations.extend(
            leaks
                .leftovers
                .into_iter()
                .map(|l| format!("left behind: {l}")),
        );
    }
    Ok(tally)
}

/// Runs `crash --engine kernel` inside the OpenZFS guest, streaming its output.
async fn in_vm(runner: &Runner, cancel: &Cancel, args: &CrashArgs, seed: u64) -> Result<u8> {
    args.file.bytes()?;
    let mut argv: Vec<OsString> = vec![
        "crash".into(),
        "--engine".into(),
        "kernel".into(),
        "--rounds".into(),
        args.rounds.to_string().into(),
        "--seed".into(),
        seed.to_string().into(),
        "--max-delay-ms".into(),
        args.max_delay_ms.unwrap_or(6000).to_string().into(),
    ];
    argv.extend(args.file.guest_args());
    let (image, spec) = vm::guest_xtask(runner, cancel, &args.vm, argv).await?;
    eprintln!(
        "xtask: crash: booting the OpenZFS guest (kernel {}, zfs {}); the parent and the child \
         both run inside it",
        image.manifest.kernel, image.manifest.zfs
    );
    let outcome = vm::run::run(runner, cancel, &image, &spec).await?;
    match outcome.exit {
        GuestExit::Exited(code) => {
            println!("crash: (the above ran in the OpenZFS guest; it exited with {code})");
            Ok(u8::try_from(code).unwrap_or(EXIT_FAILED))
        }
        other => Err(XtaskError::VmFailed(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip() {
        for t in [
            Target::Zfs("p/crash".into()),
            Target::Fake("/tmp/x y".into()),
        ] {
            assert_eq!(Target::parse(&t.arg()), Ok(t));
        }
        assert!(Target::parse("p/crash").is_err());
    }
}
