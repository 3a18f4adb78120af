//! Persistent roots: what survives drop + open, the single-opener lock, and what opening
//! reclaims after an interrupted process.

mod common;

use common::{Failed, cache_name, id, list, read, tree, user, write};
use store_api::{ReleaseOutcome, Store, StoreError, StoreExt};
use store_fake::FakeStore;

#[tokio::test]
async fn results_caches_and_state_survive_reopen() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let name = cache_name("opam archives/../x");
    {
        let store = FakeStore::open(&root).expect("open");
        store
            .build(None, &id("a"), |dir| async move {
                write(&dir.join("f"), "a");
                Ok::<(), Failed>(())
            })
            .await
            .expect("build a");
        store
            .build(Some(&id("a")), &id("b"), |dir| async move {
                write(&dir.join("g"), "b");
                Ok::<(), Failed>(())
            })
            .await
            .expect("build b");
        let lease = store.cache(user(123, 456), &name).await.expect("cache");
        write(&lease.path().join("data"), "v1");
        assert_eq!(
            lease.release().await.expect("release"),
            ReleaseOutcome::Published
        );
        write(&store.state_dir().join("db"), "state");
    }
    let store = FakeStore::open(&root).expect("reopen");
    assert_eq!(
        store.root(),
        std::fs::canonicalize(&root).expect("canonical")
    );
    assert_eq!(store.results(), vec![id("a"), id("b")]);
    let b = store.result(&id("b")).await.expect("result").expect("b");
    assert_eq!(
        (read(&b.join("f")), read(&b.join("g"))),
        ("a".into(), "b".into())
    );
    let caches = store.cache_info();
    assert_eq!(caches.len(), 1);
    assert_eq!(
        (&caches[0].name, caches[0].version, caches[0].owner),
        (&name, 1, user(123, 456))
    );
    assert_eq!(caches[0].live_copies, 0);
    let lease = store.cache(user(1, 1), &name).await.expect("cache");
    assert_eq!(read(&lease.path().join("data")), "v1");
    drop(lease);
    assert_eq!(read(&store.state_dir().join("db")), "state");
    // Results from before the reopen still serve as bases.
    store
        .build(Some(&id("b")), &id("c"), |dir| async move {
            assert_eq!(read(&dir.join("g")), "b");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build c");
}

#[test]
fn a_root_can_be_open_only_once_at_a_time() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let first = FakeStore::open(&root).expect("open");
    let clone = first.clone();
    let err = FakeStore::open(&root).expect_err("already open");
    let StoreError::Locked { holder, .. } = &err else {
        panic!("expected StoreError::Locked, got {err:?}");
    };
    assert_eq!(
        holder.pid,
        Some(std::process::id()),
        "names the holder: {err}"
    );
    assert!(err.to_string().contains("it is open"), "{err}");
    drop(first);
    assert!(FakeStore::open(&root).is_err(), "a clone still holds it");
    drop(clone);
    FakeStore::open(&root).expect("open after the last handle is gone");
}

/// Set by [`interrupted_builds_and_leases_are_reclaimed_on_open`] for its child process.
const CRASH_ROOT: &str = "STORE_FAKE_TEST_CRASH_ROOT";
/// The exit code of the helper when it "crashes" where it should.
const CRASH_EXIT: i32 = 86;

/// Run in a child process: fills a store, then dies (`exit`: no unwinding, no destructors)
/// in the middle of a build and with a cache copy out. Does nothing when run directly.
#[tokio::test]
#[ignore = "helper: run as a child process by interrupted_builds_and_leases_are_reclaimed_on_open"]
async fn crash_helper() {
    let Some(root) = std::env::var_os(CRASH_ROOT) else {
        return;
    };
    let store = FakeStore::open(&root).expect("open");
    store
        .build(None, &id("a"), |dir| async move {
            write(&dir.join("f"), "a");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build a");
    let lease = store
        .cache(user(0, 0), &cache_name("c"))
        .await
        .expect("cache");
    write(&lease.path().join("data"), "released");
    lease.release().await.expect("release");

    let lease = store
        .cache(user(0, 0), &cache_name("c"))
        .await
        .expect("cache");
    write(&lease.path().join("data"), "never released");
    let (a, x) = (id("a"), id("x"));
    let store2 = store.clone();
    store
        .build(Some(&a), &x, |dir| async move {
            write(&dir.join("half"), "half-written");
            assert_eq!(store2.builds_in_progress(), 1);
            assert_eq!(store2.live_cache_copies(&cache_name("c")), 1);
            std::process::exit(CRASH_EXIT);
            #[allow(unreachable_code)]
            Ok::<(), Failed>(())
        })
        .await
        .expect("never ends");
    drop(lease);
}

#[tokio::test]
async fn interrupted_builds_and_leases_are_reclaimed_on_open() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let name = cache_name("c");
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "crash_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ROOT, &root)
        .output()
        .expect("run the crash helper");
    assert_eq!(
        output.status.code(),
        Some(CRASH_EXIT),
        "the helper must die mid-build; its stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(list(&root.join("building")), vec!["x".to_owned()]);
    assert_eq!(list(&root.join("cache-tmp")).len(), 1);

    // Leftovers of steps a crash can interrupt (see `open`'s commit points).
    std::fs::create_dir_all(root.join("tmp/99/deep")).expect("tmp leftover");
    std::fs::create_dir_all(root.join("trash/98")).expect("trash leftover");
    write(&root.join("trash/file"), "x");
    std::fs::create_dir_all(root.join("result/orphan")).expect("half-committed result");
    write(&root.join("result/orphan/f"), "never committed");
    let cache_dir = root
        .join("caches")
        .join(list(&root.join("caches"))[0].clone());
    assert_eq!(list(&cache_dir), vec!["owner".to_owned(), "v1".to_owned()]);
    std::fs::create_dir(cache_dir.join("v0")).expect("old version not yet removed");
    std::fs::remove_dir_all(root.join("result/a")).expect("commit interrupted before the copy");

    let store = FakeStore::open(&root).expect("reopen");
    for scratch in ["building", "cache-tmp", "tmp", "trash"] {
        assert_eq!(list(&root.join(scratch)), Vec::<String>::new(), "{scratch}");
    }
    assert_eq!(list(&root.join("result")), vec!["a".to_owned()]);
    assert_eq!(store.results(), vec![id("a")]);
    assert_eq!(
        read(&root.join("result/a/f")),
        "a",
        "restored from the master"
    );
    assert_eq!(list(&cache_dir), vec!["owner".to_owned(), "v1".to_owned()]);
    assert_eq!(store.cache_info()[0].version, 1);
    let lease = store.cache(user(0, 0), &name).await.expect("cache");
    assert_eq!(read(&lease.path().join("data")), "released");
    drop(lease);
    {
        let (x, orphan) = (id("x"), id("orphan"));
        assert_eq!(store.result(&x).await.expect("result"), None);
        store
            .build(None, &orphan, |dir| async move {
                assert_eq!(list(&dir), Vec::<String>::new(), "afresh");
                Ok::<(), Failed>(())
            })
            .await
            .expect("build orphan");
        store
            .build(Some(&id("a")), &x, |dir| async move {
                assert_eq!(list(&dir), vec!["f".to_owned()], "afresh");
                Ok::<(), Failed>(())
            })
            .await
            .expect("build x");
    }
}

#[test]
fn foreign_entries_are_reported_not_deleted() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    drop(FakeStore::open(&root).expect("create"));
    std::fs::create_dir(root.join("master/not an id")).expect("mkdir");
    let err = FakeStore::open(&root).expect_err("foreign master");
    assert!(err.to_string().contains("not an id"), "{err}");
    assert!(root.join("master/not an id").exists());
    std::fs::remove_dir(root.join("master/not an id")).expect("rmdir");

    std::fs::create_dir(root.join("caches/lowercase-is-not-base32hex")).expect("mkdir");
    let err = FakeStore::open(&root).expect_err("foreign cache");
    assert!(err.to_string().contains("lowercase"), "{err}");
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_untouched() {
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("home");
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
    write(&root.join("tmp/precious"), "keep me");
    let err = FakeStore::open(&root).expect_err("not a store");
    assert!(err.to_string().contains("not a fake store"), "{err}");
    assert_eq!(
        tree(&root),
        vec!["tmp".to_owned(), "tmp/precious".to_owned()]
    );

    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    drop(FakeStore::open(&empty).expect("an empty directory becomes a store"));
    FakeStore::open(&empty).expect("and opens again");
}

#[test]
fn a_temporary_store_is_removed_with_its_last_handle() {
    let store = FakeStore::new().expect("open");
    let root = store.root().to_owned();
    let clone = store.clone();
    drop(store);
    assert!(root.is_dir());
    // Even if the builder left read-only directories behind.
    std::fs::create_dir_all(root.join("state/ro/inner")).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("state/ro"),
        std::fs::Permissions::from_mode(0o500),
    )
    .expect("chmod");
    drop(clone);
    assert!(!root.exists(), "{:?}", tree(&root));
}
