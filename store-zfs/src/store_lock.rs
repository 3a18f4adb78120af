//! One open store per root: a second [`ZfsStore::open`](crate::ZfsStore::open) of a root that
//! is open (in another process, or in this one) fails promptly (within a quarter second) with
//! [`StoreError::Locked`] naming the holder, before it changes anything. Without this, the
//! second open's repair destroyed the first store's running builds and cache copies out.
//!
//! The lock is an exclusive `flock` on a file of its own per root, in the lock directory
//! ([`lock_dir`]). It is held by the store's shared state, so it is released when the last
//! handle (store, lease or background task) is gone, or when the process dies: a crashed
//! builder can open the store again at once.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use store_api::{LockHolder, StoreError};

use crate::locate::Root;
use crate::lock_file::{LOCK_DIR, open_private, try_lock};

/// Where the per-root lock files live: root's `/run/zstore` (mode 0700) for root; for
/// another user (a `zfs allow` delegation), `$XDG_RUNTIME_DIR/zstore`, else
/// `/tmp/zstore-<uid>`, which must be that user's and writable by no one else. Two users'
/// processes on one root are therefore not kept apart; run a store as one user.
pub fn lock_dir() -> PathBuf {
    let euid = rustix::process::geteuid();
    if euid.is_root() {
        return PathBuf::from(LOCK_DIR);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("zstore"),
        _ => PathBuf::from(format!("/tmp/zstore-{}", euid.as_raw())),
    }
}

/// FNV-1a, 64 bits: a stable name for a root (the same in every build and process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The lock file of `root`: named by its dataset and mountpoint (a dataset name is unique on
/// a machine; the mountpoint tells apart test doubles that reuse names).
pub fn lock_path(root: &Root) -> PathBuf {
    let key = format!("{}\n{}", root.dataset, root.mountpoint.display());
    lock_dir().join(format!("store-{:016x}.lock", fnv1a(key.as_bytes())))
}

/// How long open waits for a root's lock before it reports the store as open: a handle
/// dropped a moment ago may still hold the lock through a process this one is starting (a
/// fork keeps a copy of every descriptor until it execs).
const LOCK_GRACE: Duration = Duration::from_millis(250);

/// Takes the open lock of `root`, or fails (within [`LOCK_GRACE`]) naming who holds it.
pub async fn take(root: &Root) -> Result<File, StoreError> {
    let path = lock_path(root);
    let mut file = open_private(&path)
        .map_err(|e| StoreError::io("opening the store's lock file", &path, e))?;
    let lock = |file: &File| {
        try_lock(file).map_err(|e| StoreError::io("locking the store's lock file", &path, e))
    };
    let started = Instant::now();
    let mut taken = lock(&file)?;
    while !taken && started.elapsed() < LOCK_GRACE {
        tokio::time::sleep(Duration::from_millis(5)).await;
        taken = lock(&file)?;
    }
    if !taken {
        return Err(StoreError::Locked {
            what: format!(
                "the ZFS store {} (it is open; one process may open a store at a time)",
                root.dataset
            ),
            holder: LockHolder::of(&file),
            path,
        });
    }
    // For people who look: which store this is, and who has it open. Best effort.
    let note = format!(
        "dataset {}\nmountpoint {}\npid {}\n",
        root.dataset,
        root.mountpoint.display(),
        std::process::id()
    );
    if let Err(e) = file
        .set_len(0)
        .and_then(|()| file.write_all(note.as_bytes()))
    {
        tracing::debug!(path = %path.display(), error = %e, "cannot note the holder in the lock file");
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_tell_roots_apart() {
        let root = |ds: &str, mp: &str| Root {
            dataset: ds.into(),
            mountpoint: mp.into(),
        };
        let a = lock_path(&root("tank/zstore", "/tank/zstore"));
        assert_eq!(a, lock_path(&root("tank/zstore", "/tank/zstore")));
        assert_ne!(a, lock_path(&root("tank/other", "/tank/other")));
        assert_ne!(a, lock_path(&root("tank/zstore", "/mnt/zstore")));
        // FNV-1a's published test value, so the name never changes between builds.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
