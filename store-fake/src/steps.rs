//! Every change the fake makes on disk is one [`Step`], taken through [`Fs`], which first asks
//! the optional [`StepHook`]. That is the fault-injection point for crash-safety tests: a hook
//! can make any step fail, or refuse every step from some point on as if the process had died
//! there (the conformance suite's fault sweep does both, for every step of every operation).

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use store_api::{StoreError, User};

use crate::owner::{Given, give_to};
use crate::remove::remove_tree;

/// What kind of change a [`Step`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepKind {
    /// Create one directory (or, when opening a root, a directory and its parents).
    CreateDir,
    /// Create or replace a small file (the root's marker, a cache's owner record).
    WriteFile,
    /// Copy a whole directory tree (a clone of a base, a master, a cache version). One step:
    /// a copy interrupted half-way leaves a partial tree at a scratch path only.
    CopyTree,
    /// Rename a file or directory (the fake's commit points are renames).
    Rename,
    /// Remove a directory tree or a file.
    Remove,
    /// Set permission bits.
    SetMode,
    /// Change the owner of a new cache's directory.
    Chown,
    /// Open (creating if needed) the root's lock file.
    OpenLock,
}

/// One change the fake is about to make on disk, as passed to a [`StepHook`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Step<'a> {
    /// What kind of change.
    pub kind: StepKind,
    /// The path changed (the source, for a rename or a copy).
    pub path: &'a Path,
    /// The destination of a rename or a copy.
    pub to: Option<&'a Path>,
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.kind {
            StepKind::CreateDir => "mkdir",
            StepKind::WriteFile => "write",
            StepKind::CopyTree => "copy",
            StepKind::Rename => "rename",
            StepKind::Remove => "remove",
            StepKind::SetMode => "chmod",
            StepKind::Chown => "chown",
            StepKind::OpenLock => "lock",
        };
        write!(f, "{verb} {}", self.path.display())?;
        if let Some(to) = self.to {
            write!(f, " -> {}", to.display())?;
        }
        Ok(())
    }
}

/// A test hook called before every filesystem [`Step`] of a [`FakeStore`](crate::FakeStore),
/// set with [`FakeStoreBuilder::step_hook`](crate::FakeStoreBuilder::step_hook).
///
/// Returning `Ok(())` lets the step happen; returning an error skips the step and makes it
/// fail with that error, exactly as if the filesystem had failed. The store then behaves as it
/// does for any I/O error: the operation fails with a [`StoreError`] and cleans up, which is
/// itself made of steps the hook sees. To simulate a crash after step N, refuse every step
/// from N on, drop the store and open the root again without the hook.
///
/// Steps run on the calling task, synchronously: when an operation's future has completed (or
/// was dropped), none of its steps is still running.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use store_api::{Id, Store, StoreExt};
/// use store_fake::{FakeStore, Step, StepHook};
///
/// /// Fails the third step.
/// struct FailThird(AtomicUsize);
///
/// impl StepHook for FailThird {
///     fn before_step(&self, step: &Step<'_>) -> std::io::Result<()> {
///         if self.0.fetch_add(1, Ordering::SeqCst) == 2 {
///             return Err(std::io::Error::other(format!("injected: {step}")));
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let hook = Arc::new(FailThird(AtomicUsize::new(usize::MAX / 2)));
/// let store = FakeStore::builder().root(dir.path()).step_hook(hook.clone()).open()?;
/// hook.0.store(0, Ordering::SeqCst); // count from here
/// let id = Id::new("x")?;
/// let r = store.build(None, &id, |_| async { Ok::<_, std::io::Error>(()) }).await;
/// assert!(r.is_err(), "the build's third step failed");
/// assert_eq!(store.result(&id).await?, None);
/// # Ok(())
/// # }
/// ```
pub trait StepHook: Send + Sync {
    /// Called before `step` is taken.
    ///
    /// # Errors
    /// Any error: the step is not taken and fails with it.
    fn before_step(&self, step: &Step<'_>) -> io::Result<()>;
}

/// The fake's filesystem changes, each one step through the hook.
#[derive(Clone, Default)]
pub(crate) struct Fs {
    hook: Option<Arc<dyn StepHook>>,
}

impl Fs {
    pub(crate) fn new(hook: Option<Arc<dyn StepHook>>) -> Self {
        Self { hook }
    }

    fn ask(&self, kind: StepKind, path: &Path, to: Option<&Path>) -> io::Result<()> {
        match &self.hook {
            Some(hook) => hook.before_step(&Step { kind, path, to }),
            None => Ok(()),
        }
    }

    pub(crate) fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.ask(StepKind::CreateDir, path, None)?;
        fs::create_dir(path)
    }

    pub(crate) fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        self.ask(StepKind::CreateDir, path, None)?;
        fs::create_dir_all(path)
    }

    pub(crate) fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        self.ask(StepKind::WriteFile, path, None)?;
        fs::write(path, contents)
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.ask(StepKind::Rename, from, Some(to))?;
        fs::rename(from, to)
    }

    /// Removes a tree or a file; a missing path is not an error (and takes no step).
    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(meta) => {
                self.ask(StepKind::Remove, path, None)?;
                if meta.is_dir() {
                    remove_tree(path)
                } else {
                    fs::remove_file(path)
                }
            }
        }
    }

    pub(crate) fn copy_tree(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        self.ask(StepKind::CopyTree, from, Some(to))
            .map_err(|e| StoreError::io(format!("copying {} to", from.display()), to, e))?;
        crate::copy::copy_tree(from, to)
    }

    pub(crate) fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.ask(StepKind::SetMode, path, None)?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
    }

    pub(crate) fn give_to(&self, path: &Path, user: User) -> io::Result<Given> {
        self.ask(StepKind::Chown, path, None)?;
        give_to(path, user)
    }

    pub(crate) fn open_lock(&self, path: &Path) -> io::Result<fs::File> {
        self.ask(StepKind::OpenLock, path, None)?;
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    }
}
