//! Shared helpers for the real-pool tests.
#![allow(dead_code)]

use std::sync::Arc;

use store_zfs::testing::{RecordingRunner, TestPool, require_zfs};
use store_zfs::{SystemRunner, ZfsOptions, ZfsStore};

/// A fresh pool, or `None` (after a loud message) when ZFS is unavailable and not required.
pub fn pool(test: &str) -> Option<TestPool> {
    if !require_zfs(test) {
        return None;
    }
    Some(TestPool::create("zt-z").expect("create test pool"))
}

/// Opens a store on the pool's root with a recording runner.
pub async fn open(pool: &TestPool) -> (ZfsStore, Arc<RecordingRunner>) {
    let rec = RecordingRunner::new(Arc::new(SystemRunner));
    let store = ZfsStore::open(
        pool.mountpoint().to_string_lossy(),
        ZfsOptions {
            runner: rec.clone(),
            ..ZfsOptions::default()
        },
    )
    .await
    .expect("open store");
    (store, rec)
}

/// The datasets of the pool that are neither the layout nor in `expected`.
pub fn leftovers(pool: &TestPool, expected: &[&str]) -> Vec<String> {
    let layout = ["", "/state", "/result", "/cache"];
    pool.datasets()
        .expect("list")
        .into_iter()
        .filter(|d| !layout.iter().any(|l| *d == format!("{}{l}", pool.name())))
        .filter(|d| {
            !expected
                .iter()
                .any(|e| *d == format!("{}/{e}", pool.name()))
        })
        .collect()
}

/// Reads a file to a string, panicking with the path on error.
pub fn read(path: impl AsRef<std::path::Path>) -> String {
    let p = path.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// An id.
pub fn id(s: &str) -> store_api::Id {
    store_api::Id::new(s).expect("id")
}

/// A cache name.
pub fn cname(s: &str) -> store_api::CacheName {
    store_api::CacheName::new(s).expect("cache name")
}
