//! The fake backend under test, as a `StoreFactory`, with a leak check on teardown.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use conformance::broken::{BrokenFactory, Defect};
use conformance::{Capabilities, FactoryError, StoreFactory};
use store_api::Store;
use store_fake::BusyPolicy;
pub use store_fake::testing::{FakeFactory, FakeStorage};

/// The fake broken by `defect` (letting delete win where the defect needs it).
pub fn broken(defect: Defect) -> BrokenFactory<FakeFactory> {
    let policy = if defect == Defect::NeverBusyWhileClaimingItMay {
        BusyPolicy::DeleteWins
    } else {
        BusyPolicy::ReportBusy
    };
    BrokenFactory::new(FakeFactory::new(policy), defect)
}

/// The fake declared without the reopen capability: checks that need it must skip, the
/// others must still pass.
pub struct NoReopen(pub FakeFactory);

#[async_trait::async_trait]
impl StoreFactory for NoReopen {
    type Storage = FakeStorage;

    fn name(&self) -> String {
        format!("{}-no-reopen", self.0.name())
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.capabilities();
        caps.can_reopen = false;
        caps.fault_injection = false;
        caps
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, FakeStorage), FactoryError> {
        self.0.fresh().await
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        self.0.teardown(storage).await
    }
}

/// The fake, but every build holds one lock: builds never run at once.
pub struct Serial(pub FakeFactory);

#[derive(Debug)]
struct SerialStore {
    inner: Arc<dyn Store>,
    lock: tokio::sync::Mutex<()>,
}

#[async_trait::async_trait]
impl Store for SerialStore {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn state_dir(&self) -> &Path {
        self.inner.state_dir()
    }
    async fn build_dyn(
        &self,
        base: Option<&store_api::Id>,
        id: &store_api::Id,
        f: store_api::BuildFn<'_>,
    ) -> Result<(), store_api::BuildError<store_api::BuildFnError>> {
        let _one_at_a_time = self.lock.lock().await;
        self.inner.build_dyn(base, id, f).await
    }
    async fn result(&self, id: &store_api::Id) -> Result<Option<PathBuf>, store_api::StoreError> {
        self.inner.result(id).await
    }
    async fn log_file(&self, id: &store_api::Id) -> Result<PathBuf, store_api::StoreError> {
        self.inner.log_file(id).await
    }
    async fn delete(&self, id: &store_api::Id) -> Result<(), store_api::StoreError> {
        self.inner.delete(id).await
    }
    async fn cache(
        &self,
        user: store_api::User,
        name: &store_api::CacheName,
    ) -> Result<store_api::CacheLease, store_api::StoreError> {
        self.inner.cache(user, name).await
    }
    async fn delete_cache(
        &self,
        name: &store_api::CacheName,
    ) -> Result<(), store_api::DeleteCacheError> {
        self.inner.delete_cache(name).await
    }
    async fn complete_deletes(&self) -> Result<(), store_api::StoreError> {
        self.inner.complete_deletes().await
    }
    async fn df(&self) -> Result<f64, store_api::StoreError> {
        self.inner.df().await
    }
}

#[async_trait::async_trait]
impl StoreFactory for Serial {
    type Storage = FakeStorage;

    fn name(&self) -> String {
        format!("{}-serial", self.0.name())
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, FakeStorage), FactoryError> {
        let (inner, storage) = self.0.fresh().await?;
        let store = SerialStore {
            inner,
            lock: tokio::sync::Mutex::new(()),
        };
        Ok((Arc::new(store), storage))
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        self.0.teardown(storage).await
    }
}
