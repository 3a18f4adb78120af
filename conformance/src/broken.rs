//! Stores broken on purpose, for testing the suite itself: [`BrokenFactory`] wraps the stores
//! of any factory so that they break one point of the contract each ([`Defect`]), the way real
//! backends have. The suite must fail every one of them; [`self_test`](crate::self_test) is
//! the quick proof a backend's own tests (and `cargo xtask conformance
//! --self-test-broken-store`) run on real storage.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::factory::{Capabilities, FactoryError, StoreFactory};
use async_trait::async_trait;
use store_api::{
    BuildError, BuildFn, BuildFnError, CacheCopy, CacheLease, CacheName, DeleteCacheError, Id,
    ReleaseOutcome, Store, StoreError, User,
};
/// The defects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Defect {
    /// A release that lost the race is published anyway (last writer wins).
    PublishesStaleRelease,
    /// A build without base starts with the files of the previous build.
    LeaksPreviousBuildIntoFreshBuild,
    /// A build whose function failed keeps what it wrote as the result.
    KeepsFailedBuild,
    /// Deleting a result deletes everything built on it (`destroy -R`).
    DeleteTakesChildren,
    /// Declares `may_return_busy` but lets delete win (wrap a factory whose stores let delete
    /// win: the wrapper only changes what it declares).
    NeverBusyWhileClaimingItMay,
    /// Result paths are writable and later builds are cloned from them.
    WritableResultFeedsLaterBuilds,
    /// A build whose future was dropped while its function ran shows up as a result.
    RecordsCancelledBuild,
    /// Counts copies out, but forgets to count down when a copy is dropped (OBuilder's leaked
    /// clone counter): `delete_cache` stays Busy.
    LeaksCopyCountOnDrop,
    /// Escapes cache names lossily: `a%2fb` (and `a%2Fb`) and `a/b` share storage.
    LossyCacheNameEscaping,
    /// Turns `/` in cache names into `_`: `a/b` and `a_b` share storage.
    CacheNameSlashToUnderscore,
    /// Folds the case of cache names: `Opam` and `opam` share storage.
    CacheNameCaseFolded,
    /// Cuts cache names to their first 64 bytes: long names with a common start share storage.
    CacheNameTruncated,
    /// Drops trailing dots and spaces of cache names, as some filesystems do: `c.` and `c`
    /// share storage.
    CacheNameTrailingDotsDropped,
    /// Normalizes cache names to composed Unicode: `cafe\u{301}` and `café` share storage.
    CacheNameUnicodeNormalized,
    /// Folds the case of ids: `X` and `x` are one result.
    IdCaseFolded,
    /// Maps `.` and `-` in ids to `_`: `a.b` and `a_b` are one result.
    IdPunctuationFolded,
    /// Creates every cache owned by root, whatever user was asked for.
    IgnoresCacheOwner,
    /// Turns the build function's own error into a store error.
    SwallowsBuildFnError,
    /// A build from a missing base fails as it should, but leaves a directory behind in the
    /// storage (like a clone made before the base was checked).
    MissingBaseLeavesLeftover,
}

impl Defect {
    /// Every defect, in the order of their declaration. (A new one must be added here, and to
    /// [`catching_check`](crate::catching_check), whose exhaustive match the
    /// compiler checks.)
    pub const ALL: &'static [Defect] = &[
        Defect::PublishesStaleRelease,
        Defect::LeaksPreviousBuildIntoFreshBuild,
        Defect::KeepsFailedBuild,
        Defect::DeleteTakesChildren,
        Defect::NeverBusyWhileClaimingItMay,
        Defect::WritableResultFeedsLaterBuilds,
        Defect::RecordsCancelledBuild,
        Defect::LeaksCopyCountOnDrop,
        Defect::LossyCacheNameEscaping,
        Defect::CacheNameSlashToUnderscore,
        Defect::CacheNameCaseFolded,
        Defect::CacheNameTruncated,
        Defect::CacheNameTrailingDotsDropped,
        Defect::CacheNameUnicodeNormalized,
        Defect::IdCaseFolded,
        Defect::IdPunctuationFolded,
        Defect::IgnoresCacheOwner,
        Defect::SwallowsBuildFnError,
        Defect::MissingBaseLeavesLeftover,
    ];

    /// The cache name the wrapped store sees for `name`: the defect's mapping, or the name
    /// itself. Every mapping keeps a valid name (it only gets shorter or changes characters,
    /// gaining no NUL); one that would not falls back to the name.
    pub(crate) fn cache_name_seen(self, name: &CacheName) -> CacheName {
        let s = name.as_str();
        let mapped = match self {
            Defect::LossyCacheNameEscaping => s.replace("%2f", "/").replace("%2F", "/"),
            Defect::CacheNameSlashToUnderscore => s.replace('/', "_"),
            Defect::CacheNameCaseFolded => s.to_lowercase(),
            Defect::CacheNameTruncated => {
                let mut end = s.len().min(64);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_owned()
            }
            Defect::CacheNameTrailingDotsDropped => s.trim_end_matches(['.', ' ']).to_owned(),
            Defect::CacheNameUnicodeNormalized => s.replace("e\u{301}", "\u{e9}"),
            _ => return name.clone(),
        };
        CacheName::new(mapped).unwrap_or_else(|_| name.clone())
    }

    /// The id the wrapped store sees for `id`: the defect's mapping, or the id itself.
    pub(crate) fn id_seen(self, id: &Id) -> Id {
        let mapped = match self {
            Defect::IdCaseFolded => id.as_str().to_lowercase(),
            Defect::IdPunctuationFolded => id.as_str().replace(['.', '-'], "_"),
            _ => return id.clone(),
        };
        Id::new(mapped).unwrap_or_else(|_| id.clone())
    }
}

/// State a broken wrapper keeps across reopen (it lives with the storage).
#[derive(Debug, Default)]
struct Shared {
    last_built: Mutex<Option<Id>>,
    children: Mutex<BTreeMap<Id, BTreeSet<Id>>>,
    running: Mutex<BTreeSet<Id>>,
    killed: Mutex<BTreeSet<Id>>,
    ghosts: Mutex<BTreeSet<Id>>,
    copies_out: Mutex<BTreeMap<CacheName, usize>>,
}

/// Opens the stores of `F`, each wrapped so that it has one [`Defect`]. Everything else
/// (storage, reopen, listing, teardown and its leak check) is `F`'s.
pub struct BrokenFactory<F> {
    defect: Defect,
    inner: F,
    pub(crate) opened: Arc<AtomicUsize>,
}

impl<F: StoreFactory> BrokenFactory<F> {
    /// The stores `inner` opens, broken by `defect`.
    pub fn new(inner: F, defect: Defect) -> Self {
        Self {
            defect,
            inner,
            opened: Arc::default(),
        }
    }

    /// The defect.
    pub fn defect(&self) -> Defect {
        self.defect
    }

    /// How many fresh stores were opened so far (one per case run, shrinking included).
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    fn wrap(&self, inner: Arc<dyn Store>, storage: &BrokenStorage<F::Storage>) -> Arc<dyn Store> {
        Arc::new(Broken {
            defect: self.defect,
            inner,
            shared: Arc::clone(&storage.shared),
            scratch: storage.scratch.path().to_path_buf(),
        })
    }
}

/// The inner factory's storage, and what the broken wrapper keeps across reopen.
pub struct BrokenStorage<S> {
    inner: S,
    shared: Arc<Shared>,
    scratch: tempfile::TempDir,
}

#[async_trait]
impl<F: StoreFactory> StoreFactory for BrokenFactory<F> {
    type Storage = BrokenStorage<F::Storage>;

    fn name(&self) -> String {
        format!("{}-broken-{:?}", self.inner.name(), self.defect)
    }

    fn unavailable(&self) -> Option<String> {
        self.inner.unavailable()
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        // The wrappers model defects of the API, not of steps: no fault hook.
        caps.fault_injection = false;
        if self.defect == Defect::NeverBusyWhileClaimingItMay {
            caps.may_return_busy = true;
        }
        caps
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, Self::Storage), FactoryError> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let (store, inner) = self.inner.fresh().await?;
        let storage = BrokenStorage {
            inner,
            shared: Arc::default(),
            scratch: tempfile::tempdir()?,
        };
        Ok((self.wrap(store, &storage), storage))
    }

    async fn reopen(&self, storage: &Self::Storage) -> Result<Arc<dyn Store>, FactoryError> {
        let store = self.inner.reopen(&storage.inner).await?;
        Ok(self.wrap(store, storage))
    }

    async fn list_storage(
        &self,
        storage: &Self::Storage,
    ) -> Result<Option<Vec<String>>, FactoryError> {
        self.inner.list_storage(&storage.inner).await
    }

    async fn teardown(&self, storage: Self::Storage) -> Result<(), FactoryError> {
        self.inner.teardown(storage.inner).await
    }
}

#[derive(Debug)]
struct Broken {
    defect: Defect,
    inner: Arc<dyn Store>,
    shared: Arc<Shared>,
    scratch: PathBuf,
}

impl Broken {
    fn mirror(&self, id: &Id) -> PathBuf {
        self.scratch.join("mirror").join(id.as_str())
    }

    fn ghost(&self, id: &Id) -> PathBuf {
        self.scratch.join("ghost").join(id.as_str())
    }

    fn inner_name(&self, name: &CacheName) -> CacheName {
        self.defect.cache_name_seen(name)
    }

    fn inner_id(&self, id: &Id) -> Id {
        self.defect.id_seen(id)
    }

    fn forget_result(&self, id: &Id) {
        let _ = fs::remove_dir_all(self.mirror(id));
        let _ = fs::remove_dir_all(self.ghost(id));
        lock(&self.shared.ghosts).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Store for Broken {
    fn root(&self) -> &Path {
        self.inner.root()
    }

    fn state_dir(&self) -> &Path {
        self.inner.state_dir()
    }

    async fn build_dyn(
        &self,
        base: Option<&Id>,
        id: &Id,
        f: BuildFn<'_>,
    ) -> Result<(), BuildError<BuildFnError>> {
        let id = &self.inner_id(id);
        let mut base = base.map(|b| self.inner_id(b));
        if self.defect == Defect::LeaksPreviousBuildIntoFreshBuild && base.is_none() {
            let last = lock(&self.shared.last_built).clone();
            if let Some(last) = last
                && matches!(self.inner.result(&last).await, Ok(Some(_)))
            {
                base = Some(last);
            }
        }
        let failed_copy = Arc::new(Mutex::new(None::<tempfile::TempDir>));
        let started = Arc::new(AtomicBool::new(false));
        let f: BuildFn<'_> = {
            let defect = self.defect;
            let failed_copy = Arc::clone(&failed_copy);
            let started = Arc::clone(&started);
            let mirror_base = base.as_ref().map(|b| self.mirror(b));
            Box::new(move |dir: PathBuf| {
                started.store(true, Ordering::SeqCst);
                if defect == Defect::WritableResultFeedsLaterBuilds
                    && let Some(mirror) = mirror_base
                {
                    // Clone from the handed-out result path, not from the store's own copy.
                    let _ = clear_dir(&dir);
                    let _ = copy_dir(&mirror, &dir);
                }
                let fut = f(dir.clone());
                Box::pin(async move {
                    let r = fut.await;
                    if r.is_err()
                        && defect == Defect::KeepsFailedBuild
                        && let Ok(keep) = tempfile::tempdir()
                    {
                        let _ = copy_dir(&dir, keep.path());
                        *lock(&failed_copy) = Some(keep);
                    }
                    r
                })
            })
        };
        // Records the build as a result if its future is dropped after the function started.
        struct Ghost<'a> {
            store: &'a Broken,
            id: Id,
            started: Arc<AtomicBool>,
            done: bool,
        }
        impl Drop for Ghost<'_> {
            fn drop(&mut self) {
                if !self.done && self.started.load(Ordering::SeqCst) {
                    let _ = fs::create_dir_all(self.store.ghost(&self.id));
                    lock(&self.store.shared.ghosts).insert(self.id.clone());
                }
            }
        }
        let mut ghost = (self.defect == Defect::RecordsCancelledBuild).then(|| Ghost {
            store: self,
            id: id.clone(),
            started: Arc::clone(&started),
            done: false,
        });
        if let Some(base) = &base {
            // Like a ZFS clone, the build is a child of its base from the moment it starts.
            lock(&self.shared.children)
                .entry(base.clone())
                .or_default()
                .insert(id.clone());
        }
        struct Running<'a>(&'a Shared, Id);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                lock(&self.0.running).remove(&self.1);
            }
        }
        lock(&self.shared.running).insert(id.clone());
        let running = Running(&self.shared, id.clone());
        let mut r = self.inner.build_dyn(base.as_ref(), id, f).await;
        if self.defect == Defect::MissingBaseLeavesLeftover
            && matches!(r, Err(BuildError::Store(StoreError::MissingBase { .. })))
        {
            let _ = fs::create_dir_all(self.inner.root().join(format!("half-{id}")));
        }
        drop(running);
        if let Some(g) = ghost.as_mut() {
            g.done = true;
        }
        if lock(&self.shared.killed).remove(id) && r.is_ok() {
            // `destroy -R` took the running build's dataset with its base.
            let _ = self.inner.delete(id).await;
            r = Err(BuildError::Store(StoreError::backend(
                "the build's dataset was destroyed while it ran",
            )));
        }
        match &r {
            Ok(()) => {
                self.forget_result(id);
                *lock(&self.shared.last_built) = Some(id.clone());
                if let Some(base) = &base {
                    lock(&self.shared.children)
                        .entry(base.clone())
                        .or_default()
                        .insert(id.clone());
                }
                if self.defect == Defect::WritableResultFeedsLaterBuilds
                    && let Ok(Some(path)) = self.inner.result(id).await
                {
                    let _ = copy_dir(&path, &self.mirror(id));
                }
            }
            Err(BuildError::Failed(_)) => {
                let kept = lock(&failed_copy).take();
                if let Some(kept) = kept {
                    let src = kept.path().to_path_buf();
                    let _ = self
                        .inner
                        .build_dyn(
                            None,
                            id,
                            Box::new(move |dir| {
                                Box::pin(async move {
                                    let _ = copy_dir(&src, &dir);
                                    drop(kept);
                                    Ok(())
                                })
                            }),
                        )
                        .await;
                }
            }
            Err(BuildError::Store(_)) => {}
        }
        match r {
            Err(BuildError::Failed(_)) if self.defect == Defect::SwallowsBuildFnError => Err(
                BuildError::Store(StoreError::backend("the build step failed")),
            ),
            r => r,
        }
    }

    async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError> {
        let id = &self.inner_id(id);
        let r = self.inner.result(id).await?;
        if r.is_none() && lock(&self.shared.ghosts).contains(id) {
            return Ok(Some(self.ghost(id)));
        }
        if self.defect == Defect::WritableResultFeedsLaterBuilds
            && r.is_some()
            && self.mirror(id).exists()
        {
            return Ok(Some(self.mirror(id)));
        }
        Ok(r)
    }

    async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError> {
        let id = &self.inner_id(id);
        if self.defect == Defect::WritableResultFeedsLaterBuilds
            && self.mirror(id).exists()
            && matches!(self.inner.result(id).await, Ok(Some(_)))
        {
            return Ok(self.mirror(id).join("log"));
        }
        self.inner.log_file(id).await
    }

    async fn delete(&self, id: &Id) -> Result<(), StoreError> {
        let mut doomed = vec![self.inner_id(id)];
        if self.defect == Defect::DeleteTakesChildren {
            let children = lock(&self.shared.children).clone();
            let mut i = 0;
            while i < doomed.len() {
                if let Some(kids) = children.get(&doomed[i]) {
                    for kid in kids {
                        if !doomed.contains(kid) {
                            doomed.push(kid.clone());
                        }
                    }
                }
                i += 1;
            }
        }
        for d in &doomed {
            if lock(&self.shared.running).contains(d) {
                lock(&self.shared.killed).insert(d.clone());
            }
            self.inner.delete(d).await?;
            self.forget_result(d);
            lock(&self.shared.children).remove(d);
        }
        Ok(())
    }

    async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError> {
        let user = if self.defect == Defect::IgnoresCacheOwner {
            User::ROOT
        } else {
            user
        };
        let lease = self.inner.cache(user, &self.inner_name(name)).await?;
        *lock(&self.shared.copies_out)
            .entry(name.clone())
            .or_default() += 1;
        let path = lease.path().to_path_buf();
        Ok(CacheLease::new(
            name.clone(),
            path,
            Box::new(BrokenCopy {
                defect: self.defect,
                inner: Some(lease),
                store: Arc::clone(&self.inner),
                shared: Arc::clone(&self.shared),
                name: name.clone(),
                inner_name: self.inner_name(name),
            }),
        ))
    }

    async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
        if self.defect == Defect::LeaksCopyCountOnDrop
            && lock(&self.shared.copies_out)
                .get(name)
                .copied()
                .unwrap_or(0)
                > 0
        {
            return Err(DeleteCacheError::Busy { name: name.clone() });
        }
        self.inner.delete_cache(&self.inner_name(name)).await
    }

    async fn complete_deletes(&self) -> Result<(), StoreError> {
        self.inner.complete_deletes().await
    }

    async fn df(&self) -> Result<f64, StoreError> {
        self.inner.df().await
    }
}

struct BrokenCopy {
    defect: Defect,
    inner: Option<CacheLease>,
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    name: CacheName,
    inner_name: CacheName,
}

impl BrokenCopy {
    fn count_down(&self) {
        if let Some(n) = lock(&self.shared.copies_out).get_mut(&self.name) {
            *n = n.saturating_sub(1);
        }
    }
}

#[async_trait]
impl CacheCopy for BrokenCopy {
    async fn release(mut self: Box<Self>) -> Result<ReleaseOutcome, StoreError> {
        self.count_down();
        let Some(lease) = self.inner.take() else {
            return Ok(ReleaseOutcome::Discarded);
        };
        let saved = tempfile::tempdir().map_err(|e| StoreError::io("tempdir", "/tmp", e))?;
        let _ = copy_dir(lease.path(), saved.path());
        let outcome = lease.release().await?;
        if outcome == ReleaseOutcome::Discarded && self.defect == Defect::PublishesStaleRelease {
            let again = self.store.cache(User::ROOT, &self.inner_name).await?;
            let _ = clear_dir(again.path());
            let _ = copy_dir(saved.path(), again.path());
            return again.release().await;
        }
        Ok(outcome)
    }

    fn discard(mut self: Box<Self>) {
        if self.defect != Defect::LeaksCopyCountOnDrop {
            self.count_down();
        }
        drop(self.inner.take());
    }
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Copies a tree (files, directories, symlinks, permission bits) into `dst`.
fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = fs::symlink_metadata(&from)?;
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else if meta.is_dir() {
            copy_dir(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.permissions().mode()))?;
        } else {
            fs::copy(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.permissions().mode()))?;
        }
    }
    Ok(())
}
