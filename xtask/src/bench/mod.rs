//! `cargo xtask bench`: what each store operation costs, in wall time and in `zfs`/`zpool`
//! processes, next to OBuilder's ZFS store's command sequences issued through the same runner
//! on the same fresh pool, at 10 and at 2,000 existing results ([`store_zfs::testing::bench`]);
//! and how fast the fake store builds compared with a plain copy
//! ([`store_fake::testing::bench`]). The measuring is those libraries'; this is the driver:
//! the options, the engine and a fresh pool (or the OpenZFS guest), cancellation, and the
//! report: tables and the verdict on each target on stdout, and `target/bench/report.json`
//! ([`report::BenchReport`]).
//!
//! `--engine vm` runs the ZFS part inside the OpenZFS guest: the host copies this binary in
//! and runs the hidden `run-bench` there, which is the same code as a local run on kernel
//! OpenZFS; its JSON report comes back through the control directory.

mod report;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use store_fake::testing::bench::{self as fake_bench, FakePlan};
use store_zfs::testing::bench::{self as zfs_bench, ZfsBench, ZfsPlan};

use self::report::BenchReport;
use crate::cancel::Cancel;
use crate::cli::VmOptions;
use crate::engine::EngineChoice;
use crate::error::{EXIT_OK, Result, XtaskError};
use crate::pool::RunPool;
use crate::runner::Runner;
use crate::vm::{self, GUEST_CTL, GuestExit};

/// Options of the ZFS part, shared by `bench` and `run-bench`.
#[derive(Debug, Clone, Args)]
pub struct ZfsBenchArgs {
    /// Fewer samples (10 pairs instead of 30) and 200 instead of 2,000 existing results in
    /// the second phase (the report says so).
    #[arg(long)]
    pub quick: bool,
    /// Pairs per operation and phase [default: 30, or 10 with --quick].
    #[arg(long, value_name = "N")]
    pub iterations: Option<usize>,
    /// Pairs per operation in the second phase [default: --iterations]. OBuilder's cache
    /// release renames datasets, and on zfs-fuse each `zfs rename` walks the whole pool
    /// (over 30 s at 2,000 results), so a full run may want fewer here.
    #[arg(long, value_name = "N")]
    pub large_iterations: Option<usize>,
    /// Existing results in the second phase [default: 2000, or 200 with --quick].
    #[arg(long, value_name = "N")]
    pub results: Option<usize>,
    /// The pool's file, size and name prefix.
    #[command(flatten)]
    pub file: crate::pool::PoolArgs,
}

impl ZfsBenchArgs {
    fn plan(&self) -> ZfsPlan {
        let iterations = self
            .iterations
            .unwrap_or(if self.quick { 10 } else { 30 })
            .max(1);
        ZfsPlan {
            iterations,
            large_iterations: self.large_iterations.unwrap_or(iterations).max(1),
            small: 10,
            large: self.results.unwrap_or(if self.quick { 200 } else { 2000 }),
        }
    }
}

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure: a ZFS engine (auto: kernel OpenZFS if present, else zfs-fuse), vm
    /// (OpenZFS in the qemu guest), or fake (the fake store only).
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineChoice,
    /// The ZFS part's options.
    #[command(flatten)]
    pub zfs: ZfsBenchArgs,
    /// Skip the fake store's part (it runs on the host with every engine otherwise).
    #[arg(long)]
    pub skip_fake: bool,
    /// Write the JSON report here [default: bench/report.json in the target directory].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// VM options (--engine vm).
    #[command(flatten)]
    pub vm: VmOptions,
}

/// `run-bench` options (the guest side of `bench --engine vm`).
#[derive(Debug, Args)]
pub struct RunBenchArgs {
    /// Which local engine (this runs where the ZFS is).
    #[arg(long, value_enum, default_value = "kernel")]
    pub engine: EngineChoice,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The ZFS part's options.
    #[command(flatten)]
    pub zfs: ZfsBenchArgs,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `bench`. Returns the exit status: 0 when the measurements ran (targets that were not
/// met are reported, not failed).
pub async fn bench(runner: &Runner, cancel: &Cancel, args: &BenchArgs) -> Result<u8> {
    let started_unix = now_unix();
    let zfs = match args.engine {
        EngineChoice::Fake => None,
        EngineChoice::Vm => Some(vm_zfs(runner, cancel, args).await?),
        local => Some(local_zfs(runner, cancel, local, &args.zfs).await?),
    };
    let fake = if args.skip_fake {
        None
    } else {
        let plan = FakePlan::new(args.zfs.quick);
        Some(
            cancel
                .run(async { Ok(fake_bench::run(plan).await?) })
                .await?,
        )
    };
    let report = BenchReport::new(
        args.engine,
        args.zfs.quick,
        report::git_head(runner).await,
        started_unix,
        zfs,
        fake,
    );
    report.print();
    let out = args.out.clone().unwrap_or_else(report::default_path);
    report.write(&out)?;
    println!();
    println!("report: {}", out.display());
    Ok(EXIT_OK)
}

/// Runs `run-bench`: the ZFS part on a local engine, JSON report to `--report`.
pub async fn run_bench(runner: &Runner, cancel: &Cancel, args: &RunBenchArgs) -> Result<u8> {
    if matches!(args.engine, EngineChoice::Vm | EngineChoice::Fake) {
        return Err(XtaskError::Invalid(
            "run-bench needs a local ZFS engine: kernel, zfs-fuse or auto".into(),
        ));
    }
    let started_unix = now_unix();
    let zfs = local_zfs(runner, cancel, args.engine, &args.zfs).await?;
    let report = BenchReport::new(
        args.engine,
        args.zfs.quick,
        None,
        started_unix,
        Some(zfs),
        None,
    );
    report.print();
    report.write(&args.report)?;
    Ok(EXIT_OK)
}

/// Prepares the engine and a fresh pool, runs the ZFS part, destroys the pool.
async fn local_zfs(
    runner: &Runner,
    cancel: &Cancel,
    choice: EngineChoice,
    z: &ZfsBenchArgs,
) -> Result<ZfsBench> {
    let pool = RunPool::fresh(runner, choice, &z.file, "bench").await?;
    // Cancelling drops the run mid-step; the pool destroyed below holds all it made.
    let kind = pool.engine.kind();
    let run = zfs_bench::run(pool.name.as_str(), &pool.mountpoint, &kind, z.plan());
    let measured = cancel.run(async { Ok(run.await?) }).await;
    pool.finish(false).await?;
    measured
}

/// Runs the ZFS part in the OpenZFS guest and returns the guest's figures.
async fn vm_zfs(runner: &Runner, cancel: &Cancel, args: &BenchArgs) -> Result<ZfsBench> {
    let z = &args.zfs;
    z.file.bytes()?;
    let ctl = PathBuf::from(GUEST_CTL);
    let mut argv: Vec<OsString> = vec![
        "run-bench".into(),
        "--engine".into(),
        "kernel".into(),
        "--report".into(),
        ctl.join("report.json").into(),
    ];
    argv.extend(z.file.guest_args());
    if z.quick {
        argv.push("--quick".into());
    }
    if let Some(n) = z.iterations {
        argv.extend(["--iterations".into(), n.to_string().into()]);
    }
    if let Some(n) = z.results {
        argv.extend(["--results".into(), n.to_string().into()]);
    }
    if let Some(n) = z.large_iterations {
        argv.extend(["--large-iterations".into(), n.to_string().into()]);
    }
    let (image, mut spec) = vm::guest_xtask(runner, cancel, &args.vm, argv).await?;
    spec.fetch.push("report.json".into());
    let (outcome, _) = vm::boot(runner, cancel, &image, &spec, "bench").await?;
    let guest: Option<BenchReport> = outcome
        .fetched
        .get("report.json")
        .and_then(|b| serde_json::from_slice(b).ok());
    match (outcome.exit, guest.and_then(|r| r.zfs)) {
        (GuestExit::Exited(0), Some(mut z)) => {
            z.engine = format!(
                "vm: {} in qemu TCG (guest kernel {})",
                z.engine, image.manifest.kernel
            );
            z.notes.push(
                "measured inside a qemu TCG guest: every instruction is emulated, so absolute \
                 times are far above real hardware; the ratios are what carries over"
                    .into(),
            );
            Ok(z)
        }
        (other, _) => Err(XtaskError::VmFailed(other.failure(&args.vm).map_or_else(
            || format!("run-bench in the guest ended with {other:?} (see its output above)"),
            |(why, _)| why,
        ))),
    }
}
