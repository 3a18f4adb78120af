//! OBuilder's store test cases, on a real pool.

mod common;
use common::{Env, FakeEnv};

use std::os::unix::fs::MetadataExt;

use common::{cname, id, leftovers, open, pool, read};
use store_api::{DeleteCacheError, ReleaseOutcome, Store, StoreExt, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_base_sub_fail() {
    let Some(pool) = pool("build_base_sub_fail") else {
        return;
    };
    build_base_sub_fail_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_base_sub_fail_fake() {
    build_base_sub_fail_on(&FakeEnv::new()).await;
}

async fn build_base_sub_fail_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let (base, sub, fail) = (id("base"), id("sub"), id("fail"));

    assert_eq!(store.result(&base).await.expect("result"), None);
    store
        .build(None, &base, |dir| async move {
            std::fs::write(dir.join("output"), "ok")?;
            std::fs::write(dir.join("log"), "base log")
        })
        .await
        .expect("build base");
    let base_dir = store
        .result(&base)
        .await
        .expect("result")
        .expect("base built");
    assert_eq!(read(base_dir.join("output")), "ok");
    assert_eq!(read(store.log_file(&base).await.expect("log")), "base log");

    store
        .build(Some(&base), &sub, |dir| async move {
            let orig = std::fs::read_to_string(dir.join("output"))?;
            assert_eq!(std::fs::read_to_string(dir.join("log"))?, "base log");
            std::fs::write(dir.join("output"), orig + "+")
        })
        .await
        .expect("build sub");
    let sub_dir = store
        .result(&sub)
        .await
        .expect("result")
        .expect("sub built");
    assert_eq!(read(sub_dir.join("output")), "ok+");
    assert_eq!(read(base_dir.join("output")), "ok", "base unchanged");

    #[derive(Debug, PartialEq)]
    struct Oops;
    let err = store
        .build(Some(&base), &fail, |dir| async move {
            std::fs::write(dir.join("partial"), "x").expect("write");
            Err(Oops)
        })
        .await
        .expect_err("fails");
    assert_eq!(err.into_failed(), Some(Oops));
    assert_eq!(store.result(&fail).await.expect("result"), None);
    // A retry starts afresh.
    store
        .build(Some(&base), &fail, |dir| async move {
            assert!(
                !dir.join("partial").exists(),
                "leftover from the failed attempt"
            );
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("rebuild");

    // Missing base: typed error, function not run.
    let err = store
        .build(Some(&id("nope")), &id("x"), |_| async {
            panic!("must not run") as Result<(), ()>
        })
        .await
        .expect_err("missing base");
    assert!(
        matches!(
            err.store_error(),
            Some(store_api::StoreError::MissingBase { .. })
        ),
        "{err:?}"
    );

    assert!(
        leftovers(
            &pool,
            &[
                "result/base",
                "result/base@snap",
                "result/sub",
                "result/sub@snap",
                "result/fail",
                "result/fail@snap"
            ]
        )
        .is_empty(),
        "{:?}",
        leftovers(&pool, &[])
    );
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_cases() {
    let Some(pool) = pool("cache_cases") else {
        return;
    };
    cache_cases_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_cases_fake() {
    cache_cases_on(&FakeEnv::new()).await;
}

async fn cache_cases_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let c = cname("c1");
    let user = User::new(123, 456).expect("user");

    // A new cache is empty and owned by the user.
    let lease = store.cache(user, &c).await.expect("cache");
    let meta = std::fs::metadata(lease.path()).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (123, 456));
    assert_eq!(std::fs::read_dir(lease.path()).expect("ls").count(), 0);
    std::fs::write(lease.path().join("data"), "v1").expect("write");
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );

    // v1 persists.
    let lease = store.cache(user, &c).await.expect("cache");
    assert_eq!(read(lease.path().join("data")), "v1");
    drop(lease);

    // Two copies, released r2 then r1: r2's data wins.
    let r1 = store.cache(user, &c).await.expect("r1");
    let r2 = store.cache(user, &c).await.expect("r2");
    std::fs::write(r1.path().join("data"), "r1").expect("write");
    std::fs::write(r2.path().join("data"), "r2").expect("write");
    assert_eq!(
        r2.release().await.expect("release r2"),
        ReleaseOutcome::Published
    );
    assert_eq!(
        r1.release().await.expect("release r1"),
        ReleaseOutcome::Discarded
    );
    let lease = store.cache(user, &c).await.expect("cache");
    assert_eq!(read(lease.path().join("data")), "r2");

    // Delete while in use: Busy, then works after release.
    match store.delete_cache(&c).await {
        Err(DeleteCacheError::Busy { .. }) => {}
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );
    store.delete_cache(&c).await.expect("delete cache");
    let lease = store.cache(user, &c).await.expect("cache after delete");
    assert_eq!(
        std::fs::read_dir(lease.path()).expect("ls").count(),
        0,
        "empty after delete"
    );
    drop(lease);
    store.delete_cache(&c).await.expect("delete cache");
    // Let the dropped lease's background discard finish before checking.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        leftovers(&pool, &[]).is_empty(),
        "{:?}",
        leftovers(&pool, &[])
    );
}
