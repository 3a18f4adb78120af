//! The fault sweep, the bad-input scenario and the load check against `store-zfs` on its
//! in-memory `FakeZfs` (zfs-fuse and OpenZFS behaviour), with the fault plan in the command
//! runner: what `cargo xtask conformance` runs on a real pool, without one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use conformance::{Capabilities, Config, FactoryError, FaultPlan, StoreFactory, Verdict};
use store_api::Store;
use store_zfs::testing::FakeZfs;
use store_zfs::{Cmd, CmdOutput, RunError, Runner, ZfsOptions, ZfsStore};

/// Every command through the fault plan.
struct PlanRunner {
    inner: Arc<dyn Runner>,
    plan: FaultPlan,
}

#[async_trait::async_trait]
impl Runner for PlanRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let step = self.plan.step(cmd.to_string());
        match step.verdict() {
            Verdict::Proceed => self.inner.run(cmd).await,
            Verdict::Fail => Ok(CmdOutput::failed(1, "injected failure\n")),
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

struct ZfsFake {
    zfs: Arc<FakeZfs>,
    _dir: tempfile::TempDir,
    next: AtomicUsize,
    openzfs: bool,
}

impl ZfsFake {
    fn new(openzfs: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let zfs = if openzfs {
            FakeZfs::openzfs(dir.path(), "fp")
        } else {
            FakeZfs::new(dir.path(), "fp")
        };
        Self {
            zfs: Arc::new(zfs),
            _dir: dir,
            next: AtomicUsize::new(0),
            openzfs,
        }
    }

    async fn open(
        &self,
        case: &Case,
        runner: Arc<dyn Runner>,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let previous = case.last.lock().expect("lock").take();
        if let Some(p) = previous {
            p.wait_idle().await;
        }
        let store = ZfsStore::open(
            &case.dataset,
            ZfsOptions {
                runner,
                ..ZfsOptions::default()
            },
        )
        .await?;
        *case.last.lock().expect("lock") = Some(store.clone());
        Ok(Arc::new(store))
    }
}

struct Case {
    dataset: String,
    last: Mutex<Option<ZfsStore>>,
}

#[async_trait::async_trait]
impl StoreFactory for ZfsFake {
    type Storage = Case;

    fn name(&self) -> String {
        if self.openzfs {
            "fake-openzfs"
        } else {
            "fake-zfs-fuse"
        }
        .into()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            can_reopen: true,
            may_return_busy: true,
            fault_injection: true,
        }
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, Case), FactoryError> {
        let dataset = format!("fp/case-{}", self.next.fetch_add(1, Ordering::SeqCst));
        let out = self.zfs.run(&Cmd::zfs(["create", "--", &dataset])).await?;
        if !out.success() {
            return Err(format!("zfs create {dataset}: {}", out.stderr).into());
        }
        let case = Case {
            dataset,
            last: Mutex::new(None),
        };
        let store = self.open(&case, self.zfs.clone()).await?;
        Ok((store, case))
    }

    async fn reopen(&self, case: &Case) -> Result<Arc<dyn Store>, FactoryError> {
        self.open(case, self.zfs.clone()).await
    }

    async fn open_with_faults(
        &self,
        case: &Case,
        plan: FaultPlan,
    ) -> Result<Arc<dyn Store>, FactoryError> {
        let runner = PlanRunner {
            inner: self.zfs.clone(),
            plan,
        };
        self.open(case, Arc::new(runner)).await
    }

    async fn list_storage(&self, case: &Case) -> Result<Option<Vec<String>>, FactoryError> {
        // Relative to the case's dataset, so that listings of two cases compare.
        Ok(Some(
            self.zfs
                .names()
                .into_iter()
                .filter_map(|n| {
                    n.strip_prefix(&case.dataset)
                        .filter(|rest| rest.is_empty() || rest.starts_with(['/', '@']))
                        .map(str::to_owned)
                })
                .collect(),
        ))
    }

    async fn teardown(&self, case: Case) -> Result<(), FactoryError> {
        let last = case.last.lock().expect("lock").take();
        if let Some(store) = last {
            store.wait_idle().await;
        }
        let _ = self
            .zfs
            .run(&Cmd::zfs(["destroy", "-R", "--", &case.dataset]))
            .await;
        Ok(())
    }
}

fn config(only: &str) -> Config {
    Config {
        only: Some(vec![only.into()]),
        fault_budget: None,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zfs_fuse_fault_sweep() {
    let report = conformance::run(ZfsFake::new(false), config("fault_sweep")).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openzfs_fault_sweep() {
    let report = conformance::run(ZfsFake::new(true), config("fault_sweep")).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zfs_fuse_bad_input() {
    let report = conformance::run(ZfsFake::new(false), config("bad_input_changes_nothing")).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zfs_fuse_load() {
    let report = conformance::run(ZfsFake::new(false), config("load")).await;
    println!("{report}");
    report.assert_passed();
}
