//! The options of every command that creates a pool ([`PoolArgs`]), the pool a run works on
//! ([`RunPool`]), and the glue to the workspace's test-pool helper, [`store_zfs::testing::pool`], which does the work (names,
//! the pool directory and its records, `zpool create|destroy`, the owner check).

use std::path::PathBuf;
use std::sync::Arc;

use store_zfs::daemon_lock::DaemonSerialized;
mod run_pool;

pub use run_pool::RunPool;
use store_zfs::testing::pool::{DEFAULT_PREFIX, PoolDir, parse_size};
use store_zfs::{Runner, SystemRunner};

use crate::error::Result;

/// The runner for pool commands: the real `zpool`/`zfs`, one command at a time on the
/// machine's zfs-fuse daemon (the lock every zstore process takes; a no-op wait on
/// OpenZFS).
pub fn runner() -> Arc<dyn Runner> {
    Arc::new(DaemonSerialized::new(Arc::new(SystemRunner)))
}

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
        Ok(parse_size(&self.size)?)
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
}

/// The prefix for generated names: `--prefix`, else `ZSTORE_POOL_PREFIX`, else
/// [`DEFAULT_PREFIX`].
pub fn prefix(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("ZSTORE_POOL_PREFIX").ok())
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned())
}
