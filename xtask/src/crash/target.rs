//! Where the crash test's store lives: a ZFS dataset or a fake store's root; how to open it
//! and how to find what a crash left behind.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use store_api::Store;
use store_fake::FakeStore;
use store_zfs::ZfsStore;

use crate::runner::{Cmd, Runner};

/// The store under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `ZfsStore` on this dataset.
    Zfs(String),
    /// `FakeStore` under this root.
    Fake(PathBuf),
}

/// A store opened on a [`Target`].
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    zfs: Option<ZfsStore>,
    fake: Option<FakeStore>,
}

impl Opened {
    /// Waits for the store's background work (ZFS: cleanups of dropped copies).
    pub async fn idle(&self) {
        if let Some(z) = &self.zfs {
            z.wait_idle().await;
        }
    }

    /// Every id the store has a result for.
    pub fn result_ids(&self) -> BTreeSet<String> {
        let ids = match (&self.zfs, &self.fake) {
            (Some(z), _) => z.results(),
            (_, Some(f)) => f.results(),
            _ => Vec::new(),
        };
        ids.into_iter().map(|i| i.into_string()).collect()
    }
}

impl Target {
    /// The `--target` argument that names it (`zfs:<dataset>` or `fake:<root>`).
    pub fn arg(&self) -> String {
        match self {
            Target::Zfs(ds) => format!("zfs:{ds}"),
            Target::Fake(root) => format!("fake:{}", root.display()),
        }
    }

    /// Parses a `--target` argument.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(ds) = s.strip_prefix("zfs:") {
            Ok(Target::Zfs(ds.to_owned()))
        } else if let Some(root) = s.strip_prefix("fake:") {
            Ok(Target::Fake(root.into()))
        } else {
            Err(format!(
                "--target {s:?}: expected zfs:<dataset> or fake:<root>"
            ))
        }
    }

    /// Opens the store (reclaiming what a crash left).
    pub async fn open(&self) -> Result<Opened, String> {
        match self {
            Target::Zfs(ds) => {
                let z = ZfsStore::open(ds)
                    .await
                    .map_err(|e| format!("opening ZfsStore on {ds}: {e}"))?;
                Ok(Opened {
                    store: Arc::new(z.clone()),
                    zfs: Some(z),
                    fake: None,
                })
            }
            Target::Fake(root) => {
                let f = FakeStore::open(root)
                    .map_err(|e| format!("opening FakeStore at {}: {e}", root.display()))?;
                Ok(Opened {
                    store: Arc::new(f.clone()),
                    zfs: None,
                    fake: Some(f),
                })
            }
        }
    }

    /// What an open, idle store must not have: unfinished builds, copies, half-published
    /// versions, scratch files. One line each.
    pub async fn leftovers(&self, runner: &Runner) -> Vec<String> {
        match self {
            Target::Zfs(ds) => {
                let cmd =
                    Cmd::new("zfs").args(["list", "-H", "-o", "name", "-t", "all", "-r", "--", ds]);
                match runner.check(&cmd).await {
                    Ok(out) => zfs_leftovers(ds, &out.stdout),
                    Err(e) => vec![format!("listing the dataset failed: {e}")],
                }
            }
            Target::Fake(root) => ["building", "cache-tmp", "tmp", "trash"]
                .iter()
                .filter_map(|d| {
                    let n = std::fs::read_dir(root.join(d)).map_or(0, Iterator::count);
                    (n > 0).then(|| format!("{n} entries left in the fake's {d}/"))
                })
                .collect(),
        }
    }
}

/// Checks a `zfs list -H -o name -t all -r <root>` listing against the store's layout (see
/// `store-zfs`'s crate docs): every result dataset has `@snap` and no other snapshot; every
/// cache has exactly one generation `g<N>`, with exactly `@v<N>`; nothing else.
fn zfs_leftovers(root: &str, listing: &str) -> Vec<String> {
    let names: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.strip_prefix(root))
        .collect();
    let mut found = Vec::new();
    let mut generations: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for n in &names {
        let Some(rel) = n.strip_prefix('/') else {
            continue; // the root itself, or its snapshots
        };
        let (ds, snap) = match rel.split_once('@') {
            Some((d, s)) => (d, Some(s)),
            None => (rel, None),
        };
        let parts: Vec<&str> = ds.split('/').collect();
        match (parts.as_slice(), snap) {
            (["state" | "result" | "cache"], None) => {}
            (["state", ..], _) => {}
            (["result", _leaf], None) => {
                if !names.contains(format!("/{ds}@snap").as_str()) {
                    found.push(format!("{root}/{ds}: a result dataset without @snap"));
                }
            }
            (["result", _leaf], Some("snap")) => {}
            (["cache", _c], None) => {
                generations.entry(ds).or_default();
            }
            (["cache", c, g], None) => {
                let container = &ds[..6 + c.len()];
                generations.entry(container).or_default().push(g);
            }
            (["cache", _c, g], Some(s)) if g.strip_prefix('g') == s.strip_prefix('v') => {}
            _ => found.push(format!("{root}/{rel}: not part of a clean store")),
        }
    }
    for (container, gens) in generations {
        match gens.as_slice() {
            [g] => {
                let want = format!("/{container}/{g}@v{}", g.trim_start_matches('g'));
                if !names.contains(want.as_str()) {
                    found.push(format!("{root}/{container}/{g}: no @v snapshot of its own"));
                }
            }
            [] => found.push(format!("{root}/{container}: a cache with no generation")),
            many => found.push(format!(
                "{root}/{container}: {} generations (copies or old versions left)",
                many.len()
            )),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_listing_passes_and_leftovers_are_named() {
        let clean = "p/s\np/s/state\np/s/result\np/s/cache\np/s/result/a\np/s/result/a@snap\n\
                     p/s/cache/c-x\np/s/cache/c-x/g3\np/s/cache/c-x/g3@v3\n";
        assert_eq!(zfs_leftovers("p/s", clean), Vec::<String>::new());
        let dirty = format!(
            "{clean}p/s/result/half\np/s/cache/c-x/g4\np/s/cache/c-y\np/s/cache/c-z/g2\n\
             p/s/cache/c-z/g2@v1\np/s/other\n"
        );
        let found = zfs_leftovers("p/s", &dirty).join("\n");
        for f in [
            "p/s/result/half: a result dataset without @snap",
            "p/s/cache/c-x: 2 generations",
            "p/s/cache/c-y: a cache with no generation",
            "p/s/cache/c-z/g2@v1: not part of a clean store",
            "p/s/cache/c-z/g2: no @v snapshot",
            "p/s/other: not part",
        ] {
            assert!(found.contains(f), "{f} in\n{found}");
        }
    }
}
