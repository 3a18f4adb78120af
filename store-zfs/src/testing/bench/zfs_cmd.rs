//! Running single `zfs` commands for the benchmark (the baseline's commands and the set-up),
//! through the same counting [`Runner`] as the store under test.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use super::{BenchError, Result};
use crate::{Backoff, Cmd, CmdOutput, Runner, is_transient_busy};

/// A thin `zfs` front end over a runner.
#[derive(Clone)]
pub struct Zfs {
    runner: Arc<dyn Runner>,
}

impl Zfs {
    /// Commands go through `runner`.
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }

    /// Runs `zfs ARGS` and returns how it ended (a non-zero exit is not an error here).
    pub async fn output(&self, args: &[&str]) -> Result<CmdOutput> {
        let cmd = Cmd::zfs(args.iter().copied());
        tracing::debug!(%cmd, "bench zfs");
        self.runner
            .run(&cmd)
            .await
            .map_err(|source| BenchError::Run {
                argv: cmd.to_string(),
                source,
            })
    }

    /// Runs `zfs ARGS`; a non-zero exit is an error keeping argv, status and stderr.
    pub async fn check(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(failed(args, &out))
        }
    }

    /// Like [`check`](Self::check), repeating the command while it fails with "dataset is
    /// busy" (zfs-fuse releases a dataset a few milliseconds after `umount` returns): the
    /// store's own policy, 10 ms doubling, about 5 s in all.
    pub async fn check_retry_busy(&self, args: &[&str]) -> Result<String> {
        let mut delays = Backoff::STORE.delays();
        loop {
            let out = self.output(args).await?;
            if out.success() {
                return Ok(out.stdout);
            }
            match delays.next() {
                Some(delay) if is_transient_busy(&out.stderr) => tokio::time::sleep(delay).await,
                _ => return Err(failed(args, &out)),
            }
        }
    }

    /// Whether `ds` is in the kernel's mount table (reading it starts no process).
    pub async fn is_mounted(&self, ds: &str) -> Result<bool> {
        let table = self
            .runner
            .mount_table()
            .await
            .map_err(|e| BenchError::io("reading the mount table", "/proc/mounts", e))?;
        Ok(table.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next()
                .is_some_and(|src| crate::mounts::unescape(src) == ds)
                && f.nth(1).is_some_and(|t| t == "fuse.zfs" || t == "zfs")
        }))
    }
}

/// The error for a command that exited unsuccessfully.
pub fn failed(args: &[&str], out: &CmdOutput) -> BenchError {
    BenchError::CommandFailed {
        argv: format!("zfs {}", args.join(" ")),
        status: std::process::ExitStatus::from_raw(out.status.unwrap_or(255) << 8),
        stderr: out.stderr.trim().to_owned(),
    }
}
