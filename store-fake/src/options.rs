//! [`FakeStoreBuilder`] and [`BusyPolicy`]: how a [`FakeStore`] is opened.

use std::path::PathBuf;

use store_api::StoreError;

use crate::FakeStore;

/// What [`Store::delete_cache`](store_api::Store::delete_cache) does while copies of the cache
/// are out. The contract allows both; pick the one your backend of choice has, or test your
/// builder against both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BusyPolicy {
    /// Return [`DeleteCacheError::Busy`](store_api::DeleteCacheError::Busy) and change
    /// nothing while any copy of the cache is out (like OBuilder's ZFS store).
    #[default]
    ReportBusy,
    /// Delete the cache anyway; every copy that was out at that moment is discarded when it is
    /// released ([`ReleaseOutcome::Discarded`](store_api::ReleaseOutcome::Discarded)), like
    /// OBuilder's btrfs, rsync and XFS stores.
    DeleteWins,
}

/// Options for opening a [`FakeStore`]; made by [`FakeStore::builder`].
///
/// ```
/// use store_fake::{BusyPolicy, FakeStore};
///
/// let store = FakeStore::builder().busy_policy(BusyPolicy::DeleteWins).open()?;
/// # Ok::<(), store_api::StoreError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct FakeStoreBuilder {
    root: Option<PathBuf>,
    busy_policy: BusyPolicy,
}

impl FakeStoreBuilder {
    /// Keep the store under `root` (created if missing), so that it persists after the last
    /// handle is dropped and can be opened again, as with [`FakeStore::open`]. Without this,
    /// the store lives in a fresh temporary directory, as with [`FakeStore::new`].
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// What `delete_cache` does while copies are out; [`BusyPolicy::ReportBusy`] by default.
    pub fn busy_policy(mut self, policy: BusyPolicy) -> Self {
        self.busy_policy = policy;
        self
    }

    /// Opens the store.
    ///
    /// # Errors
    /// A [`StoreError`] if the root cannot be created or read, is already open (in this or
    /// another process), or holds something the fake did not put there.
    pub fn open(self) -> Result<FakeStore, StoreError> {
        FakeStore::open_with(self.root, self.busy_policy)
    }
}
