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
    assert_eq!(store.cache_info()[0].version, 0);
    assert_eq!(
        snapshot(outside.path()),
        before,
        "files outside the store changed"
    );
}

/// Runs a command the test needs (`chattr`, `mount`); `false` if it could not.
fn try_run(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Clears the immutable flag under a directory when dropped, so that a failing test can still
/// remove its temporary directory.
struct MakeMutable(PathBuf);

impl Drop for MakeMutable {
    fn drop(&mut self) {
        try_run("chattr", &["-R", "-i", &self.0.to_string_lossy()]);
    }
}

#[tokio::test]
async fn an_unremovable_leftover_does_not_brick_the_store() {
    if !common::is_root() {
        eprintln!("skipped: making a file immutable needs root");
        return;
    }
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let _mutable = MakeMutable(root.clone());
    {
        let store = FakeStore::open(&root).expect("open");
        let failed = store
            .build(None, &id("x"), |dir| async move {
                let file = dir.join("immutable");
                write(&file, "cannot be removed");
                if try_run("chattr", &["+i", &file.to_string_lossy()]) {
                    Err(Failed)
                } else {
                    Ok(())
                }
            })
            .await;
        if failed.is_ok() {
            eprintln!("skipped: chattr +i does not work on this filesystem");
            return;
        }
        assert_eq!(store.leftovers().len(), 1, "the failed build is left over");
        assert!(
            store.complete_deletes().await.is_err(),
            "space is not freed"
        );
    }
    let store = FakeStore::open(&root).expect("an immutable leftover must not stop the open");
    assert_eq!(store.leftovers().len(), 1, "still left over, and reported");
    // Fully usable: the same id builds afresh, more builds and caches work (their scratch
    // names must not meet the leftover's).
    for n in 0..4 {
        store
            .build(None, &id(&format!("y{n}")), |dir| async move {
                write(&dir.join("out"), "y");
                Ok::<(), Failed>(())
            })
            .await
            .expect("build");
        store.delete(&id(&format!("y{n}"))).await.expect("delete");
    }
    store
        .build(None, &id("x"), |dir| async move {
            assert!(
                common::list(&dir).is_empty(),
                "the rebuilt id starts afresh"
            );
            Ok::<(), Failed>(())
        })
        .await
        .expect("rebuild x");
    let lease = store
        .cache(user(0, 0), &cache_name("c"))
        .await
        .expect("cache");
    lease.release().await.expect("release");
    // Once the file may go again, the leftover goes too.
    for leftover in store.leftovers() {
        for e in walkdir::WalkDir::new(&leftover).into_iter().flatten() {
            try_run("chattr", &["-i", &e.path().to_string_lossy()]);
        }
    }
    store.complete_deletes().await.expect("removable now");
    assert!(store.leftovers().is_empty());
}

/// The mountpoints at or under `dir`, from `/proc/self/mounts` (deepest first).
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mounts").expect("mount table");
    let prefix = dir.to_string_lossy().into_owned();
    let mut found: Vec<String> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// Unmounts whatever is still mounted under a directory when dropped, so that a failing
/// test leaves no mount behind.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        for m in mounts_under(&self.0) {
            try_run("umount", &[&m]);
        }
    }
}

#[tokio::test]
async fn removal_never_descends_into_a_mount_point_left_in_a_build_directory() {
    if !common::is_root() {
        eprintln!("skipped: bind mounts need root");
        return;
    }
    let outside = precious();
    let before = snapshot(outside.path());
    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let _unmount = Unmounter(root.clone());
    let store = FakeStore::open(&root).expect("open");
    let host = outside.path().to_string_lossy().into_owned();
    // A failed build that leaves a host directory bound inside its directory.
    let failed = store
        .build(None, &id("x"), |dir| async move {
            let mnt = dir.join("mnt");
            std::fs::create_dir(&mnt).expect("mkdir");
            if try_run("mount", &["--bind", &host, &mnt.to_string_lossy()]) {
                Err(Failed)
            } else {
                Ok(())
            }
        })
        .await;
    if failed.is_ok() {
        eprintln!("skipped: mount --bind failed");
        return;
    }
    assert_eq!(
        snapshot(outside.path()),
        before,
        "removal went into the bind mount"
    );
    assert!(
        !store.leftovers().is_empty(),
        "the mount point is left over, and reported"
    );
    // A build that commits with a mount inside: its result does not copy what is mounted.
    let host = outside.path().to_string_lossy().into_owned();
    store
        .build(None, &id("y"), |dir| async move {
            let mnt = dir.join("mnt");
            std::fs::create_dir(&mnt).expect("mkdir");
            assert!(try_run("mount", &["--bind", &host, &mnt.to_string_lossy()]));
            Ok::<(), Failed>(())
        })
        .await
        .expect("build with a mount inside");
    store
        .build(Some(&id("y")), &id("z"), |dir| async move {
            assert!(
                common::list(&dir.join("mnt")).is_empty(),
                "a mount's contents were copied"
            );
            Ok::<(), Failed>(())
        })
        .await
        .expect("build from it");
    store.delete(&id("y")).await.expect("delete");
    assert_eq!(
        snapshot(outside.path()),
        before,
        "removal went into the bind mount"
    );
    for m in mounts_under(&root) {
        assert!(try_run("umount", &[&m]), "umount {m}");
    }
    store
        .complete_deletes()
        .await
        .expect("removable once unmounted");
    assert!(store.leftovers().is_empty());
    assert_eq!(snapshot(outside.path()), before);
}
