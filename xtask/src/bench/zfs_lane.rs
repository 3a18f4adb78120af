//! The ZFS part of the benchmark on a prepared pool: both stores side by side in their own
//! datasets (`<pool>/zs` ours, `<pool>/ob` the baseline), a phase at 10 existing results and
//! one at 2,000 (or fewer with `--quick`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use store_zfs::{SystemRunner, ZFS_FUSE_MOUNT_CAP, ZfsOptions, ZfsStore};
use tokio::task::JoinSet;

use super::baseline::{Dialect, Obuilder, ZFS_FUSE_SUBSTITUTIONS};
use super::counting::CountingRunner;
use super::ops::{CACHE, Harness, Phase};
use super::subject::Subject;
use super::zfs_cmd::Zfs;
use crate::cancel::Cancel;
use crate::error::{Result, XtaskError};
use store_zfs::Engine;

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

/// Runs the ZFS benchmark on pool `pool` (mounted at `mountpoint`).
pub async fn run(
    pool: &str,
    mountpoint: &Path,
    kind: &Engine,
    plan: ZfsPlan,
    cancel: &Cancel,
) -> Result<ZfsBench> {
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
        },
    )
    .await
    .map_err(|e| XtaskError::Invalid(format!("opening ZfsStore on {ours_root}: {e}")))?;
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
        cancel,
    };
    let mut phases = Vec::new();
    fill(&ours, &baseline, &zfs, 0, plan.small, kind, cancel).await?;
    phases.push(harness.phase("s", plan.iterations, plan.small).await?);
    let fill_secs = fill(&ours, &baseline, &zfs, plan.small, plan.large, kind, cancel).await?;
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
    cancel: &Cancel,
) -> Result<(f64, f64)> {
    let concurrency = fill_concurrency(kind);
    if to <= from {
        return Ok((0.0, 0.0));
    }
    let Subject::Ours(store) = ours else {
        return Err(XtaskError::Invalid("internal: fill order".into()));
    };
    let Subject::Baseline(ob) = baseline else {
        return Err(XtaskError::Invalid("internal: fill order".into()));
    };
    eprintln!("xtask: bench: creating results {from}..{to} in both stores");
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for k in from..to {
        if cancel.is_cancelled() {
            return Err(XtaskError::Interrupted);
        }
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
        if cancel.is_cancelled() {
            return Err(XtaskError::Interrupted);
        }
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
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(XtaskError::Invalid(format!("fill task: {e}"))),
    }
}
