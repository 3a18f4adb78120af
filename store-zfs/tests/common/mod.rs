//! Shared helpers for the tests: on a real pool, or on the in-memory fake.
#![allow(dead_code)]

use std::sync::Arc;

use store_zfs::daemon_lock::DaemonSerialized;
use store_zfs::testing::{FakeZfs, RecordingRunner, TestPool, require_zfs};
use store_zfs::{Runner, SystemRunner, ZfsOptions, ZfsStore};

/// Where a test's store lives.
pub trait Env {
    /// What `ZfsStore::open_with` is given.
    fn location(&self) -> String;
    /// The pool (or fake pool) name.
    fn name(&self) -> String;
    /// The runner to use.
    fn runner(&self) -> Arc<dyn Runner>;
    /// Every dataset and snapshot, sorted.
    fn datasets(&self) -> Vec<String>;
}

impl<T: Env + ?Sized> Env for &T {
    fn location(&self) -> String {
        (**self).location()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn runner(&self) -> Arc<dyn Runner> {
        (**self).runner()
    }
    fn datasets(&self) -> Vec<String> {
        (**self).datasets()
    }
}

impl Env for TestPool {
    fn location(&self) -> String {
        self.mountpoint().to_string_lossy().into_owned()
    }
    fn name(&self) -> String {
        TestPool::name(self).to_owned()
    }
    fn runner(&self) -> Arc<dyn Runner> {
        // Tests run their own commands beside stores in other threads: one command at a time
        // as the store does on zfs-fuse.
        Arc::new(DaemonSerialized::new(Arc::new(SystemRunner)))
    }
    fn datasets(&self) -> Vec<String> {
        TestPool::datasets(self).expect("zfs list")
    }
}

/// The in-memory fake (zfs-fuse behaviour), in a temporary directory.
pub struct FakeEnv {
    _dir: tempfile::TempDir,
    fake: Arc<FakeZfs>,
}

impl FakeEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeZfs::new(dir.path(), "fp"));
        Self { _dir: dir, fake }
    }
}

impl Env for FakeEnv {
    fn location(&self) -> String {
        "fp".into()
    }
    fn name(&self) -> String {
        "fp".into()
    }
    fn runner(&self) -> Arc<dyn Runner> {
        self.fake.clone()
    }
    fn datasets(&self) -> Vec<String> {
        self.fake.names()
    }
}

/// A fresh pool, or `None` (after a loud message) when ZFS is unavailable and not required.
/// Its name starts with `$ZSTORE_TEST_POOL_PREFIX` (default `zt-z`), so that runs sharing a
/// ZFS daemon can tell their pools apart.
pub fn pool(test: &str) -> Option<TestPool> {
    if !require_zfs(test) {
        return None;
    }
    let prefix = std::env::var("ZSTORE_TEST_POOL_PREFIX")
        .ok()
        .filter(|p| p.starts_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or_else(|| "zt-z".to_owned());
    Some(TestPool::create(&prefix).expect("create test pool"))
}

/// Sends the store's tracing (every command, at debug) to the test output when `RUST_LOG`
/// asks for it, e.g. `RUST_LOG=store_zfs=debug`.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Opens a store on `location` with every command through `runner`.
pub async fn open_with(
    location: &str,
    runner: Arc<dyn Runner>,
) -> Result<ZfsStore, store_api::StoreError> {
    ZfsStore::open_with(
        location,
        ZfsOptions {
            runner,
            ..ZfsOptions::default()
        },
    )
    .await
}

/// Opens a store on the pool's root with a recording runner.
pub async fn open(pool: &impl Env) -> (ZfsStore, Arc<RecordingRunner>) {
    init_tracing();
    let rec = RecordingRunner::new(pool.runner());
    let store = open_with(&pool.location(), rec.clone())
        .await
        .expect("open store");
    (store, rec)
}

/// Builds `id` (from `base`) with one file `file` holding `contents`; panics on failure.
pub async fn build_file(
    store: &ZfsStore,
    base: Option<&store_api::Id>,
    id: &store_api::Id,
    file: &str,
    contents: &str,
) {
    use store_api::StoreExt;
    let (file, contents) = (file.to_owned(), contents.to_owned());
    store
        .build(base, id, |dir| async move {
            std::fs::write(dir.join(file), contents)
        })
        .await
        .unwrap_or_else(|e| panic!("build {id}: {e:?}"));
}

/// The datasets of the pool that are neither the layout nor in `expected`.
pub fn leftovers(pool: &impl Env, expected: &[&str]) -> Vec<String> {
    let layout = ["", "/state", "/result", "/cache"];
    pool.datasets()
        .into_iter()
        .filter(|d| !layout.iter().any(|l| *d == format!("{}{l}", pool.name())))
        .filter(|d| {
            !expected
                .iter()
                .any(|e| *d == format!("{}/{e}", pool.name()))
        })
        .collect()
}

/// Reads a file to a string, panicking with the path on error.
pub fn read(path: impl AsRef<std::path::Path>) -> String {
    let p = path.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// An id.
pub fn id(s: &str) -> store_api::Id {
    store_api::Id::new(s).expect("id")
}

/// A cache name.
pub fn cname(s: &str) -> store_api::CacheName {
    store_api::CacheName::new(s).expect("cache name")
}
