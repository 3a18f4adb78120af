//! Caches: acquire a copy (a clone of the published version), release it (publish with one
//! snapshot, or discard), drop it, delete the cache.

use std::sync::Arc;

use async_trait::async_trait;
use store_api::{
    CacheCopy, CacheLease, CacheName, DeleteCacheError, ReleaseOutcome, StoreError, User,
};

use crate::build::NOAUTO;
use crate::cache_state::{CacheEntry, CacheState, CopyOut};
use crate::mounts;
use crate::names::{MAX_COMPONENT, NAME_PROPERTY, escape, long_component};
use crate::results::ensure_mounted;
use crate::state::{Shared, join, lock, spawn_detached};

/// The entry for `name`, made on first use.
pub fn entry(inner: &Shared, name: &CacheName) -> Arc<CacheEntry> {
    lock(&inner.caches)
        .entry(name.clone())
        .or_insert_with(|| {
            Arc::new(CacheEntry::new(
                name.clone(),
                CacheState {
                    next_gen: 1,
                    ..CacheState::default()
                },
            ))
        })
        .clone()
}

/// Picks the container component for a cache that has none: its escaped name, or for long
/// names the first free `h-<prefix>-<n>`. A long name's pick is reserved in the entry
/// ([`CacheState::reserved`]) under the cache table's lock, so that two long names sharing a
/// prefix, acquired at once, never pick the same component.
fn new_component(inner: &Shared, entry: &CacheEntry) -> String {
    let esc = escape(entry.name.as_str());
    if esc.len() <= MAX_COMPONENT {
        return esc;
    }
    let caches = lock(&inner.caches);
    let taken: std::collections::HashSet<String> = caches
        .values()
        .filter(|e| e.name != entry.name)
        .flat_map(|e| {
            let st = lock(&e.st);
            [st.component.clone(), st.reserved.clone()]
        })
        .flatten()
        .collect();
    let picked = (0..)
        .map(|n| long_component(&esc, n))
        .find(|c| !taken.contains(c))
        .unwrap_or_else(|| long_component(&esc, u64::MAX));
    lock(&entry.st).reserved = Some(picked.clone());
    picked
}

/// `cache(user, name)`. Runs in a task of its own: if the caller is dropped, the lease it
/// would have returned is dropped there, which discards the copy.
///
/// The task's output carries the cache's lock guard after the lease, so the lock is let go
/// only once the lease has reached the caller or, with the caller gone, been dropped (tuple
/// fields drop in order): an operation queued on the lock never sees the copy of a caller
/// that is gone as still out.
pub async fn acquire(
    inner: &Shared,
    user: User,
    name: &CacheName,
) -> Result<CacheLease, StoreError> {
    let inner = inner.clone();
    let entry = entry(&inner, name);
    let (lease, _op) = join(spawn_detached(inner.tasks.clone(), async move {
        let op = entry.op.clone().lock_owned().await;
        reap_doomed(&inner, &entry).await;
        acquire_locked(&inner, &entry, user)
            .await
            .map(|lease| (lease, op))
    }))
    .await?;
    Ok(lease)
}

async fn acquire_locked(
    inner: &Shared,
    entry: &Arc<CacheEntry>,
    user: User,
) -> Result<CacheLease, StoreError> {
    let (component, current, generation) = {
        let mut st = lock(&entry.st);
        let g = st.next_gen;
        st.next_gen += 1;
        (st.component.clone(), st.current, g)
    };
    let component = match component {
        Some(c) => c,
        None => {
            let c = new_component(inner, entry);
            let container = inner.layout.container(&c);
            let mut props = vec![
                "canmount=off".to_owned(),
                inner.layout.made_prop(&container),
            ];
            if c.starts_with("h-") {
                props.push(format!("{NAME_PROPERTY}={}", escape(entry.name.as_str())));
            }
            let created = inner.zfs.create(&container, &props).await;
            let mut st = lock(&entry.st);
            st.reserved = None;
            created?;
            st.component = Some(c.clone());
            c
        }
    };
    let current = match current {
        Some(v) => v,
        None => {
            // The cache is created now: an empty version owned by `user`, published at once,
            // so every copy (this one and any other taken before a release) starts from it.
            create_first_version(inner, &component, generation, user).await?;
            let copy_gen = {
                let mut st = lock(&entry.st);
                st.current = Some(generation);
                st.next_gen += 1;
                st.next_gen - 1
            };
            return finish_acquire(inner, entry, &component, copy_gen, generation).await;
        }
    };
    finish_acquire(inner, entry, &component, generation, current).await
}

/// Creates generation `generation` empty, owned by `user`, and snapshots it as its version.
async fn create_first_version(
    inner: &Shared,
    component: &str,
    generation: u64,
    user: User,
) -> Result<(), StoreError> {
    let ds = inner.layout.generation(component, generation);
    let dir = inner.layout.generation_dir(component, generation);
    inner
        .zfs
        .create(&ds, &[NOAUTO.to_owned(), inner.layout.made_prop(&ds)])
        .await?;
    let made = async {
        ensure_mounted(&inner.zfs, &ds, &dir, false).await?;
        std::os::unix::fs::chown(&dir, Some(user.uid()), Some(user.gid()))
            .map_err(|e| StoreError::io("giving the new cache to its user", &dir, e))?;
        inner.zfs.unmount(&ds).await?;
        inner
            .zfs
            .snapshot(&inner.layout.version_snap(component, generation, generation))
            .await
    }
    .await;
    if let Err(e) = made {
        if let Err(e2) = destroy_copy(inner, &ds).await {
            tracing::warn!(%ds, error = %e2, "cannot destroy a half-made cache; left for the next open");
        }
        return Err(e);
    }
    Ok(())
}

/// Clones version `base` into a new copy `generation` and hands it out.
async fn finish_acquire(
    inner: &Shared,
    entry: &Arc<CacheEntry>,
    component: &str,
    generation: u64,
    base: u64,
) -> Result<CacheLease, StoreError> {
    let ds = inner.layout.generation(component, generation);
    let dir = inner.layout.generation_dir(component, generation);
    let snap = inner.layout.version_snap(component, base, base);
    inner
        .zfs
        .clone_snapshot(
            &snap,
            &ds,
            &[NOAUTO.to_owned(), inner.layout.made_prop(&ds)],
        )
        .await?;
    if let Err(e) = ensure_mounted(&inner.zfs, &ds, &dir, false).await {
        if let Err(e2) = destroy_copy(inner, &ds).await {
            tracing::warn!(%ds, error = %e2, "cannot destroy a failed cache copy; left for the next open");
        }
        return Err(e);
    }
    lock(&entry.st)
        .copies
        .insert(generation, CopyOut { base: Some(base) });
    Ok(CacheLease::new(
        entry.name.clone(),
        dir,
        Box::new(ZfsCacheCopy {
            inner: inner.clone(),
            entry: entry.clone(),
            generation,
        }),
    ))
}

/// Destroys a copy's dataset: one process, as `zfs destroy` unmounts a mounted filesystem
/// first (and fails, destroying nothing, while a process still uses it).
async fn destroy_copy(inner: &Shared, ds: &str) -> Result<(), StoreError> {
    inner.zfs.destroy(ds, None).await
}

/// Destroys copy `generation` taken from `base`, and the old version snapshot it pinned if
/// no other copy uses it, the copy then being that snapshot's only clone (see
/// [`destroy_old_version`]). Caller holds the op lock and has removed the copy from
/// `copies`. Processes: 1; for the last copy of an old version 2 on zfs-fuse.
async fn discard_locked(
    inner: &Shared,
    entry: &CacheEntry,
    generation: u64,
    copy: CopyOut,
) -> Result<(), StoreError> {
    let Some(component) = lock(&entry.st).component.clone() else {
        return Ok(());
    };
    let (current, pinned) = {
        let st = lock(&entry.st);
        (
            st.current,
            copy.base
                .filter(|b| Some(*b) != st.current && !st.version_in_use(*b)),
        )
    };
    let copy_ds = inner.layout.generation(&component, generation);
    match (current, pinned) {
        (Some(cur), Some(old)) => {
            let snap = inner.layout.version_snap(&component, cur, old);
            destroy_old_version(inner, &copy_ds, &snap).await
        }
        _ => destroy_copy(inner, &copy_ds).await,
    }
}

/// Destroys an old version snapshot `old_snap` and `clone`, its only clone (with no
/// snapshots of its own: the old generation after a promote, or the last copy taken from
/// that version). On OpenZFS one `zfs destroy -R` of the snapshot (the clone first, then the
/// snapshot). On zfs-fuse two plain destroys, the clone and then the snapshot, no longer
/// cloned, because there that `-R` walks the whole pool (measurements in the crate docs,
/// "Command costs").
///
/// After a failure of the second zfs-fuse destroy, a retry finds the clone gone (a missing
/// dataset counts as destroyed) and tries the snapshot again; open's repair destroys an
/// unpinned old version snapshot in any case.
async fn destroy_old_version(
    inner: &Shared,
    clone: &str,
    old_snap: &str,
) -> Result<(), StoreError> {
    if inner.engine.is_zfs_fuse() {
        inner.zfs.destroy(clone, None).await?;
        inner.zfs.destroy(old_snap, None).await
    } else {
        inner.zfs.destroy(old_snap, Some("-R")).await
    }
}

/// Destroys the copies dropped since the last operation (caller holds the op lock), one at a
/// time: the others stay listed as doomed meanwhile, so that a version snapshot two of them
/// were taken from counts as in use until the last of them goes.
async fn reap_doomed(inner: &Shared, entry: &CacheEntry) {
    let waiting = lock(&entry.st).doomed.len();
    for _ in 0..waiting {
        let next = {
            let mut st = lock(&entry.st);
            (!st.doomed.is_empty()).then(|| st.doomed.remove(0))
        };
        let Some((generation, copy)) = next else {
            break;
        };
        if let Err(e) = discard_locked(inner, entry, generation, copy).await {
            tracing::warn!(cache = %entry.name, generation, error = %e, "cannot destroy a dropped cache copy; retried later");
            lock(&entry.st).doomed.push((generation, copy));
        }
    }
}

/// Publishes copy `generation`: snapshot (the commit point: the highest generation with its
/// own version snapshot is the cache), then promote it and destroy the old generation and,
/// unless other copies still clone it, the old version snapshot ([`destroy_old_version`]).
/// Syncing commands: 3 (4 on zfs-fuse unless other copies clone the old version; 1 for a
/// cache's first version).
async fn publish_locked(
    inner: &Shared,
    entry: &CacheEntry,
    component: &str,
    generation: u64,
    old: Option<u64>,
) -> Result<(), StoreError> {
    let ds = inner.layout.generation(component, generation);
    // As for a build: a copy whose directory was swapped for a link is not published.
    store_api::check_top_dir(&inner.layout.generation_dir(component, generation))?;
    if let Err(e) = inner.zfs.unmount(&ds).await {
        // The holder broke the contract and still uses the path; the snapshot is taken anyway.
        tracing::warn!(%ds, error = %e, "released cache copy still in use");
    }
    inner
        .zfs
        .snapshot(&inner.layout.version_snap(component, generation, generation))
        .await?;
    lock(&entry.st).current = Some(generation);
    let Some(old) = old else { return Ok(()) };
    // Housekeeping after the commit: failures leave the published version intact and are
    // repaired at the next open.
    let gc = async {
        inner.zfs.promote(&ds).await?;
        let old_snap = inner.layout.version_snap(component, generation, old);
        if lock(&entry.st).version_in_use(old) {
            // Other copies still clone `@v<old>` (now held by the new generation): only the
            // old generation goes; the snapshot goes with its last copy.
            inner
                .zfs
                .destroy(&inner.layout.generation(component, old), None)
                .await
        } else {
            // Its only clone is the old generation dataset, known unmounted.
            destroy_old_version(inner, &inner.layout.generation(component, old), &old_snap).await
        }
    };
    if let Err(e) = gc.await {
        tracing::warn!(cache = %entry.name, error = %e, "cleanup after publishing failed; repaired at the next open");
    }
    Ok(())
}

/// The backend side of a lease: one generation dataset of one cache.
struct ZfsCacheCopy {
    inner: Shared,
    entry: Arc<CacheEntry>,
    generation: u64,
}

#[async_trait]
impl CacheCopy for ZfsCacheCopy {
    async fn release(self: Box<Self>) -> Result<ReleaseOutcome, StoreError> {
        let this = *self;
        let tasks = this.inner.tasks.clone();
        join(spawn_detached(tasks, async move {
            let ZfsCacheCopy {
                inner,
                entry,
                generation,
            } = this;
            let _op = entry.op.lock().await;
            reap_doomed(&inner, &entry).await;
            let (copy, current, component) = {
                let mut st = lock(&entry.st);
                let copy = st.copies.remove(&generation);
                (copy, st.current, st.component.clone())
            };
            let (Some(copy), Some(component)) = (copy, component) else {
                return Ok(ReleaseOutcome::Discarded);
            };
            if copy.base == current {
                if let Err(e) = publish_locked(&inner, &entry, &component, generation, current).await {
                    // Not published: the cache stays at `current`; the copy goes.
                    lock(&entry.st).doomed.push((generation, copy));
                    reap_doomed(&inner, &entry).await;
                    return Err(e);
                }
                Ok(ReleaseOutcome::Published)
            } else {
                if let Err(e) = discard_locked(&inner, &entry, generation, copy).await {
                    tracing::warn!(cache = %entry.name, error = %e, "cannot destroy a stale copy; retried later");
                    lock(&entry.st).doomed.push((generation, copy));
                }
                Ok(ReleaseOutcome::Discarded)
            }
        }))
        .await
    }

    fn discard(self: Box<Self>) {
        {
            let mut st = lock(&self.entry.st);
            match st.copies.remove(&self.generation) {
                Some(copy) => st.doomed.push((self.generation, copy)),
                None => return,
            }
        }
        let ZfsCacheCopy { inner, entry, .. } = *self;
        // Without a runtime the dataset stays until the next operation on this cache or the
        // next open, both of which destroy it.
        drop(spawn_detached(inner.tasks.clone(), async move {
            let _op = entry.op.lock().await;
            reap_doomed(&inner, &entry).await;
        }));
    }
}

/// `delete_cache(name)`: `Busy` while a copy is out; otherwise one `zfs destroy -r` of the
/// container.
pub async fn delete(inner: &Shared, name: &CacheName) -> Result<(), DeleteCacheError> {
    let inner = inner.clone();
    let entry = entry(&inner, name);
    join(spawn_detached(inner.tasks.clone(), async move {
        let _op = entry.op.lock().await;
        reap_doomed(&inner, &entry).await;
        let component = {
            let st = lock(&entry.st);
            if !st.copies.is_empty() {
                return Ok(Err(DeleteCacheError::Busy {
                    name: entry.name.clone(),
                }));
            }
            st.component.clone()
        };
        let Some(component) = component else {
            return Ok(Ok(()));
        };
        let container = inner.layout.container(&component);
        let prefix = format!("{container}/");
        for ds in mounts::parse(&inner.zfs.mount_table().await?).into_keys() {
            if ds.starts_with(&prefix) {
                inner.zfs.unmount(&ds).await?;
            }
        }
        inner.zfs.destroy(&container, Some("-r")).await?;
        let mut st = lock(&entry.st);
        st.component = None;
        st.current = None;
        st.doomed.clear();
        Ok(Ok(()))
    }))
    .await?
}
