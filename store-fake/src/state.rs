//! The in-memory index of an open store: what is built, building, and cached.
//!
//! It mirrors the directories under the root (rebuilt from them on open) and is the
//! authority while the store is open. It sits behind one `std::sync::Mutex` that is only
//! held for map look-ups and updates, never across an `.await` nor around a tree copy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use store_api::{CacheName, Id, User};

/// Everything the open store knows.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Committed results.
    pub(crate) results: HashMap<Id, Arc<ResultEntry>>,
    /// Ids being built right now.
    pub(crate) building: HashSet<Id>,
    /// Existing caches, by real name.
    pub(crate) caches: BTreeMap<CacheName, CacheRecord>,
    /// One async lock per cache name ever used, serialising that cache's operations.
    pub(crate) cache_locks: HashMap<CacheName, Arc<tokio::sync::Mutex<()>>>,
    /// Uncommitted trees whose removal failed; retried by `complete_deletes`.
    pub(crate) pending_removal: Vec<PathBuf>,
}

/// A committed result.
#[derive(Debug)]
pub(crate) struct ResultEntry {
    /// `true` until the result is deleted. Builds cloning the master hold a read guard, and
    /// `delete` takes the write guard before it moves the master away, so a clone never
    /// reads a half-removed master.
    pub(crate) alive: tokio::sync::RwLock<bool>,
}

impl ResultEntry {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            alive: tokio::sync::RwLock::new(true),
        })
    }
}

/// One existing cache.
#[derive(Clone, Debug)]
pub(crate) struct CacheRecord {
    /// The owner asked for when the cache was created.
    pub(crate) owner: User,
    /// The latest released version: 0 when created, +1 per publish.
    pub(crate) version: u64,
    /// Tells this cache apart from an earlier or later cache of the same name (after
    /// `delete_cache`), so that a copy of a deleted cache is never published into a new one.
    pub(crate) incarnation: u64,
    /// Copies out (leased and neither released nor dropped).
    pub(crate) live: Arc<AtomicUsize>,
}
