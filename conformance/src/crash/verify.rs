//! After each kill: reopen the store and compare it with what the journal says may be there;
//! record what was seen; build again one id the crash interrupted.

use std::collections::BTreeMap;
use std::path::Path;

use store_api::{CacheName, Id};

use std::sync::Arc;

use store_api::{Inspect, Store};

use super::child::{CACHES, build};
use super::journal::{Journal, Rec};
use super::model::{Known, Model};
use super::{SENTINEL, StoreSpec};

/// What one check found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Broken promises.
    pub violations: Vec<String>,
    /// Results that were there (each read in full).
    pub results: usize,
    /// Ids rebuilt after the crash interrupted them.
    pub rebuilt: usize,
}

/// The regular files under `dir`, relative (directories are implied).
fn files(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let p = e.path();
            let t = e.file_type().map_err(|e| format!("{}: {e}", p.display()))?;
            if t.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                let content = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                out.insert(rel, String::from_utf8_lossy(&content).into_owned());
            }
        }
    }
    Ok(out)
}

/// Opens the store after a crash and checks it against the journal at `journal_path`; then
/// appends what it saw, so the next round starts from the truth.
pub async fn after_crash<S: StoreSpec>(
    spec: &S,
    journal_path: &Path,
    rebuild: bool,
) -> Result<Checked, String> {
    let recs = super::journal::read(journal_path).map_err(|e| format!("the journal: {e}"))?;
    let mut model = Model::replay(&recs);
    let journal = Journal::open(journal_path).map_err(|e| format!("the journal: {e}"))?;
    let mut c = Checked::default();
    let opened = match spec.open().await {
        Ok(o) => o,
        Err(e) => {
            c.violations
                .push(format!("the store does not open after the crash: {e}"));
            return Ok(c);
        }
    };
    let store: &Arc<dyn Store> = &(Arc::new(opened.clone()) as Arc<dyn Store>);
    let (path, content) = SENTINEL;
    match std::fs::read_to_string(store.state_dir().join(path)) {
        Ok(s) if s == content => {}
        other => c
            .violations
            .push(format!("state_dir: the sentinel now reads {other:?}")),
    }

    // Results: committed ones complete, in-flight ones complete or absent, no other.
    let mut seen = Vec::new();
    for (id, known) in &model.results {
        let Ok(i) = Id::new(id.as_str()) else {
            continue;
        };
        let got = match store.result(&i).await {
            Ok(r) => r,
            Err(e) => {
                c.violations.push(format!("result({id}) failed: {e}"));
                continue;
            }
        };
        match (got, known) {
            (None, Known::Committed) => c.violations.push(format!(
                "{id} was committed (its build returned success) but is gone"
            )),
            (None, _) => seen.push(Rec::Absent { id: id.clone() }),
            (Some(_), Known::Absent) => c.violations.push(format!(
                "{id} has a result, but its build failed or it was deleted"
            )),
            (Some(dir), _) => match files(&dir) {
                Ok(f) if f == model.files(id) => {
                    c.results += 1;
                    seen.push(Rec::Present { id: id.clone() });
                }
                Ok(f) => c.violations.push(format!(
                    "{id} is incomplete or wrong: holds {:?}, expected {:?}",
                    f.keys().collect::<Vec<_>>(),
                    model.files(id).keys().collect::<Vec<_>>()
                )),
                Err(e) => c.violations.push(format!("reading {id}: {e}")),
            },
        }
    }
    for id in opened.results() {
        let id = id.into_string();
        if !model.results.contains_key(&id) {
            c.violations
                .push(format!("{id} has a result but the child never built it"));
        }
    }

    // Caches: at a released version (whole), or empty only if allowed.
    for cache in CACHES {
        let Ok(name) = CacheName::new(cache) else {
            continue;
        };
        let allowed = model
            .caches
            .get(cache)
            .map(|k| k.allowed.clone())
            .unwrap_or_else(|| [None].into());
        match store.cache(store_api::User::ROOT, &name).await {
            Ok(lease) => {
                let got = files(lease.path());
                drop(lease);
                let token = match got {
                    Ok(f) if f.is_empty() => Ok(None),
                    Ok(f) => match (f.get("token"), f.get("token2")) {
                        (Some(a), Some(b)) if a == b && f.len() == 2 => Ok(Some(a.clone())),
                        _ => Err(format!("cache {cache:?} holds a mix: {f:?}")),
                    },
                    Err(e) => Err(e),
                };
                match token {
                    Ok(t) if allowed.contains(&t) => seen.push(Rec::CacheIs {
                        cache: cache.to_owned(),
                        token: t,
                    }),
                    Ok(t) => c.violations.push(format!(
                        "cache {cache:?} holds {t:?}; the journal allows {allowed:?}"
                    )),
                    Err(e) => c.violations.push(e),
                }
            }
            Err(e) => c.violations.push(format!("acquiring cache {cache:?}: {e}")),
        }
    }
    for rec in &seen {
        journal
            .append(rec)
            .map_err(|e| format!("the journal: {e}"))?;
        model.apply(rec);
    }

    // The same ids can be built again: one the crash interrupted.
    if rebuild
        && let Some((id, base)) = model
            .results
            .iter()
            .filter(|(_, k)| **k == Known::Absent)
            .filter_map(|(id, _)| Some((id.clone(), model.bases.get(id)?.clone())))
            .find(|(_, b)| {
                b.as_ref()
                    .is_none_or(|b| model.results.get(b) == Some(&Known::Committed))
            })
    {
        journal
            .append(&Rec::BeginBuild {
                id: id.clone(),
                base: base.clone(),
            })
            .map_err(|e| format!("the journal: {e}"))?;
        let ok = build(store, &model, &id, base.as_deref()).await;
        journal
            .append(&Rec::DoneBuild { id: id.clone(), ok })
            .map_err(|e| format!("the journal: {e}"))?;
        if ok {
            c.rebuilt += 1;
        } else {
            c.violations
                .push(format!("{id} cannot be built again after the crash"));
        }
    }

    c.violations.extend(spec.leftovers(&opened).await);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use store_api::User;

    use store_fake::FakeStore;

    /// The fake under a root (`store_fake::testing::FakeSpec` implements the trait of
    /// another build of this crate, so the tests have their own).
    struct FakeSpec(std::path::PathBuf);

    impl FakeSpec {
        fn new(root: std::path::PathBuf) -> Self {
            Self(root)
        }
    }

    #[async_trait::async_trait]
    impl StoreSpec for FakeSpec {
        type Store = FakeStore;

        fn encode(&self) -> String {
            self.0.display().to_string()
        }

        fn decode(line: &str) -> Result<Self, String> {
            Ok(Self(line.into()))
        }

        async fn open(&self) -> Result<FakeStore, String> {
            FakeStore::open(&self.0).map_err(|e| e.to_string())
        }
    }

    async fn fixture() -> (tempfile::TempDir, FakeSpec, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = FakeSpec::new(dir.path().join("store"));
        let opened = open(&target).await;
        let (name, content) = SENTINEL;
        std::fs::write(opened.state_dir().join(name), content).expect("sentinel");
        let journal = dir.path().join("journal");
        (dir, target, journal)
    }

    fn log(journal: &Path, recs: &[Rec]) {
        let j = Journal::open(journal).expect("journal");
        for r in recs {
            j.append(r).expect("append");
        }
    }

    async fn open(target: &FakeSpec) -> Arc<dyn Store> {
        Arc::new(target.open().await.expect("open"))
    }

    async fn check(target: &FakeSpec, journal: &Path) -> Vec<String> {
        after_crash(target, journal, false)
            .await
            .expect("checked")
            .violations
    }

    #[tokio::test]
    async fn a_consistent_store_passes() {
        let (_d, target, journal) = fixture().await;
        let opened = open(&target).await;
        let model = Model::default();
        assert!(build(&opened, &model, "a", None).await);
        drop(opened);
        log(
            &journal,
            &[
                Rec::BeginBuild {
                    id: "a".into(),
                    base: None,
                },
                Rec::DoneBuild {
                    id: "a".into(),
                    ok: true,
                },
                Rec::BeginBuild {
                    id: "b".into(),
                    base: Some("a".into()),
                },
            ],
        );
        assert_eq!(check(&target, &journal).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn lost_results_unknown_results_and_mixed_caches_are_violations() {
        let (_d, target, journal) = fixture().await;
        let opened = open(&target).await;
        assert!(build(&opened, &Model::default(), "stray", None).await);
        let lease = opened
            .cache(User::ROOT, &CacheName::new("c0").expect("name"))
            .await
            .expect("cache");
        std::fs::write(lease.path().join("token"), "x").expect("write");
        std::fs::write(lease.path().join("token2"), "y").expect("write");
        lease.release().await.expect("release");
        drop(opened);
        log(
            &journal,
            &[
                Rec::BeginBuild {
                    id: "gone".into(),
                    base: None,
                },
                Rec::DoneBuild {
                    id: "gone".into(),
                    ok: true,
                },
            ],
        );
        let found = check(&target, &journal).await.join("\n");
        for expected in [
            "gone was committed",
            "stray has a result but the child never built it",
            "cache \"c0\" holds a mix",
        ] {
            assert!(found.contains(expected), "{expected} in:\n{found}");
        }
    }

    #[tokio::test]
    async fn a_touched_state_dir_is_a_violation() {
        let (_d, target, journal) = fixture().await;
        let opened = open(&target).await;
        std::fs::write(opened.state_dir().join(SENTINEL.0), "changed").expect("write");
        drop(opened);
        let found = check(&target, &journal).await.join("\n");
        assert!(found.contains("state_dir"), "{found}");
    }
}
