//! Which ZFS implementation the store talks to, detected once at open.

use std::fmt;

/// The ZFS implementation behind the `zfs` command.
///
/// Detected with `zfs version`: exit 0 means OpenZFS (0.8 and later); exit 2 with
/// "unrecognized command" means an older CLI, in practice zfs-fuse 0.7 (pool version 23).
/// Everything else the store does is decided by observation (the mount table, exit codes), so
/// only the paths listed on each variant differ.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// OpenZFS; the first line of `zfs version` (e.g. `zfs-2.1.5-1`).
    ///
    /// Engine-specific behaviour: `complete_deletes` waits with `zpool wait -t free` (or polls
    /// the `freeing` property where `zpool wait` is missing); no cap on mounted results; an
    /// old cache version goes with one `zfs destroy -R` of its snapshot.
    OpenZfs {
        /// The reported version.
        version: String,
    },
    /// zfs-fuse or another CLI without `zfs version`.
    ///
    /// Engine-specific behaviour: `complete_deletes` returns at once (frees are synchronous);
    /// read-only result mounts are capped (the daemon serves at most 1000 mounts in all); an
    /// old cache version goes with two plain `zfs destroy` (its last clone, then its
    /// snapshot), as a `destroy -R` of a cloned snapshot walks the whole pool there.
    ZfsFuse,
}

impl Engine {
    /// Asks `zfs version` through `runner` which engine this machine's `zfs` is: the one
    /// detection the store (at open), its tests and xtask share. Before the engine is known
    /// it is not known whether the daemon must be served one command at a time, so the
    /// command takes the zfs-fuse daemon lock whatever the engine.
    ///
    /// # Errors
    /// [`StoreError::Command`](store_api::StoreError::Command) when `zfs` cannot run, or `zfs version`
    /// fails in any other way than zfs-fuse's "unrecognized command".
    pub async fn detect(
        runner: std::sync::Arc<dyn crate::Runner>,
    ) -> Result<Self, store_api::StoreError> {
        let probe = crate::zfs_cli::Zfs::new(runner).serialize_commands(true);
        Ok(match probe.version().await? {
            Some(version) => Engine::OpenZfs { version },
            None => Engine::ZfsFuse,
        })
    }

    /// Whether this is zfs-fuse (or another pre-OpenZFS CLI).
    pub fn is_zfs_fuse(&self) -> bool {
        matches!(self, Engine::ZfsFuse)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::OpenZfs { version } => write!(f, "OpenZFS ({version})"),
            Engine::ZfsFuse => f.write_str("zfs-fuse"),
        }
    }
}
