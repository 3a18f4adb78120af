//! The object-safe form of a build function, and the helper backends use to run one.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;

use futures::FutureExt;

/// The error of a type-erased build function: the caller's own error, boxed.
///
/// [`StoreExt::build`](crate::StoreExt::build) boxes the caller's typed error into this and
/// downcasts it back, so callers of that method never see it. Backends pass it through untouched.
pub type BuildFnError = Box<dyn Any + Send>;

/// The future a type-erased build function returns.
pub type BuildFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BuildFnError>> + Send + 'a>>;

/// A type-erased build function: called once with the build directory.
///
/// This is what [`Store::build_dyn`](crate::Store::build_dyn) takes so that `Store` stays
/// object-safe. Builders call [`StoreExt::build`](crate::StoreExt::build) instead, which takes
/// an ordinary async closure and keeps its error type.
pub type BuildFn<'a> = Box<dyn FnOnce(PathBuf) -> BuildFuture<'a> + Send + 'a>;

/// How a build function ended, as seen by a backend running it with [`run_build_fn`].
#[must_use = "a backend must record the result or clean up after a failure"]
pub enum BuildFnOutcome {
    /// It returned `Ok(())`: the directory should become the result.
    Succeeded,
    /// It returned this error: clean up, then return `BuildError::Failed` with it.
    Failed(BuildFnError),
    /// It panicked: clean up, then resume the panic with this payload
    /// ([`std::panic::resume_unwind`]), so the caller sees the panic it caused.
    Panicked(Box<dyn Any + Send>),
}

impl std::fmt::Debug for BuildFnOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildFnOutcome::Succeeded => "Succeeded",
            BuildFnOutcome::Failed(_) => "Failed(..)",
            BuildFnOutcome::Panicked(_) => "Panicked(..)",
        })
    }
}

/// Runs a build function in `dir`, turning a panic (in the call or in the future) into
/// [`BuildFnOutcome::Panicked`] so the backend can clean up before re-raising it.
///
/// Cancellation is not handled here: if the future returned by this function is dropped, the
/// build function is dropped with it, and the backend's own drop guard must clean up.
pub async fn run_build_fn(f: BuildFn<'_>, dir: PathBuf) -> BuildFnOutcome {
    // The store never observes state the build function could have left half-updated after a
    // panic: it only cleans up its own directory, so asserting unwind safety is sound here.
    let future = match std::panic::catch_unwind(AssertUnwindSafe(move || f(dir))) {
        Ok(future) => future,
        Err(payload) => return BuildFnOutcome::Panicked(payload),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(Ok(())) => BuildFnOutcome::Succeeded,
        Ok(Err(e)) => BuildFnOutcome::Failed(e),
        Err(payload) => BuildFnOutcome::Panicked(payload),
    }
}
