//! Scenarios for what a hostile or careless build function or cache holder can do with the
//! directory it was given, and for a second opener: the store must never read, write or
//! delete anything outside its root because of it, and never lose data.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use store_api::{BuildError, ReleaseOutcome, StoreExt};

use super::support::{Ctx, Outcome, Stop, cache_name, ensure, id, read_in, write_in};

/// A directory the scenario owns, outside every store, with files worth keeping.
struct Precious {
    dir: tempfile::TempDir,
    before: BTreeMap<PathBuf, Option<String>>,
}

impl Precious {
    fn new() -> Result<Self, Stop> {
        let made = (|| {
            let dir = tempfile::Builder::new().prefix("precious-").tempdir()?;
            fs::write(dir.path().join("file"), "precious")?;
            fs::create_dir(dir.path().join("sub"))?;
            fs::write(dir.path().join("sub/deep"), "also precious")?;
            Ok::<_, std::io::Error>(dir)
        })();
        let dir = made.map_err(|e| format!("making a directory outside the store: {e}"))?;
        let before = contents(dir.path())?;
        Ok(Self { dir, before })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Fails unless everything in it is exactly as it was made.
    fn unchanged(&self, after: &str) -> Outcome {
        let now = contents(self.dir.path())?;
        ensure!(
            now == self.before,
            "{after}, a directory outside the store changed: it held {:?}, now {:?}",
            self.before,
            now
        );
        Ok(())
    }
}

/// Every entry under `dir` (not following links) with a file's bytes.
fn contents(dir: &Path) -> Result<BTreeMap<PathBuf, Option<String>>, Stop> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.map_err(|e| format!("walking {}: {e}", dir.display()))?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let bytes = match entry.file_type().is_file() {
            true => Some(
                String::from_utf8_lossy(
                    &fs::read(entry.path())
                        .map_err(|e| format!("reading {}: {e}", entry.path().display()))?,
                )
                .into_owned(),
            ),
            false => None,
        };
        out.insert(rel.to_owned(), bytes);
    }
    Ok(out)
}

/// Tries to replace directory `dir` with a symlink to `target`, as a hostile build function
/// could. Whether it worked depends on the backend (a mount point cannot be removed).
fn swap_for_link(dir: &Path, target: &Path) -> bool {
    // Emptying may half-work (contents gone, the directory itself busy); only a link in
    // its place counts as swapped.
    let _ = fs::remove_dir_all(dir);
    std::os::unix::fs::symlink(target, dir).is_ok()
}

/// Fails unless `path` is a real directory (not a symlink to one).
fn real_dir(path: &Path, what: &str) -> Outcome {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    ensure!(
        meta.is_dir(),
        "{what} {} is not a real directory (a symlink out of the store?)",
        path.display()
    );
    Ok(())
}

/// A build function or cache holder that swaps its top directory for a symlink to a directory
/// outside the store: the store must follow no such link (that directory stays exactly as it
/// was, through the commit, later builds from a base, cache releases and later copies), and
/// what it was handed back that way is not recorded: the build fails with a store error and
/// has no result, the release fails and the cache keeps its version. Where the backend does
/// not let the directory be swapped (a mount point), the build or copy is as usual.
pub(crate) async fn a_directory_swapped_for_a_link_never_leads_outside(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let outside = Precious::new()?;
    let base = id("base");
    env.build(None, &base, &[("out", "base")]).await?;

    for (target, from) in [(id("from-nothing"), None), (id("from-base"), Some(&base))] {
        let swapped = Arc::new(AtomicBool::new(false));
        let (flag, link_to) = (Arc::clone(&swapped), outside.path());
        let built = store
            .build(from, &target, |dir| async move {
                flag.store(swap_for_link(&dir, &link_to), Ordering::SeqCst);
                Ok::<(), String>(())
            })
            .await;
        outside.unchanged(&format!("after building {target} in a swapped directory"))?;
        let result = store
            .result(&target)
            .await
            .map_err(|e| format!("result({target}): {e}"))?;
        if swapped.load(Ordering::SeqCst) {
            ensure!(
                matches!(built, Err(BuildError::Store(_))),
                "the build of {target} swapped its directory for a link out of the store, \
                 and the build returned {built:?} instead of a store error"
            );
            ensure!(
                result.is_none(),
                "the build of {target} swapped its directory for a link, yet it has a result"
            );
            // The id is free again and builds as usual.
            env.build(from, &target, &[("own", "fine")]).await?;
        } else {
            built.map_err(|e| format!("the build of {target} failed: {e:?}"))?;
        }
        if let Some(path) = store
            .result(&target)
            .await
            .map_err(|e| format!("result({target}): {e}"))?
        {
            real_dir(&path, &format!("the result of {target}"))?;
            ensure!(
                !path.join("file").exists(),
                "the result of {target} shows the files of the directory outside the store"
            );
        }
    }
    // Builds from the bases above still see only store data.
    env.build(Some(&id("from-base")), &id("later"), &[]).await?;
    outside.unchanged("after a build from a base built in a swapped directory")?;

    let name = cache_name("swapped");
    let user = ctx.other_user();
    let lease = env.cache(user, &name).await?;
    write_in(&lease, "v", "1")?;
    lease
        .release()
        .await
        .map_err(|e| format!("first release: {e}"))?;
    let lease = env.cache(user, &name).await?;
    let swapped = swap_for_link(lease.path(), &outside.path());
    let released = lease.release().await;
    outside.unchanged("after releasing a cache copy swapped for a link")?;
    if swapped {
        ensure!(
            released.is_err(),
            "a cache copy swapped for a link out of the store was released with {released:?} \
             instead of an error"
        );
    } else {
        released.map_err(|e| format!("release: {e}"))?;
    }
    let lease = env.cache(user, &name).await?;
    real_dir(lease.path(), "a later copy of the cache")?;
    ensure!(
        read_in(&lease, "file")?.is_none(),
        "a later copy of the cache shows the files of the directory outside the store"
    );
    if swapped {
        ensure!(
            read_in(&lease, "v")? == Some("1".into()),
            "after a failed release of a swapped copy the cache is not at its last version"
        );
    }
    write_in(&lease, "v", "2")?;
    let outcome = lease
        .release()
        .await
        .map_err(|e| format!("release after a swapped copy: {e}"))?;
    ensure!(
        outcome == ReleaseOutcome::Published,
        "a release after a swapped copy was {outcome:?}, expected Published"
    );
    outside.unchanged("after the cache was used again")?;
    env.close().await?;
    outside.unchanged("after the store was closed")
}

/// A store can be open once at a time: opening it again while it is open (another process,
/// or another handle in this one) fails promptly, with
/// [`StoreError::Locked`](store_api::StoreError::Locked) where the factory passes the
/// backend's error on, and changes nothing: the first store's running build commits and its
/// cache copy out publishes. Once every handle is gone the store opens again.
pub(crate) async fn a_second_open_of_an_open_store_fails_and_changes_nothing(ctx: Ctx) -> Outcome {
    ctx.need_reopen()?;
    let mut env = ctx.open().await?;
    let store = env.store();
    let (a, b, cache) = (id("a"), id("b"), cache_name("c"));
    env.build(None, &a, &[("f", "a")]).await?;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let (store, a, b) = (env.store(), a.clone(), b.clone());
        tokio::spawn(async move {
            store
                .build(Some(&a), &b, |dir| async move {
                    let _ = started_tx.send(());
                    go_rx.await.map_err(|e| e.to_string())?;
                    fs::write(dir.join("g"), "b").map_err(|e| e.to_string())
                })
                .await
        })
    };
    started_rx
        .await
        .map_err(|_| "the build from a did not start".to_owned())?;
    let lease = env.cache(ctx.other_user(), &cache).await?;
    write_in(&lease, "x", "1")?;
    let before = env.listing().await?;

    let second = tokio::time::timeout(ctx.settings.op_timeout, env.reopen_beside()).await;
    let outcome = match second {
        Err(_) => Err(Stop::Fail(
            "opening the store again while it is open hung (it must fail at once)".into(),
        )),
        Ok(Ok(())) => Err(Stop::Fail(
            "opening the store again while it is open succeeded: two stores on one storage \
             would each repair away the other's work"
                .into(),
        )),
        Ok(Err(e)) => match e.downcast_ref::<store_api::StoreError>() {
            Some(store_api::StoreError::Locked { .. }) | None => Ok(()),
            Some(other) => Err(Stop::Fail(format!(
                "opening the store again while it is open failed with {other:?}, expected \
                 StoreError::Locked"
            ))),
        },
    };
    let after = env.listing().await?;
    let _ = go_tx.send(());
    let built = running
        .await
        .map_err(|e| format!("the running build panicked: {e}"))?;
    outcome?;
    ensure!(
        before == after,
        "the failed second open changed the storage: {before:?} became {after:?}"
    );
    built.map_err(|e| format!("the build running during a second open failed: {e:?}"))?;
    let released = lease
        .release()
        .await
        .map_err(|e| format!("releasing the copy out during a second open: {e}"))?;
    ensure!(
        released == ReleaseOutcome::Published,
        "the copy out during a second open was {released:?}, expected Published"
    );
    drop(store);
    env.reopen().await?;
    ensure!(
        env.read(&b, "g").await? == "b",
        "the result built meanwhile is lost"
    );
    let lease = env.cache(ctx.other_user(), &cache).await?;
    ensure!(
        read_in(&lease, "x")? == Some("1".into()),
        "the copy published meanwhile is lost"
    );
    drop(lease);
    env.close().await
}
