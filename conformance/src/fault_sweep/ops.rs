//! The operations the fault sweep interrupts: how each is set up, prepared and run, and what
//! the store may look like after it was interrupted at any step.

use std::fs;
use std::sync::Arc;

use store_api::{BuildError, CacheLease, DeleteCacheError, ReleaseOutcome, Store, StoreExt, User};

use super::state::{Files, Item, Recipe};
use crate::scenarios::support::{cache_name, id, write_files};

/// The sentinel the setup writes in `state_dir`, which no operation may touch.
pub(crate) const SENTINEL: (&str, &str) = ("zstore-conformance-sentinel", "kept");

pub(crate) const BASE: Files = &[("d/g", "deep"), ("f", "base")];
pub(crate) const NEW: Files = &[("d/x", "x"), ("n", "new")];
pub(crate) const CHILD: Files = &[("c", "child"), ("d/g", "deep"), ("f", "base+child")];
pub(crate) const REBUILT: Files = &[("d/g", "deep"), ("f", "base"), ("ok", "yes")];
pub(crate) const V1: Files = &[("a", "v1"), ("b", "v1")];
pub(crate) const V2: Files = &[("a", "v2"), ("b", "v2")];
const STALE: Files = &[("a", "stale"), ("b", "stale")];

/// The cache every cache operation uses, and the one `cache-create` creates.
pub(crate) const CACHE: &str = "c";
pub(crate) const NEW_CACHE: &str = "created";

/// How to build each id the sweep uses: its base and what the build function writes.
pub(crate) fn recipe(name: &str) -> Recipe {
    match name {
        "base" => Recipe::new(None, BASE, BASE),
        "new" => Recipe::new(None, NEW, NEW),
        "child" => Recipe::new(Some("base"), &[("c", "child"), ("f", "base+child")], CHILD),
        // `bad` and `half` are never committed by the operations; rebuilt, they succeed.
        _ => Recipe::new(Some("base"), &[("ok", "yes")], REBUILT),
    }
}

/// What the interrupted operation reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reported {
    /// It succeeded (for a release: with this outcome).
    Ok(Option<ReleaseOutcome>),
    /// It failed with this error.
    Err(String),
}

/// An operation the sweep interrupts at every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SweepOp {
    Build,
    BuildFromBase,
    BuildFailure,
    CacheAcquire,
    CacheCreate,
    ReleasePublish,
    ReleaseDiscard,
    DeleteBase,
    DeleteCache,
    Open,
}

impl SweepOp {
    pub(crate) const ALL: [SweepOp; 10] = [
        SweepOp::Build,
        SweepOp::BuildFromBase,
        SweepOp::BuildFailure,
        SweepOp::CacheAcquire,
        SweepOp::CacheCreate,
        SweepOp::ReleasePublish,
        SweepOp::ReleaseDiscard,
        SweepOp::DeleteBase,
        SweepOp::DeleteCache,
        SweepOp::Open,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SweepOp::Build => "build",
            SweepOp::BuildFromBase => "build-from-base",
            SweepOp::BuildFailure => "build-failure",
            SweepOp::CacheAcquire => "cache-acquire",
            SweepOp::CacheCreate => "cache-create",
            SweepOp::ReleasePublish => "release-publish",
            SweepOp::ReleaseDiscard => "release-discard",
            SweepOp::DeleteBase => "delete-base-with-child",
            SweepOp::DeleteCache => "delete-cache",
            SweepOp::Open => "open-after-crash",
        }
    }

    /// What the operation does, for reports.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            SweepOp::Build => "build `new` without a base",
            SweepOp::BuildFromBase => "build `child` from `base`",
            SweepOp::BuildFailure => "build `bad` from `base`, the build function failing",
            SweepOp::CacheAcquire => "acquire a copy of cache `c`, write to it, drop it",
            SweepOp::CacheCreate => "acquire the first copy of a new cache, drop it",
            SweepOp::ReleasePublish => "release the only copy of `c` (publishes v2)",
            SweepOp::ReleaseDiscard => "release a stale copy of `c` (discarded)",
            SweepOp::DeleteBase => "delete `base`, which `child` was built from",
            SweepOp::DeleteCache => "delete cache `c`",
            SweepOp::Open => {
                "open a store a crash left mid-build with a copy out and a release half done"
            }
        }
    }

    fn needs_cache(self) -> bool {
        matches!(
            self,
            SweepOp::CacheAcquire
                | SweepOp::ReleasePublish
                | SweepOp::ReleaseDiscard
                | SweepOp::DeleteCache
                | SweepOp::Open
        )
    }

    /// Brings fresh storage to the state the operation starts from, with a store that has
    /// no faults: the sentinel in `state_dir`, result `base`, and what the operation needs.
    pub(crate) async fn setup(self, store: &Arc<dyn Store>, user: User) -> Result<(), String> {
        let (path, content) = SENTINEL;
        fs::write(store.state_dir().join(path), content)
            .map_err(|e| format!("writing the sentinel in state_dir: {e}"))?;
        build(store, "base").await?;
        if self == SweepOp::DeleteBase {
            build(store, "child").await?;
        }
        if self.needs_cache() {
            let lease = acquire(store, user, CACHE).await?;
            fill(&lease, V1)?;
            match lease.release().await {
                Ok(ReleaseOutcome::Published) => {}
                other => return Err(format!("setup: releasing v1 of `c`: {other:?}")),
            }
        }
        Ok(())
    }

    /// What the operation needs from the store under test before the fault is armed (the
    /// copies a release releases).
    pub(crate) async fn prepare(
        self,
        store: &Arc<dyn Store>,
        user: User,
    ) -> Result<Vec<CacheLease>, String> {
        match self {
            SweepOp::ReleasePublish => {
                let lease = acquire(store, user, CACHE).await?;
                fill(&lease, V2)?;
                Ok(vec![lease])
            }
            SweepOp::ReleaseDiscard => {
                let winner = acquire(store, user, CACHE).await?;
                let stale = acquire(store, user, CACHE).await?;
                fill(&winner, V2)?;
                fill(&stale, STALE)?;
                match winner.release().await {
                    Ok(ReleaseOutcome::Published) => Ok(vec![stale]),
                    other => Err(format!("preparing: releasing v2 of `c`: {other:?}")),
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Runs the operation (not `Open`, which the sweep runs itself). Returns what it
    /// reported, and any contract violation visible in that alone.
    pub(crate) async fn run(
        self,
        store: &Arc<dyn Store>,
        user: User,
        mut held: Vec<CacheLease>,
    ) -> (Reported, Vec<String>) {
        let mut wrong = Vec::new();
        let reported = match self {
            SweepOp::Build | SweepOp::BuildFromBase => {
                let name = if self == SweepOp::Build {
                    "new"
                } else {
                    "child"
                };
                match build(store, name).await {
                    Ok(()) => Reported::Ok(None),
                    Err(e) => Reported::Err(e),
                }
            }
            SweepOp::BuildFailure => {
                let r = store
                    .build(Some(&id("base")), &id("bad"), |dir| async move {
                        fs::write(dir.join("junk"), "left behind").map_err(|e| e.to_string())?;
                        Err::<(), String>("failed on purpose".into())
                    })
                    .await;
                match r {
                    Ok(()) => {
                        wrong.push("a build whose function failed returned Ok".into());
                        Reported::Ok(None)
                    }
                    Err(BuildError::Failed(m)) if m == "failed on purpose" => {
                        Reported::Err("the build function failed".into())
                    }
                    Err(BuildError::Failed(m)) => {
                        wrong.push(format!("the function's error came back as {m:?}"));
                        Reported::Err(m)
                    }
                    Err(BuildError::Store(e)) => Reported::Err(e.to_string()),
                }
            }
            SweepOp::CacheAcquire | SweepOp::CacheCreate => {
                let (name, expected) = if self == SweepOp::CacheAcquire {
                    (CACHE, V1)
                } else {
                    (NEW_CACHE, &[][..])
                };
                match store.cache(user, &cache_name(name)).await {
                    Ok(lease) => {
                        match super::state::files_at(lease.path()) {
                            Ok(got) if super::state::same(&got, expected) => {}
                            Ok(got) => wrong.push(format!(
                                "the copy of {name:?} holds {got:?}, expected {expected:?}"
                            )),
                            Err(e) => wrong.push(e),
                        }
                        let _ = fs::write(lease.path().join("a"), "dirty");
                        drop(lease);
                        Reported::Ok(None)
                    }
                    Err(e) => Reported::Err(e.to_string()),
                }
            }
            SweepOp::ReleasePublish | SweepOp::ReleaseDiscard => {
                let Some(lease) = held.pop() else {
                    return (
                        Reported::Err("internal: no copy was prepared".into()),
                        vec!["internal: no copy was prepared".into()],
                    );
                };
                let expected = if self == SweepOp::ReleasePublish {
                    ReleaseOutcome::Published
                } else {
                    ReleaseOutcome::Discarded
                };
                match lease.release().await {
                    Ok(outcome) => {
                        if outcome != expected {
                            wrong.push(format!(
                                "the release returned {outcome:?}, expected {expected:?}"
                            ));
                        }
                        Reported::Ok(Some(outcome))
                    }
                    Err(e) => Reported::Err(e.to_string()),
                }
            }
            SweepOp::DeleteBase => match store.delete(&id("base")).await {
                Ok(()) => Reported::Ok(None),
                Err(e) => Reported::Err(e.to_string()),
            },
            SweepOp::DeleteCache => match store.delete_cache(&cache_name(CACHE)).await {
                Ok(()) => Reported::Ok(None),
                Err(DeleteCacheError::Busy { .. }) => {
                    wrong.push("delete_cache returned Busy, but no copy is out".into());
                    Reported::Err("Busy".into())
                }
                Err(e) => Reported::Err(e.to_string()),
            },
            SweepOp::Open => Reported::Err("internal: open is run by the sweep".into()),
        };
        drop(held);
        (reported, wrong)
    }

    /// Whether the operation, run without a fault, must report success.
    pub(crate) fn succeeds_without_fault(self) -> bool {
        self != SweepOp::BuildFailure
    }

    /// Everything the operation can affect, with the states allowed after it was interrupted
    /// anywhere, and the state required once it reported success.
    pub(crate) fn items(self) -> Vec<Item> {
        let both = |a: Files, b: Files| vec![Some(a), Some(b)];
        let result = |name, allowed: Vec<Option<Files>>, after_ok: Option<Option<Files>>| {
            Item::result(name, allowed, after_ok)
        };
        let cache = |name, allowed: Vec<Option<Files>>, after_ok: Option<Option<Files>>| {
            Item::cache(name, allowed, after_ok)
        };
        let base = result("base", vec![Some(BASE)], None);
        let mut items = vec![base];
        match self {
            SweepOp::Build => items.push(result("new", vec![None, Some(NEW)], Some(Some(NEW)))),
            SweepOp::BuildFromBase => {
                items.push(result("child", vec![None, Some(CHILD)], Some(Some(CHILD))));
            }
            SweepOp::BuildFailure => items.push(result("bad", vec![None], None)),
            SweepOp::CacheAcquire => items.push(cache(CACHE, vec![Some(V1)], None)),
            SweepOp::CacheCreate => items.push(cache(NEW_CACHE, vec![None], None)),
            SweepOp::ReleasePublish => items.push(cache(CACHE, both(V1, V2), Some(Some(V2)))),
            SweepOp::ReleaseDiscard => items.push(cache(CACHE, vec![Some(V2)], None)),
            SweepOp::DeleteBase => {
                items[0] = result("base", vec![None, Some(BASE)], Some(None));
                items.push(result("child", vec![Some(CHILD)], None));
            }
            SweepOp::DeleteCache => items.push(cache(CACHE, vec![None, Some(V1)], Some(None))),
            SweepOp::Open => {
                items.push(result("half", vec![None], None));
                items.push(cache(CACHE, both(V1, V2), None));
            }
        }
        items
    }
}

/// What the `open-after-crash` operation's storage went through before the crash that the
/// sweep then interrupts the opening of: a build (never finished) whose function takes two
/// copies of `c`, fills one with v2 and releases it. The crash is set half-way through that
/// release (the sweep finds where by counting steps).
pub(crate) async fn crashed_prelude(
    store: &Arc<dyn Store>,
    user: User,
    marks: &(dyn Fn() -> usize + Send + Sync),
) -> (usize, usize) {
    let (tx, rx) = std::sync::mpsc::channel::<(usize, usize)>();
    let s2 = Arc::clone(store);
    let _ = store
        .build(Some(&id("base")), &id("half"), |dir| async move {
            let _ = fs::write(dir.join("h"), "half");
            let first = s2
                .cache(user, &cache_name(CACHE))
                .await
                .map_err(|e| e.to_string())?;
            let second = s2
                .cache(user, &cache_name(CACHE))
                .await
                .map_err(|e| e.to_string())?;
            let _ = write_files(
                first.path(),
                &V2.iter()
                    .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
                    .collect::<Vec<_>>(),
            );
            let before = marks();
            let _ = first.release().await;
            let after = marks();
            let _ = tx.send((before, after));
            // Never finished: by now the process is "dead" (every step refused), so dropping
            // the second copy and failing the build leave them behind as a crash would.
            drop(second);
            Err::<(), String>("the prelude never finishes its build".into())
        })
        .await;
    rx.try_recv().unwrap_or((0, 0))
}

async fn build(store: &Arc<dyn Store>, name: &str) -> Result<(), String> {
    let r = recipe(name);
    let writes: Vec<(String, String)> = r
        .writes
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
    let base = r.base.map(id);
    store
        .build(base.as_ref(), &id(name), |dir| async move {
            write_files(&dir, &writes)
        })
        .await
        .map_err(|e| {
            format!(
                "building {name}: {}",
                crate::scenarios::support::show_build_error(&e)
            )
        })
}

pub(crate) async fn rebuild(store: &Arc<dyn Store>, name: &str) -> Result<(), String> {
    build(store, name).await
}

async fn acquire(store: &Arc<dyn Store>, user: User, name: &str) -> Result<CacheLease, String> {
    store
        .cache(user, &cache_name(name))
        .await
        .map_err(|e| format!("acquiring a copy of {name:?}: {e}"))
}

fn fill(lease: &CacheLease, files: Files) -> Result<(), String> {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
    write_files(lease.path(), &files).map_err(|e| format!("writing into a copy: {e}"))
}
