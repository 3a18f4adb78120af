//! The [`Store`] trait (object-safe) and [`StoreExt`] (typed build errors on top of it).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::build_fn::{BuildFn, BuildFnError};
use crate::{BuildError, CacheLease, CacheName, DeleteCacheError, Id, StoreError, User};

/// A store of build results and caches.
///
/// A builder runs each build step on top of the previous step's result: it asks
/// [`result`](Store::result) whether a step is already built and, if not, calls
/// [`StoreExt::build`] with the previous step as `base`. Build steps share mutable caches
/// (package downloads, compiler caches) through [`cache`](Store::cache).
///
/// The trait is object-safe: a builder holds an `Arc<dyn Store>` and picks the backend from
/// configuration (see [`StoreSpec`](crate::StoreSpec)). All methods take `&self` and may be
/// called concurrently from many tasks.
///
/// # What the caller promises
/// - Never two concurrent builds of the same id, and never a build of an id whose result
///   exists. A store may reject such calls ([`StoreError::BuildInProgress`],
///   [`StoreError::AlreadyBuilt`]) and must not corrupt anything either way.
/// - Never to use a build directory after its build ended, nor a cache path after its lease was
///   released or dropped.
///
/// # What every backend promises
/// - Everything documented on each method below, checked by the `conformance` crate.
/// - It is `Debug` (a store shows up in logs and failed assertions), and `Arc<S>`, `Box<S>`,
///   `Arc<dyn Store>` are stores too (every method forwarded).
/// - **Crash safety**: if the process dies at any instant and the store is opened again, every
///   id has a complete result or none; every cache is at some released version (never empty
///   because of the crash, never a mix of two versions); no temporary copy is left once the
///   store is open; the [`state_dir`](Store::state_dir) is intact.
/// - **Cancellation**: dropping any future returned by a store method leaves the store in a
///   state this contract allows (a dropped build records nothing; a dropped release publishes
///   all of the copy or none of it).
/// - **Bad input changes nothing**: an invalid id or cache name cannot be constructed, and any
///   operation that fails with a [`StoreError`] leaves the other results and caches as they were.
/// - **One opener at a time**: a backend's storage is open in one store at a time. Opening it
///   again while it is open, in another process or in this one, fails promptly with
///   [`StoreError::Locked`] naming the holder, and changes nothing. The lock goes with the
///   last handle (the store, its clones and leases) or with the process, so a builder that
///   crashed can open the store again at once.
/// - **Nothing outside the root**: whatever a build function or cache holder leaves in its
///   directory (symlinks, a symlink or file in place of the directory itself, a filesystem
///   mounted inside), the store never reads, writes or removes anything outside its root
///   because of it. A build or release whose directory is no longer a real directory records
///   nothing and fails with [`StoreError::NotADirectory`] ([`check_top_dir`](crate::check_top_dir)
///   is the check; on ZFS the directory is a mount point that cannot be swapped while mounted,
///   but a build that unmounted it could).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The store's root directory.
    fn root(&self) -> &Path;

    /// A directory where the builder may keep its own mutable state (e.g. an SQLite database).
    ///
    /// It exists once the store is open, persists when the store is closed and opened again,
    /// and no store operation ever touches its contents.
    fn state_dir(&self) -> &Path;

    /// Runs a type-erased build function to produce the result for `id`.
    ///
    /// This is the object-safe core behind [`StoreExt::build`], which builders should call
    /// instead (it keeps the build function's error type). The contract is documented there;
    /// a backend returns the function's boxed error untouched in [`BuildError::Failed`].
    ///
    /// Backends run the function with [`run_build_fn`](crate::run_build_fn), so that after a
    /// panic they clean up and then resume the panic.
    async fn build_dyn(
        &self,
        base: Option<&Id>,
        id: &Id,
        f: BuildFn<'_>,
    ) -> Result<(), BuildError<BuildFnError>>;

    /// The path of the result of `id`, or `None` if there is none.
    ///
    /// The directory holds exactly what the build function left there. Writes through this
    /// path fail, or have no effect on the result (nor on later builds that use it as base).
    /// The path stays valid until `id` is deleted. One documented exception: a backend that can
    /// expose only a bounded number of results at once (`store-zfs` on zfs-fuse, whose daemon
    /// mounts at most 1,000 filesystems) may withdraw the path of a result that was not asked
    /// for recently; calling `result` again makes it valid again. Builders should call `result`
    /// when they need a path rather than keep paths for long.
    ///
    /// Cheap: builders call it often. `None` for an id whose build failed, was cancelled, is
    /// still running, or was deleted.
    async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError>;

    /// The path of the build log of `id`: the file `log` inside the build directory while `id`
    /// is being built, and inside the result afterwards.
    ///
    /// While the build function runs, the builder may create and write this file. After a
    /// successful build it is readable at the same place in the result (it is part of the
    /// result, so a build from this base starts with the base's log in its directory; the
    /// builder replaces it). The file may not exist if the build never ran or failed.
    async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError>;

    /// Removes the result of `id`, if any. Deleting an absent id is not an error.
    ///
    /// Results built on top of `id` stay valid and unchanged, and so do builds from `id` that
    /// are running right now: deleting a base never changes or breaks what was derived from it.
    /// The space is reclaimed once nothing depends on it.
    async fn delete(&self, id: &Id) -> Result<(), StoreError>;

    /// Takes a writable copy of the latest version of cache `name`.
    ///
    /// If the cache does not exist it is first created as an empty directory owned by `user`.
    /// The copy is independent of every other copy; many may be out at once. See
    /// [`CacheLease`] for publishing the copy (first release of a generation wins) or
    /// discarding it.
    async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError>;

    /// Removes cache `name`, if present. Deleting an absent cache is not an error.
    ///
    /// While any copy of the cache is out, the store may instead return
    /// [`DeleteCacheError::Busy`] and change nothing. A store that deletes anyway must discard
    /// every copy that is out when they are released ("delete wins").
    async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError>;

    /// Waits until earlier deletes have really freed their space, so that a [`df`](Store::df)
    /// read afterwards is accurate.
    async fn complete_deletes(&self) -> Result<(), StoreError>;

    /// The percentage of free space in the store, from 0 to 100.
    ///
    /// # Errors
    /// A [`StoreError`] when the figure cannot be read (never a made-up 0 or 100).
    async fn df(&self) -> Result<f64, StoreError>;
}

/// Methods on every [`Store`] (including `dyn Store`) that are generic, so they cannot be part
/// of the object-safe trait itself.
pub trait StoreExt: Store {
    /// Runs the async function `f(dir)` to produce a new result under `id`.
    ///
    /// - `dir` starts empty or, with `base`, as a copy of `base`'s result (including its `log`).
    ///   If `base` has no result the call fails with [`StoreError::MissingBase`] and `f` is
    ///   not run.
    /// - If `f` returns `Ok(())`, `dir` becomes the result for `id`: from then on
    ///   [`result`](Store::result) returns a path whose contents are exactly what `f` left.
    /// - If `f` returns an error, it comes back as [`BuildError::Failed`], exactly as `f`
    ///   returned it; nothing is recorded.
    /// - If `f` panics, nothing is recorded and the panic is resumed with its original payload
    ///   once the store has cleaned up.
    /// - If the returned future is dropped (cancelled) before it completes, nothing is
    ///   recorded.
    /// - After a failure, panic or cancellation, a later build of the same id starts afresh:
    ///   nothing from the failed attempt is visible in its `dir`.
    /// - If the store itself fails, the error is [`BuildError::Store`] and nothing is recorded.
    ///
    /// Builds of different ids may run concurrently, including many from the same base.
    /// [`log_file`](Store::log_file)`(id)` may be written while `f` runs.
    fn build<'a, F, Fut, E>(
        &'a self,
        base: Option<&'a Id>,
        id: &'a Id,
        f: F,
    ) -> impl Future<Output = Result<(), BuildError<E>>> + Send + 'a
    where
        F: FnOnce(PathBuf) -> Fut + Send + 'a,
        Fut: Future<Output = Result<(), E>> + Send + 'a,
        E: Send + 'static,
    {
        let erased: BuildFn<'a> = Box::new(move |dir| {
            Box::pin(async move { f(dir).await.map_err(|e| Box::new(e) as BuildFnError) })
        });
        async move {
            match self.build_dyn(base, id, erased).await {
                Ok(()) => Ok(()),
                Err(BuildError::Store(e)) => Err(BuildError::Store(e)),
                Err(BuildError::Failed(boxed)) => match boxed.downcast::<E>() {
                    Ok(e) => Err(BuildError::Failed(*e)),
                    Err(_) => Err(BuildError::Store(StoreError::backend(format!(
                        "the store returned a build-function error of another type while \
                         building {id} (a backend bug: it must pass the error through untouched)"
                    )))),
                },
            }
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// `impl Store for $ptr<S>`, every method forwarded to the pointee.
macro_rules! forward_store {
    ($ptr:ident, $what:literal) => {
        #[doc = concat!("Forwards every method to the ", $what, " store, so that code generic over `S: Store` also takes a `", stringify!($ptr), "<S>` or a `", stringify!($ptr), "<dyn Store>`.")]
        #[async_trait]
        impl<S: Store + ?Sized> Store for $ptr<S> {
            fn root(&self) -> &Path {
                (**self).root()
            }
            fn state_dir(&self) -> &Path {
                (**self).state_dir()
            }
            async fn build_dyn(
                &self,
                base: Option<&Id>,
                id: &Id,
                f: BuildFn<'_>,
            ) -> Result<(), BuildError<BuildFnError>> {
                (**self).build_dyn(base, id, f).await
            }
            async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError> {
                (**self).result(id).await
            }
            async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError> {
                (**self).log_file(id).await
            }
            async fn delete(&self, id: &Id) -> Result<(), StoreError> {
                (**self).delete(id).await
            }
            async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError> {
                (**self).cache(user, name).await
            }
            async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
                (**self).delete_cache(name).await
            }
            async fn complete_deletes(&self) -> Result<(), StoreError> {
                (**self).complete_deletes().await
            }
            async fn df(&self) -> Result<f64, StoreError> {
                (**self).df().await
            }
        }
    };
}

forward_store!(Arc, "shared");
forward_store!(Box, "boxed");
