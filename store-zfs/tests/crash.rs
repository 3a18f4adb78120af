//! Crash safety: stop the process after the N-th command (every later command refused),
//! reopen with the real runner, and check the store is consistent, for every N.

mod common;

use std::sync::Arc;

use common::{cname, id, open_with, pool, read};
use store_api::{Store, StoreExt, User};
use store_zfs::daemon_lock::DaemonSerialized;
use store_zfs::testing::FakeZfs;
use store_zfs::testing::{Fault, FaultRunner, TestPool};
use store_zfs::{Cmd, Runner};
use store_zfs::{SystemRunner, ZfsStore};

/// Where the sweep runs: a real pool, or the in-memory fake.
#[derive(Clone)]
enum Env {
    Pool(Arc<TestPool>),
    Fake(Arc<FakeZfs>),
}

impl Env {
    fn runner(&self) -> Arc<dyn Runner> {
        match self {
            // Setup and teardown run beside the other test's stores: lock as the store does.
            Env::Pool(_) => Arc::new(DaemonSerialized::new(Arc::new(SystemRunner))),
            Env::Fake(f) => f.clone(),
        }
    }
    fn name(&self) -> String {
        match self {
            Env::Pool(p) => p.name().to_owned(),
            Env::Fake(_) => "fp".to_owned(),
        }
    }
    fn datasets(&self) -> Vec<String> {
        match self {
            Env::Pool(p) => p.datasets().expect("ls"),
            Env::Fake(f) => f.names(),
        }
    }
    async fn create(&self, ds: &str) {
        let out = self
            .runner()
            .run(&Cmd::zfs(["create", "--", ds]))
            .await
            .expect("zfs");
        assert!(out.success(), "{out:?}");
    }
    async fn destroy(&self, ds: &str) {
        match self {
            Env::Pool(p) => p
                .destroy_tree(ds)
                .unwrap_or_else(|e| panic!("cleanup: {e}")),
            Env::Fake(f) => {
                let _ = f.run(&Cmd::zfs(["destroy", "-R", "--", ds])).await;
            }
        }
    }
}

/// Sets up `root`: result `a` ("a"), cache `c` at "v1", a file in the state dir.
async fn setup(env: &Env, root: &str) {
    env.create(root).await;
    let store = open_with(root, env.runner()).await.expect("open");
    store
        .build(None, &id("a"), |dir| async move {
            std::fs::write(dir.join("f"), "a")
        })
        .await
        .expect("a");
    store
        .build(Some(&id("a")), &id("old"), |dir| async move {
            std::fs::write(dir.join("f"), "old")
        })
        .await
        .expect("old");
    std::fs::write(store.state_dir().join("db"), "state").expect("state");
    let lease = store.cache(User::ROOT, &cname("c")).await.expect("cache");
    std::fs::write(lease.path().join("f"), "v1").expect("write");
    lease.release().await.expect("release");
    store.wait_idle().await;
}

/// The operations interrupted by the crash; errors are expected once the runner stops.
async fn scenario(store: &ZfsStore) {
    let _ = store
        .build(Some(&id("a")), &id("b"), |dir| async move {
            let f = std::fs::read_to_string(dir.join("f"))?;
            std::fs::write(dir.join("f"), f + "b")
        })
        .await;
    let _ = store
        .build(None, &id("fail"), |_| async { Err::<(), _>("no") })
        .await;
    if let Ok(lease) = store.cache(User::ROOT, &cname("c")).await {
        let stale = store.cache(User::ROOT, &cname("c")).await;
        let _ = std::fs::write(lease.path().join("f"), "v2");
        let _ = lease.release().await;
        if let Ok(stale) = stale {
            let _ = stale.release().await;
        }
    }
    let _ = store.delete(&id("a")).await;
    let _ = store.delete(&id("old")).await;
    if let Ok(lease) = store
        .cache(User::new(7, 7).expect("user"), &cname("new"))
        .await
    {
        let _ = std::fs::write(lease.path().join("f"), "n1");
        let _ = lease.release().await;
    }
    let _ = store.delete_cache(&cname("new")).await;
}

/// What a reopened store must look like after a crash anywhere in `scenario`.
async fn check(env: &Env, root: &str, n: usize) {
    let store = open_with(root, env.runner())
        .await
        .unwrap_or_else(|e| panic!("N={n}: reopen: {e}"));
    check_store(&store, n).await;
    store.wait_idle().await;
    drop(store);
    check_leftovers(env, root, n).await;
}

/// The contract's view of a store after `scenario` was interrupted or failed at command `n`.
async fn check_store(store: &ZfsStore, n: usize) {
    assert_eq!(read(store.state_dir().join("db")), "state", "N={n}");
    if let Some(dir) = store.result(&id("a")).await.expect("r") {
        assert_eq!(read(dir.join("f")), "a", "N={n}");
    }
    if let Some(dir) = store.result(&id("b")).await.expect("r") {
        assert_eq!(read(dir.join("f")), "ab", "N={n}");
    }
    if let Some(dir) = store.result(&id("old")).await.expect("r") {
        assert_eq!(read(dir.join("f")), "old", "N={n}");
    }
    assert_eq!(store.result(&id("fail")).await.expect("r"), None, "N={n}");
    let lease = store.cache(User::ROOT, &cname("c")).await.expect("cache");
    let v = read(lease.path().join("f"));
    assert!(v == "v1" || v == "v2", "N={n}: cache c is {v:?}");
    drop(lease);
    let lease = store.cache(User::ROOT, &cname("new")).await.expect("cache");
    let f = lease.path().join("f");
    assert!(!f.exists() || read(&f) == "n1", "N={n}");
    drop(lease);
    // The dropped copy is destroyed in the background.
    store.wait_idle().await;
}

async fn check_leftovers(env: &Env, root: &str, n: usize) {
    // Reopen once more: no temporaries remain, every dataset is a result (with its
    // snapshot), a result kept for its dependents, or a cache's single published generation.
    let _store = open_with(root, env.runner()).await.expect("reopen");
    let all = env.datasets();
    let mine: Vec<&String> = all
        .iter()
        .filter(|d| d.starts_with(&format!("{root}/")))
        .collect();
    for d in &mine {
        let rest = &d[root.len() + 1..];
        let ok = matches!(rest, "state" | "result" | "cache")
            || rest.strip_prefix("result/").is_some_and(|r| {
                let leaf = r.split('@').next().unwrap_or("");
                all.contains(&format!("{root}/result/{leaf}@snap"))
            })
            || rest.strip_prefix("cache/").is_some_and(|r| {
                let parts: Vec<&str> = r.split('/').collect();
                match parts.as_slice() {
                    [_] => true,
                    [c, g] => {
                        let (g, snap) = g.split_once('@').unwrap_or((g, ""));
                        let gens = mine.iter().filter(|x| {
                            x.starts_with(&format!("{root}/cache/{c}/g")) && !x.contains('@')
                        });
                        gens.count() == 1 && (snap.is_empty() || snap == format!("v{}", &g[1..]))
                    }
                    _ => false,
                }
            });
        assert!(ok, "N={n}: leftover {d} in {mine:#?}");
    }
}

async fn stop_sweep(env: Env) {
    // How many commands the scenario takes (open included) when nothing stops it.
    let probe_root = format!("{}/probe", env.name());
    let counter = FaultRunner::new(env.runner(), Fault::StopAfter(usize::MAX));
    setup(&env, &probe_root).await;
    let store = open_with(&probe_root, counter.clone()).await.expect("open");
    scenario(&store).await;
    store.wait_idle().await;
    drop(store);
    let total = counter.count();
    assert!(total > 20, "scenario ran {total} commands");
    check(&env, &probe_root, usize::MAX).await;
    let only: Option<usize> = std::env::var("CRASH_N").ok().and_then(|v| v.parse().ok());
    for n in (0..=total).filter(|n| only.is_none_or(|o| o == *n)) {
        let root = format!("{}/s{n}", env.name());
        setup(&env, &root).await;
        let runner = FaultRunner::new(env.runner(), Fault::StopAfter(n));
        if let Ok(store) = open_with(&root, runner.clone()).await {
            scenario(&store).await;
            // Its background tasks only meet the stopped runner; wait so none is still
            // inside a command that started before the stop.
            store.wait_idle().await;
            drop(store);
        }
        check(&env, &root, n).await;
        // Keep the daemon's mount count low: remove this root entirely.
        env.destroy(&root).await;
    }
}

async fn fail_sweep(env: Env) {
    let probe_root = format!("{}/probe", env.name());
    setup(&env, &probe_root).await;
    let counter = FaultRunner::new(env.runner(), Fault::StopAfter(usize::MAX));
    let store = open_with(&probe_root, counter.clone()).await.expect("open");
    scenario(&store).await;
    store.wait_idle().await;
    drop(store);
    let total = counter.count();
    let only: Option<usize> = std::env::var("CRASH_N").ok().and_then(|v| v.parse().ok());
    for n in (0..total).filter(|n| only.is_none_or(|o| o == *n)) {
        let root = format!("{}/f{n}", env.name());
        setup(&env, &root).await;
        let runner = FaultRunner::new(env.runner(), Fault::FailAt(n));
        if let Ok(store) = open_with(&root, runner.clone()).await {
            scenario(&store).await;
            store.wait_idle().await;
            // The same store, still running after the failure, keeps the contract (unless
            // timing moved command N past the scenario, into the check itself)...
            if runner.struck() {
                check_store(&store, n).await;
            }
            store.wait_idle().await;
            drop(store);
        }
        // ...and so does a reopen.
        check(&env, &root, n).await;
        env.destroy(&root).await;
    }
}

fn fake_env(openzfs: bool) -> (tempfile::TempDir, Env) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(if openzfs {
        FakeZfs::openzfs(dir.path(), "fp")
    } else {
        FakeZfs::new(dir.path(), "fp")
    });
    (dir, Env::Fake(fake))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_command() {
    let Some(pool) = pool("crash_after_every_command") else {
        return;
    };
    stop_sweep(Env::Pool(Arc::new(pool))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_every_command() {
    let Some(pool) = pool("fail_every_command") else {
        return;
    };
    fail_sweep(Env::Pool(Arc::new(pool))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_command_fake() {
    let (_dir, env) = fake_env(false);
    stop_sweep(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_every_command_fake_openzfs() {
    let (_dir, env) = fake_env(true);
    stop_sweep(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_every_command_fake() {
    let (_dir, env) = fake_env(false);
    fail_sweep(env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_every_command_fake_openzfs() {
    let (_dir, env) = fake_env(true);
    fail_sweep(env).await;
}
