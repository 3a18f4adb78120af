//! Trust at the edges a build machine hits: a second opener, mounts still in use, datasets and
//! snapshots the store did not make, and races after a failure (issue 12). Each test runs on
//! a real pool (zfs-fuse here, OpenZFS in the guest) and, where the fake models it, on
//! `FakeZfs` too.

mod common;
use common::{Env, FakeEnv};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{build_file, cname, id, open, open_with, pool, read};
use store_api::{ReleaseOutcome, Store, StoreError, StoreExt, User};
use store_zfs::testing::FakeZfs;
use store_zfs::{Cmd, CmdOutput, RunError, Runner, ZfsStore};
use tokio::sync::watch;

/// Runs `zfs ARGS` through the environment's runner, panicking on failure.
async fn zfs(pool: &impl Env, args: &[&str]) -> String {
    let cmd = Cmd::zfs(args.iter().copied());
    let out = pool.runner().run(&cmd).await.expect("run zfs");
    assert!(out.success(), "`{cmd}` failed: {}", out.stderr);
    out.stdout
}

/// Opens another store on `location` with the environment's runner.
async fn open_at(pool: &impl Env, location: &str) -> Result<ZfsStore, StoreError> {
    open_with(location, pool.runner()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_an_open_store_fails_and_changes_nothing() {
    let Some(pool) = pool("a_second_open_of_an_open_store_fails_and_changes_nothing") else {
        return;
    };
    a_second_open_of_an_open_store_fails_and_changes_nothing_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_an_open_store_fails_and_changes_nothing_fake() {
    a_second_open_of_an_open_store_fails_and_changes_nothing_on(&FakeEnv::new()).await;
}

/// Issue 12, item 2: a second open used to succeed, and its repair destroyed the first
/// store's running build and the cache copy it had out.
async fn a_second_open_of_an_open_store_fails_and_changes_nothing_on(pool: &impl Env) {
    let (store, _rec) = open(pool).await;
    let (a, b) = (id("a"), id("b"));
    build_file(&store, None, &a, "f", "a").await;
    // A build running and a cache copy out while someone opens the store again.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            store
                .build(Some(&a), &b, |dir| async move {
                    started_tx.send(()).expect("signal");
                    go_rx.await.expect("go");
                    std::fs::write(dir.join("g"), "b")
                })
                .await
        })
    };
    started_rx.await.expect("started");
    let lease = store.cache(User::ROOT, &cname("c")).await.expect("cache");
    std::fs::write(lease.path().join("x"), "1").expect("write");
    let before = pool.datasets();

    for location in [pool.location(), pool.name()] {
        let err = open_at(pool, &location)
            .await
            .expect_err("a second open of an open store must fail");
        let StoreError::Locked { holder, .. } = &err else {
            panic!("expected StoreError::Locked, got {err:?}");
        };
        assert_eq!(
            holder.pid,
            Some(std::process::id()),
            "names the holder: {err}"
        );
        assert_eq!(pool.datasets(), before, "the second open changed the pool");
    }

    // The first store's work goes on undisturbed.
    go_tx.send(()).expect("go");
    running.await.expect("join").expect("the running build");
    assert_eq!(
        read(store.result(&b).await.expect("r").expect("b").join("g")),
        "b"
    );
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );

    // Another root in the same pool is independent.
    let other = format!("{}/other", pool.name());
    zfs(pool, &["create", "--", &other]).await;
    let second = open_at(pool, &other)
        .await
        .expect("a store on another root");
    drop(second);

    // Gone with the last handle: the store opens again.
    store.wait_idle().await;
    drop(store);
    let again = open_at(pool, &pool.location()).await.expect("reopen");
    assert_eq!(again.results(), vec![a, b]);
}

/// A moment in a test's interleaving: set once, awaited by others (for at most 3 s, so a
/// moment that never comes cannot hang the test).
struct Moment(watch::Sender<bool>);

impl Moment {
    fn new() -> Self {
        Self(watch::channel(false).0)
    }
    fn arrive(&self) {
        self.0.send_replace(true);
    }
    /// Whether it came.
    async fn wait(&self) -> bool {
        let mut rx = self.0.subscribe();
        tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|v| *v))
            .await
            .is_ok()
    }
}

/// `FakeZfs` with the interleaving that made a failed delete end in a panic: the first
/// unmount of `fp/result/a` once the test counts them fails as busy; the failed delete's check of `a@snap` waits until
/// a second unmount of `a` (a retry started by another operation) is under way, and that
/// unmount waits until the test lets it go.
struct FailedDeleteRace {
    inner: FakeZfs,
    unmounts: AtomicUsize,
    checked: Moment,
    retrying: Moment,
    release: Moment,
}

#[async_trait]
impl Runner for FailedDeleteRace {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let line = cmd.to_string();
        if line == "zfs unmount -- fp/result/a" {
            match self.unmounts.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    return Ok(CmdOutput::failed(
                        1,
                        "umount: /fp/result/a: target is busy.\ncannot unmount '/fp/result/a': umount failed\n",
                    ));
                }
                1 => {
                    self.retrying.arrive();
                    self.release.wait().await;
                }
                _ => {}
            }
        }
        if line.starts_with("zfs get") && line.ends_with("fp/result/a@snap") {
            self.checked.arrive();
            self.retrying.wait().await;
        }
        self.inner.run(cmd).await
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.inner.mount_table().await
    }
}

/// Issue 12, item 4: when `delete` failed (the unmount was busy), the result was made live
/// again without its dataset's op lock while a retry started by another operation destroyed
/// it; `results()` still listed the id and `result(id)` panicked. Whatever the interleaving,
/// the index must agree with the pool and nothing may panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_never_leaves_a_result_that_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let race = Arc::new(FailedDeleteRace {
        inner: FakeZfs::new(dir.path(), "fp"),
        // Not counting yet: the build's own commit unmounts too.
        unmounts: AtomicUsize::new(usize::MAX / 2),
        checked: Moment::new(),
        retrying: Moment::new(),
        release: Moment::new(),
    });
    let store = open_with("fp", race.clone()).await.expect("open");
    let a = id("a");
    build_file(&store, None, &a, "f", "a").await;
    race.unmounts.store(0, Ordering::SeqCst);

    let deleting = {
        let (store, a) = (store.clone(), a.clone());
        tokio::spawn(async move { store.delete(&a).await })
    };
    // Another operation retries what could not be destroyed, while the failed delete looks.
    race.checked.wait().await;
    store
        .delete(&id("other"))
        .await
        .expect("delete of an absent id");
    let failed = deleting.await.expect("join");
    assert!(
        failed.is_err(),
        "the busy unmount must fail the delete: {failed:?}"
    );
    race.release.arrive();
    store.wait_idle().await;

    let on_pool = race.inner.names().contains(&"fp/result/a@snap".to_owned());
    let listed = store.results().contains(&a);
    let path = store
        .result(&a)
        .await
        .expect("result(a) after a failed delete");
    assert_eq!(listed, on_pool, "results() and the pool disagree");
    assert_eq!(path.is_some(), on_pool, "result() and the pool disagree");
    assert!(on_pool, "a delete that failed must leave the result whole");
    assert_eq!(read(path.expect("a").join("f")), "a");
    // It can still be deleted, for good this time.
    store
        .delete(&a)
        .await
        .expect("delete once the mount is free");
    store.wait_idle().await;
    assert_eq!(store.result(&a).await.expect("result"), None);
    assert!(
        !race
            .inner
            .names()
            .iter()
            .any(|n| n.starts_with("fp/result/a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_copy_in_use_at_open_does_not_stop_the_open() {
    let Some(pool) = pool("a_cache_copy_in_use_at_open_does_not_stop_the_open") else {
        return;
    };
    let name = cname("c");
    let held = {
        let (store, _rec) = open(&pool).await;
        let lease = store.cache(User::ROOT, &name).await.expect("cache");
        std::fs::write(lease.path().join("v"), "1").expect("write");
        assert_eq!(
            lease.release().await.expect("release"),
            ReleaseOutcome::Published
        );
        // A sandbox that still has a file open in its copy when the builder goes away.
        let lease = store.cache(User::ROOT, &name).await.expect("cache");
        std::fs::write(lease.path().join("v"), "2").expect("write");
        let held = std::fs::File::open(lease.path().join("v")).expect("hold a file open");
        drop(lease);
        store.wait_idle().await;
        held
    };
    // Issue 12, item 3: this open failed with `zfs unmount ... target is busy`.
    let (store, _rec) = open(&pool).await;
    let lease = store
        .cache(User::ROOT, &name)
        .await
        .expect("cache after the open");
    assert_eq!(
        read(lease.path().join("v")),
        "1",
        "the cache is at its released version"
    );
    drop(lease);
    store.wait_idle().await;
    // Once the sandbox lets go, the next operation on the cache reclaims the copy.
    drop(held);
    let lease = store.cache(User::ROOT, &name).await.expect("cache");
    drop(lease);
    store.wait_idle().await;
    let container = format!("{}/cache/c-c", pool.name());
    let generations: Vec<String> = Env::datasets(&pool)
        .into_iter()
        .filter(|d| d.starts_with(&format!("{container}/")) && !d.contains('@'))
        .collect();
    assert_eq!(
        generations.len(),
        1,
        "only the published generation is left: {generations:?}"
    );
}

/// A runner that refuses every `zfs destroy`, so that failed builds stay behind as a crash
/// would leave them.
struct NoDestroy(Arc<dyn Runner>);

#[async_trait]
impl Runner for NoDestroy {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        if cmd.subcommand() == Some("destroy") {
            return Ok(CmdOutput::failed(1, "refused by the test\n"));
        }
        self.0.run(cmd).await
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.0.mount_table().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_destroys_only_what_the_store_made() {
    let Some(pool) = pool("open_destroys_only_what_the_store_made") else {
        return;
    };
    open_destroys_only_what_the_store_made_on(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_destroys_only_what_the_store_made_fake() {
    open_destroys_only_what_the_store_made_on(&FakeEnv::new()).await;
}

/// Issue 12, item 6: open's repair destroyed, with `-r`, datasets an operator made under
/// `R/result/<name>/` and under a cache container (its log said "left alone"), a hand-made
/// container without a version, and leftovers holding another tool's snapshots; a foreign
/// snapshot could make the open fail. Now it destroys only leftovers that carry the store's
/// `zstore:made` proof and hold nothing else, and reports the rest.
async fn open_destroys_only_what_the_store_made_on(pool: &impl Env) {
    let r = pool.name();
    let fail = |_dir: std::path::PathBuf| async { Err::<(), _>("the step failed") };
    {
        // Failed builds that a refused destroy leaves behind, as a crash would.
        let store = open_with(&pool.location(), Arc::new(NoDestroy(pool.runner())))
            .await
            .expect("open");
        for leftover in ["x", "y", "z"] {
            let _ = store.build(None, &id(leftover), fail).await;
        }
        store
            .build(None, &id("a"), |dir| async move {
                std::fs::write(dir.join("f"), "a")
            })
            .await
            .expect("a");
        let lease = store.cache(User::ROOT, &cname("c")).await.expect("cache");
        std::fs::write(lease.path().join("v"), "1").expect("write");
        assert_eq!(
            lease.release().await.expect("release"),
            ReleaseOutcome::Published
        );
        store.wait_idle().await;
    }
    let current = Env::datasets(pool)
        .into_iter()
        .find(|d| {
            d.strip_prefix(&format!("{r}/cache/c-c/"))
                .and_then(|g| g.split_once('@'))
                .is_some_and(|(g, v)| g.strip_prefix('g') == v.strip_prefix('v'))
        })
        .expect("the published generation")
        .split_once('@')
        .map(|(g, _)| g.to_owned())
        .expect("a snapshot name");
    // What others made inside the store's groups.
    let foreign = [
        format!("{r}/result/foo"),
        format!("{r}/result/x/child"),
        format!("{r}/cache/c-c/other"),
        format!("{r}/cache/c-half"),
        format!("{r}/cache/c-half/g1"),
    ];
    for ds in &foreign {
        zfs(pool, &["create", "-o", "canmount=noauto", "--", ds]).await;
    }
    let snapshots = [
        format!("{r}/result/a@auto-1"),
        format!("{r}/result/y@auto-2"),
        format!("{current}@auto-3"),
    ];
    for snap in &snapshots {
        zfs(pool, &["snapshot", "--", snap]).await;
    }
    // A cache pre-seeded by hand, as the crate docs show.
    let seed = format!("{r}/cache/c-seed");
    zfs(pool, &["create", "-o", "canmount=off", "--", &seed]).await;
    zfs(
        pool,
        &[
            "create",
            "-o",
            "canmount=noauto",
            "--",
            &format!("{seed}/g1"),
        ],
    )
    .await;
    zfs(pool, &["snapshot", "--", &format!("{seed}/g1@v1")]).await;

    let (store, _rec) = open(pool).await;
    let all = Env::datasets(pool);
    for name in foreign.iter().chain(&snapshots) {
        assert!(
            all.contains(name),
            "open destroyed {name}, which it did not make"
        );
    }
    for kept in [format!("{r}/result/x"), format!("{r}/result/y")] {
        assert!(
            all.contains(&kept),
            "open destroyed {kept}, which holds what it did not make"
        );
    }
    assert!(
        !all.iter().any(|d| d.starts_with(&format!("{r}/result/z"))),
        "the store's own leftover z was not reclaimed: {all:?}"
    );
    let left = store.left_alone();
    for name in [
        format!("{r}/result/foo"),
        format!("{r}/result/x/child"),
        format!("{r}/result/x"),
        format!("{r}/cache/c-c/other"),
        format!("{r}/cache/c-half"),
    ] {
        assert!(
            left.contains(&name),
            "{name} is not reported as left alone: {left:?}"
        );
    }
    // The store works around all of it.
    assert_eq!(
        read(
            store
                .result(&id("a"))
                .await
                .expect("r")
                .expect("a")
                .join("f")
        ),
        "a"
    );
    for absent in ["foo", "x", "y", "z"] {
        assert_eq!(store.result(&id(absent)).await.expect("r"), None);
    }
    store
        .build(None, &id("x"), |dir| async move {
            std::fs::write(dir.join("f"), "x")
        })
        .await
        .expect("x builds beside what is left of it");
    let lease = store.cache(User::ROOT, &cname("c")).await.expect("cache c");
    assert_eq!(read(lease.path().join("v")), "1");
    drop(lease);
    let lease = store
        .cache(User::ROOT, &cname("seed"))
        .await
        .expect("the pre-seeded cache");
    assert_eq!(
        lease.release().await.expect("release"),
        ReleaseOutcome::Published
    );
    store.wait_idle().await;
    drop(store);
    // Opening again changes nothing more of what is not the store's.
    let (_store, _rec) = open(pool).await;
    let again = Env::datasets(pool);
    for name in foreign.iter().chain(&snapshots) {
        assert!(again.contains(name), "a second open destroyed {name}");
    }
}

/// `FakeZfs` whose `zfs create` of a long-name cache container takes a while, as a real one
/// does, so that two acquires overlap.
struct SlowLongCreate(FakeZfs);

#[async_trait]
impl Runner for SlowLongCreate {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        if cmd.subcommand() == Some("create") && cmd.args.iter().any(|a| a.contains("/cache/h-")) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.0.run(cmd).await
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        self.0.mount_table().await
    }
}

/// Two long cache names whose escaped forms share their first 96 bytes, acquired at once,
/// both picked the container `h-<prefix>-0`, and the second failed with "already exists".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_long_cache_names_with_one_prefix_acquired_at_once_get_two_containers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_with(
        "fp",
        Arc::new(SlowLongCreate(FakeZfs::new(dir.path(), "fp"))),
    )
    .await
    .expect("open");
    let long = |tail: &str| cname(&format!("{}{tail}", "é".repeat(40)));
    let (one, two) = (long("a"), long("b"));
    let (first, second) =
        tokio::join!(store.cache(User::ROOT, &one), store.cache(User::ROOT, &two));
    let (first, second) = (first.expect("first"), second.expect("second"));
    std::fs::write(first.path().join("n"), "one").expect("write");
    std::fs::write(second.path().join("n"), "two").expect("write");
    assert_eq!(
        first.release().await.expect("release"),
        ReleaseOutcome::Published
    );
    assert_eq!(
        second.release().await.expect("release"),
        ReleaseOutcome::Published
    );
    for (name, content) in [(&one, "one"), (&two, "two")] {
        let lease = store.cache(User::ROOT, name).await.expect("cache");
        assert_eq!(
            read(lease.path().join("n")),
            content,
            "{name:?} shares storage"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_mounted_nosuid_and_nodev() {
    let Some(pool) = pool("results_are_mounted_nosuid_and_nodev") else {
        return;
    };
    use rustix::fs::StatVfsMountFlags;
    use std::os::unix::fs::PermissionsExt;
    let (store, _rec) = open(&pool).await;
    let s = id("s");
    store
        .build(None, &s, |dir| async move {
            let file = dir.join("suid");
            std::fs::write(&file, "#!/bin/sh\nid -u\n")?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4755))
        })
        .await
        .expect("build");
    let path = store.result(&s).await.expect("r").expect("s");
    let flags = rustix::fs::statvfs(&path).expect("statvfs").f_flag;
    assert!(
        flags.contains(
            StatVfsMountFlags::RDONLY | StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV
        ),
        "a result path must be mounted ro, nosuid, nodev: {flags:?}"
    );
    // The mode is content: it is kept, and a build from the result gets it back.
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&path.join("suid")), 0o4755);
    store
        .build(Some(&s), &id("child"), |dir| async move {
            let got = std::fs::metadata(dir.join("suid"))?.permissions().mode() & 0o7777;
            assert_eq!(got, 0o4755, "the build directory keeps setuid");
            let flags = rustix::fs::statvfs(&dir)
                .map_err(std::io::Error::from)?
                .f_flag;
            assert!(
                !flags.contains(StatVfsMountFlags::NOSUID),
                "builds honour setuid"
            );
            Ok::<(), std::io::Error>(())
        })
        .await
        .expect("child");
}
