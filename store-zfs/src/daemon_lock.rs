//! One `zfs`/`zpool` command at a time on a zfs-fuse daemon, machine-wide.
//!
//! zfs-fuse's daemon cannot serve two commands that start at once. Its command listener
//! hands each new connection to a fresh thread through a single static slot, which the next
//! connection can overwrite before the thread has read it (`start_ioctl_thread` in zfs-fuse's
//! `cmd_listener.c`): one command is then never answered, and two threads answer the other.
//! It also runs mount requests on the listener thread itself, so a mount that waits for an
//! unmount in progress stops every later command. Seen here:
//! - a `zfs create` (which mounts) and a `zfs unmount` on two different pools, each waiting
//!   forever, after which every file access under any zfs-fuse mount blocked until the daemon
//!   was killed (two crash sweeps running in parallel hit it within a minute, twice; four
//!   concurrent builds in one store after ~140 results);
//! - a `zfs snapshot` killed by SIGABRT after "internal error: Connection reset by peer" while
//!   ten cache holders released at once.
//!
//! The daemon serves every pool and every process on the machine, so the lock must too: an
//! exclusive `flock(2)` on [`LOCK_PATH`] around each command, taken by the store when its
//! engine is zfs-fuse ([`DaemonSerialized`]) and by the project's test and xtask code. A
//! process that dies releases its lock with its file descriptors, except that a command
//! started under the lock inherits the lock's descriptor ([`DaemonLock::stdin`]) and holds the
//! lock until the command itself ends: a builder killed while its `zfs destroy` runs leaves
//! that command running, and a store reopened at once must not send the daemon a second
//! command beside it.
//! Programs outside this project that use the same daemon do not take the lock; run them at
//! other times.
//!
//! Only root can create or hold the lock: its file lives in root's `/run/zstore` (mode 0700,
//! checked at every open, like the file itself: no symlink followed, root's, mode 0600), so
//! an unprivileged user cannot stop the machine's store commands by holding it. A command
//! waits at most [`LOCK_WAIT`] for another process's command, then fails with
//! [`LockError::TimedOut`] naming the lock and its holder (a `StoreError::Locked` from the
//! store). A process that is not root runs its commands unlocked against other processes
//! (logged): it can neither use root's lock nor hold it up.
//!
//! On OpenZFS the kernel serves concurrent commands, and the store does not take the lock,
//! except for the one command that tells the engines apart (`zfs version`, run at open before
//! the engine is known).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use store_api::LockHolder;

use crate::lock_file::{open_private, try_lock};
use crate::runner::{Cmd, CmdOutput, RunError, Runner};

/// The lock file every zstore process on the machine locks around each zfs-fuse command. It
/// lives in `/run/zstore` (root's, mode 0700), so only root can
/// create or hold it; an unprivileged user cannot stop the store's commands.
pub const LOCK_PATH: &str = "/run/zstore/zfs-fuse.lock";

/// How long a command waits for another process to release the lock before failing with
/// [`LockError::TimedOut`]. A holder keeps it for one command only (the longest, a `destroy`
/// on a pool of thousands of datasets, take about a minute on zfs-fuse).
pub const LOCK_WAIT: Duration = Duration::from_secs(300);

/// Why the daemon lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process held the lock for longer than the time limit.
    #[error("the zfs-fuse daemon lock {} is held by {holder}; gave up after {waited:?}", path.display())]
    TimedOut {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
        /// Who holds it.
        holder: LockHolder,
    },
    /// The lock file or its directory is not safe to use (a symlink, another user's, a
    /// directory others may write), or could not be opened.
    #[error("cannot use the zfs-fuse daemon lock {}: {source}", path.display())]
    Unusable {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Serialises waiters inside one process, so that at most one task per process polls the
/// file lock (the others wait here).
static IN_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `program` (a name or a path) talks to the daemon: `zfs` and `zpool`. Every
/// [`Cmd`] does; callers that build their own commands (test helpers, xtask) ask this.
pub fn talks_to_daemon(program: &str) -> bool {
    let name = Path::new(program).file_name().and_then(|n| n.to_str());
    matches!(name.unwrap_or(program), "zfs" | "zpool")
}

tokio::task_local! {
    /// Set in the task that runs a locked command, so that a [`DaemonSerialized`] nested in
    /// another does not wait for the lock its caller holds, and so that the command started
    /// there can inherit the lock (the locked file, if it could be opened).
    static HELD: Option<Arc<File>>;
}

/// Whether the current task runs a command under a [`DaemonSerialized`]'s lock (so taking
/// the lock again would wait for itself).
pub fn held() -> bool {
    HELD.try_with(|_| ()).is_ok()
}

/// [`DaemonLock::stdin`] of the lock the current task holds; `None` outside a locked run.
pub(crate) fn inherited_stdin() -> Option<Stdio> {
    HELD.try_with(|file| stdin_holding(file.as_deref())).ok()
}

/// A duplicate of the locked `file` as a command's stdin; closed stdin without one.
fn stdin_holding(file: Option<&File>) -> Stdio {
    match file.map(File::try_clone) {
        Some(Ok(dup)) => dup.into(),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot hand the zfs-fuse daemon lock to the command");
            Stdio::null()
        }
        None => Stdio::null(),
    }
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct DaemonLock {
    // The flock is released when the file is closed; `None` if the lock file could not be
    // opened (then only this process is serialised, and a warning was logged).
    file: Option<Arc<File>>,
    _local: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl DaemonLock {
    /// The standard input for a command run under this lock: the locked file itself, so that
    /// the lock (which belongs to the open file, not to this process) stays held until that
    /// command and whatever it leaves behind have ended, even if this process dies first.
    /// Closed stdin if the lock file could not be opened. `zfs` and `zpool` read no input but
    /// `zfs receive`'s, which nothing here runs.
    pub fn stdin(&self) -> Stdio {
        stdin_holding(self.file.as_deref())
    }

    /// Waits for the machine-wide lock, at most [`LOCK_WAIT`] for another process's
    /// command. A cancelled wait leaves nothing held.
    ///
    /// # Errors
    /// [`LockError`] when another process holds the lock past the limit, or the lock file is
    /// not safe to use. A process that is not root, and so may not use root's lock
    /// directory, is only serialised with itself (logged once per command).
    pub async fn acquire() -> Result<Self, LockError> {
        Self::acquire_at(Path::new(LOCK_PATH), LOCK_WAIT).await
    }

    async fn acquire_at(path: &Path, limit: Duration) -> Result<Self, LockError> {
        let local = IN_PROCESS.lock().await;
        let file = open_lock(path)?;
        if let Some(file) = &file {
            let started = Instant::now();
            let mut pause = Duration::from_millis(1);
            while !locked(file, path, started, limit)? {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
        Ok(Self {
            file: file.map(Arc::new),
            _local: Some(local),
        })
    }

    /// [`acquire`](Self::acquire), blocking this thread (for synchronous test helpers; never
    /// call it on an async runtime's worker).
    ///
    /// # Errors
    /// As for [`acquire`](Self::acquire).
    pub fn acquire_blocking() -> Result<Self, LockError> {
        let path = Path::new(LOCK_PATH);
        let file = open_lock(path)?;
        if let Some(file) = &file {
            let started = Instant::now();
            let mut pause = Duration::from_millis(1);
            while !locked(file, path, started, LOCK_WAIT)? {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
        Ok(Self {
            file: file.map(Arc::new),
            _local: None,
        })
    }
}

/// The longest pause between two tries of the file lock (commands take tens of ms).
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Opens the lock file; `None` for a process that is not root and may not (it then cannot
/// hold up root's commands either).
fn open_lock(path: &Path) -> Result<Option<File>, LockError> {
    match open_private(path) {
        Ok(file) => Ok(Some(file)),
        Err(e)
            if e.kind() == io::ErrorKind::PermissionDenied
                && !rustix::process::geteuid().is_root() =>
        {
            tracing::warn!(path = %path.display(), error = %e, "not root: the zfs-fuse daemon lock is not taken; only this process's commands are serialised");
            Ok(None)
        }
        Err(source) => Err(LockError::Unusable {
            path: path.to_owned(),
            source,
        }),
    }
}

/// One try of the lock: `Ok(true)` once held, `Ok(false)` to try again, an error past the
/// time limit.
fn locked(file: &File, path: &Path, started: Instant, limit: Duration) -> Result<bool, LockError> {
    let unusable = |source| LockError::Unusable {
        path: path.to_owned(),
        source,
    };
    if try_lock(file).map_err(unusable)? {
        return Ok(true);
    }
    if started.elapsed() < limit {
        return Ok(false);
    }
    Err(LockError::TimedOut {
        path: path.to_owned(),
        waited: started.elapsed(),
        holder: LockHolder::of(file),
    })
}

/// A runner that runs every command under the [`DaemonLock`]. What the store uses on
/// zfs-fuse; tests that run their own commands beside a store use it too.
#[derive(Clone)]
pub struct DaemonSerialized {
    inner: Arc<dyn Runner>,
}

impl std::fmt::Debug for DaemonSerialized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonSerialized { .. }")
    }
}

impl DaemonSerialized {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Runner>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl Runner for DaemonSerialized {
    /// The locked run is a task of its own that keeps the lock until the command has ended,
    /// even if this future is dropped: a command still running unlocked could meet another
    /// mount.
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        // Inside a locked run (a wrapper within a wrapper) the lock is already held here.
        if held() {
            return self.inner.run(cmd).await;
        }
        let lock = DaemonLock::acquire().await?;
        let (inner, owned) = (Arc::clone(&self.inner), cmd.clone());
        let task = tokio::spawn(HELD.scope(lock.file.clone(), async move {
            let out = inner.run(&owned).await;
            drop(lock);
            out
        }));
        match task.await {
            Ok(out) => out,
            // A runner that panicked panics here as it would have.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The store never aborts it; the runtime cancels it when it shuts down.
            Err(_) => Err(RunError::Cancelled),
        }
    }

    async fn mount_table(&self) -> io::Result<String> {
        self.inner.mount_table().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zfs_and_zpool_command_locks() {
        for cmd in [Cmd::zfs(["list", "-H"]), Cmd::zpool(["list", "-H"])] {
            assert!(talks_to_daemon(cmd.program.name()), "{cmd}");
        }
        assert!(talks_to_daemon("/sbin/zfs") && talks_to_daemon("zpool"));
        assert!(!talks_to_daemon("zfs-fuse") && !talks_to_daemon("cargo"));
    }

    /// A recording runner behind two wrappers: the inner one must not wait for the lock the
    /// outer one holds.
    #[tokio::test]
    async fn nested_wrappers_do_not_deadlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = crate::testing::FakeZfs::new(dir.path(), "p");
        let rec = crate::testing::RecordingRunner::new(Arc::new(fake));
        let twice = DaemonSerialized::new(Arc::new(DaemonSerialized::new(rec.clone())));
        let cmd = Cmd::zfs(["create", "--", "p/a"]);
        let run = twice.run(&cmd);
        tokio::time::timeout(std::time::Duration::from_secs(20), run)
            .await
            .expect("nested wrappers deadlocked")
            .expect("ran");
        assert_eq!(rec.take().len(), 1);
    }

    /// A second open of the lock file at `path`, and a non-blocking try of the lock through
    /// it (`false` while someone else holds it).
    fn another_open_tries(path: &Path) -> impl Fn() -> bool {
        let other = open_private(path).expect("open");
        move || try_lock(&other).expect("try")
    }

    /// A held lock, in a directory of the test's own.
    fn held_lock(path: &Path) -> File {
        let file = open_private(path).expect("open");
        assert!(try_lock(&file).expect("lock"));
        file
    }

    #[test]
    fn the_file_lock_excludes_another_holder_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let first = held_lock(&path);
        let try_lock = another_open_tries(&path);
        assert!(
            !try_lock(),
            "a second open file description must not get the lock"
        );
        drop(first);
        assert!(try_lock(), "free after the holder is dropped");
    }

    /// Issue 12, item 8: the lock lives where only root can create or hold it (root's
    /// /run/zstore, mode 0700, no symlink followed; see `lock_file`'s tests for what is
    /// refused), and waiting for a holder that never lets go ends in a typed error naming
    /// the lock and its holder instead of waiting forever.
    #[tokio::test]
    async fn the_daemon_lock_is_root_only_and_a_held_lock_ends_in_a_typed_error() {
        assert_eq!(
            Path::new(LOCK_PATH).parent(),
            Some(Path::new(crate::lock_file::LOCK_DIR))
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let _holder = held_lock(&path);
        let waited = std::time::Instant::now();
        let err = DaemonLock::acquire_at(&path, Duration::from_millis(200))
            .await
            .expect_err("held by another open file");
        assert!(waited.elapsed() >= Duration::from_millis(200));
        let LockError::TimedOut {
            path: named,
            holder,
            ..
        } = &err
        else {
            panic!("expected TimedOut, got {err:?}");
        };
        assert_eq!(named, &path);
        assert_eq!(holder.pid, Some(std::process::id()), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        if rustix::process::geteuid().is_root() {
            let lock = DaemonLock::acquire().await.expect("the real lock");
            let meta = std::fs::symlink_metadata(crate::lock_file::LOCK_DIR).expect("stat");
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                (meta.uid(), meta.mode() & 0o022),
                (0, 0),
                "root's, not shared"
            );
            drop(lock);
        }
    }

    /// A command whose task the runtime cancels (it shut down while the command ran) comes
    /// back as an error, not as a panic from `JoinError::into_panic`.
    #[test]
    fn a_command_cancelled_by_runtime_shutdown_is_an_error_not_a_panic() {
        struct Forever;
        #[async_trait]
        impl Runner for Forever {
            async fn run(&self, _: &Cmd) -> Result<CmdOutput, RunError> {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(CmdOutput::ok(""))
            }
            async fn mount_table(&self) -> io::Result<String> {
                Ok(String::new())
            }
        }
        let serialized = DaemonSerialized::new(Arc::new(Forever));
        let cmd = Cmd::zfs(["list"]);
        let mut run = Box::pin(serialized.run(&cmd));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Started on the first runtime: the locked task runs there.
        let pending = first.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), &mut run)
                .await
                .is_err()
        });
        assert!(pending, "the command must still be running");
        drop(first); // shutdown cancels the locked task
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let out = second.block_on(run);
        assert!(matches!(out, Err(RunError::Cancelled)), "{out:?}");
    }

    /// The store's commands inherit the lock: when the process that took it lets go (here:
    /// closes its descriptor, as a killed process does) while the command still runs, the
    /// lock stays held until the command ends, so a store reopened at once cannot send the
    /// daemon a command beside it.
    #[tokio::test]
    async fn a_command_started_under_the_lock_holds_it_until_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let locked = Arc::new(held_lock(&path));
        let mut child = HELD
            .scope(Some(Arc::clone(&locked)), async {
                crate::runner::system_command("sleep", &["2".to_owned()]).spawn()
            })
            .await
            .expect("spawning sleep");
        drop(locked);
        let try_lock = another_open_tries(&path);
        assert!(
            !try_lock(),
            "the running command must keep the lock after its starter let go"
        );
        assert!(child.wait().await.expect("sleep").success());
        assert!(try_lock(), "free once the command has ended");
    }

    #[tokio::test]
    async fn outside_a_locked_run_commands_get_no_input() {
        assert!(!held());
        assert!(inherited_stdin().is_none());
        let out = crate::runner::system_command("cat", &[])
            .output()
            .await
            .expect("cat");
        assert!(out.status.success() && out.stdout.is_empty());
    }
}
