//! Where everything lives under the store's root.
//!
//! ```text
//! <root>/store-fake            marker: this directory is a fake store (and its layout version)
//! <root>/lock                  held (flock) while a FakeStore is open on the root
//! <root>/state/                the builder's state_dir; never touched by store operations
//! <root>/building/<id>/        the build directory of a running build
//! <root>/result/<id>/          what result(id) returns (a copy the builder may read)
//! <root>/master/<id>/          private master copy of a result: bases are cloned from here
//! <root>/caches/<escaped>/     one cache: `owner` file + `v<N>/` (latest released version)
//! <root>/cache-tmp/<n>/        a cache copy that is out (leased)
//! <root>/tmp/<n>/              something being made, not yet committed by a rename
//! <root>/trash/<n>/            something uncommitted by a rename, being removed
//! ```
//!
//! `building/`, `cache-tmp/`, `tmp/` and `trash/` hold nothing that is committed: opening the
//! store empties them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use store_api::{CacheName, Id, StoreError};

use crate::escape::escape_cache_name;

/// The name of the marker file in the root.
pub(crate) const MARKER_NAME: &str = "store-fake";

/// The directories that only ever hold uncommitted work, emptied on open.
pub(crate) const SCRATCH_DIRS: [&str; 4] = ["building", "cache-tmp", "tmp", "trash"];

/// Every directory the layout needs, created on open.
pub(crate) const ALL_DIRS: [&str; 8] = [
    "state",
    "building",
    "result",
    "master",
    "caches",
    "cache-tmp",
    "tmp",
    "trash",
];

/// Paths under one root, plus a counter for unique scratch names.
#[derive(Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    state: PathBuf,
    next_scratch: AtomicU64,
}

impl Layout {
    /// The layout under `root` (an absolute, canonical path).
    pub(crate) fn new(root: PathBuf) -> Self {
        let state = root.join("state");
        Self {
            root,
            state,
            next_scratch: AtomicU64::new(0),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.state
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub(crate) fn marker_file(&self) -> PathBuf {
        self.root.join(MARKER_NAME)
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub(crate) fn building(&self, id: &Id) -> PathBuf {
        self.root.join("building").join(id.as_str())
    }

    pub(crate) fn result(&self, id: &Id) -> PathBuf {
        self.root.join("result").join(id.as_str())
    }

    pub(crate) fn master(&self, id: &Id) -> PathBuf {
        self.root.join("master").join(id.as_str())
    }

    pub(crate) fn cache(&self, name: &CacheName) -> PathBuf {
        self.root.join("caches").join(escape_cache_name(name))
    }

    /// A fresh path in scratch directory `dir` (`tmp`, `trash` or `cache-tmp`). Unique within
    /// this open store; opening empties the scratch directories and numbers past whatever it
    /// could not remove ([`skip_scratch_past`](Self::skip_scratch_past)), so no earlier
    /// leftover can be in the way.
    pub(crate) fn scratch(&self, dir: &str) -> PathBuf {
        let n = self.next_scratch.fetch_add(1, Ordering::Relaxed);
        self.root.join(dir).join(n.to_string())
    }

    /// Makes every later [`scratch`](Self::scratch) name higher than `n`.
    pub(crate) fn skip_scratch_past(&self, n: u64) {
        self.next_scratch
            .fetch_max(n.saturating_add(1), Ordering::Relaxed);
    }
}

/// The directory of cache version `version` inside cache directory `cache_dir`.
pub(crate) fn version_dir(cache_dir: &Path, version: u64) -> PathBuf {
    cache_dir.join(format!("v{version}"))
}

/// The file recording a cache's owner inside its cache directory.
pub(crate) fn owner_file(cache_dir: &Path) -> PathBuf {
    cache_dir.join("owner")
}

/// A [`StoreError::Io`] builder for `map_err`.
pub(crate) fn io_err<'a>(
    action: &'a str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::io(action, path, source)
}
