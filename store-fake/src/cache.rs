//! Caches: creating, leasing copies, publishing or discarding them, deleting.
//!
//! A cache is `caches/<escaped name>/` holding an `owner` file and `v<N>/`, its latest
//! released version. A lease copies `v<N>` to `cache-tmp/<n>`. Publishing renames the copy to
//! `v<N+1>` (the commit point) and then removes `v<N>`. Every operation on one cache runs
//! under that cache's async lock; the work itself is synchronous and never spans an
//! `.await`, so a dropped operation has done all of its work or none.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use store_api::{
    CacheCopy, CacheLease, CacheName, DeleteCacheError, ReleaseOutcome, StoreError, User,
};

use crate::defects::CrashDefect;
use crate::fake_store::Inner;
use crate::layout::{io_err, owner_file, version_dir};
use crate::options::BusyPolicy;
use crate::owner::Given;
use crate::state::CacheRecord;

impl Inner {
    fn cache_lock(&self, name: &CacheName) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(self.state().cache_locks.entry(name.clone()).or_default())
    }

    /// [`Store::cache`](store_api::Store::cache).
    pub(crate) async fn cache(
        self: &Arc<Self>,
        user: User,
        name: &CacheName,
    ) -> Result<CacheLease, StoreError> {
        let lock = self.cache_lock(name);
        let _serial = lock.lock().await;
        let existing = self.state().caches.get(name).cloned();
        let record = match existing {
            Some(record) => record,
            None => self.create_cache(user, name)?,
        };
        let copy = self.layout.scratch("cache-tmp");
        let latest = version_dir(&self.layout.cache(name), record.version);
        let leaky = self.defect == Some(CrashDefect::AcquireLeaksCountOnFailure);
        if leaky {
            record.live.fetch_add(1, Ordering::SeqCst);
        }
        if let Err(e) = self.fs.copy_tree(&latest, &copy) {
            self.dispose(&copy);
            return Err(e);
        }
        if !leaky {
            record.live.fetch_add(1, Ordering::SeqCst);
        }
        tracing::debug!(cache = %name, version = record.version, path = %copy.display(), "leased cache copy");
        let backend = FakeCacheCopy {
            inner: Arc::clone(self),
            name: name.clone(),
            path: copy.clone(),
            ticket: Some(Ticket {
                incarnation: record.incarnation,
                version: record.version,
                live: record.live,
            }),
        };
        Ok(CacheLease::new(name.clone(), copy, Box::new(backend)))
    }

    /// Makes cache `name` at version 0: an empty directory owned by `user` (or by the process
    /// if it may not `chown`), built in `tmp/` and renamed into place.
    fn create_cache(&self, user: User, name: &CacheName) -> Result<CacheRecord, StoreError> {
        let tmp = self.layout.scratch("tmp");
        let made = (|| {
            self.fs
                .create_dir(&tmp)
                .map_err(io_err("creating cache", &tmp))?;
            let owner_path = owner_file(&tmp);
            self.fs
                .write(&owner_path, &user.to_string())
                .map_err(io_err("writing", &owner_path))?;
            let v0 = version_dir(&tmp, 0);
            self.fs
                .create_dir(&v0)
                .map_err(io_err("creating cache", &v0))?;
            self.fs
                .set_mode(&v0, 0o755)
                .map_err(io_err("setting the mode of", &v0))?;
            if self
                .fs
                .give_to(&v0, user)
                .map_err(io_err("changing the owner of", &v0))?
                == Given::NotPermitted
            {
                tracing::debug!(cache = %name, %user, "not root: new cache stays owned by the process");
            }
            let dir = self.layout.cache(name);
            self.fs
                .rename(&tmp, &dir)
                .map_err(io_err("creating cache", &dir))
        })();
        if let Err(e) = made {
            self.dispose(&tmp);
            return Err(e);
        }
        let record = CacheRecord {
            owner: user,
            version: 0,
            incarnation: self.new_incarnation(),
            live: Arc::new(AtomicUsize::new(0)),
        };
        self.state().caches.insert(name.clone(), record.clone());
        tracing::debug!(cache = %name, %user, "created cache");
        Ok(record)
    }

    /// Publishes the copy at `path` as the next version if it was taken from the latest
    /// version of this very cache, else discards it.
    fn settle(
        &self,
        name: &CacheName,
        path: &Path,
        ticket: &Ticket,
    ) -> Result<ReleaseOutcome, StoreError> {
        let current = self
            .state()
            .caches
            .get(name)
            .map(|r| (r.incarnation, r.version));
        if current != Some((ticket.incarnation, ticket.version)) {
            self.dispose(path);
            tracing::debug!(cache = %name, version = ticket.version, "discarded stale cache copy");
            return Ok(ReleaseOutcome::Discarded);
        }
        if let Err(e) = store_api::check_top_dir(path) {
            // The holder swapped its copy for a link (or removed it): publish nothing.
            self.dispose(path);
            return Err(e);
        }
        let dir = self.layout.cache(name);
        let next = version_dir(&dir, ticket.version + 1);
        let old = version_dir(&dir, ticket.version);
        let old_first = self.defect == Some(CrashDefect::ReleaseRemovesOldVersionFirst);
        if old_first {
            // The deliberate bug: the old version is gone before the new one is in place.
            self.dispose(&old);
        }
        if let Err(e) = self.fs.rename(path, &next) {
            self.dispose(path);
            return Err(StoreError::io("publishing cache copy as", &next, e));
        }
        if let Some(record) = self.state().caches.get_mut(name) {
            record.version = ticket.version + 1;
        }
        if !old_first {
            self.dispose(&old);
        }
        tracing::debug!(cache = %name, version = ticket.version + 1, "published cache copy");
        Ok(ReleaseOutcome::Published)
    }

    /// [`Store::delete_cache`](store_api::Store::delete_cache).
    pub(crate) async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
        let busy = || DeleteCacheError::Busy { name: name.clone() };
        if self.delete_cache_busy.load(Ordering::SeqCst) {
            return Err(busy());
        }
        let lock = self.cache_lock(name);
        let _serial = lock.lock().await;
        if self.delete_cache_busy.load(Ordering::SeqCst) {
            return Err(busy());
        }
        let Some(record) = self.state().caches.get(name).cloned() else {
            return Ok(());
        };
        if self.busy_policy == BusyPolicy::ReportBusy && record.live.load(Ordering::SeqCst) > 0 {
            return Err(busy());
        }
        let dir = self.layout.cache(name);
        let trash = self.layout.scratch("trash");
        self.fs
            .rename(&dir, &trash)
            .map_err(|e| StoreError::io("deleting cache (moving to trash)", &dir, e))?;
        self.state().caches.remove(name);
        self.dispose(&trash);
        tracing::debug!(cache = %name, "deleted cache");
        Ok(())
    }
}

/// What a copy was taken from; consumed by release or discard, exactly once.
struct Ticket {
    incarnation: u64,
    version: u64,
    live: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    /// Whichever way the copy ends, it stops counting as out.
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fake's side of a [`CacheLease`].
struct FakeCacheCopy {
    inner: Arc<Inner>,
    name: CacheName,
    path: PathBuf,
    /// `None` once released or discarded.
    ticket: Option<Ticket>,
}

#[async_trait]
impl CacheCopy for FakeCacheCopy {
    async fn release(mut self: Box<Self>) -> Result<ReleaseOutcome, StoreError> {
        let lock = self.inner.cache_lock(&self.name);
        // If this future is dropped while waiting, `self` is dropped: the copy is discarded.
        let _serial = lock.lock().await;
        let Some(ticket) = self.ticket.take() else {
            return Ok(ReleaseOutcome::Discarded);
        };
        self.inner.settle(&self.name, &self.path, &ticket)
    }

    fn discard(self: Box<Self>) {
        // The work is in `Drop`, which also covers a release future dropped mid-way.
    }
}

impl Drop for FakeCacheCopy {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.dispose(&self.path);
            drop(ticket);
            tracing::debug!(cache = %self.name, "dropped cache copy without release; discarded");
        }
    }
}
