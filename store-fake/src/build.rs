//! Building: reserve the id, clone the base, run the build function, commit by rename.
//!
//! The build directory is `<root>/building/<id>`, so [`log_file`](store_api::Store::log_file)
//! can name it while the build runs. A commit
//! 1. copies the finished build directory to `tmp/<n>` (the future private master),
//! 2. renames the build directory to `result/<id>` (what `result` returns),
//! 3. renames the copy to `master/<id>`: the commit point (see [`crate::open`]).
//!
//! Every other way out (the function's error or panic, an injected fault, a store error,
//! the future being dropped) goes through [`BuildGuard`]'s `Drop`, which removes the build
//! directory synchronously and frees the id, so nothing is recorded and the same id can be
//! built again from scratch.

use std::path::{Path, PathBuf};

use store_api::{BuildError, BuildFn, BuildFnError, BuildFnOutcome, Id, StoreError, run_build_fn};

use crate::fake_store::Inner;
use crate::layout::io_err;
use crate::state::ResultEntry;

impl Inner {
    /// [`Store::build_dyn`](store_api::Store::build_dyn).
    pub(crate) async fn build(
        &self,
        base: Option<&Id>,
        id: &Id,
        f: BuildFn<'_>,
    ) -> Result<(), BuildError<BuildFnError>> {
        let guard = BuildGuard::reserve(self, id)?;
        match base {
            Some(base) => self.clone_base(base, &guard.dir).await?,
            None => self
                .fs
                .create_dir(&guard.dir)
                .map_err(io_err("creating build directory", &guard.dir))?,
        }
        tracing::debug!(%id, base = ?base.map(Id::as_str), "running build function");
        match run_build_fn(f, guard.dir.clone()).await {
            BuildFnOutcome::Succeeded => Ok(guard.commit()?),
            BuildFnOutcome::Failed(e) => {
                drop(guard);
                Err(BuildError::Failed(e))
            }
            BuildFnOutcome::Panicked(payload) => {
                drop(guard);
                std::panic::resume_unwind(payload)
            }
        }
    }

    /// Copies the master of `base` to `dir`, holding the base's read guard so that a
    /// concurrent `delete(base)` waits until the copy is complete.
    async fn clone_base(&self, base: &Id, dir: &Path) -> Result<(), StoreError> {
        let missing = || StoreError::MissingBase { base: base.clone() };
        let entry = self
            .state()
            .results
            .get(base)
            .cloned()
            .ok_or_else(missing)?;
        let alive = entry.alive.read().await;
        if !*alive {
            return Err(missing());
        }
        self.fs.copy_tree(&self.layout.master(base), dir)
    }
}

/// The reservation of an id being built. Until [`commit`](BuildGuard::commit) succeeds, its
/// `Drop` removes the build directory and frees the id.
struct BuildGuard<'a> {
    inner: &'a Inner,
    id: Id,
    dir: PathBuf,
    armed: bool,
}

impl<'a> BuildGuard<'a> {
    fn reserve(inner: &'a Inner, id: &Id) -> Result<Self, StoreError> {
        {
            let mut state = inner.state();
            if state.results.contains_key(id) {
                return Err(StoreError::AlreadyBuilt { id: id.clone() });
            }
            if !state.building.insert(id.clone()) {
                return Err(StoreError::BuildInProgress { id: id.clone() });
            }
        }
        let guard = Self {
            inner,
            id: id.clone(),
            dir: inner.layout.building(id),
            armed: true,
        };
        // Normally absent; present only if an earlier cleanup failed. A new build must not
        // see anything of an earlier attempt.
        inner.dispose(&guard.dir);
        Ok(guard)
    }

    fn commit(mut self) -> Result<(), StoreError> {
        if self.inner.take_build_fault() {
            // Exactly what a failing disk would give, so that a builder's handling of it is
            // what is tested.
            return Err(StoreError::io(
                "committing the build",
                &self.dir,
                std::io::Error::other("failure injected by FakeStore::fail_next_builds"),
            ));
        }
        // The build function may have swapped its directory for a link out of the store.
        store_api::check_top_dir(&self.dir)?;
        let layout = &self.inner.layout;
        let master_tmp = layout.scratch("tmp");
        if let Err(e) = self.inner.fs.copy_tree(&self.dir, &master_tmp) {
            self.inner.dispose(&master_tmp);
            return Err(e);
        }
        let exposed = layout.result(&self.id);
        // Normally absent; left only by a delete that could not move it away.
        self.inner.dispose(&exposed);
        if let Err(e) = self.inner.fs.rename(&self.dir, &exposed) {
            self.inner.dispose(&master_tmp);
            return Err(StoreError::io(
                "committing the build (renaming it to)",
                &exposed,
                e,
            ));
        }
        let master = layout.master(&self.id);
        if let Err(e) = self.inner.fs.rename(&master_tmp, &master) {
            self.inner.dispose(&master_tmp);
            self.inner.dispose(&exposed);
            return Err(StoreError::io(
                "committing the build (renaming to)",
                &master,
                e,
            ));
        }
        {
            let mut state = self.inner.state();
            state.results.insert(self.id.clone(), ResultEntry::new());
            state.building.remove(&self.id);
        }
        self.armed = false;
        tracing::debug!(id = %self.id, "committed build");
        Ok(())
    }
}

impl Drop for BuildGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.dispose(&self.dir);
            self.inner.state().building.remove(&self.id);
            tracing::debug!(id = %self.id, "build ended without a result; cleaned up");
        }
    }
}
