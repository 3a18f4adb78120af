//! Results after their build: `result()` (lazy read-only mounts under a cap), `delete()`
//! (destroy, or hide while clones depend on it) and the reaper that destroys what nothing
//! needs any more.

use std::path::{Path, PathBuf};

use store_api::{Id, StoreError};

use crate::layout::DELETED_PROPERTY;
use crate::mounts;
use crate::state::{MountState, Shared, Status, join, lock, spawn_detached};
use crate::zfs_cli::{RESULT_MOUNT_OPTIONS, Zfs, is_in_use};

/// Makes sure `ds` is mounted at `dir` with the wanted mode, and returns the actual mode.
///
/// `zfs clone` mounts on zfs-fuse even with `canmount=noauto` and does not on OpenZFS, so this
/// looks at the mount table instead of assuming. A dataset that is still not mounted after
/// `zfs mount` (zfs-fuse's 1000-mount limit makes `mount` succeed silently) is an error:
/// handing out its path would let writes land in the parent dataset.
pub async fn ensure_mounted(
    zfs: &Zfs,
    ds: &str,
    dir: &Path,
    read_only: bool,
) -> Result<MountState, StoreError> {
    let current = mounts::parse(&zfs.mount_table().await?).remove(ds);
    match current {
        Some(m) if m.is_as(read_only) => return Ok(state_of(read_only)),
        Some(_) => zfs.unmount(ds).await?,
        None => {}
    }
    clear_mountpoint(dir)?;
    if let Err(e) = zfs.mount(ds, read_only).await {
        // Lost a race with another mount of the same dataset: the table decides below.
        tracing::debug!(ds, error = %e, "mount failed; checking the mount table");
    }
    match mounts::parse(&zfs.mount_table().await?).remove(ds) {
        Some(m) if m.path == dir && m.is_as(read_only) => Ok(state_of(read_only)),
        Some(m) => Err(StoreError::backend(format!(
            "{ds} is mounted at {} ({}), expected {} ({})",
            m.path.display(),
            match (m.read_only, m.inert) {
                (true, true) => "ro,nosuid,nodev",
                (true, false) => "ro",
                (false, _) => "rw",
            },
            dir.display(),
            if read_only {
                RESULT_MOUNT_OPTIONS
            } else {
                "rw"
            },
        ))),
        None => Err(StoreError::backend(format!(
            "{ds} is not mounted after `zfs mount` succeeded (on zfs-fuse: the daemon's limit \
             of 1000 mounted filesystems may be reached)"
        ))),
    }
}

/// Removes a symlink or file found where a dataset is about to be mounted: `mount` follows a
/// symlink, so a build function that unmounted its directory and left a link to a host
/// directory there would have the store mount over that host directory. (Only the link goes;
/// what it points to is not touched. A directory stays: `zfs mount` mounts on it.)
fn clear_mountpoint(dir: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            tracing::warn!(path = %dir.display(), "a symlink or file in place of a mountpoint; removed before mounting");
            std::fs::remove_file(dir)
                .map_err(|e| StoreError::io("removing what replaced the mountpoint", dir, e))
        }
        _ => Ok(()),
    }
}

fn state_of(read_only: bool) -> MountState {
    if read_only {
        MountState::ReadOnly
    } else {
        MountState::Writable
    }
}

/// `result(id)`: the path if `id` has a live result. Spawns no process when it is already
/// mounted read-only.
pub async fn result(inner: &Shared, id: &Id) -> Result<Option<PathBuf>, StoreError> {
    let (leaf, op) = {
        let mut idx = lock(&inner.results);
        let Some(leaf) = idx.by_id.get(id).cloned() else {
            return Ok(None);
        };
        idx.clock += 1;
        let clock = idx.clock;
        let Some(ds) = idx.datasets.get_mut(&leaf) else {
            return Err(StoreError::backend(format!(
                "internal: the result of {id} ({leaf}) has no dataset in the index"
            )));
        };
        ds.last_used = clock;
        if ds.mount == MountState::ReadOnly {
            return Ok(Some(inner.layout.result_dir(&leaf)));
        }
        (leaf, ds.op.clone())
    };
    let task_inner = inner.clone();
    let task_leaf = leaf.clone();
    join(spawn_detached(inner.tasks.clone(), async move {
        let _op = op.lock().await;
        mount_read_only(&task_inner, &task_leaf).await
    }))
    .await?;
    enforce_mount_cap(inner, Some(&leaf)).await;
    Ok(Some(inner.layout.result_dir(&leaf)))
}

/// Mounts result `leaf` read-only (caller holds its op lock).
async fn mount_read_only(inner: &Shared, leaf: &str) -> Result<(), StoreError> {
    let ds = inner.layout.result_ds(leaf);
    let dir = inner.layout.result_dir(leaf);
    match ensure_mounted(&inner.zfs, &ds, &dir, true).await {
        Ok(state) => {
            lock(&inner.results).set_mount(leaf, state);
            Ok(())
        }
        Err(e) if is_in_use(&e) => {
            // A process still works in the old read-write mount (e.g. a log file held
            // open past the build). Its snapshot is the result; the path shows the same
            // files. Retried on the next `result()`.
            tracing::warn!(%ds, error = %e, "cannot remount result read-only yet");
            lock(&inner.results).set_mount(leaf, MountState::Writable);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Unmounts the least recently returned read-only results while more than the cap are
/// mounted. Never `keep`. Failures (a process inside) skip that result.
pub async fn enforce_mount_cap(inner: &Shared, keep: Option<&str>) {
    loop {
        let victim = {
            let idx = lock(&inner.results);
            if idx.ro_mounted <= inner.max_mounted_results {
                return;
            }
            idx.datasets
                .iter()
                .filter(|(l, d)| d.mount == MountState::ReadOnly && Some(l.as_str()) != keep)
                .min_by_key(|(_, d)| d.last_used)
                .map(|(l, d)| (l.clone(), d.op.clone()))
        };
        let Some((leaf, op)) = victim else { return };
        let _op = op.lock().await;
        match inner.zfs.unmount(&inner.layout.result_ds(&leaf)).await {
            Ok(()) => lock(&inner.results).set_mount(&leaf, MountState::Unmounted),
            Err(e) => {
                tracing::warn!(%leaf, error = %e, "cannot unmount a result over the mount cap");
                // Mark it recently used so the next pass picks another one.
                let mut idx = lock(&inner.results);
                idx.clock += 1;
                let clock = idx.clock;
                if let Some(d) = idx.datasets.get_mut(&leaf) {
                    d.last_used = clock;
                }
                return;
            }
        }
    }
}

/// Destroys doomed result dataset `leaf` and then every hidden origin that this leaves
/// unused. Waits for in-flight commands on each dataset first, and destroys a dataset only if
/// it is still doomed once its op lock is held (a failed delete may have restored it). A
/// failure is logged and the dataset stays doomed (retried later, and at the next open); the
/// first error is returned.
pub async fn reap(inner: &Shared, leaf: String) -> Result<(), StoreError> {
    let mut next = Some(leaf);
    while let Some(leaf) = next.take() {
        let Some(op) = doomed_op(inner, &leaf) else {
            return Ok(());
        };
        let _op = op.lock().await;
        if doomed_op(inner, &leaf).is_none() {
            return Ok(());
        }
        if let Err(e) = destroy_result_ds(inner, &leaf).await {
            tracing::warn!(%leaf, error = %e, "cannot destroy yet; retried later");
            lock(&inner.results).stuck.insert(leaf);
            return Err(e);
        }
        next = lock(&inner.results).forget(&leaf);
    }
    Ok(())
}

/// The op lock of `leaf` if it is doomed.
fn doomed_op(inner: &Shared, leaf: &str) -> Option<std::sync::Arc<tokio::sync::Mutex<()>>> {
    match lock(&inner.results).datasets.get(leaf) {
        Some(ds) if ds.status == Status::Doomed => Some(ds.op.clone()),
        _ => None,
    }
}

/// Unmounts and destroys result dataset `leaf` with its snapshot (caller holds its op lock).
async fn destroy_result_ds(inner: &Shared, leaf: &str) -> Result<(), StoreError> {
    let ds = inner.layout.result_ds(leaf);
    inner.zfs.unmount(&ds).await?;
    lock(&inner.results).set_mount(leaf, MountState::Unmounted);
    inner.zfs.destroy(&ds, Some("-r")).await
}

/// Retries, in the background, the destruction of datasets that could not be destroyed
/// before. Cheap when there are none (no command).
pub fn retry_stuck(inner: &Shared) {
    let stuck: Vec<String> = lock(&inner.results).stuck.drain().collect();
    for leaf in stuck {
        drop(spawn_reap(inner, leaf));
    }
}

/// Spawns [`reap`] so it runs to the end even if the caller is dropped.
pub fn spawn_reap(
    inner: &Shared,
    leaf: String,
) -> Option<tokio::task::JoinHandle<Result<(), StoreError>>> {
    let inner = inner.clone();
    spawn_detached(inner.tasks.clone(), async move { reap(&inner, leaf).await })
}

/// `delete(id)`: destroys the result, or hides it while clones depend on it.
///
/// The decision and the commands run in one task holding the dataset's op lock, and so does
/// the repair when a command fails: if the result is still whole (its `@snap` exists and it
/// is not marked deleted), it is the id's result again, as a reopen would find it, before
/// any other task can touch the dataset; otherwise it stays doomed and is destroyed later.
pub async fn delete(inner: &Shared, id: &Id) -> Result<(), StoreError> {
    retry_stuck(inner);
    let (leaf, op, destroy) = {
        let mut idx = lock(&inner.results);
        let Some(leaf) = idx.by_id.remove(id) else {
            return Ok(());
        };
        let Some(ds) = idx.datasets.get_mut(&leaf) else {
            return Err(StoreError::backend(format!(
                "internal: the result of {id} ({leaf}) has no dataset in the index"
            )));
        };
        let destroy = ds.dependents == 0;
        ds.status = if destroy {
            Status::Doomed
        } else {
            Status::Hidden
        };
        (leaf, ds.op.clone(), destroy)
    };
    let (task_inner, task_id) = (inner.clone(), id.clone());
    let freed = join(spawn_detached(inner.tasks.clone(), async move {
        let inner = task_inner;
        let _op = op.lock().await;
        let ds = inner.layout.result_ds(&leaf);
        let outcome = if destroy {
            destroy_result_ds(&inner, &leaf).await
        } else {
            hide(&inner, &leaf, &ds).await
        };
        match outcome {
            Ok(()) if destroy => Ok(lock(&inner.results).forget(&leaf)),
            Ok(()) => Ok(None),
            Err(e) => {
                restore_if_whole(&inner, &task_id, &leaf).await;
                Err(e)
            }
        }
    }))
    .await?;
    // A hidden origin this freed is destroyed too (under its own op lock).
    match freed {
        Some(origin) => join(spawn_reap(inner, origin)).await,
        None => Ok(()),
    }
}

/// Marks result `leaf` deleted (it stays while clones depend on it) and unmounts it.
async fn hide(inner: &Shared, leaf: &str, ds: &str) -> Result<(), StoreError> {
    inner.zfs.set(DELETED_PROPERTY, "on", ds).await?;
    // Free the mount slot; a busy mount is only a missed saving.
    match inner.zfs.unmount(ds).await {
        Ok(()) => lock(&inner.results).set_mount(leaf, MountState::Unmounted),
        Err(e) => tracing::debug!(%ds, error = %e, "hidden result stays mounted"),
    }
    Ok(())
}

/// After a failed delete (caller holds the op lock): if the result's snapshot and marker say
/// it is still whole, it is `id`'s result again; otherwise it stays doomed (or hidden) and
/// is retried later, as the next open would. A new build of `id` that started meanwhile
/// keeps the id.
async fn restore_if_whole(inner: &Shared, id: &Id, leaf: &str) {
    let snap = inner.layout.result_snap(leaf);
    let ds = inner.layout.result_ds(leaf);
    let whole = matches!(inner.zfs.get(&snap, &["name"]).await, Ok(Some(_)))
        && matches!(inner.zfs.get(&ds, &[DELETED_PROPERTY]).await,
            Ok(Some(v)) if v.iter().all(|(_, v)| v != "on"));
    let mut idx = lock(&inner.results);
    let id_free = !idx.by_id.contains_key(id) && !idx.building.contains_key(id);
    match idx.datasets.get_mut(leaf) {
        Some(d) if whole && id_free => {
            d.status = Status::Live;
            idx.by_id.insert(id.clone(), leaf.to_owned());
        }
        Some(d) if d.status == Status::Doomed => {
            idx.stuck.insert(leaf.to_owned());
        }
        _ => {}
    }
}
