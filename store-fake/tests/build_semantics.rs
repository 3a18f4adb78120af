//! The build contract: bases, errors, panics, cancellation, logs, faults, deletes.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Failed, id, is_root, list, read, write};
use futures::FutureExt;
use store_api::{BuildError, Store, StoreError, StoreExt};
use store_fake::FakeStore;

async fn build_with(store: &FakeStore, base: Option<&str>, name: &str, file: &str, contents: &str) {
    let (file, contents) = (file.to_owned(), contents.to_owned());
    let base = base.map(id);
    store
        .build(base.as_ref(), &id(name), |dir| async move {
            write(&dir.join(file), &contents);
            Ok::<(), Failed>(())
        })
        .await
        .expect("build");
}

fn building_dir_is_empty(store: &FakeStore) {
    assert_eq!(list(&store.root().join("building")), Vec::<String>::new());
}

#[tokio::test]
async fn missing_base_is_a_typed_error_and_the_function_does_not_run() {
    let store = FakeStore::new().expect("open");
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = Arc::clone(&ran);
    let err = store
        .build(Some(&id("nope")), &id("x"), |_dir| async move {
            ran2.store(true, Ordering::SeqCst);
            Ok::<(), Failed>(())
        })
        .await
        .expect_err("missing base");
    assert!(
        matches!(err, BuildError::Store(StoreError::MissingBase { ref base }) if *base == id("nope")),
        "{err:?}"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(store.result(&id("x")).await.expect("result"), None);
    assert_eq!(store.builds_in_progress(), 0);
    building_dir_is_empty(&store);
}

#[tokio::test]
async fn building_an_existing_result_is_rejected_and_changes_nothing() {
    let store = FakeStore::new().expect("open");
    build_with(&store, None, "a", "f", "first").await;
    let err = store
        .build(None, &id("a"), |_dir| async {
            panic!("must not run");
            #[allow(unreachable_code)]
            Ok::<(), Failed>(())
        })
        .await
        .expect_err("already built");
    assert!(
        matches!(err, BuildError::Store(StoreError::AlreadyBuilt { .. })),
        "{err:?}"
    );
    let a = store
        .result(&id("a"))
        .await
        .expect("result")
        .expect("still there");
    assert_eq!(read(&a.join("f")), "first");
}

#[tokio::test]
async fn a_second_build_of_a_running_id_is_rejected() {
    let store = FakeStore::new().expect("open");
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .build(None, &id("a"), |dir| async move {
                    write(&dir.join("f"), "first");
                    wait.await.expect("released");
                    Ok::<(), Failed>(())
                })
                .await
        })
    };
    while store.builds_in_progress() == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        store.result(&id("a")).await.expect("result"),
        None,
        "not while running"
    );
    let err = store
        .build(None, &id("a"), |_dir| async { Ok::<(), Failed>(()) })
        .await
        .expect_err("in progress");
    assert!(
        matches!(err, BuildError::Store(StoreError::BuildInProgress { .. })),
        "{err:?}"
    );
    release.send(()).expect("send");
    first.await.expect("join").expect("first build");
    let a = store
        .result(&id("a"))
        .await
        .expect("result")
        .expect("built");
    assert_eq!(read(&a.join("f")), "first");
}

#[tokio::test]
async fn the_function_error_comes_back_untouched() {
    #[derive(Debug, PartialEq)]
    struct StepError {
        code: i32,
        message: String,
    }
    let store = FakeStore::new().expect("open");
    let err = store
        .build(None, &id("x"), |dir| async move {
            write(&dir.join("half"), "written");
            Err::<(), _>(StepError {
                code: 7,
                message: "no".into(),
            })
        })
        .await
        .expect_err("fails");
    assert_eq!(
        err.into_failed(),
        Some(StepError {
            code: 7,
            message: "no".into()
        })
    );
    assert_eq!(store.result(&id("x")).await.expect("result"), None);
    building_dir_is_empty(&store);
    // Built again afresh: nothing of the failed attempt is visible.
    store
        .build(None, &id("x"), |dir| async move {
            assert_eq!(list(&dir), Vec::<String>::new());
            Ok::<(), Failed>(())
        })
        .await
        .expect("rebuild");
}

#[tokio::test]
async fn log_file_is_in_the_build_dir_then_in_the_result() {
    let store = FakeStore::new().expect("open");
    let a = id("a");
    let store2 = store.clone();
    store
        .build(None, &a, |dir| async move {
            let log = store2.log_file(&id("a")).await.expect("log_file");
            assert_eq!(log, dir.join("log"));
            write(&log, "step a\n");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build");
    let result = store.result(&a).await.expect("result").expect("built");
    let log = store.log_file(&a).await.expect("log_file");
    assert_eq!(log, result.join("log"));
    assert_eq!(read(&log), "step a\n");

    // A child starts with the base's log in its directory (it is part of the result).
    let store2 = store.clone();
    store
        .build(Some(&a), &id("b"), |dir| async move {
            assert_eq!(read(&dir.join("log")), "step a\n");
            let log = store2.log_file(&id("b")).await.expect("log_file");
            write(&log, "step b\n");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build b");
    assert_eq!(
        read(&store.log_file(&id("b")).await.expect("log")),
        "step b\n"
    );
    assert_eq!(read(&store.log_file(&a).await.expect("log")), "step a\n");
}

#[tokio::test]
async fn a_base_is_cloned_faithfully() {
    use std::os::unix::fs::symlink;
    let store = FakeStore::new().expect("open");
    store
        .build(None, &id("base"), |dir| async move {
            let set_mode = |p: PathBuf, mode: u32| {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod")
            };
            write(&dir.join("plain"), "plain");
            set_mode(dir.join("plain"), 0o640);
            write(&dir.join("tool"), "#!/bin/sh\n");
            set_mode(dir.join("tool"), 0o755);
            write(&dir.join("suid"), "s");
            set_mode(dir.join("suid"), 0o4755);
            std::fs::create_dir(dir.join("empty")).expect("mkdir");
            std::fs::create_dir_all(dir.join("ro/inner")).expect("mkdir");
            write(&dir.join("ro/inner/file"), "deep");
            set_mode(dir.join("ro"), 0o555);
            symlink("plain", dir.join("link")).expect("symlink");
            symlink("/does/not/exist", dir.join("dangling")).expect("symlink");
            symlink("ro", dir.join("dirlink")).expect("symlink");
            std::fs::hard_link(dir.join("plain"), dir.join("hard")).expect("hard link");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dir.join("fifo"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .expect("mkfifo");
            if is_root() {
                write(&dir.join("owned"), "o");
                std::os::unix::fs::lchown(dir.join("owned"), Some(1234), Some(5678))
                    .expect("chown");
            }
            let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            std::fs::File::options()
                .write(true)
                .open(dir.join("plain"))
                .expect("open")
                .set_modified(old)
                .expect("set mtime");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build base");

    let base_dir = store
        .result(&id("base"))
        .await
        .expect("result")
        .expect("built");
    check_tree(&base_dir);
    store
        .build(Some(&id("base")), &id("child"), |dir| async move {
            check_tree(&dir);
            Ok::<(), Failed>(())
        })
        .await
        .expect("build child");
    let child = store
        .result(&id("child"))
        .await
        .expect("result")
        .expect("built");
    check_tree(&child);
}

fn check_tree(dir: &std::path::Path) {
    let mode = |name: &str| {
        std::fs::symlink_metadata(dir.join(name))
            .expect(name)
            .mode()
    };
    assert_eq!(read(&dir.join("plain")), "plain");
    assert_eq!(mode("plain") & 0o7777, 0o640);
    assert_eq!(mode("tool") & 0o7777, 0o755);
    assert_eq!(mode("suid") & 0o7777, 0o4755, "setuid bit kept");
    assert!(
        std::fs::symlink_metadata(dir.join("empty"))
            .expect("empty")
            .is_dir()
    );
    assert_eq!(list(&dir.join("empty")), Vec::<String>::new());
    assert_eq!(mode("ro") & 0o7777, 0o555);
    assert_eq!(read(&dir.join("ro/inner/file")), "deep");
    assert_eq!(
        std::fs::read_link(dir.join("link")).expect("link"),
        PathBuf::from("plain")
    );
    assert_eq!(
        std::fs::read_link(dir.join("dangling")).expect("dangling"),
        PathBuf::from("/does/not/exist")
    );
    assert!(
        std::fs::symlink_metadata(dir.join("dirlink"))
            .expect("dirlink")
            .is_symlink()
    );
    let plain = std::fs::metadata(dir.join("plain")).expect("plain");
    let hard = std::fs::metadata(dir.join("hard")).expect("hard");
    assert_eq!(plain.ino(), hard.ino(), "hard links stay hard links");
    assert_eq!(plain.nlink(), 2);
    assert_eq!(plain.mtime(), 1_000_000_000, "mtime kept");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(dir.join("fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    if is_root() {
        let owned = std::fs::symlink_metadata(dir.join("owned")).expect("owned");
        assert_eq!((owned.uid(), owned.gid()), (1234, 5678), "owners kept");
    }
}

#[tokio::test]
async fn a_panic_is_resumed_after_cleanup() {
    let store = FakeStore::new().expect("open");
    build_with(&store, None, "base", "f", "base").await;
    let outcome =
        std::panic::AssertUnwindSafe(store.build(Some(&id("base")), &id("p"), |dir| async move {
            write(&dir.join("junk"), "left by the panicking attempt");
            tokio::task::yield_now().await;
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<(), Failed>(())
        }))
        .catch_unwind()
        .await;
    let payload = outcome.expect_err("the panic comes back");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"boom"),
        "original payload"
    );
    assert_eq!(store.result(&id("p")).await.expect("result"), None);
    assert_eq!(store.builds_in_progress(), 0);
    building_dir_is_empty(&store);

    // A panic while making the future (before any `.await`) is handled too.
    let outcome = std::panic::AssertUnwindSafe(store.build(None, &id("p"), |_dir| {
        if id("p").as_str() == "p" {
            panic!("sync boom");
        }
        async { Ok::<(), Failed>(()) }
    }))
    .catch_unwind()
    .await;
    assert!(outcome.is_err());
    assert_eq!(store.builds_in_progress(), 0);

    store
        .build(Some(&id("base")), &id("p"), |dir| async move {
            assert_eq!(
                list(&dir),
                vec!["f".to_owned()],
                "afresh: no junk from the panic"
            );
            Ok::<(), Failed>(())
        })
        .await
        .expect("rebuild after panic");
}

#[tokio::test]
async fn a_cancelled_build_records_nothing_and_can_run_again() {
    let store = FakeStore::new().expect("open");
    build_with(&store, None, "base", "f", "base").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let started2 = Arc::clone(&started);
    let (base, c) = (id("base"), id("c"));
    let build = store.build(Some(&base), &c, |dir| async move {
        write(&dir.join("junk"), "left by the cancelled attempt");
        started2.notify_one();
        std::future::pending::<()>().await;
        Ok::<(), Failed>(())
    });
    tokio::select! {
        _ = build => panic!("the build never ends by itself"),
        () = async { started.notified().await; tokio::task::yield_now().await } => {}
    }
    // The select dropped the build future mid-way.
    assert_eq!(store.builds_in_progress(), 0);
    assert_eq!(store.result(&id("c")).await.expect("result"), None);
    building_dir_is_empty(&store);

    // Dropped at another await point, via a timeout.
    let timed_out = tokio::time::timeout(
        Duration::from_millis(20),
        store.build(None, &id("c"), |dir| async move {
            write(&dir.join("junk2"), "x");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), Failed>(())
        }),
    )
    .await;
    assert!(timed_out.is_err());
    assert_eq!(store.builds_in_progress(), 0);

    // Dropped before it was ever polled.
    drop(store.build(None, &id("c"), |_dir| async { Ok::<(), Failed>(()) }));
    assert_eq!(store.builds_in_progress(), 0);

    store
        .build(Some(&id("base")), &id("c"), |dir| async move {
            assert_eq!(
                list(&dir),
                vec!["f".to_owned()],
                "afresh after cancellation"
            );
            Ok::<(), Failed>(())
        })
        .await
        .expect("rebuild");
    assert_eq!(store.results(), vec![id("base"), id("c")]);
}

#[tokio::test]
async fn injected_faults_fail_builds_after_the_function_succeeded() {
    let store = FakeStore::new().expect("open");
    store.fail_next_builds(2);
    // A build whose function fails does not use up a fault.
    let err = store
        .build(None, &id("f"), |_dir| async { Err::<(), _>(Failed) })
        .await
        .expect_err("fn fails");
    assert!(matches!(err, BuildError::Failed(Failed)));
    for name in ["a", "b"] {
        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = Arc::clone(&ran);
        let err = store
            .build(None, &id(name), |dir| async move {
                write(&dir.join("f"), "x");
                ran2.store(true, Ordering::SeqCst);
                Ok::<(), Failed>(())
            })
            .await
            .expect_err("fault");
        assert!(
            matches!(&err, BuildError::Store(StoreError::Io { source, .. })
                if source.to_string().contains("fail_next_builds")),
            "{err:?}"
        );
        assert!(
            ran.load(Ordering::SeqCst),
            "the function ran before the fault"
        );
        assert_eq!(store.result(&id(name)).await.expect("result"), None);
    }
    assert_eq!(store.builds_in_progress(), 0);
    building_dir_is_empty(&store);
    assert_eq!(list(&store.root().join("tmp")), Vec::<String>::new());
    build_with(&store, None, "a", "f", "third time").await;
    assert_eq!(store.results(), vec![id("a")]);
    store.fail_next_builds(1);
    store.fail_next_builds(0);
    build_with(&store, None, "b", "f", "cancelled fault").await;
}

#[tokio::test]
async fn deleting_a_base_never_affects_what_was_built_from_it() {
    let store = FakeStore::new().expect("open");
    build_with(&store, None, "base", "output", "ok").await;
    build_with(&store, Some("base"), "sub", "more", "+").await;

    // A build from base that is running while base is deleted.
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .build(Some(&id("base")), &id("running"), |dir| async move {
                    wait.await.expect("go");
                    let orig = read(&dir.join("output"));
                    write(&dir.join("output"), &(orig + "!"));
                    Ok::<(), Failed>(())
                })
                .await
        })
    };
    while store.builds_in_progress() == 0 {
        tokio::task::yield_now().await;
    }
    // Let the running build get past its clone of base.
    tokio::task::yield_now().await;

    store.delete(&id("base")).await.expect("delete base");
    store
        .delete(&id("base"))
        .await
        .expect("delete again: absent is fine");
    assert_eq!(store.result(&id("base")).await.expect("result"), None);
    go.send(()).expect("go");
    running.await.expect("join").expect("running build");

    let sub = store
        .result(&id("sub"))
        .await
        .expect("result")
        .expect("sub");
    assert_eq!(read(&sub.join("output")), "ok");
    assert_eq!(read(&sub.join("more")), "+");
    let running = store
        .result(&id("running"))
        .await
        .expect("result")
        .expect("running");
    assert_eq!(read(&running.join("output")), "ok!");
    // sub can still be a base.
    build_with(&store, Some("sub"), "subsub", "x", "y").await;
    let err = store
        .build(Some(&id("base")), &id("late"), |_dir| async {
            Ok::<(), Failed>(())
        })
        .await
        .expect_err("base is gone");
    assert!(matches!(
        err,
        BuildError::Store(StoreError::MissingBase { .. })
    ));
    // Deleting an id that is being built is a no-op for the build.
    store.delete(&id("nothing-here")).await.expect("absent");
    assert_eq!(
        store.results(),
        vec![id("running"), id("sub"), id("subsub")]
    );
    // Nothing of base is left on disk.
    assert!(!store.root().join("result/base").exists());
    assert!(!store.root().join("master/base").exists());
    assert_eq!(list(&store.root().join("trash")), Vec::<String>::new());
    store.complete_deletes().await.expect("complete_deletes");
}

#[tokio::test]
async fn deleting_an_id_while_it_is_built_does_not_disturb_the_build() {
    let store = FakeStore::new().expect("open");
    let store2 = store.clone();
    store
        .build(None, &id("a"), |dir| async move {
            store2.delete(&id("a")).await.expect("delete during build");
            write(&dir.join("f"), "kept");
            Ok::<(), Failed>(())
        })
        .await
        .expect("build");
    let a = store
        .result(&id("a"))
        .await
        .expect("result")
        .expect("built");
    assert_eq!(read(&a.join("f")), "kept");
}

#[tokio::test]
async fn state_dir_exists_and_store_operations_leave_it_alone() {
    let store = FakeStore::new().expect("open");
    assert!(store.state_dir().is_dir());
    assert!(store.state_dir().starts_with(store.root()));
    write(&store.state_dir().join("db.sqlite"), "mine");
    build_with(&store, None, "a", "f", "x").await;
    store.delete(&id("a")).await.expect("delete");
    store.complete_deletes().await.expect("complete_deletes");
    assert_eq!(read(&store.state_dir().join("db.sqlite")), "mine");
    assert_eq!(list(store.state_dir()), vec!["db.sqlite".to_owned()]);
}

#[tokio::test]
async fn df_reads_the_real_filesystem_and_fails_when_it_cannot() {
    let store = FakeStore::new().expect("open");
    let free = store.df().await.expect("df");
    assert!((0.0..=100.0).contains(&free), "{free}");
    let expected = {
        let s = rustix::fs::statvfs(store.root()).expect("statvfs");
        s.f_bavail as f64 * 100.0 / s.f_blocks as f64
    };
    assert!((free - expected).abs() < 1.0, "{free} vs {expected}");

    let parent = tempfile::tempdir().expect("tempdir");
    let root = parent.path().join("store");
    let store = FakeStore::open(&root).expect("open");
    std::fs::rename(&root, parent.path().join("moved")).expect("move the root away");
    let err = store.df().await.expect_err("unreadable root");
    assert!(err.to_string().contains("statvfs"), "{err}");
}
