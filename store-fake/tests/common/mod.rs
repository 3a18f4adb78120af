//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]

use std::path::Path;

use store_api::{CacheName, Id, User};

pub fn id(s: &str) -> Id {
    Id::new(s).expect("valid id")
}

pub fn cache_name(s: &str) -> CacheName {
    CacheName::new(s).expect("valid cache name")
}

pub fn user(uid: u32, gid: u32) -> User {
    User::new(uid, gid).expect("valid user")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Sorted names in `dir`.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Every path under `root`, relative, sorted (to check what a store left on disk).
pub fn tree(root: &Path) -> Vec<String> {
    let mut paths: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.expect("walk");
            e.path()
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    paths.sort();
    paths
}

/// The build function error used by the tests.
#[derive(Debug, PartialEq, Eq)]
pub struct Failed;
