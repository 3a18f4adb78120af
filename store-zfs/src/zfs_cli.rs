//! [`Zfs`]: every `zfs`/`zpool` call the store makes, through one [`Runner`], with one retry
//! policy, one tracing span per command and typed errors.

use std::sync::Arc;

use store_api::{CommandFailure, StoreError};
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::daemon_lock::{DaemonSerialized, LockError};
use crate::runner::{Cmd, CmdOutput, RunError, Runner};

/// Whether stderr says the dataset was transiently busy (the only case that is retried).
///
/// An unmount refused because a process uses the mount is not transient, whatever the
/// wording: zfs-fuse passes on umount's `target is busy`, OpenZFS says `cannot unmount
/// '<mountpoint>': pool or dataset is busy` (see [`is_mount_in_use`]).
pub fn is_transient_busy(stderr: &str) -> bool {
    (stderr.contains("dataset is busy") || stderr.contains("mountpoint or dataset is busy"))
        && !is_mount_in_use(stderr)
}

/// Whether stderr says an unmount was refused because a process uses the mount: umount's
/// "target is busy" (zfs-fuse) or "cannot unmount '…': pool or dataset is busy" (OpenZFS).
/// Waiting would not help; the store carries on (snapshots a build directory mounted,
/// retries a destroy later) instead.
pub fn is_mount_in_use(stderr: &str) -> bool {
    stderr.contains("target is busy")
        || (stderr.contains("cannot unmount") && stderr.contains("is busy"))
}

/// Whether a store error is a command that failed because the dataset does not exist.
///
/// OpenZFS words a missing snapshot in `zfs destroy` differently from everything else
/// ("could not find any snapshots to destroy"); zfs-fuse says "does not exist" there too.
pub fn is_missing(err: &StoreError) -> bool {
    matches!(err, StoreError::Command(f)
        if f.stderr.contains("does not exist")
            || f.stderr.contains("could not find any snapshots to destroy"))
}

/// Whether a store error is an unmount refused because a process uses the mount (or a
/// dataset that stayed busy through the retries).
pub fn is_in_use(err: &StoreError) -> bool {
    matches!(err, StoreError::Command(f)
        if is_mount_in_use(&f.stderr) || f.stderr.contains("umount failed")
            || is_transient_busy(&f.stderr))
}

/// The options results are mounted with (see [`Zfs::mount`]).
pub const RESULT_MOUNT_OPTIONS: &str = "ro,nosuid,nodev";

/// The store's handle on the ZFS command line.
#[derive(Clone)]
pub struct Zfs {
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for Zfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Zfs { .. }")
    }
}

fn failure(cmd: &Cmd, out: &CmdOutput) -> StoreError {
    StoreError::Command(CommandFailure {
        argv: cmd.argv(),
        status: out.status,
        stderr: out.stderr.clone(),
    })
}

impl Zfs {
    /// Wraps a runner.
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Self { runner }
    }

    /// The same runner, taking the machine-wide daemon lock around every command when `on`
    /// (see [`crate::daemon_lock`]: zfs-fuse's daemon cannot serve two commands that start
    /// at once).
    pub fn serialize_commands(self, on: bool) -> Self {
        match on {
            true => Self::new(Arc::new(DaemonSerialized::new(self.runner))),
            false => self,
        }
    }

    /// The mount table (see [`Runner::mount_table`]).
    pub async fn mount_table(&self) -> Result<String, StoreError> {
        self.runner
            .mount_table()
            .await
            .map_err(|e| StoreError::io("reading the mount table", "/proc/mounts", e))
    }

    /// Runs `cmd` once, retrying only on transient EBUSY, and returns its output whatever
    /// its exit status. Fails only if it could not run at all.
    pub async fn output(&self, cmd: &Cmd) -> Result<CmdOutput, StoreError> {
        let span = tracing::debug_span!("zfs_command", command = %cmd);
        async {
            let mut delays = Backoff::STORE.delays();
            loop {
                let out = self.runner.run(cmd).await.map_err(|e| match e {
                    RunError::Spawn { program, source } => StoreError::Command(CommandFailure {
                        argv: cmd.argv(),
                        status: None,
                        stderr: format!("cannot start {program}: {source} (is ZFS installed?)"),
                    }),
                    RunError::DaemonLock(LockError::TimedOut { path, holder, .. }) => {
                        StoreError::Locked {
                            what: format!("the zfs-fuse daemon lock (needed to run `{cmd}`)"),
                            path,
                            holder,
                        }
                    }
                    RunError::DaemonLock(LockError::Unusable { path, source }) => StoreError::io(
                        format!("taking the zfs-fuse daemon lock for `{cmd}`"),
                        path,
                        source,
                    ),
                    e @ RunError::Cancelled => StoreError::Command(CommandFailure {
                        argv: cmd.argv(),
                        status: None,
                        stderr: e.to_string(),
                    }),
                })?;
                let delay = match out.success() || !is_transient_busy(&out.stderr) {
                    true => None,
                    false => delays.next(),
                };
                let Some(delay) = delay else {
                    tracing::debug!(status = ?out.status, stderr = %out.stderr.trim_end(), "done");
                    return Ok(out);
                };
                tracing::debug!(?delay, stderr = %out.stderr.trim_end(), "busy, retrying");
                tokio::time::sleep(delay).await;
            }
        }
        .instrument(span)
        .await
    }

    /// Runs `cmd` (see [`output`](Self::output)); a non-zero exit is an error.
    pub async fn run(&self, cmd: &Cmd) -> Result<String, StoreError> {
        let out = self.output(cmd).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(failure(cmd, &out))
        }
    }

    /// `zfs version`: `Some(first line)` on OpenZFS, `None` where the command does not exist
    /// (exit 2, "unrecognized command": zfs-fuse and other pre-OpenZFS-0.8 tools).
    pub async fn version(&self) -> Result<Option<String>, StoreError> {
        let cmd = Cmd::zfs(["version"]);
        let out = self.output(&cmd).await?;
        if out.success() {
            Ok(Some(
                out.stdout.lines().next().unwrap_or("").trim().to_owned(),
            ))
        } else if out.status == Some(2) && out.stderr.contains("unrecognized command") {
            Ok(None)
        } else {
            Err(failure(&cmd, &out))
        }
    }

    /// `zfs get -H -p -o property,value PROPS -- DS`: `None` if `ds` does not exist.
    pub async fn get(
        &self,
        ds: &str,
        props: &[&str],
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        let cmd = Cmd::zfs([
            "get",
            "-H",
            "-p",
            "-o",
            "property,value",
            &props.join(","),
            "--",
            ds,
        ]);
        let out = self.output(&cmd).await?;
        if out.status == Some(1) && out.stderr.contains("does not exist") {
            return Ok(None);
        }
        if !out.success() {
            return Err(failure(&cmd, &out));
        }
        Ok(Some(
            out.stdout
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(p, v)| (p.to_owned(), v.to_owned()))
                .collect(),
        ))
    }

    /// `zfs list -H -r -t all -o COLS -- ROOTS...`: one row per dataset or snapshot, split on
    /// tabs.
    pub async fn list_tree(
        &self,
        roots: &[&str],
        cols: &[&str],
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let cols = cols.join(",");
        let mut args = vec!["list", "-H", "-r", "-t", "all", "-o", &cols, "--"];
        args.extend_from_slice(roots);
        let out = self.run(&Cmd::zfs(args)).await?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect())
    }

    /// `zfs create [-o k=v]... -- DS`.
    pub async fn create(&self, ds: &str, props: &[String]) -> Result<(), StoreError> {
        let mut args = vec!["create".to_owned()];
        for p in props {
            args.push("-o".into());
            args.push(p.clone());
        }
        args.push("--".into());
        args.push(ds.into());
        self.run(&Cmd::zfs(args)).await.map(drop)
    }

    /// `zfs clone [-o k=v]... -- SNAP DS`.
    pub async fn clone_snapshot(
        &self,
        snap: &str,
        ds: &str,
        props: &[String],
    ) -> Result<(), StoreError> {
        let mut args = vec!["clone".to_owned()];
        for p in props {
            args.push("-o".into());
            args.push(p.clone());
        }
        args.extend(["--".into(), snap.into(), ds.into()]);
        self.run(&Cmd::zfs(args)).await.map(drop)
    }

    /// `zfs snapshot -- DS@SNAP` (one snapshot per call: zfs-fuse takes no list).
    pub async fn snapshot(&self, snap: &str) -> Result<(), StoreError> {
        self.run(&Cmd::zfs(["snapshot", "--", snap]))
            .await
            .map(drop)
    }

    /// `zfs destroy [FLAG] -- NAME`; a name that does not exist counts as destroyed.
    pub async fn destroy(&self, name: &str, flag: Option<&str>) -> Result<(), StoreError> {
        let mut args = vec!["destroy"];
        args.extend(flag);
        args.extend(["--", name]);
        match self.run(&Cmd::zfs(args)).await {
            Err(e) if is_missing(&e) => Ok(()),
            other => other.map(drop),
        }
    }

    /// `zfs promote DS` (`promote` takes no `--`; `ds` is always a name the store built).
    pub async fn promote(&self, ds: &str) -> Result<(), StoreError> {
        self.run(&Cmd::zfs(["promote", ds])).await.map(drop)
    }

    /// `zfs set PROP=VALUE DS` (`set` takes no `--`; `ds` is always a name the store built).
    pub async fn set(&self, prop: &str, value: &str, ds: &str) -> Result<(), StoreError> {
        self.run(&Cmd::zfs(["set", &format!("{prop}={value}"), ds]))
            .await
            .map(drop)
    }

    /// `zfs mount [-o ro,nosuid,nodev] -- DS`: read-only mounts (results) are also `nosuid`
    /// and `nodev`, so that a setuid file or device node in a result is inert through its
    /// path. "Already mounted" is returned as an error; callers check the mount table.
    pub async fn mount(&self, ds: &str, read_only: bool) -> Result<(), StoreError> {
        let mut args = vec!["mount"];
        if read_only {
            args.extend(["-o", RESULT_MOUNT_OPTIONS]);
        }
        args.extend(["--", ds]);
        self.run(&Cmd::zfs(args)).await.map(drop)
    }

    /// `zfs unmount -- DS` (never `-f`: on zfs-fuse it is a lazy unmount that can wedge the
    /// daemon). "Not currently mounted" counts as success.
    pub async fn unmount(&self, ds: &str) -> Result<(), StoreError> {
        match self.run(&Cmd::zfs(["unmount", "--", ds])).await {
            Err(StoreError::Command(f)) if f.stderr.contains("not currently mounted") => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// Answers each command from a script (in order) and records what it was asked.
    struct Scripted {
        replies: Mutex<Vec<Result<CmdOutput, &'static str>>>,
        asked: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(replies: Vec<Result<CmdOutput, &'static str>>) -> Arc<Self> {
            Arc::new(Self {
                replies: Mutex::new(replies.into_iter().rev().collect()),
                asked: Mutex::new(Vec::new()),
            })
        }
        fn asked(&self) -> Vec<String> {
            self.asked.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl Runner for Scripted {
        async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
            self.asked.lock().expect("lock").push(cmd.to_string());
            match self.replies.lock().expect("lock").pop() {
                Some(Ok(out)) => Ok(out),
                Some(Err("spawn")) => Err(RunError::Spawn {
                    program: "zfs",
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                }),
                Some(Err(what)) => Err(RunError::Spawn {
                    program: "zfs",
                    source: std::io::Error::other(what),
                }),
                None => panic!("unexpected command {cmd}"),
            }
        }
        async fn mount_table(&self) -> std::io::Result<String> {
            Ok(String::new())
        }
    }

    #[tokio::test]
    async fn retries_only_transient_busy() {
        let r = Scripted::new(vec![
            Ok(CmdOutput::failed(
                1,
                "cannot destroy 'p/x': dataset is busy\n",
            )),
            Ok(CmdOutput::failed(
                1,
                "cannot mount 'p/x': mountpoint or dataset is busy\n",
            )),
            Ok(CmdOutput::ok("")),
        ]);
        let zfs = Zfs::new(r.clone());
        zfs.destroy("p/x", None).await.expect("retried to success");
        assert_eq!(r.asked().len(), 3);
        assert!(r.asked().iter().all(|c| c == "zfs destroy -- p/x"));

        let r = Scripted::new(vec![Ok(CmdOutput::failed(
            1,
            "umount: /p/x: target is busy.\ncannot unmount '/p/x': umount failed\n",
        ))]);
        let err = Zfs::new(r.clone())
            .unmount("p/x")
            .await
            .expect_err("not retried");
        assert_eq!(r.asked(), ["zfs unmount -- p/x"]);
        assert!(is_in_use(&err));
        let StoreError::Command(f) = err else {
            panic!("typed failure")
        };
        assert_eq!(f.argv, ["zfs", "unmount", "--", "p/x"]);
        assert_eq!(f.status, Some(1));
        assert!(f.stderr.contains("target is busy"));

        // OpenZFS words a mount in use as "pool or dataset is busy": not transient either
        // (retrying it stalled every commit with a file still open by 5 s).
        let r = Scripted::new(vec![Ok(CmdOutput::failed(
            1,
            "cannot unmount '/p/x': pool or dataset is busy\n",
        ))]);
        let err = Zfs::new(r.clone())
            .unmount("p/x")
            .await
            .expect_err("not retried");
        assert_eq!(r.asked(), ["zfs unmount -- p/x"]);
        assert!(is_in_use(&err));
        assert!(is_transient_busy("cannot destroy 'p/x': dataset is busy\n"));
        assert!(!is_transient_busy(
            "cannot unmount '/p/x': pool or dataset is busy\n"
        ));
    }

    #[tokio::test]
    async fn idempotent_cleanup_and_typed_errors() {
        let r = Scripted::new(vec![
            Ok(CmdOutput::failed(
                1,
                "cannot open 'p/x': dataset does not exist\n",
            )),
            Ok(CmdOutput::failed(
                1,
                "could not find any snapshots to destroy; check snapshot names.\n",
            )),
            Ok(CmdOutput::failed(
                1,
                "cannot unmount 'p/x': not currently mounted\n",
            )),
            Err("spawn"),
            Err("process stopped"),
        ]);
        let zfs = Zfs::new(r);
        zfs.destroy("p/x", Some("-r"))
            .await
            .expect("absent counts as destroyed");
        zfs.destroy("p/x@s", None)
            .await
            .expect("an absent snapshot, in OpenZFS's words");
        zfs.unmount("p/x")
            .await
            .expect("not mounted counts as unmounted");
        let err = zfs.snapshot("p/x@s").await.expect_err("no zfs").to_string();
        assert!(err.contains("is ZFS installed"), "{err}");
        let err = zfs.snapshot("p/x@s").await.expect_err("stopped");
        assert!(
            matches!(&err, StoreError::Command(f) if f.status.is_none()
                && f.stderr.contains("process stopped")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn detects_the_engine() {
        let r = Scripted::new(vec![
            Ok(CmdOutput::failed(
                2,
                "unrecognized command 'version'\nusage: zfs command\n",
            )),
            Ok(CmdOutput::ok(
                "zfs-2.1.5-1ubuntu6\nzfs-kmod-2.1.5-1ubuntu6\n",
            )),
            Ok(CmdOutput::failed(1, "something else\n")),
        ]);
        let zfs = Zfs::new(r);
        assert_eq!(zfs.version().await.expect("fuse"), None);
        assert_eq!(
            zfs.version().await.expect("openzfs").as_deref(),
            Some("zfs-2.1.5-1ubuntu6")
        );
        assert!(zfs.version().await.is_err());
    }

    #[tokio::test]
    async fn locate_tries_pool_then_datasets() {
        let r = Scripted::new(vec![
            Ok(CmdOutput::failed(
                1,
                "cannot open 'zstore': dataset does not exist\n",
            )),
            Ok(CmdOutput::ok(
                "type\tfilesystem\nmountpoint\t/tank/zstore\n",
            )),
        ]);
        let root = crate::locate::locate(&Zfs::new(r.clone()), "/tank/zstore")
            .await
            .expect("found");
        assert_eq!(root.dataset, "tank/zstore");
        assert_eq!(
            r.asked(),
            [
                "zfs get -H -p -o property,value type,mountpoint -- zstore",
                "zfs get -H -p -o property,value type,mountpoint -- tank/zstore",
            ]
        );
        let r = Scripted::new(vec![Ok(CmdOutput::ok("type\tvolume\nmountpoint\t-\n"))]);
        let err = crate::locate::locate(&Zfs::new(r), "tank/vol")
            .await
            .expect_err("volume");
        assert!(err.to_string().contains("not a filesystem"), "{err}");
    }
}
