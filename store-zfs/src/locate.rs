//! Finding the store's root dataset from what the user wrote: `tank`, `/tank`, `/mnt/tank`,
//! `tank/zstore` or `/tank/zstore`.

use std::path::{Path, PathBuf};

use store_api::StoreError;

use crate::names::zfs_name_ok;
use crate::zfs_cli::Zfs;

/// The root dataset and its mountpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// The dataset.
    pub dataset: String,
    /// Where it is mounted (its `mountpoint` property).
    pub mountpoint: PathBuf,
}

/// The datasets `location` may name, in the order they are tried.
///
/// - No leading `/`: a dataset name (`tank` means the pool `tank`, `tank/zstore` a dataset in
///   it).
/// - An absolute path: first the pool named by the last component (`/mnt/tank` → `tank`, the
///   rule OBuilder uses), then the datasets named by longer suffixes (`/tank/zstore` →
///   `zstore`, then `tank/zstore`). The one whose mountpoint is the path wins.
pub fn candidates(location: &str) -> Vec<String> {
    let trimmed = location.trim_end_matches('/');
    match trimmed.strip_prefix('/') {
        None => vec![trimmed.to_owned()],
        Some(rel) => {
            let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
            (1..=parts.len())
                .map(|n| parts[parts.len() - n..].join("/"))
                .collect()
        }
    }
}

/// Resolves `location` to the root dataset, checking that it exists, is a ZFS filesystem and
/// has a mountpoint (and, for a path, that the path is that mountpoint).
pub async fn locate(zfs: &Zfs, location: &str) -> Result<Root, StoreError> {
    let is_path = location.starts_with('/');
    let cands = candidates(location);
    if cands.iter().all(String::is_empty) {
        return Err(StoreError::backend(format!(
            "{location:?} names no ZFS pool or dataset (expected e.g. \"tank\", \"/tank\" or \"tank/zstore\")"
        )));
    }
    let mut tried = Vec::new();
    for cand in &cands {
        if !zfs_name_ok(cand) || cand.contains('@') {
            tried.push(format!("{cand:?} (not a valid ZFS name)"));
            continue;
        }
        let Some(props) = zfs.get(cand, &["type", "mountpoint"]).await? else {
            tried.push(format!("{cand} (does not exist)"));
            continue;
        };
        let prop = |name: &str| {
            props
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        if prop("type") != "filesystem" {
            return Err(StoreError::backend(format!(
                "{cand} is a ZFS {}, not a filesystem",
                prop("type")
            )));
        }
        let mountpoint = prop("mountpoint");
        if !mountpoint.starts_with('/') {
            return Err(StoreError::backend(format!(
                "ZFS dataset {cand} has mountpoint {mountpoint:?}; the store needs a mounted path"
            )));
        }
        let mountpoint = PathBuf::from(mountpoint);
        if is_path && mountpoint != Path::new(location.trim_end_matches('/')) {
            tried.push(format!("{cand} (mounted at {})", mountpoint.display()));
            continue;
        }
        return Ok(Root {
            dataset: cand.clone(),
            mountpoint,
        });
    }
    Err(StoreError::backend(if is_path {
        format!(
            "no ZFS pool or dataset is mounted at {location} (tried: {})",
            tried.join(", ")
        )
    } else {
        format!(
            "ZFS pool or dataset {location:?} not found (tried: {})",
            tried.join(", ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_order() {
        assert_eq!(candidates("tank"), ["tank"]);
        assert_eq!(candidates("tank/zstore"), ["tank/zstore"]);
        assert_eq!(candidates("/tank"), ["tank"]);
        assert_eq!(candidates("/tank/"), ["tank"]);
        assert_eq!(candidates("/mnt/tank"), ["tank", "mnt/tank"]);
        assert_eq!(candidates("/tank/zstore"), ["zstore", "tank/zstore"]);
    }
}
