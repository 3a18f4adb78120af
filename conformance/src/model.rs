//! The reference model of the contract: pure and in memory. Results are file trees; each cache
//! is a tree with an owner and a version stamp; each copy out remembers the version it was taken
//! from. Nothing here touches a store.

use std::collections::BTreeMap;

use store_api::{CacheName, Id, ReleaseOutcome, User};

use crate::tree::{Edit, Tree};

/// What `delete_cache` does while copies of the cache are out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyRule {
    /// It returns `Busy` and changes nothing, exactly when a copy is out.
    ReportsBusy,
    /// It never returns `Busy`: the cache is deleted, and every copy out is discarded when it
    /// is released ("delete wins, late release discarded").
    DeleteWins,
}

/// A cache as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheState {
    /// The latest released contents.
    pub tree: Tree,
    /// The user the cache was created for (owner of its top directory).
    pub owner: User,
    /// A stamp unique to this version of this incarnation of the cache.
    pub version: u64,
}

/// A copy of a cache that is out (acquired, not yet released or dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyState {
    /// The cache it is a copy of.
    pub cache: CacheName,
    /// The version stamp it was taken from.
    pub version: u64,
    /// Its contents now (as written by its holder).
    pub tree: Tree,
    /// The owner its top directory must have.
    pub owner: User,
}

/// The model's answer to `delete_cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteCacheExpect {
    /// `Ok(())` (the cache, if any, is gone).
    Deleted,
    /// `Err(Busy)`, nothing changed.
    Busy,
}

/// The state of a store according to the contract.
#[derive(Clone, Debug)]
pub struct Model {
    /// Results by id.
    pub results: BTreeMap<Id, Tree>,
    /// Caches by name.
    pub caches: BTreeMap<CacheName, CacheState>,
    /// Copies out, in the order they were acquired.
    pub copies: Vec<CopyState>,
    next_version: u64,
    busy: BusyRule,
}

impl Model {
    /// An empty store.
    pub fn new(busy: BusyRule) -> Self {
        Self {
            results: BTreeMap::new(),
            caches: BTreeMap::new(),
            copies: Vec::new(),
            next_version: 0,
            busy,
        }
    }

    /// What a build's directory must hold when `f` starts: empty, or the base's result.
    /// `None` if the base has no result (`MissingBase` is expected, `f` must not run).
    pub fn build_start(&self, base: Option<&Id>) -> Option<Tree> {
        match base {
            None => Some(Tree::new()),
            Some(base) => self.results.get(base).cloned(),
        }
    }

    /// Records a successful build.
    pub fn record(&mut self, id: Id, tree: Tree) {
        self.results.insert(id, tree);
    }

    /// `delete(id)`: other results are values, so they are untouched.
    pub fn delete(&mut self, id: &Id) {
        self.results.remove(id);
    }

    /// Turns a generated copy index into a position in [`Model::copies`], if any copy is out.
    pub fn resolve_copy(&self, index: usize) -> Option<usize> {
        (!self.copies.is_empty()).then(|| index % self.copies.len())
    }

    /// `cache(user, name)`: returns the position of the new copy and whether the cache was
    /// created by this call.
    pub fn acquire(&mut self, name: &CacheName, user: User) -> (usize, bool) {
        let created = !self.caches.contains_key(name);
        if created {
            let version = self.fresh_version();
            self.caches.insert(
                name.clone(),
                CacheState {
                    tree: Tree::new(),
                    owner: user,
                    version,
                },
            );
        }
        let cache = &self.caches[name];
        self.copies.push(CopyState {
            cache: name.clone(),
            version: cache.version,
            tree: cache.tree.clone(),
            owner: cache.owner,
        });
        (self.copies.len() - 1, created)
    }

    /// An edit by the holder of copy `pos`.
    pub fn write(&mut self, pos: usize, edit: &Edit) {
        self.copies[pos].tree.apply(edit);
    }

    /// `release` of copy `pos`: published iff the cache is still at the version the copy was
    /// taken from (first release of a generation wins; a deleted cache discards it).
    pub fn release(&mut self, pos: usize) -> ReleaseOutcome {
        let copy = self.copies.remove(pos);
        let current = self
            .caches
            .get(&copy.cache)
            .is_some_and(|c| c.version == copy.version);
        if !current {
            return ReleaseOutcome::Discarded;
        }
        let version = self.fresh_version();
        if let Some(cache) = self.caches.get_mut(&copy.cache) {
            cache.tree = copy.tree;
            cache.version = version;
        }
        ReleaseOutcome::Published
    }

    /// Copy `pos` dropped without release: discarded.
    pub fn drop_copy(&mut self, pos: usize) {
        self.copies.remove(pos);
    }

    /// Whether a copy of `name` is out.
    pub fn copy_out(&self, name: &CacheName) -> bool {
        self.copies.iter().any(|c| &c.cache == name)
    }

    /// `delete_cache(name)`.
    pub fn delete_cache(&mut self, name: &CacheName) -> DeleteCacheExpect {
        if self.busy == BusyRule::ReportsBusy && self.copy_out(name) {
            return DeleteCacheExpect::Busy;
        }
        self.caches.remove(name);
        DeleteCacheExpect::Deleted
    }

    /// The store was closed and opened again: every copy out was dropped first.
    pub fn reopen(&mut self) {
        self.copies.clear();
    }

    fn fresh_version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> CacheName {
        CacheName::new(s).expect("valid")
    }

    fn write(n: &str) -> Edit {
        Edit::Write {
            path: "data".into(),
            content: n.into(),
            mode: 0o644,
        }
    }

    #[test]
    fn first_release_of_a_generation_wins() {
        let mut m = Model::new(BusyRule::ReportsBusy);
        let c = name("c1");
        let (a, created) = m.acquire(&c, User::ROOT);
        assert!(created);
        let (b, created) = m.acquire(&c, User::ROOT);
        assert!(!created);
        m.write(a, &write("v2a"));
        m.write(b, &write("v2b"));
        assert_eq!(m.release(b), ReleaseOutcome::Published);
        assert_eq!(m.release(0), ReleaseOutcome::Discarded);
        assert_eq!(
            m.caches[&c].tree.get("data"),
            {
                let mut t = Tree::new();
                t.apply(&write("v2b"));
                t.get("data").cloned()
            }
            .as_ref()
        );
    }

    #[test]
    fn busy_only_while_a_copy_is_out() {
        let mut m = Model::new(BusyRule::ReportsBusy);
        let c = name("c1");
        let (a, _) = m.acquire(&c, User::ROOT);
        assert_eq!(m.delete_cache(&c), DeleteCacheExpect::Busy);
        m.drop_copy(a);
        assert_eq!(m.delete_cache(&c), DeleteCacheExpect::Deleted);
        assert!(m.caches.is_empty());
    }

    #[test]
    fn delete_wins_discards_late_release_even_after_recreation() {
        let mut m = Model::new(BusyRule::DeleteWins);
        let c = name("c1");
        m.acquire(&c, User::ROOT);
        assert_eq!(m.delete_cache(&c), DeleteCacheExpect::Deleted);
        let (_, created) = m.acquire(&c, User::ROOT);
        assert!(created);
        assert_eq!(m.release(0), ReleaseOutcome::Discarded);
        assert_eq!(m.release(0), ReleaseOutcome::Published);
    }
}
