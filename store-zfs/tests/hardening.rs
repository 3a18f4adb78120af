//! Trust at the edges a build machine hits: a second opener, mounts still in use, datasets and
//! snapshots the store did not make, and races after a failure (issue 12). Each test runs on
//! a real pool (zfs-fuse here, OpenZFS in the guest) and, where the fake models it, on
//! `FakeZfs` too.

mod common;
use common::{Env, FakeEnv};


use common::{cname, id, open, pool, read};
use store_api::{ReleaseOutcome, Store, StoreError, StoreExt, User};
use store_zfs::{Cmd, ZfsOptions, ZfsStore};

/// Runs `zfs ARGS` through the environment's runner, panicking on failure.
async fn zfs(pool: &impl Env, args: &[&str]) -> String {
    let cmd = Cmd::zfs(args.iter().copied());
    let out = pool.runner().run(&cmd).await.expect("run zfs");
    assert!(out.success(), "`{cmd}` failed: {}", out.stderr);
    out.stdout
}

/// Opens another store on `location` with the environment's runner.
async fn open_at(pool: &impl Env, location: &str) -> Result<ZfsStore, StoreError> {
    ZfsStore::open(
        location,
        ZfsOptions {
            runner: pool.runner(),
            ..ZfsOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_an_open_store_fails_and_changes_nothing() {
    let Some(pool) = pool("a_second_open_of_an_open_store_fails_and_changes_nothing") else {
        return;
    };
    a_second_open_of_an_open_store_fails_and_changes_nothing_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_an_open_store_fails_and_changes_nothing_fake() {
    a_second_open_of_an_open_store_fails_and_changes_nothing_on(&FakeEnv::new()).await;
}

/// Issue 12, item 2: a second open used to succeed, and its repair destroyed the first
/// store's running build and the cache copy it had out.
async fn a_second_open_of_an_open_store_fails_and_changes_nothing_on(pool: &impl Env) {
    let (store, _rec) = open(pool).await;
    let (a, b) = (id("a"), id("b"));
    store
        .build(
            None,
            &a,
            |dir| async move { std::fs::write(dir.join("f"), "a") },
        )
        .await
        .expect("a");
    // A build running and a cache copy out while someone opens the store again.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            store
                .build(Some(&a), &b, |dir| async move {
                    started_tx.send(()).expect("signal");
                    go_rx.await.expect("go");
                    std::fs::write(dir.join("g"), "b")
                })
                .await
        })
    };
    started_rx.await.expect("started");
    let lease = store.cache(User::ROOT, &cname("c")).await.expect("cache");
    std::fs::write(lease.path().join("x"), "1").expect("write");
    let before = pool.datasets();

    for location in [pool.location(), pool.name()] {
        let err = open_at(pool, &location)
            .await
            .expect_err("a second open of an open store must fail");
        let StoreError::Locked { holder, .. } = &err else {
            panic!("expected StoreError::Locked, got {err:?}");
        };
        assert_eq!(
            holder.pid,
            Some(std::process::id()),
            "names the holder: {err}"
        );
        assert_eq!(pool.datasets(), before, "the second open changed the pool");
    }

    // The first store's work goes on undisturbed.
    go_tx.send(()).expect("go");
    running.await.expect("join").expect("the running build");
    assert_eq!(
        read(store.result(&b).await.expect("r").expect("b").join("g")),
        "b"
    );
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );

    // Another root in the same pool is independent.
    let other = format!("{}/other", pool.name());
    zfs(pool, &["create", "--", &other]).await;
    let second = open_at(pool, &other)
        .await
        .expect("a store on another root");
    drop(second);

    // Gone with the last handle: the store opens again.
    store.wait_idle().await;
    drop(store);
    let again = open_at(pool, &pool.location()).await.expect("reopen");
    assert_eq!(again.results(), vec![a, b]);
}
