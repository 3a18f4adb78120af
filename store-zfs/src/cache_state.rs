//! The in-memory state of one cache: its container, its published version and the copies out.

use std::collections::HashMap;

use store_api::CacheName;

/// A copy handed out and not yet released or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOut {
    /// The version it was cloned from (always set; `None` only in a state read from a pool
    /// the store did not write).
    pub base: Option<u64>,
}

/// What the store knows about one cache. Changed only under [`CacheEntry::st`]; commands run
/// under [`CacheEntry::op`].
#[derive(Debug, Default)]
pub struct CacheState {
    /// The container component (`c-...` or `h-...-n`), if the container exists.
    pub component: Option<String>,
    /// An `h-...-n` component picked for a container being created right now.
    pub reserved: Option<String>,
    /// The published version: generation `N` whose own snapshot `@vN` is the latest.
    pub current: Option<u64>,
    /// The next generation number to hand out.
    pub next_gen: u64,
    /// Copies out, by generation.
    pub copies: HashMap<u64, CopyOut>,
    /// Dropped copies whose datasets are still to be destroyed.
    pub doomed: Vec<(u64, CopyOut)>,
    /// Versions that datasets the store did not make (left alone at open) depend on: their
    /// snapshots are never destroyed.
    pub pinned: std::collections::BTreeSet<u64>,
}

impl CacheState {
    /// Whether any copy (out or awaiting destruction), or a dataset the store leaves alone,
    /// was taken from version `v`.
    pub fn version_in_use(&self, v: u64) -> bool {
        self.copies.values().any(|c| c.base == Some(v))
            || self.doomed.iter().any(|(_, c)| c.base == Some(v))
            || self.pinned.contains(&v)
    }
}

/// One cache: its name, the lock that serialises its operations, and its state.
#[derive(Debug)]
pub struct CacheEntry {
    /// The cache name.
    pub name: CacheName,
    /// Held for the whole of each operation on this cache (acquire, release, discard,
    /// delete), so they run one at a time. In an `Arc` so that an acquisition can hand its
    /// guard out with the lease (see `cache::acquire`).
    pub op: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The state; short critical sections only (also taken from `Drop`).
    pub st: std::sync::Mutex<CacheState>,
}

impl CacheEntry {
    /// An entry for a cache with the given state.
    pub fn new(name: CacheName, st: CacheState) -> Self {
        Self {
            name,
            op: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            st: std::sync::Mutex::new(st),
        }
    }
}
