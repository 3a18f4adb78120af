//! [`CacheLease`]: a writable copy of a cache, handed out by [`Store::cache`](crate::Store::cache).

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::{CacheName, StoreError};

/// What [`CacheLease::release`] did with the copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ReleaseOutcome {
    /// The copy became the latest version of the cache.
    Published,
    /// The cache had been updated (or deleted) since the copy was taken, so the copy was
    /// thrown away and the cache is unchanged.
    Discarded,
}

/// The backend side of a [`CacheLease`]: what to do with the copy when the holder is done.
///
/// Backends implement this; builders never see it.
#[async_trait]
pub trait CacheCopy: Send + Sync {
    /// Publish the copy if it is still of the latest generation, else discard it.
    ///
    /// If the returned future is dropped before it completes, the copy must end up either
    /// published or discarded as a whole, never half-published, and the cache must stay at a
    /// released version.
    async fn release(self: Box<Self>) -> Result<ReleaseOutcome, StoreError>;

    /// Discard the copy without publishing it: the holder dropped its lease.
    ///
    /// Called from `Drop`, so it must not block for long and must not panic. From the moment it
    /// returns the copy no longer counts as out (for `Busy`); reclaiming its storage may happen
    /// later (in a background task, or at the next open).
    fn discard(self: Box<Self>);
}

/// A writable copy of the latest version of a cache.
///
/// Write to [`path`](CacheLease::path), then call [`release`](CacheLease::release) to offer the
/// copy as the cache's new latest version. The first copy of a generation to be released wins;
/// any other copy taken from the same version is discarded on release. Dropping the lease without
/// releasing it discards the copy (this is what happens on cancellation).
///
/// After release or drop the path must not be used: it may no longer exist, and anything
/// written there is never published.
#[must_use = "a cache copy is discarded when dropped; call `release` to publish it"]
pub struct CacheLease {
    name: CacheName,
    path: PathBuf,
    copy: Option<Box<dyn CacheCopy>>,
}

impl CacheLease {
    /// Wraps a backend's copy of cache `name` found at `path`.
    pub fn new(name: CacheName, path: PathBuf, copy: Box<dyn CacheCopy>) -> Self {
        Self {
            name,
            path,
            copy: Some(copy),
        }
    }

    /// The cache this is a copy of.
    pub fn name(&self) -> &CacheName {
        &self.name
    }

    /// The writable directory holding the copy.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Release the copy: it becomes the cache's latest version unless the cache was updated or
    /// deleted since the copy was taken, in which case it is discarded.
    ///
    /// # Errors
    /// A [`StoreError`] if the backend failed. The cache is then still at a released version
    /// (the old one or this copy), never empty or mixed.
    pub async fn release(mut self) -> Result<ReleaseOutcome, StoreError> {
        match self.copy.take() {
            Some(copy) => copy.release().await,
            // Unreachable: `copy` is only taken here and in `drop`, both of which consume.
            None => Ok(ReleaseOutcome::Discarded),
        }
    }
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            copy.discard();
        }
    }
}

impl fmt::Debug for CacheLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLease")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
