//! The `bad_input_changes_nothing` scenario: hostile ids and cache names, builds from a
//! missing base, deletes of things that never existed, paths used after their lease ended.
//! Each gets a typed error or the documented behaviour, and a listing of the storage
//! ([`StoreFactory::list_storage`](crate::StoreFactory::list_storage)) taken before and after
//! shows that nothing changed.
//!
//! What the API makes impossible is not tested at run time:
//! - ids and cache names are `String`s, so non-UTF-8 bytes cannot even be passed (a
//!   backend never sees them);
//! - releasing a copy twice does not compile, because
//!   [`CacheLease::release`](store_api::CacheLease::release) takes the lease by value (see
//!   the `compile_fail` example in the [crate documentation](crate#bad-input)).

use std::fs;
use std::time::Duration;

use store_api::{
    BuildError, CacheName, DeleteCacheError, Id, NameKind, ReleaseOutcome, StoreError, StoreExt,
};

use crate::scenarios::support::{
    Ctx, Env, Outcome, Stop, cache_name, ensure, id, read_in, write_in,
};

/// Strings no [`Id`] may be: each is a typed [`NameError`](store_api::NameError).
fn hostile_ids() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "a/b",
        "../state",
        "..",
        ".",
        ".hidden",
        "a@b",
        "base@snap",
        "%",
        "a%2fb",
        "#",
        "a#b",
        "a\0b",
        "a\nb",
        "\n",
        " a",
        "a b",
        "a\tb",
        "-R",
        "--",
        "-",
        "pool/other",
        "result/base",
        "a:1",
        "café",
        "a\u{200b}b",
        "*",
        "a?",
        "$(x)",
        "`x`",
        "a;b",
        "'",
        "\"",
        "\\",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("a".repeat(Id::MAX_LEN + 1));
    v.push("a".repeat(100_000));
    v
}

/// Strings no [`CacheName`] may be.
fn invalid_cache_names() -> Vec<String> {
    vec![
        String::new(),
        "a\0b".into(),
        "\0".into(),
        "x".repeat(CacheName::MAX_LEN + 1),
        "x".repeat(100_000),
    ]
}

/// Valid cache names that a careless backend would turn into paths, options or other
/// datasets; the documented behaviour is that each is a cache of its own. (Escaping and
/// separation of look-alike names, `%`, `-R`, `..` and non-ASCII ones, is the business of
/// `a_cache_name_that_needs_escaping_works_and_stays_separate`; here every name costs a few
/// commands, which add up on a slow backend.)
fn hostile_cache_names(root_component: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "/",
        "a/b",
        "../state",
        ".",
        "--",
        "a@b",
        "c@v1",
        "#",
        "a\nb",
        " ",
        "tab\tx",
        "pool/other",
        "state",
        "$(touch x)",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("x".repeat(CacheName::MAX_LEN));
    // Names of the storage itself and a sibling of it.
    v.push(root_component.to_owned());
    v.push(format!("{root_component}/other"));
    v.push(format!("../{root_component}"));
    v
}

/// Valid ids that share a name with parts of a backend's layout.
const LAYOUT_LOOKALIKE_IDS: [&str; 5] = ["state", "cache", "result", "snap", "log"];

pub(crate) async fn bad_input_changes_nothing(ctx: Ctx) -> Outcome {
    let env = ctx.open().await?;
    let store = env.store();
    let me = crate::exec::current_user();
    let base = id("base");
    env.build(None, &base, &[("f", "base")]).await?;
    let c = cache_name("c");
    let lease = env.cache(me, &c).await?;
    write_in(&lease, "data", "v1")?;
    lease
        .release()
        .await
        .map_err(|e| format!("release of v1: {e}"))?;
    fs::write(store.state_dir().join("sentinel"), "kept")
        .map_err(|e| format!("writing in state_dir: {e}"))?;
    let before = env.listing().await?;

    // Names that cannot be constructed: a typed error, before any store sees them.
    for s in hostile_ids() {
        match Id::new(s.clone()) {
            Ok(id) => return Err(Stop::Fail(format!("Id::new({s:?}) accepted {id:?}"))),
            Err(e) => ensure!(
                e.kind() == NameKind::Id && !e.to_string().is_empty() && e.to_string().len() < 400,
                "Id::new({:?}) failed with a {:?} error: {e}",
                short(&s),
                e.kind()
            ),
        }
        ensure!(
            s.parse::<Id>().is_err() && serde_json::from_value::<Id>(s.clone().into()).is_err(),
            "the id {:?} is rejected by Id::new but accepted by parse or serde",
            short(&s)
        );
    }
    for s in invalid_cache_names() {
        match CacheName::new(s.clone()) {
            Ok(n) => return Err(Stop::Fail(format!("CacheName::new accepted {n:?}"))),
            Err(e) => ensure!(
                e.kind() == NameKind::CacheName,
                "CacheName::new({:?}) failed with a {:?} error: {e}",
                short(&s),
                e.kind()
            ),
        }
    }

    // A build from a missing base: a typed error, and the function is not run.
    for missing in ["missing", "state", "snap"] {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let r = store
            .build(Some(&id(missing)), &id("orphan"), |_| async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            })
            .await;
        ensure!(
            matches!(&r, Err(BuildError::Store(StoreError::MissingBase { base })) if base.as_str() == missing),
            "a build from the missing base {missing:?} returned {r:?}, expected MissingBase"
        );
        ensure!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the build function ran although the base {missing:?} is missing"
        );
        env.expect_no_result(&id("orphan"), "its base was missing")
            .await?;
    }
    // Deleting what never existed is not an error.
    for never in ["never", "orphan", "state", "cache"] {
        store
            .delete(&id(never))
            .await
            .map_err(|e| format!("delete of the never-built id {never:?}: {e}"))?;
    }
    for never in hostile_cache_names("x")
        .iter()
        .chain(["never".to_owned()].iter())
    {
        match store.delete_cache(&cache_name(never)).await {
            Ok(()) => {}
            Err(DeleteCacheError::Busy { .. }) => {
                return Err(Stop::Fail(format!(
                    "delete_cache of the never-created cache {never:?} is Busy"
                )));
            }
            Err(e) => {
                return Err(Stop::Fail(format!(
                    "delete_cache of the never-created cache {never:?}: {e}"
                )));
            }
        }
    }
    same_listing(
        &env,
        &before,
        "after rejected names, missing bases and absent deletes",
    )
    .await?;

    // Valid but hostile names work as names of their own, and leave nothing once deleted.
    let root_component = store
        .root()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n.len() < 100)
        .unwrap_or_else(|| "zstore".into());
    for s in hostile_cache_names(&root_component) {
        let name = CacheName::new(s.clone()).map_err(|e| format!("{s:?} is valid: {e}"))?;
        let lease = env.cache(me, &name).await?;
        ensure!(
            lease.name() == &name,
            "cache({name:?}) returned a lease named {:?}",
            lease.name()
        );
        ensure!(
            read_in(&lease, "data")?.is_none(),
            "the new cache {name:?} already holds another cache's data"
        );
        write_in(&lease, "data", &s)?;
        let outcome = lease
            .release()
            .await
            .map_err(|e| format!("release of {name:?}: {e}"))?;
        ensure!(
            outcome == ReleaseOutcome::Published,
            "the only copy of {name:?} was {outcome:?}"
        );
        store
            .delete_cache(&name)
            .await
            .map_err(|e| format!("delete_cache({name:?}): {e}"))?;
    }
    for lookalike in LAYOUT_LOOKALIKE_IDS {
        let i = id(lookalike);
        env.build(Some(&base), &i, &[("own", lookalike)]).await?;
        ensure!(
            env.read(&i, "own").await? == lookalike && env.read(&i, "f").await? == "base",
            "the result of {lookalike:?} does not hold what its build wrote"
        );
        store
            .delete(&i)
            .await
            .map_err(|e| format!("delete({lookalike}): {e}"))?;
    }
    ensure!(
        env.read(&base, "f").await? == "base",
        "result `base` changed"
    );
    ensure!(
        fs::read_to_string(store.state_dir().join("sentinel"))
            .ok()
            .as_deref()
            == Some("kept"),
        "the state_dir sentinel changed"
    );
    same_listing(
        &env,
        &before,
        "after hostile cache names and ids were used and deleted",
    )
    .await?;

    // A path used after its lease ended never reaches the cache.
    let lease = env.cache(me, &c).await?;
    ensure!(
        read_in(&lease, "data")?.as_deref() == Some("v1"),
        "cache `c` is no longer at v1"
    );
    write_in(&lease, "data", "v2")?;
    let released = lease.path().to_owned();
    lease
        .release()
        .await
        .map_err(|e| format!("release of v2: {e}"))?;
    // Either write fails (the path is gone or read-only) or it must have no effect.
    let _ = fs::write(released.join("data"), "written after release");
    let _ = fs::write(released.join("late"), "written after release");
    let dropped = env.cache(me, &c).await?;
    let dropped_path = dropped.path().to_owned();
    drop(dropped);
    let _ = fs::write(dropped_path.join("data"), "written after drop");
    let lease = env.cache(me, &c).await?;
    let data = read_in(&lease, "data")?;
    let late = read_in(&lease, "late")?;
    drop(lease);
    ensure!(
        data.as_deref() == Some("v2") && late.is_none(),
        "writes to a copy's path after its release or drop reached the cache: data = {data:?}, \
         late = {late:?}"
    );

    // The builder promised never to build an id that exists; a store may refuse
    // (AlreadyBuilt) and must not corrupt anything either way.
    let r = store
        .build(None, &base, |dir| async move {
            fs::write(dir.join("f"), "again")
        })
        .await;
    let f = env.read(&base, "f").await?;
    match r {
        Err(BuildError::Store(StoreError::AlreadyBuilt { .. })) => {
            ensure!(f == "base", "a refused rebuild changed `base` to {f:?}")
        }
        Ok(()) => ensure!(
            f == "again",
            "an accepted rebuild left `base` holding {f:?}"
        ),
        Err(e) => {
            return Err(Stop::Fail(format!(
                "building an existing id returned {e:?} (expected AlreadyBuilt or success)"
            )));
        }
    }
    env.close().await
}

/// Fails unless the storage listing equals `before` (retrying for a few seconds: a backend
/// may finish removals in the background).
async fn same_listing(env: &Env, before: &Option<Vec<String>>, when: &str) -> Outcome {
    let Some(before) = before else {
        return Ok(());
    };
    let mut last = Vec::new();
    for _ in 0..50 {
        let now = env.listing().await?.unwrap_or_default();
        if &now == before {
            return Ok(());
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let added: Vec<&String> = last.iter().filter(|n| !before.contains(n)).collect();
    let removed: Vec<&String> = before.iter().filter(|n| !last.contains(n)).collect();
    Err(Stop::Fail(format!(
        "the storage changed {when}: added {added:?}, removed {removed:?}"
    )))
}

fn short(s: &str) -> String {
    if s.len() > 40 {
        format!(
            "{}… ({} bytes)",
            s.chars().take(20).collect::<String>(),
            s.len()
        )
    } else {
        s.to_owned()
    }
}
