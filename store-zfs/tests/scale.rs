//! Thousands of results on zfs-fuse (whose daemon mounts at most 1000 filesystems).
//! Slow (minutes): `cargo test -p store-zfs --test scale -- --ignored`; `ZSTORE_SCALE_N`
//! sets the count (default 2000).

mod common;

use std::time::Instant;

use common::{id, open, pool, read};
use store_api::{Store, StoreExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: builds thousands of results"]
async fn thousands_of_results() {
    let Some(pool) = pool("thousands_of_results") else {
        return;
    };
    let n: usize = std::env::var("ZSTORE_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (store, rec) = open(&pool).await;
    let base = id("base");
    store
        .build(None, &base, |dir| async move {
            std::fs::write(dir.join("f"), "b")
        })
        .await
        .expect("base");
    let mut per_build = Vec::new();
    for i in 0..n {
        let me = id(&format!("r{i}"));
        // Alternate chains and fan-out from the base.
        let parent = if i % 2 == 0 {
            base.clone()
        } else {
            id(&format!("r{}", i - 1))
        };
        rec.take();
        let t = Instant::now();
        store
            .build(Some(&parent), &me, |dir| async move {
                std::fs::write(dir.join("i"), format!("{i}"))
            })
            .await
            .unwrap_or_else(|e| panic!("build {i}: {e}"));
        per_build.push((
            t.elapsed(),
            rec.take().iter().filter(|c| c.is_syncing()).count(),
        ));
        if i % 250 == 0 {
            eprintln!(
                "{i} results, last build {:?}, mounts {}",
                per_build[i].0,
                pool.mounted().len()
            );
        }
    }
    assert!(
        per_build.iter().all(|(_, s)| *s == 2),
        "2 syncing commands per build"
    );
    let avg = |s: &[(std::time::Duration, usize)]| {
        s.iter().map(|(d, _)| d.as_secs_f64()).sum::<f64>() / s.len() as f64
    };
    let (first, last) = (
        avg(&per_build[..100.min(n)]),
        avg(&per_build[n - 100.min(n)..]),
    );
    eprintln!(
        "mean build: first 100 {first:.3}s, last 100 {last:.3}s; mounts {}",
        pool.mounted().len()
    );
    assert!(pool.mounted().len() < 300, "mounts stay under the cap");
    // Every result readable; hits cost no command when mounted.
    for i in (0..n).step_by(97) {
        let dir = store
            .result(&id(&format!("r{i}")))
            .await
            .expect("r")
            .expect("built");
        assert_eq!(read(dir.join("i")), format!("{i}"));
    }
    rec.take();
    let dir = store
        .result(&id(&format!("r{}", n - 1)))
        .await
        .expect("r")
        .expect("built");
    assert!(dir.exists());
    drop(store);
    let t = Instant::now();
    let (store, _rec) = open(&pool).await;
    eprintln!("reopen with {n} results: {:?}", t.elapsed());
    assert_eq!(store.results().len(), n + 1);
}
