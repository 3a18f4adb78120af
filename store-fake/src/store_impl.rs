//! `impl Store for FakeStore`: each method delegates to the module that implements it.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use store_api::{
    BuildError, BuildFn, BuildFnError, CacheLease, CacheName, DeleteCacheError, Id, Store,
    StoreError, User,
};

use crate::FakeStore;

#[async_trait]
impl Store for FakeStore {
    fn root(&self) -> &Path {
        self.inner.layout.root()
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
        self.inner.build(base, id, f).await
    }

    async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError> {
        Ok(self.inner.result(id))
    }

    async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError> {
        Ok(self.inner.log_file(id))
    }

    async fn delete(&self, id: &Id) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }

    async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError> {
        self.inner.cache(user, name).await
    }

    async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
        self.inner.delete_cache(name).await
    }

    /// Deletes are synchronous in the fake, so this only retries removals that failed.
    async fn complete_deletes(&self) -> Result<(), StoreError> {
        self.inner.retry_removals()
    }

    async fn df(&self) -> Result<f64, StoreError> {
        crate::df::percent_free(self.inner.layout.root())
    }
}
