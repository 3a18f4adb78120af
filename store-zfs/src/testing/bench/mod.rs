//! The benchmark's ZFS part (the `bench` feature; not for production): what each store
//! operation costs, in wall time and in `zfs`/`zpool` processes, next to OBuilder's ZFS store's
//! command sequences issued through the same runner on the same pool (`baseline.rs`), at 10
//! and at 2,000 existing results. `cargo xtask bench` drives it (engine, fresh pool, the
//! OpenZFS guest, the JSON report); [`run`] needs only a pool it may fill.
//!
//! Both stores live side by side in their own datasets (`<pool>/zs` ours, `<pool>/ob` the
//! baseline); a phase runs at [`ZfsPlan::small`] existing results and one at
//! [`ZfsPlan::large`]. [`ZfsBench::targets`] judges the figures against issue 13's targets
//! and [`print()`] writes the tables. Progress goes to stderr.
//!
//! [`run`] does not stop by itself: to cancel it, drop its future (the caller then destroys
//! the pool, which holds everything it made).

mod baseline;
mod command_costs;
mod counting;
mod ops;
mod report;
mod stats;
mod subject;
mod zfs_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use self::baseline::{Dialect, Obuilder, ZFS_FUSE_SUBSTITUTIONS};
use self::counting::CountingRunner;
use self::ops::{CACHE, Harness};
use self::subject::Subject;
use self::zfs_cmd::Zfs;
use crate::{Engine, RunError, SystemRunner, ZFS_FUSE_MOUNT_CAP, ZfsOptions, ZfsStore};

pub use self::command_costs::CommandCost;
pub use self::ops::{Op, OpFigures, Phase};
pub use self::report::{CYCLE, NOISE_FLOOR_MS, SCALE_LIMIT, Target, cycle, print};
pub use self::stats::Summary;

/// What can stop the benchmark. Command failures keep the command line, how it ended and
/// its stderr, so the message says exactly what ran and how it failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A `zfs` command could not be run at all.
    #[error("`{argv}`: {source}")]
    Run {
        /// The command line.
        argv: String,
        /// Why it did not run.
        source: RunError,
    },
    /// A `zfs` command ran and exited unsuccessfully.
    #[error("`{argv}` failed ({status}){}", stderr_suffix(.stderr))]
    CommandFailed {
        /// The command line.
        argv: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A call on the store under test failed (or a name the benchmark made was refused).
    #[error("{what}: {source}")]
    Store {
        /// The call.
        what: String,
        /// The store's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file-system operation failed.
    #[error("{context}: {path}: {source}")]
    Io {
        /// What the benchmark was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A store answered against the contract (a result just built missing, a stale copy
    /// published, ...), or the benchmark broke its own invariant.
    #[error("{0}")]
    Unexpected(String),
    /// A filling task panicked.
    #[error("fill task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl BenchError {
    fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    fn store(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        BenchError::Store {
            what: what.into(),
            source: Box::new(e),
        }
    }
}

/// Results of this module.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// How big a ZFS run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZfsPlan {
    /// Iterations (pairs) per operation in the first phase.
    pub iterations: usize,
    /// Iterations (pairs) per operation in the second phase.
    pub large_iterations: usize,
    /// Existing results in the first phase.
    pub small: usize,
    /// Existing results in the second phase.
    pub large: usize,
}

/// The ZFS part of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZfsBench {
    /// Which ZFS served the pool (`zfs version`, or zfs-fuse).
    pub engine: String,
    /// The pool.
    pub pool: String,
    /// The plan.
    pub plan: ZfsPlan,
    /// Whether the baseline ran OBuilder's commands verbatim.
    pub baseline_verbatim: bool,
    /// Where it did not: what was substituted and why.
    pub baseline_substitutions: Vec<String>,
    /// The cap on our read-only result mounts used in this run.
    pub ours_mount_cap: Option<usize>,
    /// Seconds spent creating the existing results (ours, baseline) for the large phase.
    pub fill_secs: (f64, f64),
    /// The phases, small first.
    pub phases: Vec<Phase>,
    /// Remarks on the set-up.
    pub notes: Vec<String>,
}

/// zfs-fuse serves at most this many mounts per daemon, across every pool and user.
const ZFS_FUSE_MOUNT_LIMIT: usize = 1000;
/// Mounts left for others on the shared daemon whatever this run does.
const MOUNT_HEADROOM: usize = 200;

/// Runs the ZFS benchmark on pool `pool` (mounted at `mountpoint`, served by `kind`). It
/// creates `<pool>/zs` and `<pool>/ob` and leaves them and everything in them: the pool is
/// meant to be thrown away afterwards.
pub async fn run(pool: &str, mountpoint: &Path, kind: &Engine, plan: ZfsPlan) -> Result<ZfsBench> {
    let counter = CountingRunner::new(Arc::new(SystemRunner));
    let zfs = Zfs::new(counter.clone());
    let (ours_root, ob_root) = (format!("{pool}/zs"), format!("{pool}/ob"));
    zfs.check(&["create", "--", &ours_root]).await?;
    zfs.check(&["create", "--", &ob_root]).await?;
    let mut notes = Vec::new();
    let cap = match kind {
        Engine::ZfsFuse => {
            let in_use = fuse_mounts();
            let room = ZFS_FUSE_MOUNT_LIMIT.saturating_sub(in_use + MOUNT_HEADROOM);
            let cap = ZFS_FUSE_MOUNT_CAP.min(room);
            if cap < ZFS_FUSE_MOUNT_CAP {
                notes.push(format!(
                    "{in_use} zfs-fuse mounts were in use by others: our result mount cap \
                     lowered from {ZFS_FUSE_MOUNT_CAP} to {cap}"
                ));
            }
            Some(cap)
        }
        _ => None,
    };
    let ours = ZfsStore::open_with(
        &ours_root,
        ZfsOptions {
            runner: counter.clone(),
            max_mounted_results: cap,
            engine: None,
        },
    )
    .await
    .map_err(|e| BenchError::store(format!("opening ZfsStore on {ours_root}"), e))?;
    let engine = ours.engine().to_string();
    let dialect = match kind {
        Engine::ZfsFuse => Dialect::ZfsFuse,
        _ => Dialect::Verbatim,
    };
    let baseline = Obuilder::create(zfs.clone(), &ob_root, mountpoint.join("ob"), dialect).await?;
    let ours = Subject::Ours(ours);
    let baseline = Subject::Baseline(baseline);
    for s in [&ours, &baseline] {
        let lease = s.acquire(CACHE).await?;
        s.release(lease).await?;
    }
    let harness = Harness {
        counter: counter.clone(),
        ours: &ours,
        baseline: &baseline,
    };
    let mut phases = Vec::new();
    fill(&ours, &baseline, &zfs, 0, plan.small, kind).await?;
    phases.push(harness.phase("s", plan.iterations, plan.small).await?);
    let fill_secs = fill(&ours, &baseline, &zfs, plan.small, plan.large, kind).await?;
    phases.push(
        harness
            .phase("l", plan.large_iterations, plan.large)
            .await?,
    );
    ours.idle().await;
    notes.push(format!(
        "existing results: ours are real builds (and keep {} read-only mounts); the \
         baseline's are `zfs create -o canmount=noauto` + `zfs snapshot -r` (OBuilder's own \
         builds would leave every result mounted, which a zfs-fuse daemon cannot serve past \
         1000 mounts)",
        cap.map_or("every".to_owned(), |c| format!("at most {c}"))
    ));
    notes.push(
        "OBuilder's `chown` processes run in-process in the baseline (not zfs processes; \
         the baseline's times are slightly flattered)"
            .into(),
    );
    notes.push(
        "complete_deletes of the baseline is OBuilder's fixed 5 s sleep, sampled once per phase"
            .into(),
    );
    Ok(ZfsBench {
        engine,
        pool: pool.to_owned(),
        plan,
        baseline_verbatim: dialect == Dialect::Verbatim,
        baseline_substitutions: match dialect {
            Dialect::Verbatim => Vec::new(),
            Dialect::ZfsFuse => ZFS_FUSE_SUBSTITUTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        },
        ours_mount_cap: cap,
        fill_secs,
        phases,
        notes,
    })
}

/// Mounted zfs-fuse filesystems on this machine.
fn fuse_mounts() -> usize {
    std::fs::read_to_string("/proc/mounts")
        .map(|t| {
            t.lines()
                .filter(|l| l.split_whitespace().nth(2) == Some("fuse.zfs"))
                .count()
        })
        .unwrap_or(0)
}

/// Builds in flight at once while filling, by engine. On zfs-fuse the fill is sequential:
/// with four concurrent builds (create/clone, mount, unmount, snapshot, `mount -o ro`) the
/// daemon deadlocked after ~140 results (every FUSE request blocked, all threads in futex
/// waits, `zpool` still answering), taking every pool on the machine with it.
fn fill_concurrency(kind: &Engine) -> usize {
    match kind {
        Engine::ZfsFuse => 1,
        _ => 4,
    }
}

/// Gives both stores results `fill-<from>` .. `fill-<to - 1>`; returns the seconds each took.
async fn fill(
    ours: &Subject,
    baseline: &Subject,
    zfs: &Zfs,
    from: usize,
    to: usize,
    kind: &Engine,
) -> Result<(f64, f64)> {
    let concurrency = fill_concurrency(kind);
    if to <= from {
        return Ok((0.0, 0.0));
    }
    let Subject::Ours(store) = ours else {
        return Err(BenchError::Unexpected("internal: fill order".into()));
    };
    let Subject::Baseline(ob) = baseline else {
        return Err(BenchError::Unexpected("internal: fill order".into()));
    };
    eprintln!("xtask: bench: creating results {from}..{to} in both stores");
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for k in from..to {
        if set.len() >= concurrency {
            joined(set.join_next().await)?;
        }
        let s = store.clone();
        set.spawn(async move { Subject::Ours(s).build(None, &format!("fill-{k}")).await });
        if (k + 1) % 250 == 0 {
            eprintln!("xtask: bench: ours: {}/{to}", k + 1);
        }
    }
    while let Some(r) = set.join_next().await {
        joined(Some(r))?;
    }
    let ours_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for k in from..to {
        if set.len() >= concurrency {
            joined(set.join_next().await)?;
        }
        let (zfs, ds) = (zfs.clone(), ob.result_dataset(&format!("fill-{k}")));
        set.spawn(async move {
            zfs.check(&["create", "-o", "canmount=noauto", "--", &ds])
                .await?;
            zfs.check(&["snapshot", "-r", "--", &format!("{ds}@snap")])
                .await?;
            Ok(())
        });
        if (k + 1) % 250 == 0 {
            eprintln!("xtask: bench: baseline: {}/{to}", k + 1);
        }
    }
    while let Some(r) = set.join_next().await {
        joined(Some(r))?;
    }
    Ok((ours_secs, t1.elapsed().as_secs_f64()))
}

fn joined(r: Option<std::result::Result<Result<()>, tokio::task::JoinError>>) -> Result<()> {
    match r {
        None => Ok(()),
        Some(r) => r?,
    }
}
