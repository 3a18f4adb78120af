//! Open's repair of `<root>/cache`: rebuild the cache table from one listing, and bring each
//! cache back to one generation at its released version, destroying only what the store can
//! prove it made (see [`crate::layout::MADE_PROPERTY`]) and what no process still uses.
//! Nothing here makes the open fail but a failed listing: what cannot be repaired now is
//! logged, left, and repaired by a later operation or open.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use store_api::{CacheName, StoreError};

use crate::cache_state::{CacheEntry, CacheState, CopyOut};
use crate::layout::{parse_generation, parse_version};
use crate::mounts::Mount;
use crate::names::unescape;
use crate::open::{Row, below, col};
use crate::state::{Shared, lock};

/// One generation dataset `g<N>` as listed.
#[derive(Default)]
struct Gen {
    origin: String,
    /// It has its own `@v<N>`: it is a published version.
    own_snap: bool,
    /// Its `@v<K>` snapshots with `K != N` (moved here by a promote).
    moved_snaps: usize,
    /// Carries the store's proof.
    made: bool,
    /// Holds datasets or snapshots the store did not make.
    holds_foreign: bool,
}

impl Gen {
    /// The version it was cloned from, if it is a clone of a version snapshot.
    fn base(&self) -> Option<u64> {
        self.origin
            .rsplit_once('@')
            .and_then(|(_, v)| parse_version(v))
    }

    /// Whether open may destroy it.
    fn destroyable(&self) -> bool {
        self.made && !self.holds_foreign
    }
}

/// One cache container as listed.
#[derive(Default)]
struct Container {
    name_prop: String,
    made: bool,
    gens: BTreeMap<u64, Gen>,
    /// What it holds that the store did not make (a child not named `g<N>`, a snapshot not
    /// named `@v<K>`, ...), by full name.
    foreign: Vec<String>,
}

impl Container {
    /// The documented hand-made (pre-seeded) shape: one generation with its own version
    /// snapshot and nothing else.
    fn is_preseeded(&self) -> bool {
        !self.made
            && self.foreign.is_empty()
            && self.gens.len() == 1
            && self
                .gens
                .values()
                .all(|g| g.own_snap && g.origin == "-" && g.moved_snaps == 0 && !g.made)
    }
}

/// Reads the cache group's rows into containers, by component.
fn containers(inner: &Shared, rows: &[Row]) -> BTreeMap<String, Container> {
    let prefix = format!("{}/", inner.layout.group("cache"));
    let mut containers: BTreeMap<String, Container> = BTreeMap::new();
    for row in rows {
        let name = col(row, 0);
        let Some((path, snap)) = below(name, &prefix) else {
            continue;
        };
        let mut parts = path.split('/');
        let (Some(comp), g, deeper) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let c = containers.entry(comp.to_owned()).or_default();
        let generation = g.and_then(parse_generation);
        match (g, generation, deeper, snap) {
            (None, _, _, None) => {
                c.name_prop = col(row, 3).to_owned();
                c.made = inner.layout.is_made(name, col(row, 4));
            }
            (Some(_), Some(n), None, None) => {
                let g = c.gens.entry(n).or_default();
                g.origin = col(row, 1).to_owned();
                g.made = inner.layout.is_made(name, col(row, 4));
            }
            (Some(_), Some(n), None, Some(s)) => match parse_version(s) {
                Some(v) if v == n => c.gens.entry(n).or_default().own_snap = true,
                Some(_) => c.gens.entry(n).or_default().moved_snaps += 1,
                None => {
                    c.gens.entry(n).or_default().holds_foreign = true;
                    c.foreign.push(name.to_owned());
                }
            },
            (Some(_), Some(n), Some(_), _) => {
                c.gens.entry(n).or_default().holds_foreign = true;
                c.foreign.push(name.to_owned());
            }
            _ => c.foreign.push(name.to_owned()),
        }
    }
    containers
}

/// Rebuilds the cache table. For each cache the published version is the highest generation
/// that has its own `@v<N>` snapshot. A hand-made cache in the documented shape is adopted
/// (given the store's proof). Then copies that were out (no own snapshot) are destroyed, the
/// published generation is promoted until it depends on nothing, and every other generation
/// and old version snapshot is destroyed: each only if the store made it and holds nothing
/// it did not make, and no process uses it. A container with no version is destroyed (that
/// cache never got a release) under the same conditions.
pub async fn reclaim_caches(
    inner: &Shared,
    rows: &[Row],
    mounted: &HashMap<String, Mount>,
) -> Result<(), StoreError> {
    let mut left_alone = Vec::new();
    for (comp, mut c) in containers(inner, rows) {
        let container = inner.layout.container(&comp);
        left_alone.extend(c.foreign.iter().cloned());
        let escaped = if comp.starts_with("h-") {
            c.name_prop.as_str()
        } else {
            comp.as_str()
        };
        let Some(name) = unescape(escaped).and_then(|n| CacheName::new(n).ok()) else {
            tracing::warn!(%container, "cache container with an unknown name; left alone");
            left_alone.push(container);
            continue;
        };
        if lock(&inner.caches).contains_key(&name) {
            tracing::warn!(%container, %name, "second container for one cache; left alone");
            left_alone.push(container);
            continue;
        }
        if c.is_preseeded() {
            adopt(inner, &comp, &mut c).await;
        }
        let sub = format!("{container}/");
        for ds in mounted.keys().filter(|d| d.starts_with(&sub)) {
            let mine = ds
                .strip_prefix(&sub)
                .and_then(parse_generation)
                .and_then(|n| c.gens.get(&n))
                .is_some_and(|g| g.made);
            // A copy that a crashed builder's sandbox still uses cannot be unmounted: it is
            // left (and destroyed once free), never a reason to fail the open.
            if mine {
                if let Err(e) = inner.zfs.unmount(ds).await {
                    tracing::warn!(%ds, error = %e, "cannot unmount a cache dataset yet");
                }
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
            if c.made && c.foreign.is_empty() && c.gens.values().all(Gen::destroyable) {
                if let Err(e) = inner.zfs.destroy(&container, Some("-r")).await {
                    tracing::warn!(%container, error = %e, "cannot destroy a cache that never got a version yet; retried at the next open");
                }
            } else {
                tracing::warn!(%container, "a cache without a version that the store did not make all of; left alone");
                left_alone.push(container);
            }
            continue;
        };
        let cur = &c.gens[&current];
        let mut repaired = Repaired::default();
        if c.gens.len() > 1 || cur.origin != "-" || cur.moved_snaps > 0 {
            repaired = repair_cache(inner, &comp, current, &c).await?;
        }
        left_alone.extend(repaired.left_alone);
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
                    doomed: repaired.in_use,
                    pinned: repaired.pinned,
                    ..CacheState::default()
                },
            )),
        );
    }
    lock(&inner.left_alone).extend(left_alone);
    Ok(())
}

/// Gives a hand-made cache (see [`Container::is_preseeded`]) the store's proof, so that the
/// store can manage it from now on as one it made. Best effort: a cache not adopted still
/// works, only its datasets are never destroyed at open.
async fn adopt(inner: &Shared, comp: &str, c: &mut Container) {
    let container = inner.layout.container(comp);
    let mut done = true;
    for (n, g) in &mut c.gens {
        let ds = inner.layout.generation(comp, *n);
        match set_made(inner, &ds).await {
            Ok(()) => g.made = true,
            Err(e) => {
                tracing::warn!(%ds, error = %e, "cannot adopt a hand-made cache generation");
                done = false;
            }
        }
    }
    if done {
        match set_made(inner, &container).await {
            Ok(()) => {
                c.made = true;
                tracing::info!(%container, "adopted a hand-made cache");
            }
            Err(e) => tracing::warn!(%container, error = %e, "cannot adopt a hand-made cache"),
        }
    }
}

async fn set_made(inner: &Shared, ds: &str) -> Result<(), StoreError> {
    let prop = inner.layout.made_prop(ds);
    let (key, value) = prop.split_once('=').unwrap_or((prop.as_str(), ""));
    inner.zfs.set(key, value, ds).await
}

/// What a repair could not do now.
#[derive(Default)]
struct Repaired {
    /// Copies the store made that a process still uses: destroyed later.
    in_use: Vec<(u64, CopyOut)>,
    /// Versions kept for datasets left alone.
    pinned: BTreeSet<u64>,
    /// Names left alone.
    left_alone: Vec<String>,
}

/// Brings one cache to a single generation `current` owning only `@v<current>`, as far as
/// it may: copies in use are returned to be destroyed later, datasets the store did not make
/// are left, and the version snapshots either was cloned from are kept.
async fn repair_cache(
    inner: &Shared,
    comp: &str,
    current: u64,
    c: &Container,
) -> Result<Repaired, StoreError> {
    let gen_ds = |n| inner.layout.generation(comp, n);
    let mut out = Repaired::default();
    let keep = |out: &mut Repaired, n: u64, g: &Gen, why: &str| {
        tracing::warn!(ds = %gen_ds(n), why, "cache generation left alone");
        out.left_alone.push(gen_ds(n));
        out.pinned.extend(g.base());
        if g.own_snap {
            out.pinned.insert(n);
        }
    };
    for (n, g) in c.gens.iter().filter(|(_, g)| !g.own_snap) {
        if !g.destroyable() {
            keep(
                &mut out,
                *n,
                g,
                "a copy the store cannot prove is all its own",
            );
            continue;
        }
        if let Err(e) = inner.zfs.destroy(&gen_ds(*n), None).await {
            tracing::warn!(ds = %gen_ds(*n), error = %e, "cannot destroy a cache copy left by a crash yet; retried later");
            out.in_use.push((*n, CopyOut { base: g.base() }));
        }
    }
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
        if let Err(e) = inner.zfs.promote(&cur).await {
            tracing::warn!(%cur, error = %e, "cannot promote the published generation yet; repaired at the next open");
            break;
        }
    }
    for (n, g) in c.gens.iter().filter(|(n, g)| g.own_snap && **n != current) {
        if !g.destroyable() {
            keep(
                &mut out,
                *n,
                g,
                "an old version the store cannot prove is all its own",
            );
            continue;
        }
        if let Err(e) = inner.zfs.destroy(&gen_ds(*n), None).await {
            tracing::warn!(ds = %gen_ds(*n), error = %e, "cannot destroy an old cache version yet");
            keep(&mut out, *n, g, "could not be destroyed");
        }
    }
    let pinned: BTreeSet<u64> = out
        .pinned
        .iter()
        .copied()
        .chain(out.in_use.iter().filter_map(|(_, c)| c.base))
        .collect();
    let own = format!("{cur}@");
    for row in inner.zfs.list_tree(&[&cur], &["name"]).await? {
        let name = col(&row, 0);
        // Only the store's own `@v<K>` of this generation: another tool's snapshots, and
        // anything under a dataset made inside it, are never destroyed.
        let Some(version) = name.strip_prefix(&own).and_then(parse_version) else {
            continue;
        };
        if version == current || pinned.contains(&version) {
            continue;
        }
        if let Err(e) = inner.zfs.destroy(name, None).await {
            tracing::warn!(snapshot = name, error = %e, "cannot destroy an old version snapshot yet; repaired at the next open");
        }
    }
    Ok(out)
}
