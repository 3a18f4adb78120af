//! The fake backend under test, as a `StoreFactory`, with a leak check on teardown.

#![allow(dead_code)]

pub mod broken;

use std::sync::{Arc, Mutex};

use conformance::{Capabilities, FactoryError, StoreFactory};
use store_api::Store;
use store_fake::{BusyPolicy, FakeStore};

/// Opens `FakeStore`s with one busy policy, each under its own temporary directory.
pub struct FakeFactory {
    pub policy: BusyPolicy,
}

impl FakeFactory {
    pub fn new(policy: BusyPolicy) -> Self {
        Self { policy }
    }
}

/// A temporary root, and the last store opened on it (kept for the leak check).
pub struct FakeStorage {
    pub dir: tempfile::TempDir,
    last: Mutex<Option<FakeStore>>,
}

impl FakeFactory {
    fn open(&self, storage: &FakeStorage) -> Result<Arc<dyn Store>, FactoryError> {
        let mut last = storage.last.lock().expect("not poisoned");
        // The fake allows one open store per root: drop the previous handle first.
        drop(last.take());
        let store = FakeStore::builder()
            .root(storage.dir.path())
            .busy_policy(self.policy)
            .open()?;
        *last = Some(store.clone());
        Ok(Arc::new(store))
    }
}

#[async_trait::async_trait]
impl StoreFactory for FakeFactory {
    type Storage = FakeStorage;

    fn name(&self) -> String {
        format!("fake-{:?}", self.policy)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_reopen: true,
            may_return_busy: self.policy == BusyPolicy::ReportBusy,
            ..Capabilities::default()
        }
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, FakeStorage), FactoryError> {
        let storage = FakeStorage {
            dir: tempfile::tempdir()?,
            last: Mutex::new(None),
        };
        let store = self.open(&storage)?;
        Ok((store, storage))
    }

    async fn reopen(&self, storage: &FakeStorage) -> Result<Arc<dyn Store>, FactoryError> {
        self.open(storage)
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        let last = storage.last.lock().expect("not poisoned").take();
        if let Some(store) = last {
            let live: Vec<_> = store
                .caches()
                .into_iter()
                .filter(|c| c.live_copies > 0)
                .map(|c| format!("{:?}: {} copies", c.name.as_str(), c.live_copies))
                .collect();
            if !live.is_empty() {
                return Err(format!(
                    "copies still counted as out after every lease was dropped: {live:?}"
                )
                .into());
            }
            if store.builds_in_progress() > 0 {
                return Err(format!(
                    "{} builds still in progress after the case",
                    store.builds_in_progress()
                )
                .into());
            }
        }
        Ok(())
    }
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
        caps
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, FakeStorage), FactoryError> {
        self.0.fresh().await
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        self.0.teardown(storage).await
    }
}
