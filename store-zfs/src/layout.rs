//! Dataset and path names of the store layout (documented in the crate docs).

use std::path::{Path, PathBuf};

use store_api::Id;

/// The longest store root dataset name accepted, in bytes, so that the longest derived name
/// (`<root>/cache/<128-byte component>/g<u64>@v<u64>`) stays within ZFS's 255 bytes.
pub const MAX_ROOT_LEN: usize = 255 - "/cache/".len() - crate::names::MAX_COMPONENT - 44;

/// The snapshot that makes a result dataset a result.
pub const RESULT_SNAP: &str = "snap";

/// The user property marking a deleted result that is kept only because clones depend on it.
pub const DELETED_PROPERTY: &str = "zstore:deleted";

/// The user property that proves the store made a dataset: set when the dataset is created
/// or cloned, to the dataset's name below the store root (`result/<leaf>`, `cache/<component>`,
/// `cache/<component>/g<N>`). A dataset someone else made under the store's groups lacks it,
/// and a child inherits its parent's value, which is not the child's own name, so the proof
/// never passes down. Open destroys only leftovers that carry it.
pub const MADE_PROPERTY: &str = "zstore:made";

/// Where the store lives: its root dataset and the mountpoints of its groups.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The root dataset (`tank` or `tank/zstore`).
    pub root: String,
    /// Its mountpoint.
    pub root_path: PathBuf,
    /// Mountpoint of `<root>/state`.
    pub state_path: PathBuf,
    /// Mountpoint of `<root>/result`.
    pub result_path: PathBuf,
    /// Mountpoint of `<root>/cache`.
    pub cache_path: PathBuf,
}

impl Layout {
    /// `<root>/<group>`.
    pub fn group(&self, group: &str) -> String {
        format!("{}/{group}", self.root)
    }

    /// `<root>/result/<leaf>`.
    pub fn result_ds(&self, leaf: &str) -> String {
        format!("{}/result/{leaf}", self.root)
    }

    /// `<root>/result/<leaf>@snap`.
    pub fn result_snap(&self, leaf: &str) -> String {
        format!("{}/result/{leaf}@{RESULT_SNAP}", self.root)
    }

    /// Where result dataset `leaf` is mounted.
    pub fn result_dir(&self, leaf: &str) -> PathBuf {
        self.result_path.join(leaf)
    }

    /// `<root>/cache/<component>`.
    pub fn container(&self, component: &str) -> String {
        format!("{}/cache/{component}", self.root)
    }

    /// `<root>/cache/<component>/g<gen>`.
    pub fn generation(&self, component: &str, generation: u64) -> String {
        format!("{}/cache/{component}/g{generation}", self.root)
    }

    /// `<root>/cache/<component>/g<holder>@v<version>`.
    pub fn version_snap(&self, component: &str, holder: u64, version: u64) -> String {
        format!("{}/cache/{component}/g{holder}@v{version}", self.root)
    }

    /// Where generation `gen` of a cache is mounted.
    pub fn generation_dir(&self, component: &str, generation: u64) -> PathBuf {
        self.cache_path
            .join(component)
            .join(format!("g{generation}"))
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_path
    }

    /// The `-o` argument that marks `ds` (a dataset below the root) as made by the store.
    pub fn made_prop(&self, ds: &str) -> String {
        format!("{MADE_PROPERTY}={}", self.below_root(ds))
    }

    /// Whether `value`, the [`MADE_PROPERTY`] of `ds`, proves that the store made `ds`.
    pub fn is_made(&self, ds: &str, value: &str) -> bool {
        value == self.below_root(ds)
    }

    fn below_root<'a>(&self, ds: &'a str) -> &'a str {
        ds.strip_prefix(self.root.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(ds)
    }
}

/// Whether dataset `d` is `ds` itself or a dataset below it (`ds/...`; not `dsx`, and not a
/// snapshot).
pub fn is_within(d: &str, ds: &str) -> bool {
    d.strip_prefix(ds)
        .is_some_and(|r| r.is_empty() || r.starts_with('/'))
}

/// The result dataset leaf for the `n`-th dataset of `id`: `<id>` for 0, else `<id>:<n>`.
/// (`:` never occurs in an id, so the id is always recoverable.)
pub fn result_leaf(id: &Id, n: u64) -> String {
    if n == 0 {
        id.as_str().to_owned()
    } else {
        format!("{id}:{n}")
    }
}

/// The id of a result dataset leaf, if it is one the store names.
pub fn parse_result_leaf(leaf: &str) -> Option<Id> {
    let (id, n) = match leaf.split_once(':') {
        Some((id, n)) => (id, Some(n)),
        None => (leaf, None),
    };
    if let Some(n) = n {
        if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse::<u64>().ok()?;
    }
    Id::new(id).ok()
}

/// `g<N>` → `N`.
pub fn parse_generation(s: &str) -> Option<u64> {
    let n = s.strip_prefix('g')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

/// `v<N>` → `N`.
pub fn parse_version(s: &str) -> Option<u64> {
    parse_generation(&format!("g{}", s.strip_prefix('v')?))
}

/// The longest names the store can derive from a cache container, for name checks in tests.
#[cfg(test)]
pub fn cache_names_for_check(root: &str, component: &str) -> Vec<String> {
    let max = u64::MAX;
    vec![
        format!("{root}/cache/{component}"),
        format!("{root}/cache/{component}/g{max}"),
        format!("{root}/cache/{component}/g{max}@v{max}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_round_trip() {
        let id = Id::new("abc").expect("id");
        assert_eq!(result_leaf(&id, 0), "abc");
        assert_eq!(result_leaf(&id, 3), "abc:3");
        assert_eq!(parse_result_leaf("abc"), Some(id.clone()));
        assert_eq!(parse_result_leaf("abc:3"), Some(id));
        assert_eq!(parse_result_leaf("abc:03"), None);
        assert_eq!(parse_result_leaf("abc:"), None);
        assert_eq!(parse_result_leaf("-x"), None);
        assert_eq!(parse_generation("g12"), Some(12));
        assert_eq!(parse_generation("g012"), None);
        assert_eq!(parse_version("v3"), Some(3));
    }

    #[test]
    fn longest_result_name_fits() {
        let root = "p".repeat(MAX_ROOT_LEN);
        let id = Id::new("a".repeat(Id::MAX_LEN)).expect("id");
        let name = format!("{root}/result/{}@{RESULT_SNAP}", result_leaf(&id, u64::MAX));
        assert!(crate::names::zfs_name_ok(&name), "{}", name.len());
    }
}
