//! The step hook: every change on disk is a step the hook sees, a failed step fails the
//! operation cleanly, and a store whose steps stop at any point (a crash) reopens consistent.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{cache_name, id, read, tree, write};
use store_api::{Store, StoreExt, User};
use store_fake::{FakeStore, Step, StepHook, StepKind};

/// Counts steps from the moment it is armed; fails step `fail_at`, refuses every step from
/// `stop_at` on.
#[derive(Default)]
struct Hook {
    armed: std::sync::atomic::AtomicBool,
    count: AtomicUsize,
    fail_at: Option<usize>,
    stop_at: Option<usize>,
    seen: Mutex<Vec<(StepKind, String)>>,
}

impl Hook {
    fn new(fail_at: Option<usize>, stop_at: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            fail_at,
            stop_at,
            ..Self::default()
        })
    }
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl StepHook for Hook {
    fn before_step(&self, step: &Step<'_>) -> io::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .expect("not poisoned")
            .push((step.kind, step.to_string()));
        if self.stop_at.is_some_and(|k| n >= k) {
            return Err(io::Error::other("stopped"));
        }
        if self.fail_at == Some(n) {
            return Err(io::Error::other("injected"));
        }
        Ok(())
    }
}

fn open(root: &Path, hook: Option<Arc<Hook>>) -> FakeStore {
    let mut b = FakeStore::builder().root(root);
    if let Some(h) = hook {
        b = b.step_hook(h);
    }
    b.open().expect("open")
}

/// Root with result `a` and cache `c` at "v1".
async fn setup(root: &Path) {
    let store = open(root, None);
    store
        .build(None, &id("a"), |dir| async move {
            std::fs::write(dir.join("f"), "a")
        })
        .await
        .expect("a");
    let lease = store.cache(User::ROOT, &cache_name("c")).await.expect("c");
    write(&lease.path().join("f"), "v1");
    lease.release().await.expect("release");
}

async fn scenario(store: &FakeStore) {
    let _ = store
        .build(Some(&id("a")), &id("b"), |dir| async move {
            std::fs::write(dir.join("g"), "b")
        })
        .await;
    if let Ok(lease) = store.cache(User::ROOT, &cache_name("c")).await {
        let _ = std::fs::write(lease.path().join("f"), "v2");
        let _ = lease.release().await;
    }
    let _ = store.delete(&id("a")).await;
}

async fn check(root: &Path, what: &str) {
    let store = open(root, None);
    if let Some(dir) = store.result(&id("a")).await.expect("result") {
        assert_eq!(read(&dir.join("f")), "a", "{what}");
    }
    if let Some(dir) = store.result(&id("b")).await.expect("result") {
        assert_eq!(read(&dir.join("f")), "a", "{what}");
        assert_eq!(read(&dir.join("g")), "b", "{what}");
    }
    let lease = store.cache(User::ROOT, &cache_name("c")).await.expect("c");
    let v = read(&lease.path().join("f"));
    assert!(v == "v1" || v == "v2", "{what}: cache holds {v:?}");
    drop(lease);
    for scratch in ["building", "cache-tmp", "tmp", "trash"] {
        assert!(
            tree(&root.join(scratch)).is_empty(),
            "{what}: {scratch} not empty after open"
        );
    }
    store
        .build(None, &id("z"), |_| async { Ok::<_, io::Error>(()) })
        .await
        .unwrap_or_else(|e| panic!("{what}: the reopened store cannot build: {e}"));
}

#[tokio::test]
async fn the_hook_sees_every_change_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path()).await;
    let hook = Hook::new(None, None);
    let store = open(dir.path(), Some(hook.clone()));
    hook.arm();
    store.result(&id("a")).await.expect("result");
    assert_eq!(hook.count(), 0, "a lookup changes nothing");
    scenario(&store).await;
    let kinds: Vec<StepKind> = hook
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.0)
        .collect();
    assert!(kinds.contains(&StepKind::CopyTree), "{kinds:?}");
    assert!(kinds.contains(&StepKind::Rename), "{kinds:?}");
    assert!(kinds.contains(&StepKind::Remove), "{kinds:?}");
    let described = hook.seen.lock().expect("lock")[0].1.clone();
    assert!(
        described.starts_with("mkdir ") || described.starts_with("copy "),
        "{described}"
    );
}

#[tokio::test]
async fn a_crash_after_any_step_reopens_consistent() {
    let probe = tempfile::tempdir().expect("tempdir");
    setup(probe.path()).await;
    let hook = Hook::new(None, None);
    let store = open(probe.path(), Some(hook.clone()));
    hook.arm();
    scenario(&store).await;
    drop(store);
    let total = hook.count();
    assert!(total > 8, "the scenario took {total} steps");
    for n in 0..=total {
        let dir = tempfile::tempdir().expect("tempdir");
        setup(dir.path()).await;
        let hook = Hook::new(None, Some(n));
        let store = open(dir.path(), Some(hook.clone()));
        hook.arm();
        scenario(&store).await;
        drop(store);
        check(dir.path(), &format!("stop after {n}")).await;
    }
}

#[tokio::test]
async fn a_failed_step_fails_the_operation_cleanly() {
    let probe = tempfile::tempdir().expect("tempdir");
    setup(probe.path()).await;
    let hook = Hook::new(None, None);
    let store = open(probe.path(), Some(hook.clone()));
    hook.arm();
    scenario(&store).await;
    drop(store);
    for n in 0..hook.count() {
        let dir = tempfile::tempdir().expect("tempdir");
        setup(dir.path()).await;
        let hook = Hook::new(Some(n), None);
        let store = open(dir.path(), Some(hook.clone()));
        hook.arm();
        scenario(&store).await;
        drop(store);
        check(dir.path(), &format!("fail step {n}")).await;
    }
}
