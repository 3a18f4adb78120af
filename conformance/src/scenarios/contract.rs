//! Scenarios for single points of the contract, each small enough to read as documentation.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use store_api::{BuildError, ReleaseOutcome, StoreError, StoreExt};

use super::support::{Ctx, Outcome, Stop, cache_name, ensure, id, read_in, write_in};
use crate::tree::Tree;

/// A missing base is a typed error naming it, the build function is not run, nothing is
/// recorded.
pub(crate) async fn a_missing_base_is_a_typed_error(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let (ghost, x) = (id("ghost"), id("x"));
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = Arc::clone(&ran);
    let r = env
        .store()
        .build(Some(&ghost), &x, |_dir| async move {
            ran2.store(true, Ordering::SeqCst);
            Ok::<(), String>(())
        })
        .await;
    ensure!(
        matches!(&r, Err(BuildError::Store(StoreError::MissingBase { base })) if base == &ghost),
        "building from a base with no result returned {r:?}, expected MissingBase {{ base: ghost }}"
    );
    ensure!(
        !ran.load(Ordering::SeqCst),
        "the build function ran without its base"
    );
    env.expect_no_result(&x, "its base is missing").await?;
    env.close().await
}

/// A build without a base starts as an empty directory, whatever was built before it (and
/// not, say, as a clone of the last result).
pub(crate) async fn a_build_without_a_base_starts_empty(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let (first, second) = (id("first"), id("second"));
    env.build(None, &first, &[("output", "first"), ("d/f", "x")])
        .await?;
    env.store()
        .build(None, &second, |dir| async move {
            let tree = Tree::read(&dir).map_err(|e| e.to_string())?;
            match Tree::new().diff(&tree) {
                None => Ok(()),
                Some(diff) => Err(format!(
                    "a build without a base did not start as an empty directory (expected vs \
                     found):\n{diff}"
                )),
            }
        })
        .await
        .map_err(|e| {
            format!(
                "build without a base after another build: {}",
                super::support::show_build_error(&e)
            )
        })?;
    env.close().await
}

/// The log is written at `log_file(id)` while the build runs, is the file `log` of the build
/// directory, is readable from `log_file` and the result afterwards, and a child starts with
/// its base's log (which it replaces).
pub(crate) async fn the_log_is_written_during_the_build_and_kept(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let (base, child) = (id("base"), id("child"));
    for (build_base, target, text) in [
        (None, &base, "base log"),
        (Some(&base), &child, "child log"),
    ] {
        let store = env.store();
        let logs = env.store();
        let target2 = target.clone();
        store
            .build(build_base, target, move |dir| async move {
                let path = logs
                    .log_file(&target2)
                    .await
                    .map_err(|e| format!("log_file during the build: {e}"))?;
                if build_base.is_some() {
                    let inherited = fs::read_to_string(&path).map_err(|e| {
                        format!("a build from a base does not start with the base's log: {e}")
                    })?;
                    if inherited != "base log" {
                        return Err(format!("the inherited log reads {inherited:?}"));
                    }
                    fs::remove_file(&path).map_err(|e| e.to_string())?;
                }
                fs::write(&path, text).map_err(|e| format!("writing the log: {e}"))?;
                let via_dir = fs::read_to_string(dir.join("log")).map_err(|e| e.to_string())?;
                if via_dir != text {
                    return Err("log_file is not the file `log` in the build directory".into());
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("build of {target}: {e:?}"))?;
        let path = env
            .store()
            .log_file(target)
            .await
            .map_err(|e| format!("log_file({target}): {e}"))?;
        let read =
            fs::read_to_string(&path).map_err(|e| format!("reading log_file({target}): {e}"))?;
        ensure!(
            read == text,
            "log_file({target}) reads {read:?} after the build"
        );
        ensure!(
            env.read(target, "log").await? == text,
            "the result of {target} lost its log"
        );
    }
    ensure!(
        env.read(&base, "log").await? == "base log",
        "replacing the log in the child changed the base's log"
    );
    env.close().await
}

/// Writes through a result path fail or have no effect on the result: a later build from it
/// sees exactly what the build function left.
pub(crate) async fn writes_to_a_result_path_never_reach_later_builds(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let (base, child) = (id("base"), id("child"));
    env.build(None, &base, &[("output", "ok"), ("d/f", "x")])
        .await?;
    let path = env.result(&base).await?;
    let before = Tree::read(&path).map_err(|e| e.to_string())?;
    let _ = fs::write(path.join("output"), "tampered");
    let _ = fs::write(path.join("new"), "tampered");
    let _ = fs::remove_dir_all(path.join("d"));
    let expected = before.clone();
    env.store()
        .build(Some(&base), &child, move |dir| async move {
            let tree = Tree::read(&dir).map_err(|e| e.to_string())?;
            match expected.diff(&tree) {
                None => Ok(()),
                Some(diff) => Err(format!(
                    "a build from a result whose path was written to does not start from what \
                     its build left:\n{diff}"
                )),
            }
        })
        .await
        .map_err(|e| {
            format!(
                "build from the tampered base: {}",
                super::support::show_build_error(&e)
            )
        })?;
    env.close().await
}

/// `state_dir` exists, is writable by the builder, is never touched by store operations, and
/// survives reopen.
pub(crate) async fn the_state_dir_is_kept_and_untouched(ctx: Ctx) -> Outcome {
    let mut env = ctx.open().await?;
    let dir = env.store().state_dir().to_path_buf();
    ensure!(
        dir.is_dir(),
        "state_dir {} is not a directory after open",
        dir.display()
    );
    fs::write(dir.join("db.sqlite"), "builder state")
        .map_err(|e| format!("the builder cannot write in state_dir: {e}"))?;
    let before = Tree::read(&dir).map_err(|e| e.to_string())?;
    let (x, y) = (id("x"), id("y"));
    env.build(None, &x, &[("f", "1")]).await?;
    env.build(Some(&x), &y, &[("g", "2")]).await?;
    env.store()
        .delete(&x)
        .await
        .map_err(|e| format!("delete: {e}"))?;
    let lease = env
        .cache(crate::exec::current_user(), &cache_name("c"))
        .await?;
    lease.release().await.map_err(|e| format!("release: {e}"))?;
    env.store()
        .complete_deletes()
        .await
        .map_err(|e| format!("complete_deletes: {e}"))?;
    let after = Tree::read(&dir).map_err(|e| e.to_string())?;
    if let Some(diff) = before.diff(&after) {
        return Err(Stop::Fail(format!(
            "store operations changed state_dir:\n{diff}"
        )));
    }
    if ctx.caps.can_reopen {
        env.reopen().await?;
        let dir = env.store().state_dir().to_path_buf();
        let reopened = Tree::read(&dir).map_err(|e| e.to_string())?;
        if let Some(diff) = before.diff(&reopened) {
            return Err(Stop::Fail(format!(
                "state_dir changed across reopen:\n{diff}"
            )));
        }
        ensure!(
            env.read(&y, "g").await? == "2",
            "a result was lost across reopen"
        );
    }
    env.close().await
}

/// Deleting is idempotent, and a deleted id can be built again with new contents (nothing of
/// the old result shows).
pub(crate) async fn delete_is_idempotent_and_ids_can_be_reused(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let x = id("x");
    for _ in 0..2 {
        store
            .delete(&x)
            .await
            .map_err(|e| format!("delete of an absent id: {e}"))?;
    }
    env.build(None, &x, &[("old", "1")]).await?;
    store.delete(&x).await.map_err(|e| format!("delete: {e}"))?;
    store
        .delete(&x)
        .await
        .map_err(|e| format!("second delete: {e}"))?;
    env.expect_no_result(&x, "it was deleted").await?;
    env.build(None, &x, &[("new", "2")]).await?;
    let dir = env.result(&x).await?;
    ensure!(
        !dir.join("old").exists(),
        "the rebuilt id shows the deleted result's file"
    );
    ensure!(
        env.read(&x, "new").await? == "2",
        "the rebuilt id lost its file"
    );
    env.close().await
}

/// Three copies of one generation, released in each of the six orders: the first released is
/// published, the others discarded, and the cache holds the first one's contents.
pub(crate) async fn the_first_release_of_a_generation_wins_in_every_order(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let me = crate::exec::current_user();
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (n, order) in orders.iter().enumerate() {
        let name = cache_name(&format!("order-{n}"));
        let seed = env.cache(me, &name).await?;
        write_in(&seed, "seed", "s")?;
        seed.release().await.map_err(|e| format!("release: {e}"))?;
        let mut copies = Vec::new();
        for i in 0..3 {
            let lease = env.cache(me, &name).await?;
            write_in(&lease, "data", &format!("copy {i}"))?;
            copies.push(Some(lease));
        }
        for (rank, &i) in order.iter().enumerate() {
            let lease = copies[i].take().expect("each copy is released once");
            let got = lease.release().await.map_err(|e| format!("release: {e}"))?;
            let expected = if rank == 0 {
                ReleaseOutcome::Published
            } else {
                ReleaseOutcome::Discarded
            };
            ensure!(
                got == expected,
                "release order {order:?}: copy {i} (released {}) was {got:?}, expected {expected:?}",
                rank + 1
            );
        }
        let lease = env.cache(me, &name).await?;
        let data = read_in(&lease, "data")?;
        ensure!(
            data == Some(format!("copy {}", order[0]))
                && read_in(&lease, "seed")? == Some("s".into()),
            "release order {order:?}: the cache holds data {data:?}, expected the first released copy"
        );
    }
    env.close().await
}

/// Copies are independent, and a copy dropped without release is never published.
pub(crate) async fn copies_are_independent_and_a_dropped_copy_is_never_published(
    ctx: Ctx,
) -> Outcome {
    let env = ctx.open().await?;
    let me = crate::exec::current_user();
    let c = cache_name("c");
    let a = env.cache(me, &c).await?;
    let b = env.cache(me, &c).await?;
    write_in(&a, "a", "1")?;
    ensure!(
        read_in(&b, "a")?.is_none(),
        "a write in one copy shows in another"
    );
    drop(a);
    let got = b.release().await.map_err(|e| format!("release: {e}"))?;
    ensure!(
        got == ReleaseOutcome::Published,
        "a copy whose sibling was dropped was {got:?} on release"
    );
    let c2 = env.cache(me, &c).await?;
    ensure!(
        read_in(&c2, "a")?.is_none(),
        "a dropped copy's write was published"
    );
    write_in(&c2, "b", "2")?;
    drop(c2);
    let c3 = env.cache(me, &c).await?;
    ensure!(read_in(&c3, "b")?.is_none(), "a dropped copy was published");
    drop(c3);
    env.close().await
}

/// A chain of builds, each on the previous one, overwriting, adding and removing files and
/// directories (after containerd's 128-layer check, shorter): every layer holds exactly its
/// own tree.
pub(crate) async fn a_deep_chain_of_builds_keeps_every_layer(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let mut expected = Tree::new();
    let mut previous = None;
    let mut layers = Vec::new();
    for i in 0..12u32 {
        let layer = id(&format!("layer-{i}"));
        let edits = vec![
            crate::tree::Edit::Write {
                path: "n".into(),
                content: i.to_string(),
                mode: 0o644,
            },
            crate::tree::Edit::Write {
                path: format!("d{}/f", i % 3),
                content: format!("layer {i}"),
                mode: 0o600,
            },
            crate::tree::Edit::Remove {
                path: format!("d{}", (i + 1) % 3),
            },
            crate::tree::Edit::Symlink {
                path: "link".into(),
                target: format!("d{}/f", i % 3),
            },
        ];
        let start = expected.clone();
        for edit in &edits {
            expected.apply(edit);
        }
        env.store()
            .build(previous.as_ref(), &layer, move |dir| async move {
                let tree = Tree::read(&dir).map_err(|e| e.to_string())?;
                if let Some(diff) = start.diff(&tree) {
                    return Err(format!("layer {i} did not start as its base:\n{diff}"));
                }
                for edit in &edits {
                    edit.apply_to_dir(&dir).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("build of {layer}: {}", super::support::show_build_error(&e)))?;
        layers.push((layer.clone(), expected.clone()));
        previous = Some(layer);
    }
    for (layer, tree) in &layers {
        let got = Tree::read(&env.result(layer).await?).map_err(|e| e.to_string())?;
        if let Some(diff) = tree.diff(&got) {
            return Err(Stop::Fail(format!(
                "{layer} does not hold its own tree:\n{diff}"
            )));
        }
    }
    env.close().await
}
