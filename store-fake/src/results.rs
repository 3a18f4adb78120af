//! Looking up and deleting results.

use std::path::PathBuf;

use store_api::{Id, StoreError};

use crate::fake_store::Inner;

impl Inner {
    /// [`Store::result`](store_api::Store::result): a map look-up, no filesystem access.
    pub(crate) fn result(&self, id: &Id) -> Option<PathBuf> {
        self.state()
            .results
            .contains_key(id)
            .then(|| self.layout.result(id))
    }

    /// [`Store::log_file`](store_api::Store::log_file): `log` in the build directory while
    /// `id` is being built, in the result directory otherwise.
    pub(crate) fn log_file(&self, id: &Id) -> PathBuf {
        let building = self.state().building.contains(id);
        let dir = if building {
            self.layout.building(id)
        } else {
            self.layout.result(id)
        };
        dir.join("log")
    }

    /// [`Store::delete`](store_api::Store::delete).
    ///
    /// Results are full copies, so nothing built from `id` depends on it. A build cloning
    /// `id` right now holds its read guard; the write guard taken here waits for that copy to
    /// finish (builds that clone later find no base).
    pub(crate) async fn delete(&self, id: &Id) -> Result<(), StoreError> {
        let Some(entry) = self.state().results.get(id).cloned() else {
            return Ok(());
        };
        let mut alive = entry.alive.write().await;
        if !*alive {
            return Ok(());
        }
        // No `.await` from here on: a dropped delete either did nothing or all of it.
        let master = self.layout.master(id);
        let master_trash = self.layout.scratch("trash");
        self.fs
            .rename(&master, &master_trash)
            .map_err(|e| StoreError::io("deleting (moving to trash)", &master, e))?;
        *alive = false;
        // The uncommit is done (see `open`); what follows only frees the names and space.
        self.dispose(&self.layout.result(id));
        self.state().results.remove(id);
        drop(alive);
        self.dispose(&master_trash);
        tracing::debug!(%id, "deleted result");
        Ok(())
    }
}
