//! The executable form of the store contract (SPEC.md and the rustdoc of
//! [`store_api::Store`]): a backend passes this suite or it does not conform.
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
//!   one per known fault of OBuilder's ZFS store (see [`check_names`]).
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
//! # Knobs
//!
//! [`Config`] holds them: the number of cases, the longest sequence, the seed, timeouts,
//! where failing sequences are saved, which checks to run, and a progress callback.
//! [`Config::from_env`] reads `ZSTORE_CONFORMANCE_CASES`, `_MAX_OPS`, `_SEED`, and the others
//! listed there; the generated tests use it. The defaults keep a run against an in-memory
//! backend well under a minute; on a slow backend (every `zfs` command costs ~200 ms in a
//! qemu guest) lower `cases` and `max_ops`, and set `full_check_each_step = false`.
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

mod concurrency;
mod config;
mod exec;
mod factory;
mod generate;
mod macros;
mod model;
mod ops;
mod quiet_panic;
mod report;
mod scenarios;
mod sequences;
mod suite;
mod tree;

pub use config::{Config, ConfigError, ProgressFn};
pub use factory::{Capabilities, FactoryError, FaultPlan, StoreFactory};
pub use ops::{Ending, Op};
pub use report::{CheckOutcome, CheckReport, FailingSequence, Failure, Progress, Report};
pub use sequences::SequenceFile;
#[doc(hidden)]
pub use suite::__run_check_in_test;
pub use suite::{ReplayError, ReplaySource, check_names, replay, replay_with, run};
pub use tree::{Edit, Node, Tree};
