//! Test helpers (the `testing` feature; never in production): [`FakeFactory`], the
//! conformance suite's factory for this backend, which `store-fake`'s own tests, the suite's
//! tests and `cargo xtask conformance --engine fake` share; [`FakeSpec`], the crash test's way
//! to the same storage from another process; with the `bench` feature, `bench`, the
//! benchmark's fake part.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use conformance::{Capabilities, FactoryError, FaultPlan, StoreFactory, Verdict};
use store_api::Store;

#[cfg(feature = "test-defects")]
use crate::CrashDefect;
use crate::{BusyPolicy, FakeStore, Step, StepHook};

#[cfg(feature = "bench")]
pub mod bench;

/// Opens [`FakeStore`]s for the conformance suite, each under its own temporary directory,
/// with one busy policy; with the fault plan as the store's [`StepHook`] for the fault sweep,
/// and a leak check on teardown (no scratch directory left, no copy or build still counted).
#[derive(Clone, Copy, Debug)]
pub struct FakeFactory {
    /// What `delete_cache` does while a copy is out.
    pub policy: BusyPolicy,
    /// A deliberately broken variant (only for testing the suite's crash checks).
    #[cfg(feature = "test-defects")]
    pub defect: Option<CrashDefect>,
}

impl FakeFactory {
    /// Fake stores with `policy`.
    pub fn new(policy: BusyPolicy) -> Self {
        Self {
            policy,
            #[cfg(feature = "test-defects")]
            defect: None,
        }
    }

    /// Fake stores broken by `defect` (reporting `Busy`).
    #[cfg(feature = "test-defects")]
    pub fn with_defect(defect: CrashDefect) -> Self {
        Self {
            policy: BusyPolicy::ReportBusy,
            defect: Some(defect),
        }
    }
}

/// The conformance fault plan as the fake's step hook.
struct PlanHook {
    plan: FaultPlan,
    root: PathBuf,
}

impl StepHook for PlanHook {
    fn before_step(&self, step: &Step<'_>) -> std::io::Result<()> {
        let root = self.root.to_string_lossy().into_owned() + "/";
        let guard = self.plan.step(step.to_string().replace(&root, ""));
        match guard.verdict() {
            Verdict::Proceed => Ok(()),
            Verdict::Fail => Err(std::io::Error::other("injected failure")),
            Verdict::Refuse => Err(std::io::Error::other(
                "refused: the process stopped (injected crash)",
            )),
        }
    }
}

/// What the scratch directories under a store's `root` hold, one line per directory that is
/// not empty: they hold only uncommitted work, so they are empty whenever no operation runs.
fn scratch_leftovers(root: &Path) -> Vec<String> {
    ["building", "cache-tmp", "tmp", "trash"]
        .iter()
        .filter_map(|d| {
            listing(&root.join(d))
                .ok()
                .filter(|l| !l.is_empty())
                .map(|l| format!("{d}/: {l:?}"))
        })
        .collect()
}

/// Every path under `root`, relative, sorted.
fn listing(root: &Path) -> Result<Vec<String>, FactoryError> {
    let mut names = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry?;
        let rel = entry.path().strip_prefix(root)?;
        names.push(rel.to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// A temporary root, and the last store opened on it (kept for the leak check).
#[derive(Debug)]
pub struct FakeStorage {
    /// The store's root.
    pub dir: tempfile::TempDir,
    last: Mutex<Option<FakeStore>>,
}

impl FakeFactory {
    fn open(&self, storage: &FakeStorage) -> Result<Arc<dyn Store>, FactoryError> {
        self.open_hooked(storage, None)
    }

    fn open_hooked(
        &self,
        storage: &FakeStorage,
        hook: Option<Arc<dyn StepHook>>,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let mut last = storage.last.lock().unwrap_or_else(PoisonError::into_inner);
        // The fake allows one open store per root: drop the previous handle first.
        drop(last.take());
        let mut builder = FakeStore::builder()
            .root(storage.dir.path())
            .busy_policy(self.policy);
        if let Some(hook) = hook {
            builder = builder.step_hook(hook);
        }
        #[cfg(feature = "test-defects")]
        if let Some(defect) = self.defect {
            builder = builder.crash_defect(defect);
        }
        let store = builder.open()?;
        *last = Some(store.clone());
        Ok(Arc::new(store))
    }
}

#[async_trait::async_trait]
impl StoreFactory for FakeFactory {
    type Storage = FakeStorage;

    fn name(&self) -> String {
        #[cfg(feature = "test-defects")]
        if let Some(d) = self.defect {
            return format!("fake-{:?}-with-{d:?}", self.policy);
        }
        format!("fake-{:?}", self.policy)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_reopen: true,
            may_return_busy: self.policy == BusyPolicy::ReportBusy,
            fault_injection: true,
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

    async fn open_with_faults(
        &self,
        storage: &FakeStorage,
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let hook = PlanHook {
            plan,
            root: storage.dir.path().canonicalize()?,
        };
        self.open_hooked(storage, Some(Arc::new(hook)))
    }

    async fn list_storage(
        &self,
        storage: &FakeStorage,
    ) -> Result<Option<Vec<String>>, FactoryError> {
        listing(storage.dir.path()).map(Some)
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        // Scratch directories hold only uncommitted work: empty whenever no operation runs.
        let left = scratch_leftovers(storage.dir.path());
        if !left.is_empty() {
            return Err(format!("uncommitted leftovers: {}", left.join("; ")).into());
        }
        let last = storage
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(store) = last {
            let live: Vec<_> = store
                .cache_info()
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

/// The [crash test](conformance::crash)'s way to the fake's storage: the root directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSpec {
    root: PathBuf,
}

impl FakeSpec {
    /// The store under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

/// Closes the factory's own handle on the storage: the fake allows one open store per root,
/// and from here on the crash test's processes open it.
impl From<&FakeStorage> for FakeSpec {
    fn from(storage: &FakeStorage) -> Self {
        drop(
            storage
                .last
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        Self::new(storage.dir.path())
    }
}

#[async_trait::async_trait]
impl conformance::crash::StoreSpec for FakeSpec {
    type Store = FakeStore;

    fn encode(&self) -> String {
        self.root.display().to_string()
    }

    fn decode(line: &str) -> Result<Self, String> {
        Ok(Self::new(line))
    }

    async fn open(&self) -> Result<FakeStore, String> {
        FakeStore::open(&self.root)
            .map_err(|e| format!("opening FakeStore at {}: {e}", self.root.display()))
    }

    async fn leftovers(&self, _store: &FakeStore) -> Vec<String> {
        scratch_leftovers(&self.root)
            .into_iter()
            .map(|l| format!("left in the fake's {l}"))
            .collect()
    }
}
