//! What a hostile or careless build function or cache holder can leave in its directory must
//! never make the store read, write or delete anything outside its root.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Failed, cache_name, id, user, write};
use store_api::{BuildError, Store, StoreExt};
use store_fake::FakeStore;

/// Every file under `dir` with its contents, and every directory (as `None`).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<String>> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.expect("walk");
            let rel = e.path().strip_prefix(dir).expect("under dir").to_owned();
            let contents = e
                .file_type()
                .is_file()
                .then(|| std::fs::read_to_string(e.path()).expect("read"));
            (rel, contents)
        })
        .collect()
}

/// A directory the test owns, outside every store, with files worth keeping.
fn precious() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("file"), "precious");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    write(&dir.path().join("sub/deep"), "also precious");
    dir
}

/// Replaces the directory `dir` (and whatever is in it) with a symlink to `target`.
fn replace_with_link(dir: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(dir)?;
    std::os::unix::fs::symlink(target, dir)
}

#[tokio::test]
async fn a_symlinked_top_directory_never_empties_files_outside_the_store() {
    let outside = precious();
    let before = snapshot(outside.path());
    let store = FakeStore::new().expect("open");

    // A build from nothing that swaps its directory for a link out of the store.
    let target = outside.path().to_owned();
    let built = store
        .build(None, &id("a"), |dir| async move {
            replace_with_link(&dir, &target)?;
            Ok::<(), std::io::Error>(())
        })
        .await;
    assert!(
        matches!(built, Err(BuildError::Store(_))),
        "a build whose directory became a link must fail in the store: {built:?}"
    );
    assert_eq!(store.result(&id("a")).await.expect("result"), None);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "files outside the store changed"
    );

    // The same from a base.
    store
        .build(None, &id("base"), |dir| async move {
            write(&dir.join("out"), "base");
            Ok::<(), Failed>(())
        })
        .await
        .expect("base");
    let target = outside.path().to_owned();
    let built = store
        .build(Some(&id("base")), &id("b"), |dir| async move {
            replace_with_link(&dir, &target)?;
            Ok::<(), std::io::Error>(())
        })
        .await;
    assert!(matches!(built, Err(BuildError::Store(_))), "{built:?}");
    assert_eq!(store.result(&id("b")).await.expect("result"), None);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "files outside the store changed"
    );

    // The id builds again, normally, and its result is a real directory in the store.
    store
        .build(None, &id("a"), |dir| async move {
            write(&dir.join("out"), "fine");
            Ok::<(), Failed>(())
        })
        .await
        .expect("rebuild");
    let path = store
        .result(&id("a"))
        .await
        .expect("result")
        .expect("built");
    let meta = std::fs::symlink_metadata(&path).expect("lstat");
    assert!(meta.is_dir() && !meta.file_type().is_symlink());

    // A cache holder that swaps its copy for a link: the release fails, the cache stays at
    // its version, and no later copy reads or writes through the link.
    let name = cache_name("c");
    let lease = store.cache(user(0, 0), &name).await.expect("cache");
    replace_with_link(lease.path(), outside.path()).expect("swap the copy");
    let released = lease.release().await;
    assert!(
        released.is_err(),
        "publishing a link must fail: {released:?}"
    );
    assert_eq!(
        snapshot(outside.path()),
        before,
        "files outside the store changed"
    );
    let lease = store.cache(user(0, 0), &name).await.expect("cache again");
    let copy = std::fs::symlink_metadata(lease.path()).expect("lstat");
    assert!(copy.is_dir() && !copy.file_type().is_symlink());
    assert!(
        snapshot(lease.path()).is_empty(),
        "the cache is still at version 0"
    );
    drop(lease);
    assert_eq!(store.caches()[0].version, 0);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "files outside the store changed"
    );
}
