//! The hidden `crash-child`: opens the store and drives random operations on it, journaling
//! each one before and after, until the parent kills it.

use std::path::Path;
use std::sync::Arc;

use store_api::{CacheName, DeleteCacheError, Id, ReleaseOutcome, Store, StoreExt, User};

use super::journal::{Deleted, Journal, Rec, Released};
use super::model::{Known, Model, writes};
use super::rng::Rng;
use super::target::Target;

/// The caches the child uses (hostile names included: they must work across crashes too).
pub const CACHES: [&str; 3] = ["c0", "c:/windows/cache", "-R"];

/// At most this many results are kept: more are deleted (the parent reads every one after
/// each crash).
const MAX_RESULTS: usize = 12;

/// Longest chain of builds.
const MAX_DEPTH: usize = 5;

struct Child {
    store: Arc<dyn Store>,
    journal: Journal,
    model: Model,
    rng: Rng,
    round: u64,
    k: u64,
}

/// Runs the child until killed. Returns only on a set-up error.
pub async fn run(target: &Target, journal: &Path, seed: u64, round: u64) -> Result<(), String> {
    let recs = super::journal::read(journal).map_err(|e| format!("reading the journal: {e}"))?;
    let model = Model::replay(&recs);
    let journal =
        Journal::open(journal).map_err(|e| format!("opening {}: {e}", journal.display()))?;
    let opened = target.open().await?;
    let mut child = Child {
        store: Arc::clone(&opened.store),
        journal,
        model,
        rng: Rng::new(seed),
        round,
        k: 0,
    };
    loop {
        child.step().await?;
    }
}

impl Child {
    fn fresh(&mut self, what: &str) -> String {
        self.k += 1;
        format!("{what}{}x{}", self.round, self.k)
    }

    fn log(&mut self, rec: Rec) -> Result<(), String> {
        self.journal
            .append(&rec)
            .map_err(|e| format!("writing the journal: {e}"))?;
        self.model.apply(&rec);
        Ok(())
    }

    async fn step(&mut self) -> Result<(), String> {
        let committed = self.model.committed();
        if committed.len() > MAX_RESULTS {
            let victim = committed[self.rng.below(committed.len())].clone();
            return self.delete(&victim).await;
        }
        match self.rng.below(100) {
            0..=39 => {
                let base = self.pick_base();
                let id = self.fresh("b");
                self.build(&id, base).await
            }
            40..=49 => self.parallel_builds().await,
            50..=57 => match self.pick_base() {
                Some(victim) => self.delete(&victim).await,
                None => Ok(()),
            },
            58..=84 => self.cache_round().await,
            85..=89 => self.drop_copy().await,
            90..=94 => {
                let cache = CACHES[self.rng.below(CACHES.len())];
                self.delete_cache(cache).await
            }
            _ => self.rebuild_absent().await,
        }
    }

    /// A committed id not too deep to build on, or none (a build without base).
    fn pick_base(&mut self) -> Option<String> {
        let candidates: Vec<String> = self
            .model
            .committed()
            .into_iter()
            .filter(|i| self.model.depth(i) < MAX_DEPTH)
            .collect();
        if candidates.is_empty() || self.rng.below(5) == 0 {
            None
        } else {
            Some(candidates[self.rng.below(candidates.len())].clone())
        }
    }

    async fn build(&mut self, id: &str, base: Option<String>) -> Result<(), String> {
        self.log(Rec::BeginBuild {
            id: id.to_owned(),
            base: base.clone(),
        })?;
        let ok = build(&self.store, &self.model, id, base.as_deref()).await;
        self.log(Rec::DoneBuild {
            id: id.to_owned(),
            ok,
        })
    }

    /// Two or three builds at once, so that kills land while several are in flight.
    async fn parallel_builds(&mut self) -> Result<(), String> {
        let n = 2 + self.rng.below(2);
        let mut jobs = Vec::new();
        for _ in 0..n {
            let base = self.pick_base();
            let id = self.fresh("p");
            self.log(Rec::BeginBuild {
                id: id.clone(),
                base: base.clone(),
            })?;
            jobs.push((id, base));
        }
        let mut set = tokio::task::JoinSet::new();
        for (id, base) in jobs {
            let (store, model) = (Arc::clone(&self.store), self.model.clone());
            set.spawn(async move {
                let ok = build(&store, &model, &id, base.as_deref()).await;
                (id, ok)
            });
        }
        while let Some(done) = set.join_next().await {
            let (id, ok) = done.map_err(|e| format!("a build task failed: {e}"))?;
            self.log(Rec::DoneBuild { id, ok })?;
        }
        Ok(())
    }

    async fn delete(&mut self, id: &str) -> Result<(), String> {
        self.log(Rec::BeginDelete { id: id.to_owned() })?;
        let ok = match Id::new(id) {
            Ok(i) => self.store.delete(&i).await.is_ok(),
            Err(_) => false,
        };
        self.log(Rec::DoneDelete {
            id: id.to_owned(),
            ok,
        })
    }

    /// Takes one copy (sometimes two) of a cache, fills it with a fresh token and releases
    /// it; with two, the other copy is released second (and discarded) or first.
    async fn cache_round(&mut self) -> Result<(), String> {
        let cache = CACHES[self.rng.below(CACHES.len())];
        let name = cache_name(cache)?;
        let Ok(first) = self.store.cache(User::ROOT, &name).await else {
            return Ok(());
        };
        let second = if self.rng.below(3) == 0 {
            self.store.cache(User::ROOT, &name).await.ok()
        } else {
            None
        };
        let mut copies = vec![first];
        copies.extend(second);
        if self.rng.below(2) == 0 {
            copies.reverse();
        }
        for lease in copies {
            let token = self.fresh("t");
            fill(lease.path(), &token);
            self.log(Rec::BeginRelease {
                cache: cache.to_owned(),
                token: token.clone(),
            })?;
            let outcome = match lease.release().await {
                Ok(ReleaseOutcome::Published) => Released::Published,
                Ok(ReleaseOutcome::Discarded) => Released::Discarded,
                Err(_) => Released::Failed,
            };
            self.log(Rec::DoneRelease {
                cache: cache.to_owned(),
                token,
                outcome,
            })?;
        }
        Ok(())
    }

    /// A copy written to and dropped: never published.
    async fn drop_copy(&mut self) -> Result<(), String> {
        let cache = CACHES[self.rng.below(CACHES.len())];
        if let Ok(lease) = self.store.cache(User::ROOT, &cache_name(cache)?).await {
            fill(lease.path(), "dropped");
            drop(lease);
        }
        Ok(())
    }

    async fn delete_cache(&mut self, cache: &str) -> Result<(), String> {
        self.log(Rec::BeginDeleteCache {
            cache: cache.to_owned(),
        })?;
        let outcome = match self.store.delete_cache(&cache_name(cache)?).await {
            Ok(()) => Deleted::Gone,
            Err(DeleteCacheError::Busy { .. }) => Deleted::Busy,
            Err(_) => Deleted::Failed,
        };
        self.log(Rec::DoneDeleteCache {
            cache: cache.to_owned(),
            outcome,
        })
    }

    /// Builds again an id whose build a crash interrupted (the same content, from the same
    /// base): the same ids must be buildable after a crash.
    async fn rebuild_absent(&mut self) -> Result<(), String> {
        let candidates: Vec<(String, Option<String>)> = self
            .model
            .results
            .iter()
            .filter(|(_, k)| **k == Known::Absent)
            .filter_map(|(id, _)| {
                let base = self.model.bases.get(id)?.clone();
                let base_ok = base
                    .as_ref()
                    .is_none_or(|b| self.model.results.get(b) == Some(&Known::Committed));
                base_ok.then(|| (id.clone(), base))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let (id, base) = candidates[self.rng.below(candidates.len())].clone();
        self.build(&id, base).await
    }
}

fn cache_name(s: &str) -> Result<CacheName, String> {
    CacheName::new(s).map_err(|e| e.to_string())
}

/// Writes `token` into a copy (two files, so that a mix of two versions shows).
pub fn fill(dir: &Path, token: &str) {
    let _ = std::fs::write(dir.join("token"), token);
    let _ = std::fs::write(dir.join("token2"), token);
}

/// Builds `id` on `base` with the content the model expects; `true` if it was committed.
pub async fn build(store: &Arc<dyn Store>, model: &Model, id: &str, base: Option<&str>) -> bool {
    let (Ok(i), Ok(b)) = (Id::new(id), base.map(Id::new).transpose()) else {
        return false;
    };
    let mut m = model.clone();
    m.bases.insert(id.to_owned(), base.map(str::to_owned));
    let files = writes(&m, id);
    store
        .build(b.as_ref(), &i, |dir| async move {
            for (path, content) in &files {
                let full = dir.join(path);
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(full, content)?;
            }
            Ok::<(), std::io::Error>(())
        })
        .await
        .is_ok()
}
