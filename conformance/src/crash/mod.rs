//! The `fault_sweep` check: crash safety, by injecting a fault at every step of every
//! operation.
//!
//! For each operation ([`SweepOp`]: builds with and without a base, a failing build, cache
//! acquires, releases that publish and that discard, deleting a base that has a child,
//! `delete_cache`, and opening a store a crash left half-way) the sweep first runs it without
//! a fault, counting its external steps (commands, filesystem changes) through the factory's
//! [`FaultPlan`](crate::FaultPlan) hook. Then, for every step N, on fresh storage each time:
//!
//! - **failed step**: step N fails. The store keeps running and must keep the contract at
//!   once; then it is dropped and reopened;
//! - **stop**: steps from N on are refused, as if the process had died after step N-1; the
//!   store is dropped and the storage reopened without faults.
//!
//! After reopening, the store must show: every id of the operation complete or absent, every
//! cache at a released version (the old or the new one, never empty or mixed), what the
//! operation reported as done still done, `state_dir` intact, the storage listing
//! ([`StoreFactory::list_storage`](crate::StoreFactory::list_storage)) equal to the state
//! before or after the operation (no temporary left), and the store fully usable: the same
//! ids build again, caches update and delete. The factory's teardown then checks for leaks.
//!
//! [`Config::fault_depth`](crate::Config::fault_depth) and
//! [`Config::fault_budget`](crate::Config::fault_budget) bound the cost on slow backends;
//! the check's detail line says how many faults it injected out of how many.

mod case;
mod ops;
mod order;
mod state;

use std::fmt::Write as _;
use std::time::Instant;

use case::{CaseResult, run_case};
use ops::SweepOp;
pub(crate) use state::files_at;

use crate::config::Config;
use crate::fault_plan::Fault;
use crate::report::{CheckOutcome, Failure, Progress};
use crate::scenarios::support::Ctx;

/// The check's name.
pub(crate) const FAULT_SWEEP: &str = "fault_sweep";

/// Stop collecting after this many broken promises: the first ones say what is wrong.
const MAX_REPORTED: usize = 30;

/// What the sweep knows about one operation.
struct OpRecord {
    op: SweepOp,
    steps: usize,
    log: Vec<String>,
    after: Option<Vec<String>>,
    before: Option<Vec<String>>,
    faults: Vec<Fault>,
}

/// Runs the sweep; returns the outcome and a one-line summary.
pub(crate) async fn fault_sweep(ctx: Ctx, config: &Config) -> (CheckOutcome, Option<String>) {
    if !ctx.caps.fault_injection {
        return (
            CheckOutcome::Skipped(
                "the factory declares no fault injection (Capabilities::fault_injection)".into(),
            ),
            None,
        );
    }
    if !ctx.caps.can_reopen {
        return failed(
            "Capabilities::fault_injection needs Capabilities::can_reopen: the sweep reopens \
             the storage after every fault"
                .into(),
            None,
        );
    }
    let started = Instant::now();
    let over_budget = || config.fault_budget.is_some_and(|b| started.elapsed() > b);
    let mut wrong: Vec<String> = Vec::new();

    // Probe every operation without a fault: its steps, and the state after it. The time
    // budget bounds this too (a slow backend may probe only some operations; at least one).
    let mut records = Vec::new();
    let mut cut = 0;
    for op in SweepOp::ALL {
        if !records.is_empty() && over_budget() {
            break;
        }
        if op == SweepOp::Open {
            // Where the `open-after-crash` prelude stops: half-way through its release.
            cut = match prelude_cut(&ctx).await {
                Ok(cut) => cut,
                Err(e) => return failed(e, None),
            };
        }
        let r = run_case(&ctx, op, Fault::None, cut).await;
        if let Some(h) = r.harness {
            return failed(format!("{}: {h}", op.name()), None);
        }
        note(&mut wrong, op, Fault::None, &r.log, &r.wrong);
        records.push(OpRecord {
            op,
            steps: r.steps,
            faults: order::faults(r.steps, config.fault_depth),
            log: r.log,
            after: None,
            before: None,
        });
    }
    let unprobed = SweepOp::ALL.len() - records.len();
    let planned = order::round_robin(&records.iter().map(|r| r.faults.clone()).collect::<Vec<_>>());
    let total = u32::try_from(planned.len()).unwrap_or(u32::MAX);
    let possible: usize = records.iter().map(|r| 2 * r.steps + 1).sum();

    let mut tried = (0usize, 0usize); // (failed steps, stops)
    let mut not_reached = 0usize;
    let mut cut_short = None;
    for (done, (k, fault)) in planned.iter().enumerate() {
        if over_budget() {
            cut_short = Some(planned.len() - done);
            break;
        }
        if wrong.len() >= MAX_REPORTED {
            cut_short = Some(planned.len() - done);
            break;
        }
        let rec = &mut records[*k];
        let r = run_case(&ctx, rec.op, *fault, cut).await;
        if let Some(h) = &r.harness {
            wrong.push(format!(
                "{} ({fault}): the case could not run: {h}",
                rec.op.name()
            ));
            continue;
        }
        match fault {
            Fault::FailStep(_) if !r.struck => not_reached += 1,
            Fault::FailStep(_) => tried.0 += 1,
            _ => tried.1 += 1,
        }
        let mut found = r.wrong.clone();
        found.extend(listing_problem(rec, *fault, &r));
        note(&mut wrong, rec.op, *fault, &r.log, &found);
        config.emit(Progress::Case {
            check: FAULT_SWEEP.into(),
            done: u32::try_from(done + 1).unwrap_or(u32::MAX),
            total,
        });
    }

    let mut detail = format!(
        "{} faults injected ({} failed steps, {} stops) into {} operations of {} steps in all",
        tried.0 + tried.1,
        tried.0,
        tried.1,
        records.len(),
        records.iter().map(|r| r.steps).sum::<usize>(),
    );
    if unprobed > 0 {
        let _ = write!(
            detail,
            "; time budget reached before {unprobed} of {} operations were probed",
            SweepOp::ALL.len()
        );
    }
    if tried.0 + tried.1 + not_reached < possible {
        let _ = write!(detail, "; {} of {possible} possible", tried.0 + tried.1);
    }
    if not_reached > 0 {
        let _ = write!(detail, "; {not_reached} failed steps never reached");
    }
    match cut_short {
        Some(n) if wrong.len() >= MAX_REPORTED => {
            let _ = write!(
                detail,
                "; stopped after {MAX_REPORTED} problems, {n} not tried"
            );
        }
        Some(n) => {
            let _ = write!(detail, "; time budget reached, {n} not tried");
        }
        None => {}
    }
    if records.iter().all(|r| r.before.is_none()) {
        detail.push_str("; no storage listing (the factory cannot list)");
    }
    let _ = write!(detail, "; {:.0} s", started.elapsed().as_secs_f64());
    if wrong.is_empty() {
        return (CheckOutcome::Passed, Some(detail));
    }
    let mut message = format!("{} broken promise(s) after injected faults:\n", wrong.len());
    for w in &wrong {
        let _ = writeln!(message, "- {w}");
    }
    for rec in &records {
        if wrong.iter().any(|w| w.starts_with(rec.op.name())) {
            let _ = writeln!(
                message,
                "steps of {} ({}):",
                rec.op.name(),
                rec.op.describe()
            );
            for (i, s) in rec.log.iter().enumerate() {
                let _ = writeln!(message, "  {i:>3}: {s}");
            }
        }
    }
    failed(message, Some(detail))
}

fn failed(message: String, detail: Option<String>) -> (CheckOutcome, Option<String>) {
    (
        CheckOutcome::Failed(Failure {
            message,
            sequence: None,
        }),
        detail,
    )
}

/// Records each problem found by a case, with where the fault struck.
fn note(wrong: &mut Vec<String>, op: SweepOp, fault: Fault, log: &[String], found: &[String]) {
    let at = match fault {
        Fault::FailStep(n) => log.get(n),
        Fault::StopAfter(n) if n > 0 => log.get(n - 1),
        _ => None,
    };
    let at = at.map(|s| format!(" (`{s}`)")).unwrap_or_default();
    for f in found {
        wrong.push(format!("{}, {fault}{at}: {f}", op.name()));
    }
}

/// After a stop and a reopen, the storage must hold exactly what it holds after a stop
/// before the operation's first step, or after its last: anything else is a temporary left
/// behind (or a half-done change). Only stops are compared: a store whose step failed kept
/// running, and what the sweep then read through it (a cache is created by reading it)
/// changes the storage; leftovers of those cases are the teardown's leak check's business.
fn listing_problem(rec: &mut OpRecord, fault: Fault, r: &CaseResult) -> Option<String> {
    let got = r.listing.as_ref()?;
    match fault {
        Fault::StopAfter(0) => {
            rec.before = Some(got.clone());
            return None;
        }
        Fault::StopAfter(n) if n == rec.steps => {
            rec.after = Some(got.clone());
        }
        Fault::StopAfter(_) => {}
        _ => return None,
    }
    let (before, after) = (rec.before.as_ref()?, rec.after.as_ref()?);
    if got == before || got == after {
        return None;
    }
    let extra: Vec<&String> = got
        .iter()
        .filter(|n| !before.contains(n) && !after.contains(n))
        .collect();
    let missing: Vec<&String> = before
        .iter()
        .filter(|n| after.contains(n) && !got.contains(n))
        .collect();
    Some(format!(
        "after reopening, the storage is neither as before nor as after the operation: \
         left behind {extra:?}, missing {missing:?}"
    ))
}

/// Counts the steps of the `open-after-crash` prelude and returns where to stop it: half-way
/// through its release (at least one step into it).
async fn prelude_cut(ctx: &Ctx) -> Result<usize, String> {
    use crate::fault_plan::FaultPlan;
    let (store, storage) = ctx
        .factory
        .fresh()
        .await
        .map_err(|e| format!("the factory could not open a fresh store: {e}"))?;
    let user = crate::exec::current_user();
    SweepOp::Open.setup(&store, user).await?;
    drop(store);
    let plan = FaultPlan::disarmed(Fault::None);
    let s = ctx
        .factory
        .open_with_faults(&*storage, plan.clone())
        .await
        .map_err(|e| format!("open_with_faults: {e}"))?;
    plan.arm();
    let marks = {
        let plan = plan.clone();
        move || plan.steps()
    };
    let (before, after) = ops::crashed_prelude(&s, user, &marks).await;
    drop(s);
    let _ = ctx.factory.reopen(&*storage).await;
    let _ = ctx.factory.teardown(storage).await;
    if after <= before {
        return Err(format!(
            "the prelude's release took no step ({before}..{after}): the fault hook sees nothing"
        ));
    }
    Ok(before + (after - before).div_ceil(2))
}
