//! Many tasks on a multi-threaded runtime: builds from one base, holders of one cache,
//! deletes racing with clones.

mod common;

use std::sync::Arc;

use common::{Failed, cache_name, id, list, read, write};
use store_api::{BuildError, ReleaseOutcome, Store, StoreError, StoreExt, User};
use store_fake::FakeStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_builds_from_one_base() {
    let store = FakeStore::new().expect("open");
    store
        .build(None, &id("base"), |dir| async move {
            write(&dir.join("output"), "ok");
            Ok::<(), Failed>(())
        })
        .await
        .expect("base");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let child = id(&format!("child-{i}"));
                store
                    .build(Some(&id("base")), &child, |dir| async move {
                        assert_eq!(read(&dir.join("output")), "ok");
                        tokio::task::yield_now().await;
                        write(&dir.join("mine"), &i.to_string());
                        Ok::<(), Failed>(())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join").expect("build");
    }
    assert_eq!(store.results().len(), 51);
    assert_eq!(store.builds_in_progress(), 0);
    for i in 0..50 {
        let dir = store
            .result(&id(&format!("child-{i}")))
            .await
            .expect("result")
            .expect("built");
        assert_eq!(list(&dir), vec!["mine".to_owned(), "output".to_owned()]);
        assert_eq!(read(&dir.join("mine")), i.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_base_while_it_is_being_cloned() {
    let store = FakeStore::new().expect("open");
    store
        .build(None, &id("base"), |dir| async move {
            for i in 0..50 {
                write(&dir.join(format!("f{i}")), "data");
            }
            Ok::<(), Failed>(())
        })
        .await
        .expect("base");
    let builds: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let child = id(&format!("c{i}"));
                let outcome = store
                    .build(Some(&id("base")), &child, |dir| async move {
                        assert_eq!(list(&dir).len(), 50, "a whole clone or none");
                        Ok::<(), Failed>(())
                    })
                    .await;
                (child, outcome)
            })
        })
        .collect();
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move { store.delete(&id("base")).await })
    };
    deleter.await.expect("join").expect("delete");
    for build in builds {
        let (child, outcome) = build.await.expect("join");
        match outcome {
            Ok(()) => {
                let dir = store.result(&child).await.expect("result").expect("built");
                assert_eq!(list(&dir).len(), 50);
            }
            Err(BuildError::Store(StoreError::MissingBase { .. })) => {
                assert_eq!(store.result(&child).await.expect("result"), None);
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(store.result(&id("base")).await.expect("result"), None);
    assert_eq!(store.builds_in_progress(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_holders_of_one_cache() {
    let store = FakeStore::new().expect("open");
    let name = cache_name("shared");
    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let holders: Vec<_> = (0..10)
        .map(|i| {
            let (store, name, barrier) = (store.clone(), name.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let lease = store.cache(User::ROOT, &name).await.expect("cache");
                // All ten copies are out at once.
                barrier.wait().await;
                write(&lease.path().join(format!("holder-{i}")), "x");
                if i % 3 == 2 {
                    drop(lease);
                    None
                } else {
                    Some(lease.release().await.expect("release"))
                }
            })
        })
        .collect();
    let mut published = 0;
    for holder in holders {
        if holder.await.expect("join") == Some(ReleaseOutcome::Published) {
            published += 1;
        }
    }
    assert_eq!(
        published, 1,
        "all ten copies came from version 0: one release wins"
    );
    let info = &store.cache_info()[0];
    assert_eq!((info.version, info.live_copies), (1, 0));
    let lease = store.cache(User::ROOT, &name).await.expect("cache");
    assert_eq!(list(lease.path()).len(), 1, "exactly the winner's file");
    drop(lease);
    assert_eq!(list(&store.root().join("cache-tmp")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_churn_with_deletes_stays_consistent() {
    let store = FakeStore::new().expect("open");
    let name = cache_name("churn");
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move {
                let mut published = 0u64;
                for round in 0..20 {
                    let lease = store.cache(User::ROOT, &name).await.expect("cache");
                    write(&lease.path().join("last"), &format!("{i}-{round}"));
                    tokio::task::yield_now().await;
                    if lease.release().await.expect("release") == ReleaseOutcome::Published {
                        published += 1;
                    }
                    if round % 7 == 6 {
                        // Busy is fine; anything else is not.
                        match store.delete_cache(&name).await {
                            Ok(()) | Err(store_api::DeleteCacheError::Busy { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                published
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("join");
    }
    assert_eq!(store.live_cache_copies(&name), 0);
    assert_eq!(list(&store.root().join("cache-tmp")), Vec::<String>::new());
    if let Some(info) = store.cache_info().first() {
        let dir = store.root().join("caches");
        let entries = list(&dir.join(list(&dir)[0].clone()));
        assert_eq!(
            entries,
            vec!["owner".to_owned(), format!("v{}", info.version)]
        );
    }
}
