//! The contract of a store for build results, as a Rust trait.
//!
//! A builder (an OBuilder- or BuildKit-style tool) runs each build step on top of the previous
//! step's result. It keeps those results in a [`Store`]: ask for a result by [`Id`], build it
//! from a base if it is missing, share mutable caches between steps, delete what is no longer
//! wanted. Backends (`store-zfs` on ZFS snapshots, `store-fake` in memory for tests, or your
//! own) implement the trait; the `conformance` crate checks that they keep the contract.
//!
//! This crate holds only the contract: the [`Store`] trait and its semantics (documented on each
//! method, once), the validated name types [`Id`], [`CacheName`] and [`User`], the configuration
//! type [`StoreSpec`], and the error types. No backend code.
//!
//! # A builder's view
//!
//! ```
//! use std::sync::Arc;
//! use store_api::{CacheName, Id, ReleaseOutcome, Store, StoreExt, User};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Any backend; the fake keeps everything in a temporary directory.
//! let store: Arc<dyn Store> = Arc::new(store_fake::FakeStore::new()?);
//!
//! // Step 1: build "base" from nothing.
//! let base = Id::new("base")?;
//! if store.result(&base).await?.is_none() {
//!     store
//!         .build(None, &base, |dir| async move {
//!             tokio::fs::write(dir.join("output"), "ok").await
//!         })
//!         .await?;
//! }
//!
//! // Step 2: build "sub" on top of it, using a cache while it runs.
//! let sub = Id::new("sub")?;
//! let downloads = CacheName::new("opam-archives")?;
//! let cache_store = Arc::clone(&store);
//! store
//!     .build(Some(&base), &sub, |dir| async move {
//!         let lease = cache_store.cache(User::new(1000, 1000)?, &downloads).await?;
//!         tokio::fs::write(lease.path().join("archive.tar"), "bytes").await?;
//!         assert_eq!(lease.release().await?, ReleaseOutcome::Published);
//!         let base_output = tokio::fs::read_to_string(dir.join("output")).await?;
//!         tokio::fs::write(dir.join("output"), base_output + "+").await?;
//!         Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//!     })
//!     .await?;
//!
//! let sub_dir = store.result(&sub).await?.expect("sub was just built");
//! assert_eq!(std::fs::read_to_string(sub_dir.join("output"))?, "ok+");
//!
//! // The build function's own error comes back typed, and nothing is recorded.
//! #[derive(Debug, PartialEq)]
//! struct StepFailed;
//! let fail = Id::new("fail")?;
//! let err = store.build(None, &fail, |_dir| async { Err(StepFailed) }).await.unwrap_err();
//! assert_eq!(err.into_failed(), Some(StepFailed));
//! assert_eq!(store.result(&fail).await?, None);
//! # Ok(())
//! # }
//! ```
//!
//! # Choosing a backend from configuration
//!
//! [`StoreSpec`] parses `zfs:tank`, `zfs:tank/zstore`, `fake:` and third-party `scheme:location`
//! strings, with serde support; the builder matches on it and opens the backend crate's store.

mod build_fn;
mod cache_lease;
mod cache_name;
mod error;
mod id;
mod inspect;
mod name_error;
mod spec;
mod store;
mod top_dir;
mod user;

pub use build_fn::{BuildFn, BuildFnError, BuildFnOutcome, BuildFuture, run_build_fn};
pub use cache_lease::{CacheCopy, CacheLease, ReleaseOutcome};
pub use cache_name::CacheName;
pub use error::{BuildError, CommandFailure, DeleteCacheError, LockHolder, StoreError};
pub use id::Id;
pub use inspect::Inspect;
pub use name_error::{NameError, NameErrorReason, NameKind};
pub use spec::{StoreSpec, StoreSpecError};
pub use store::{Store, StoreExt};
pub use top_dir::{check_top_dir, describe_path};
pub use user::User;

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
