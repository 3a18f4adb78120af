//! The child: the test executable started again on the same test, with the environment
//! saying it is the child. It opens the store and drives random operations on it, journaling
//! each one before and after, until the parent kills it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use store_api::{CacheName, DeleteCacheError, Id, ReleaseOutcome, Store, StoreExt, User};

use super::StoreSpec;
use super::journal::{Deleted, Journal, Rec, Released};
use super::model::{Known, Model, writes};
use super::rng::Rng;

/// The caches the child uses (hostile names included: they must work across crashes too).
pub const CACHES: [&str; 3] = ["c0", "c:/windows/cache", "-R"];

/// At most this many results are kept: more are deleted (the parent reads every one after
/// each crash).
const MAX_RESULTS: usize = 12;

/// Longest chain of builds.
const MAX_DEPTH: usize = 5;

/// The child's variables: the store's [`StoreSpec::encode`] line (its presence makes a
/// process the child), the journal, the seed, the round and the parent's pid.
const SPEC_ENV: &str = "ZSTORE_CRASH_CHILD_SPEC";
const JOURNAL_ENV: &str = "ZSTORE_CRASH_CHILD_JOURNAL";
const SEED_ENV: &str = "ZSTORE_CRASH_CHILD_SEED";
const ROUND_ENV: &str = "ZSTORE_CRASH_CHILD_ROUND";
const PARENT_ENV: &str = "ZSTORE_CRASH_CHILD_PARENT";

/// How the parent starts a child: this executable, on the one test, the spec's line.
#[derive(Clone, Debug)]
pub struct Command {
    exe: PathBuf,
    test: String,
    spec: String,
}

impl Command {
    /// The command for the libtest test `test` of this executable, on `spec`'s storage.
    pub fn for_test(test: &str, spec: &impl StoreSpec) -> Result<Self, String> {
        Ok(Self {
            exe: std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?,
            test: test.to_owned(),
            spec: spec.encode(),
        })
    }

    /// The command for one round: in a process group of its own (so that what it leaves
    /// running can be waited for), output to `log`.
    pub fn round(
        &self,
        journal: &Path,
        seed: u64,
        round: u64,
        log: std::fs::File,
    ) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.exe);
        c.args([
            OsString::from(&self.test),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ])
        .env(SPEC_ENV, &self.spec)
        .env(JOURNAL_ENV, journal)
        .env(SEED_ENV, seed.to_string())
        .env(ROUND_ENV, round.to_string())
        .env(PARENT_ENV, std::process::id().to_string())
        .env("RUST_LOG", child_log_filter())
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true);
        c
    }
}

/// The child's `RUST_LOG`: the parent's when set (e.g. `store_zfs=debug` to see every command
/// the child ran before the kill), else warnings only.
fn child_log_filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned())
}

/// What a child was started with.
#[derive(Debug)]
pub struct Invocation {
    spec: String,
    journal: PathBuf,
    seed: u64,
    round: u64,
    parent: u32,
}

impl Invocation {
    /// The child's invocation, if this process is a child.
    pub fn from_env() -> Option<Self> {
        let spec = std::env::var(SPEC_ENV).ok()?;
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Some(Self {
            spec,
            journal: std::env::var_os(JOURNAL_ENV).map(PathBuf::from)?,
            seed: number(SEED_ENV),
            round: number(ROUND_ENV),
            parent: u32::try_from(number(PARENT_ENV)).unwrap_or(0),
        })
    }
}

/// The child's whole life: runs until killed; exits with status 2 if it cannot start.
pub fn main<S: StoreSpec>(inv: Invocation) -> ! {
    // A child outlives nobody: if the parent dies (Ctrl-C on the test), so does the child.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let parent_now = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    if i64::from(parent_now) != i64::from(inv.parent) {
        std::process::exit(2);
    }
    let failed = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a tokio runtime: {e}"))
        .and_then(|rt| rt.block_on(run::<S>(&inv)));
    if let Err(e) = failed {
        eprintln!("crash child: {e}");
    }
    std::process::exit(2);
}

struct Child {
    store: Arc<dyn Store>,
    journal: Journal,
    model: Model,
    rng: Rng,
    round: u64,
    k: u64,
}

/// Runs the child until killed. Returns only on a set-up error.
async fn run<S: StoreSpec>(inv: &Invocation) -> Result<(), String> {
    let spec = S::decode(&inv.spec)?;
    let recs =
        super::journal::read(&inv.journal).map_err(|e| format!("reading the journal: {e}"))?;
    let model = Model::replay(&recs);
    let journal = Journal::open(&inv.journal)
        .map_err(|e| format!("opening {}: {e}", inv.journal.display()))?;
    let store: Arc<dyn Store> = Arc::new(spec.open().await?);
    let mut child = Child {
        store,
        journal,
        model,
        rng: Rng::new(inv.seed),
        round: inv.round,
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
