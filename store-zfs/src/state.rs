//! The store's in-memory state: the result index (rebuilt at open, kept exact by every
//! operation) and the shared handle every background task holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use store_api::{CacheName, Id};

use crate::cache_state::CacheEntry;
use crate::engine::Engine;
use crate::layout::{Layout, result_leaf};
use crate::zfs_cli::Zfs;

/// How a dataset is mounted, as far as the store knows (from the mount table at open, then
/// from its own commands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountState {
    /// Not mounted.
    Unmounted,
    /// Mounted read-only (a result others may read).
    ReadOnly,
    /// Mounted read-write (a build directory, or a result whose read-only remount failed).
    Writable,
}

/// Where a result dataset is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Being built: no `@snap` yet.
    Building,
    /// The result of its id.
    Live,
    /// Deleted, kept (marked `zstore:deleted=on`) only while clones depend on it.
    Hidden,
    /// To be destroyed: a failed or cancelled build, or a deleted result nothing depends on.
    Doomed,
    /// Found at open and not the store's to destroy: a leftover without the store's
    /// [`MADE_PROPERTY`](crate::layout::MADE_PROPERTY), or one holding datasets or
    /// snapshots the store did not make. Left as it is, and listed by
    /// [`ZfsStore::left_alone`](crate::ZfsStore::left_alone).
    Kept,
}

/// One dataset under `<root>/result`.
#[derive(Debug)]
pub struct ResultDs {
    /// The result dataset it was cloned from (its `@snap`), if any.
    pub origin: Option<String>,
    /// How many datasets (results, builds, leftovers) are clones of its `@snap`.
    pub dependents: usize,
    /// Its life stage.
    pub status: Status,
    /// How it is mounted.
    pub mount: MountState,
    /// Logical time of the last `result()` that returned it (for unmounting the least used).
    pub last_used: u64,
    /// Serialises the commands on this dataset (a cleanup waits for an in-flight build step).
    pub op: Arc<tokio::sync::Mutex<()>>,
}

impl ResultDs {
    /// A dataset in `status` with no dependents, unmounted.
    pub fn new(origin: Option<String>, status: Status) -> Self {
        Self {
            origin,
            dependents: 0,
            status,
            mount: MountState::Unmounted,
            last_used: 0,
            op: Arc::default(),
        }
    }
}

/// The outcome race between a build's commit and its cancellation, decided under the lock.
#[derive(Debug)]
pub struct Ticket {
    /// The dataset being built.
    pub leaf: String,
    /// The result was recorded: a later drop of the build future must not undo it.
    pub committed: bool,
    /// The build future was dropped: the commit must not record the result.
    pub cancelled: bool,
}

/// Every result dataset the store knows, and which one is the result of each id.
#[derive(Debug, Default)]
pub struct ResultIndex {
    /// Live result of each id.
    pub by_id: HashMap<Id, String>,
    /// Every dataset under `<root>/result`, by leaf name.
    pub datasets: HashMap<String, ResultDs>,
    /// Builds in progress.
    pub building: HashMap<Id, Ticket>,
    /// Logical clock for `last_used`.
    pub clock: u64,
    /// How many datasets are mounted read-only (kept exact, for the mount cap).
    pub ro_mounted: usize,
    /// Doomed datasets whose destruction failed (e.g. a process still had a file open in
    /// them); retried after later builds and deletes, and at the next open.
    pub stuck: std::collections::HashSet<String>,
}

impl ResultIndex {
    /// A leaf name for a new dataset of `id` that no existing dataset uses.
    pub fn free_leaf(&self, id: &Id) -> String {
        (0..)
            .map(|n| result_leaf(id, n))
            .find(|l| !self.datasets.contains_key(l))
            .unwrap_or_else(|| result_leaf(id, u64::MAX))
    }

    /// Records a new mount state for `leaf`, keeping `ro_mounted` exact.
    pub fn set_mount(&mut self, leaf: &str, state: MountState) {
        if let Some(ds) = self.datasets.get_mut(leaf) {
            if ds.mount == MountState::ReadOnly {
                self.ro_mounted -= 1;
            }
            if state == MountState::ReadOnly {
                self.ro_mounted += 1;
            }
            ds.mount = state;
        }
    }

    /// If `leaf` is hidden and nothing depends on it any more, marks it doomed and says so.
    pub fn doom_if_unused(&mut self, leaf: &str) -> bool {
        match self.datasets.get_mut(leaf) {
            Some(ds) if ds.status == Status::Hidden && ds.dependents == 0 => {
                ds.status = Status::Doomed;
                true
            }
            _ => false,
        }
    }

    /// Forgets a destroyed dataset; returns its origin if that became unused and hidden (so it
    /// is now doomed and must be destroyed too).
    pub fn forget(&mut self, leaf: &str) -> Option<String> {
        self.set_mount(leaf, MountState::Unmounted);
        let ds = self.datasets.remove(leaf)?;
        let origin = ds.origin?;
        if let Some(o) = self.datasets.get_mut(&origin) {
            o.dependents = o.dependents.saturating_sub(1);
        }
        self.doom_if_unused(&origin).then_some(origin)
    }
}

/// Options for opening a store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// At most this many results stay mounted read-only; past it, the least recently returned
    /// are unmounted. `None`: the engine's default (no cap on OpenZFS, 256 on zfs-fuse).
    pub max_mounted_results: Option<usize>,
}

/// Everything the store and its background tasks share.
pub struct Inner {
    /// The command line.
    pub zfs: Zfs,
    /// Names and paths.
    pub layout: Layout,
    /// The detected engine.
    pub engine: Engine,
    /// The cap on read-only result mounts.
    pub max_mounted_results: usize,
    /// The result index.
    pub results: Mutex<ResultIndex>,
    /// Per-cache state, by name; entries are created on first use or at open.
    pub caches: Mutex<HashMap<CacheName, Arc<CacheEntry>>>,
    /// The background tasks in flight.
    pub tasks: Tasks,
    /// What open found under the store's groups and left as it is (not the store's).
    pub left_alone: Mutex<Vec<String>>,
    /// The store's open lock ([`crate::store_lock`]), released with the last handle.
    pub _open_lock: std::fs::File,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("layout", &self.layout)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Locks a std mutex, recovering from poisoning: every critical section leaves the state
/// consistent before anything that could panic, so a poisoned lock holds valid data.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts the store's background tasks so that [`Tasks::idle`] can wait for them.
#[derive(Clone, Debug, Default)]
pub struct Tasks(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

/// Decrements the count when a task ends, however it ends.
struct TaskDone(Tasks);

impl Drop for TaskDone {
    fn drop(&mut self) {
        let (count, notify) = &*(self.0).0;
        if count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            notify.notify_waiters();
        }
    }
}

impl Tasks {
    /// Waits until no background task is running.
    pub async fn idle(&self) {
        let (count, notify) = &*self.0;
        loop {
            let notified = notify.notified();
            if count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Spawns `fut` on the current tokio runtime so it completes even if its caller is dropped.
/// Returns `None` (and runs nothing) outside a runtime; the work is then left to the next open.
pub fn spawn_detached<F>(tasks: Tasks, fut: F) -> Option<tokio::task::JoinHandle<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::runtime::Handle::try_current().ok()?;
    tasks.0.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let done = TaskDone(tasks);
    Some(handle.spawn(async move {
        let _done = done;
        fut.await
    }))
}

/// Awaits a task spawned with [`spawn_detached`]: a panic inside it is resumed here; a missing
/// runtime becomes an error.
pub async fn join<T>(
    handle: Option<tokio::task::JoinHandle<Result<T, store_api::StoreError>>>,
) -> Result<T, store_api::StoreError> {
    let Some(handle) = handle else {
        return Err(store_api::StoreError::backend(
            "the ZFS store needs a tokio runtime to run its commands",
        ));
    };
    match handle.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(store_api::StoreError::backend(format!(
            "a store task was cancelled: {e}"
        ))),
    }
}

/// Shorthand for the shared handle.
pub type Shared = Arc<Inner>;
