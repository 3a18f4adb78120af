//! One mount-changing command at a time on a zfs-fuse daemon, machine-wide.
//!
//! zfs-fuse's daemon deadlocks when a filesystem is mounted while another is unmounted: seen
//! here as a `zfs create` (which mounts) and a `zfs unmount` on two different pools, each
//! waiting forever, after which every file access under any zfs-fuse mount blocks until the
//! daemon is killed. Two crash sweeps on two pools in one test binary reached it within a
//! minute every time; four concurrent builds in one store reached it after ~140 results. One
//! such command at a time never did.
//!
//! The daemon serves every pool and every process on the machine, so the lock must too: an
//! exclusive `flock(2)` on [`LOCK_PATH`], taken around each command that [`needs_lock`], by
//! the store (when its engine is zfs-fuse) and by the project's test and xtask code. A
//! process that dies releases its lock with its file descriptors. Programs outside this
//! project that use the same daemon do not take it; run them at other times.
//!
//! On OpenZFS the kernel handles concurrent mounts, and the store does not take the lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rustix::fs::FlockOperation;

use crate::runner::{Cmd, CmdOutput, RunError, Runner};

/// The lock file every zstore process on the machine locks around mount-changing zfs-fuse
/// commands.
pub const LOCK_PATH: &str = "/run/lock/zstore-zfs-fuse-mounts.lock";

/// Serialises waiters inside one process, so that at most one thread per process blocks in
/// `flock` (the others wait here without holding a thread).
static IN_PROCESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `cmd` can mount or unmount a filesystem in the daemon (directly, or through
/// libzfs's remount of dependents): every `zfs` subcommand but `list`, `get`, `snapshot` and
/// `version`, and `zpool create`, `destroy`, `import`, `export`.
pub fn needs_lock(cmd: &Cmd) -> bool {
    needs_lock_argv(cmd.program.name(), cmd.subcommand())
}

/// [`needs_lock`] for a program name and its first argument, for callers that build their
/// own commands (test helpers, xtask).
pub fn needs_lock_argv(program: &str, subcommand: Option<&str>) -> bool {
    let name = Path::new(program).file_name().and_then(|n| n.to_str());
    match (name.unwrap_or(program), subcommand) {
        ("zfs", Some(sub)) => !matches!(sub, "list" | "get" | "snapshot" | "version"),
        ("zpool", Some(sub)) => matches!(sub, "create" | "destroy" | "import" | "export"),
        _ => false,
    }
}

tokio::task_local! {
    /// Set in the task that runs a locked command, so that a [`MountSerialized`] nested in
    /// another does not wait for the lock its caller holds.
    static HELD: bool;
}

/// Whether the current task runs a command under a [`MountSerialized`]'s lock (so taking
/// the lock again would wait for itself).
pub fn held() -> bool {
    HELD.try_with(|held| *held).unwrap_or(false)
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct MountLock {
    // The flock is released when the file is closed; `None` if the lock file could not be
    // opened (then only this process is serialised, and a warning was logged).
    _file: Option<File>,
    _local: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl MountLock {
    /// Waits for the machine-wide lock. A cancelled wait leaves nothing held: a `flock`
    /// that completes after its waiter is gone is released at once.
    pub async fn acquire() -> Self {
        let local = IN_PROCESS.lock().await;
        let file = tokio::task::spawn_blocking(|| lock_file(Path::new(LOCK_PATH)))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        Self {
            _file: warn_unlocked(file),
            _local: Some(local),
        }
    }

    /// Waits for the machine-wide lock, blocking this thread (for synchronous test helpers;
    /// never call it on an async runtime's worker).
    pub fn acquire_blocking() -> Self {
        Self {
            _file: warn_unlocked(lock_file(Path::new(LOCK_PATH))),
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
                "cannot lock the zfs-fuse mount lock; other processes are not kept out"
            );
            None
        }
    }
}

/// A runner that runs every command that [`needs_lock`] under the [`MountLock`], and the
/// others at once. What the store uses on zfs-fuse; tests that run their own mount-changing
/// commands beside a store use it too.
#[derive(Clone)]
pub struct MountSerialized {
    inner: Arc<dyn Runner>,
}

impl std::fmt::Debug for MountSerialized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MountSerialized { .. }")
    }
}

impl MountSerialized {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Runner>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl Runner for MountSerialized {
    /// The locked run is a task of its own that keeps the lock until the command has ended,
    /// even if this future is dropped: a command still running unlocked could meet another
    /// mount.
    async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
        // Inside a locked run (a wrapper within a wrapper) the lock is already held here.
        if !needs_lock(cmd) || held() {
            return self.inner.run(cmd).await;
        }
        let lock = MountLock::acquire().await;
        let (inner, owned) = (Arc::clone(&self.inner), cmd.clone());
        let task = tokio::spawn(HELD.scope(true, async move {
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
    fn only_mount_changing_commands_lock() {
        for (argv, locks) in [
            (vec!["create", "--", "p/a"], true),
            (vec!["clone", "--", "p/a@s", "p/b"], true),
            (vec!["destroy", "-r", "--", "p/a"], true),
            (vec!["unmount", "--", "p/a"], true),
            (vec!["mount", "--", "p/a"], true),
            (vec!["rename", "--", "p/a", "p/b"], true),
            (vec!["promote", "p/b"], true),
            (vec!["set", "canmount=noauto", "p/a"], true),
            (vec!["list", "-H", "--", "p"], false),
            (vec!["get", "-H", "name", "--", "p"], false),
            (vec!["snapshot", "--", "p/a@s"], false),
            (vec!["version"], false),
        ] {
            assert_eq!(needs_lock(&Cmd::zfs(argv.clone())), locks, "{argv:?}");
        }
        assert!(needs_lock(&Cmd::zpool(["create", "p", "/f"])));
        assert!(needs_lock(&Cmd::zpool(["destroy", "p"])));
        assert!(!needs_lock(&Cmd::zpool(["list", "-H"])));
        assert!(!needs_lock(&Cmd::zpool(["wait", "-t", "free", "p"])));
        assert!(!needs_lock_argv("cargo", Some("create")));
        assert!(needs_lock_argv("/sbin/zfs", Some("destroy")));
    }

    /// A recording runner behind two wrappers: the inner one must not wait for the lock the
    /// outer one holds.
    #[tokio::test]
    async fn nested_wrappers_do_not_deadlock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = crate::testing::FakeZfs::new(dir.path(), "p");
        let rec = crate::testing::RecordingRunner::new(Arc::new(fake));
        let twice = MountSerialized::new(Arc::new(MountSerialized::new(rec.clone())));
        let cmd = Cmd::zfs(["create", "--", "p/a"]);
        let run = twice.run(&cmd);
        tokio::time::timeout(std::time::Duration::from_secs(20), run)
            .await
            .expect("nested wrappers deadlocked")
            .expect("ran");
        assert_eq!(rec.take().len(), 1);
    }

    #[test]
    fn the_file_lock_excludes_another_holder_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l");
        let first = lock_file(&path).expect("lock");
        let other = OpenOptions::new().write(true).open(&path).expect("open");
        let try_lock = || rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive);
        assert_eq!(
            try_lock(),
            Err(rustix::io::Errno::WOULDBLOCK),
            "a second open file description must not get the lock"
        );
        drop(first);
        try_lock().expect("free after the holder is dropped");
    }
}
