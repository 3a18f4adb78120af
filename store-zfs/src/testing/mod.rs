//! Test helpers, public so that other crates' tests (and xtask) can use them: throw-away
//! pools ([`TestPool`], on the workspace's one test-pool helper, [`pool`]), the conformance
//! suite's factory ([`ZfsFactory`]), a runner that records every command
//! ([`RecordingRunner`]) and one that fails or "crashes" at a chosen command
//! ([`FaultRunner`]); [`ZfsSpec`], the crash test's way to a case's store from another
//! process; with the `bench` feature, `bench`, the benchmark's ZFS part.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "testing")]
mod crash_spec;
#[cfg(feature = "testing")]
mod factory;
#[cfg(feature = "testing")]
pub mod pool;

#[cfg(feature = "testing")]
use crate::backoff::Backoff;
use crate::daemon_lock::DaemonSerialized;
use crate::engine::Engine;
pub use crate::fake_zfs::FakeZfs;
#[cfg(feature = "testing")]
use crate::layout::is_within;
use crate::runner::SystemRunner;
use crate::runner::{Cmd, CmdOutput, RunError, Runner};
use crate::state::lock;
#[cfg(feature = "testing")]
pub use crash_spec::ZfsSpec;
#[cfg(feature = "testing")]
pub use factory::{PlanRunner, ZfsCase, ZfsFactory};

/// The environment variable that turns "ZFS is not available, skipping" into a test failure.
pub const REQUIRE_ZFS_ENV: &str = "ZSTORE_REQUIRE_ZFS";

/// The environment variable naming an existing pool for [`ZfsFactory::on_test_pool`] (each
/// case is a child dataset of it); unset, each test makes a [`TestPool`] of its own.
pub const POOL_ENV: &str = "ZSTORE_TEST_POOL";

/// Which engine the machine's `zfs` is (`zfs version` works only on OpenZFS).
/// ([`Engine::detect`]; zfs-fuse when `zfs` does not answer at all). Blocking.
pub fn engine() -> Engine {
    blocking(
        "detecting the ZFS engine",
        Engine::detect(Arc::new(SystemRunner)),
    )
    .unwrap_or(Engine::ZfsFuse)
}

/// Whether `zfs`/`zpool` run and a ZFS daemon or module answers.
/// Blocking.
pub fn zfs_available() -> bool {
    let runner = DaemonSerialized::new(Arc::new(SystemRunner));
    blocking("listing pools", async {
        runner.run(&Cmd::zpool(["list", "-H", "-o", "name"])).await
    })
    .is_ok_and(|out| out.success() || out.stderr.contains("no pools"))
}

/// For tests that need ZFS: `true` if it is available. Otherwise prints `SKIPPED <test>` past
/// libtest's output capture (so it shows in `cargo test` output) and returns `false`, or
/// panics if `ZSTORE_REQUIRE_ZFS=1` (CI sets it).
pub fn require_zfs(test: &str) -> bool {
    if zfs_available() {
        return true;
    }
    if std::env::var(REQUIRE_ZFS_ENV).is_ok_and(|v| v == "1") {
        panic!("{test}: ZFS is not available (zpool list failed) and {REQUIRE_ZFS_ENV}=1");
    }
    // Straight to the standard error handle: libtest captures `eprintln!` of a passing test,
    // and a skip must not look like a pass.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: ZFS is not available (no zpool, or no daemon/module); set \
         {REQUIRE_ZFS_ENV}=1 to make this a failure"
    );
    false
}

/// A 512 MiB pool on a sparse file in the default pool directory ([`pool::PoolDir`]:
/// `ZSTORE_POOL_DIR`, else [`pool::DEFAULT_POOL_DIR`]), with a unique name and a record,
/// destroyed (with its file and record) on drop. A thin guard over [`pool`]: a pool a
/// crashed test leaves behind is listed by `cargo xtask pool list` and removed by `cargo
/// xtask pool destroy NAME`.
///
/// Blocking: [`create`](Self::create), [`datasets`](Self::datasets),
/// [`destroy_tree`](Self::destroy_tree) and drop run `zpool`/`zfs` to completion before
/// they return (waiting for the zfs-fuse daemon lock, up to minutes). They do so on a private
/// runtime on a helper thread, so they work, and never panic, inside an async context too;
/// but there they stall every task of the calling worker meanwhile, so prefer a test's own
/// thread or `tokio::task::spawn_blocking`.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub struct TestPool {
    name: pool::PoolName,
    dir: pool::PoolDir,
    record: pool::PoolRecord,
    /// Test pools share the machine's zfs-fuse daemon with the stores under test: one
    /// command at a time, as the store does.
    runner: DaemonSerialized,
}

/// The size of a [`TestPool`]'s vdev file.
#[cfg(feature = "testing")]
const TEST_POOL_BYTES: u64 = 512 << 20;

/// Runs `work` to completion on a current-thread runtime of its own, on a scoped helper
/// thread: `Runtime::block_on` panics on a thread that already runs a runtime, and a
/// [`TestPool`] must be usable (and droppable) anywhere. A panic in `work` comes back as an
/// error, so that drop never panics.
fn blocking<T, E, F>(what: &str, work: F) -> Result<T, String>
where
    T: Send,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>> + Send,
{
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("test-pool".into())
            .spawn_scoped(scope, || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("{what}: cannot start a runtime: {e}"))?
                    .block_on(work)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("{what}: cannot start a helper thread: {e}"))?;
        helper.join().unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("{what}: the helper thread panicked: {message}"))
        })
    })
}

#[cfg(feature = "testing")]
impl TestPool {
    /// A 512 MiB pool named `<prefix><8 hex digits>` ([`pool::PoolName::unique`], unused by
    /// any imported or recorded pool), recorded in the default pool directory and mounted at
    /// `<dir>/mnt/<name>`. `prefix` must start with a letter (e.g. `zt-z`). Fails, leaving
    /// the pool in place, if its root mount does not answer file access (a wedged zfs-fuse
    /// daemon).
    ///
    /// # Errors
    /// A message if the name, the file, the record or the pool cannot be made.
    pub fn create(prefix: &str) -> Result<Self, String> {
        let runner = DaemonSerialized::new(Arc::new(SystemRunner));
        let dir = pool::PoolDir::resolve(None);
        let engine = engine().to_string();
        let (name, record) = blocking("creating a test pool", async {
            let name = pool::fresh_name(&runner, &dir, prefix).await?;
            let record = pool::create(&runner, &dir, &name, TEST_POOL_BYTES, &engine).await?;
            Ok::<_, pool::PoolError>((name, record))
        })?;
        let test_pool = Self {
            name,
            dir,
            record,
            runner,
        };
        if let Err(e) = test_pool.check_responsive() {
            // Destroying it would block on the same wedged daemon; its record stays, so
            // `cargo xtask pool destroy` can remove it once the daemon is restarted.
            std::mem::forget(test_pool);
            return Err(e);
        }
        Ok(test_pool)
    }

    /// Fails (instead of hanging the test forever) if the pool's root mount does not answer
    /// a `stat` within 20 s: a zfs-fuse daemon whose FUSE side is wedged still answers
    /// `zpool` and `zfs` commands, but every file access blocks.
    fn check_responsive(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mp = self.record.mountpoint.clone();
        // If the daemon is wedged this thread stays blocked in the kernel; it is detached.
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::metadata(&mp).map(|_| ()));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.record.mountpoint.display())),
            Err(_) => Err(format!(
                "the root of new pool {} ({}) does not answer file access: the ZFS daemon \
                 (zfs-fuse) is wedged and must be restarted; the pool is left in place",
                self.name,
                self.record.mountpoint.display()
            )),
        }
    }

    /// The pool name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Where the pool's root dataset is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.record.mountpoint
    }

    /// Runs `cmd` through the pool's runner; its stdout, or a message with the command
    /// line, exit status and stderr.
    async fn run(&self, cmd: Cmd) -> Result<String, String> {
        let out = self
            .runner
            .run(&cmd)
            .await
            .map_err(|e| format!("`{cmd}`: {e}"))?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(pool::PoolError::failed(cmd.to_string(), &out).to_string())
        }
    }

    /// Every dataset and snapshot in the pool, sorted (`zfs list -H -r -t all -o name`).
    ///
    /// # Errors
    /// A message if `zfs list` fails.
    pub fn datasets(&self) -> Result<Vec<String>, String> {
        let cmd = Cmd::zfs([
            "list",
            "-H",
            "-r",
            "-t",
            "all",
            "-o",
            "name",
            "--",
            self.name(),
        ]);
        let out = blocking("listing a test pool", self.run(cmd))?;
        let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
        v.sort();
        Ok(v)
    }

    /// Destroys dataset `ds` of this pool and everything below it: unmounts the mounted ones
    /// deepest first, then `zfs destroy -r` with retries on "dataset is busy" (never `-f`).
    ///
    /// # Errors
    /// The last failure, if it could not be destroyed.
    pub fn destroy_tree(&self, ds: &str) -> Result<(), String> {
        let mut mounted: Vec<String> = self
            .mounted()
            .into_iter()
            .filter(|d| is_within(d, ds))
            .collect();
        mounted.sort_by_key(|d| std::cmp::Reverse(d.len()));
        blocking("destroying datasets of a test pool", async {
            for d in mounted {
                // A failure shows in the destroy below.
                let _ = self.run(Cmd::zfs(["unmount", "--", &d])).await;
            }
            let mut delays = Backoff::TEARDOWN.delays();
            loop {
                match self.run(Cmd::zfs(["destroy", "-r", "--", ds])).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.contains("does not exist") => return Ok(()),
                    Err(e) => match delays.next() {
                        Some(delay) if e.contains("busy") => tokio::time::sleep(delay).await,
                        _ => return Err(e),
                    },
                }
            }
        })
    }

    /// The mounted filesystems of this pool, from `/proc/mounts`.
    pub fn mounted(&self) -> Vec<String> {
        let table = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        crate::mounts::parse(&table)
            .into_keys()
            .filter(|d| is_within(d, self.name()))
            .collect()
    }
}

#[cfg(feature = "testing")]
impl Drop for TestPool {
    /// Destroys the pool through [`pool::destroy`] (owner check, retries while busy, never
    /// `-f`), then its file, mountpoint directory and record. A failure is printed, and the
    /// record stays so that `cargo xtask pool list` shows the pool.
    fn drop(&mut self) {
        let destroyed = blocking("destroying a test pool", async {
            pool::destroy(&self.runner, &self.dir, &self.name).await
        });
        if let Err(e) = destroyed {
            eprintln!("TestPool: could not destroy pool {}: {e}", self.name);
        }
    }
}

/// Wraps a runner and records every command it is asked to run, in order.
pub struct RecordingRunner {
    inner: Arc<dyn Runner>,
    log: Mutex<Vec<Cmd>>,
}

impl RecordingRunner {
    /// Records the commands passed to `inner`.
    pub fn new(inner: Arc<dyn Runner>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            log: Mutex::new(Vec::new()),
        })
    }

    /// Returns and clears the commands recorded so far.
    pub fn take(&self) -> Vec<Cmd> {
        std::mem::take(&mut *lock(&self.log))
    }

    /// Returns and clears the recorded commands as `zfs create ...` lines.
    pub fn take_lines(&self) -> Vec<String> {
        self.take().iter().map(Cmd::to_string).collect()
    }
}

#[async_trait]
impl Runner for RecordingRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        lock(&self.log).push(cmd.clone());
        self.inner.run(cmd).await
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.inner.mount_table().await
    }
}

/// Where a [`FaultRunner`] strikes (commands are counted from 0, across every task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Command number N fails (exit 1, stderr "injected failure"); all others run.
    FailAt(usize),
    /// Commands 0..N run; every later one is refused without running, as if the process had
    /// died right after command N-1. Reopen the store with a real runner to see what a crash
    /// at that point leaves.
    StopAfter(usize),
}

/// Wraps a runner and injects a [`Fault`].
pub struct FaultRunner {
    inner: Arc<dyn Runner>,
    fault: Fault,
    count: AtomicUsize,
}

impl FaultRunner {
    /// Injects `fault` into the commands passed to `inner`.
    pub fn new(inner: Arc<dyn Runner>, fault: Fault) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fault,
            count: AtomicUsize::new(0),
        })
    }

    /// How many commands were asked for so far (including refused ones).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Whether the fault has struck.
    pub fn struck(&self) -> bool {
        match self.fault {
            Fault::FailAt(n) => self.count() > n,
            Fault::StopAfter(n) => self.count() > n,
        }
    }
}

#[async_trait]
impl Runner for FaultRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            Fault::FailAt(k) if n == k => Ok(CmdOutput::failed(1, "injected failure\n")),
            Fault::StopAfter(k) if n >= k => Err(RunError::Spawn {
                program: cmd.program.name(),
                source: std::io::Error::other(format!("process stopped after command {k}")),
            }),
            _ => self.inner.run(cmd).await,
        }
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.inner.mount_table().await
    }
}
