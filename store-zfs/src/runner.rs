//! The seam between the store and the `zfs`/`zpool` programs: [`Runner`], and the real one,
//! [`SystemRunner`].
//!
//! The store never spawns a process itself: every command is a [`Cmd`] handed to a `Runner`.
//! Tests wrap or replace the runner to record the exact command sequence, fail the N-th
//! command, or stop every command after the N-th one (see `store_zfs::testing`, feature `testing`).

use std::fmt;
use std::process::Stdio;

use async_trait::async_trait;

/// Which program a [`Cmd`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// `zfs`.
    Zfs,
    /// `zpool`.
    Zpool,
}

impl Program {
    /// The executable name, looked up in `PATH`.
    pub fn name(self) -> &'static str {
        match self {
            Program::Zfs => "zfs",
            Program::Zpool => "zpool",
        }
    }
}

/// One external command: a program and its argument vector (never a shell line).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cmd {
    /// The program.
    pub program: Program,
    /// The arguments, after the program name.
    pub args: Vec<String>,
}

impl Cmd {
    /// A `zfs` command with these arguments.
    pub fn zfs<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: Program::Zfs,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// A `zpool` command with these arguments.
    pub fn zpool<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            program: Program::Zpool,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The full argument vector, program first.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.name().to_owned())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// The subcommand (`create`, `list`, ...), if any.
    pub fn subcommand(&self) -> Option<&str> {
        self.args.first().map(String::as_str)
    }

    /// Whether this command changes the pool and waits for a transaction group to sync
    /// (`create`, `clone`, `snapshot`, `destroy`, `promote`, `set`, `rename`, `inherit`).
    ///
    /// `mount`, `unmount`, `list`, `get` and every `zpool` query are not syncing. The store's
    /// documented command costs count these.
    pub fn is_syncing(&self) -> bool {
        self.program == Program::Zfs
            && matches!(
                self.subcommand(),
                Some(
                    "create"
                        | "clone"
                        | "snapshot"
                        | "destroy"
                        | "promote"
                        | "set"
                        | "rename"
                        | "inherit"
                )
            )
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// How a command that ran ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// The exit status, or `None` if it was killed by a signal.
    pub status: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CmdOutput {
    /// A successful run printing `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Self {
            status: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// A run that exited with `status` and printed `stderr`.
    pub fn failed(status: i32, stderr: impl Into<String>) -> Self {
        Self {
            status: Some(status),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A command that did not run to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started (e.g. it is not installed).
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program name.
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The zfs-fuse daemon lock the command must run under was not taken (see
    /// [`crate::daemon_lock`]); the command did not run.
    #[error(transparent)]
    DaemonLock(#[from] crate::daemon_lock::LockError),
    /// The runtime shut down while the command ran: its outcome is unknown (the process may
    /// still be running).
    #[error(
        "the command's task was cancelled (the async runtime shut down); its outcome is unknown"
    )]
    Cancelled,
}

/// Runs external commands for the store. Implementations must be cheap to share.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Runs `cmd` to completion and returns how it ended.
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError>;

    /// The kernel's mount table, in `/proc/mounts` format. Reading it starts no process.
    async fn mount_table(&self) -> std::io::Result<String>;
}

/// The real runner: starts `zfs`/`zpool` with [`tokio::process`], no shell, stdin closed
/// (or, under the zfs-fuse daemon lock, the locked file, so that the command holds the lock
/// until it ends even if this process is killed first).
///
/// A command whose caller is cancelled is not killed: ZFS commands are short, and killing one
/// half-way would only add uncertainty about what it did. The store orders its own cleanup
/// after in-flight commands instead.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRunner;

#[async_trait]
impl Runner for SystemRunner {
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        let program = cmd.program.name();
        let output = system_command(program, &cmd.args)
            .output()
            .await
            .map_err(|source| RunError::Spawn { program, source })?;
        Ok(CmdOutput {
            status: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    async fn mount_table(&self) -> std::io::Result<String> {
        tokio::fs::read_to_string("/proc/mounts").await
    }
}

/// How [`SystemRunner`] starts `program`: output captured, the C locale, and stdin closed or,
/// under the zfs-fuse daemon lock, the locked file (see [`crate::daemon_lock`]).
pub(crate) fn system_command(program: &str, args: &[String]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(crate::daemon_lock::inherited_stdin().unwrap_or_else(Stdio::null))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // `zfs` output is parsed; keep it in the C locale.
        .env("LC_ALL", "C");
    command
}
