//! The cache contract beyond OBuilder's `test_cache`: drops, ordering, names, busy hooks.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{cache_name, is_root, list, read, user, write};
use store_api::{CacheName, DeleteCacheError, ReleaseOutcome, Store, User};
use store_fake::{BusyPolicy, CacheInfo, FakeStore};

#[tokio::test]
async fn dropping_a_lease_discards_the_copy_at_once() {
    let store = FakeStore::new().expect("open");
    let name = cache_name("c");
    let lease = store.cache(User::ROOT, &name).await.expect("cache");
    write(&lease.path().join("data"), "never published");
    let path = lease.path().to_owned();
    assert_eq!(store.live_cache_copies(&name), 1);
    drop(lease);
    assert_eq!(
        store.live_cache_copies(&name),
        0,
        "no longer out once dropped"
    );
    assert!(!path.exists(), "removed synchronously");
    assert_eq!(store.cache_info()[0].version, 0);
    store
        .delete_cache(&name)
        .await
        .expect("not busy after the drop");
}

#[tokio::test]
async fn a_dropped_release_future_discards_the_copy() {
    let store = FakeStore::new().expect("open");
    let name = cache_name("c");
    let lease = store.cache(User::ROOT, &name).await.expect("cache");
    write(&lease.path().join("data"), "x");
    let path = lease.path().to_owned();
    drop(lease.release());
    assert_eq!(store.live_cache_copies(&name), 0);
    assert!(!path.exists());
    assert_eq!(store.cache_info()[0].version, 0, "nothing published");
}

#[tokio::test]
async fn copies_are_independent_and_released_in_any_order() {
    let store = FakeStore::new().expect("open");
    let name = cache_name("c");
    let r = User::ROOT;
    let (c1, c2, c3) = (
        store.cache(r, &name).await.expect("c1"),
        store.cache(r, &name).await.expect("c2"),
        store.cache(r, &name).await.expect("c3"),
    );
    assert_eq!(store.live_cache_copies(&name), 3);
    for (lease, text) in [(&c1, "1"), (&c2, "2"), (&c3, "3")] {
        write(&lease.path().join("data"), text);
    }
    for lease in [&c1, &c2, &c3] {
        assert_eq!(
            list(lease.path()),
            vec!["data".to_owned()],
            "independent copies"
        );
    }
    assert_eq!(c3.release().await.expect("c3"), ReleaseOutcome::Published);
    let c4 = store.cache(r, &name).await.expect("c4");
    assert_eq!(read(&c4.path().join("data")), "3");
    write(&c4.path().join("data"), "4");
    assert_eq!(c1.release().await.expect("c1"), ReleaseOutcome::Discarded);
    assert_eq!(c4.release().await.expect("c4"), ReleaseOutcome::Published);
    assert_eq!(c2.release().await.expect("c2"), ReleaseOutcome::Discarded);
    let info = &store.cache_info()[0];
    assert_eq!((info.version, info.live_copies), (2, 0));
    let last = store.cache(r, &name).await.expect("last");
    assert_eq!(read(&last.path().join("data")), "4");
    drop(last);
    assert_eq!(list(&store.root().join("cache-tmp")), Vec::<String>::new());
}

#[tokio::test]
async fn a_new_cache_belongs_to_the_requested_user_and_keeps_its_first_owner() {
    let store = FakeStore::new().expect("open");
    let name = cache_name("owned");
    let lease = store.cache(user(123, 456), &name).await.expect("cache");
    let meta = std::fs::symlink_metadata(lease.path()).expect("lstat");
    if is_root() {
        assert_eq!((meta.uid(), meta.gid()), (123, 456));
    } else {
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        assert_eq!(
            (meta.uid(), meta.gid()),
            me,
            "not root: stays the process's"
        );
    }
    assert_eq!(meta.mode() & 0o7777, 0o755);
    drop(lease);
    // Asking again with another user does not change an existing cache.
    let lease = store.cache(user(7, 7), &name).await.expect("cache");
    if is_root() {
        let meta = std::fs::symlink_metadata(lease.path()).expect("lstat");
        assert_eq!((meta.uid(), meta.gid()), (123, 456));
    }
    assert_eq!(
        store.cache_info(),
        vec![CacheInfo {
            name: name.clone(),
            version: 0,
            live_copies: 1,
            owner: user(123, 456)
        }]
    );
}

#[tokio::test]
async fn the_busy_hook_reports_busy_and_changes_nothing() {
    for policy in [BusyPolicy::ReportBusy, BusyPolicy::DeleteWins] {
        let store = FakeStore::builder()
            .busy_policy(policy)
            .open()
            .expect("open");
        let name = cache_name("c");
        let lease = store.cache(User::ROOT, &name).await.expect("cache");
        write(&lease.path().join("data"), "v1");
        lease.release().await.expect("release");
        store.set_delete_cache_busy(true);
        for target in [&name, &cache_name("absent")] {
            let err = store.delete_cache(target).await.expect_err("busy");
            assert!(matches!(err, DeleteCacheError::Busy { ref name } if name == target));
        }
        assert_eq!(store.cache_info().len(), 1);
        store.set_delete_cache_busy(false);
        store.delete_cache(&name).await.expect("delete");
        assert!(store.cache_info().is_empty());
        store.delete_cache(&name).await.expect("absent");
    }
}

#[tokio::test]
async fn delete_wins_discards_every_copy_out_even_after_the_name_is_reused() {
    let store = FakeStore::builder()
        .busy_policy(BusyPolicy::DeleteWins)
        .open()
        .expect("open");
    let name = cache_name("c");
    let old = store.cache(User::ROOT, &name).await.expect("old copy");
    write(&old.path().join("data"), "old");
    store.delete_cache(&name).await.expect("delete wins");
    assert_eq!(
        store.live_cache_copies(&name),
        0,
        "the deleted cache's copies do not count"
    );
    // A new cache of the same name, at version 0 like the copy was.
    let new = store.cache(User::ROOT, &name).await.expect("new copy");
    assert_eq!(old.release().await.expect("old"), ReleaseOutcome::Discarded);
    assert_eq!(store.cache_info()[0].version, 0);
    assert_eq!(new.release().await.expect("new"), ReleaseOutcome::Published);
    let check = store.cache(User::ROOT, &name).await.expect("check");
    assert!(!check.path().join("data").exists());
}

#[tokio::test]
async fn any_cache_name_stays_under_the_root_and_is_listed_as_given() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let store = FakeStore::open(&root).expect("open");
    let raw = [
        "-R".to_owned(),
        "../x".to_owned(),
        "x".to_owned(),
        "..".to_owned(),
        ".".to_owned(),
        "a/b".to_owned(),
        "/etc".to_owned(),
        "%".to_owned(),
        "%20".to_owned(),
        "a b".to_owned(),
        "new\nline".to_owned(),
        "café".to_owned(),
        "キャッシュ".to_owned(),
        "lock".to_owned(),
        "v0".to_owned(),
        "owner".to_owned(),
        "c:/windows/cache".to_owned(),
        "x".repeat(CacheName::MAX_LEN),
        "é".repeat(CacheName::MAX_LEN / 2),
    ];
    for (i, name) in raw.iter().enumerate() {
        let name = cache_name(name);
        let lease = store.cache(User::ROOT, &name).await.expect("cache");
        assert!(
            lease.path().starts_with(root.join("cache-tmp")),
            "{:?}",
            lease.path()
        );
        write(&lease.path().join("data"), &i.to_string());
        assert_eq!(
            lease.release().await.expect("release"),
            ReleaseOutcome::Published
        );
    }
    assert_eq!(
        list(parent.path()),
        vec!["store".to_owned()],
        "nothing outside the root"
    );
    assert_eq!(
        list(&root.join("caches")).len(),
        raw.len(),
        "one directory per name"
    );
    let mut expected: Vec<CacheName> = raw.iter().map(|n| cache_name(n)).collect();
    expected.sort();
    let listed: Vec<CacheName> = store.cache_info().into_iter().map(|c| c.name).collect();
    assert_eq!(listed, expected, "real names, sorted");
    for (i, name) in raw.iter().enumerate() {
        let lease = store
            .cache(User::ROOT, &cache_name(name))
            .await
            .expect("cache");
        assert_eq!(read(&lease.path().join("data")), i.to_string(), "{name:?}");
    }
    drop(store);
    // And they come back under their real names.
    let store = FakeStore::open(&root).expect("reopen");
    let listed: Vec<CacheName> = store.cache_info().into_iter().map(|c| c.name).collect();
    assert_eq!(listed, expected);
    for name in &raw {
        store.delete_cache(&cache_name(name)).await.expect("delete");
    }
    assert_eq!(list(&root.join("caches")), Vec::<String>::new());
}

#[tokio::test]
async fn a_lease_keeps_a_temporary_store_alive() {
    let store = FakeStore::new().expect("open");
    let root = store.root().to_owned();
    let name = cache_name("c");
    let lease = store.cache(User::ROOT, &name).await.expect("cache");
    drop(store);
    write(&lease.path().join("data"), "x");
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );
    assert!(!root.exists(), "removed with the last handle, the lease");
}
