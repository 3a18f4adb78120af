//! [`FakeStore`]: the handle, how it is opened, and its inspection and fault-injection extras.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use store_api::{CacheName, Id, StoreError, User};

use crate::defects::CrashDefect;
use crate::layout::Layout;
use crate::options::{BusyPolicy, FakeStoreBuilder};
use crate::remove::remove_tree;
use crate::state::State;
use crate::steps::{Fs, StepHook};

/// A fake [`Store`](store_api::Store) on plain directories, for builders' tests.
///
/// It keeps the whole contract (see the [crate docs](crate) for how), plus inspection and
/// fault-injection methods. Clones are cheap and share one store.
///
/// ```
/// use store_api::{Id, Store, StoreExt};
/// use store_fake::FakeStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = FakeStore::new()?;
/// let id = Id::new("step1")?;
/// store
///     .build(None, &id, |dir| async move { std::fs::write(dir.join("out"), "hi") })
///     .await?;
/// assert_eq!(store.results(), vec![id.clone()]);
/// let out = store.result(&id).await?.expect("built");
/// assert_eq!(std::fs::read_to_string(out.join("out"))?, "hi");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FakeStore {
    pub(crate) inner: Arc<Inner>,
}

/// What every clone of a [`FakeStore`] (and every cache copy it leased) shares.
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) busy_policy: BusyPolicy,
    /// Every filesystem change goes through it (and its optional fault hook).
    pub(crate) fs: Fs,
    /// A deliberate crash bug (feature `test-defects`), `None` normally.
    pub(crate) defect: Option<CrashDefect>,
    state: Mutex<State>,
    fail_builds: AtomicUsize,
    pub(crate) delete_cache_busy: AtomicBool,
    next_incarnation: AtomicU64,
    /// Holds the `flock` on `<root>/lock` for as long as the store is open.
    _lock: fs::File,
    /// Set for a store in a temporary directory: removes it when the last handle is gone.
    _temp_root: Option<TempRoot>,
}

/// Information about one cache, from [`FakeStore::cache_info`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheInfo {
    /// The cache's real name.
    pub name: CacheName,
    /// Its latest released version: 0 when created, one more for each published copy.
    pub version: u64,
    /// How many copies of it are out (leased, and neither released nor dropped).
    pub live_copies: usize,
    /// The owner it was created for. When the store could not `chown` (the process is not
    /// root), the cache directory stays owned by the process, and this still says who was
    /// asked for.
    pub owner: User,
}

impl FakeStore {
    /// Opens a store in a fresh temporary directory, removed when the last handle (including
    /// leased cache copies) is dropped.
    ///
    /// # Errors
    /// A [`StoreError`] if the temporary directory cannot be made.
    pub fn new() -> Result<FakeStore, StoreError> {
        Self::builder().open()
    }

    /// Opens (creating on first use) a persistent store under `root`.
    ///
    /// Results, the latest version of every cache and the [`state_dir`](store_api::Store::state_dir)
    /// survive dropping the store and opening it again over the same root. Opening reclaims
    /// what an interrupted process left: unfinished builds, unreleased cache copies,
    /// half-committed results and half-removed ones. Only one `FakeStore` may have a root
    /// open at a time (enforced with `flock` on `<root>/lock`).
    ///
    /// `root` must be missing, empty, or a root the fake made before (it marks its roots with
    /// a `store-fake` file): any other directory is refused untouched, since opening empties
    /// the store's scratch directories.
    ///
    /// # Errors
    /// A [`StoreError`] if the root cannot be created or read, is already open ([`StoreError::Locked`]), is a
    /// non-empty directory that is not a fake store, or holds something the fake did not put
    /// there.
    pub fn open(root: impl Into<PathBuf>) -> Result<FakeStore, StoreError> {
        Self::builder().root(root).open()
    }

    /// Options for opening a store: a root and a [`BusyPolicy`].
    pub fn builder() -> FakeStoreBuilder {
        FakeStoreBuilder::default()
    }

    pub(crate) fn open_with(
        root: Option<PathBuf>,
        busy_policy: BusyPolicy,
        hook: Option<Arc<dyn StepHook>>,
        defect: Option<CrashDefect>,
    ) -> Result<FakeStore, StoreError> {
        let (root, temp_root) = match root {
            Some(root) => (root, None),
            None => {
                let temp = TempRoot::create()?;
                (temp.0.clone(), Some(temp))
            }
        };
        let fs = Fs::new(hook);
        let opened = crate::open::open_root(&root, &fs, defect)?;
        let next_incarnation = opened.state.caches.len() as u64;
        Ok(FakeStore {
            inner: Arc::new(Inner {
                layout: opened.layout,
                busy_policy,
                fs,
                defect,
                state: Mutex::new(opened.state),
                fail_builds: AtomicUsize::new(0),
                delete_cache_busy: AtomicBool::new(false),
                next_incarnation: AtomicU64::new(next_incarnation),
                _lock: opened.lock,
                _temp_root: temp_root,
            }),
        })
    }

    /// The ids that have a result, sorted.
    pub fn results(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self.inner.state().results.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Every existing cache with its version, copies out and owner, sorted by name
    /// ([`Inspect::caches`](store_api::Inspect::caches) lists their names).
    pub fn cache_info(&self) -> Vec<CacheInfo> {
        self.inner
            .state()
            .caches
            .iter()
            .map(|(name, record)| CacheInfo {
                name: name.clone(),
                version: record.version,
                live_copies: record.live.load(Ordering::SeqCst),
                owner: record.owner,
            })
            .collect()
    }

    /// How many copies of cache `name` are out (0 if there is no such cache).
    pub fn live_cache_copies(&self, name: &CacheName) -> usize {
        self.inner
            .state()
            .caches
            .get(name)
            .map_or(0, |record| record.live.load(Ordering::SeqCst))
    }

    /// What the store could not remove yet (an immutable file, a filesystem still mounted
    /// inside a failed build's directory): uncommitted trees, retried by
    /// [`complete_deletes`](store_api::Store::complete_deletes) (which fails, naming the first
    /// of them, while any is left) and at the next open. Empty normally.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.inner.state().pending_removal.clone()
    }

    /// How many builds are running (reserved and not yet committed or cleaned up).
    pub fn builds_in_progress(&self) -> usize {
        self.inner.state().building.len()
    }

    /// Makes the next `n` builds whose build function succeeds fail inside the store, with the
    /// [`StoreError::Io`] a failing disk would give while committing the result. The build
    /// function has run and returned `Ok`; the store then cleans up and records nothing,
    /// exactly as for any other store failure. Builds that fail earlier (missing base, the
    /// function's own error or panic, cancellation) do not use up a fault. Replaces any
    /// faults still pending; `0` cancels them.
    pub fn fail_next_builds(&self, n: usize) {
        self.inner.fail_builds.store(n, Ordering::SeqCst);
    }

    /// While `on`, every [`delete_cache`](store_api::Store::delete_cache) returns
    /// [`DeleteCacheError::Busy`](store_api::DeleteCacheError::Busy) and changes nothing,
    /// whatever the [`BusyPolicy`] and whether or not copies are out.
    pub fn set_delete_cache_busy(&self, on: bool) {
        self.inner.delete_cache_busy.store(on, Ordering::SeqCst);
    }
}

impl fmt::Debug for FakeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeStore")
            .field("root", &self.inner.layout.root())
            .field("busy_policy", &self.inner.busy_policy)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The index. Never held across an `.await`.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and every update is a single map operation,
        // so a poisoned lock still guards a consistent index.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Uses up one injected build fault, if any is pending.
    pub(crate) fn take_build_fault(&self) -> bool {
        self.fail_builds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn new_incarnation(&self) -> u64 {
        self.next_incarnation.fetch_add(1, Ordering::Relaxed)
    }

    /// Removes an uncommitted tree. It is first renamed into `trash/` (so its place is free at
    /// once, e.g. for a new build of the same id); if removing it fails, it is kept for
    /// [`complete_deletes`](store_api::Store::complete_deletes) and, at the latest, the next
    /// open. Never fails and never panics: it runs in `Drop`.
    pub(crate) fn dispose(&self, path: &Path) {
        // Nothing to do is no step (a step hook counts only real changes).
        if fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            return;
        }
        let trash = self.layout.scratch("trash");
        let doomed = match self.fs.rename(path, &trash) {
            Ok(()) => trash,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not move to trash");
                path.to_owned()
            }
        };
        if let Err(e) = self.fs.remove(&doomed) {
            tracing::warn!(path = %doomed.display(), error = %e, "could not remove; will retry");
            self.state().pending_removal.push(doomed);
        }
    }

    /// Retries the removals [`dispose`](Inner::dispose) could not finish.
    pub(crate) fn retry_removals(&self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.state().pending_removal);
        let mut first_error = None;
        for path in pending {
            if let Err(e) = self.fs.remove(&path) {
                if first_error.is_none() {
                    first_error = Some(StoreError::io("removing deleted data at", &path, e));
                }
                self.state().pending_removal.push(path);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A temporary root directory, removed (even if the builder made parts of it read-only) when
/// the store is dropped.
struct TempRoot(PathBuf);

impl TempRoot {
    fn create() -> Result<Self, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("store-fake-")
            .tempdir()
            .map_err(|e| {
                StoreError::io(
                    "creating a temporary store root in",
                    std::env::temp_dir(),
                    e,
                )
            })?;
        Ok(Self(dir.keep()))
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            tracing::warn!(root = %self.0.display(), error = %e, "could not remove temporary store root");
        }
    }
}

impl store_api::Inspect for FakeStore {
    fn results(&self) -> Vec<Id> {
        FakeStore::results(self)
    }

    fn caches(&self) -> Vec<CacheName> {
        self.cache_info().into_iter().map(|c| c.name).collect()
    }
}
