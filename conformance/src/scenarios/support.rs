//! What scenarios are made of: a context that opens stores on fresh storage, and small helpers
//! that make each scenario read like the case it restates.

use std::any::Any;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use store_api::{BuildError, CacheLease, CacheName, Id, Store, StoreExt, User};

use crate::collisions::NameGroups;
use crate::exec::Settings;
use crate::factory::{Capabilities, SharedFactory};

/// Why a scenario did not pass.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The contract was broken (or the scenario could not run).
    Fail(String),
    /// The scenario does not apply to this backend.
    Skip(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Self {
        Stop::Fail(s)
    }
}

pub(crate) type Outcome = Result<(), Stop>;

/// A named scenario.
pub(crate) struct Scenario {
    pub name: &'static str,
    pub run: fn(Ctx) -> BoxFuture<'static, Outcome>,
}

/// Fails the scenario with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::scenarios::support::Stop::Fail(format!($($msg)+)));
        }
    };
}
pub(crate) use ensure;

/// What a scenario gets: the factory, the backend's capabilities, the run's settings, and
/// the names that naive mappings merge.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub factory: SharedFactory,
    pub caps: Capabilities,
    pub settings: Settings,
    /// The collision groups the name scenarios use: all of them in the suite, only those a
    /// planted defect merges in the self-test.
    pub names: Arc<NameGroups>,
}

impl Ctx {
    /// A context over `factory` with the run's `settings` and every collision group.
    pub fn new(factory: SharedFactory, settings: Settings) -> Self {
        Ctx {
            caps: factory.capabilities(),
            factory,
            settings,
            names: Arc::new(NameGroups::all()),
        }
    }

    /// Opens a store on fresh storage.
    pub async fn open(&self) -> Result<Env, Stop> {
        let (store, storage) = self
            .factory
            .fresh()
            .await
            .map_err(|e| format!("the factory could not open a fresh store: {e}"))?;
        Ok(Env {
            ctx: self.clone(),
            store: Some(store),
            storage: Some(storage),
        })
    }

    /// Skips the scenario unless the backend can reopen.
    pub fn need_reopen(&self) -> Outcome {
        if self.caps.can_reopen {
            Ok(())
        } else {
            Err(Stop::Skip("the backend cannot reopen a store".into()))
        }
    }

    /// A user to create caches for: someone else when the suite may check owners, else the
    /// current user.
    pub fn other_user(&self) -> User {
        if self.settings.check_ownership {
            User::new(123, 456).expect("valid")
        } else {
            crate::exec::current_user()
        }
    }
}

/// A store under test and its storage; [`Env::close`] hands the storage to the factory's
/// teardown (leak check).
pub(crate) struct Env {
    ctx: Ctx,
    store: Option<Arc<dyn Store>>,
    storage: Option<Box<dyn Any + Send + Sync>>,
}

impl Env {
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(self.store.as_ref().expect("the store is open"))
    }

    /// Drops the store (every other handle must be gone) and opens it again.
    pub async fn reopen(&mut self) -> Outcome {
        drop(self.store.take());
        let storage = self.storage.as_ref().expect("storage present");
        let store = self
            .ctx
            .factory
            .reopen(&**storage)
            .await
            .map_err(|e| format!("reopening the store failed: {e}"))?;
        self.store = Some(store);
        Ok(())
    }

    /// Asks the factory to open a second store on the storage while this one is still open,
    /// and drops it if that succeeds (it should not).
    pub async fn reopen_beside(&self) -> Result<(), crate::FactoryError> {
        let storage = self.storage.as_ref().expect("storage present");
        self.ctx.factory.reopen(&**storage).await.map(drop)
    }

    /// The factory's listing of the storage (`None` if it cannot list).
    pub async fn listing(&self) -> Result<Option<Vec<String>>, Stop> {
        let storage = self.storage.as_ref().expect("storage present");
        Ok(self
            .ctx
            .factory
            .list_storage(&**storage)
            .await
            .map_err(|e| format!("listing the storage failed: {e}"))?)
    }

    pub async fn close(mut self) -> Outcome {
        drop(self.store.take());
        if let Some(storage) = self.storage.take() {
            self.ctx
                .factory
                .teardown(storage)
                .await
                .map_err(|e| format!("teardown (leak check) failed: {e}"))?;
        }
        Ok(())
    }

    /// Builds `id` (from `base`), writing `files` (path, contents) into its directory.
    pub async fn build(&self, base: Option<&Id>, id: &Id, files: &[(&str, &str)]) -> Outcome {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
            .collect();
        self.store()
            .build(base, id, |dir| async move { write_files(&dir, &files) })
            .await
            .map_err(|e| format!("build of {id}: {}", show_build_error(&e)))?;
        Ok(())
    }

    /// The result path of `id`, failing if there is none.
    pub async fn result(&self, id: &Id) -> Result<PathBuf, Stop> {
        self.store()
            .result(id)
            .await
            .map_err(|e| format!("result({id}) failed: {e}"))?
            .ok_or_else(|| Stop::Fail(format!("result({id}) = None, but {id} was built")))
    }

    /// Fails unless `id` has no result.
    pub async fn expect_no_result(&self, id: &Id, why: &str) -> Outcome {
        let got = self
            .store()
            .result(id)
            .await
            .map_err(|e| format!("result({id}) failed: {e}"))?;
        ensure!(
            got.is_none(),
            "result({id}) = Some({}), but {why}",
            got.map(|p| p.display().to_string()).unwrap_or_default()
        );
        Ok(())
    }

    /// Reads a file of the result of `id`.
    pub async fn read(&self, id: &Id, file: &str) -> Result<String, Stop> {
        let dir = self.result(id).await?;
        Ok(fs::read_to_string(dir.join(file))
            .map_err(|e| format!("reading {file} in the result of {id}: {e}"))?)
    }

    pub async fn cache(&self, user: User, name: &CacheName) -> Result<CacheLease, Stop> {
        Ok(self
            .store()
            .cache(user, name)
            .await
            .map_err(|e| format!("cache({user}, {name:?}) failed: {e}"))?)
    }
}

pub(crate) fn id(s: &str) -> Id {
    Id::new(s).expect("a valid literal id")
}

pub(crate) fn cache_name(s: &str) -> CacheName {
    CacheName::new(s).expect("a valid literal cache name")
}

pub(crate) fn write_files(
    dir: &std::path::Path,
    files: &[(String, String)],
) -> std::io::Result<()> {
    for (path, content) in files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(full, content)?;
    }
    Ok(())
}

pub(crate) fn show_build_error<E: std::fmt::Debug>(e: &BuildError<E>) -> String {
    match e {
        BuildError::Failed(e) => format!("the build function failed: {e:?}"),
        BuildError::Store(e) => format!("the store failed: {e}"),
    }
}

/// Reads a file in a cache copy (`None` if it is absent).
pub(crate) fn read_in(lease: &CacheLease, file: &str) -> Result<Option<String>, Stop> {
    match fs::read_to_string(lease.path().join(file)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Stop::Fail(format!(
            "reading {file} in a copy of {:?}: {e}",
            lease.name()
        ))),
    }
}

/// Writes a file in a cache copy.
pub(crate) fn write_in(lease: &CacheLease, file: &str, content: &str) -> Outcome {
    fs::write(lease.path().join(file), content)
        .map_err(|e| format!("writing {file} in a copy of {:?}: {e}", lease.name()))?;
    Ok(())
}
