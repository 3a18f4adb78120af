//! [`FakeStoreBuilder`] and [`BusyPolicy`]: how a [`FakeStore`] is opened.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use store_api::StoreError;

use crate::FakeStore;
use crate::defects::CrashDefect;
use crate::steps::StepHook;

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
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct FakeStoreBuilder {
    root: Option<PathBuf>,
    busy_policy: BusyPolicy,
    step_hook: Option<Arc<dyn StepHook>>,
    defect: Option<CrashDefect>,
}

impl fmt::Debug for FakeStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeStoreBuilder")
            .field("root", &self.root)
            .field("busy_policy", &self.busy_policy)
            .field("step_hook", &self.step_hook.as_ref().map(|_| "StepHook"))
            .field("defect", &self.defect)
            .finish()
    }
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

    /// Calls `hook` before every change the store makes on disk, opening included (see
    /// [`StepHook`]): a fault-injection point for crash-safety tests.
    pub fn step_hook(mut self, hook: Arc<dyn StepHook>) -> Self {
        self.step_hook = Some(hook);
        self
    }

    /// Opens the store with a deliberate crash-safety bug, to check that a test catches it.
    /// Only with the `test-defects` feature; never use it for anything else.
    #[cfg(feature = "test-defects")]
    pub fn crash_defect(mut self, defect: CrashDefect) -> Self {
        self.defect = Some(defect);
        self
    }

    /// Opens the store.
    ///
    /// # Errors
    /// A [`StoreError`] if the root cannot be created or read, is already open (in this or
    /// another process: [`StoreError::Locked`], naming the holder), or holds something the fake did not put there.
    pub fn open(self) -> Result<FakeStore, StoreError> {
        FakeStore::open_with(self.root, self.busy_policy, self.step_hook, self.defect)
    }
}
