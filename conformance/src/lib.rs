//! The executable form of the store contract (the rustdoc of [`store_api::Store`]): a backend
//! passes this suite or it does not conform.
//!
//! # What it checks
//!
//! - **`sequences`**: random sequences of operations — builds without and with a base, builds
//!   that fail, panic, or whose future is dropped while the build function runs or at its
//!   first poll, logs written during the build, a base deleted while a build from it runs,
//!   `delete`, writes through a result path, cache acquire / write / release / drop without
//!   release with several copies out at once, `delete_cache` while copies are out,
//!   `complete_deletes` and `df`, and reopening the store — are run against a fresh store and
//!   against a pure in-memory model of the contract. After **every** step the suite compares
//!   them: which ids have a result, the exact file tree at each result path (names, contents,
//!   permission bits, symlinks, empty directories), the log, the contents and owner of every
//!   cache and of every copy out, `Busy` exactly when the model says a copy is out (or never,
//!   for a backend that lets delete win), each [`ReleaseOutcome`](store_api::ReleaseOutcome),
//!   and that `state_dir` is untouched. A failing sequence is shrunk to a minimal one, printed
//!   as a numbered script and saved as JSON for [`replay`].
//! - **`concurrency`**: many builds from one base (some failing or cancelled, the base
//!   possibly deleted meanwhile) and many holders of one cache, all at once on a
//!   multi-threaded runtime; the outcome must be one the model allows (first release of a
//!   generation wins, every copy holds exactly the version it was taken from).
//! - **Named scenarios**, each a readable test: OBuilder's `test_store` and `test_cache`, and
//!   one per known fault of OBuilder's ZFS store (see [`check_names`]), and
//!   `bad_input_changes_nothing` (see *Bad input* below). Two of them,
//!   `a_cache_name_that_needs_escaping_works_and_stays_separate` and
//!   `ids_a_naive_mapping_would_merge_stay_separate`, use groups of names that the mappings a
//!   backend author is likely to write would merge (percent-style escaping that leaves `%`
//!   alone, `/` to `_`, case folding, truncation, trailing dots and spaces dropped, Unicode
//!   normalization), and the generated sequences draw from them too: a mapping that is not
//!   injective shows as two names sharing storage.
//! - **`fault_sweep`** (crash safety; for backends whose factory declares
//!   [`Capabilities::fault_injection`]): every operation — builds with and without a base, a
//!   failing build, cache acquires, releases that publish and that discard, deleting a base
//!   that has a child, `delete_cache`, opening a store a crash left half-way — is run once
//!   per external step N with step N failing, and once per N with the process "stopped" after
//!   step N (every later step refused). The storage is then reopened: every id must be
//!   complete or absent, every cache at a released version (old or new, never empty or
//!   mixed), what the operation reported as done still done, `state_dir` intact, no
//!   temporary left (the storage listing is the one before or after the operation), and the
//!   store fully usable (the same ids build again, caches update and delete). The detail line
//!   of the report says how many faults were injected. See [`FaultPlan`] for the hook a
//!   factory installs.
//! - **`load`**: many builds at once, chained over four levels from one base, every build
//!   holding a copy of one shared cache (as OBuilder's stress test does); no error allowed,
//!   and every result's content is checked (sizes in [`Config::load_builds`] and
//!   [`Config::load_jobs`]).
//!
//! # Running it against your backend
//!
//! Implement [`StoreFactory`] (open a store on fresh storage; optionally reopen it; declare
//! [`Capabilities`]; optionally check for leaks on teardown), then either generate one
//! `#[test]` per check with [`conformance_tests!`], or call [`run`] yourself (from a binary,
//! on real storage) and read the [`Report`].
//!
//! ```
//! use std::sync::Arc;
//!
//! use conformance::{Capabilities, FactoryError, StoreFactory};
//! use store_api::Store;
//! use store_fake::{BusyPolicy, FakeStore};
//!
//! /// Opens fake stores, each under its own temporary directory.
//! struct Fake;
//!
//! #[async_trait::async_trait]
//! impl StoreFactory for Fake {
//!     type Storage = tempfile::TempDir;
//!
//!     fn name(&self) -> String {
//!         "fake".into()
//!     }
//!
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities {
//!             can_reopen: true,
//!             may_return_busy: true,
//!             ..Capabilities::default()
//!         }
//!     }
//!
//!     async fn fresh(&self) -> Result<(Arc<dyn Store>, Self::Storage), FactoryError> {
//!         let dir = tempfile::tempdir()?;
//!         let store = FakeStore::builder()
//!             .root(dir.path())
//!             .busy_policy(BusyPolicy::ReportBusy)
//!             .open()?;
//!         Ok((Arc::new(store), dir))
//!     }
//!
//!     async fn reopen(&self, dir: &Self::Storage) -> Result<Arc<dyn Store>, FactoryError> {
//!         Ok(Arc::new(FakeStore::builder().root(dir.path()).open()?))
//!     }
//! }
//!
//! // In a test file this one line generates a `#[test]` per check, in a module `fake`:
//! conformance::conformance_tests!(fake, Fake);
//!
//! // Or run the suite from your own code (here: a few quick cases).
//! # #[tokio::main]
//! # async fn main() {
//! let config = conformance::Config {
//!     cases: 4,
//!     concurrency_cases: 1,
//!     ..conformance::Config::default()
//! };
//! let report = conformance::run(Fake, config).await;
//! println!("{report}");
//! assert!(report.passed());
//! # }
//! ```
//!
//! # Crash safety with real processes
//!
//! The fault sweep stops a store inside one process. [`crash`] goes further: child processes
//! driving the store are killed with `kill -9` at random moments, and after each kill the
//! store is reopened and checked against what the child journaled. A backend that can be
//! opened from another process implements [`crash::StoreSpec`] and generates the test with
//! [`crash_test!`].
//!
//! # Knobs
//!
//! [`Config`] holds them: the number of cases, the longest sequence, the seed, timeouts,
//! where failing sequences are saved, which checks to run, and a progress callback.
//! [`Config::from_env`] reads `ZSTORE_CONFORMANCE_CASES`, `_MAX_OPS`, `_SEED`, and the others
//! listed there; the generated tests use it. The defaults keep a run against an in-memory
//! backend well under a minute; on a slow backend (every `zfs` command costs ~200 ms in a
//! qemu guest) lower `cases` and `max_ops`, and set `full_check_each_step = false`.
//!
//! # Bad input
//!
//! `bad_input_changes_nothing` feeds the store hostile ids and cache names (empty, huge, with
//! `/`, `@`, `%`, `#`, NUL, newline, whitespace, a leading `-`, `..`, names of other datasets
//! such as `pool/other` or of the store's own layout), builds from a missing base, deletes of
//! ids and caches that never existed, and writes to a copy's path after its release. Each
//! gets a typed error or the documented behaviour (valid hostile cache names are caches of
//! their own), and the storage listing ([`StoreFactory::list_storage`]) is the same before
//! and after. Two kinds of bad input cannot be written at all, so they need no run-time
//! check: ids and cache names are `String`s (never non-UTF-8 bytes), and a lease cannot be
//! released twice, because [`release`](store_api::CacheLease::release) consumes it:
//!
//! ```compile_fail,E0382
//! # async fn twice(store: &dyn store_api::Store, name: &store_api::CacheName) {
//! let lease = store.cache(store_api::User::ROOT, name).await.unwrap();
//! let _ = lease.release().await;
//! let _ = lease.release().await; // error[E0382]: use of moved value: `lease`
//! # }
//! ```
//!
//! # When a check fails
//!
//! The report shows the minimal failing sequence as a numbered script, e.g.
//!
//! ```text
//!   1. build base: write "a" = "x" (mode 644); succeeds
//!   2. build top from base; succeeds
//!   3. delete base
//!      <- fails here
//! ```
//!
//! with the difference between what the model expected and what the store holds, and the
//! path of the JSON file it was saved to. Re-run exactly that sequence with
//! `cargo xtask conformance --replay FILE`, or [`replay`]`(factory, path)` from code.

mod bad_input;
pub mod broken;
mod check_line;
mod collisions;
mod concurrency;
mod config;
pub mod crash;
mod exec;
mod factory;
mod fault_plan;
mod fault_sweep;
mod generate;
mod load;
mod macros;
mod model;
mod ops;
mod quiet_panic;
mod report;
mod scenarios;
mod self_test;
mod sequences;
mod suite;
mod tree;

pub use check_line::{CheckLine, LineVerdict};
pub use config::{Config, ConfigError, ProgressFn};
pub use factory::{Capabilities, FactoryError, StoreFactory};
pub use fault_plan::{Fault, FaultPlan, StepGuard, Verdict};
pub use ops::{Ending, Op};
pub use report::{CheckOutcome, CheckReport, FailingSequence, Failure, Progress, Report};
pub use self_test::{
    SELF_TEST_MAX_STEPS, SelfTestVerdict, catching_check, self_test, self_test_config,
};
pub use sequences::SequenceFile;
#[doc(hidden)]
pub use suite::{__run_check_in_test, __run_self_test_in_test};
pub use suite::{REPLAY_ENV, ReplayError, ReplaySource, check_names, replay, replay_with, run};
pub use tree::{Edit, Node, Tree};
