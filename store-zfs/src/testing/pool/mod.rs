//! The workspace's one test-pool helper: named file-backed pools, each with a JSON record in a
//! pool directory, created, listed, inspected and destroyed through a [`Runner`].
//!
//! Both users build on it: [`TestPool`](super::TestPool) (a blocking drop guard for this
//! crate's and other crates' tests) and xtask (`cargo xtask pool create|list|destroy`, and the
//! pools of the conformance, crash and bench lanes). Because they share the directory
//! ([`PoolDir::resolve`]: `ZSTORE_POOL_DIR`, else [`DEFAULT_POOL_DIR`]) and the records,
//! `cargo xtask pool list` shows a pool a crashed test left behind, and `cargo xtask pool
//! destroy` removes it.
//!
//! What makes a pool safe to destroy: its record in the directory (written *before*
//! `zpool create`, so an interrupted creation is still known) and, while it is imported, the
//! user property [`OWNER_PROPERTY`], set to [`OWNER_VALUE`], on its root dataset. [`destroy`]
//! refuses a pool that lacks either, so a mistyped name never destroys someone else's pool.
//!
//! Every name reaches a command line only as a validated [`PoolName`], after `--`. Pools are
//! created with `cachefile=none`: a zfs-fuse daemon restarted after the pool's file was
//! removed would otherwise import it again from its cache, and then hang on it. Only commands
//! that behave the same on zfs-fuse 0.7 and OpenZFS 2.x are used (no `-p` on list, no `-f`
//! on destroy, which zfs-fuse turns into a lazy unmount that can wedge its daemon).

mod name;
mod ops;
mod registry;

pub use name::{DEFAULT_PREFIX, PoolName, parse_size};
pub use ops::{Listing, create, destroy, exists, imported, list, property, why_not_empty};
pub use registry::{DEFAULT_POOL_DIR, OWNER_PROPERTY, OWNER_VALUE, PoolDir, PoolRecord};

use std::path::PathBuf;

use crate::runner::{CmdOutput, RunError, Runner};

/// Why a pool operation failed. A command's failure keeps its command line, its exit status
/// and its stderr, so the message says exactly what ran and how it ended.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A malformed name or size, or a request the machine's state contradicts (the pool
    /// exists already, no unused name).
    #[error("{0}")]
    Invalid(String),
    /// [`destroy`] refused: the pool has no record in the directory, or its owner property
    /// is not [`OWNER_VALUE`]. Nothing ran that changes anything.
    #[error("refusing to destroy {name}: {why}")]
    NotOurs {
        /// The pool.
        name: String,
        /// What is missing.
        why: String,
    },
    /// A command did not run to an exit status (not installed, the daemon lock not taken,
    /// the runtime shut down).
    #[error("could not run `{argv}`: {source}")]
    Run {
        /// The command line, shell-quoted for display only.
        argv: String,
        /// Why.
        #[source]
        source: RunError,
    },
    /// A command ran and failed.
    #[error("`{argv}` failed ({}){}", status_text(*.status), stderr_suffix(.stderr))]
    CommandFailed {
        /// The command line, shell-quoted for display only.
        argv: String,
        /// Its exit status; `None` if a signal ended it.
        status: Option<i32>,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A file-system operation on the pool directory failed.
    #[error("{context}: {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A pool record could not be read back (a truncated or hand-edited file).
    #[error("corrupt pool record {path}: {source}")]
    CorruptRecord {
        /// The record file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: serde_json::Error,
    },
    /// A pool record could not be encoded.
    #[error("cannot encode pool record: {0}")]
    Encode(#[source] serde_json::Error),
}

impl PoolError {
    /// A [`PoolError::Io`].
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        PoolError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// The [`PoolError::CommandFailed`] for `argv`, which ended as `out` says.
    pub(crate) fn failed(argv: String, out: &CmdOutput) -> Self {
        PoolError::CommandFailed {
            argv,
            status: out.status,
            stderr: out.stderr.trim().to_owned(),
        }
    }
}

/// How an exit status reads in a message (the wording of `std::process::ExitStatus`).
fn status_text(status: Option<i32>) -> String {
    match status {
        Some(code) => format!("exit status: {code}"),
        None => "killed by a signal".to_owned(),
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// A pool name with `prefix` that nobody uses yet: neither imported nor recorded in `dir`.
///
/// # Errors
/// A `prefix` that makes no valid name (before any command runs), `zpool list` failing, an
/// unreadable record, or 16 candidates all taken.
pub async fn fresh_name(
    runner: &dyn Runner,
    dir: &PoolDir,
    prefix: &str,
) -> Result<PoolName, PoolError> {
    let candidates = (0..16)
        .map(|attempt| PoolName::unique(prefix, attempt))
        .collect::<Result<Vec<_>, _>>()?;
    let taken = imported(runner).await?;
    for name in candidates {
        if !taken.iter().any(|t| t == name.as_str()) && dir.load(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(PoolError::Invalid(format!(
        "could not find an unused pool name with prefix {prefix:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_failures_read_like_the_process_status() {
        let out = CmdOutput::failed(1, "cannot open 'x': no such pool\n");
        let err = PoolError::failed("zpool destroy -- x".into(), &out);
        assert_eq!(
            err.to_string(),
            "`zpool destroy -- x` failed (exit status: 1): cannot open 'x': no such pool"
        );
        let killed = CmdOutput {
            status: None,
            ..CmdOutput::default()
        };
        assert_eq!(
            PoolError::failed("zpool list".into(), &killed).to_string(),
            "`zpool list` failed (killed by a signal)"
        );
    }
}
