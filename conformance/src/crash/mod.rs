//! The crash test: crash safety with real processes and `kill -9`, for any backend.
//!
//! Where the [fault sweep](crate#the-checks) stops a store at each of its steps inside one
//! process, this test kills a whole process at random moments, so that what the kernel and the
//! storage keep (open files, mounts, half-finished commands) is what the next process finds.
//! Each round, a child process opens the store and drives random operations on it — builds
//! with and without a base, several at once, deletes, cache copies released (published or
//! discarded) or dropped, `delete_cache`, ids a crash interrupted built again — writing each
//! to a journal (synced) before and after it. The parent `kill -9`s the child at a random
//! moment, waits until every process of the child's process group is gone (a ZFS backend's
//! `zfs` commands run to their end), reopens the store and checks it against the journal:
//!
//! - every result the child saw committed is there, with exactly the files it wrote; every
//!   build or delete in flight left a complete result or none; no result the child never
//!   built;
//! - every cache is at a released version, whole (never a mix of two), empty only if that
//!   was allowed;
//! - a file the parent keeps in `state_dir` is untouched;
//! - once idle, the store holds nothing temporary ([`StoreSpec::leftovers`]);
//! - an id whose build the crash interrupted can be built again.
//!
//! # Running it on a backend
//!
//! A backend implements [`StoreSpec`] (how a child process finds and opens the storage) for
//! a type made from its factory's storage, and generates the test with
//! [`crash_test!`](crate::crash_test):
//!
//! ```ignore
//! conformance::crash_test!(MySpec, MyFactory::new());
//! ```
//!
//! The generated `#[test]` makes fresh storage with the factory, runs the rounds (the child is
//! the test executable itself, started again on the same test, told by environment variables
//! that it is the child) and tears the storage down with the factory (whose leak check counts
//! as a violation). The knobs are environment variables: [`ROUNDS_ENV`] (default 5),
//! [`SEED_ENV`] (default from the clock; printed), [`MAX_DELAY_ENV`] (milliseconds; each kill
//! lands uniformly up to this long after the child starts; default 1500) and [`KEEP_ENV`]
//! (keep the journal and the children's logs). It prints
//! `crash: N rounds, K kills, V violations` past libtest's capture and fails unless there
//! were no violations and every round ended in a kill. Linux only: the parent finds the
//! child's processes in `/proc`, and a child dies with its parent.

mod child;
mod journal;
mod model;
mod rng;
mod rounds;
mod verify;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use store_api::{Inspect, Store};

use crate::StoreFactory;
pub use rounds::{Plan, Tally};

/// How the crash test reaches one backend's storage from another process.
///
/// Made from the factory's storage (`From<&F::Storage>`) in the parent, written to one line
/// with [`encode`](StoreSpec::encode), read back with [`decode`](StoreSpec::decode) in each
/// child; both open the store with [`open`](StoreSpec::open).
#[async_trait]
pub trait StoreSpec: Sized + Send + Sync + 'static {
    /// The store it opens.
    type Store: Store + Inspect + Clone + 'static;

    /// One line naming the storage (it travels to the child in an environment variable).
    fn encode(&self) -> String;

    /// The spec [`encode`](StoreSpec::encode) wrote.
    ///
    /// # Errors
    /// A line no `encode` of this type wrote.
    fn decode(line: &str) -> Result<Self, String>;

    /// Opens the store on the storage as a process just started would: after a crash, this
    /// is where the backend reclaims what the killed process left.
    ///
    /// # Errors
    /// The store does not open (after a crash, a violation).
    async fn open(&self) -> Result<Self::Store, String>;

    /// Waits for the store's background work, then lists what an open, idle store must not
    /// hold (unfinished builds, copies, half-published versions, scratch files), one line
    /// each. The default waits for nothing and finds nothing.
    async fn leftovers(&self, store: &Self::Store) -> Vec<String> {
        let _ = store;
        Vec::new()
    }
}

/// Rounds to run (default 5).
pub const ROUNDS_ENV: &str = "ZSTORE_CRASH_ROUNDS";
/// The seed of every random choice (default: from the clock; printed, so a run can be
/// repeated).
pub const SEED_ENV: &str = "ZSTORE_CRASH_SEED";
/// Each kill lands uniformly up to this many milliseconds after the child starts (default
/// 1500; a slow machine wants more, so that kills land in the middle of operations).
pub const MAX_DELAY_ENV: &str = "ZSTORE_CRASH_MAX_DELAY_MS";
/// Set (to anything): keep the work directory (journal, children's logs) after the run. It
/// is kept anyway when a round broke a promise.
pub const KEEP_ENV: &str = "ZSTORE_CRASH_KEEP";

impl Plan {
    /// The plan the environment asks for ([`ROUNDS_ENV`], [`SEED_ENV`], [`MAX_DELAY_ENV`]).
    ///
    /// # Errors
    /// A variable that is set but not a number, or zero rounds.
    pub fn from_env() -> Result<Self, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|e| format!("{name}={v:?}: {e}")),
                Err(_) => Ok(None),
            }
        };
        let rounds = number(ROUNDS_ENV)?.unwrap_or(5);
        if rounds == 0 {
            return Err(format!("{ROUNDS_ENV} must be at least 1"));
        }
        Ok(Plan {
            rounds,
            seed: number(SEED_ENV)?.unwrap_or_else(clock_seed),
            max_delay: Duration::from_millis(number(MAX_DELAY_ENV)?.unwrap_or(1500).max(1)),
            keep: std::env::var_os(KEEP_ENV).is_some(),
        })
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id())
}

/// Runs the crash test in a test executable: the child's loop when this process is a child
/// the test started (never returns), the parent's rounds otherwise. What the test generated by
/// [`crash_test!`](crate::crash_test) calls; `test_path` is the test's `module_path!()` and
/// name, from which the libtest name the child is started with is taken.
///
/// # Panics
/// When the test fails: a violation, a round without a kill, or a harness that cannot run.
#[doc(hidden)]
#[track_caller]
pub fn __crash_test_in_test<F, S>(test_path: &str, factory: impl FnOnce() -> F)
where
    F: StoreFactory,
    S: StoreSpec + for<'a> From<&'a F::Storage>,
{
    if let Some(child) = child::Invocation::from_env() {
        child::main::<S>(child);
    }
    let factory = factory();
    let backend = factory.name();
    if let Some(why) = factory.unavailable() {
        uncaptured(&format!("crash: on {backend}: SKIPPED -- {why}"));
        return;
    }
    let plan = Plan::from_env().unwrap_or_else(|e| panic!("{e}"));
    // The libtest name: the module path without the test crate's name.
    let test = test_path
        .split_once("::")
        .map_or(test_path, |(_, rest)| rest);
    uncaptured(&format!(
        "crash: on {backend}: {} rounds, seed {} (repeat with {SEED_ENV}={}), kills within {} \
         ms of each child's start",
        plan.rounds,
        plan.seed,
        plan.seed,
        plan.max_delay.as_millis()
    ));
    // One thread: the children die with the thread that started them (see `child`), and
    // that is this one, alive until every round is over.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
    let started = Instant::now();
    let tally = runtime
        .block_on(run_rounds::<F, S>(&factory, test, &plan))
        .unwrap_or_else(|e| panic!("crash test on {backend}: {e}"));
    uncaptured(&format!(
        "crash: {} results read back in full, {} interrupted ids built again, {:.0} s",
        tally.results_checked,
        tally.rebuilt,
        started.elapsed().as_secs_f64()
    ));
    for v in &tally.violations {
        uncaptured(&format!("  VIOLATION {v}"));
    }
    uncaptured(&tally.summary());
    assert!(
        tally.passed(plan.rounds),
        "crash test on {backend}: {}",
        tally.summary()
    );
}

/// Fresh storage, the set-up, every round, the teardown (a failed teardown is a violation).
async fn run_rounds<F, S>(factory: &F, test: &str, plan: &Plan) -> Result<Tally, String>
where
    F: StoreFactory,
    S: StoreSpec + for<'a> From<&'a F::Storage>,
{
    let (store, storage) = factory
        .fresh()
        .await
        .map_err(|e| format!("fresh storage: {e}"))?;
    drop(store);
    let spec = S::from(&storage);
    let ran = async {
        set_up(&spec).await?;
        let work = tempfile::Builder::new()
            .prefix("zstore-crash-")
            .tempdir()
            .map_err(|e| format!("a work directory: {e}"))?;
        let child = child::Command::for_test(test, &spec)?;
        let tally = rounds::run(&spec, &child, work.path(), plan).await?;
        if plan.keep || !tally.violations.is_empty() {
            uncaptured(&format!(
                "crash: the journal and the logs of the rounds with violations are kept in {}",
                work.keep().display()
            ));
        }
        Ok::<_, String>(tally)
    }
    .await;
    let torn = factory.teardown(storage).await;
    let mut tally = ran?;
    if let Err(e) = torn {
        tally
            .violations
            .push(format!("the factory's teardown after the last round: {e}"));
    }
    Ok(tally)
}

/// The file the parent keeps in `state_dir`; no store operation may touch it.
pub(crate) const SENTINEL: (&str, &str) = ("crash-sentinel", "kept by the parent");

/// Opens the store once and writes the sentinel in `state_dir`.
async fn set_up<S: StoreSpec>(spec: &S) -> Result<(), String> {
    let store = spec.open().await?;
    let (name, content) = SENTINEL;
    let path = store.state_dir().join(name);
    std::fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let left = spec.leftovers(&store).await;
    if !left.is_empty() {
        return Err(format!("a fresh store is not clean: {}", left.join("; ")));
    }
    drop(store);
    Ok(())
}

/// Writes a line to stderr, past libtest's output capture, as the suite's per-check lines.
fn uncaptured(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
