//! File-backed test pools that xtask creates, lists and destroys (`cargo xtask pool ...`), and
//! that conformance runs use.

mod name;
mod ops;
mod registry;

pub use name::{DEFAULT_PREFIX, PoolName, parse_size};
pub use ops::{create, destroy, exists, imported, list, property, why_not_empty};
pub use registry::{OWNER_PROPERTY, OWNER_VALUE, PoolDir, PoolRecord};

use std::path::PathBuf;

use crate::error::{Result, XtaskError};
use crate::runner::Runner;

/// Where and how big a created pool is: the options every command that creates a pool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Size of the created pool's sparse vdev file.
    #[arg(long, default_value = "2G", value_name = "SIZE")]
    pub size: String,
    /// Prefix of the generated pool name [default: $ZSTORE_POOL_PREFIX or "zstore-"].
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Directory for pool files [default: $ZSTORE_POOL_DIR or /var/tmp/zstore-pools].
    #[arg(long, value_name = "DIR")]
    pub pool_dir: Option<PathBuf>,
}

impl PoolArgs {
    /// The pool directory (`--pool-dir`, else the environment, else the default).
    pub fn dir(&self) -> PoolDir {
        PoolDir::resolve(self.pool_dir.as_deref())
    }

    /// The size in bytes.
    ///
    /// # Errors
    /// A malformed `--size`.
    pub fn bytes(&self) -> Result<u64> {
        parse_size(&self.size)
    }

    /// The prefix for a generated name.
    pub fn prefix(&self) -> String {
        prefix(self.prefix.as_deref())
    }

    /// The same options for an xtask run in the guest (`--size S --prefix P`; the guest has
    /// its own pool directory).
    pub fn guest_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--size".into(),
            self.size.clone().into(),
            "--prefix".into(),
            self.prefix().into(),
        ]
    }

    /// Creates a pool with a fresh name under these options, recording `engine` (as
    /// described to humans) in its record.
    ///
    /// # Errors
    /// A malformed size, no free name, or the pool cannot be made.
    pub async fn create_fresh(
        &self,
        runner: &Runner,
        engine: &str,
    ) -> Result<(PoolDir, PoolName, PoolRecord)> {
        let dir = self.dir();
        let size = self.bytes()?;
        let name = fresh_name(runner, &dir, &self.prefix()).await?;
        let record = create(runner, &dir, &name, size, engine).await?;
        Ok((dir, name, record))
    }
}

/// The prefix for generated names: `--prefix`, else `ZSTORE_POOL_PREFIX`, else
/// [`DEFAULT_PREFIX`].
pub fn prefix(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("ZSTORE_POOL_PREFIX").ok())
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned())
}

/// A pool name nobody uses yet (neither imported nor recorded).
pub async fn fresh_name(runner: &Runner, dir: &PoolDir, prefix: &str) -> Result<PoolName> {
    let taken = imported(runner).await?;
    for attempt in 0..16 {
        let name = PoolName::unique(prefix, attempt)?;
        if !taken.iter().any(|t| t == name.as_str()) && dir.load(&name)?.is_none() {
            return Ok(name);
        }
    }
    Err(XtaskError::Invalid(format!(
        "could not find an unused pool name with prefix {prefix:?}"
    )))
}
