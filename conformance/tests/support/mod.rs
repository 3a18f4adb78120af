//! The fake backend under test, as a `StoreFactory`, with a leak check on teardown.

#![allow(dead_code)]

pub mod broken;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use conformance::{Capabilities, FactoryError, FaultPlan, StoreFactory, Verdict};
use store_api::Store;
use store_fake::{BusyPolicy, CrashDefect, FakeStore, Step, StepHook};

/// Opens `FakeStore`s with one busy policy, each under its own temporary directory; with a
/// crash defect, the deliberately broken variant.
pub struct FakeFactory {
    pub policy: BusyPolicy,
    pub defect: Option<CrashDefect>,
}

impl FakeFactory {
    pub fn new(policy: BusyPolicy) -> Self {
        Self {
            policy,
            defect: None,
        }
    }

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
pub struct FakeStorage {
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
        let mut last = storage.last.lock().expect("not poisoned");
        // The fake allows one open store per root: drop the previous handle first.
        drop(last.take());
        let mut builder = FakeStore::builder()
            .root(storage.dir.path())
            .busy_policy(self.policy);
        if let Some(hook) = hook {
            builder = builder.step_hook(hook);
        }
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
        match self.defect {
            Some(d) => format!("fake-{:?}-with-{d:?}", self.policy),
            None => format!("fake-{:?}", self.policy),
        }
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
        let root = storage.dir.path();
        let left: Vec<String> = ["building", "cache-tmp", "tmp", "trash"]
            .iter()
            .filter_map(|d| {
                listing(&root.join(d))
                    .ok()
                    .filter(|l| !l.is_empty())
                    .map(|l| format!("{d}/: {l:?}"))
            })
            .collect();
        if !left.is_empty() {
            return Err(format!("uncommitted leftovers: {}", left.join("; ")).into());
        }
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
        caps.fault_injection = false;
        caps
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, FakeStorage), FactoryError> {
        self.0.fresh().await
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        self.0.teardown(storage).await
    }
}

/// The fake, but every build holds one lock: builds never run at once.
pub struct Serial(pub FakeFactory);

struct SerialStore {
    inner: Arc<dyn Store>,
    lock: tokio::sync::Mutex<()>,
}

#[async_trait::async_trait]
impl Store for SerialStore {
    fn root(&self) -> &Path {
        self.inner.root()
    }
    fn state_dir(&self) -> &Path {
        self.inner.state_dir()
    }
    async fn build_dyn(
        &self,
        base: Option<&store_api::Id>,
        id: &store_api::Id,
        f: store_api::BuildFn<'_>,
    ) -> Result<(), store_api::BuildError<store_api::BuildFnError>> {
        let _one_at_a_time = self.lock.lock().await;
        self.inner.build_dyn(base, id, f).await
    }
    async fn result(&self, id: &store_api::Id) -> Result<Option<PathBuf>, store_api::StoreError> {
        self.inner.result(id).await
    }
    async fn log_file(&self, id: &store_api::Id) -> Result<PathBuf, store_api::StoreError> {
        self.inner.log_file(id).await
    }
    async fn delete(&self, id: &store_api::Id) -> Result<(), store_api::StoreError> {
        self.inner.delete(id).await
    }
    async fn cache(
        &self,
        user: store_api::User,
        name: &store_api::CacheName,
    ) -> Result<store_api::CacheLease, store_api::StoreError> {
        self.inner.cache(user, name).await
    }
    async fn delete_cache(
        &self,
        name: &store_api::CacheName,
    ) -> Result<(), store_api::DeleteCacheError> {
        self.inner.delete_cache(name).await
    }
    async fn complete_deletes(&self) -> Result<(), store_api::StoreError> {
        self.inner.complete_deletes().await
    }
    async fn df(&self) -> Result<f64, store_api::StoreError> {
        self.inner.df().await
    }
}

#[async_trait::async_trait]
impl StoreFactory for Serial {
    type Storage = FakeStorage;

    fn name(&self) -> String {
        format!("{}-serial", self.0.name())
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, FakeStorage), FactoryError> {
        let (inner, storage) = self.0.fresh().await?;
        let store = SerialStore {
            inner,
            lock: tokio::sync::Mutex::new(()),
        };
        Ok((Arc::new(store), storage))
    }

    async fn teardown(&self, storage: FakeStorage) -> Result<(), FactoryError> {
        self.0.teardown(storage).await
    }
}
