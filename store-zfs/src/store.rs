//! [`ZfsStore`] and its [`Store`] implementation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use store_api::{
    BuildError, BuildFn, BuildFnError, CacheLease, CacheName, DeleteCacheError, Id, Store,
    StoreError, User,
};

use crate::engine::Engine;
use crate::runner::{Runner, SystemRunner};
use crate::state::{Limits, Shared, lock};

/// How to open a [`ZfsStore`]: the command runner and limits. `Default` is the real `zfs`
/// and `zpool` with the engine's defaults.
#[derive(Clone)]
pub struct ZfsOptions {
    /// Runs every `zfs`/`zpool` command (tests substitute recording or failing runners).
    pub runner: Arc<dyn Runner>,
    /// At most this many results are kept mounted read-only; `None` for the engine's default
    /// (unlimited on OpenZFS, [`crate::ZFS_FUSE_MOUNT_CAP`] on zfs-fuse).
    pub max_mounted_results: Option<usize>,
    /// The engine behind `zfs`, if the caller knows it already (what [`Engine::detect`] or an
    /// earlier store's [`ZfsStore::engine`] said): open then skips its `zfs version`, one
    /// process fewer per open. `None` (the default): detected at open. Given wrongly, the
    /// store takes the other engine's paths (see [`Engine`]).
    pub engine: Option<Engine>,
}

impl Default for ZfsOptions {
    fn default() -> Self {
        Self {
            runner: Arc::new(SystemRunner),
            max_mounted_results: None,
            engine: None,
        }
    }
}

impl std::fmt::Debug for ZfsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZfsOptions")
            .field("max_mounted_results", &self.max_mounted_results)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Builds the options of a [`ZfsStore`] and opens it ([`ZfsStore::builder`]).
#[derive(Clone, Debug, Default)]
pub struct ZfsStoreBuilder {
    options: ZfsOptions,
}

impl ZfsStoreBuilder {
    /// Runs every `zfs`/`zpool` command through `runner` (default: the real commands).
    pub fn runner(mut self, runner: Arc<dyn Runner>) -> Self {
        self.options.runner = runner;
        self
    }

    /// Keeps at most `n` results mounted read-only (default: unlimited on OpenZFS,
    /// [`crate::ZFS_FUSE_MOUNT_CAP`] on zfs-fuse).
    pub fn max_mounted_results(mut self, n: usize) -> Self {
        self.options.max_mounted_results = Some(n);
        self
    }

    /// Uses `engine` instead of detecting it at open (see [`ZfsOptions::engine`]).
    pub fn engine(mut self, engine: Engine) -> Self {
        self.options.engine = Some(engine);
        self
    }

    /// Opens the store at `location` with these options (see [`ZfsStore::open`]).
    ///
    /// # Errors
    /// As for [`ZfsStore::open`].
    pub async fn open(self, location: impl AsRef<str>) -> Result<ZfsStore, StoreError> {
        ZfsStore::open_with(location, self.options).await
    }
}

/// A [`Store`] on a ZFS pool or dataset. See the [crate documentation](crate) for the layout,
/// naming, crash safety and command costs.
///
/// A root is open once at a time: a second [`open`](Self::open) of a root that is open, in
/// another process or in this one, fails promptly (within a quarter second) with
/// [`StoreError::Locked`](store_api::StoreError::Locked) naming the holder and changes
/// nothing (its repair would destroy the first store's builds and copies in progress). The
/// lock goes with the last handle (store clones, leases, background work; see
/// [`wait_idle`](Self::wait_idle)) or with the process. Stores on different roots, in one
/// pool or several, are independent.
#[derive(Clone, Debug)]
pub struct ZfsStore {
    pub(crate) inner: Shared,
}

impl ZfsStore {
    /// Opens the store at `location` with the real `zfs` command, creating the layout on
    /// first use and reclaiming what an interrupted process left behind.
    ///
    /// `location` is a pool (`tank`, meaning the pool mounted at `/tank`), a mount path
    /// (`/tank`, `/mnt/tank`: the pool named by the last component, or the dataset mounted
    /// there) or a dataset below a pool's root (`tank/zstore`). The dataset must exist.
    ///
    /// # Errors
    /// A clear [`StoreError`] if `zfs` cannot run, the pool or dataset does not exist, is not
    /// a mounted ZFS filesystem, or a command fails; [`StoreError::Locked`] if the store is
    /// open already.
    pub async fn open(location: impl AsRef<str>) -> Result<Self, StoreError> {
        Self::open_with(location, ZfsOptions::default()).await
    }

    /// Options for opening, set one at a time:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), store_api::StoreError> {
    /// let store = store_zfs::ZfsStore::builder()
    ///     .max_mounted_results(100)
    ///     .open("tank/zstore")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ZfsStoreBuilder {
        ZfsStoreBuilder::default()
    }

    /// [`open`](Self::open) with explicit options.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub async fn open_with(
        location: impl AsRef<str>,
        options: ZfsOptions,
    ) -> Result<Self, StoreError> {
        let limits = Limits {
            max_mounted_results: options.max_mounted_results,
        };
        let inner =
            crate::open::open(location.as_ref(), options.runner, options.engine, limits).await?;
        Ok(Self { inner })
    }

    /// The store's root dataset (`tank` or `tank/zstore`).
    pub fn dataset(&self) -> &str {
        &self.inner.layout.root
    }

    /// The ZFS implementation detected at open.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Waits until the store's background work (cleanups after cancelled builds and dropped
    /// cache copies) has finished. Useful before inspecting the pool, or before dropping the
    /// last handle when the runtime is about to stop (the next open would redo the work).
    pub async fn wait_idle(&self) {
        self.inner.tasks.idle().await;
    }

    /// The ids that have a result, sorted (from the in-memory index).
    pub fn results(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = lock(&self.inner.results).by_id.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// What open found under the store's groups and left exactly as it was, because the
    /// store did not make it and so will not destroy it: datasets without the store's
    /// `zstore:made` property (made by hand, or by an older version of the store), datasets
    /// and snapshots inside the store's own (a child dataset, an auto-snapshot tool's
    /// snapshots), and leftovers that hold such things. Sorted; each is also logged at open.
    pub fn left_alone(&self) -> Vec<String> {
        let mut names = lock(&self.inner.left_alone).clone();
        names.sort();
        names.dedup();
        names
    }

    /// The caches that have a published version, sorted (real names, not escaped ones).
    pub fn caches(&self) -> Vec<CacheName> {
        let mut names: Vec<CacheName> = lock(&self.inner.caches)
            .iter()
            .filter(|(_, e)| lock(&e.st).current.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }
}

impl store_api::Inspect for ZfsStore {
    fn results(&self) -> Vec<Id> {
        ZfsStore::results(self)
    }

    fn caches(&self) -> Vec<CacheName> {
        ZfsStore::caches(self)
    }
}

#[async_trait]
impl Store for ZfsStore {
    fn root(&self) -> &Path {
        &self.inner.layout.root_path
    }

    fn state_dir(&self) -> &Path {
        self.inner.layout.state_dir()
    }

    async fn build_dyn(
        &self,
        base: Option<&Id>,
        id: &Id,
        f: BuildFn<'_>,
    ) -> Result<(), BuildError<BuildFnError>> {
        crate::build::build(&self.inner, base, id, f).await
    }

    async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError> {
        crate::results::result(&self.inner, id).await
    }

    async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError> {
        let building = lock(&self.inner.results)
            .building
            .get(id)
            .map(|t| t.leaf.clone());
        if let Some(leaf) = building {
            return Ok(self.inner.layout.result_dir(&leaf).join("log"));
        }
        // A result's log is read through its (lazily mounted) result path.
        Ok(match crate::results::result(&self.inner, id).await? {
            Some(dir) => dir.join("log"),
            None => self.inner.layout.result_dir(id.as_str()).join("log"),
        })
    }

    async fn delete(&self, id: &Id) -> Result<(), StoreError> {
        crate::results::delete(&self.inner, id).await
    }

    async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError> {
        crate::cache::acquire(&self.inner, user, name).await
    }

    async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
        crate::cache::delete(&self.inner, name).await
    }

    async fn complete_deletes(&self) -> Result<(), StoreError> {
        crate::space::complete_deletes(&self.inner).await
    }

    async fn df(&self) -> Result<f64, StoreError> {
        crate::space::df(&self.inner).await
    }
}
