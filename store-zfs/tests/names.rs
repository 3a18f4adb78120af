//! Hostile cache names and store locations.

mod common;
use common::{Env, FakeEnv};

use std::sync::Arc;

use common::{cname, id, leftovers, open, pool, read};
use store_api::{ReleaseOutcome, Store, StoreExt, User};
use store_zfs::testing::RecordingRunner;
use store_zfs::{SystemRunner, ZfsOptions, ZfsStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cache_names_never_reach_a_command_line() {
    let Some(pool) = pool("hostile_cache_names_never_reach_a_command_line") else {
        return;
    };
    hostile_cache_names_never_reach_a_command_line_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cache_names_never_reach_a_command_line_fake() {
    hostile_cache_names_never_reach_a_command_line_on(&FakeEnv::new()).await;
}

async fn hostile_cache_names_never_reach_a_command_line_on(pool: &impl Env) {
    let (store, rec) = open(&pool).await;
    let long_a = format!("{}a", "é".repeat(63));
    let long_b = format!("{}b", "é".repeat(63));
    let hostile = [
        "-R",
        "../x",
        "a@b",
        "pool/other",
        "%",
        "a b",
        "--",
        "c:/windows/cache",
        ".",
        "..",
        "tab\there",
        long_a.as_str(),
        long_b.as_str(),
    ];
    for (i, name) in hostile.iter().enumerate() {
        let lease = store.cache(User::ROOT, &cname(name)).await.expect(name);
        std::fs::write(lease.path().join("f"), format!("{i}")).expect("write");
        assert_eq!(
            lease.release().await.expect("release"),
            ReleaseOutcome::Published,
            "{name}"
        );
    }
    let lines = rec.take_lines();
    for line in &lines {
        let args: Vec<&str> = line.split(' ').collect();
        // The dataset arguments: after `--`, or the last one for `promote`/`set` (which take
        // no `--`). Options before them are the store's own.
        let names: Vec<&str> = match args.iter().position(|a| *a == "--") {
            Some(p) => args[p + 1..].to_vec(),
            None => args.last().copied().into_iter().collect(),
        };
        for ds in names {
            assert!(
                !ds.starts_with('-'),
                "option-like dataset argument in: {line}"
            );
            for name in hostile {
                let parts: Vec<&str> = ds.split(['/', '@']).collect();
                assert!(
                    !parts.contains(&name),
                    "{name:?} is a raw name component in: {line}"
                );
                if name.contains('/') || name.contains('@') {
                    assert!(
                        !ds.contains(name),
                        "{name:?} reached a command line: {line}"
                    );
                }
            }
        }
    }
    // Every name is distinct storage, survives a reopen and is listed by its real name.
    drop(store);
    let (store, _rec) = open(&pool).await;
    let mut listed: Vec<String> = store.caches().iter().map(|c| c.to_string()).collect();
    listed.sort();
    let mut want: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for (i, name) in hostile.iter().enumerate() {
        let lease = store.cache(User::ROOT, &cname(name)).await.expect(name);
        assert_eq!(read(lease.path().join("f")), format!("{i}"), "{name}");
    }
    store.wait_idle().await;
    for name in hostile {
        store.delete_cache(&cname(name)).await.expect(name);
    }
    assert!(
        leftovers(&pool, &[]).is_empty(),
        "{:?}",
        leftovers(&pool, &[])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations() {
    let Some(pool) = pool("locations") else {
        return;
    };
    // Missing pool, non-ZFS path, a snapshot, garbage: clear errors.
    let err = ZfsStore::open("zt-znosuchpool")
        .await
        .expect_err("missing")
        .to_string();
    assert!(
        err.contains("not found") && err.contains("zt-znosuchpool"),
        "{err}"
    );
    let err = ZfsStore::open("/tmp")
        .await
        .expect_err("not zfs")
        .to_string();
    assert!(
        err.contains("no ZFS pool or dataset is mounted at /tmp"),
        "{err}"
    );
    let err = ZfsStore::open("-R").await.expect_err("bad").to_string();
    assert!(err.contains("not a valid ZFS name"), "{err}");
    let err = ZfsStore::open(format!("{}@x", pool.name()))
        .await
        .expect_err("snapshot")
        .to_string();
    assert!(
        err.contains("not a valid ZFS name") || err.contains("not found"),
        "{err}"
    );

    // The pool by name and by mount path; a dataset below the root by name and by path.
    let by_name = ZfsStore::open(pool.name()).await.expect("by name");
    assert_eq!(by_name.dataset(), pool.name());
    assert_eq!(by_name.root(), pool.mountpoint());
    drop(by_name);
    let by_path = ZfsStore::open(pool.mountpoint().to_string_lossy())
        .await
        .expect("by path");
    assert_eq!(by_path.dataset(), pool.name());
    drop(by_path);
    let sub = format!("{}/zstore", pool.name());
    let lock = store_zfs::daemon_lock::DaemonLock::acquire_blocking().expect("daemon lock");
    std::process::Command::new("zfs")
        .args(["create", "--", &sub])
        .status()
        .expect("zfs");
    drop(lock);
    let rec = RecordingRunner::new(Arc::new(SystemRunner));
    let store = ZfsStore::open_with(
        &sub,
        ZfsOptions {
            runner: rec.clone(),
            ..ZfsOptions::default()
        },
    )
    .await
    .expect("dataset below root");
    assert_eq!(store.dataset(), sub);
    assert_eq!(store.state_dir(), pool.mountpoint().join("zstore/state"));
    store
        .build(None, &id("x"), |_| async { Ok::<_, ()>(()) })
        .await
        .expect("build");
    drop(store);
    let store = ZfsStore::open(pool.mountpoint().join("zstore").to_string_lossy())
        .await
        .expect("dataset by path");
    assert_eq!(store.dataset(), sub);
    assert!(store.result(&id("x")).await.expect("r").is_some());
    assert!(!rec.take_lines().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_cap_unmounts_least_recently_used() {
    let Some(pool) = pool("mount_cap_unmounts_least_recently_used") else {
        return;
    };
    let store = ZfsStore::open_with(
        pool.mountpoint().to_string_lossy(),
        ZfsOptions {
            max_mounted_results: Some(3),
            ..ZfsOptions::default()
        },
    )
    .await
    .expect("open");
    for i in 0..6 {
        let me = id(&format!("r{i}"));
        store
            .build(None, &me, |dir| async move {
                std::fs::write(dir.join("f"), format!("{i}"))
            })
            .await
            .expect("build");
    }
    let result_mounts = || {
        pool.mounted()
            .into_iter()
            .filter(|d| d.contains("/result/"))
            .count()
    };
    assert!(result_mounts() <= 3, "{}", result_mounts());
    // Every result is still readable through result(), which remounts on demand.
    for i in 0..6 {
        let dir = store
            .result(&id(&format!("r{i}")))
            .await
            .expect("r")
            .expect("built");
        assert_eq!(read(dir.join("f")), format!("{i}"));
        assert!(result_mounts() <= 3);
    }
}
