//! The `concurrency` check: many builds from one base and many holders of one cache at once,
//! on a multi-threaded runtime; the outcome must be one the model allows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use store_api::{BuildError, Id, ReleaseOutcome, Store, StoreError, StoreExt};

use crate::config::Config;
use crate::exec::Settings;
use crate::factory::SharedFactory;
use crate::report::{CheckOutcome, Failure, Progress};
use crate::scenarios::support::{Ctx, Stop, cache_name, id};
use crate::tree::{Edit, Tree};

pub(crate) const CONCURRENCY: &str = "concurrency";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BuildEnding {
    Succeed,
    Fail,
    Cancel,
}

#[derive(Clone, Debug)]
struct Builder {
    ending: BuildEnding,
    delay_ms: u64,
}

#[derive(Clone, Debug)]
struct Holder {
    acquire_delay_ms: u64,
    hold_ms: u64,
    release: bool,
}

#[derive(Clone, Debug)]
struct Case {
    builders: Vec<Builder>,
    delete_base_after_ms: Option<u64>,
    holders: Vec<Holder>,
}

fn case() -> impl Strategy<Value = Case> {
    let builder = (
        prop_oneof![6 => Just(BuildEnding::Succeed), 1 => Just(BuildEnding::Fail), 1 => Just(BuildEnding::Cancel)],
        0..4u64,
    )
        .prop_map(|(ending, delay_ms)| Builder { ending, delay_ms });
    let holder = (0..4u64, 0..4u64, proptest::bool::weighted(0.8)).prop_map(
        |(acquire_delay_ms, hold_ms, release)| Holder {
            acquire_delay_ms,
            hold_ms,
            release,
        },
    );
    (
        vec(builder, 2..10),
        proptest::option::weighted(0.4, 0..4u64),
        vec(holder, 2..8),
    )
        .prop_map(|(builders, delete_base_after_ms, holders)| Case {
            builders,
            delete_base_after_ms,
            holders,
        })
}

/// Runs the check. Blocking: it makes its own multi-threaded runtime.
pub(crate) fn concurrency(
    factory: SharedFactory,
    config: &Config,
    settings: &Settings,
    seed: u64,
) -> CheckOutcome {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return CheckOutcome::Failed(Failure {
                message: format!("could not start a multi-threaded runtime: {e}"),
                sequence: None,
            });
        }
    };
    let ctx = Ctx::new(factory, settings.clone());
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.wrapping_add(1).to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: config.concurrency_cases,
            failure_persistence: None,
            max_shrink_time: u32::try_from(config.max_shrink_time.as_millis()).unwrap_or(u32::MAX),
            ..ProptestConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let done = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&case(), |case| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let outcome = runtime.block_on(run_case(ctx.clone(), case));
        config.emit(Progress::Case {
            check: CONCURRENCY.into(),
            done: n,
            total: config.concurrency_cases,
        });
        outcome.map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => CheckOutcome::Passed,
        Err(TestError::Abort(why)) => CheckOutcome::Failed(Failure {
            message: format!("the property runner gave up: {why}"),
            sequence: None,
        }),
        Err(TestError::Fail(reason, case)) => CheckOutcome::Failed(Failure {
            message: format!("{reason}\nminimal case: {case:#?}"),
            sequence: None,
        }),
    }
}

/// What one builder task saw.
struct BuildSeen {
    started_with: Option<Result<Tree, String>>,
    result: Result<(), BuildError<String>>,
    cancelled: bool,
}

/// What one holder task saw.
struct HolderSeen {
    seen_version: String,
    seen_tree: Tree,
    outcome: Option<ReleaseOutcome>,
}

async fn run_case(ctx: Ctx, case: Case) -> Result<(), String> {
    let env = ctx.open().await.map_err(stop_message)?;
    let store = env.store();
    let timeout = ctx.settings.op_timeout;
    let base = id("base");
    let base_tree = {
        let mut t = Tree::new();
        t.apply(&Edit::Write {
            path: "base".into(),
            content: "b".into(),
            mode: 0o644,
        });
        t
    };
    let edits = vec![Edit::Write {
        path: "base".into(),
        content: "b".into(),
        mode: 0o644,
    }];
    store
        .build(None, &base, move |dir| async move {
            for e in &edits {
                e.apply_to_dir(&dir).map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .await
        .map_err(|e| format!("building the base: {e:?}"))?;
    let cache = cache_name("shared");
    let me = crate::exec::current_user();
    {
        let seed = store
            .cache(me, &cache)
            .await
            .map_err(|e| format!("cache: {e}"))?;
        crate::tree::write_file(&seed.path().join("version"), b"seed", 0o644)
            .map_err(|e| e.to_string())?;
        seed.release().await.map_err(|e| format!("release: {e}"))?;
    }

    let mut build_tasks = Vec::new();
    for (i, b) in case.builders.iter().cloned().enumerate() {
        let store = Arc::clone(&store);
        let base = base.clone();
        build_tasks.push(tokio::spawn(
            async move { one_build(store, base, i, b).await },
        ));
    }
    let deleter = case.delete_base_after_ms.map(|ms| {
        let store = Arc::clone(&store);
        let base = base.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            store.delete(&base).await
        })
    });
    let mut holder_tasks = Vec::new();
    for (i, h) in case.holders.iter().cloned().enumerate() {
        let store = Arc::clone(&store);
        let cache = cache.clone();
        holder_tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(h.acquire_delay_ms)).await;
            let lease = store
                .cache(me, &cache)
                .await
                .map_err(|e| format!("cache: {e}"))?;
            let seen_tree = Tree::read(lease.path()).map_err(|e| e.to_string())?;
            let seen_version = std::fs::read_to_string(lease.path().join("version"))
                .map_err(|e| format!("a copy has no version file: {e}"))?;
            crate::tree::write_file(
                &lease.path().join("version"),
                format!("h{i}").as_bytes(),
                0o644,
            )
            .map_err(|e| e.to_string())?;
            crate::tree::write_file(&lease.path().join(format!("h{i}")), b"x", 0o644)
                .map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(h.hold_ms)).await;
            let outcome = if h.release {
                Some(lease.release().await.map_err(|e| format!("release: {e}"))?)
            } else {
                drop(lease);
                None
            };
            Ok::<_, String>(HolderSeen {
                seen_version,
                seen_tree,
                outcome,
            })
        }));
    }

    let joined = tokio::time::timeout(timeout * 4, async {
        let mut builds = Vec::new();
        for t in build_tasks {
            builds.push(t.await.map_err(|e| format!("a build task panicked: {e}"))?);
        }
        let mut holders = Vec::new();
        for t in holder_tasks {
            holders.push(
                t.await
                    .map_err(|e| format!("a cache holder task panicked: {e}"))??,
            );
        }
        let deleted = match deleter {
            Some(t) => {
                t.await
                    .map_err(|e| format!("the deleting task panicked: {e}"))?
                    .map_err(|e| format!("delete(base) during the builds: {e}"))?;
                true
            }
            None => false,
        };
        Ok::<_, String>((builds, holders, deleted))
    })
    .await
    .map_err(|_| "the concurrent builds and cache holders did not finish (deadlock?)".to_owned())?;
    let (builds, holders, deleted) = joined?;

    check_builds(&*store, &base, &base_tree, &case, &builds, deleted).await?;
    check_holders(&*store, &cache, &holders).await?;
    drop(store);
    env.close().await.map_err(stop_message)
}

async fn one_build(store: Arc<dyn Store>, base: Id, i: usize, b: Builder) -> BuildSeen {
    tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    let child = id(&format!("child-{i}"));
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen2 = Arc::clone(&seen);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let fut = store.build(Some(&base), &child, move |dir| async move {
        let start = Tree::read(&dir).map_err(|e| e.to_string());
        *seen2.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
        crate::tree::write_file(&dir.join("own"), i.to_string().as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
        tokio::task::yield_now().await;
        match b.ending {
            BuildEnding::Succeed => Ok(()),
            BuildEnding::Fail => Err(format!("fail {i}")),
            BuildEnding::Cancel => {
                let _ = tx.send(());
                futures::future::pending().await
            }
        }
    });
    let mut fut = Box::pin(fut);
    let mut rx = rx;
    // Only a real cancel signal counts: `rx` also resolves (with `Err`) when the build
    // function is dropped without sending, which happens at the end of every successful or
    // failing function, while the store may still be committing. That branch is disabled
    // (the pattern does not match), and the build future alone decides.
    let (result, cancelled) = tokio::select! {
        r = &mut fut => (r, false),
        Ok(()) = &mut rx => (Ok(()), true),
    };
    drop(fut);
    let started_with = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    BuildSeen {
        started_with,
        result,
        cancelled,
    }
}

async fn check_builds(
    store: &dyn Store,
    base: &Id,
    base_tree: &Tree,
    case: &Case,
    builds: &[BuildSeen],
    deleted: bool,
) -> Result<(), String> {
    for (i, (b, seen)) in case.builders.iter().zip(builds).enumerate() {
        let child = id(&format!("child-{i}"));
        if let Some(start) = &seen.started_with {
            let start = start
                .as_ref()
                .map_err(|e| format!("{child}: reading its directory: {e}"))?;
            if let Some(diff) = base_tree.diff(start) {
                return Err(format!("{child} did not start as a copy of base:\n{diff}"));
            }
        }
        let missing_base = matches!(
            &seen.result,
            Err(BuildError::Store(StoreError::MissingBase { .. }))
        );
        let should_exist = match (b.ending, &seen.result, seen.cancelled) {
            (_, _, _) if missing_base => {
                if !deleted || seen.started_with.is_some() {
                    return Err(format!(
                        "{child}: MissingBase although the base {}",
                        if deleted {
                            "was there when the function ran"
                        } else {
                            "was never deleted"
                        }
                    ));
                }
                false
            }
            (BuildEnding::Succeed, Ok(()), false) => true,
            (BuildEnding::Fail, Err(BuildError::Failed(m)), false) if m == &format!("fail {i}") => {
                false
            }
            (BuildEnding::Cancel, _, true) => false,
            (ending, r, _) => return Err(format!("{child} ({ending:?}) ended with {r:?}")),
        };
        let got = store
            .result(&child)
            .await
            .map_err(|e| format!("result({child}): {e}"))?;
        match (should_exist, got) {
            (false, None) => {}
            (false, Some(_)) => {
                return Err(format!(
                    "{child} has a result, but its build did not succeed"
                ));
            }
            (true, None) => return Err(format!("{child} was built, but result({child}) = None")),
            (true, Some(path)) => {
                let mut expected = base_tree.clone();
                expected.put_file("own", i.to_string().as_bytes(), 0o644);
                let tree = Tree::read(&path).map_err(|e| e.to_string())?;
                if let Some(diff) = expected.diff(&tree) {
                    return Err(format!("the result of {child} is wrong:\n{diff}"));
                }
            }
        }
    }
    let base_now = store
        .result(base)
        .await
        .map_err(|e| format!("result(base): {e}"))?;
    if base_now.is_some() == deleted {
        return Err(format!(
            "result(base) is {} after the builds, but base was {}",
            if base_now.is_some() { "Some" } else { "None" },
            if deleted { "deleted" } else { "never deleted" }
        ));
    }
    Ok(())
}

async fn check_holders(
    store: &dyn Store,
    cache: &store_api::CacheName,
    holders: &[HolderSeen],
) -> Result<(), String> {
    // Each published copy is a version; its parent is the version its holder saw.
    let mut children: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, h) in holders.iter().enumerate() {
        if h.outcome == Some(ReleaseOutcome::Published) {
            children.entry(h.seen_version.clone()).or_default().push(i);
        }
    }
    for (version, kids) in &children {
        if kids.len() > 1 {
            return Err(format!(
                "copies {kids:?} were all taken from version {version:?} and all published: only \
                 the first release of a generation may win"
            ));
        }
    }
    // The contents of every version, following the chain from the seed.
    let mut trees: BTreeMap<String, Tree> = BTreeMap::new();
    let mut seed = Tree::new();
    seed.put_file("version", b"seed", 0o644);
    trees.insert("seed".into(), seed);
    let mut latest = "seed".to_owned();
    while let Some(kids) = children.get(&latest) {
        let i = kids[0];
        let mut t = trees[&latest].clone();
        t.put_file("version", format!("h{i}").as_bytes(), 0o644);
        t.put_file(&format!("h{i}"), b"x", 0o644);
        latest = format!("h{i}");
        trees.insert(latest.clone(), t);
    }
    for (i, h) in holders.iter().enumerate() {
        let Some(expected) = trees.get(&h.seen_version) else {
            return Err(format!(
                "holder {i} saw version {:?}, which was never published (or is not on the chain \
                 of published versions)",
                h.seen_version
            ));
        };
        if let Some(diff) = expected.diff(&h.seen_tree) {
            return Err(format!(
                "holder {i}'s copy of version {:?} does not hold that version:\n{diff}",
                h.seen_version
            ));
        }
        if h.outcome == Some(ReleaseOutcome::Discarded) && !children.contains_key(&h.seen_version) {
            return Err(format!(
                "holder {i}'s copy was discarded, but no other copy of version {:?} was published",
                h.seen_version
            ));
        }
    }
    let lease = store
        .cache(crate::exec::current_user(), cache)
        .await
        .map_err(|e| format!("cache: {e}"))?;
    let tree = Tree::read(lease.path()).map_err(|e| e.to_string())?;
    drop(lease);
    if let Some(diff) = trees[&latest].diff(&tree) {
        return Err(format!(
            "after every holder finished the cache is not at the last published version {latest:?}:\n{diff}"
        ));
    }
    store
        .delete_cache(cache)
        .await
        .map_err(|e| format!("delete_cache once every copy was released or dropped: {e}"))
}

fn stop_message(s: Stop) -> String {
    match s {
        Stop::Fail(m) | Stop::Skip(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use async_trait::async_trait;
    use store_api::{BuildFn, BuildFnError, CacheLease, CacheName, DeleteCacheError, User};
    use store_fake::FakeStore;

    use super::*;

    /// The fake, with a commit that takes a while after the build function returned (as on
    /// ZFS, where `unmount` + `snapshot` + `mount` follow the function).
    #[derive(Debug)]
    struct SlowCommit(FakeStore);

    #[async_trait]
    impl Store for SlowCommit {
        fn root(&self) -> &Path {
            self.0.root()
        }
        fn state_dir(&self) -> &Path {
            self.0.state_dir()
        }
        async fn build_dyn(
            &self,
            base: Option<&Id>,
            id: &Id,
            f: BuildFn<'_>,
        ) -> Result<(), BuildError<BuildFnError>> {
            let r = self.0.build_dyn(base, id, f).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            r
        }
        async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError> {
            self.0.result(id).await
        }
        async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError> {
            self.0.log_file(id).await
        }
        async fn delete(&self, id: &Id) -> Result<(), StoreError> {
            self.0.delete(id).await
        }
        async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError> {
            self.0.cache(user, name).await
        }
        async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
            self.0.delete_cache(name).await
        }
        async fn complete_deletes(&self) -> Result<(), StoreError> {
            self.0.complete_deletes().await
        }
        async fn df(&self) -> Result<f64, StoreError> {
            self.0.df().await
        }
    }

    async fn slow_store_with_base() -> (tempfile::TempDir, Arc<dyn Store>, Id) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SlowCommit(
            FakeStore::builder().root(dir.path()).open().expect("fake"),
        ));
        let base = id("base");
        store
            .build(None, &base, |_| async { Ok::<(), String>(()) })
            .await
            .expect("base");
        (dir, store, base)
    }

    /// A successful build whose store commits after the function returned is a success, not
    /// a cancellation (the function's end drops the cancel sender without sending).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_slow_commit_is_not_a_cancellation() {
        let (_dir, store, base) = slow_store_with_base().await;
        for (i, ending) in [BuildEnding::Succeed, BuildEnding::Fail]
            .into_iter()
            .enumerate()
        {
            let b = Builder {
                ending,
                delay_ms: 0,
            };
            let seen = one_build(Arc::clone(&store), base.clone(), i, b).await;
            assert!(!seen.cancelled, "{ending:?} was taken for a cancellation");
            match ending {
                BuildEnding::Succeed => assert!(seen.result.is_ok(), "{:?}", seen.result),
                _ => assert!(
                    matches!(&seen.result, Err(BuildError::Failed(m)) if m == "fail 1"),
                    "{:?}",
                    seen.result
                ),
            }
        }
        let built = store.result(&id("child-0")).await.expect("result");
        assert!(built.is_some(), "the successful build was recorded");
    }

    /// A build that really signals cancellation is still dropped and reported cancelled.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_real_cancel_is_still_seen() {
        let (_dir, store, base) = slow_store_with_base().await;
        let b = Builder {
            ending: BuildEnding::Cancel,
            delay_ms: 0,
        };
        let seen = one_build(Arc::clone(&store), base, 0, b).await;
        assert!(seen.cancelled);
        let built = store.result(&id("child-0")).await.expect("result");
        assert!(built.is_none(), "a cancelled build records nothing");
    }
}
