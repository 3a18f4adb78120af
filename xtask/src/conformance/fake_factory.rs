//! The conformance factory for `--engine fake`: `store-fake` stores, each in its own temporary
//! directory.

use std::sync::Arc;

use async_trait::async_trait;
use conformance::{Capabilities, FactoryError, StoreFactory};
use store_api::Store;
use store_fake::{BusyPolicy, FakeStore};

/// Opens fake stores under fresh temporary directories.
#[derive(Clone, Copy, Debug)]
pub struct FakeFactory;

#[async_trait]
impl StoreFactory for FakeFactory {
    type Storage = tempfile::TempDir;

    fn name(&self) -> String {
        "fake".into()
    }

    #[allow(
        clippy::field_reassign_with_default,
        reason = "Capabilities is non_exhaustive: no struct literal outside its crate"
    )]
    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.can_reopen = true;
        caps.may_return_busy = true;
        caps
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, Self::Storage), FactoryError> {
        let dir = tempfile::Builder::new().prefix("zstore-fake-").tempdir()?;
        let store = FakeStore::builder()
            .root(dir.path())
            .busy_policy(BusyPolicy::ReportBusy)
            .open()?;
        Ok((Arc::new(store), dir))
    }

    async fn reopen(&self, dir: &Self::Storage) -> Result<Arc<dyn Store>, FactoryError> {
        Ok(Arc::new(
            FakeStore::builder()
                .root(dir.path())
                .busy_policy(BusyPolicy::ReportBusy)
                .open()?,
        ))
    }
}
