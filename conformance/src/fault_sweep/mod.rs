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
//! Order: each operation is run once without a fault; then each is stopped half-way; then
//! every other fault, one operation after another, spread over each operation's steps (first
//! and last step first). So [`Config::fault_budget`](crate::Config::fault_budget) (a time
//! limit) and [`Config::fault_depth`](crate::Config::fault_depth) (faults per operation and
//! kind) bound the cost on slow backends while keeping the coverage spread; the check's detail
//! line starts with how many fault points it tried out of how many possible (`Y+` when the
//! budget left operations unprobed), and
//! [`Config::fault_floor_percent`](crate::Config::fault_floor_percent) `Some(100)` fails a
//! sweep that did not try them all. [`Config::fault_cases_at_once`](crate::Config::fault_cases_at_once)
//! cases run at once, each on storage of its own; results are recorded in the order above,
//! so the verdict does not depend on it.

mod case;
mod ops;
mod order;
mod state;

use std::fmt::Write as _;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use case::{CaseResult, run_case};
use futures::StreamExt;
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
    /// Where the `open-after-crash` prelude stops (0 for the other operations).
    cut: usize,
    steps: usize,
    log: Vec<String>,
    /// Listings after a reopen: stopped before the first step, and after the last.
    before: Option<Vec<String>>,
    after: Option<Vec<String>>,
    /// Listings of other stops, compared once `before` and `after` are known.
    pending: Vec<(Fault, Vec<String>)>,
}

/// The sweep's running state.
struct Sweep {
    records: Vec<OpRecord>,
    wrong: Vec<String>,
    /// (failed steps, stops) injected.
    tried: (usize, usize),
    not_reached: usize,
    listed: bool,
}

impl Sweep {
    /// Records what the case of operation `k` with `fault` found.
    fn record(&mut self, k: usize, fault: Fault, r: CaseResult) {
        let op = self.records[k].op;
        if let Some(h) = &r.harness {
            self.wrong.push(format!(
                "{} ({fault}): the case could not run: {h}",
                op.name()
            ));
            return;
        }
        match fault {
            Fault::FailStep(_) if !r.struck => self.not_reached += 1,
            Fault::FailStep(_) => self.tried.0 += 1,
            _ => self.tried.1 += 1,
        }
        self.listed |= r.listing.is_some();
        note(&mut self.wrong, op, fault, &r.log, &r.wrong);
        let rec = &mut self.records[k];
        if let (Fault::StopAfter(n), Some(listing)) = (fault, r.listing) {
            match n {
                0 => rec.before = Some(listing),
                n if n == rec.steps => rec.after = Some(listing),
                _ => rec.pending.push((fault, listing)),
            }
        }
        if let (Some(before), Some(after)) = (&rec.before, &rec.after) {
            for (fault, got) in std::mem::take(&mut rec.pending) {
                if let Some(p) = listing_problem(before, after, &got) {
                    note(&mut self.wrong, op, fault, &rec.log, &[p]);
                }
            }
        }
    }
}

/// Whether the sweep may start no new case.
fn over_budget(config: &Config, started: Instant) -> bool {
    config.fault_budget.is_some_and(|b| started.elapsed() > b)
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
    let at_once = config.fault_cases_at_once.max(1);
    let ctx = &ctx;
    let mut sw = Sweep {
        records: Vec::new(),
        wrong: Vec::new(),
        tried: (0, 0),
        not_reached: 0,
        listed: false,
    };

    // Each operation once without a fault (its steps, and a check that it works), then
    // stopped half-way; `at_once` operations at a time, each case on storage of its own,
    // recorded in order, so the verdict does not depend on which ends first. The time budget
    // bounds this too: a slow backend may get through only some operations (at least the
    // first). One at a time, this is operation after operation, probe then stop.
    let mut later = Vec::new();
    let mut unprobed = 0;
    for chunk in SweepOp::ALL.chunks(at_once) {
        if unprobed > 0 || (!sw.records.is_empty() && over_budget(config, started)) {
            unprobed += chunk.len();
            continue;
        }
        let probes: Vec<_> = futures::stream::iter(chunk.iter().copied())
            .map(|op| async move {
                // Where the `open-after-crash` prelude stops: half-way through its release.
                let cut = match op {
                    SweepOp::Open => prelude_cut(ctx).await?,
                    _ => 0,
                };
                Ok::<_, String>((op, cut, run_case(ctx, op, Fault::None, cut).await))
            })
            .buffered(at_once)
            .collect()
            .await;
        let mut headline = Vec::new();
        for probe in probes {
            let (op, cut, r) = match probe {
                Err(e) => return failed(e, None),
                Ok(done) => done,
            };
            if let Some(h) = r.harness {
                return failed(format!("{}: {h}", op.name()), None);
            }
            sw.listed |= r.listing.is_some();
            note(&mut sw.wrong, op, Fault::None, &r.log, &r.wrong);
            let first = Fault::StopAfter(r.steps / 2);
            headline.push((sw.records.len(), op, cut, first));
            later.push(
                order::faults(r.steps, config.fault_depth)
                    .into_iter()
                    .filter(|f| *f != first)
                    .collect::<Vec<_>>(),
            );
            sw.records.push(OpRecord {
                op,
                cut,
                steps: r.steps,
                log: r.log,
                before: None,
                after: None,
                pending: Vec::new(),
            });
        }
        if over_budget(config, started) {
            // Its half-way stops join the other faults, which the budget has cut.
            for (k, _, _, first) in headline {
                later[k].insert(0, first);
            }
            continue;
        }
        let stops: Vec<_> =
            futures::stream::iter(headline)
                .map(|(k, op, cut, fault)| async move {
                    (k, fault, run_case(ctx, op, fault, cut).await)
                })
                .buffered(at_once)
                .collect()
                .await;
        for (k, fault, r) in stops {
            sw.record(k, fault, r);
        }
    }

    // Then every other fault, one operation after the other, spread over their steps.
    let planned: Vec<(usize, SweepOp, usize, Fault)> = order::round_robin(&later)
        .into_iter()
        .map(|(k, fault)| (k, sw.records[k].op, sw.records[k].cut, fault))
        .collect();
    let total = u32::try_from(planned.len()).unwrap_or(u32::MAX);
    let possible: usize = sw.records.iter().map(|r| 2 * r.steps + 1).sum();
    let problems = AtomicUsize::new(sw.wrong.len());
    let problems = &problems;
    let mut cases = futures::stream::iter(planned)
        .map(|(k, op, cut, fault)| async move {
            if over_budget(config, started) || problems.load(Relaxed) >= MAX_REPORTED {
                return (k, fault, None);
            }
            let r = run_case(ctx, op, fault, cut).await;
            problems.fetch_add(r.wrong.len() + usize::from(r.harness.is_some()), Relaxed);
            (k, fault, Some(r))
        })
        .buffered(at_once);
    let mut not_started = 0;
    let mut done = 0u32;
    while let Some((k, fault, r)) = cases.next().await {
        let Some(r) = r else {
            not_started += 1;
            continue;
        };
        sw.record(k, fault, r);
        done += 1;
        config.emit(Progress::Case {
            check: FAULT_SWEEP.into(),
            done,
            total,
        });
    }
    drop(cases);
    let compared_late = sw.records.iter().map(|r| r.pending.len()).sum::<usize>();

    let (injected, wrong) = (sw.tried.0 + sw.tried.1, &sw.wrong);
    let tried = injected + sw.not_reached;
    let complete = unprobed == 0 && not_started == 0 && tried >= possible;
    let mut detail = format!(
        "{tried} of {} fault points tried: {injected} faults injected ({} failed steps, {} \
         stops) into {} operations of {} steps in all",
        if unprobed > 0 {
            format!("{possible}+")
        } else {
            possible.to_string()
        },
        sw.tried.0,
        sw.tried.1,
        sw.records.len(),
        sw.records.iter().map(|r| r.steps).sum::<usize>(),
    );
    if sw.not_reached > 0 {
        let _ = write!(detail, "; {} failed steps never reached", sw.not_reached);
    }
    if unprobed > 0 {
        let _ = write!(
            detail,
            "; time budget reached before {unprobed} of {} operations were tried",
            SweepOp::ALL.len()
        );
    }
    if not_started > 0 {
        if wrong.len() >= MAX_REPORTED {
            let _ = write!(
                detail,
                "; stopped after {MAX_REPORTED} problems, {not_started} not tried"
            );
        } else {
            let _ = write!(detail, "; time budget reached, {not_started} not tried");
        }
    }
    if !sw.listed {
        detail.push_str("; no storage listing (the factory cannot list)");
    } else if compared_late > 0 {
        let _ = write!(
            detail,
            "; {compared_late} listings not compared (the stops before the first and after \
             the last step were not reached)"
        );
    }
    let _ = write!(
        detail,
        "; {:.0} s, {at_once} at once",
        started.elapsed().as_secs_f64()
    );
    // A floor of 100% also counts the operations the budget left unprobed.
    if let Some(floor) = config.fault_floor_percent
        && wrong.is_empty()
        && !complete
        && (floor >= 100 || tried * 100 < usize::from(floor) * possible.max(1))
    {
        return (
            CheckOutcome::Failed(Failure {
                message: format!(
                    "the time budget stopped the fault sweep after {tried} of {possible}{} \
                     possible fault points ({}%), below the floor of {floor}% \
                     (ZSTORE_CONFORMANCE_FAULT_FLOOR_PERCENT); raise the budget or lower the \
                     floor",
                    if unprobed > 0 { "+" } else { "" },
                    tried * 100 / possible.max(1)
                ),
                sequence: None,
            }),
            Some(detail),
        );
    }
    if wrong.is_empty() {
        return (CheckOutcome::Passed, Some(detail));
    }
    let mut message = format!("{} broken promise(s) after injected faults:\n", wrong.len());
    for w in wrong {
        let _ = writeln!(message, "- {w}");
    }
    for rec in &sw.records {
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
fn listing_problem(before: &[String], after: &[String], got: &[String]) -> Option<String> {
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
