//! Opening a root: create the layout, take the lock, reclaim what an interrupted process
//! left behind, and rebuild the in-memory index from the directories.
//!
//! Commit points, and so what survives a crash:
//! - a result exists iff `master/<id>` exists (the last rename of a commit, the first of a
//!   delete). A `result/<id>` without a master is an interrupted commit or delete, and is
//!   removed; a master without `result/<id>` gets its readable copy made again.
//! - a cache exists iff `caches/<escaped>` exists (made complete in `tmp/`, then renamed in);
//!   its latest version is its highest `v<N>`. A lower one is an old version whose removal
//!   was interrupted right after a publish, and is removed.
//! - everything in the scratch directories is uncommitted, and is removed.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use rustix::fs::FlockOperation;
use store_api::{Id, LockHolder, StoreError, User};

use crate::defects::CrashDefect;
use crate::escape::unescape_cache_name;
use crate::layout::{ALL_DIRS, Layout, MARKER_NAME, SCRATCH_DIRS, io_err, owner_file, version_dir};
use crate::state::{CacheRecord, ResultEntry, State};
use crate::steps::Fs;

/// An open root.
pub(crate) struct Opened {
    pub(crate) layout: Layout,
    pub(crate) lock: File,
    pub(crate) state: State,
}

/// Opens the store under `root`, creating it on first use.
pub(crate) fn open_root(
    root: &Path,
    disk: &Fs,
    defect: Option<CrashDefect>,
) -> Result<Opened, StoreError> {
    disk.create_dir_all(root)
        .map_err(io_err("creating the store root", root))?;
    let root = std::fs::canonicalize(root).map_err(io_err("resolving the store root", root))?;
    let layout = Layout::new(root);
    check_marker(&layout, disk)?;
    let lock = lock_root(&layout, disk)?;
    for dir in ALL_DIRS {
        let path = layout.dir(dir);
        disk.create_dir_all(&path)
            .map_err(io_err("creating", &path))?;
    }
    let mut state = State::default();
    if defect != Some(CrashDefect::OpenKeepsScratch) {
        for dir in SCRATCH_DIRS {
            empty_dir(&layout.dir(dir), disk, &mut state.pending_removal)?;
        }
    }
    load_results(&layout, disk, &mut state)?;
    load_caches(&layout, disk, &mut state)?;
    // New scratch names must not meet what could not be removed (numbered from 0 again).
    for dir in SCRATCH_DIRS {
        for entry in read_dir(&layout.dir(dir))? {
            let (path, _) = entry?;
            if let Some(n) = file_name(&path).and_then(|n| n.parse::<u64>().ok()) {
                layout.skip_scratch_past(n);
            }
        }
    }
    tracing::debug!(
        root = %layout.root().display(),
        results = state.results.len(),
        caches = state.caches.len(),
        "opened fake store"
    );
    Ok(Opened {
        layout,
        lock,
        state,
    })
}

/// What the marker file holds: this is a fake store root, in this layout.
const MARKER: &str = "zstore store-fake layout 1\n";

/// Refuses a root that is neither empty nor marked as a fake store, so that opening the wrong
/// directory never empties its `tmp/` or `trash/`; marks an empty one.
fn check_marker(layout: &Layout, disk: &Fs) -> Result<(), StoreError> {
    let path = layout.marker_file();
    match fs::read_to_string(&path) {
        Ok(text) if text == MARKER => Ok(()),
        Ok(_) => Err(StoreError::backend(format!(
            "{} is not a store-fake layout this version knows",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let root = layout.root();
            let mut entries = fs::read_dir(root).map_err(io_err("listing", root))?;
            if entries.next().is_some() {
                return Err(StoreError::backend(format!(
                    "{} is not empty and is not a fake store (no {} file); \
                     refusing to use it as a store root",
                    root.display(),
                    MARKER_NAME
                )));
            }
            disk.write(&path, MARKER).map_err(io_err("writing", &path))
        }
        Err(e) => Err(StoreError::io("reading", &path, e)),
    }
}

/// How long opening waits for the root's lock before it reports the store as open.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

fn lock_root(layout: &Layout, disk: &Fs) -> Result<File, StoreError> {
    let path = layout.lock_file();
    let file = disk
        .open_lock(&path)
        .map_err(io_err("opening the lock file", &path))?;
    // A handle dropped a moment ago may still hold the lock through a process this one is
    // starting (a fork keeps a copy of every descriptor until it execs): a short grace.
    let started = std::time::Instant::now();
    let mut result = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive);
    while result == Err(rustix::io::Errno::WOULDBLOCK) && started.elapsed() < LOCK_GRACE {
        std::thread::sleep(std::time::Duration::from_millis(5));
        result = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive);
    }
    match result {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Locked {
            what: format!(
                "the fake store at {} (it is open; drop the other FakeStore first)",
                layout.root().display()
            ),
            holder: LockHolder::of(&file),
            path,
        }),
        Err(e) => Err(StoreError::io("locking", &path, e.into())),
    }
}

/// Removes everything inside `dir`. What cannot be removed (an immutable file, a filesystem
/// still mounted inside a build directory) is logged and added to `pending`, retried by
/// `complete_deletes` and at the next open: one such leftover must not stop the store from
/// opening.
fn empty_dir(dir: &Path, disk: &Fs, pending: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    for entry in read_dir(dir)? {
        let (path, _) = entry?;
        match disk.remove(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "reclaimed leftover"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover yet; retried later");
                pending.push(path);
            }
        }
    }
    Ok(())
}

fn load_results(layout: &Layout, disk: &Fs, state: &mut State) -> Result<(), StoreError> {
    let masters = layout.dir("master");
    for entry in read_dir(&masters)? {
        let (path, is_dir) = entry?;
        let id = file_name(&path)
            .and_then(|name| Id::new(name).ok())
            .filter(|_| is_dir)
            .ok_or_else(|| foreign(&path))?;
        let exposed = layout.result(&id);
        if store_api::check_top_dir(&exposed).is_err() {
            // The commit renamed the build into place but the readable copy is gone (or a
            // person removed it): make it again from the master.
            disk.remove(&exposed)
                .map_err(io_err("removing", &exposed))?;
            let tmp = layout.scratch("tmp");
            disk.copy_tree(&path, &tmp)?;
            disk.rename(&tmp, &exposed)
                .map_err(io_err("restoring", &exposed))?;
        }
        state.results.insert(id, ResultEntry::new());
    }
    let exposed_dir = layout.dir("result");
    for entry in read_dir(&exposed_dir)? {
        let (path, _) = entry?;
        let committed = file_name(&path)
            .and_then(|name| Id::new(name).ok())
            .is_some_and(|id| state.results.contains_key(&id));
        if !committed {
            // An interrupted commit or delete.
            if let Err(e) = disk.remove(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an uncommitted result yet; retried later");
                state.pending_removal.push(path);
            }
        }
    }
    Ok(())
}

fn load_caches(layout: &Layout, disk: &Fs, state: &mut State) -> Result<(), StoreError> {
    let caches = layout.dir("caches");
    for entry in read_dir(&caches)? {
        let (path, is_dir) = entry?;
        let name = file_name(&path)
            .and_then(unescape_cache_name)
            .filter(|_| is_dir)
            .ok_or_else(|| foreign(&path))?;
        let owner_path = owner_file(&path);
        let owner: User = fs::read_to_string(&owner_path)
            .map_err(io_err("reading the owner of a cache", &owner_path))?
            .trim()
            .parse()
            .map_err(|e| StoreError::Backend {
                message: format!("bad owner file {}", owner_path.display()),
                source: Some(Box::new(e)),
            })?;
        let mut versions = Vec::new();
        for version_entry in read_dir(&path)? {
            let (version_path, _) = version_entry?;
            if version_path == owner_path {
                continue;
            }
            let version = file_name(&version_path)
                .and_then(|n| n.strip_prefix('v'))
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|_| version_path.is_dir())
                .ok_or_else(|| foreign(&version_path))?;
            versions.push(version);
        }
        versions.sort_unstable();
        let Some(&latest) = versions.last() else {
            return Err(StoreError::backend(format!(
                "cache {name:?} at {} has no version directory",
                path.display()
            )));
        };
        for &old in &versions[..versions.len() - 1] {
            // An old version whose removal was interrupted right after a publish.
            let old_path = version_dir(&path, old);
            if let Err(e) = disk.remove(&old_path) {
                tracing::warn!(path = %old_path.display(), error = %e, "cannot remove an old cache version yet; retried later");
                state.pending_removal.push(old_path);
            }
        }
        let incarnation = state.caches.len() as u64;
        state.caches.insert(
            name,
            CacheRecord {
                owner,
                version: latest,
                incarnation,
                live: Arc::new(AtomicUsize::new(0)),
            },
        );
    }
    Ok(())
}

type DirEntries = Vec<Result<(PathBuf, bool), StoreError>>;

/// The entries of `dir` as (path, is a directory, not following symlinks).
fn read_dir(dir: &Path) -> Result<DirEntries, StoreError> {
    let entries = fs::read_dir(dir).map_err(io_err("listing", dir))?;
    Ok(entries
        .map(|entry| {
            let entry = entry.map_err(io_err("listing", dir))?;
            let is_dir = entry
                .file_type()
                .map_err(|e: io::Error| StoreError::io("reading the type of", entry.path(), e))?
                .is_dir();
            Ok((entry.path(), is_dir))
        })
        .collect())
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

fn foreign(path: &Path) -> StoreError {
    StoreError::backend(format!(
        "{} was not made by the fake store; move it out of the store root",
        path.display()
    ))
}
