//! `delete` never breaks what was built from the deleted result, and reclaims it later.

mod common;
use common::{Env, FakeEnv};

use std::time::Duration;

use common::{id, leftovers, open, pool, read};
use store_api::{Store, StoreExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_base_with_children_and_running_build() {
    let Some(pool) = pool("delete_base_with_children_and_running_build") else {
        return;
    };
    delete_base_with_children_and_running_build_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_base_with_children_and_running_build_fake() {
    delete_base_with_children_and_running_build_on(&FakeEnv::new()).await;
}

async fn delete_base_with_children_and_running_build_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let (a, b, c) = (id("a"), id("b"), id("c"));
    store
        .build(
            None,
            &a,
            |dir| async move { std::fs::write(dir.join("f"), "a") },
        )
        .await
        .expect("a");
    store
        .build(Some(&a), &b, |dir| async move {
            std::fs::write(dir.join("g"), "b")
        })
        .await
        .expect("b");

    // A build from `a` is running while `a` is deleted.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let store = store.clone();
        let (a, c) = (a.clone(), c.clone());
        tokio::spawn(async move {
            store
                .build(Some(&a), &c, |dir| async move {
                    started_tx.send(()).expect("signal");
                    go_rx.await.expect("go");
                    let f = std::fs::read_to_string(dir.join("f"))?;
                    std::fs::write(dir.join("f"), f + "c")
                })
                .await
        })
    };
    started_rx.await.expect("started");
    store.delete(&a).await.expect("delete a");
    assert_eq!(store.result(&a).await.expect("result"), None);
    // b is intact; a new build of `a` does not collide with the hidden dataset.
    let b_dir = store.result(&b).await.expect("result").expect("b");
    assert_eq!(read(b_dir.join("f")), "a");
    store
        .build(None, &a, |dir| async move {
            std::fs::write(dir.join("f"), "a2")
        })
        .await
        .expect("rebuild a");
    assert_eq!(
        read(store.result(&a).await.expect("r").expect("a").join("f")),
        "a2"
    );
    go_tx.send(()).expect("go");
    running
        .await
        .expect("join")
        .expect("c builds although its base was deleted");
    assert_eq!(
        read(store.result(&c).await.expect("r").expect("c").join("f")),
        "ac"
    );

    // The old `a` is kept (hidden) while b and c depend on it, and goes with the last.
    store.delete(&b).await.expect("delete b");
    assert!(pool.datasets().iter().any(|d| d.ends_with("/result/a")));
    store.delete(&c).await.expect("delete c");
    assert_eq!(
        leftovers(&pool, &["result/a:1", "result/a:1@snap"]),
        Vec::<String>::new()
    );
    store.delete(&a).await.expect("delete a");
    store.delete(&a).await.expect("delete absent a");
    assert!(
        leftovers(&pool, &[]).is_empty(),
        "{:?}",
        leftovers(&pool, &[])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_results_are_reclaimed_at_open() {
    let Some(pool) = pool("hidden_results_are_reclaimed_at_open") else {
        return;
    };
    hidden_results_are_reclaimed_at_open_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_results_are_reclaimed_at_open_fake() {
    hidden_results_are_reclaimed_at_open_on(&FakeEnv::new()).await;
}

async fn hidden_results_are_reclaimed_at_open_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let (a, b) = (id("a"), id("b"));
    store
        .build(None, &a, |_| async { Ok::<_, ()>(()) })
        .await
        .expect("a");
    store
        .build(Some(&a), &b, |_| async { Ok::<_, ()>(()) })
        .await
        .expect("b");
    store.delete(&a).await.expect("delete a");
    drop(store);
    // Reopen: a stays hidden (b depends on it), b is a result, a is not.
    let (store, _rec) = open(&pool).await;
    assert_eq!(store.result(&a).await.expect("r"), None);
    assert!(store.result(&b).await.expect("r").is_some());
    store.delete(&b).await.expect("delete b");
    assert!(
        leftovers(&pool, &[]).is_empty(),
        "{:?}",
        leftovers(&pool, &[])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_read_only() {
    let Some(pool) = pool("results_are_read_only") else {
        return;
    };
    let (store, _rec) = open(&pool).await;
    let a = id("a");
    store
        .build(
            None,
            &a,
            |dir| async move { std::fs::write(dir.join("f"), "a") },
        )
        .await
        .expect("a");
    let dir = store.result(&a).await.expect("r").expect("a");
    use std::io::Write;
    let append = std::fs::OpenOptions::new().append(true).open(dir.join("f"));
    assert!(append.is_err(), "append to a result must fail");
    assert!(
        std::fs::write(dir.join("new"), "x").is_err(),
        "create in a result must fail"
    );
    assert!(
        std::fs::remove_file(dir.join("f")).is_err(),
        "unlink in a result must fail"
    );
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(dir.join("f")) {
        assert!(f.write_all(b"zz").is_err());
    }
    assert_eq!(read(dir.join("f")), "a");
    // A build from it sees the snapshot.
    let b = id("b");
    store
        .build(Some(&a), &b, |dir| async move {
            assert_eq!(std::fs::read_to_string(dir.join("f"))?, "a");
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("b");
    // Also after a reopen (mounted lazily, read-only).
    drop(store);
    let (store, _rec) = open(&pool).await;
    let dir = store.result(&a).await.expect("r").expect("a");
    assert!(std::fs::write(dir.join("f"), "x").is_err());
    assert_eq!(
        read(store.log_file(&a).await.expect("log").with_file_name("f")),
        "a"
    );
    store.wait_idle().await;
}

/// OBuilder keeps a read-only duplicate of the log open until after `build` returns: the
/// build directory cannot be unmounted then. The result is still recorded (its snapshot is
/// the result) and becomes read-only once the file is closed; a failed build's dataset is
/// reclaimed later and the id can be rebuilt at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_held_open_past_the_build() {
    let Some(pool) = pool("log_held_open_past_the_build") else {
        return;
    };
    let (store, _rec) = open(&pool).await;
    let a = id("a");
    let log = store.log_file(&a).await.expect("log path");
    let (tx, rx) = std::sync::mpsc::channel::<std::fs::File>();
    let holder = std::thread::spawn(move || {
        let f = rx.recv().expect("file");
        std::thread::sleep(Duration::from_millis(800));
        drop(f);
    });
    store
        .build(None, &a, |dir| async move {
            assert_eq!(dir.join("log"), log);
            std::fs::write(&log, "log line")?;
            tx.send(std::fs::File::open(&log)?).expect("send");
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("a");
    assert_eq!(read(store.log_file(&a).await.expect("log")), "log line");
    holder.join().expect("holder");
    let dir = store.result(&a).await.expect("r").expect("a");
    assert!(
        std::fs::write(dir.join("new"), "x").is_err(),
        "read-only once the log is closed"
    );
    assert_eq!(read(dir.join("log")), "log line");

    // The same for a failing build: its dataset stays until the file is closed.
    let b = id("b");
    let (tx, rx) = std::sync::mpsc::channel::<std::fs::File>();
    let holder = std::thread::spawn(move || {
        let f = rx.recv().expect("file");
        // Long enough to outlast the failed build's cleanup attempts even under emulation
        // (a zfs command takes 100-200 ms in the TCG guest).
        std::thread::sleep(Duration::from_secs(3));
        drop(f);
    });
    let err = store
        .build(None, &b, |dir| async move {
            std::fs::write(dir.join("log"), "failing")?;
            tx.send(std::fs::File::open(dir.join("log"))?)
                .expect("send");
            Err(std::io::Error::other("step failed"))
        })
        .await
        .expect_err("fails");
    assert!(err.into_failed().is_some());
    assert_eq!(store.result(&b).await.expect("r"), None);
    store
        .build(None, &b, |dir| async move {
            assert!(!dir.join("log").exists(), "fresh directory");
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("rebuild while the old attempt is still busy");
    holder.join().expect("holder");
    // Once the file is closed, the next delete (or build) retries the failed destroy.
    store.delete(&id("absent")).await.expect("delete");
    store.wait_idle().await;
    // The rebuild is `b:1` when the failed attempt's dataset was still there, `b` if the
    // machine was slow enough for it to be destroyed first; either way exactly one is left.
    let rebuilt = if pool
        .datasets()
        .expect("zfs list")
        .iter()
        .any(|d| d.ends_with("/result/b:1"))
    {
        "result/b:1"
    } else {
        "result/b"
    };
    let expected = [
        "result/a",
        "result/a@snap",
        rebuilt,
        &format!("{rebuilt}@snap"),
    ];
    let left = leftovers(&pool, &expected);
    assert!(left.is_empty(), "{left:?}");
    drop(store);
    // And a reopen finds nothing to reclaim.
    let (store, _rec) = open(&pool).await;
    assert!(store.result(&b).await.expect("r").is_some());
    let left = leftovers(&pool, &expected);
    assert!(left.is_empty(), "{left:?}");
}

/// A delete killed between `destroy -r`'s two steps leaves the dataset without its `@snap`
/// (found by `cargo xtask crash` on zfs-fuse): the next open must destroy it, whether or not
/// it was built from another result, and keep its base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_without_its_snapshot_is_reclaimed_at_open() {
    let Some(pool) = pool("a_result_without_its_snapshot_is_reclaimed_at_open") else {
        return;
    };
    a_result_without_its_snapshot_is_reclaimed_at_open_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_without_its_snapshot_is_reclaimed_at_open_fake() {
    a_result_without_its_snapshot_is_reclaimed_at_open_on(&FakeEnv::new()).await;
}

async fn a_result_without_its_snapshot_is_reclaimed_at_open_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let (a, b, c) = (id("a"), id("b"), id("c"));
    for (base, this) in [(None, &a), (Some(&a), &b), (None, &c)] {
        store
            .build(base, this, |dir| async move {
                std::fs::write(dir.join("f"), "x").map_err(|e| e.to_string())
            })
            .await
            .expect("build");
    }
    store.wait_idle().await;
    drop(store);
    let result_ds = |leaf: &str| {
        pool.datasets()
            .into_iter()
            .find(|d| d.rsplit('/').next() == Some(leaf) && d.contains("/result/"))
            .expect("result dataset")
    };
    let runner = pool.runner();
    for leaf in ["b", "c"] {
        let ds = result_ds(leaf);
        for args in [
            vec!["unmount", "--", &ds],
            vec!["destroy", "--", &format!("{ds}@snap")],
        ] {
            let out = runner
                .run(&store_zfs::Cmd::zfs(args.clone()))
                .await
                .expect("ran");
            assert!(
                out.success() || out.stderr.contains("not currently mounted"),
                "{args:?}: {}",
                out.stderr
            );
        }
    }
    let (store, _rec) = open(&pool).await;
    store.wait_idle().await;
    assert_eq!(store.result(&b).await.expect("r"), None);
    assert_eq!(store.result(&c).await.expect("r"), None);
    let kept = store.result(&a).await.expect("r").expect("a is kept");
    assert_eq!(read(kept.join("f")), "x");
    let left = leftovers(&pool, &["result/a", "result/a@snap"]);
    assert!(left.is_empty(), "{left:?}");
}
