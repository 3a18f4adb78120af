//! [`FaultPlan`]: where an injected fault strikes, shared by the suite and a backend's fault
//! hook (a command runner, a filesystem-step hook).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Which fault a [`FaultPlan`] injects. Steps are counted from 0, across every task of the
/// store, from the moment the plan is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// No fault: every step runs (the suite uses this to count an operation's steps).
    None,
    /// Step N fails as the real step would fail (for a command runner: the command is not
    /// run and exits with status 1 and stderr `injected failure`); every other step runs.
    FailStep(usize),
    /// Steps 0 to N-1 run; step N and every later one are refused without running, as if the
    /// process had died right after step N-1 (`StopAfter(0)`: before the first step). The
    /// suite then drops the store and reopens the storage without faults.
    StopAfter(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("no fault"),
            Fault::FailStep(n) => write!(f, "step {n} fails"),
            Fault::StopAfter(0) => f.write_str("the process stops before step 0"),
            Fault::StopAfter(n) => write!(f, "the process stops after step {}", n - 1),
        }
    }
}

/// What a backend's hook must do with one step (from [`FaultPlan::step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Run the step.
    Proceed,
    /// Do not run it; make it fail the way the real step fails (a command runner returns a
    /// failed exit status; a filesystem hook returns an I/O error).
    Fail,
    /// Do not run it; the process is "dead": refuse it with an error that says so.
    Refuse,
}

/// The injected fault for one store, and the count of the steps that store took.
///
/// The suite creates a plan and passes it to
/// [`StoreFactory::open_with_faults`](crate::StoreFactory::open_with_faults). The factory
/// installs it where every external step of the store goes through one place (the runner of
/// `zfs` commands, a filesystem-step hook) and calls [`step`](FaultPlan::step) before each
/// step, doing what the returned [`StepGuard::verdict`] says and keeping the guard until the
/// step has finished. Clones share one plan.
///
/// The suite counts and faults only the steps of the operation under test: steps taken before
/// it arms the plan (while the store opens, while it prepares the operation) always run and
/// are not counted.
///
/// ```
/// use conformance::{Fault, FaultPlan, Verdict};
///
/// let plan = FaultPlan::new(Fault::FailStep(1));
/// let outcomes: Vec<Verdict> = (0..3).map(|i| plan.step(format!("cmd {i}")).verdict()).collect();
/// assert_eq!(outcomes, [Verdict::Proceed, Verdict::Fail, Verdict::Proceed]);
/// assert_eq!(plan.steps(), 3);
/// assert!(plan.struck());
///
/// let plan = FaultPlan::new(Fault::StopAfter(1));
/// assert_eq!(plan.step("a").verdict(), Verdict::Proceed);
/// assert_eq!(plan.step("b").verdict(), Verdict::Refuse);
/// assert_eq!(plan.step("c").verdict(), Verdict::Refuse);
/// assert_eq!(plan.log(), ["a", "b", "c"]);
/// ```
#[derive(Clone)]
pub struct FaultPlan {
    shared: Arc<Shared>,
}

struct Shared {
    fault: Fault,
    armed: AtomicBool,
    count: AtomicUsize,
    in_flight: AtomicUsize,
    struck: AtomicBool,
    log: Mutex<Vec<String>>,
}

impl FaultPlan {
    /// An armed plan that injects `fault` (counting from the next step).
    pub fn new(fault: Fault) -> Self {
        let plan = Self::disarmed(fault);
        plan.arm();
        plan
    }

    /// A plan that lets every step run uncounted until [`arm`](Self::arm)ed.
    pub(crate) fn disarmed(fault: Fault) -> Self {
        Self {
            shared: Arc::new(Shared {
                fault,
                armed: AtomicBool::new(false),
                count: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                struck: AtomicBool::new(false),
                log: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts counting (and faulting) steps.
    pub(crate) fn arm(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    /// Stops counting (and faulting) steps: later steps run uncounted.
    pub(crate) fn disarm(&self) {
        self.shared.armed.store(false, Ordering::SeqCst);
    }

    /// Waits until the store has taken no step for `quiet` (background work an operation
    /// started, e.g. destroying a dropped copy, has had its turn), at most `limit`.
    pub(crate) async fn quiesce(&self, quiet: std::time::Duration, limit: std::time::Duration) {
        let started = std::time::Instant::now();
        let tick = std::time::Duration::from_millis(10);
        let mut last = (self.steps(), self.in_flight());
        let mut still = std::time::Duration::ZERO;
        while still < quiet && started.elapsed() < limit {
            tokio::time::sleep(tick).await;
            let now = (self.steps(), self.in_flight());
            if now == last && now.1 == 0 {
                still += tick;
            } else {
                still = std::time::Duration::ZERO;
                last = now;
            }
        }
    }

    /// The fault this plan injects.
    pub fn fault(&self) -> Fault {
        self.shared.fault
    }

    /// Called by the backend's hook before each external step; `what` describes the step for
    /// reports (e.g. the command line). Do what [`StepGuard::verdict`] says, and drop the
    /// guard once the step has finished (or was skipped).
    pub fn step(&self, what: impl Into<String>) -> StepGuard {
        let s = &self.shared;
        s.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = |verdict| StepGuard {
            verdict,
            shared: Arc::clone(s),
        };
        if !s.armed.load(Ordering::SeqCst) {
            return guard(Verdict::Proceed);
        }
        let mut log = s.log.lock().unwrap_or_else(PoisonError::into_inner);
        let n = s.count.fetch_add(1, Ordering::SeqCst);
        log.push(what.into());
        drop(log);
        let verdict = match s.fault {
            Fault::FailStep(k) if n == k => Verdict::Fail,
            Fault::StopAfter(k) if n >= k => Verdict::Refuse,
            _ => Verdict::Proceed,
        };
        if verdict != Verdict::Proceed {
            s.struck.store(true, Ordering::SeqCst);
        }
        guard(verdict)
    }

    /// How many steps were counted since the plan was armed (refused ones included).
    pub fn steps(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Whether the fault has struck (a step failed or was refused).
    pub fn struck(&self) -> bool {
        self.shared.struck.load(Ordering::SeqCst)
    }

    /// How many steps are running right now (guards not yet dropped), counted or not.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The descriptions of the counted steps, in order.
    pub fn log(&self) -> Vec<String> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (up to `limit`) until no step is running, so that nothing a stopped store
    /// started is still changing the storage when it is reopened. `false` on timeout.
    pub(crate) async fn settle(&self, limit: std::time::Duration) -> bool {
        let started = std::time::Instant::now();
        while self.in_flight() > 0 {
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultPlan")
            .field("fault", &self.fault())
            .field("armed", &self.shared.armed.load(Ordering::SeqCst))
            .field("steps", &self.steps())
            .field("struck", &self.struck())
            .finish()
    }
}

/// One step in progress (from [`FaultPlan::step`]): what to do with it, held until it ends.
#[must_use = "keep the guard until the step has finished"]
pub struct StepGuard {
    verdict: Verdict,
    shared: Arc<Shared>,
}

impl StepGuard {
    /// Run, fail or refuse the step.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for StepGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepGuard")
            .field("verdict", &self.verdict)
            .finish()
    }
}
