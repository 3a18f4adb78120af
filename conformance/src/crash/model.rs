//! What the store may hold, replayed from the journal: for every id whether its result must
//! exist, may exist or must not; for every cache which contents it may have; and the exact
//! files of every result.

use std::collections::{BTreeMap, BTreeSet};

use super::journal::{Deleted, Rec, Released};

/// What is known of one id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Its build returned success (or the parent saw it): the result must be there.
    Committed,
    /// A build or delete of it was in flight at the crash, or a delete failed: present
    /// (complete) or absent.
    Maybe,
    /// Never built successfully, or deleted: no result.
    Absent,
}

/// What is known of one cache: the contents it may have (`None`: empty or gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheKnown {
    pub allowed: BTreeSet<Option<String>>,
    before_delete: Option<BTreeSet<Option<String>>>,
}

/// The whole model.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub results: BTreeMap<String, Known>,
    pub bases: BTreeMap<String, Option<String>>,
    pub caches: BTreeMap<String, CacheKnown>,
    /// Operations begun and not (yet) done, for reports.
    pub open: Vec<String>,
}

impl Model {
    /// The model after every record of `recs`.
    pub fn replay(recs: &[Rec]) -> Self {
        let mut m = Model::default();
        for r in recs {
            m.apply(r);
        }
        m
    }

    fn cache(&mut self, name: &str) -> &mut CacheKnown {
        self.caches
            .entry(name.to_owned())
            .or_insert_with(|| CacheKnown {
                allowed: BTreeSet::from([None]),
                before_delete: None,
            })
    }

    fn opened(&mut self, what: String) {
        self.open.push(what);
    }

    fn closed(&mut self, what: &str) {
        if let Some(i) = self.open.iter().position(|o| o == what) {
            self.open.remove(i);
        }
    }

    /// Applies one record.
    pub fn apply(&mut self, rec: &Rec) {
        match rec {
            Rec::BeginBuild { id, base } => {
                self.bases.insert(id.clone(), base.clone());
                self.results.insert(id.clone(), Known::Maybe);
                self.opened(format!("build {id}"));
            }
            Rec::DoneBuild { id, ok } => {
                let k = if *ok { Known::Committed } else { Known::Absent };
                self.results.insert(id.clone(), k);
                self.closed(&format!("build {id}"));
            }
            Rec::BeginDelete { id } => {
                if self.results.get(id) != Some(&Known::Absent) {
                    self.results.insert(id.clone(), Known::Maybe);
                }
                self.opened(format!("delete {id}"));
            }
            Rec::DoneDelete { id, ok } => {
                if *ok {
                    self.results.insert(id.clone(), Known::Absent);
                }
                self.closed(&format!("delete {id}"));
            }
            Rec::BeginRelease { cache, token } => {
                self.cache(cache).allowed.insert(Some(token.clone()));
                self.opened(format!("release {cache:?} {token}"));
            }
            Rec::DoneRelease {
                cache,
                token,
                outcome,
            } => {
                let c = self.cache(cache);
                match outcome {
                    Released::Published => c.allowed = BTreeSet::from([Some(token.clone())]),
                    Released::Discarded => {
                        c.allowed.remove(&Some(token.clone()));
                    }
                    Released::Failed => {}
                }
                self.closed(&format!("release {cache:?} {token}"));
            }
            Rec::BeginDeleteCache { cache } => {
                let c = self.cache(cache);
                c.before_delete = Some(c.allowed.clone());
                c.allowed.insert(None);
                self.opened(format!("delete_cache {cache:?}"));
            }
            Rec::DoneDeleteCache { cache, outcome } => {
                let c = self.cache(cache);
                let before = c.before_delete.take();
                match outcome {
                    Deleted::Gone => c.allowed = BTreeSet::from([None]),
                    Deleted::Busy => {
                        if let Some(b) = before {
                            c.allowed = b;
                        }
                    }
                    Deleted::Failed => {}
                }
                self.closed(&format!("delete_cache {cache:?}"));
            }
            Rec::Killed { .. } => self.open.clear(),
            Rec::Present { id } => {
                self.results.insert(id.clone(), Known::Committed);
            }
            Rec::Absent { id } => {
                self.results.insert(id.clone(), Known::Absent);
            }
            Rec::CacheIs { cache, token } => {
                self.cache(cache).allowed = BTreeSet::from([token.clone()]);
            }
        }
    }

    /// The ids whose result must exist.
    pub fn committed(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|(_, k)| **k == Known::Committed)
            .map(|(i, _)| i.clone())
            .collect()
    }

    /// How many builds lie under `id` (0 for a build without base).
    pub fn depth(&self, id: &str) -> usize {
        let mut d = 0;
        let mut cur = id;
        while let Some(Some(b)) = self.bases.get(cur) {
            d += 1;
            cur = b;
        }
        d
    }

    /// Exactly the files the result of `id` holds: every ancestor's `own/<id>`, its chain of
    /// ids, and a blob of its own.
    pub fn files(&self, id: &str) -> BTreeMap<String, String> {
        let mut chain = vec![id.to_owned()];
        let mut cur = id;
        while let Some(Some(b)) = self.bases.get(cur) {
            chain.push(b.clone());
            cur = b;
        }
        chain.reverse();
        let mut files: BTreeMap<String, String> = chain
            .iter()
            .map(|a| (format!("own/{a}"), a.clone()))
            .collect();
        files.insert("chain".into(), chain.join("/"));
        files.insert("blob".into(), blob(id));
        files
    }
}

/// The blob a build of `id` writes: `id` repeated to a few KiB, so a half-written or
/// half-copied result is told from a complete one.
pub fn blob(id: &str) -> String {
    id.repeat(8192 / id.len().max(1) + 1)
}

/// The files a build of `id` writes into its directory (on top of its base's).
pub fn writes(model: &Model, id: &str) -> Vec<(String, String)> {
    let f = model.files(id);
    vec![
        ("chain".into(), f["chain"].clone()),
        (format!("own/{id}"), id.to_owned()),
        ("blob".into(), f["blob"].clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, base: Option<&str>) -> Rec {
        Rec::BeginBuild {
            id: id.into(),
            base: base.map(Into::into),
        }
    }

    #[test]
    fn builds_and_deletes() {
        let m = Model::replay(&[
            b("a", None),
            Rec::DoneBuild {
                id: "a".into(),
                ok: true,
            },
            b("b", Some("a")),
            Rec::BeginDelete { id: "a".into() },
        ]);
        assert_eq!(m.results["a"], Known::Maybe);
        assert_eq!(m.results["b"], Known::Maybe);
        assert_eq!(m.depth("b"), 1);
        let f = m.files("b");
        assert_eq!(f["chain"], "a/b");
        assert_eq!(f["own/a"], "a");
        assert_eq!(f.len(), 4);
        assert_eq!(m.open, ["build b", "delete a"]);
    }

    #[test]
    fn caches_allow_the_old_or_the_new_version() {
        let mut m = Model::replay(&[
            Rec::BeginRelease {
                cache: "c".into(),
                token: "t1".into(),
            },
            Rec::DoneRelease {
                cache: "c".into(),
                token: "t1".into(),
                outcome: Released::Published,
            },
            Rec::BeginRelease {
                cache: "c".into(),
                token: "t2".into(),
            },
        ]);
        assert_eq!(
            m.caches["c"].allowed,
            BTreeSet::from([Some("t1".into()), Some("t2".into())])
        );
        m.apply(&Rec::DoneRelease {
            cache: "c".into(),
            token: "t2".into(),
            outcome: Released::Discarded,
        });
        assert_eq!(m.caches["c"].allowed, BTreeSet::from([Some("t1".into())]));
        m.apply(&Rec::BeginDeleteCache { cache: "c".into() });
        assert!(m.caches["c"].allowed.contains(&None));
        m.apply(&Rec::DoneDeleteCache {
            cache: "c".into(),
            outcome: Deleted::Busy,
        });
        assert_eq!(m.caches["c"].allowed, BTreeSet::from([Some("t1".into())]));
    }
}
