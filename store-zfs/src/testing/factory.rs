//! [`ZfsFactory`]: the conformance suite's factory for this backend. Every case gets a child
//! dataset of its own under one pool, opened with [`ZfsStore`]; teardown checks the layout
//! ([`ZfsStore::check`]) and destroys the child.
//!
//! Every command, the factory's own and the store's, goes through one injectable [`Runner`]:
//! the real `zfs` (on a real pool) or [`FakeZfs`](super::FakeZfs). Fault injection for the
//! suite's `fault_sweep`: [`StoreFactory::open_with_faults`] wraps that runner in a
//! [`PlanRunner`], which asks the suite's [`FaultPlan`] before every command (run it, fail it,
//! or refuse it as if the process had died); the suite then reopens the case with the plain
//! runner to see what the fault left.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use conformance::{Capabilities, Config, FactoryError, FaultPlan, StoreFactory, Verdict};
use store_api::Store;

use crate::daemon_lock::DaemonSerialized;
use crate::engine::Engine;
use crate::layout::is_within;
use crate::runner::{Cmd, CmdOutput, RunError, Runner, SystemRunner};
use crate::store::{ZfsOptions, ZfsStore};
use crate::zfs_cli::Zfs;
use crate::{Backoff, check_layout, is_mount_in_use, is_transient_busy, mounts};

/// How long teardown waits for a store's background work (cleanups of cancelled builds and
/// dropped copies) before calling it hung.
const IDLE_LIMIT: Duration = Duration::from_secs(120);

/// Opens [`ZfsStore`]s for the conformance suite, one child dataset of a pool per case.
/// Clones share the runner, the case counter and whatever the factory keeps alive.
#[derive(Clone)]
pub struct ZfsFactory {
    pool: String,
    name: String,
    runner: Arc<dyn Runner>,
    next: Arc<AtomicU64>,
    defaults: Config,
    unavailable: Option<String>,
    _keep: Option<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for ZfsFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZfsFactory")
            .field("pool", &self.pool)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One case's storage: its dataset, and the last store opened on it (kept so teardown can
/// wait for its background work and check it).
#[derive(Debug)]
pub struct ZfsCase {
    dataset: String,
    last: Mutex<Option<ZfsStore>>,
}

impl ZfsCase {
    /// The case's dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub(super) fn take_last(&self) -> Option<ZfsStore> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set_last(&self, store: ZfsStore) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(store);
    }
}

impl ZfsFactory {
    /// A factory for cases under the existing pool (or dataset) `pool`, served by `engine`,
    /// with the real `zfs` command. On zfs-fuse the factory's own commands take the
    /// machine-wide daemon lock, as the stores' do.
    pub fn new(pool: impl Into<String>, engine: &Engine) -> Self {
        let runner: Arc<dyn Runner> = match engine {
            Engine::ZfsFuse => Arc::new(DaemonSerialized::new(Arc::new(SystemRunner))),
            _ => Arc::new(SystemRunner),
        };
        Self::with_runner(pool, engine, runner)
    }

    /// As [`new`](Self::new), with every command run through `runner` (for example a
    /// [`FakeZfs`](super::FakeZfs) holding `pool`).
    pub fn with_runner(pool: impl Into<String>, engine: &Engine, runner: Arc<dyn Runner>) -> Self {
        Self {
            pool: pool.into(),
            name: match engine {
                Engine::ZfsFuse => "zfs-fuse".into(),
                _ => "openzfs".into(),
            },
            runner,
            next: Arc::default(),
            defaults: Config::default(),
            unavailable: None,
            _keep: None,
        }
    }

    /// A factory on a real pool for `cargo test`: the pool named by `ZSTORE_TEST_POOL` if
    /// set (it must exist; each case is a child dataset, destroyed after the case), else a
    /// new [`TestPool`](super::TestPool) that lives as long as the factory. Without ZFS it
    /// panics if `ZSTORE_REQUIRE_ZFS=1`, and otherwise returns a factory whose every check
    /// is reported skipped ([`StoreFactory::unavailable`]).
    ///
    /// Blocking (it may create a pool): call it from a test's own thread, not from inside an
    /// async runtime's worker.
    pub fn on_test_pool(test: &str) -> Self {
        if !super::require_zfs(test) {
            return Self {
                unavailable: Some("ZFS is not available on this machine".into()),
                ..Self::with_runner("-", &Engine::ZfsFuse, Arc::new(SystemRunner))
            };
        }
        let engine = super::engine();
        match std::env::var(super::POOL_ENV) {
            Ok(pool) if !pool.is_empty() => Self::new(pool, &engine),
            _ => match super::TestPool::create("zt-c") {
                Ok(pool) => Self::new(pool.name(), &engine).keeping(pool),
                Err(e) => panic!("{test}: cannot create a test pool: {e}"),
            },
        }
    }

    /// Keeps `owner` (a temporary directory, a [`TestPool`](super::TestPool)) alive as long
    /// as the factory or any clone of it.
    pub fn keeping(mut self, owner: impl Any + Send + Sync) -> Self {
        self._keep = Some(Arc::new(owner));
        self
    }

    /// The runner every command of the factory and its stores goes through.
    pub fn runner(&self) -> &Arc<dyn Runner> {
        &self.runner
    }

    /// Names the backend `name` in reports (default: `zfs-fuse` or `openzfs`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The knobs the generated tests start from ([`StoreFactory::defaults`]).
    pub fn with_defaults(mut self, defaults: Config) -> Self {
        self.defaults = defaults;
        self
    }

    /// Opens a store on `case` through `runner` (the factory's own, or a wrapper of it such
    /// as a fault-injecting one), first waiting for the previous store on the case to finish
    /// its background work: one store per dataset at a time, as if the previous process had
    /// exited.
    ///
    /// # Errors
    /// The store's [`StoreError`](store_api::StoreError), boxed as it is (so that the suite
    /// can tell a refused second open), or a hung previous store.
    pub async fn open(
        &self,
        case: &ZfsCase,
        runner: Arc<dyn Runner>,
    ) -> Result<ZfsStore, FactoryError> {
        // The engine the case's first open detected: a reopen skips `zfs version`, as a
        // caller that opens many stores can (one process of the few an open costs).
        let mut engine = None;
        if let Some(previous) = case.take_last() {
            idle(&previous).await?;
            engine = Some(previous.engine().clone());
        }
        let store = ZfsStore::open_with(
            &case.dataset,
            ZfsOptions {
                runner,
                engine,
                ..ZfsOptions::default()
            },
        )
        .await
        .map_err(FactoryError::from)?;
        case.set_last(store.clone());
        Ok(store)
    }

    /// The factory's own commands go through the store's command layer (one retry policy,
    /// typed errors), on the factory's runner.
    fn zfs(&self) -> Zfs {
        Zfs::new(Arc::clone(&self.runner))
    }

    /// Creates a new, unused child dataset of the pool.
    async fn new_dataset(&self) -> Result<String, FactoryError> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let ds = format!("{}/case-{n}", self.pool);
            let out = self.zfs().output(&Cmd::zfs(["create", "--", &ds])).await?;
            if out.success() {
                return Ok(ds);
            }
            if !out.stderr.contains("already exists") {
                return Err(format!(
                    "`zfs create -- {ds}` failed (exit {:?}): {}",
                    out.status,
                    out.stderr.trim()
                )
                .into());
            }
        }
    }

    /// Unmounts everything mounted under `ds` (deepest first) and destroys it recursively;
    /// never `-f` (it can wedge zfs-fuse), retrying only while ZFS says "busy".
    async fn destroy(&self, ds: &str) -> Result<(), FactoryError> {
        let mut delays = Backoff::TEARDOWN.delays();
        loop {
            let zfs = self.zfs();
            let mut mounted: Vec<String> = mounts::parse(&zfs.mount_table().await?)
                .into_keys()
                .filter(|d| is_within(d, ds))
                .collect();
            mounted.sort_by_key(|d| std::cmp::Reverse(d.len()));
            let mut last = None;
            for d in &mounted {
                let out = zfs.output(&Cmd::zfs(["unmount", "--", d])).await?;
                if !out.success() && !out.stderr.contains("not currently mounted") {
                    last = Some(format!("`zfs unmount -- {d}`: {}", out.stderr.trim()));
                }
            }
            if last.is_none() {
                let out = zfs.output(&Cmd::zfs(["destroy", "-r", "--", ds])).await?;
                if out.success() || out.stderr.contains("does not exist") {
                    return Ok(());
                }
                last = Some(format!("`zfs destroy -r -- {ds}`: {}", out.stderr.trim()));
            }
            let last = last.unwrap_or_default();
            if !is_transient_busy(&last) && !is_mount_in_use(&last) {
                return Err(last.into());
            }
            let Some(delay) = delays.next() else {
                return Err(
                    format!("still busy after {:?}: {last}", Backoff::TEARDOWN.total).into(),
                );
            };
            tokio::time::sleep(delay).await;
        }
    }
}

/// Waits for a store's background work, bounded.
async fn idle(store: &ZfsStore) -> Result<(), FactoryError> {
    tokio::time::timeout(IDLE_LIMIT, store.wait_idle())
        .await
        .map_err(|_| {
            format!(
                "the store on {} still had background work after {IDLE_LIMIT:?} (hung?)",
                store.dataset()
            )
            .into()
        })
}

#[async_trait]
impl StoreFactory for ZfsFactory {
    type Storage = ZfsCase;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_reopen: true,
            // `delete_cache` is refused with Busy exactly while a copy is out.
            may_return_busy: true,
            fault_injection: true,
        }
    }

    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }

    fn defaults(&self) -> Config {
        self.defaults.clone()
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, ZfsCase), FactoryError> {
        let dataset = self.new_dataset().await?;
        let case = ZfsCase {
            dataset,
            last: Mutex::new(None),
        };
        match self.open(&case, Arc::clone(&self.runner)).await {
            Ok(store) => Ok((Arc::new(store), case)),
            Err(e) => {
                if let Err(e2) = self.destroy(&case.dataset).await {
                    tracing::warn!(dataset = %case.dataset, error = %e2, "cannot destroy a case dataset whose store did not open");
                }
                Err(e)
            }
        }
    }

    async fn reopen(&self, case: &ZfsCase) -> Result<Arc<dyn Store>, FactoryError> {
        Ok(Arc::new(self.open(case, Arc::clone(&self.runner)).await?))
    }

    async fn open_with_faults(
        &self,
        case: &ZfsCase,
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let runner = PlanRunner {
            inner: Arc::clone(&self.runner),
            plan,
        };
        Ok(Arc::new(self.open(case, Arc::new(runner)).await?))
    }

    async fn list_storage(&self, case: &ZfsCase) -> Result<Option<Vec<String>>, FactoryError> {
        // Background work (a dropped copy being destroyed) would make two listings of the
        // same state differ.
        let last = case.take_last();
        if let Some(store) = &last {
            idle(store).await?;
            case.set_last(store.clone());
        }
        let rows = self.zfs().list_tree(&[&case.dataset], &["name"]).await?;
        let mut names: Vec<String> = rows
            .iter()
            .filter_map(|row| row.first()?.strip_prefix(case.dataset.as_str()))
            .map(str::to_owned)
            .collect();
        // A file left in the root's own directory is a leftover no dataset listing shows.
        if let Some(store) = &last {
            for stray in crate::check::root_strays(store.root())? {
                let name = stray.file_name().unwrap_or_default().to_string_lossy();
                names.push(format!("file in the root directory: {name}"));
            }
        }
        names.sort();
        Ok(Some(names))
    }

    async fn teardown(&self, case: ZfsCase) -> Result<(), FactoryError> {
        let last = case.take_last();
        let mut problems = Vec::new();
        if let Some(store) = &last {
            if let Err(e) = idle(store).await {
                problems.push(e.to_string());
            }
        }
        let found = match &last {
            Some(store) => store.check().await,
            None => check_layout(&case.dataset, Arc::clone(&self.runner)).await,
        };
        match found {
            Ok(found) => problems.extend(found),
            Err(e) => problems.push(format!("the layout check could not run: {e}")),
        }
        drop(last);
        if let Err(e) = self.destroy(&case.dataset).await {
            problems.push(format!("destroying {}: {e}", case.dataset));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the store on {} left:\n  - {}",
                case.dataset,
                problems.join("\n  - ")
            )
            .into())
        }
    }
}

/// The runner of a store opened by `open_with_faults`: every command first asks the plan,
/// then runs, fails as a real command fails (exit 1), or is refused (the process "died").
pub struct PlanRunner {
    inner: Arc<dyn Runner>,
    plan: FaultPlan,
}

impl PlanRunner {
    /// Every command through `plan`, then (if it proceeds) through `inner`.
    pub fn new(inner: Arc<dyn Runner>, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }
}

#[async_trait]
impl Runner for PlanRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        // Held until the command has finished: the suite waits for none to be in flight.
        let step = self.plan.step(cmd.to_string());
        match step.verdict() {
            Verdict::Proceed => self.inner.run(cmd).await,
            Verdict::Fail => Ok(CmdOutput::failed(1, "injected failure\n")),
            // As a command that could not start: the process that would start it is gone.
            Verdict::Refuse => Err(RunError::Spawn {
                program: cmd.program.name(),
                source: std::io::Error::other("refused: the process stopped (injected crash)"),
            }),
        }
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.inner.mount_table().await
    }
}
