//! How a backend plugs in: [`StoreFactory`] opens stores on fresh storage, says what the backend
//! can do ([`Capabilities`]), and optionally reopens storage and checks for leaks.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use store_api::Store;

use crate::config::Config;
use crate::fault_plan::FaultPlan;
use crate::model::BusyRule;

/// The error a factory returns: anything, boxed. It is shown in the report as is.
pub type FactoryError = Box<dyn std::error::Error + Send + Sync>;

/// What a backend declares about itself; the suite adapts its expectations to it.
///
/// Start from [`Capabilities::default`] (no reopen, `Busy` reported) and set fields, always
/// ending with `..Default::default()` so that fields added later do not break your code:
///
/// ```
/// let caps = conformance::Capabilities {
///     can_reopen: true,
///     ..Default::default()
/// };
/// assert!(caps.may_return_busy);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// [`StoreFactory::reopen`] works: a store dropped and opened again over the same storage
    /// keeps its results, caches and `state_dir`. Enables the `reopen` step and the scenarios
    /// that need it.
    pub can_reopen: bool,
    /// `delete_cache` returns `Busy` **exactly** when a copy of the cache is out. If `false`,
    /// the backend promises it never returns `Busy`: it deletes the cache and discards every
    /// copy that was out when it is released ("delete wins, late release discarded").
    pub may_return_busy: bool,
    /// [`StoreFactory::open_with_faults`] works (and so does
    /// [`reopen`](StoreFactory::reopen)). Enables the `fault_sweep` check: for every step of
    /// every operation the suite makes that step fail, and separately stops the store after
    /// it, then reopens and checks the crash-safety promises of
    /// [`Store`](store_api::Store#what-every-backend-promises).
    pub fault_injection: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            can_reopen: false,
            may_return_busy: true,
            fault_injection: false,
        }
    }
}

impl Capabilities {
    pub(crate) fn busy_rule(&self) -> BusyRule {
        if self.may_return_busy {
            BusyRule::ReportsBusy
        } else {
            BusyRule::DeleteWins
        }
    }
}

/// Opens stores of one backend for the suite.
///
/// The suite calls [`fresh`](StoreFactory::fresh) once per test case, so every case starts
/// from an empty store on storage nothing else uses; it drops the store, then calls
/// [`teardown`](StoreFactory::teardown) with the storage. All methods may be called from any
/// tokio runtime, including a multi-threaded one, and from many cases at once.
///
/// A complete example is in the [crate documentation](crate).
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// The storage one store lives on: a temporary directory, a pool, a dataset. The suite
    /// only hands it back to the factory.
    type Storage: Send + Sync + 'static;

    /// A short name for reports (e.g. `"zfs-fuse"`).
    fn name(&self) -> String;

    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Why this backend cannot run here at all (no ZFS on the machine, say), or `None` (the
    /// default) if it can. When it says why, [`run`](crate::run) reports every check as
    /// skipped with that reason and opens nothing, and each test of
    /// [`conformance_tests!`](crate::conformance_tests) prints `SKIPPED` with it, past
    /// libtest's output capture, instead of passing silently. A backend that must run (in
    /// CI) should fail in its constructor instead.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// The knobs the tests of [`conformance_tests!`](crate::conformance_tests) start from,
    /// before the `ZSTORE_CONFORMANCE_*` variables ([`Config::with_env`]) apply: a slow
    /// backend returns smaller sizes so that a plain `cargo test` stays short. The default
    /// is [`Config::default`]. [`run`](crate::run) takes its config from the caller and
    /// does not call this.
    fn defaults(&self) -> Config {
        Config::default()
    }

    /// Makes fresh, empty storage and opens a store on it.
    async fn fresh(&self) -> Result<(Arc<dyn Store>, Self::Storage), FactoryError>;

    /// Opens a store again over `storage`, after the suite dropped every handle to the
    /// previous one. Only called if [`Capabilities::can_reopen`].
    ///
    /// The scenario `a_second_open_of_an_open_store_fails_and_changes_nothing` also calls it
    /// while the previous store is still open: that must fail at once and change nothing.
    /// Return the backend's [`StoreError`](store_api::StoreError) boxed as it is (`?` does),
    /// so the suite can see that it is
    /// [`StoreError::Locked`](store_api::StoreError::Locked).
    async fn reopen(&self, storage: &Self::Storage) -> Result<Arc<dyn Store>, FactoryError> {
        let _ = storage;
        Err("this backend cannot reopen a store".into())
    }

    /// Opens a store over `storage` (as [`reopen`](StoreFactory::reopen) does) whose every
    /// external step goes through `plan`: before each step (a `zfs` command, a filesystem
    /// change) the backend's hook calls [`FaultPlan::step`] and runs, fails or refuses the step
    /// as the returned guard says. Only called if [`Capabilities::fault_injection`].
    ///
    /// The plan may be armed before or after this returns (the suite sweeps faults in opening,
    /// too); steps before it is armed always run. After a stop, the suite drops every handle
    /// to the store, waits until no step is in flight, and calls `reopen`.
    async fn open_with_faults(
        &self,
        storage: &Self::Storage,
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let _ = (storage, plan);
        Err("this backend has no fault injection".into())
    }

    /// Every name the storage holds (datasets and snapshots, files and directories), relative
    /// to the storage (so that the listings of two storages with the same contents are equal),
    /// sorted; or `None` if the backend cannot list it (the default).
    ///
    /// The suite compares listings taken while no store operation runs, to check that bad
    /// input changed nothing and that reopening after a crash leaves exactly the names of the
    /// state before or after the interrupted operation (no temporary left). For ZFS this is
    /// `zfs list -H -o name -t all -r <dataset>` with `<dataset>` cut off the front of each
    /// name; list what a leftover could be, but nothing
    /// that changes when nothing happens (no mount state, no access times).
    async fn list_storage(
        &self,
        storage: &Self::Storage,
    ) -> Result<Option<Vec<String>>, FactoryError> {
        let _ = storage;
        Ok(None)
    }

    /// Called once per case after every store handle was dropped: release the storage, and
    /// return an error if the store leaked anything (temporary copies, mounts, datasets).
    async fn teardown(&self, storage: Self::Storage) -> Result<(), FactoryError> {
        drop(storage);
        Ok(())
    }
}

/// A shared factory is a factory: the suite's [`self_test`](crate::self_test()) plants each
/// of its defects in one `Arc` of the backend's factory.
#[async_trait]
impl<F: StoreFactory> StoreFactory for Arc<F> {
    type Storage = F::Storage;

    fn name(&self) -> String {
        (**self).name()
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    fn unavailable(&self) -> Option<String> {
        (**self).unavailable()
    }

    fn defaults(&self) -> Config {
        (**self).defaults()
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, Self::Storage), FactoryError> {
        (**self).fresh().await
    }

    async fn reopen(&self, storage: &Self::Storage) -> Result<Arc<dyn Store>, FactoryError> {
        (**self).reopen(storage).await
    }

    async fn open_with_faults(
        &self,
        storage: &Self::Storage,
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        (**self).open_with_faults(storage, plan).await
    }

    async fn list_storage(
        &self,
        storage: &Self::Storage,
    ) -> Result<Option<Vec<String>>, FactoryError> {
        (**self).list_storage(storage).await
    }

    async fn teardown(&self, storage: Self::Storage) -> Result<(), FactoryError> {
        (**self).teardown(storage).await
    }
}

/// A factory with its storage type erased, so the suite's internals are not generic.
#[async_trait]
pub(crate) trait DynFactory: Send + Sync {
    fn name(&self) -> String;
    fn capabilities(&self) -> Capabilities;
    fn unavailable(&self) -> Option<String>;
    async fn fresh(&self) -> Result<(Arc<dyn Store>, Box<dyn Any + Send + Sync>), FactoryError>;
    async fn reopen(
        &self,
        storage: &(dyn Any + Send + Sync),
    ) -> Result<Arc<dyn Store>, FactoryError>;
    async fn open_with_faults(
        &self,
        storage: &(dyn Any + Send + Sync),
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError>;
    async fn list_storage(
        &self,
        storage: &(dyn Any + Send + Sync),
    ) -> Result<Option<Vec<String>>, FactoryError>;
    async fn teardown(&self, storage: Box<dyn Any + Send + Sync>) -> Result<(), FactoryError>;
}

pub(crate) struct Erased<F>(pub F);

#[async_trait]
impl<F: StoreFactory> DynFactory for Erased<F> {
    fn name(&self) -> String {
        self.0.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    fn unavailable(&self) -> Option<String> {
        self.0.unavailable()
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, Box<dyn Any + Send + Sync>), FactoryError> {
        let (store, storage) = self.0.fresh().await?;
        Ok((store, Box::new(storage)))
    }

    async fn reopen(
        &self,
        storage: &(dyn Any + Send + Sync),
    ) -> Result<Arc<dyn Store>, FactoryError> {
        match storage.downcast_ref::<F::Storage>() {
            Some(storage) => self.0.reopen(storage).await,
            None => Err("internal error: storage of another factory".into()),
        }
    }

    async fn open_with_faults(
        &self,
        storage: &(dyn Any + Send + Sync),
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        match storage.downcast_ref::<F::Storage>() {
            Some(storage) => self.0.open_with_faults(storage, plan).await,
            None => Err("internal error: storage of another factory".into()),
        }
    }

    async fn list_storage(
        &self,
        storage: &(dyn Any + Send + Sync),
    ) -> Result<Option<Vec<String>>, FactoryError> {
        match storage.downcast_ref::<F::Storage>() {
            Some(storage) => self.0.list_storage(storage).await,
            None => Err("internal error: storage of another factory".into()),
        }
    }

    async fn teardown(&self, storage: Box<dyn Any + Send + Sync>) -> Result<(), FactoryError> {
        match storage.downcast::<F::Storage>() {
            Ok(storage) => self.0.teardown(*storage).await,
            Err(_) => Err("internal error: storage of another factory".into()),
        }
    }
}

/// Shared handle to an erased factory.
pub(crate) type SharedFactory = Arc<dyn DynFactory>;
