//! The two stores measured side by side: ours ([`ZfsStore`]) and the OBuilder
//! baseline ([`Obuilder`]), behind one set of calls so every step runs the same way on both.

use std::path::{Path, PathBuf};

use super::baseline::{ObLease, Obuilder};
use super::{BenchError, Result};
use crate::ZfsStore;
use store_api::{CacheLease, CacheName, Id, ReleaseOutcome, Store, StoreExt, User};

/// Which store a sample is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// `store-zfs`.
    Ours,
    /// OBuilder's command sequences.
    Baseline,
}

/// A store under test.
pub enum Subject {
    /// `store-zfs`.
    Ours(ZfsStore),
    /// OBuilder's command sequences.
    Baseline(Obuilder),
}

/// A cache copy from either store.
pub enum Lease {
    /// From `store-zfs`.
    Ours(CacheLease),
    /// From the baseline.
    Baseline(ObLease),
}

impl Lease {
    /// Where the copy is mounted.
    pub fn path(&self) -> &Path {
        match self {
            Lease::Ours(l) => l.path(),
            Lease::Baseline(l) => &l.path,
        }
    }
}

fn id(s: &str) -> Result<Id> {
    Id::new(s).map_err(|e| BenchError::store(format!("bench id {s:?}"), e))
}

/// What every build writes: a log and one output file (a small build step).
fn write_outputs(dir: &Path, id: &str) -> std::io::Result<()> {
    std::fs::write(dir.join("log"), format!("building {id}\n"))?;
    std::fs::write(dir.join("out"), id)
}

/// The current user, which caches are created for.
pub fn me() -> Result<User> {
    User::new(
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
    .map_err(|e| BenchError::store("current user", e))
}

impl Subject {
    /// Which side this is.
    pub fn side(&self) -> Side {
        match self {
            Subject::Ours(_) => Side::Ours,
            Subject::Baseline(_) => Side::Baseline,
        }
    }

    /// `build(base, id)` with a function writing `log` and `out`.
    pub async fn build(&self, base: Option<&str>, name: &str) -> Result<()> {
        match self {
            Subject::Ours(s) => {
                let base = base.map(id).transpose()?;
                let target = id(name)?;
                let owned = name.to_owned();
                s.build(base.as_ref(), &target, |dir| async move {
                    write_outputs(&dir, &owned)
                })
                .await
                .map_err(|e| BenchError::store(format!("build {name}"), e))
            }
            Subject::Baseline(o) => {
                let dir = o.prepare(base, name).await?;
                write_outputs(&dir, name).map_err(|e| BenchError::io("build", &dir, e))?;
                o.commit(name).await
            }
        }
    }

    /// `result(id)`.
    pub async fn result(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            Subject::Ours(s) => s
                .result(&id(name)?)
                .await
                .map_err(|e| BenchError::store(format!("result {name}"), e)),
            Subject::Baseline(o) => o.result(name).await,
        }
    }

    /// `delete(id)`.
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self {
            Subject::Ours(s) => s
                .delete(&id(name)?)
                .await
                .map_err(|e| BenchError::store(format!("delete {name}"), e)),
            Subject::Baseline(o) => o.delete(name).await,
        }
    }

    /// `cache(me, name)`.
    pub async fn acquire(&self, name: &str) -> Result<Lease> {
        match self {
            Subject::Ours(s) => {
                let cache = CacheName::new(name).map_err(|e| BenchError::store("cache name", e))?;
                s.cache(me()?, &cache)
                    .await
                    .map(Lease::Ours)
                    .map_err(|e| BenchError::store(format!("cache {name}"), e))
            }
            Subject::Baseline(o) => o.cache(name).await.map(Lease::Baseline),
        }
    }

    /// Releases a copy; `true` if it was published.
    pub async fn release(&self, lease: Lease) -> Result<bool> {
        match (self, lease) {
            (Subject::Ours(_), Lease::Ours(l)) => l
                .release()
                .await
                .map(|o| o == ReleaseOutcome::Published)
                .map_err(|e| BenchError::store("release", e)),
            (Subject::Baseline(o), Lease::Baseline(l)) => o.release(l).await,
            _ => Err(BenchError::Unexpected(
                "internal: a lease released to the other store".into(),
            )),
        }
    }

    /// `complete_deletes()`.
    pub async fn complete_deletes(&self) -> Result<()> {
        match self {
            Subject::Ours(s) => s
                .complete_deletes()
                .await
                .map_err(|e| BenchError::store("complete_deletes", e)),
            Subject::Baseline(o) => {
                o.complete_deletes().await;
                Ok(())
            }
        }
    }

    /// Waits for background work the last call left (ours only; OBuilder has none).
    pub async fn idle(&self) {
        if let Subject::Ours(s) = self {
            s.wait_idle().await;
        }
    }
}
