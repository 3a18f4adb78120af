//! OBuilder's `test_store` and `test_cache` stress cases, restated against the fake
//! (SPEC.md; reference/obuilder-store.md section (d)).

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Failed, cache_name, id, is_root, list, read, user, write};
use store_api::{DeleteCacheError, ReleaseOutcome, Store, StoreExt, User};
use store_fake::{BusyPolicy, FakeStore};

#[tokio::test]
async fn test_store() {
    let store = FakeStore::new().expect("open");
    assert_eq!(store.result(&id("unknown")).await.expect("result"), None);

    // base
    store.delete(&id("base")).await.expect("delete absent");
    store
        .build(None, &id("base"), |dir| async move {
            write(&dir.join("output"), "ok");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build base");
    let base = store
        .result(&id("base"))
        .await
        .expect("result")
        .expect("base in store");
    assert_eq!(read(&base.join("output")), "ok");

    // sub: starts as a clone of base
    store.delete(&id("sub")).await.expect("delete absent");
    store
        .build(Some(&id("base")), &id("sub"), |dir| async move {
            let orig = read(&dir.join("output"));
            assert_eq!(orig, "ok", "the build dir starts as a clone of the base");
            write(&dir.join("output"), &(orig + "+"));
            Ok::<(), Failed>(())
        })
        .await
        .expect("build sub");
    let sub = store
        .result(&id("sub"))
        .await
        .expect("result")
        .expect("sub in store");
    assert_eq!(read(&sub.join("output")), "ok+");
    assert_eq!(read(&base.join("output")), "ok", "the base is unchanged");

    store.delete(&id("sub")).await.expect("delete sub");
    assert_eq!(store.result(&id("sub")).await.expect("result"), None);

    // fail: the function's error comes back exactly, nothing recorded
    store.delete(&id("fail")).await.expect("delete absent");
    let err = store
        .build(None, &id("fail"), |_dir| async { Err::<(), _>(Failed) })
        .await
        .expect_err("must fail");
    assert_eq!(err.into_failed(), Some(Failed));
    assert_eq!(store.result(&id("fail")).await.expect("result"), None);
    assert_eq!(store.results(), vec![id("base")]);
}

/// Steps 1-4 of `test_cache`; returns the store for step 5.
async fn cache_steps_1_to_4(policy: BusyPolicy) -> FakeStore {
    let store = FakeStore::builder()
        .busy_policy(policy)
        .open()
        .expect("open");
    let c1 = cache_name("c1");
    let me = User::ROOT;

    // 1. deleting an absent cache is fine
    store.delete_cache(&c1).await.expect("delete absent cache");

    // 2. a new cache is empty and owned by the requested user
    let lease = store.cache(user(123, 456), &c1).await.expect("cache");
    if is_root() {
        let meta = std::fs::symlink_metadata(lease.path()).expect("lstat");
        assert_eq!((meta.uid(), meta.gid()), (123, 456));
        std::os::unix::fs::chown(lease.path(), Some(me.uid()), Some(me.gid())).expect("chown");
    }
    assert_eq!(store.caches()[0].owner, user(123, 456));
    assert!(list(lease.path()).is_empty(), "a new cache is empty");
    write(&lease.path().join("data"), "v1");
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );

    // 3. v1 persists
    let lease = store.cache(me, &c1).await.expect("cache");
    assert_eq!(read(&lease.path().join("data")), "v1");
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );

    // 4. two copies, released r2 then r1: the first release of the generation wins
    let l1 = store.cache(me, &c1).await.expect("cache 1");
    let l2 = store.cache(me, &c1).await.expect("cache 2");
    assert_ne!(l1.path(), l2.path());
    write(&l1.path().join("data"), "v2a");
    write(&l2.path().join("data"), "v2b");
    assert_eq!(l2.release().await.expect("r2"), ReleaseOutcome::Published);
    assert_eq!(l1.release().await.expect("r1"), ReleaseOutcome::Discarded);
    let lease = store.cache(me, &c1).await.expect("cache");
    assert_eq!(read(&lease.path().join("data")), "v2b");
    drop(lease);
    assert_eq!(
        store.caches()[0].version,
        3,
        "0 created, 1 \"v1\", 2 unchanged v1, 3 \"v2b\""
    );
    store
}

#[tokio::test]
async fn test_cache_delete_reports_busy() {
    let store = cache_steps_1_to_4(BusyPolicy::ReportBusy).await;
    let c1 = cache_name("c1");
    // 5. delete while in use: Busy and nothing changed, then it works after release
    let lease = store.cache(User::ROOT, &c1).await.expect("cache");
    write(&lease.path().join("data"), "v3");
    let err = store.delete_cache(&c1).await.expect_err("busy");
    assert!(
        matches!(err, DeleteCacheError::Busy { ref name } if *name == c1),
        "{err}"
    );
    assert_eq!(store.live_cache_copies(&c1), 1);
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );
    store.delete_cache(&c1).await.expect("delete after release");
    assert!(store.caches().is_empty());
    let lease = store.cache(User::ROOT, &c1).await.expect("cache");
    assert!(
        list(lease.path()).is_empty(),
        "a deleted cache comes back empty"
    );
}

#[tokio::test]
async fn test_cache_delete_wins() {
    let store = cache_steps_1_to_4(BusyPolicy::DeleteWins).await;
    let c1 = cache_name("c1");
    let lease = store.cache(User::ROOT, &c1).await.expect("cache");
    write(&lease.path().join("data"), "v3");
    store.delete_cache(&c1).await.expect("delete wins");
    assert!(store.caches().is_empty());
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Discarded
    );
    let lease = store.cache(User::ROOT, &c1).await.expect("cache");
    assert!(
        !lease.path().join("data").exists(),
        "the released copy was not saved"
    );
    assert_eq!(store.caches()[0].version, 0);
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );
}
