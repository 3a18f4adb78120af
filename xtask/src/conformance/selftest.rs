//! SELF-TEST OF THE SUITE, NOT A STORE: a deliberately broken wrapper around `ZfsStore` (or
//! any store), run by `cargo xtask conformance --self-test-broken-store` (hidden) to prove
//! that the suite catches a real-looking defect on real ZFS, on every lane, with a shrunk
//! sequence.
//!
//! The defect: when the release of a cache copy comes back `Discarded` (another copy of the
//! same version was released first), the wrapper takes a fresh copy of the latest version,
//! writes the stale copy's files into it, publishes that, and reports `Published`: "last
//! writer wins", the classic lost-update bug. The contract says the first release of a
//! generation wins and a stale release is discarded.
//!
//! The self-test passes only if the `sequences` check fails for that reason with a minimal
//! sequence of at most [`MAX_SHRUNK_STEPS`] steps (the shortest is four: two acquires, two
//! releases), and nothing else went wrong (no leak, no set-up error).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use conformance::{Capabilities, FactoryError, StoreFactory};
use store_api::{
    BuildError, BuildFn, BuildFnError, CacheCopy, CacheLease, CacheName, DeleteCacheError, Id,
    ReleaseOutcome, Store, StoreError, User,
};

use super::report::{CaseStatus, SelfTestVerdict, SuiteReport};
use super::seam::SuiteOptions;

/// The check that must catch the defect.
pub const CHECK: &str = "sequences";
/// What its failure message must say.
pub const SYMPTOM: &str = "returned Published";
/// A minimal failing sequence longer than this was not shrunk (the same bound as the
/// conformance crate's own broken-store tests; sequences are generated up to
/// [`MAX_OPS`] steps).
pub const MAX_SHRUNK_STEPS: usize = 8;
/// The longest generated sequence.
pub const MAX_OPS: usize = 10;
/// The default seed. Stale releases are rare in random sequences (a few cases in a hundred
/// have one); with this seed and [`MAX_OPS`] the suite finds one and shrinks it to the
/// minimal four steps in 28 cases in all, which keeps the self-test to a few minutes even in
/// the guest. The generated sequences, and which of them fail, depend only on the seed for
/// every store that behaves as the contract says outside the defect.
pub const SEED: u64 = 5;

/// Sizes the run: only `sequences`, short sequences, quick checks, a fixed seed (each can
/// still be overridden on the command line).
pub fn configure(config: &mut conformance::Config, opts: &SuiteOptions) {
    config.only = Some(vec![CHECK.to_owned()]);
    config.cases = opts.cases.unwrap_or(60);
    config.max_ops = opts.max_ops.unwrap_or(MAX_OPS);
    config.seed = Some(opts.seed.unwrap_or(SEED));
    config.full_check_each_step = false;
    config.max_shrink_time = Duration::from_secs(300);
}

/// Whether the suite caught the broken store as it must.
pub fn verdict(report: &SuiteReport) -> SelfTestVerdict {
    let unexpected: Vec<&str> = report
        .cases
        .iter()
        .filter(|c| c.name != CHECK && c.status == CaseStatus::Failed)
        .map(|c| c.name.as_str())
        .collect();
    let Some(case) = report.cases.iter().find(|c| c.name == CHECK) else {
        return SelfTestVerdict::missed(format!("the {CHECK} check did not run"));
    };
    let message = case.message.as_deref().unwrap_or("");
    if !unexpected.is_empty() {
        return SelfTestVerdict::missed(format!("other checks failed too: {unexpected:?}"));
    }
    match (case.status, case.steps) {
        (CaseStatus::Failed, Some(n)) if n <= MAX_SHRUNK_STEPS && message.contains(SYMPTOM) => {
            SelfTestVerdict {
                caught: true,
                explanation: format!(
                    "the deliberately broken store (publishes stale cache copies) was caught by \
                     {CHECK} with a shrunk {n}-step sequence"
                ),
            }
        }
        (CaseStatus::Failed, Some(n)) if !message.contains(SYMPTOM) => {
            SelfTestVerdict::missed(format!(
                "{CHECK} failed ({n} steps), but not with \"{SYMPTOM}\": the broken store was \
                 caught for another reason"
            ))
        }
        (CaseStatus::Failed, Some(n)) => SelfTestVerdict::missed(format!(
            "{CHECK} caught it, but the sequence was not shrunk ({n} steps > {MAX_SHRUNK_STEPS})"
        )),
        (CaseStatus::Failed, None) => {
            SelfTestVerdict::missed(format!("{CHECK} failed without a failing sequence"))
        }
        (status, _) => SelfTestVerdict::missed(format!(
            "{CHECK} ended {status:?}: the suite did not catch the broken store"
        )),
    }
}

/// Opens stores through another factory (a `ZfsFactory` on the real lanes) and wraps each
/// in [`PublishesStaleCopies`].
pub struct BrokenFactory<F> {
    inner: F,
    opened: Arc<AtomicUsize>,
}

impl<F: StoreFactory> BrokenFactory<F> {
    /// Breaks the stores `inner` opens.
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            opened: Arc::default(),
        }
    }

    /// Counts the fresh stores opened (one per case run, shrinking included).
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.opened)
    }
}

#[async_trait]
impl<F: StoreFactory> StoreFactory for BrokenFactory<F> {
    type Storage = F::Storage;

    fn name(&self) -> String {
        format!("{}-broken-self-test", self.inner.name())
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn fresh(&self) -> Result<(Arc<dyn Store>, F::Storage), FactoryError> {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let (store, case) = self.inner.fresh().await?;
        Ok((PublishesStaleCopies::wrap(store), case))
    }

    async fn reopen(&self, case: &F::Storage) -> Result<Arc<dyn Store>, FactoryError> {
        Ok(PublishesStaleCopies::wrap(self.inner.reopen(case).await?))
    }

    async fn list_storage(&self, case: &F::Storage) -> Result<Option<Vec<String>>, FactoryError> {
        self.inner.list_storage(case).await
    }

    async fn teardown(&self, case: F::Storage) -> Result<(), FactoryError> {
        self.inner.teardown(case).await
    }
}

/// The broken store: `ZfsStore` except that a stale release is written into the latest
/// version and published.
pub struct PublishesStaleCopies {
    inner: Arc<dyn Store>,
}

impl PublishesStaleCopies {
    fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(Self { inner })
    }
}

#[async_trait]
impl Store for PublishesStaleCopies {
    fn root(&self) -> &Path {
        self.inner.root()
    }

    fn state_dir(&self) -> &Path {
        self.inner.state_dir()
    }

    async fn build_dyn(
        &self,
        base: Option<&Id>,
        id: &Id,
        f: BuildFn<'_>,
    ) -> Result<(), BuildError<BuildFnError>> {
        self.inner.build_dyn(base, id, f).await
    }

    async fn result(&self, id: &Id) -> Result<Option<PathBuf>, StoreError> {
        self.inner.result(id).await
    }

    async fn log_file(&self, id: &Id) -> Result<PathBuf, StoreError> {
        self.inner.log_file(id).await
    }

    async fn delete(&self, id: &Id) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }

    async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, StoreError> {
        let lease = self.inner.cache(user, name).await?;
        let path = lease.path().to_path_buf();
        Ok(CacheLease::new(
            name.clone(),
            path,
            Box::new(StaleCopy {
                store: Arc::clone(&self.inner),
                user,
                lease,
            }),
        ))
    }

    async fn delete_cache(&self, name: &CacheName) -> Result<(), DeleteCacheError> {
        self.inner.delete_cache(name).await
    }

    async fn complete_deletes(&self) -> Result<(), StoreError> {
        self.inner.complete_deletes().await
    }

    async fn df(&self) -> Result<f64, StoreError> {
        self.inner.df().await
    }
}

/// A copy whose stale release is forced through.
struct StaleCopy {
    store: Arc<dyn Store>,
    user: User,
    lease: CacheLease,
}

#[async_trait]
impl CacheCopy for StaleCopy {
    async fn release(self: Box<Self>) -> Result<ReleaseOutcome, StoreError> {
        let StaleCopy { store, user, lease } = *self;
        let name = lease.name().clone();
        let saved = tempfile::tempdir()
            .map_err(|e| StoreError::io("self-test: a scratch directory", "/tmp", e))?;
        copy_contents(lease.path(), saved.path())
            .map_err(|e| StoreError::io("self-test: saving a copy", lease.path(), e))?;
        match lease.release().await? {
            ReleaseOutcome::Published => Ok(ReleaseOutcome::Published),
            ReleaseOutcome::Discarded => {
                // THE DEFECT: write the stale copy into the latest version and publish it.
                let latest = store.cache(user, &name).await?;
                clear(latest.path())
                    .and_then(|()| copy_contents(saved.path(), latest.path()))
                    .map_err(|e| StoreError::io("self-test: overwriting", latest.path(), e))?;
                latest.release().await
            }
        }
    }

    fn discard(self: Box<Self>) {
        drop(self.lease);
    }
}

/// Removes everything inside `dir` (not `dir` itself).
fn clear(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Copies the files, directories and symlinks inside `from` into `to`, with their modes.
fn copy_contents(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if meta.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_contents(&src, &dst)?;
            std::fs::set_permissions(&dst, meta.permissions())?;
        } else {
            std::fs::copy(&src, &dst)?;
            std::fs::set_permissions(
                &dst,
                std::fs::Permissions::from_mode(meta.permissions().mode()),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::report::CaseResult;

    fn report(status: CaseStatus, steps: Option<usize>, message: &str) -> SuiteReport {
        SuiteReport {
            cases: vec![CaseResult {
                name: CHECK.into(),
                status,
                secs: 1.0,
                message: Some(message.into()),
                steps,
            }],
            seed: Some(1),
            self_test: None,
        }
    }

    #[test]
    fn caught_only_with_the_symptom_and_a_shrunk_sequence() {
        let msg = "at step 4: release copy 0\nrelease returned Published, expected Discarded";
        assert!(verdict(&report(CaseStatus::Failed, Some(4), msg)).caught);
        assert!(verdict(&report(CaseStatus::Failed, Some(8), msg)).caught);
        assert!(!verdict(&report(CaseStatus::Failed, Some(12), msg)).caught);
        assert!(!verdict(&report(CaseStatus::Failed, Some(4), "teardown failed")).caught);
        assert!(!verdict(&report(CaseStatus::Failed, None, msg)).caught);
        assert!(!verdict(&report(CaseStatus::Passed, None, "")).caught);
    }

    #[test]
    fn copies_trees_with_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        std::fs::create_dir(a.path().join("d")).expect("mkdir");
        std::fs::write(a.path().join("d/f"), "x").expect("write");
        std::fs::set_permissions(a.path().join("d/f"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        std::os::unix::fs::symlink("d/f", a.path().join("l")).expect("symlink");
        std::fs::write(b.path().join("old"), "y").expect("write");
        clear(b.path()).expect("clear");
        copy_contents(a.path(), b.path()).expect("copy");
        assert_eq!(
            std::fs::read_to_string(b.path().join("d/f")).expect("f"),
            "x"
        );
        let mode = std::fs::metadata(b.path().join("d/f"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_link(b.path().join("l")).expect("link"),
            PathBuf::from("d/f")
        );
        assert!(!b.path().join("old").exists());
    }
}
