//! Open's repair of `<root>/result`: rebuild the result index from one listing, destroy what
//! an interrupted process left (a dataset without `@snap`: a build or delete cut short; a
//! deleted result nothing depends on any more), and leave alone whatever the store cannot
//! prove it made.

use std::collections::{BTreeMap, HashMap, HashSet};

use store_api::{Id, StoreError};

use crate::layout::{RESULT_SNAP, parse_result_leaf};
use crate::mounts::Mount;
use crate::open::{Row, below, col};
use crate::results::reap;
use crate::state::{MountState, ResultDs, Shared, Status, lock};

/// One result dataset as listed.
struct Listed {
    id: Id,
    /// Its origin, if it is a clone of another result's `@snap`.
    origin: Option<String>,
    deleted: bool,
    /// Carries the store's proof ([`crate::layout::MADE_PROPERTY`]).
    made: bool,
}

/// Rebuilds the result index; destroys snapshot-less datasets and deleted results nothing
/// depends on, if the store made them and they hold nothing it did not make; unmounts
/// read-write result mounts. `rows` are `name, origin, zstore:deleted, zstore:name,
/// zstore:made` for everything under the store's groups.
pub async fn reclaim_results(
    inner: &Shared,
    rows: &[Row],
    mounted: &HashMap<String, Mount>,
) -> Result<(), StoreError> {
    let prefix = format!("{}/", inner.layout.group("result"));
    let mut listed: BTreeMap<String, Listed> = BTreeMap::new();
    let mut snapped = HashSet::new();
    // Leaves holding datasets or snapshots the store did not make: never destroyed here.
    let mut holds_foreign = HashSet::new();
    let mut left_alone = Vec::new();
    for row in rows {
        let name = col(row, 0);
        let Some((path, snap)) = below(name, &prefix) else {
            continue;
        };
        let leaf = path.split('/').next().unwrap_or(path);
        if snap == Some(RESULT_SNAP) && path == leaf {
            snapped.insert(leaf.to_owned());
            continue;
        }
        if snap.is_some() || path != leaf {
            // Another tool's snapshot of a result, or a dataset made inside one.
            holds_foreign.insert(leaf.to_owned());
            left_alone.push(name.to_owned());
            continue;
        }
        let Some(id) = parse_result_leaf(leaf) else {
            tracing::warn!(dataset = name, "not a store dataset; left alone");
            left_alone.push(name.to_owned());
            continue;
        };
        let origin = col(row, 1)
            .strip_prefix(&prefix)
            .and_then(|o| o.strip_suffix(&format!("@{RESULT_SNAP}")))
            .map(str::to_owned);
        listed.insert(
            leaf.to_owned(),
            Listed {
                id,
                origin,
                deleted: col(row, 2) == "on",
                made: inner.layout.is_made(name, col(row, 4)),
            },
        );
    }
    let mut to_unmount = Vec::new();
    {
        let mut idx = lock(&inner.results);
        for (leaf, ds) in &listed {
            let ds_name = inner.layout.result_ds(leaf);
            let mut status = if !snapped.contains(leaf) {
                Status::Doomed
            } else if ds.deleted {
                Status::Hidden
            } else {
                Status::Live
            };
            if status != Status::Live && (!ds.made || holds_foreign.contains(leaf)) {
                tracing::warn!(
                    dataset = %ds_name,
                    made_by_store = ds.made,
                    holds_foreign = holds_foreign.contains(leaf),
                    "a leftover the store cannot prove is all its own; left alone"
                );
                left_alone.push(ds_name.clone());
                status = Status::Kept;
            }
            if status == Status::Live {
                if let Some(prev) = idx.by_id.get(&ds.id).cloned() {
                    // Two live datasets for one id cannot arise from the store's own steps:
                    // the first listed is the result, the other is left alone.
                    tracing::warn!(id = %ds.id, %prev, %leaf, "two live results for one id; the second is left alone");
                    left_alone.push(ds_name.clone());
                    status = Status::Kept;
                } else {
                    idx.by_id.insert(ds.id.clone(), leaf.clone());
                }
            }
            let origin = ds.origin.clone().filter(|o| listed.contains_key(o));
            idx.datasets
                .insert(leaf.clone(), ResultDs::new(origin, status));
            let mount = match mounted.get(&ds_name) {
                Some(m) if m.is_result_mount() && status == Status::Live => MountState::ReadOnly,
                Some(_) if status == Status::Kept => MountState::Writable,
                Some(_) => {
                    to_unmount.push(leaf.clone());
                    MountState::Writable
                }
                None => MountState::Unmounted,
            };
            idx.set_mount(leaf, mount);
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
    *lock(&inner.left_alone) = left_alone;
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
