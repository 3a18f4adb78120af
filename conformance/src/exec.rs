//! The runner: executes [`Op`]s against a real store, applies them to the [`Model`], and after
//! every step compares the two.

use std::any::Any;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use store_api::{
    BuildError, CacheLease, CacheName, DeleteCacheError, Id, ReleaseOutcome, Store, StoreError,
    StoreExt, User,
};

use crate::factory::{Capabilities, SharedFactory};
use crate::model::{DeleteCacheExpect, Model};
use crate::ops::{Ending, Op};
use crate::quiet_panic::HarnessPanic;
use crate::tree::{Edit, LOG_MODE, Tree, write_file};

/// The settings of a run that the runner needs.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub op_timeout: Duration,
    pub check_ownership: bool,
    pub full_check_each_step: bool,
}

/// The error a generated build function returns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FnError {
    /// The failure the op asked for, tagged so the suite can tell it came back unchanged.
    Intended(u64),
    /// The function itself could not do its work in the build directory.
    Harness(String),
}

/// What a generated build function saw while it ran.
#[derive(Default)]
struct Seen {
    ran: bool,
    initial: Option<Result<Tree, String>>,
    base_deleted: bool,
    problems: Vec<String>,
}

/// How the build future ended, from the runner's side.
enum BuildEnd {
    Completed(Result<(), BuildError<FnError>>),
    Panicked(Box<dyn Any + Send>),
    Dropped,
}

/// One store under test, its storage, its model, and the copies out.
pub(crate) struct Session {
    factory: SharedFactory,
    caps: Capabilities,
    settings: Settings,
    store: Option<Arc<dyn Store>>,
    storage: Option<Box<dyn Any + Send + Sync>>,
    pub(crate) model: Model,
    leases: Vec<CacheLease>,
    /// For each copy out, the step that acquired it (for notes).
    lease_steps: Vec<usize>,
    known_ids: BTreeSet<Id>,
    /// Results whose path accepted writes: the store promises those writes have no effect on
    /// the result (later builds from it, reopen), but the readable path itself may show them.
    tampered: BTreeSet<Id>,
    state_dir_expected: Tree,
    step_no: usize,
}

/// A step that was not run because it would break a promise of the caller.
pub(crate) const SKIPPED: &str = "skipped";

impl Session {
    /// Makes fresh storage, opens a store on it, and marks its `state_dir`.
    pub(crate) async fn open(factory: SharedFactory, settings: Settings) -> Result<Self, String> {
        let caps = factory.capabilities();
        let (store, storage) = tokio::time::timeout(settings.op_timeout, factory.fresh())
            .await
            .map_err(|_| "opening a fresh store timed out".to_owned())?
            .map_err(|e| format!("the factory could not open a fresh store: {e}"))?;
        let mut session = Self {
            model: Model::new(caps.busy_rule()),
            factory,
            caps,
            settings,
            store: Some(store),
            storage: Some(storage),
            leases: Vec::new(),
            lease_steps: Vec::new(),
            known_ids: BTreeSet::new(),
            tampered: BTreeSet::new(),
            state_dir_expected: Tree::new(),
            step_no: 0,
        };
        session.mark_state_dir()?;
        Ok(session)
    }

    pub(crate) fn store(&self) -> Result<&Arc<dyn Store>, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "internal error: no store open".to_owned())
    }

    fn mark_state_dir(&mut self) -> Result<(), String> {
        let dir = self.store()?.state_dir().to_path_buf();
        let before = Tree::read(&dir).map_err(|e| format!("state_dir after open: {e}"))?;
        let marker = dir.join("conformance-marker");
        write_file(&marker, b"the builder's own state", 0o600)
            .map_err(|e| format!("the builder cannot write in state_dir: {e}"))?;
        self.state_dir_expected = before;
        self.state_dir_expected
            .put_file("conformance-marker", b"the builder's own state", 0o600);
        Ok(())
    }

    async fn timed<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout(self.settings.op_timeout, fut)
            .await
            .map_err(|_| {
                format!(
                    "{what} did not finish within {:?} (hung?)",
                    self.settings.op_timeout
                )
            })
    }

    /// Runs one step and compares the store with the model afterwards. Returns a note for the
    /// script (what a copy index resolved to, or that the step was skipped).
    pub(crate) async fn step(&mut self, op: &Op) -> Result<String, String> {
        self.step_no += 1;
        let mut touched_ids = Vec::new();
        let mut touched_caches = Vec::new();
        let note = match op {
            Op::Build {
                id,
                base,
                edits,
                log,
                delete_base_while_running,
                ending,
            } => {
                self.known_ids.insert(id.clone());
                touched_ids.push(id.clone());
                if let Some(base) = base {
                    self.known_ids.insert(base.clone());
                    touched_ids.push(base.clone());
                }
                if self.model.results.contains_key(id) {
                    return Ok(format!("{SKIPPED}: {id} already has a result"));
                }
                self.build(
                    id,
                    base.as_ref(),
                    edits,
                    log.as_deref(),
                    *delete_base_while_running,
                    *ending,
                )
                .await?
            }
            Op::Delete { id } => {
                self.known_ids.insert(id.clone());
                touched_ids.push(id.clone());
                let store = Arc::clone(self.store()?);
                self.timed("delete", store.delete(id))
                    .await?
                    .map_err(|e| format!("delete({id}) failed: {e}"))?;
                self.model.delete(id);
                self.tampered.remove(id);
                String::new()
            }
            Op::Tamper { id } => {
                touched_ids.push(id.clone());
                self.tamper(id).await?
            }
            Op::Acquire { cache, user } => {
                touched_caches.push(cache.clone());
                self.acquire(cache, *user).await?
            }
            Op::Write { copy, edit } => {
                let Some(pos) = self.model.resolve_copy(*copy) else {
                    return Ok(format!("{SKIPPED}: no copy is out"));
                };
                edit.apply_to_dir(self.leases[pos].path())
                    .map_err(|e| format!("writing in a cache copy failed: {e}"))?;
                self.model.write(pos, edit);
                self.copy_note(pos)
            }
            Op::Release { copy } => {
                let Some(pos) = self.model.resolve_copy(*copy) else {
                    return Ok(format!("{SKIPPED}: no copy is out"));
                };
                let note = self.copy_note(pos);
                let name = self.model.copies[pos].cache.clone();
                touched_caches.push(name.clone());
                let lease = self.leases.remove(pos);
                self.lease_steps.remove(pos);
                let expected = self.model.release(pos);
                let got = self
                    .timed("release", lease.release())
                    .await?
                    .map_err(|e| format!("release of a copy of {name:?} failed: {e}"))?;
                if got != expected {
                    return Err(format!(
                        "release of a copy of {name:?} returned {got:?}, the contract says \
                         {expected:?} ({})",
                        match expected {
                            ReleaseOutcome::Published => {
                                "the cache was not updated since the copy was taken"
                            }
                            ReleaseOutcome::Discarded => {
                                "the cache was updated or deleted since the copy was taken"
                            }
                        }
                    ));
                }
                format!("{note}: {got:?}")
            }
            Op::DropCopy { copy } => {
                let Some(pos) = self.model.resolve_copy(*copy) else {
                    return Ok(format!("{SKIPPED}: no copy is out"));
                };
                let note = self.copy_note(pos);
                touched_caches.push(self.model.copies[pos].cache.clone());
                drop(self.leases.remove(pos));
                self.lease_steps.remove(pos);
                self.model.drop_copy(pos);
                note
            }
            Op::DeleteCache { cache } => {
                touched_caches.push(cache.clone());
                self.delete_cache(cache).await?
            }
            Op::CompleteDeletes => {
                let store = Arc::clone(self.store()?);
                self.timed("complete_deletes", store.complete_deletes())
                    .await?
                    .map_err(|e| format!("complete_deletes failed: {e}"))?;
                let df = self
                    .timed("df", store.df())
                    .await?
                    .map_err(|e| format!("df failed: {e}"))?;
                if !(0.0..=100.0).contains(&df) {
                    return Err(format!("df returned {df}, not a percentage from 0 to 100"));
                }
                format!("df = {df:.1}%")
            }
            Op::Reopen => {
                if !self.caps.can_reopen {
                    return Ok(format!("{SKIPPED}: the backend cannot reopen"));
                }
                self.reopen().await?;
                return self.check(None).await.map(|()| String::new());
            }
        };
        let scope = (!self.settings.full_check_each_step).then_some((touched_ids, touched_caches));
        self.check(scope).await?;
        Ok(note)
    }

    fn copy_note(&self, pos: usize) -> String {
        format!(
            "copy of {:?} acquired at step {}",
            self.model.copies[pos].cache.as_str(),
            self.lease_steps[pos]
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn build(
        &mut self,
        id: &Id,
        base: Option<&Id>,
        edits: &[Edit],
        log: Option<&str>,
        delete_base: bool,
        ending: Ending,
    ) -> Result<String, String> {
        let start = self.model.build_start(base);
        let store = Arc::clone(self.store()?);
        let seen = Arc::new(Mutex::new(Seen::default()));
        // A first-poll cancellation could drop the base deletion half-way, which the model
        // cannot predict; only let it happen where the function surely finishes it.
        let delete_base = delete_base && base.is_some() && ending != Ending::CancelEarly;
        let tag = self.step_no as u64;
        let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
        let f = {
            let store = Arc::clone(&store);
            let seen = Arc::clone(&seen);
            let id = id.clone();
            let base = base.cloned();
            let edits = edits.to_vec();
            let log = log.map(str::to_owned);
            move |dir: PathBuf| async move {
                build_function(
                    store,
                    seen,
                    dir,
                    id,
                    base,
                    edits,
                    log,
                    delete_base,
                    ending,
                    tag,
                    reached_tx,
                )
                .await
            }
        };
        let fut = store.build(base, id, f);
        let end = match ending {
            Ending::Succeed | Ending::Fail => BuildEnd::Completed(self.timed("build", fut).await?),
            Ending::Panic => {
                match self
                    .timed("build", AssertUnwindSafe(fut).catch_unwind())
                    .await?
                {
                    Ok(r) => BuildEnd::Completed(r),
                    Err(payload) => BuildEnd::Panicked(payload),
                }
            }
            Ending::CancelWhileRunning => {
                let mut fut = Box::pin(fut);
                let raced = self
                    .timed("build (until its function was running)", async {
                        tokio::select! {
                            r = &mut fut => BuildEnd::Completed(r),
                            _ = reached_rx => BuildEnd::Dropped,
                        }
                    })
                    .await?;
                drop(fut);
                raced
            }
            Ending::CancelEarly => {
                let mut fut = Box::pin(fut);
                match futures::poll!(&mut fut) {
                    Poll::Ready(r) => BuildEnd::Completed(r),
                    Poll::Pending => {
                        drop(fut);
                        BuildEnd::Dropped
                    }
                }
            }
        };
        drop(store);
        let seen = match Arc::try_unwrap(seen) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            // The store kept the build function alive (or leaked it): use what it recorded.
            Err(arc) => std::mem::take(&mut *arc.lock().unwrap_or_else(|p| p.into_inner())),
        };
        self.judge_build(id, base, edits, log, ending, start, seen, end)
    }

    #[allow(clippy::too_many_arguments)]
    fn judge_build(
        &mut self,
        id: &Id,
        base: Option<&Id>,
        edits: &[Edit],
        log: Option<&str>,
        ending: Ending,
        start: Option<Tree>,
        seen: Seen,
        end: BuildEnd,
    ) -> Result<String, String> {
        let Some(start) = start else {
            let base = base.map(ToString::to_string).unwrap_or_default();
            if seen.ran {
                return Err(format!(
                    "build of {id} ran the build function although its base {base} has no result"
                ));
            }
            return match end {
                BuildEnd::Completed(Err(BuildError::Store(StoreError::MissingBase {
                    base: b,
                }))) if b.as_str() == base => Ok("MissingBase, as expected".into()),
                BuildEnd::Dropped if ending == Ending::CancelEarly => Ok("dropped".into()),
                other => Err(format!(
                    "build of {id} from {base}, which has no result: expected \
                     Err(Store(MissingBase {{ base: {base} }})), got {}",
                    describe_end(&other)
                )),
            };
        };
        if let Some(Err(e)) = &seen.initial {
            return Err(format!(
                "build of {id}: could not read the build directory: {e}"
            ));
        }
        if let Some(Ok(initial)) = &seen.initial
            && let Some(diff) = start.diff(initial)
        {
            return Err(format!(
                "build of {id}: the build directory did not start as {} (differences, expected \
                 vs found):\n{diff}",
                match base {
                    Some(b) => format!("a copy of the result of {b}"),
                    None => "an empty directory".into(),
                }
            ));
        }
        if !seen.problems.is_empty() {
            return Err(format!("build of {id}: {}", seen.problems.join("; ")));
        }
        if seen.base_deleted
            && let Some(base) = base
        {
            self.model.delete(base);
            self.tampered.remove(base);
        }
        let mut expected = start;
        for edit in edits {
            expected.apply(edit);
        }
        if let Some(log) = log {
            expected.put_file("log", log.as_bytes(), LOG_MODE);
        }
        let tag = self.step_no as u64;
        match (ending, end) {
            (Ending::Succeed, BuildEnd::Completed(Ok(())))
            | (Ending::CancelEarly, BuildEnd::Completed(Ok(()))) => {
                self.model.record(id.clone(), expected);
                Ok(if ending == Ending::CancelEarly {
                    "completed in its first poll".into()
                } else {
                    String::new()
                })
            }
            (Ending::Fail, BuildEnd::Completed(Err(BuildError::Failed(FnError::Intended(t)))))
                if t == tag =>
            {
                Ok(String::new())
            }
            (Ending::Panic, BuildEnd::Panicked(payload))
                if payload
                    .downcast_ref::<HarnessPanic>()
                    .is_some_and(|p| p.0 == tag) =>
            {
                Ok(String::new())
            }
            (Ending::CancelWhileRunning | Ending::CancelEarly, BuildEnd::Dropped) => {
                Ok("dropped".into())
            }
            (_, BuildEnd::Completed(Err(BuildError::Failed(FnError::Harness(msg))))) => Err(
                format!("build of {id}: the build function could not work in its directory: {msg}"),
            ),
            (ending, end) => Err(format!(
                "build of {id} whose function {ending}: expected {}, got {}",
                match ending {
                    Ending::Succeed => "Ok(())".to_owned(),
                    Ending::Fail => format!("the function's own error Failed(Intended({tag}))"),
                    Ending::Panic => "the function's own panic, resumed".to_owned(),
                    Ending::CancelWhileRunning | Ending::CancelEarly =>
                        "the future to still be pending".to_owned(),
                },
                describe_end(&end)
            )),
        }
    }

    async fn tamper(&mut self, id: &Id) -> Result<String, String> {
        let Some(tree) = self.model.results.get(id).cloned() else {
            return Ok(format!("{SKIPPED}: {id} has no result"));
        };
        let store = Arc::clone(self.store()?);
        let path = self
            .timed("result", store.result(id))
            .await?
            .map_err(|e| format!("result({id}) failed: {e}"))?
            .ok_or_else(|| format!("result({id}) is None, but {id} was built and not deleted"))?;
        // Every attempt may fail (that is the point); the check after the step decides.
        let mut landed = Vec::new();
        if fs::write(path.join("tampered"), b"tampered").is_ok() {
            landed.push("created a file");
        }
        let first_file = tree
            .entries()
            .iter()
            .find(|(_, n)| matches!(n, crate::tree::Node::File { .. }));
        if let Some((rel, _)) = first_file
            && fs::write(path.join(rel), b"tampered").is_ok()
        {
            landed.push("overwrote a file");
        }
        if let Some(rel) = tree.entries().keys().next() {
            let target = path.join(rel);
            let removed = if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&target).is_ok()
            } else {
                fs::remove_file(&target).is_ok()
            };
            if removed {
                landed.push("removed an entry");
            }
        }
        Ok(if landed.is_empty() {
            "every write was refused".into()
        } else {
            self.tampered.insert(id.clone());
            format!("writes were accepted ({})", landed.join(", "))
        })
    }

    async fn acquire(&mut self, name: &CacheName, user: User) -> Result<String, String> {
        let store = Arc::clone(self.store()?);
        let lease = self
            .timed("cache", store.cache(user, name))
            .await?
            .map_err(|e| format!("cache({user}, {name:?}) failed: {e}"))?;
        let (pos, created) = self.model.acquire(name, user);
        if lease.name() != name {
            return Err(format!(
                "cache({user}, {name:?}) returned a lease named {:?}",
                lease.name()
            ));
        }
        let expected = self.model.copies[pos].clone();
        self.check_copy(&lease, &expected.tree, expected.owner, "the new copy")?;
        self.leases.push(lease);
        self.lease_steps.push(self.step_no);
        Ok(if created {
            "creates the cache".into()
        } else {
            String::new()
        })
    }

    fn check_copy(
        &self,
        lease: &CacheLease,
        expected: &Tree,
        owner: User,
        what: &str,
    ) -> Result<(), String> {
        let name = lease.name();
        let tree =
            Tree::read(lease.path()).map_err(|e| format!("{what} of cache {name:?}: {e}"))?;
        if let Some(diff) = expected.diff(&tree) {
            return Err(format!(
                "{what} of cache {name:?} does not hold what the contract says (expected vs \
                 found):\n{diff}"
            ));
        }
        if self.settings.check_ownership {
            let meta =
                fs::metadata(lease.path()).map_err(|e| format!("{what} of cache {name:?}: {e}"))?;
            if (meta.uid(), meta.gid()) != (owner.uid(), owner.gid()) {
                return Err(format!(
                    "{what} of cache {name:?}: its top directory is owned by {}:{}, but the \
                     cache was created for {owner}",
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
        Ok(())
    }

    async fn delete_cache(&mut self, name: &CacheName) -> Result<String, String> {
        let store = Arc::clone(self.store()?);
        let copy_out = self.model.copy_out(name);
        let got = self.timed("delete_cache", store.delete_cache(name)).await?;
        let expected = self.model.delete_cache(name);
        match (expected, got) {
            (DeleteCacheExpect::Deleted, Ok(())) => Ok(String::new()),
            (DeleteCacheExpect::Busy, Err(DeleteCacheError::Busy { name: n })) if &n == name => {
                Ok("Busy, as expected".into())
            }
            (DeleteCacheExpect::Busy, Ok(())) => Err(format!(
                "delete_cache({name:?}) returned Ok while a copy is out, but the backend \
                 declares may_return_busy (Busy exactly while a copy is out)"
            )),
            (DeleteCacheExpect::Deleted, Err(DeleteCacheError::Busy { .. })) => Err(format!(
                "delete_cache({name:?}) returned Busy {}",
                if copy_out {
                    "although the backend declares it never returns Busy".to_owned()
                } else {
                    "although no copy of it is out".to_owned()
                }
            )),
            (_, Err(e)) => Err(format!("delete_cache({name:?}) failed: {e}")),
        }
    }

    async fn reopen(&mut self) -> Result<(), String> {
        self.leases.clear();
        self.lease_steps.clear();
        self.model.reopen();
        drop(self.store.take());
        let storage = self
            .storage
            .as_ref()
            .ok_or_else(|| "internal error: no storage".to_owned())?;
        let store = tokio::time::timeout(self.settings.op_timeout, self.factory.reopen(&**storage))
            .await
            .map_err(|_| "reopening the store timed out".to_owned())?
            .map_err(|e| format!("reopening the store failed: {e}"))?;
        self.store = Some(store);
        Ok(())
    }

    /// Compares the store with the model: results (presence, trees, logs), caches (through a
    /// fresh copy), copies out, and `state_dir`. With a scope, only the given ids and caches
    /// (copies out and `state_dir` are always checked).
    pub(crate) async fn check(
        &mut self,
        scope: Option<(Vec<Id>, Vec<CacheName>)>,
    ) -> Result<(), String> {
        let (ids, caches): (Vec<Id>, Vec<CacheName>) = match scope {
            Some((ids, caches)) => (
                ids,
                caches
                    .into_iter()
                    .filter(|c| self.model.caches.contains_key(c))
                    .collect(),
            ),
            None => (
                self.known_ids
                    .iter()
                    .chain(self.model.results.keys())
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                self.model.caches.keys().cloned().collect(),
            ),
        };
        for id in &ids {
            self.check_result(id).await?;
        }
        for (lease, copy) in self.leases.iter().zip(&self.model.copies) {
            self.check_copy(lease, &copy.tree, copy.owner, "a copy out")?;
        }
        for name in &caches {
            self.check_cache(name).await?;
        }
        let dir = self.store()?.state_dir().to_path_buf();
        let tree = Tree::read(&dir).map_err(|e| format!("state_dir: {e}"))?;
        if let Some(diff) = self.state_dir_expected.diff(&tree) {
            return Err(format!(
                "state_dir {} was changed by the store (expected vs found):\n{diff}",
                dir.display()
            ));
        }
        Ok(())
    }

    async fn check_result(&self, id: &Id) -> Result<(), String> {
        let store = Arc::clone(self.store()?);
        let got = self
            .timed("result", store.result(id))
            .await?
            .map_err(|e| format!("result({id}) failed: {e}"))?;
        match (self.model.results.get(id), got) {
            (None, None) => Ok(()),
            (None, Some(path)) => Err(format!(
                "result({id}) = Some({}), but the contract says {id} has no result",
                path.display()
            )),
            (Some(_), None) => Err(format!(
                "result({id}) = None, but {id} was built and not deleted"
            )),
            (Some(_), Some(_)) if self.tampered.contains(id) => Ok(()),
            (Some(expected), Some(path)) => {
                let tree = Tree::read(&path).map_err(|e| format!("result({id}): {e}"))?;
                if let Some(diff) = expected.diff(&tree) {
                    return Err(format!(
                        "result({id}) at {} does not hold what its build left (expected vs \
                         found):\n{diff}",
                        path.display()
                    ));
                }
                if let Some(crate::tree::Node::File { content, .. }) = expected.get("log") {
                    let log = self
                        .timed("log_file", store.log_file(id))
                        .await?
                        .map_err(|e| format!("log_file({id}) failed: {e}"))?;
                    let read = fs::read(&log)
                        .map_err(|e| format!("log_file({id}) = {}: {e}", log.display()))?;
                    if &read != content {
                        return Err(format!(
                            "log_file({id}) = {} holds {:?}, but the log in the result is {:?}",
                            log.display(),
                            String::from_utf8_lossy(&read),
                            String::from_utf8_lossy(content)
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    async fn check_cache(&self, name: &CacheName) -> Result<(), String> {
        let Some(cache) = self.model.caches.get(name) else {
            return Ok(());
        };
        let store = Arc::clone(self.store()?);
        let lease = self
            .timed("cache (to inspect it)", store.cache(cache.owner, name))
            .await?
            .map_err(|e| format!("cache({name:?}) to inspect it failed: {e}"))?;
        let checked = self.check_copy(&lease, &cache.tree, cache.owner, "the latest version");
        drop(lease);
        checked
    }

    /// Drops every copy and the store, then hands the storage to the factory's teardown.
    pub(crate) async fn close(mut self) -> Result<(), String> {
        self.leases.clear();
        drop(self.store.take());
        let Some(storage) = self.storage.take() else {
            return Ok(());
        };
        tokio::time::timeout(self.settings.op_timeout, self.factory.teardown(storage))
            .await
            .map_err(|_| "teardown timed out".to_owned())?
            .map_err(|e| format!("teardown (leak check) failed: {e}"))
    }
}

#[allow(clippy::too_many_arguments)]
async fn build_function(
    store: Arc<dyn Store>,
    seen: Arc<Mutex<Seen>>,
    dir: PathBuf,
    id: Id,
    base: Option<Id>,
    edits: Vec<Edit>,
    log: Option<String>,
    delete_base: bool,
    ending: Ending,
    tag: u64,
    reached: tokio::sync::oneshot::Sender<()>,
) -> Result<(), FnError> {
    let note = |f: &dyn Fn(&mut Seen)| f(&mut seen.lock().unwrap_or_else(|p| p.into_inner()));
    note(&|s| s.ran = true);
    let initial = Tree::read(&dir).map_err(|e| e.to_string());
    note(&|s| s.initial = Some(initial.clone()));
    match store.result(&id).await {
        Ok(None) => {}
        Ok(Some(p)) => note(&|s| {
            s.problems.push(format!(
                "result({id}) = Some({}) while its build was running",
                p.display()
            ))
        }),
        Err(e) => note(&|s| {
            s.problems
                .push(format!("result({id}) during its build: {e}"))
        }),
    }
    if let (true, Some(base)) = (delete_base, &base) {
        match store.delete(base).await {
            Ok(()) => note(&|s| s.base_deleted = true),
            Err(e) => note(&|s| {
                s.problems
                    .push(format!("delete({base}) while a build from it runs: {e}"))
            }),
        }
        if let Ok(before) = &initial {
            match Tree::read(&dir) {
                Ok(after) if &after == before => {}
                Ok(after) => note(&|s| {
                    s.problems.push(format!(
                        "deleting the base {base} changed the running build's directory: {}",
                        before.diff(&after).unwrap_or_default()
                    ))
                }),
                Err(e) => note(&|s| {
                    s.problems.push(format!(
                        "deleting the base {base} broke the running build's directory: {e}"
                    ))
                }),
            }
        }
    }
    for edit in &edits {
        edit.apply_to_dir(&dir)
            .map_err(|e| FnError::Harness(format!("{edit}: {e}")))?;
    }
    if let Some(log) = &log {
        let path = store
            .log_file(&id)
            .await
            .map_err(|e| FnError::Harness(format!("log_file({id}) during its build: {e}")))?;
        write_file(&path, log.as_bytes(), LOG_MODE).map_err(|e| {
            FnError::Harness(format!(
                "writing the log at log_file({id}) during its build: {e}"
            ))
        })?;
        if fs::read(dir.join("log")).ok().as_deref() != Some(log.as_bytes()) {
            note(&|s| {
                s.problems.push(format!(
                    "log_file({id}) = {} is not the file `log` in the build directory {}",
                    path.display(),
                    dir.display()
                ))
            });
        }
    }
    match ending {
        Ending::Succeed | Ending::CancelEarly => Ok(()),
        Ending::Fail => Err(FnError::Intended(tag)),
        Ending::Panic => std::panic::panic_any(HarnessPanic(tag)),
        Ending::CancelWhileRunning => {
            let _ = reached.send(());
            futures::future::pending().await
        }
    }
}

fn describe_end(end: &BuildEnd) -> String {
    match end {
        BuildEnd::Completed(Ok(())) => "Ok(())".into(),
        BuildEnd::Completed(Err(BuildError::Failed(e))) => format!("Err(Failed({e:?}))"),
        BuildEnd::Completed(Err(BuildError::Store(e))) => format!("Err(Store({e}))"),
        BuildEnd::Panicked(p) => match p.downcast_ref::<HarnessPanic>() {
            Some(HarnessPanic(t)) => format!("the function's panic (tag {t})"),
            None => match p.downcast_ref::<String>() {
                Some(s) => format!("a panic of the store: {s}"),
                None => format!(
                    "a panic with another payload: {:?}",
                    p.downcast_ref::<&str>()
                ),
            },
        },
        BuildEnd::Dropped => "nothing (the future was dropped)".into(),
    }
}

/// The uid and gid the suite runs as (the owner of files it creates).
pub(crate) fn current_user() -> User {
    let meta = fs::metadata("/proc/self").ok().or_else(|| {
        let f = tempfile::NamedTempFile::new().ok()?;
        f.as_file().metadata().ok()
    });
    meta.and_then(|m| User::new(m.uid(), m.gid()).ok())
        .unwrap_or(User::ROOT)
}
