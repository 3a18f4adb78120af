//! The conformance suite (every check, one `#[test]` each) against this backend: on a real
//! pool, and on the in-memory `FakeZfs` with zfs-fuse's and OpenZFS's behaviour.
//!
//! - `real_pool::*`: the pool named by `ZSTORE_TEST_POOL`, or a new test pool per test. No
//!   ZFS on the machine: each test prints `SKIPPED` (past libtest's capture) and passes, or
//!   fails if `ZSTORE_REQUIRE_ZFS=1` (CI sets it). The sizes below keep a plain `cargo
//!   test -p store-zfs` to a few minutes on zfs-fuse; `ZSTORE_CONFORMANCE_*` variables
//!   override them (`cargo xtask conformance` runs the full size).
//! - `fake_zfs_fuse::*`, `fake_openzfs::*`: the same checks over `FakeZfs`, in seconds.

use std::sync::Arc;
use std::time::Duration;

use conformance::Config;
use store_zfs::Engine;
use store_zfs::testing::{FakeZfs, ZfsFactory};

/// The suite's size on a real pool under plain `cargo test`.
fn real_pool_defaults() -> Config {
    Config {
        cases: 16,
        max_ops: 30,
        concurrency_cases: 2,
        fault_budget: Some(Duration::from_secs(30)),
        load_builds: 40,
        load_jobs: 4,
        ..Config::default()
    }
}

fn real_pool(test: &str) -> ZfsFactory {
    ZfsFactory::on_test_pool(test).with_defaults(real_pool_defaults())
}

/// A factory over a fresh `FakeZfs` holding the pool `fp`; the fault sweep runs whole (no
/// time budget: the fake is fast).
fn fake(engine: &Engine) -> ZfsFactory {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let zfs = match engine {
        Engine::ZfsFuse => FakeZfs::new(dir.path(), "fp"),
        _ => FakeZfs::openzfs(dir.path(), "fp"),
    };
    let name = format!("FakeZfs ({engine})");
    ZfsFactory::with_runner("fp", engine, Arc::new(zfs))
        .named(name)
        .with_defaults(Config {
            fault_budget: None,
            ..Config::default()
        })
        .keeping(dir)
}

conformance::conformance_tests!(real_pool, real_pool(module_path!()));
conformance::conformance_tests!(fake_zfs_fuse, fake(&Engine::ZfsFuse));
conformance::conformance_tests!(
    fake_openzfs,
    fake(&Engine::OpenZfs {
        version: "zfs-2.1.5-1".into()
    })
);

/// The factory's own promises, on a real pool and on the fake: a store used and closed
/// cleanly passes teardown's layout check and leaves no case dataset; a leftover fails
/// teardown, which still destroys the case.
mod factory {
    use std::sync::Arc;

    use conformance::StoreFactory;
    use store_api::{CacheName, Id, Store, StoreExt, User};
    use store_zfs::testing::{FakeZfs, ZfsFactory};
    use store_zfs::{Cmd, Engine};

    async fn use_store(store: &Arc<dyn Store>) {
        let (a, b) = (Id::new("a").expect("id"), Id::new("b").expect("id"));
        store
            .build(
                None,
                &a,
                |dir| async move { std::fs::write(dir.join("f"), "x") },
            )
            .await
            .expect("build a");
        store
            .build(Some(&a), &b, |_| async { Ok::<_, std::io::Error>(()) })
            .await
            .expect("build b");
        store.delete(&a).await.expect("delete a");
        let name = CacheName::new("c/1").expect("name");
        let lease = store.cache(User::ROOT, &name).await.expect("cache");
        std::fs::write(lease.path().join("v"), "1").expect("write");
        let dropped = store.cache(User::ROOT, &name).await.expect("second copy");
        lease.release().await.expect("release");
        drop(dropped);
        assert!(store.result(&b).await.expect("result").is_some());
    }

    async fn exists(factory: &ZfsFactory, ds: &str) -> bool {
        let out = factory
            .runner()
            .run(&Cmd::zfs([
                "get",
                "-H",
                "-p",
                "-o",
                "property,value",
                "name",
                "--",
                ds,
            ]))
            .await
            .expect("zfs list");
        out.success()
    }

    /// A factory on a real pool, or `None` (with the loud skip) without ZFS.
    fn real(test: &str) -> Option<ZfsFactory> {
        let f = ZfsFactory::on_test_pool(test);
        f.unavailable().is_none().then_some(f)
    }

    fn fake() -> ZfsFactory {
        let dir = tempfile::tempdir().expect("tempdir");
        let zfs = FakeZfs::new(dir.path(), "fp");
        ZfsFactory::with_runner("fp", &Engine::ZfsFuse, Arc::new(zfs)).keeping(dir)
    }

    async fn teardown_of_a_clean_store(factory: ZfsFactory) {
        let (store, case) = factory.fresh().await.expect("fresh");
        use_store(&store).await;
        drop(store);
        let store = factory.reopen(&case).await.expect("reopen");
        let listing = factory
            .list_storage(&case)
            .await
            .expect("list")
            .expect("some");
        for name in [
            "",
            "/state",
            "/result/b",
            "/result/b@snap",
            "/result/a@snap",
        ] {
            assert!(listing.contains(&name.to_owned()), "{name}: {listing:?}");
        }
        drop(store);
        let dataset = case.dataset().to_owned();
        factory.teardown(case).await.expect("clean");
        assert!(
            !exists(&factory, &dataset).await,
            "the case dataset {dataset} is gone"
        );
    }

    async fn teardown_names_leftovers(factory: ZfsFactory) {
        let (store, case) = factory.fresh().await.expect("fresh");
        use_store(&store).await;
        drop(store);
        let junk = format!("{}/result/junk", case.dataset());
        let made = factory
            .runner()
            .run(&Cmd::zfs(["create", "--", &junk]))
            .await
            .expect("zfs create");
        assert!(made.success(), "{}", made.stderr);
        let dataset = case.dataset().to_owned();
        let err = factory
            .teardown(case)
            .await
            .expect_err("leftovers")
            .to_string();
        assert!(
            err.contains(&format!("{junk}: a result dataset without @snap")),
            "{err}"
        );
        assert!(!exists(&factory, &dataset).await, "{dataset} is gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_pool_teardown_of_a_clean_store() {
        let factory = tokio::task::spawn_blocking(|| real("real_pool_teardown_of_a_clean_store"))
            .await
            .expect("factory");
        if let Some(f) = factory {
            teardown_of_a_clean_store(f).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_pool_teardown_names_leftovers() {
        let factory = tokio::task::spawn_blocking(|| real("real_pool_teardown_names_leftovers"))
            .await
            .expect("factory");
        if let Some(f) = factory {
            teardown_names_leftovers(f).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fake_teardown_of_a_clean_store() {
        teardown_of_a_clean_store(fake()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fake_teardown_names_leftovers() {
        teardown_names_leftovers(fake()).await;
    }
}
