//! One case of the fault sweep: fresh storage brought to the operation's starting state, the
//! operation run on a store with one injected fault, then the store reopened and checked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use store_api::{DeleteCacheError, ReleaseOutcome, Store, User};

use super::ops::{CACHE, NEW_CACHE, Reported, SweepOp, crashed_prelude, rebuild, recipe};
use super::state::{Item, Thing, check_items, check_state_dir, files_at, same};
use crate::fault_plan::{Fault, FaultPlan};
use crate::scenarios::support::{Ctx, cache_name, id};

/// How long the store may take no step before the sweep counts an operation as finished,
/// background work included.
const QUIET: Duration = Duration::from_millis(100);

/// What one case found.
#[derive(Debug, Default)]
pub(crate) struct CaseResult {
    /// Steps the operation took (counted while the plan was armed).
    pub(crate) steps: usize,
    /// Their descriptions.
    pub(crate) log: Vec<String>,
    /// Whether the fault struck (a `FailStep` whose step was never reached did not).
    pub(crate) struck: bool,
    /// The storage listing after reopening, if the factory can list.
    pub(crate) listing: Option<Vec<String>>,
    /// Broken promises.
    pub(crate) wrong: Vec<String>,
    /// The harness itself could not run the case (set-up failed): not the store's fault
    /// under test, but the sweep cannot go on.
    pub(crate) harness: Option<String>,
}

async fn within<T>(ctx: &Ctx, what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    let limit = ctx.settings.op_timeout;
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("{what} did not finish within {limit:?} (hung?)"))
}

/// Runs `op` with `fault` on fresh storage. `cut` is where the `open-after-crash` prelude
/// stops (see [`crashed_prelude`]).
pub(crate) async fn run_case(ctx: &Ctx, op: SweepOp, fault: Fault, cut: usize) -> CaseResult {
    let (store, storage) = match within(ctx, "opening fresh storage", ctx.factory.fresh()).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return CaseResult {
                harness: Some(format!("the factory could not open a fresh store: {e}")),
                ..CaseResult::default()
            };
        }
        Err(e) => {
            return CaseResult {
                harness: Some(e),
                ..CaseResult::default()
            };
        }
    };
    let mut r = on_storage(ctx, op, fault, cut, store, &*storage).await;
    if let Err(e) = close(ctx, storage).await
        && r.harness.is_none()
    {
        r.wrong.push(e);
    }
    r
}

async fn on_storage(
    ctx: &Ctx,
    op: SweepOp,
    fault: Fault,
    cut: usize,
    store: Arc<dyn Store>,
    storage: &(dyn std::any::Any + Send + Sync),
) -> CaseResult {
    let mut r = CaseResult::default();
    let factory = &ctx.factory;
    let user = crate::exec::current_user();
    let prepared = async {
        within(ctx, "the set-up", op.setup(&store, user)).await??;
        drop(store);
        if op == SweepOp::Open {
            let plan = FaultPlan::disarmed(Fault::StopAfter(cut));
            let s = within(
                ctx,
                "opening",
                factory.open_with_faults(storage, plan.clone()),
            )
            .await?
            .map_err(|e| format!("open_with_faults: {e}"))?;
            plan.arm();
            let marks = {
                let plan = plan.clone();
                move || plan.steps()
            };
            within(
                ctx,
                "the crashed prelude",
                crashed_prelude(&s, user, &marks),
            )
            .await?;
            drop(s);
            if !plan.settle(ctx.settings.op_timeout).await {
                return Err("a step of the crashed prelude never ended".to_owned());
            }
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = prepared {
        r.harness = Some(format!("preparing the case: {e}"));
        return r;
    }

    let plan = FaultPlan::disarmed(fault);
    let items = op.items();
    let (live, reported) = if op == SweepOp::Open {
        plan.arm();
        match within(ctx, "open", factory.open_with_faults(storage, plan.clone())).await {
            Ok(Ok(s)) => (Some(s), Reported::Ok(None)),
            Ok(Err(e)) => (None, Reported::Err(e.to_string())),
            Err(e) => {
                r.wrong.push(e);
                (None, Reported::Err("hung".into()))
            }
        }
    } else {
        let s = match within(
            ctx,
            "opening",
            factory.open_with_faults(storage, plan.clone()),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                r.harness = Some(format!("open_with_faults failed before any fault: {e}"));
                return r;
            }
            Err(e) => {
                r.harness = Some(e);
                return r;
            }
        };
        let held = match within(ctx, "preparing", op.prepare(&s, user)).await {
            Ok(Ok(held)) => held,
            Ok(Err(e)) | Err(e) => {
                r.harness = Some(format!("preparing {}: {e}", op.name()));
                return r;
            }
        };
        plan.arm();
        match within(ctx, op.name(), op.run(&s, user, held)).await {
            Ok((reported, wrong)) => {
                r.wrong.extend(wrong);
                (Some(s), reported)
            }
            Err(e) => {
                r.wrong.push(e);
                (Some(s), Reported::Err("hung".into()))
            }
        }
    };
    let succeeded = matches!(reported, Reported::Ok(_));
    if fault == Fault::None && succeeded != op.succeeds_without_fault() {
        r.wrong.push(format!(
            "without any fault the operation reported {reported:?}"
        ));
    }

    // A store whose step failed keeps running: it must keep the contract right away.
    let keeps_running = matches!(fault, Fault::None | Fault::FailStep(_));
    if keeps_running {
        plan.quiesce(QUIET, ctx.settings.op_timeout).await;
    }
    plan.disarm();
    r.struck = plan.struck() || fault == Fault::None;
    // Checked live, then used (ids built again, caches updated and deleted: a copy count
    // leaked by the failed step only shows in the running store, as `Busy`).
    let mut used = false;
    if let (true, true, Some(s)) = (keeps_running, r.struck, &live) {
        let mut found = check_items(s, user, &items, succeeded).await;
        found.extend(usable(s, user, op).await);
        r.wrong.extend(
            found
                .into_iter()
                .map(|w| format!("while still running: {w}")),
        );
        used = true;
    }
    r.steps = plan.steps();
    r.log = plan.log();
    drop(live);
    if !plan.settle(ctx.settings.op_timeout).await {
        r.wrong
            .push("a step was still running long after the store was dropped".into());
    }

    // The process is gone: reopen without faults.
    let store = match within(ctx, "reopening", factory.reopen(storage)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.wrong.push(format!("reopening the store failed: {e}"));
            return r;
        }
        Err(e) => {
            r.wrong.push(e);
            return r;
        }
    };
    match factory.list_storage(storage).await {
        Ok(listing) => r.listing = listing,
        Err(e) => r.wrong.push(format!("listing the storage failed: {e}")),
    }
    if let Some(w) = check_state_dir(&store) {
        r.wrong.push(w);
    }
    if used {
        // Already used while running (the same builds and cache updates): reading
        // everything back through the reopened store is what is left to check.
        r.wrong
            .extend(check_items(&store, user, &after_use(&items), false).await);
    } else {
        r.wrong
            .extend(check_items(&store, user, &items, succeeded).await);
        r.wrong.extend(usable(&store, user, op).await);
    }
    r
}

/// What the items hold once [`usable`] ran: every result present (as it was, or built
/// again), every cache deleted.
fn after_use(items: &[Item]) -> Vec<Item> {
    items
        .iter()
        .map(|item| match item.thing {
            Thing::Result(name) => {
                let mut allowed: Vec<_> = item
                    .allowed
                    .iter()
                    .filter(|a| a.is_some())
                    .copied()
                    .collect();
                allowed.push(Some(recipe(name).full));
                Item::result(name, allowed, None)
            }
            Thing::Cache(name) => Item::cache(name, vec![None], None),
        })
        .collect()
}

/// The reopened store is fully usable: every id of the operation can be built again (if
/// absent), and its caches can be updated and deleted.
async fn usable(store: &Arc<dyn Store>, user: User, op: SweepOp) -> Vec<String> {
    let mut wrong = Vec::new();
    let ids: Vec<&str> = op
        .items()
        .iter()
        .filter_map(|i| match i.thing {
            Thing::Result(n) => Some(n),
            Thing::Cache(_) => None,
        })
        .collect();
    for name in ids {
        match store.result(&id(name)).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                wrong.push(format!("after reopening, result(`{name}`) failed: {e}"));
                continue;
            }
        }
        if let Some(base) = recipe(name).base
            && matches!(store.result(&id(base)).await, Ok(None))
            && let Err(e) = rebuild(store, base).await
        {
            wrong.push(format!("after reopening, {e}"));
        }
        if let Err(e) = rebuild(store, name).await {
            wrong.push(format!(
                "after reopening, the same id cannot be built again: {e}"
            ));
            continue;
        }
        match store.result(&id(name)).await {
            Ok(Some(dir)) => match files_at(&dir) {
                Ok(got) if same(&got, recipe(name).full) => {}
                Ok(got) => wrong.push(format!(
                    "after reopening, `{name}` was built again but holds {got:?}"
                )),
                Err(e) => wrong.push(e),
            },
            other => wrong.push(format!(
                "after reopening, `{name}` was built again but result() = {other:?}"
            )),
        }
    }
    let caches: &[&str] = match op {
        SweepOp::CacheCreate => &[NEW_CACHE],
        SweepOp::Build | SweepOp::BuildFromBase | SweepOp::BuildFailure | SweepOp::DeleteBase => {
            &[]
        }
        _ => &[CACHE],
    };
    for name in caches {
        if let Err(e) = update_and_delete(store, user, name).await {
            wrong.push(format!("after reopening, cache `{name}`: {e}"));
        }
    }
    wrong
}

async fn update_and_delete(store: &Arc<dyn Store>, user: User, name: &str) -> Result<(), String> {
    let cname = cache_name(name);
    let lease = store
        .cache(user, &cname)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    std::fs::write(lease.path().join("a"), "updated").map_err(|e| format!("write: {e}"))?;
    match lease.release().await {
        Ok(ReleaseOutcome::Published) => {}
        other => return Err(format!("the only copy out was released with {other:?}")),
    }
    let lease = store
        .cache(user, &cname)
        .await
        .map_err(|e| format!("acquire: {e}"))?;
    let got = std::fs::read_to_string(lease.path().join("a")).unwrap_or_default();
    drop(lease);
    if got != "updated" {
        return Err(format!(
            "an update was published but a new copy reads {got:?}"
        ));
    }
    match store.delete_cache(&cname).await {
        Ok(()) => Ok(()),
        Err(DeleteCacheError::Busy { .. }) => {
            Err("delete_cache is Busy although no copy is out (a leaked copy count)".into())
        }
        Err(e) => Err(format!("delete_cache: {e}")),
    }
}

/// Hands the storage back to the factory's teardown (its leak check).
async fn close(ctx: &Ctx, storage: Box<dyn std::any::Any + Send + Sync>) -> Result<(), String> {
    within(ctx, "teardown", ctx.factory.teardown(storage))
        .await?
        .map_err(|e| format!("teardown (leak check) failed: {e}"))
}
