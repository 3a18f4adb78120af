//! The xtask error type and how each kind maps to the process exit status.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Exit status: every case ran and passed (or an operator command succeeded).
pub const EXIT_OK: u8 = 0;
/// Exit status: the suite ran and at least one case failed, or something was left behind.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage or an environment that cannot run the request (missing engine, ...).
pub const EXIT_SETUP: u8 = 2;
/// Exit status: a timeout expired (same convention as `timeout(1)`).
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit status: the VM failed before the guest command could report a status.
pub const EXIT_VM_FAILED: u8 = 125;
/// Exit status: interrupted by SIGINT/SIGTERM/SIGHUP (after cleaning up).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Everything that can go wrong in xtask. Command failures keep the argument vector, the exit
/// status and stderr, so the message says exactly what ran and how it failed.
#[derive(Debug, thiserror::Error)]
pub enum XtaskError {
    /// An external command could not be started at all.
    #[error("could not run `{argv}`: {source}")]
    Spawn {
        /// The command line, shell-quoted for display only.
        argv: String,
        /// Why `exec` failed (usually: not installed).
        source: std::io::Error,
    },
    /// An external command ran and exited unsuccessfully.
    #[error("`{argv}` failed ({status}){}", stderr_suffix(.stderr))]
    CommandFailed {
        /// The command line, shell-quoted for display only.
        argv: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// Something the request needs is missing and xtask cannot provide it.
    #[error("{what}\n  how to fix: {hint}")]
    Missing {
        /// What is missing.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// The request contradicts itself or the state of the machine.
    #[error("{0}")]
    Invalid(String),
    /// A file-system operation failed.
    #[error("{context}: {path}: {source}")]
    Io {
        /// What xtask was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A time limit expired.
    #[error("timed out after {secs} s: {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The limit.
        secs: u64,
    },
    /// The VM could not be booted or the guest set-up failed before the command ran.
    #[error("VM failed: {0}")]
    VmFailed(String),
    /// A test-pool operation failed (`store_zfs::testing::pool`): a bad name or size, a
    /// refused destroy, a failed `zpool`/`zfs` command (with its command line, exit status
    /// and stderr), or the pool directory.
    #[error(transparent)]
    Pool(#[from] store_zfs::testing::pool::PoolError),
    /// The benchmark's ZFS part failed.
    #[error(transparent)]
    ZfsBench(#[from] store_zfs::testing::bench::BenchError),
    /// The benchmark's fake part failed.
    #[error(transparent)]
    FakeBench(#[from] store_fake::testing::bench::BenchError),
    /// SIGINT, SIGTERM or SIGHUP arrived; cleanup has run.
    #[error("interrupted")]
    Interrupted,
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl XtaskError {
    /// Builds an [`XtaskError::Io`].
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        XtaskError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            XtaskError::Missing { .. } | XtaskError::Invalid(_) => EXIT_SETUP,
            XtaskError::Timeout { .. } => EXIT_TIMEOUT,
            XtaskError::VmFailed(_) => EXIT_VM_FAILED,
            XtaskError::Interrupted => EXIT_INTERRUPTED,
            XtaskError::Spawn { .. }
            | XtaskError::CommandFailed { .. }
            | XtaskError::Io { .. }
            | XtaskError::Pool(_)
            | XtaskError::ZfsBench(_)
            | XtaskError::FakeBench(_) => EXIT_SETUP,
        }
    }
}

/// Result alias for xtask.
pub type Result<T, E = XtaskError> = std::result::Result<T, E>;
