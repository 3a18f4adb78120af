//! Test helpers, public so that other crates' tests (and xtask) can use them: throw-away
//! pools ([`TestPool`]), the conformance suite's factory ([`ZfsFactory`]), a runner that
//! records every command ([`RecordingRunner`]) and one that fails or "crashes" at a chosen
//! command ([`FaultRunner`]); [`ZfsSpec`], the crash test's way to a case's store from
//! another process; with the `bench` feature, `bench`, the benchmark's ZFS part.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "testing")]
mod crash_spec;
#[cfg(feature = "testing")]
mod factory;

use crate::backoff::Backoff;
use crate::daemon_lock::{DaemonLock, talks_to_daemon};
use crate::engine::Engine;
pub use crate::fake_zfs::FakeZfs;
use crate::layout::is_within;
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
pub fn engine() -> Engine {
    match run_sync("zfs", &["version"]) {
        Ok(out) => Engine::OpenZfs {
            version: out.lines().next().unwrap_or("").trim().to_owned(),
        },
        Err(_) => Engine::ZfsFuse,
    }
}

/// Where test pools keep their sparse backing files and mountpoints.
pub const POOL_DIR: &str = "/var/tmp/zpools";

/// Whether `zfs`/`zpool` run and a ZFS daemon or module answers.
pub fn zfs_available() -> bool {
    match run_sync("zpool", &["list", "-H", "-o", "name"]) {
        Ok(_) => true,
        // run_sync's message carries stderr.
        Err(e) => e.contains("no pools"),
    }
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

/// A pool on a sparse file under [`POOL_DIR`], with a unique name, destroyed (with its file)
/// on drop.
///
/// Blocking: [`create`](Self::create), [`datasets`](Self::datasets),
/// [`destroy_tree`](Self::destroy_tree) and drop run `zpool`/`zfs` to completion on the
/// calling thread (waiting for the zfs-fuse daemon lock, up to minutes). Create and drop it on
/// a test's own thread or in `tokio::task::spawn_blocking`, never directly on an async
/// runtime's worker thread, where it stalls every task of that worker meanwhile.
#[derive(Debug)]
pub struct TestPool {
    name: String,
    file: PathBuf,
    mountpoint: PathBuf,
}

static POOL_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs a command to completion, under the [`DaemonLock`] (test pools share the machine's
/// zfs-fuse daemon with the stores under test).
fn run_sync(program: &str, args: &[&str]) -> Result<String, String> {
    let lock = match talks_to_daemon(program) {
        true => Some(DaemonLock::acquire_blocking().map_err(|e| e.to_string())?),
        false => None,
    };
    let out = Command::new(program)
        .args(args)
        .stdin(lock.as_ref().map_or_else(Stdio::null, DaemonLock::stdin))
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

impl TestPool {
    /// A 512 MiB pool named `<prefix><pid>-<n>-<time>`, mounted at
    /// `/var/tmp/zpools/mnt/<name>`. `prefix` must start with a letter (e.g. `zt-z`).
    ///
    /// # Errors
    /// A message if the file or the pool cannot be made.
    pub fn create(prefix: &str) -> Result<Self, String> {
        let n = POOL_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() % 100_000)
            .unwrap_or(0);
        let name = format!("{prefix}{}-{n}-{nanos}", std::process::id());
        let dir = Path::new(POOL_DIR);
        let file = dir.join(format!("{name}.img"));
        let mountpoint = dir.join("mnt").join(&name);
        std::fs::create_dir_all(dir.join("mnt")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let f = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        f.set_len(512 << 20)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let file_s = file.to_string_lossy().into_owned();
        let mp_s = mountpoint.to_string_lossy().into_owned();
        if let Err(e) = run_sync(
            "zpool",
            &[
                "create",
                "-o",
                "cachefile=none",
                "-m",
                &mp_s,
                &name,
                &file_s,
            ],
        ) {
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
        let pool = Self {
            name,
            file,
            mountpoint,
        };
        if let Err(e) = pool.check_responsive() {
            // Destroying it would block on the same wedged daemon.
            std::mem::forget(pool);
            return Err(e);
        }
        Ok(pool)
    }

    /// Fails (instead of hanging the test forever) if the pool's root mount does not answer
    /// a `stat` within 20 s: a zfs-fuse daemon whose FUSE side is wedged still answers
    /// `zpool` and `zfs` commands, but every file access blocks.
    fn check_responsive(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mp = self.mountpoint.clone();
        // If the daemon is wedged this thread stays blocked in the kernel; it is detached.
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::metadata(&mp).map(|_| ()));
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.mountpoint.display())),
            Err(_) => Err(format!(
                "the root of new pool {} ({}) does not answer file access: the ZFS daemon \
                 (zfs-fuse) is wedged and must be restarted; the pool is left in place",
                self.name,
                self.mountpoint.display()
            )),
        }
    }

    /// The pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the pool's root dataset is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Every dataset and snapshot in the pool, sorted (`zfs list -H -r -t all -o name`).
    ///
    /// # Errors
    /// A message if `zfs list` fails.
    pub fn datasets(&self) -> Result<Vec<String>, String> {
        let out = run_sync(
            "zfs",
            &[
                "list", "-H", "-r", "-t", "all", "-o", "name", "--", &self.name,
            ],
        )?;
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
        for d in mounted {
            let _ = run_sync("zfs", &["unmount", "--", &d]);
        }
        let mut delays = Backoff::TEARDOWN.delays();
        loop {
            match run_sync("zfs", &["destroy", "-r", "--", ds]) {
                Ok(_) => return Ok(()),
                Err(e) if e.contains("does not exist") => return Ok(()),
                Err(e) => match delays.next() {
                    Some(delay) if e.contains("busy") => std::thread::sleep(delay),
                    _ => return Err(e),
                },
            }
        }
    }

    /// The mounted filesystems of this pool, from `/proc/mounts`.
    pub fn mounted(&self) -> Vec<String> {
        let table = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        crate::mounts::parse(&table)
            .into_keys()
            .filter(|d| is_within(d, &self.name))
            .collect()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // Never `-f` (zfs-fuse turns it into a lazy unmount that can wedge the daemon); a
        // mount still busy for a moment after the test is retried.
        let mut delays = Backoff::TEARDOWN.delays();
        let destroyed = loop {
            match run_sync("zpool", &["destroy", &self.name]) {
                Ok(_) => break Ok(()),
                Err(e) => match delays.next() {
                    Some(delay) if e.contains("busy") => std::thread::sleep(delay),
                    _ => break Err(e),
                },
            }
        };
        if let Err(e) = destroyed {
            eprintln!("TestPool: could not destroy pool {}: {e}", self.name);
            return;
        }
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.mountpoint);
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
