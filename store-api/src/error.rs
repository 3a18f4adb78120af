//! Errors of store operations: [`StoreError`], [`BuildError`], [`DeleteCacheError`] and the
//! record of a failed external command, [`CommandFailure`].

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use crate::{CacheName, Id};

/// A store operation failed. The store's own failure, never the build function's.
///
/// Every variant names what failed. For an external command (`zfs`, `zpool`, `btrfs`, ...) the
/// argument vector, exit status and stderr are kept in a [`CommandFailure`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `build` was given a base that has no result. The build function was not run.
    #[error("cannot build from base {base}: it has no result in the store")]
    MissingBase {
        /// The missing base.
        base: Id,
    },
    /// `build` was asked for an id whose result exists. The builder contract forbids this;
    /// a store may reject it (and must then change nothing).
    #[error("cannot build {id}: a result for it already exists")]
    AlreadyBuilt {
        /// The id.
        id: Id,
    },
    /// `build` was asked for an id that is being built right now. The builder contract forbids
    /// this; a store may reject it (and must then change nothing).
    #[error("cannot build {id}: a build of the same id is already running")]
    BuildInProgress {
        /// The id.
        id: Id,
    },
    /// A filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the store was doing, e.g. "creating the cache directory".
        action: String,
        /// The path it was working on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command failed.
    #[error(transparent)]
    Command(#[from] CommandFailure),
    /// A test hook of the store made this operation fail on purpose (fault injection).
    #[error("fault injected by the test harness: {what}")]
    FaultInjected {
        /// Which operation or step was made to fail.
        what: String,
    },
    /// Any other backend-specific failure.
    #[error("{message}")]
    Backend {
        /// What went wrong, for people.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

impl StoreError {
    /// A [`StoreError::Io`] for `action` on `path`.
    pub fn io(action: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }

    /// A [`StoreError::Backend`] with a message and no source.
    pub fn backend(message: impl Into<String>) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: None,
        }
    }
}

/// An external command that failed: what was run, how it ended, and what it said.
///
/// ```
/// use store_api::CommandFailure;
///
/// let failure = CommandFailure {
///     argv: vec!["zfs".into(), "destroy".into(), "--".into(), "tank/x".into()],
///     status: Some(1),
///     stderr: "cannot open 'tank/x': dataset does not exist\n".into(),
/// };
/// assert_eq!(
///     failure.to_string(),
///     "`zfs destroy -- tank/x` exited with status 1: cannot open 'tank/x': dataset does not exist",
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{}` {}: {}", self.command_line(), self.outcome(), self.stderr.trim_end())]
pub struct CommandFailure {
    /// The argument vector, program first.
    pub argv: Vec<String>,
    /// The exit status, or `None` if the command was killed by a signal or could not start.
    pub status: Option<i32>,
    /// Everything it wrote to stderr (or, if it could not start, why).
    pub stderr: String,
}

impl CommandFailure {
    /// The argument vector joined by spaces, for messages (not for a shell).
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    fn outcome(&self) -> String {
        match self.status {
            Some(code) => format!("exited with status {code}"),
            None => "did not exit normally".to_owned(),
        }
    }
}

/// `build` failed: either the caller's build function failed, or the store did.
///
/// `E` is the build function's own error type, handed back exactly as the function returned it
/// (see [`StoreExt::build`](crate::StoreExt::build)).
#[derive(Debug)]
pub enum BuildError<E> {
    /// The build function returned this error. Nothing was recorded for the id.
    Failed(E),
    /// The store failed (before, during or after the build function). Nothing was recorded.
    Store(StoreError),
}

impl<E> BuildError<E> {
    /// The build function's error, if that is what this is.
    pub fn into_failed(self) -> Option<E> {
        match self {
            BuildError::Failed(e) => Some(e),
            BuildError::Store(_) => None,
        }
    }

    /// The store's error, if that is what this is.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            BuildError::Failed(_) => None,
            BuildError::Store(e) => Some(e),
        }
    }
}

impl<E> From<StoreError> for BuildError<E> {
    fn from(e: StoreError) -> Self {
        BuildError::Store(e)
    }
}

impl<E: fmt::Display> fmt::Display for BuildError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Failed(e) => write!(f, "build function failed: {e}"),
            BuildError::Store(e) => write!(f, "store error during build: {e}"),
        }
    }
}

/// `E` only needs `Debug + Display`, so that the common `Box<dyn Error + Send + Sync>` (which is
/// not itself an `Error`) works with `?`. The build function's error is part of the message;
/// [`source`](StdError::source) is the store's error, when that is what failed.
impl<E: fmt::Debug + fmt::Display> StdError for BuildError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            BuildError::Failed(_) => None,
            BuildError::Store(e) => Some(e),
        }
    }
}

/// `delete_cache` did not delete the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteCacheError {
    /// A copy of the cache is out (acquired and not yet released or dropped). Nothing was
    /// changed; try again once the copies are released.
    #[error("cache {name:?} is busy: a copy of it is still in use")]
    Busy {
        /// The cache.
        name: CacheName,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
