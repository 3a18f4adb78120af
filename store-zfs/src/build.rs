//! `build`: clone (or create) the result dataset in place, run the build function in it, and
//! commit with one snapshot; on any failure, panic or cancellation the dataset is destroyed.

use std::path::PathBuf;
use std::sync::Arc;

use store_api::{BuildError, BuildFn, BuildFnError, BuildFnOutcome, Id, StoreError, run_build_fn};

use crate::results::{enforce_mount_cap, ensure_mounted, spawn_reap};
use crate::state::{MountState, ResultDs, Shared, Status, Ticket, join, lock, spawn_detached};

/// `canmount=noauto`: results and cache generations are never mounted by `zfs mount -a`
/// (at boot or daemon start), only on demand, so thousands of them do not exhaust mounts.
pub const NOAUTO: &str = "canmount=noauto";

/// The per-dataset lock that orders a dataset's commands.
type OpLock = Arc<tokio::sync::Mutex<()>>;

/// Registers the build (all checks and the dependency on the base happen atomically here, so a
/// concurrent `delete(base)` sees the new dependent). Returns the new leaf, the base's leaf
/// and the new dataset's op lock.
fn begin(
    inner: &Shared,
    base: Option<&Id>,
    id: &Id,
) -> Result<(String, Option<String>, OpLock), StoreError> {
    let mut idx = lock(&inner.results);
    if idx.by_id.contains_key(id) {
        return Err(StoreError::AlreadyBuilt { id: id.clone() });
    }
    if idx.building.contains_key(id) {
        return Err(StoreError::BuildInProgress { id: id.clone() });
    }
    let base_leaf = match base {
        Some(b) => Some(
            idx.by_id
                .get(b)
                .cloned()
                .ok_or_else(|| StoreError::MissingBase { base: b.clone() })?,
        ),
        None => None,
    };
    let leaf = idx.free_leaf(id);
    if let Some(b) = &base_leaf {
        if let Some(d) = idx.datasets.get_mut(b) {
            d.dependents += 1;
        }
    }
    let ds = ResultDs::new(base_leaf.clone(), Status::Building);
    let op = ds.op.clone();
    idx.datasets.insert(leaf.clone(), ds);
    idx.building.insert(
        id.clone(),
        Ticket {
            leaf: leaf.clone(),
            committed: false,
            cancelled: false,
        },
    );
    Ok((leaf, base_leaf, op))
}

/// Undoes a build that did not commit: on drop (cancellation) or explicitly after a failure.
struct Guard {
    inner: Shared,
    id: Id,
    leaf: String,
    armed: bool,
}

impl Guard {
    /// Marks the build doomed (unless it committed) and returns the reaper task.
    fn abandon(&mut self) -> Option<tokio::task::JoinHandle<Result<(), StoreError>>> {
        if !std::mem::take(&mut self.armed) {
            return None;
        }
        {
            let mut idx = lock(&self.inner.results);
            match idx.building.get_mut(&self.id) {
                Some(t) if t.leaf == self.leaf && t.committed => {
                    idx.building.remove(&self.id);
                    return None;
                }
                Some(t) if t.leaf == self.leaf => {
                    t.cancelled = true;
                    idx.building.remove(&self.id);
                }
                _ => {}
            }
            match idx.datasets.get_mut(&self.leaf) {
                Some(d) if d.status == Status::Building => d.status = Status::Doomed,
                _ => return None,
            }
        }
        spawn_reap(&self.inner, self.leaf.clone())
    }

    /// Destroys the dataset now (failure or panic path); cleanup errors are logged, since the
    /// caller's own outcome matters more and the next open retries.
    async fn fail(mut self) {
        if let Some(task) = self.abandon() {
            if let Err(e) = join(Some(task)).await {
                tracing::warn!(id = %self.id, error = %e, "cleanup after a failed build deferred");
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Cancellation: the reaper waits for the in-flight step (it holds the op lock), then
        // destroys. Without a runtime nothing can run now; the next open destroys the
        // snapshot-less dataset.
        drop(self.abandon());
    }
}

/// `build_dyn`.
pub async fn build(
    inner: &Shared,
    base: Option<&Id>,
    id: &Id,
    f: BuildFn<'_>,
) -> Result<(), BuildError<BuildFnError>> {
    let (leaf, base_leaf, op) = begin(inner, base, id)?;
    let guard = Guard {
        inner: inner.clone(),
        id: id.clone(),
        leaf: leaf.clone(),
        armed: true,
    };
    let prepared = {
        // Take the dataset's lock before spawning, so a cleanup spawned by a drop right
        // after this cannot run ahead of the step and miss the dataset it creates.
        let held = op.clone().try_lock_owned().map_err(|_| {
            StoreError::backend(format!("internal: new dataset {leaf} is already locked"))
        })?;
        let (inner, leaf) = (inner.clone(), leaf.clone());
        join(spawn_detached(inner.tasks.clone(), async move {
            let _op = held;
            prepare(&inner, &leaf, base_leaf.as_deref()).await
        }))
        .await
    };
    let dir = match prepared {
        Ok(dir) => dir,
        Err(e) => {
            guard.fail().await;
            return Err(BuildError::Store(e));
        }
    };
    match run_build_fn(f, dir).await {
        BuildFnOutcome::Succeeded => {
            let committed = {
                // As above: the lock is taken before the task exists.
                let held = op.clone().lock_owned().await;
                let (inner, id, leaf) = (inner.clone(), id.clone(), leaf.clone());
                join(spawn_detached(inner.tasks.clone(), async move {
                    let _op = held;
                    commit(&inner, &id, &leaf).await
                }))
                .await
            };
            match committed {
                Ok(()) => {
                    // Committed: `abandon` only drops the ticket now.
                    drop(guard);
                    enforce_mount_cap(inner, Some(&leaf)).await;
                    crate::results::retry_stuck(inner);
                    Ok(())
                }
                Err(e) => {
                    guard.fail().await;
                    Err(BuildError::Store(e))
                }
            }
        }
        BuildFnOutcome::Failed(e) => {
            guard.fail().await;
            Err(BuildError::Failed(e))
        }
        BuildFnOutcome::Panicked(payload) => {
            guard.fail().await;
            std::panic::resume_unwind(payload)
        }
    }
}

/// Clones the base's `@snap` (or creates an empty dataset) and mounts it read-write.
/// Syncing commands: 1.
async fn prepare(inner: &Shared, leaf: &str, base: Option<&str>) -> Result<PathBuf, StoreError> {
    let ds = inner.layout.result_ds(leaf);
    let dir = inner.layout.result_dir(leaf);
    let props = [NOAUTO.to_owned(), inner.layout.made_prop(&ds)];
    match base {
        Some(b) => {
            let snap = inner.layout.result_snap(b);
            inner.zfs.clone_snapshot(&snap, &ds, &props).await?;
        }
        None => inner.zfs.create(&ds, &props).await?,
    }
    let state = ensure_mounted(&inner.zfs, &ds, &dir, false).await?;
    lock(&inner.results).set_mount(leaf, state);
    Ok(dir)
}

/// Unmounts, snapshots (the commit point), remounts read-only and records the result unless
/// the build was cancelled meanwhile. Syncing commands: 1.
async fn commit(inner: &Shared, id: &Id, leaf: &str) -> Result<(), StoreError> {
    let ds = inner.layout.result_ds(leaf);
    let dir = inner.layout.result_dir(leaf);
    // A mounted directory cannot be renamed away, but a build that unmounted its own could
    // have put a link in its place: record nothing then (its dataset goes as a failed build's).
    store_api::check_top_dir(&dir)?;
    // Unmounting first flushes everything the build wrote and lets the read-only remount
    // follow. A process still inside (say, a log reader) only costs the remount.
    let unmounted = match inner.zfs.unmount(&ds).await {
        Ok(()) => true,
        Err(e) if crate::zfs_cli::is_in_use(&e) => {
            tracing::warn!(%ds, error = %e, "build directory still in use; snapshotting it mounted");
            false
        }
        Err(e) => return Err(e),
    };
    inner.zfs.snapshot(&inner.layout.result_snap(leaf)).await?;
    let mount = if unmounted {
        match ensure_mounted(&inner.zfs, &ds, &dir, true).await {
            Ok(m) => m,
            Err(e) => {
                // The snapshot is the result; `result()` retries the mount.
                tracing::warn!(%ds, error = %e, "result not mounted read-only yet");
                MountState::Unmounted
            }
        }
    } else {
        MountState::Writable
    };
    let mut idx = lock(&inner.results);
    idx.set_mount(leaf, mount);
    match idx.building.get_mut(id) {
        Some(t) if t.leaf == leaf && !t.cancelled => {
            // The ticket stays until the guard goes, so a drop racing this cannot undo it.
            t.committed = true;
            idx.by_id.insert(id.clone(), leaf.to_owned());
            if let Some(d) = idx.datasets.get_mut(leaf) {
                d.status = Status::Live;
            }
            Ok(())
        }
        _ => Err(StoreError::backend(format!(
            "the build of {id} was cancelled"
        ))),
    }
}
