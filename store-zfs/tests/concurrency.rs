//! Many builds from one base, and many holders of one cache, at once.

mod common;
use common::{Env, FakeEnv};

use common::{cname, id, leftovers, open, pool, read};
use store_api::{ReleaseOutcome, Store, StoreExt, User};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_builds_from_one_base() {
    let Some(pool) = pool("many_builds_from_one_base") else {
        return;
    };
    many_builds_from_one_base_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_builds_from_one_base_fake() {
    many_builds_from_one_base_on(&FakeEnv::new()).await;
}

async fn many_builds_from_one_base_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let base = id("base");
    store
        .build(None, &base, |dir| async move {
            std::fs::write(dir.join("f"), "base")
        })
        .await
        .expect("base");
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let me = id(&format!("child{i}"));
            store
                .build(Some(&base), &me, |dir| async move {
                    let f = std::fs::read_to_string(dir.join("f"))?;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    std::fs::write(dir.join("f"), format!("{f}+{i}"))
                })
                .await
                .map(|()| me)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let me = t.await.expect("join").expect("build");
        let dir = store.result(&me).await.expect("r").expect("built");
        assert_eq!(read(dir.join("f")), format!("base+{i}"));
    }
    assert_eq!(store.results().len(), 13);
    for i in 0..12 {
        store
            .delete(&id(&format!("child{i}")))
            .await
            .expect("delete");
    }
    store.delete(&base).await.expect("delete");
    store.wait_idle().await;
    assert!(
        leftovers(&pool, &[]).is_empty(),
        "{:?}",
        leftovers(&pool, &[])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_holders_of_one_cache() {
    let Some(pool) = pool("ten_holders_of_one_cache") else {
        return;
    };
    ten_holders_of_one_cache_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_holders_of_one_cache_fake() {
    ten_holders_of_one_cache_on(&FakeEnv::new()).await;
}

async fn ten_holders_of_one_cache_on(pool: &impl Env) {
    let (store, _rec) = open(&pool).await;
    let c = cname("shared");
    let user = User::new(1000, 1000).expect("user");
    let first = store.cache(user, &c).await.expect("cache");
    std::fs::write(first.path().join("f"), "v0").expect("write");
    assert_eq!(
        first.release().await.expect("rel"),
        ReleaseOutcome::Published
    );

    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let lease = store.cache(user, &c).await.expect("cache");
            assert_eq!(
                std::fs::read_to_string(lease.path().join("f")).expect("read"),
                "v0"
            );
            std::fs::write(lease.path().join("f"), format!("h{i}")).expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(10 * (i % 4))).await;
            (i, lease)
        }));
    }
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await.expect("join"));
    }
    // All ten are out before any is released; release them concurrently.
    let mut rels = Vec::new();
    for (i, lease) in leases {
        rels.push(tokio::spawn(async move {
            (i, lease.release().await.expect("release"))
        }));
    }
    let mut published = Vec::new();
    for r in rels {
        let (i, outcome) = r.await.expect("join");
        if outcome == ReleaseOutcome::Published {
            published.push(i);
        }
    }
    assert_eq!(
        published.len(),
        1,
        "exactly one copy of a generation is published"
    );
    let lease = store.cache(user, &c).await.expect("cache");
    assert_eq!(read(lease.path().join("f")), format!("h{}", published[0]));
    drop(lease);
    store.wait_idle().await;
    let container = "cache/c-shared";
    let kept: Vec<String> = leftovers(&pool, &[container]);
    assert_eq!(kept.len(), 2, "one generation and its snapshot: {kept:?}");
}
