//! Opening a store: detect the engine, find the root, create the layout, rebuild the index
//! from one `zfs list`, and reclaim whatever an interrupted process left behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use store_api::StoreError;

use crate::engine::Engine;
use crate::layout::{DELETED_PROPERTY, Layout, MADE_PROPERTY, MAX_ROOT_LEN};
use crate::locate::locate;
use crate::mounts;
use crate::names::NAME_PROPERTY;
use crate::reclaim_caches::reclaim_caches;
use crate::reclaim_results::reclaim_results;
use crate::runner::{Cmd, Runner};
use crate::state::{Inner, Limits, ResultIndex, Shared};
use crate::zfs_cli::Zfs;

/// The property, read by zfs-auto-snapshot and tools like it, that the store's groups are
/// created with so that those tools leave its datasets alone.
pub const AUTO_SNAPSHOT_OFF: &str = "com.sun:auto-snapshot=false";

/// The groups below the root, created on first use.
pub const GROUPS: [&str; 3] = ["state", "result", "cache"];

/// The default cap on read-only result mounts on zfs-fuse (its daemon serves 1000 mounts in
/// all, shared with every other pool and user).
pub const ZFS_FUSE_MOUNT_CAP: usize = 256;

/// Opens (creating the layout if needed) the store at `location`; `engine` is detected
/// unless given.
pub async fn open(
    location: &str,
    runner: Arc<dyn Runner>,
    engine: Option<Engine>,
    limits: Limits,
) -> Result<Shared, StoreError> {
    let engine = match engine {
        Some(e) => e,
        None => Engine::detect(Arc::clone(&runner)).await?,
    };
    let zfs = Zfs::new(runner).serialize_commands(engine.is_zfs_fuse());
    let root = locate(&zfs, location).await?;
    // Before anything changes: a second opener must not repair away the first one's work.
    let open_lock = crate::store_lock::take(&root).await?;
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
            &[
                "name",
                "origin",
                DELETED_PROPERTY,
                NAME_PROPERTY,
                MADE_PROPERTY,
            ],
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
        left_alone: Mutex::default(),
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
            // Snapshots by an auto-snapshot tool (zfs-auto-snapshot, sanoid, ...) would pin
            // every result and copy the store destroys; the groups opt out, for everything
            // below them. (The store never destroys such snapshots at open.)
            zfs.create(&ds, &[AUTO_SNAPSHOT_OFF.to_owned()]).await?;
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

/// One row of `zfs list -H`, split on tabs.
pub type Row = Vec<String>;

/// The part of dataset or snapshot `name` below `prefix` (e.g. `<root>/result/`), split into
/// its dataset path and its snapshot name, if it is below `prefix`.
pub fn below<'a>(name: &'a str, prefix: &str) -> Option<(&'a str, Option<&'a str>)> {
    let rest = name.strip_prefix(prefix)?;
    Some(match rest.split_once('@') {
        Some((path, snap)) => (path, Some(snap)),
        None => (rest, None),
    })
}

/// Column `i` of a row (`-`, as `zfs list` prints an unset property, if missing).
pub fn col(row: &[String], i: usize) -> &str {
    row.get(i).map(String::as_str).unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::runner::{CmdOutput, RunError};
    use crate::state::lock;
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
        let store = ZfsStore::open_with(
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

    /// An engine given at open is used as is: no `zfs version`, and the other engine's
    /// paths are not taken.
    #[tokio::test]
    async fn a_known_engine_skips_detection() {
        use crate::testing::RecordingRunner;
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = RecordingRunner::new(Arc::new(FakeZfs::openzfs(dir.path(), "p")));
        let detected = ZfsStore::open_with(
            "p",
            ZfsOptions {
                runner: rec.clone(),
                ..ZfsOptions::default()
            },
        )
        .await
        .expect("open");
        let engine = detected.engine().clone();
        assert!(!engine.is_zfs_fuse());
        assert!(rec.take_lines().iter().any(|c| c.contains("zfs version")));
        drop(detected);
        let known = ZfsStore::builder()
            .runner(rec.clone())
            .engine(engine.clone())
            .open("p")
            .await
            .expect("reopen");
        assert_eq!(known.engine(), &engine);
        let commands = rec.take_lines();
        assert!(!commands.is_empty());
        assert!(
            !commands.iter().any(|c| c.contains("version")),
            "{commands:?}"
        );
    }
}
