//! The layout audit: whether the datasets under a store's root look like a cleanly closed
//! store (see the crate docs, *Layout*), one line per deviation. The conformance suite's
//! teardown runs it after every case; an operator can run it on a store no process is using
//! ([`check_layout`]) or on an open one with nothing in flight ([`ZfsStore::check`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use store_api::StoreError;

use crate::layout::{DELETED_PROPERTY, RESULT_SNAP, is_within};
use crate::mounts::{self, Mount};
use crate::open::GROUPS;
use crate::runner::Runner;
use crate::store::ZfsStore;
use crate::zfs_cli::Zfs;

/// Everything under `root` that a cleanly closed store would not have, one line each:
/// datasets left by builds or cache copies, snapshots the store does not make or should
/// have destroyed, deleted results nothing depends on, layout datasets missing, and mounts
/// that should not be there (a deleted result or a published cache generation still mounted,
/// a result mounted read-write), and files or directories in the root's own directory
/// besides its layout datasets' mountpoints. An empty list means the layout is clean.
///
/// Run it on a store that no process has open (or use [`ZfsStore::check`] on one with no
/// operation in flight): a build or a cache copy in progress is, by design, what a leftover
/// looks like. It only reads (`zfs list` once, the mount table and the root's directory);
/// `runner` runs the command (pass [`SystemRunner`](crate::SystemRunner), wrapped in
/// [`DaemonSerialized`](crate::daemon_lock::DaemonSerialized) on zfs-fuse).
///
/// # Errors
/// [`StoreError::Command`] if `zfs list` fails (for example, `root` does not exist), or
/// [`StoreError::Io`] if the mount table cannot be read.
pub async fn check_layout(root: &str, runner: Arc<dyn Runner>) -> Result<Vec<String>, StoreError> {
    let zfs = Zfs::new(runner);
    let (rows, mounts) = read(&zfs, root).await?;
    Ok(findings(root, &rows, &mounts))
}

impl ZfsStore {
    /// [`check_layout`] on this store's root, plus one line if the store's in-memory index
    /// of results differs from what the pool holds. Call it with no operation in flight
    /// (after [`wait_idle`](Self::wait_idle)); an empty list means the store is clean.
    ///
    /// # Errors
    /// As [`check_layout`].
    pub async fn check(&self) -> Result<Vec<String>, StoreError> {
        let root = self.dataset();
        let (rows, mounts) = read(&self.inner.zfs, root).await?;
        let mut found = findings(root, &rows, &mounts);
        let indexed: BTreeSet<String> = self.results().iter().map(|i| i.to_string()).collect();
        let on_pool = live_result_ids(root, &rows);
        if indexed != on_pool {
            found.push(format!(
                "the store's index lists results {indexed:?}, the pool holds {on_pool:?}"
            ));
        }
        Ok(found)
    }
}

async fn read(zfs: &Zfs, root: &str) -> Result<(Vec<Row>, BTreeMap<String, Mount>), StoreError> {
    let rows = zfs
        .list_tree(&[root], &["name", "origin", DELETED_PROPERTY])
        .await?
        .into_iter()
        .filter_map(Row::from_columns)
        .collect();
    let mounts = mounts::parse(&zfs.mount_table().await?)
        .into_iter()
        .collect();
    Ok((rows, mounts))
}

/// Every deviation [`check_layout`] reports: the pool's ([`audit`]) and the root
/// directory's ([`strays_in_root`]).
fn findings(root: &str, rows: &[Row], mounts: &BTreeMap<String, Mount>) -> Vec<String> {
    let mut found = audit(root, rows, mounts);
    found.extend(strays_in_root(root, mounts));
    found
}

/// Files and directories in the root dataset's own directory (where it is mounted) that the
/// layout does not have (only its groups' mountpoints belong there), one line each. The store never writes there; something that does
/// (a half-made build directory, a temporary file) leaks space into the root and is never
/// cleaned up, and no dataset listing shows it.
fn strays_in_root(root: &str, mounts: &BTreeMap<String, Mount>) -> Vec<String> {
    let Some(mount) = mounts.get(root) else {
        return Vec::new();
    };
    match root_strays(&mount.path) {
        Err(e) => vec![format!(
            "cannot read the store's root directory {}: {e}",
            mount.path.display()
        )],
        Ok(strays) => strays
            .iter()
            .map(|path| {
                format!(
                    "{} is in the store's root directory, which the layout does not have",
                    path.display()
                )
            })
            .collect(),
    }
}

/// The entries of the root's directory `dir` besides the layout's mountpoints, sorted.
pub(crate) fn root_strays(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut strays = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !GROUPS.iter().any(|n| entry.file_name() == *n) {
            strays.push(entry.path());
        }
    }
    strays.sort();
    Ok(strays)
}

/// One row of `zfs list -o name,origin,zstore:deleted`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    name: String,
    origin: Option<String>,
    deleted: bool,
}

impl Row {
    fn from_columns(cols: Vec<String>) -> Option<Self> {
        let mut cols = cols.into_iter();
        let name = cols.next().filter(|n| !n.is_empty())?;
        let origin = cols.next().filter(|o| o != "-" && !o.is_empty());
        let deleted = cols.next().as_deref() == Some("on");
        Some(Self {
            name,
            origin,
            deleted,
        })
    }

    #[cfg(test)]
    fn parse(line: &str) -> Option<Self> {
        Self::from_columns(line.split('\t').map(str::to_owned).collect())
    }
}

/// The ids of the live results on the pool: `<root>/result/<leaf>` with `@snap`, not marked
/// deleted; the id is the leaf up to `:`.
fn live_result_ids(root: &str, rows: &[Row]) -> BTreeSet<String> {
    let prefix = format!("{root}/result/");
    let snapped: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.name.strip_suffix(&format!("@{}", RESULT_SNAP)))
        .collect();
    rows.iter()
        .filter(|r| !r.deleted && snapped.contains(r.name.as_str()))
        .filter_map(|r| r.name.strip_prefix(&prefix))
        .filter(|leaf| !leaf.contains('/') && !leaf.contains('@'))
        .map(|leaf| leaf.split(':').next().unwrap_or(leaf).to_owned())
        .collect()
}

/// What a cleanly closed store under `root` must look like (crate docs of `store-zfs`,
/// "Layout"), checked against the pool listing and the mount table. Every deviation is one
/// line: datasets left by builds or copies, snapshots that should be gone, deleted results
/// nothing depends on, mounts that should not be there.
fn audit(root: &str, rows: &[Row], mounts: &BTreeMap<String, Mount>) -> Vec<String> {
    let mut found = Vec::new();
    let groups: Vec<String> = GROUPS.iter().map(|g| format!("{root}/{g}")).collect();
    let result_prefix = format!("{root}/result/");
    let cache_prefix = format!("{root}/cache/");
    let names: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let origins: BTreeSet<&str> = rows.iter().filter_map(|r| r.origin.as_deref()).collect();
    // Snapshots by the dataset holding them.
    let mut snaps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in rows {
        if let Some((ds, snap)) = r.name.split_once('@') {
            snaps.entry(ds).or_default().push(snap);
        }
    }
    // Cache containers and their generations.
    let mut containers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in &groups {
        if !names.contains(g.as_str()) {
            found.push(format!("layout dataset {g} is missing"));
        }
    }
    for r in rows.iter().filter(|r| !r.name.contains('@')) {
        let name = r.name.as_str();
        if name == root || groups.iter().any(|g| g == name) {
            continue;
        }
        if let Some(leaf) = name.strip_prefix(&result_prefix) {
            if leaf.contains('/') {
                found.push(format!("{name}: not a dataset the store makes"));
                continue;
            }
            let own = snaps.get(name).cloned().unwrap_or_default();
            if !own.contains(&RESULT_SNAP) {
                found.push(format!(
                    "{name}: a result dataset without @{} (an unfinished or failed build left behind)",
                    RESULT_SNAP
                ));
            }
            for s in own.iter().filter(|s| **s != RESULT_SNAP) {
                found.push(format!("{name}@{s}: a snapshot the store does not make"));
            }
            let snap = format!("{name}@{}", RESULT_SNAP);
            if r.deleted && !origins.contains(snap.as_str()) {
                found.push(format!(
                    "{name}: deleted, but nothing is cloned from it any more (it should be destroyed)"
                ));
            }
        } else if let Some(rest) = name.strip_prefix(&cache_prefix) {
            match rest.split_once('/') {
                None => {
                    containers.entry(name).or_default();
                }
                Some((comp, generation)) if !generation.contains('/') => {
                    let container = &name[..cache_prefix.len() + comp.len()];
                    containers.entry(container).or_default().push(name);
                }
                Some(_) => found.push(format!("{name}: not a dataset the store makes")),
            }
        } else {
            found.push(format!("{name}: not a dataset the store makes"));
        }
    }
    for (container, gens) in &containers {
        match gens.as_slice() {
            [] => found.push(format!(
                "{container}: a cache container without any version (should be destroyed)"
            )),
            [only] => {
                let n = only.rsplit('/').next().and_then(|g| g.strip_prefix('g'));
                let own = snaps.get(only).cloned().unwrap_or_default();
                let expected = n.map(|n| format!("v{n}"));
                if own.len() != 1 || expected.as_deref() != own.first().copied() {
                    found.push(format!(
                        "{only}: the published generation should hold exactly @{}, holds {own:?}",
                        expected.as_deref().unwrap_or("v<N>")
                    ));
                }
            }
            many => {
                // One is the published version; the others are copies (clones) or older
                // generations that should have been destroyed.
                let copies: Vec<&&str> = many
                    .iter()
                    .filter(|g| {
                        let n = g.rsplit('/').next().and_then(|g| g.strip_prefix('g'));
                        let own = snaps.get(**g).cloned().unwrap_or_default();
                        !n.is_some_and(|n| own.contains(&format!("v{n}").as_str()))
                    })
                    .collect();
                found.push(format!(
                    "{container}: {} generations left (temporary copies: {copies:?})",
                    many.len()
                ));
            }
        }
    }
    for (ds, m) in mounts {
        if !is_within(ds, root) {
            continue;
        }
        let row = rows.iter().find(|r| r.name == *ds);
        let Some(row) = row else {
            found.push(format!(
                "{ds} is still mounted at {} but no longer exists",
                m.path.display()
            ));
            continue;
        };
        if ds == root || groups.iter().any(|g| g == ds) {
            continue;
        }
        if ds.starts_with(&result_prefix) {
            if row.deleted {
                found.push(format!(
                    "{ds}: a deleted result still mounted at {}",
                    m.path.display()
                ));
            } else if !m.read_only {
                found.push(format!(
                    "{ds}: a result mounted read-write at {} after its build ended",
                    m.path.display()
                ));
            }
        } else if ds.starts_with(&cache_prefix) {
            found.push(format!(
                "{ds}: a cache generation still mounted at {} with no copy out",
                m.path.display()
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lines: &[&str]) -> Vec<Row> {
        lines.iter().filter_map(|l| Row::parse(l)).collect()
    }

    const LAYOUT: [&str; 4] = [
        "p/c\t-\t-",
        "p/c/state\t-\t-",
        "p/c/result\t-\t-",
        "p/c/cache\t-\t-",
    ];

    fn with_layout(extra: &[&'static str]) -> Vec<Row> {
        let mut v: Vec<&str> = LAYOUT.to_vec();
        v.extend_from_slice(extra);
        rows(&v)
    }

    #[test]
    fn a_clean_store_passes() {
        let r = with_layout(&[
            "p/c/result/a\t-\t-",
            "p/c/result/a@snap\t-\t-",
            "p/c/result/b\tp/c/result/a@snap\t-",
            "p/c/result/b@snap\t-\t-",
            "p/c/result/d\t-\ton",
            "p/c/result/d@snap\t-\t-",
            "p/c/result/e:1\tp/c/result/d@snap\t-",
            "p/c/result/e:1@snap\t-\t-",
            "p/c/cache/c-opam\t-\t-",
            "p/c/cache/c-opam/g4\t-\t-",
            "p/c/cache/c-opam/g4@v4\t-\t-",
        ]);
        let mut m = BTreeMap::new();
        m.insert(
            "p/c/result/a".to_owned(),
            Mount {
                path: "/p/c/result/a".into(),
                read_only: true,
                inert: true,
            },
        );
        m.insert(
            "p/c".to_owned(),
            Mount {
                path: "/p/c".into(),
                read_only: false,
                inert: false,
            },
        );
        assert_eq!(audit("p/c", &r, &m), Vec::<String>::new());
        assert_eq!(
            live_result_ids("p/c", &r),
            ["a", "b", "e"].map(String::from).into()
        );
    }

    #[test]
    fn leftovers_are_named() {
        let r = with_layout(&[
            "p/c/result/half\t-\t-",
            "p/c/result/gone\t-\ton",
            "p/c/result/gone@snap\t-\t-",
            "p/c/cache/c-x\t-\t-",
            "p/c/cache/c-x/g1\t-\t-",
            "p/c/cache/c-x/g1@v1\t-\t-",
            "p/c/cache/c-x/g2\tp/c/cache/c-x/g1@v1\t-",
            "p/c/cache/c-y\t-\t-",
            "p/c/cache/c-z\t-\t-",
            "p/c/cache/c-z/g3\t-\t-",
            "p/c/cache/c-z/g3@v3\t-\t-",
            "p/c/cache/c-z/g3@v2\t-\t-",
        ]);
        let mut m = BTreeMap::new();
        m.insert(
            "p/c/result/x".to_owned(),
            Mount {
                path: "/p/c/result/x".into(),
                read_only: true,
                inert: true,
            },
        );
        m.insert(
            "p/c/cache/c-z/g3".to_owned(),
            Mount {
                path: "/p/c/cache/c-z/g3".into(),
                read_only: false,
                inert: false,
            },
        );
        m.insert(
            "p/other/x".to_owned(),
            Mount {
                path: "/p/other/x".into(),
                read_only: false,
                inert: false,
            },
        );
        let found = audit("p/c", &r, &m).join("\n");
        for expected in [
            "p/c/result/half: a result dataset without @snap",
            "p/c/result/gone: deleted, but nothing is cloned",
            "p/c/cache/c-x: 2 generations left (temporary copies: [\"p/c/cache/c-x/g2\"])",
            "p/c/cache/c-y: a cache container without any version",
            "p/c/cache/c-z/g3: the published generation should hold exactly @v3",
            "p/c/result/x is still mounted",
            "p/c/cache/c-z/g3: a cache generation still mounted",
        ] {
            assert!(found.contains(expected), "{expected}\nin:\n{found}");
        }
        assert!(!found.contains("p/other"), "{found}");
        assert_eq!(found.lines().count(), 7, "{found}");
    }

    #[test]
    fn within_is_the_dataset_or_below() {
        assert!(is_within("p/c/x", "p/c") && is_within("p/c", "p/c") && !is_within("p/cc", "p/c"));
        assert!(!is_within("p/c@s", "p/c"));
    }
}
