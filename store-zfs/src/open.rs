//! Opening a store: detect the engine, find the root, create the layout, rebuild the index
//! from one `zfs list`, and reclaim whatever an interrupted process left behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use store_api::{CacheName, Id, StoreError};

use crate::cache_state::{CacheEntry, CacheState, CopyOut};
use crate::cli::Zfs;
use crate::engine::Engine;
use crate::layout::{
    DELETED_PROPERTY, Layout, MAX_ROOT_LEN, RESULT_SNAP, parse_generation, parse_result_leaf,
    parse_version,
};
use crate::locate::locate;
use crate::mounts::{self, Mount};
use crate::names::{NAME_PROPERTY, unescape};
use crate::results::reap;
use crate::runner::{Cmd, Runner};
use crate::state::{Inner, Limits, MountState, ResultDs, ResultIndex, Shared, Status, lock};

/// The groups below the root, created on first use.
pub const GROUPS: [&str; 3] = ["state", "result", "cache"];

/// The default cap on read-only result mounts on zfs-fuse (its daemon serves 1000 mounts in
/// all, shared with every other pool and user).
pub const ZFS_FUSE_MOUNT_CAP: usize = 256;

/// Opens (creating the layout if needed) the store at `location`.
pub async fn open(
    location: &str,
    runner: Arc<dyn Runner>,
    limits: Limits,
) -> Result<Shared, StoreError> {
    // Detecting the engine talks to the daemon too, before it is known whether one must be
    // served a command at a time: take the daemon lock for it whatever the engine.
    let probe = Zfs::new(Arc::clone(&runner)).serialize_commands(true);
    let engine = match probe.version().await? {
        Some(version) => Engine::OpenZfs { version },
        None => Engine::ZfsFuse,
    };
    let zfs = Zfs::new(runner).serialize_commands(engine.is_zfs_fuse());
    let root = locate(&zfs, location).await?;
    // Before anything changes: a second opener must not repair away the first one's work.
    let open_lock = crate::store_lock::take(&root)?;
    if root.dataset.len() > MAX_ROOT_LEN {
        return Err(StoreError::backend(format!(
            "the store root {} is {} bytes long; at most {MAX_ROOT_LEN} leave room for the \
             store's names within ZFS's 255-byte limit",
            root.dataset,
            root.dataset.len()
        )));
    }
    tracing::info!(root = %root.dataset, %engine, "opening ZFS store");
    let layout = make_layout(&zfs, &root.dataset, root.mountpoint).await?;
    let max_mounted_results = limits
        .max_mounted_results
        .unwrap_or(if engine.is_zfs_fuse() {
            ZFS_FUSE_MOUNT_CAP
        } else {
            usize::MAX
        });
    let rows = zfs
        .list_tree(
            &[&layout.group("result"), &layout.group("cache")],
            &["name", "origin", DELETED_PROPERTY, NAME_PROPERTY],
        )
        .await?;
    let mounted = mounts::parse(&zfs.mount_table().await?);
    let inner = Arc::new(Inner {
        zfs,
        layout,
        engine,
        max_mounted_results,
        results: Mutex::new(ResultIndex::default()),
        caches: Mutex::new(HashMap::new()),
        tasks: Default::default(),
        _open_lock: open_lock,
    });
    reclaim_results(&inner, &rows, &mounted).await?;
    reclaim_caches(&inner, &rows, &mounted).await?;
    Ok(inner)
}

/// Makes sure the groups exist and are mounted; returns the layout with their mountpoints.
async fn make_layout(
    zfs: &Zfs,
    root: &str,
    root_path: std::path::PathBuf,
) -> Result<Layout, StoreError> {
    let list = |zfs: &Zfs| {
        let zfs = zfs.clone();
        async move {
            let out = zfs
                .run(&Cmd::zfs([
                    "list",
                    "-H",
                    "-d",
                    "1",
                    "-t",
                    "filesystem",
                    "-o",
                    "name,mountpoint",
                    "--",
                    root,
                ]))
                .await?;
            Ok::<_, StoreError>(
                out.lines()
                    .filter_map(|l| l.split_once('\t'))
                    .map(|(n, m)| (n.to_owned(), m.to_owned()))
                    .collect::<HashMap<_, _>>(),
            )
        }
    };
    let mut children = list(zfs).await?;
    let mut created = false;
    for g in GROUPS {
        let ds = format!("{root}/{g}");
        if !children.contains_key(&ds) {
            zfs.create(&ds, &[]).await?;
            created = true;
        }
    }
    if created {
        children = list(zfs).await?;
    }
    let mounted = mounts::parse(&zfs.mount_table().await?);
    if !mounted.contains_key(root) {
        if let Err(e) = zfs.mount(root, false).await {
            tracing::warn!(%root, error = %e, "store root not mounted");
        }
    }
    let mut paths = Vec::new();
    for g in GROUPS {
        let ds = format!("{root}/{g}");
        let mp = children.get(&ds).cloned().unwrap_or_default();
        if !mp.starts_with('/') {
            return Err(StoreError::backend(format!(
                "{ds} has mountpoint {mp:?}; the store needs it mounted"
            )));
        }
        if !mounted.contains_key(&ds) {
            zfs.mount(&ds, false).await?;
        }
        paths.push(std::path::PathBuf::from(mp));
    }
    let [state_path, result_path, cache_path]: [std::path::PathBuf; 3] = paths
        .try_into()
        .map_err(|_| StoreError::backend("internal: group count"))?;
    Ok(Layout {
        root: root.to_owned(),
        root_path,
        state_path,
        result_path,
        cache_path,
    })
}

fn col(row: &[String], i: usize) -> &str {
    row.get(i).map(String::as_str).unwrap_or("-")
}

/// Rebuilds the result index; destroys snapshot-less datasets (interrupted builds and
/// deletes) and deleted results nothing depends on; unmounts read-write result mounts.
async fn reclaim_results(
    inner: &Shared,
    rows: &[Vec<String>],
    mounted: &HashMap<String, Mount>,
) -> Result<(), StoreError> {
    let prefix = format!("{}/", inner.layout.group("result"));
    let mut fs: BTreeMap<String, (Id, Option<String>, bool)> = BTreeMap::new();
    let mut snapped = HashSet::new();
    for row in rows {
        let Some(rest) = col(row, 0).strip_prefix(&prefix) else {
            continue;
        };
        if let Some((leaf, snap)) = rest.split_once('@') {
            if snap == RESULT_SNAP {
                snapped.insert(leaf.to_owned());
            }
            continue;
        }
        let Some(id) = parse_result_leaf(rest).filter(|_| !rest.contains('/')) else {
            tracing::warn!(dataset = col(row, 0), "not a store dataset; left alone");
            continue;
        };
        let origin = col(row, 1)
            .strip_prefix(&prefix)
            .and_then(|o| o.strip_suffix(&format!("@{RESULT_SNAP}")))
            .map(str::to_owned);
        fs.insert(rest.to_owned(), (id, origin, col(row, 2) == "on"));
    }
    let mut to_unmount = Vec::new();
    {
        let mut idx = lock(&inner.results);
        for (leaf, (id, origin, deleted)) in &fs {
            let status = if !snapped.contains(leaf) {
                Status::Doomed
            } else if *deleted {
                Status::Hidden
            } else {
                Status::Live
            };
            let origin = origin.clone().filter(|o| fs.contains_key(o));
            idx.datasets
                .insert(leaf.clone(), ResultDs::new(origin, status));
            let mount = match mounted.get(&inner.layout.result_ds(leaf)) {
                Some(m) if m.read_only && status == Status::Live => MountState::ReadOnly,
                Some(_) => {
                    to_unmount.push(leaf.clone());
                    MountState::Writable
                }
                None => MountState::Unmounted,
            };
            idx.set_mount(leaf, mount);
            if status == Status::Live {
                // Two live datasets for one id cannot arise from the store's own steps;
                // if someone made one, the newest wins and the other is hidden.
                if let Some(prev) = idx.by_id.insert(id.clone(), leaf.clone()) {
                    tracing::warn!(%id, %prev, %leaf, "two live results for one id; hiding the older");
                    if let Some(d) = idx.datasets.get_mut(&prev) {
                        d.status = Status::Hidden;
                    }
                }
            }
        }
        let origins: Vec<String> = idx
            .datasets
            .values()
            .filter_map(|d| d.origin.clone())
            .collect();
        for o in origins {
            if let Some(d) = idx.datasets.get_mut(&o) {
                d.dependents += 1;
            }
        }
    }
    for leaf in to_unmount {
        let ds = inner.layout.result_ds(&leaf);
        match inner.zfs.unmount(&ds).await {
            Ok(()) => lock(&inner.results).set_mount(&leaf, MountState::Unmounted),
            Err(e) => tracing::warn!(%ds, error = %e, "cannot unmount a read-write result"),
        }
    }
    let doomed: Vec<String> = {
        let mut idx = lock(&inner.results);
        let hidden: Vec<String> = idx
            .datasets
            .iter()
            .filter(|(_, d)| d.status == Status::Hidden)
            .map(|(l, _)| l.clone())
            .collect();
        for l in hidden {
            idx.doom_if_unused(&l);
        }
        idx.datasets
            .iter()
            .filter(|(_, d)| d.status == Status::Doomed)
            .map(|(l, _)| l.clone())
            .collect()
    };
    for leaf in doomed {
        if let Err(e) = reap(inner, leaf.clone()).await {
            tracing::warn!(%leaf, error = %e, "leftover result dataset not destroyed");
        }
    }
    Ok(())
}

#[derive(Default)]
struct Gen {
    origin: String,
    own_snap: bool,
    /// Snapshots other than its own `@v<N>` (moved here by a promote).
    other_snaps: usize,
}

#[derive(Default)]
struct Container {
    name_prop: String,
    gens: BTreeMap<u64, Gen>,
}

/// Rebuilds the cache table. For each cache the published version is the highest
/// generation that has its own `@v<N>` snapshot; copies that were out (no own snapshot) are
/// destroyed, the published generation is promoted until it depends on nothing, and every
/// other generation and old version snapshot is destroyed. A container with no version is
/// destroyed (that cache never got a release).
async fn reclaim_caches(
    inner: &Shared,
    rows: &[Vec<String>],
    mounted: &HashMap<String, Mount>,
) -> Result<(), StoreError> {
    let prefix = format!("{}/", inner.layout.group("cache"));
    let mut containers: BTreeMap<String, Container> = BTreeMap::new();
    for row in rows {
        let Some(rest) = col(row, 0).strip_prefix(&prefix) else {
            continue;
        };
        let (path, snap) = match rest.split_once('@') {
            Some((p, s)) => (p, Some(s)),
            None => (rest, None),
        };
        let mut parts = path.split('/');
        let (Some(comp), g, None) = (parts.next(), parts.next(), parts.next()) else {
            tracing::warn!(dataset = rest, "not a store dataset; left alone");
            continue;
        };
        let c = containers.entry(comp.to_owned()).or_default();
        match (g.map(parse_generation), snap) {
            (None, None) => c.name_prop = col(row, 3).to_owned(),
            (Some(Some(n)), None) => {
                c.gens.entry(n).or_default().origin = col(row, 1).to_owned();
            }
            (Some(Some(n)), Some(s)) => {
                let g = c.gens.entry(n).or_default();
                if parse_version(s) == Some(n) {
                    g.own_snap = true;
                } else {
                    g.other_snaps += 1;
                }
            }
            _ => tracing::warn!(dataset = rest, "not a store dataset; left alone"),
        }
    }
    for (comp, c) in containers {
        let escaped = if comp.starts_with("h-") {
            c.name_prop.as_str()
        } else {
            comp.as_str()
        };
        let Some(name) = unescape(escaped).and_then(|n| CacheName::new(n).ok()) else {
            tracing::warn!(container = %comp, "cache container with an unknown name; left alone");
            continue;
        };
        if lock(&inner.caches).contains_key(&name) {
            tracing::warn!(container = %comp, %name, "second container for one cache; left alone");
            continue;
        }
        let container = inner.layout.container(&comp);
        let sub = format!("{container}/");
        for ds in mounted.keys().filter(|d| d.starts_with(&sub)) {
            // A copy that a crashed builder's sandbox still uses cannot be unmounted: it is
            // left (and destroyed once free, below), never a reason to fail the open.
            if let Err(e) = inner.zfs.unmount(ds).await {
                tracing::warn!(%ds, error = %e, "cannot unmount a cache dataset yet");
            }
        }
        let current = c
            .gens
            .iter()
            .rev()
            .find(|(_, g)| g.own_snap)
            .map(|(n, _)| *n);
        let next_gen = c.gens.keys().next_back().map_or(1, |n| n + 1);
        let Some(current) = current else {
            if let Err(e) = inner.zfs.destroy(&container, Some("-r")).await {
                tracing::warn!(%container, error = %e, "cannot destroy a cache that never got a version yet; retried at the next open");
            }
            continue;
        };
        let cur = &c.gens[&current];
        let mut left = Vec::new();
        if c.gens.len() > 1 || cur.origin != "-" || cur.other_snaps > 0 {
            left = repair_cache(inner, &comp, current, &c).await?;
        }
        lock(&inner.caches).insert(
            name.clone(),
            Arc::new(CacheEntry::new(
                name,
                CacheState {
                    component: Some(comp),
                    current: Some(current),
                    next_gen,
                    // Copies still in use: destroyed by the next operation on the cache that
                    // finds them free (or the next open).
                    doomed: left,
                    ..CacheState::default()
                },
            )),
        );
    }
    Ok(())
}

/// Brings one cache to a single generation `current` owning only `@v<current>`, except for
/// copies that cannot be destroyed now (a process still uses them): those are returned, as
/// dropped copies to destroy later, and the version snapshots they were cloned from are kept.
async fn repair_cache(
    inner: &Shared,
    comp: &str,
    current: u64,
    c: &Container,
) -> Result<Vec<(u64, CopyOut)>, StoreError> {
    let gen_ds = |n| inner.layout.generation(comp, n);
    let mut left = Vec::new();
    for (n, g) in &c.gens {
        if !g.own_snap {
            if let Err(e) = inner.zfs.destroy(&gen_ds(*n), None).await {
                tracing::warn!(ds = %gen_ds(*n), error = %e, "cannot destroy a cache copy left by a crash yet; retried later");
                let base = g
                    .origin
                    .rsplit_once('@')
                    .and_then(|(_, v)| parse_version(v));
                left.push((*n, CopyOut { base }));
            }
        }
    }
    let pinned: HashSet<u64> = left.iter().filter_map(|(_, c)| c.base).collect();
    let container = inner.layout.container(comp);
    let cur = gen_ds(current);
    for _ in 0..=c.gens.len() {
        let origin = inner
            .zfs
            .get(&cur, &["origin"])
            .await?
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| v)
            .unwrap_or_default();
        if !origin.starts_with(&format!("{container}/")) {
            break;
        }
        inner.zfs.promote(&cur).await?;
    }
    for (n, g) in &c.gens {
        if g.own_snap && *n != current {
            inner.zfs.destroy(&gen_ds(*n), None).await?;
        }
    }
    let keep = format!("{cur}@v{current}");
    for row in inner.zfs.list_tree(&[&cur], &["name"]).await? {
        let name = col(&row, 0);
        let version = name.rsplit_once('@').and_then(|(_, v)| parse_version(v));
        if name.contains('@') && name != keep && !version.is_some_and(|v| pinned.contains(&v)) {
            inner.zfs.destroy(name, None).await?;
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::runner::{CmdOutput, RunError};
    use crate::testing::FakeZfs;
    use crate::{ZfsOptions, ZfsStore};

    /// Records every command that ran without the zfs-fuse daemon lock.
    struct LockChecker {
        inner: FakeZfs,
        unlocked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Runner for LockChecker {
        async fn run(&self, cmd: &Cmd) -> Result<CmdOutput, RunError> {
            if !crate::daemon_lock::held() {
                lock(&self.unlocked).push(cmd.to_string());
            }
            self.inner.run(cmd).await
        }

        async fn mount_table(&self) -> std::io::Result<String> {
            self.inner.mount_table().await
        }
    }

    /// Issue 12, item 5: the first command of an open (`zfs version`, which connects to the
    /// daemon) ran outside the lock, on the path a restarted builder takes first.
    #[tokio::test]
    async fn zfs_version_at_open_runs_under_the_daemon_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checker = Arc::new(LockChecker {
            inner: FakeZfs::new(dir.path(), "p"),
            unlocked: Mutex::default(),
        });
        let store = ZfsStore::open(
            "p",
            ZfsOptions {
                runner: checker.clone(),
                ..ZfsOptions::default()
            },
        )
        .await
        .expect("open");
        assert!(store.engine().is_zfs_fuse());
        assert_eq!(*lock(&checker.unlocked), Vec::<String>::new());
    }
}
