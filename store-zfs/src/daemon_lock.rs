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
//! On OpenZFS the kernel serves concurrent commands, and the store does not take the lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use rustix::fs::FlockOperation;

use crate::runner::{Cmd, CmdOutput, RunError, Runner};

/// The lock file every zstore process on the machine locks around each zfs-fuse command.
pub const LOCK_PATH: &str = "/run/lock/zstore-zfs-fuse.lock";

/// Serialises waiters inside one process, so that at most one thread per process blocks in
/// `flock` (the others wait here without holding a thread).
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

    /// Waits for the machine-wide lock. A cancelled wait leaves nothing held: a `flock`
    /// that completes after its waiter is gone is released at once.
    pub async fn acquire() -> Self {
        let local = IN_PROCESS.lock().await;
        let file = tokio::task::spawn_blocking(|| lock_file(Path::new(LOCK_PATH)))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        Self {
            file: warn_unlocked(file).map(Arc::new),
            _local: Some(local),
        }
    }

    /// Waits for the machine-wide lock, blocking this thread (for synchronous test helpers;
    /// never call it on an async runtime's worker).
    pub fn acquire_blocking() -> Self {
        Self {
            file: warn_unlocked(lock_file(Path::new(LOCK_PATH))).map(Arc::new),
            _local: None,
        }
    }
}

fn warn_unlocked(file: io::Result<File>) -> Option<File> {
    match file {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                path = LOCK_PATH,
                error = %e,
                "cannot take the zfs-fuse daemon lock; other processes are not kept out"
            );
            None
        }
    }
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
        let lock = DaemonLock::acquire().await;
        let (inner, owned) = (Arc::clone(&self.inner), cmd.clone());
        let task = tokio::spawn(HELD.scope(lock.file.clone(), async move {
            let out = inner.run(&owned).await;
            drop(lock);
            out
        }));
        match task.await {
            Ok(out) => out,
            // The task is never aborted; a runner that panicked panics here as it would have.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    async fn mount_table(&self) -> io::Result<String> {
        self.inner.mount_table().await
    }
}

/// Opens (creating) `path` and takes an exclusive `flock` on it, waiting as long as needed.
fn lock_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
    Ok(file)
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
    /// it (`WOULDBLOCK` while someone else holds it).
    fn another_open_tries(path: &Path) -> impl Fn() -> rustix::io::Result<()> {
        let other = OpenOptions::new().write(true).open(path).expect("open");
        move || rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive)
    }

    #[test]
    fn the_file_lock_excludes_another_holder_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let first = lock_file(&path).expect("lock");
        let try_lock = another_open_tries(&path);
        assert_eq!(
            try_lock(),
            Err(rustix::io::Errno::WOULDBLOCK),
            "a second open file description must not get the lock"
        );
        drop(first);
        try_lock().expect("free after the holder is dropped");
    }

    /// The store's commands inherit the lock: when the process that took it lets go (here:
    /// closes its descriptor, as a killed process does) while the command still runs, the
    /// lock stays held until the command ends, so a store reopened at once cannot send the
    /// daemon a command beside it.
    #[tokio::test]
    async fn a_command_started_under_the_lock_holds_it_until_it_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let locked = Arc::new(lock_file(&path).expect("lock"));
        let mut child = HELD
            .scope(Some(Arc::clone(&locked)), async {
                crate::runner::system_command("sleep", &["2".to_owned()]).spawn()
            })
            .await
            .expect("spawning sleep");
        drop(locked);
        let try_lock = another_open_tries(&path);
        assert_eq!(
            try_lock(),
            Err(rustix::io::Errno::WOULDBLOCK),
            "the running command must keep the lock after its starter let go"
        );
        assert!(child.wait().await.expect("sleep").success());
        try_lock().expect("free once the command has ended");
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
