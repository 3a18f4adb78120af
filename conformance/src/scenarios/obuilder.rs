//! OBuilder's own store checks (`stress.ml`: `test_store` and `test_cache`), restated.

use std::fs;
use std::os::unix::fs::MetadataExt;

use store_api::{DeleteCacheError, ReleaseOutcome, StoreExt};

use super::support::{Ctx, Outcome, Stop, cache_name, ensure, id, read_in, write_in};

/// `test_store`: build, build from a base, delete, and a failing build whose error comes back
/// exactly as the build function returned it.
pub(crate) async fn store_basics(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let (unknown, base, sub, fail) = (id("unknown"), id("base"), id("sub"), id("fail"));

    env.expect_no_result(&unknown, "it was never built").await?;
    store
        .delete(&base)
        .await
        .map_err(|e| format!("delete of an absent id must succeed: {e}"))?;
    env.build(None, &base, &[("output", "ok")]).await?;
    ensure!(
        env.read(&base, "output").await? == "ok",
        "base/output is not \"ok\""
    );

    store
        .delete(&sub)
        .await
        .map_err(|e| format!("delete of an absent id must succeed: {e}"))?;
    store
        .build(Some(&base), &sub, |dir| async move {
            let orig = fs::read_to_string(dir.join("output"))?;
            fs::write(dir.join("output"), orig + "+")
        })
        .await
        .map_err(|e| format!("build of sub from base: {e:?} (is base's output cloned?)"))?;
    ensure!(
        env.read(&sub, "output").await? == "ok+",
        "sub/output is not \"ok+\""
    );
    store
        .delete(&sub)
        .await
        .map_err(|e| format!("delete(sub): {e}"))?;
    env.expect_no_result(&sub, "it was deleted").await?;
    ensure!(
        env.read(&base, "output").await? == "ok",
        "deleting sub changed base"
    );

    #[derive(Debug, PartialEq)]
    struct Failed;
    // From a base, after writing, as OBuilder's failing step does.
    let err = store
        .build(Some(&base), &fail, |dir| async move {
            let _ = fs::write(dir.join("partial"), "x");
            Err::<(), _>(Failed)
        })
        .await
        .err();
    match err {
        Some(e) => ensure!(
            e.into_failed() == Some(Failed),
            "the build function's error did not come back as BuildError::Failed(Failed)"
        ),
        None => return Err(Stop::Fail("a failing build returned Ok".into())),
    }
    env.expect_no_result(&fail, "its build failed").await?;
    env.close().await
}

/// `test_cache`: a new cache is empty and owned by the user; releases publish; of two copies
/// of one generation the first released wins; `delete_cache` while a copy is out.
pub(crate) async fn cache_basics(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let c1 = cache_name("c1");
    let user = ctx.other_user();
    let me = crate::exec::current_user();

    store
        .delete_cache(&c1)
        .await
        .map_err(|e| format!("delete_cache of an absent cache must succeed: {e}"))?;

    let lease = env.cache(user, &c1).await?;
    if ctx.settings.check_ownership {
        let meta = fs::metadata(lease.path()).map_err(|e| format!("stat of the copy: {e}"))?;
        ensure!(
            (meta.uid(), meta.gid()) == (user.uid(), user.gid()),
            "a new cache created for {user} is owned by {}:{}",
            meta.uid(),
            meta.gid()
        );
    }
    let entries = fs::read_dir(lease.path())
        .map_err(|e| format!("reading the new copy: {e}"))?
        .count();
    ensure!(entries == 0, "a new cache is not empty ({entries} entries)");
    write_in(&lease, "data", "v1")?;
    let outcome = lease.release().await.map_err(|e| format!("release: {e}"))?;
    ensure!(
        outcome == ReleaseOutcome::Published,
        "the only copy was {outcome:?}"
    );

    let lease = env.cache(me, &c1).await?;
    ensure!(
        read_in(&lease, "data")? == Some("v1".into()),
        "the released v1 is not in the next copy"
    );
    lease.release().await.map_err(|e| format!("release: {e}"))?;

    let l1 = env.cache(me, &c1).await?;
    let l2 = env.cache(me, &c1).await?;
    write_in(&l1, "data", "v2a")?;
    write_in(&l2, "data", "v2b")?;
    ensure!(
        read_in(&l1, "data")? == Some("v2a".into()),
        "two copies of one cache share storage"
    );
    let r2 = l2.release().await.map_err(|e| format!("release: {e}"))?;
    let r1 = l1.release().await.map_err(|e| format!("release: {e}"))?;
    ensure!(
        (r2, r1) == (ReleaseOutcome::Published, ReleaseOutcome::Discarded),
        "releasing two copies of one generation (second taken first) gave {r2:?} then {r1:?}, \
         expected Published then Discarded"
    );
    let lease = env.cache(me, &c1).await?;
    ensure!(
        read_in(&lease, "data")? == Some("v2b".into()),
        "the first release of a generation did not win"
    );
    lease.release().await.map_err(|e| format!("release: {e}"))?;

    let lease = env.cache(me, &c1).await?;
    write_in(&lease, "data", "v3")?;
    match (ctx.caps.may_return_busy, store.delete_cache(&c1).await) {
        (true, Err(DeleteCacheError::Busy { .. })) => {
            let outcome = lease.release().await.map_err(|e| format!("release: {e}"))?;
            ensure!(
                outcome == ReleaseOutcome::Published,
                "after a Busy delete_cache (which changes nothing) the release was {outcome:?}"
            );
            store
                .delete_cache(&c1)
                .await
                .map_err(|e| format!("delete_cache with no copy out: {e}"))?;
        }
        (false, Ok(())) => {
            let outcome = lease.release().await.map_err(|e| format!("release: {e}"))?;
            ensure!(
                outcome == ReleaseOutcome::Discarded,
                "a copy released after its cache was deleted was {outcome:?}"
            );
        }
        (busy, got) => {
            return Err(Stop::Fail(format!(
                "delete_cache while a copy is out returned {got:?}, but the backend declares \
                 may_return_busy = {busy}"
            )));
        }
    }
    let lease = env.cache(me, &c1).await?;
    ensure!(
        read_in(&lease, "data")?.is_none(),
        "a cache made after delete_cache still holds old data"
    );
    drop(lease);
    env.close().await
}
