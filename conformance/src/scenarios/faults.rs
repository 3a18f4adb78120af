//! One scenario per known fault of OBuilder's ZFS store (OCurrent OBuilder, `lib/zfs_store.ml`),
//! each stated on the scenario itself: deleting a base with `destroy -R` took every result
//! built on it; a partial build left by a crash blocked its id; a base deleted while a build
//! from it ran broke the build; a failed build left its dataset behind; cache names were
//! used as dataset names unescaped; `df` reported a made-up 0; and a dropped copy kept its
//! cache busy forever.

use std::fs;
use std::task::Poll;

use store_api::{DeleteCacheError, ReleaseOutcome, Store, StoreExt};

use super::support::{Ctx, Outcome, Stop, cache_name, ensure, id, read_in, write_in};

/// `destroy -R` took derived results with it: deleting a base must keep every result built
/// on it, and builds from those still work.
pub(crate) async fn deleting_a_base_keeps_its_children(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let (base, mid, top, again) = (id("base"), id("mid"), id("top"), id("again"));
    env.build(None, &base, &[("b", "base")]).await?;
    env.build(Some(&base), &mid, &[("m", "mid")]).await?;
    env.build(Some(&mid), &top, &[("t", "top")]).await?;
    store
        .delete(&base)
        .await
        .map_err(|e| format!("delete(base): {e}"))?;
    env.expect_no_result(&base, "it was deleted").await?;
    ensure!(env.read(&mid, "b").await? == "base", "mid lost base's file");
    ensure!(env.read(&mid, "m").await? == "mid", "mid lost its own file");
    store
        .delete(&mid)
        .await
        .map_err(|e| format!("delete(mid): {e}"))?;
    for (file, content) in [("b", "base"), ("m", "mid"), ("t", "top")] {
        ensure!(
            env.read(&top, file).await? == content,
            "top lost {file} after its base and grand-base were deleted"
        );
    }
    env.build(Some(&top), &again, &[("a", "again")]).await?;
    ensure!(
        env.read(&again, "b").await? == "base",
        "a build from top lost base's file"
    );
    env.close().await
}

/// A crashed partial build leaked until the same id was built again. Without fault injection
/// the suite stands in for the crash with a build future dropped mid-build and a cache copy
/// never released, then reopens: nothing of either may be visible, and the id builds afresh.
pub(crate) async fn a_crashed_partial_build_is_reclaimed(ctx: Ctx) -> Outcome {
    ctx.need_reopen()?;
    let mut env = ctx.open().await?;
    let (partial, cache) = (id("partial"), cache_name("c"));
    {
        let store = env.store();
        let lease = env.cache(crate::exec::current_user(), &cache).await?;
        write_in(&lease, "data", "v1")?;
        lease.release().await.map_err(|e| format!("release: {e}"))?;
        let lease = env.cache(crate::exec::current_user(), &cache).await?;
        write_in(&lease, "data", "never released")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fut = store.build(None, &partial, |dir| async move {
            fs::write(dir.join("half"), "written")?;
            let _ = tx.send(());
            futures::future::pending::<std::io::Result<()>>().await
        });
        let mut fut = Box::pin(fut);
        tokio::select! {
            r = &mut fut => return Err(Stop::Fail(format!(
                "a build whose function never finishes completed: {:?}", r.err()))),
            _ = rx => {}
        }
        drop(fut);
        drop(lease);
    }
    env.reopen().await?;
    env.expect_no_result(&partial, "its build never finished")
        .await?;
    let lease = env.cache(crate::exec::current_user(), &cache).await?;
    ensure!(
        read_in(&lease, "data")? == Some("v1".into()),
        "after reopen the cache is not at its last released version"
    );
    drop(lease);
    env.store()
        .build(None, &partial, |dir| async move {
            let n = fs::read_dir(&dir).map_err(|e| e.to_string())?.count();
            if n == 0 {
                Ok(())
            } else {
                Err(format!("the rebuilt id starts with {n} leftover entries"))
            }
        })
        .await
        .map_err(|e| format!("rebuilding the interrupted id: {e:?}"))?;
    env.close().await
}

/// `destroy -R` destroyed running builds cloned from the deleted result: a build whose base
/// is deleted while it runs must finish normally with the base's files.
pub(crate) async fn a_running_build_survives_deletion_of_its_base(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let (base, child) = (id("base"), id("child"));
    env.build(None, &base, &[("from-base", "b")]).await?;
    let store = env.store();
    let deleter = env.store();
    let base2 = base.clone();
    store
        .build(Some(&base), &child, |dir| async move {
            deleter
                .delete(&base2)
                .await
                .map_err(|e| format!("delete of the base while a build from it runs: {e}"))?;
            let seen = fs::read_to_string(dir.join("from-base"))
                .map_err(|e| format!("the running build lost its base's file: {e}"))?;
            if seen != "b" {
                return Err(format!("the running build's base file now reads {seen:?}"));
            }
            fs::write(dir.join("own"), "c").map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the build whose base was deleted failed: {e:?}"))?;
    env.expect_no_result(&base, "it was deleted").await?;
    ensure!(
        env.read(&child, "from-base").await? == "b",
        "child lost base's file"
    );
    ensure!(
        env.read(&child, "own").await? == "c",
        "child lost its own file"
    );
    env.close().await
}

/// A build that fails, panics or is cancelled records nothing, and the id then builds afresh
/// without leftovers.
pub(crate) async fn a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let base = id("base");
    env.build(None, &base, &[("from-base", "b")]).await?;
    for (how, with_base) in [
        ("error", false),
        ("panic", false),
        ("cancel", false),
        ("error", true),
        ("panic", true),
        ("cancel", true),
    ] {
        let victim = id(&format!("victim-{how}-{with_base}"));
        let base_arg = with_base.then_some(&base);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let fut = store.build(base_arg, &victim, move |dir| async move {
            fs::write(dir.join("junk"), "left behind").map_err(|e| e.to_string())?;
            match how {
                "error" => Err("failed on purpose".to_owned()),
                "panic" => std::panic::panic_any(crate::quiet_panic::HarnessPanic(0)),
                _ => {
                    let _ = tx.send(());
                    futures::future::pending().await
                }
            }
        });
        let mut fut = Box::pin(fut);
        match how {
            "error" => {
                let r = fut.await;
                ensure!(
                    matches!(&r, Err(store_api::BuildError::Failed(m)) if m == "failed on purpose"),
                    "a failing build returned {r:?}"
                );
            }
            "panic" => {
                let r = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await;
                ensure!(
                    matches!(&r, Err(p) if p.downcast_ref::<crate::quiet_panic::HarnessPanic>().is_some()),
                    "a panicking build did not resume the function's panic"
                );
            }
            _ => {
                tokio::select! {
                    r = &mut fut => return Err(Stop::Fail(format!("a never-ending build completed: {r:?}"))),
                    _ = rx => {}
                }
                drop(fut);
            }
        }
        env.expect_no_result(&victim, &format!("its build ended with {how}"))
            .await?;
        store
            .build(base_arg, &victim, |dir| async move {
                if dir.join("junk").exists() {
                    return Err("the failed attempt's file is visible in the new build".to_owned());
                }
                if with_base && !dir.join("from-base").exists() {
                    return Err("the rebuild does not start from its base".to_owned());
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("rebuilding {victim} after {how}: {e:?}"))?;
        ensure!(
            !env.result(&victim).await?.join("junk").exists(),
            "the rebuilt result of {victim} holds the failed attempt's file"
        );
    }
    env.close().await
}

/// OBuilder's escaping wrote `%` (rejected by `zfs create`) and was not injective: names that
/// need escaping must work, and similar names must never share storage.
pub(crate) async fn a_cache_name_that_needs_escaping_works_and_stays_separate(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let me = crate::exec::current_user();
    // Every group of names a naive mapping would merge (see `collisions`).
    let names: Vec<store_api::CacheName> = ctx
        .names
        .caches
        .concat()
        .iter()
        .map(|n| cache_name(n))
        .collect();
    for name in &names {
        let lease = env.cache(me, name).await?;
        ensure!(
            lease.name() == name,
            "cache({name:?}) returned a lease named {:?}",
            lease.name()
        );
        ensure!(
            read_in(&lease, "owner")?.is_none(),
            "the new cache {name:?} already holds another cache's file (names share storage)"
        );
        write_in(&lease, "owner", name.as_str())?;
        let outcome = lease
            .release()
            .await
            .map_err(|e| format!("release of {name:?}: {e}"))?;
        ensure!(
            outcome == ReleaseOutcome::Published,
            "the only copy of {name:?} was {outcome:?}"
        );
    }
    // Deleting one of a group leaves the others.
    let Some(deleted) = names.first() else {
        return env.close().await;
    };
    store
        .delete_cache(deleted)
        .await
        .map_err(|e| format!("delete_cache({deleted:?}): {e}"))?;
    for name in &names {
        let lease = env.cache(me, name).await?;
        let expected = (name != deleted).then(|| name.as_str().to_owned());
        let got = read_in(&lease, "owner")?;
        ensure!(
            got == expected,
            "cache {name:?} holds {got:?}, expected {expected:?} (names share storage?)"
        );
    }
    env.close().await
}

/// Ids a naive mapping would merge (case folding, punctuation, trailing dots, truncation;
/// see `collisions`) are results of their own: each holds what its build wrote, and deleting
/// one leaves the others.
pub(crate) async fn ids_a_naive_mapping_would_merge_stay_separate(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let ids: Vec<store_api::Id> = ctx.names.ids.concat().iter().map(|i| id(i)).collect();
    for i in &ids {
        env.build(None, i, &[("owner", i.as_str())]).await?;
    }
    let Some(deleted) = ids.first() else {
        return env.close().await;
    };
    env.store()
        .delete(deleted)
        .await
        .map_err(|e| format!("delete({deleted}): {e}"))?;
    env.expect_no_result(deleted, "it was deleted").await?;
    for i in ids.iter().filter(|i| *i != deleted) {
        let got = env.read(i, "owner").await?;
        ensure!(
            got == i.as_str(),
            "the result of {i:?} holds the file of {got:?} (ids share storage?)"
        );
    }
    env.close().await
}

/// `df` reported 0 % free when `zpool` failed: on fresh storage it must be a real percentage
/// above 0, before and after deletes are completed.
pub(crate) async fn df_is_a_percentage_and_not_a_made_up_0(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let check = |df: f64, when: &str| -> Outcome {
        ensure!(
            df.is_finite() && df > 0.0 && df <= 100.0,
            "df {when} returned {df}, expected a percentage above 0 on fresh storage"
        );
        Ok(())
    };
    check(
        store.df().await.map_err(|e| format!("df: {e}"))?,
        "on a fresh store",
    )?;
    let x = id("x");
    env.build(None, &x, &[("f", "data")]).await?;
    store.delete(&x).await.map_err(|e| format!("delete: {e}"))?;
    store
        .complete_deletes()
        .await
        .map_err(|e| format!("complete_deletes: {e}"))?;
    check(
        store.df().await.map_err(|e| format!("df: {e}"))?,
        "after complete_deletes",
    )?;
    env.close().await
}

/// The clone counter leaked when acquiring a copy failed, making `delete_cache` Busy forever:
/// copies that were dropped, and acquisitions that were cancelled, must not count as out.
pub(crate) async fn an_abandoned_copy_does_not_keep_the_cache_busy(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store: std::sync::Arc<dyn Store> = env.store();
    let me = crate::exec::current_user();
    let c = cache_name("c");
    drop(env.cache(me, &c).await?);
    // Cancel an acquisition at its first poll.
    {
        let mut fut = store.cache(me, &c);
        if let Poll::Ready(lease) = futures::poll!(&mut fut) {
            drop(lease.map_err(|e| format!("cache: {e}"))?);
        }
    }
    let lease = env.cache(me, &c).await?;
    write_in(&lease, "data", "dropped")?;
    drop(lease);
    match store.delete_cache(&c).await {
        Ok(()) => {}
        Err(DeleteCacheError::Busy { .. }) => {
            return Err(Stop::Fail(
                "delete_cache is Busy although every copy was dropped or never handed out".into(),
            ));
        }
        Err(e) => return Err(Stop::Fail(format!("delete_cache: {e}"))),
    }
    let lease = env.cache(me, &c).await?;
    ensure!(
        read_in(&lease, "data")?.is_none(),
        "a dropped copy was published"
    );
    drop(lease);
    env.close().await
}
