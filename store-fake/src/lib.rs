//! A fast, in-process fake of the [`store_api::Store`] contract, for builders' tests.
//!
//! [`FakeStore`] keeps results and caches as plain directories under a root (a fresh
//! temporary directory, or one you name so that it persists), and keeps the **whole**
//! contract documented on [`store_api::Store`], [`store_api::StoreExt::build`] and
//! [`store_api::CacheLease`]: the same conformance cases pass against it as against a real
//! backend. Use it to test a builder without ZFS, root privileges or a pool.
//!
//! ```
//! use store_api::{Id, Store, StoreExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = store_fake::FakeStore::new()?;
//! let base = Id::new("base")?;
//! store
//!     .build(None, &base, |dir| async move { std::fs::write(dir.join("output"), "ok") })
//!     .await?;
//! let sub = Id::new("sub")?;
//! store
//!     .build(Some(&base), &sub, |dir| async move {
//!         let orig = std::fs::read_to_string(dir.join("output"))?;
//!         std::fs::write(dir.join("output"), orig + "+")
//!     })
//!     .await?;
//! let sub_dir = store.result(&sub).await?.expect("built");
//! assert_eq!(std::fs::read_to_string(sub_dir.join("output"))?, "ok+");
//! # Ok(())
//! # }
//! ```
//!
//! # Beyond OBuilder's mock store
//!
//! OBuilder's unit-test `Mock_store` has no caches (`assert false`), leaves the build
//! directory behind when the build function raises, keeps logs outside the result, lets
//! anyone write to results and reports a made-up 100 % free space. This fake:
//!
//! - implements caches fully: new caches owned by the requested user, independent copies,
//!   first-release-wins generations, discard on drop, and both `delete_cache` behaviours
//!   the contract allows ([`BusyPolicy`]);
//! - cleans up after a build function's error, panic (then resumes it) or cancellation (the
//!   build future dropped at any `.await`), so the id can be built again from scratch;
//! - rejects contract violations with typed errors (`AlreadyBuilt`, `BuildInProgress`,
//!   `MissingBase` without running the function);
//! - keeps results immutable and independent: deleting a base never affects what was
//!   built from it, nor builds cloning it right now;
//! - persists under a named root ([`FakeStore::open`]), commits by atomic rename and
//!   reclaims what an interrupted process left when the root is opened again;
//! - reports real free space (`statvfs`), escapes any cache name safely, and is safe to use
//!   from many tasks on a multi-threaded runtime;
//! - offers inspection ([`store_api::Inspect`], [`FakeStore::cache_info`],
//!   [`FakeStore::live_cache_copies`], [`FakeStore::builds_in_progress`]) and fault
//!   injection ([`FakeStore::fail_next_builds`], [`FakeStore::set_delete_cache_busy`], and a
//!   [`StepHook`] called before every change on disk, which can fail any step or stop all of
//!   them from some point on, as a crash would).
//!
//! # How results stay immutable
//!
//! Tests often run as root, and root ignores permission bits, so a read-only `chmod` would
//! not stop a stray write. Instead each result exists twice: `result(id)` returns
//! `<root>/result/<id>`, a copy the builder may read, while builds that use `id` as their
//! base are cloned from a private master, `<root>/master/<id>`, that no path handed out by
//! the store points into. A write through the result path therefore never reaches a later
//! build (nor the master a reopened store restores a removed result path from); it only
//! changes that one readable copy, which keeps the modes the build function gave it. Do not
//! write under `<root>/master`.
//!
//! # Ownership
//!
//! Copies (base master to build directory, build directory to master, cache version to
//! leased copy) keep owners, modes (setuid included), symlinks, hard links within the tree,
//! device nodes and FIFOs, and access and modification times; extended attributes are not
//! copied. A new
//! cache's directory is `chown`ed to the requested [`User`](store_api::User). When the
//! process is not root and may not `chown`, the directory (and any copied file it cannot give
//! away) stays owned by the process, and [`CacheInfo::owner`] still records the requested
//! owner, so a test can check what was asked for.
//!
//! # What a build function leaves behind
//!
//! The fake never reads, writes or removes anything outside its root because of what a build
//! function or cache holder left in its directory. A build directory or cache copy swapped
//! for a symlink (or a file) is not recorded: the build fails, the release fails, with
//! [`StoreError::NotADirectory`](store_api::StoreError::NotADirectory). Copies and removals
//! never follow a symlink and never enter a filesystem mounted (or bound) inside a tree: a
//! mount point is copied as an empty directory, as a snapshot shows it, and left in place
//! by a removal. What cannot be removed (such a mount point, an immutable file) is logged,
//! listed by [`FakeStore::leftovers`], retried by
//! [`complete_deletes`](store_api::Store::complete_deletes) (which fails while anything is
//! left) and at the next open, and never stops the store from opening.
//!
//! # Layout and limits
//!
//! The root holds a `store-fake` marker file, `state/` (the
//! [`state_dir`](store_api::Store::state_dir)), `building/<id>` (a running build; the log is
//! `log` in it), `result/<id>`, `master/<id>`, `caches/` and scratch directories that opening
//! empties. Only one `FakeStore` may have a root open at a time.
//!
//! Filesystem work runs on the calling task, without child processes: the fake is meant for
//! test-sized trees, and copies everything (a build from a base copies the base, and a
//! commit copies the result once more for its master), so it is no model of copy-on-write
//! space use. Speed is bound by file creation: put the root on a tmpfs (`TMPDIR=/dev/shm`
//! for [`FakeStore::new`]) when a test builds thousands of steps.

mod build;
mod cache;
mod copy;
mod defects;
mod df;
mod escape;
mod fake_store;
mod layout;
mod mount_point;
mod open;
mod options;
mod owner;
mod remove;
mod results;
mod state;
mod steps;
mod store_impl;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "test-defects")]
pub use defects::CrashDefect;
pub use fake_store::{CacheInfo, FakeStore};
pub use options::{BusyPolicy, FakeStoreBuilder};
pub use steps::{Step, StepHook, StepKind};
