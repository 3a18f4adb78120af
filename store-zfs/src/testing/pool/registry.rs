//! The pool directory: vdev files, mountpoints and one record per pool the helper made.
//!
//! Layout under the directory (default [`DEFAULT_POOL_DIR`], or `ZSTORE_POOL_DIR`):
//! `<name>.img` (sparse vdev file), `<name>.json` (the [`PoolRecord`]), `mnt/<name>` (the
//! pool's mountpoint). The record is written *before* `zpool create`, so a pool whose creation
//! was interrupted is still known to `cargo xtask pool list` and can be destroyed.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{PoolError, PoolName};

/// Default pool directory, shared by xtask and [`TestPool`](crate::testing::TestPool).
pub const DEFAULT_POOL_DIR: &str = "/var/tmp/zstore-pools";
/// User property set on the root dataset of every pool the helper creates; [`destroy`]
/// checks it.
///
/// [`destroy`]: super::destroy
pub const OWNER_PROPERTY: &str = "org.zstore:created-by";
/// The value of [`OWNER_PROPERTY`]. It still names xtask, where the helper began, so that
/// pools made before the move can be destroyed with the same check.
pub const OWNER_VALUE: &str = "zstore-xtask";

/// What the helper remembers about a pool it created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// The pool name.
    pub name: String,
    /// The sparse file backing it.
    pub vdev: PathBuf,
    /// Where its root dataset is mounted.
    pub mountpoint: PathBuf,
    /// The vdev size in bytes.
    pub size_bytes: u64,
    /// Which ZFS created it, as described to humans (`openzfs`, `zfs-fuse`, ...).
    pub engine: String,
    /// Seconds since the epoch.
    pub created_unix: u64,
}

/// The pool directory.
#[derive(Clone, Debug)]
pub struct PoolDir {
    root: PathBuf,
}

impl PoolDir {
    /// The directory given, else `ZSTORE_POOL_DIR`, else [`DEFAULT_POOL_DIR`].
    pub fn resolve(explicit: Option<&Path>) -> Self {
        let root = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("ZSTORE_POOL_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POOL_DIR));
        PoolDir { root }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The vdev file of `name`.
    pub fn vdev(&self, name: &PoolName) -> PathBuf {
        self.root.join(format!("{name}.img"))
    }

    /// The mountpoint of `name`.
    pub fn mountpoint(&self, name: &PoolName) -> PathBuf {
        self.root.join("mnt").join(name.as_str())
    }

    /// The record file of `name` (which exists only while the pool is recorded).
    pub fn record_path(&self, name: &PoolName) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }

    /// A new record for `name` (not yet saved).
    pub fn new_record(&self, name: &PoolName, size_bytes: u64, engine: &str) -> PoolRecord {
        PoolRecord {
            name: name.to_string(),
            vdev: self.vdev(name),
            mountpoint: self.mountpoint(name),
            size_bytes,
            engine: engine.to_owned(),
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        }
    }

    /// Saves `record` atomically (temp file + rename), so a reader never sees half of one.
    ///
    /// # Errors
    /// An invalid name in the record, or the directory or file cannot be written.
    pub fn save(&self, record: &PoolRecord) -> Result<(), PoolError> {
        let name = PoolName::new(&record.name)?;
        std::fs::create_dir_all(self.root.join("mnt"))
            .map_err(|e| PoolError::io("creating the pool directory", &self.root, e))?;
        let path = self.record_path(&name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(record).map_err(PoolError::Encode)?;
        std::fs::write(&tmp, text).map_err(|e| PoolError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| PoolError::io("renaming into place", &path, e))
    }

    /// The record of `name`, if the helper made that pool.
    ///
    /// # Errors
    /// The record exists but cannot be read or decoded.
    pub fn load(&self, name: &PoolName) -> Result<Option<PoolRecord>, PoolError> {
        let path = self.record_path(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| PoolError::CorruptRecord { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PoolError::io("reading", path, e)),
        }
    }

    /// Every record in the directory, sorted by name. Unreadable records are skipped with a
    /// warning (one bad file must not hide the other pools).
    ///
    /// # Errors
    /// The directory exists but cannot be listed.
    pub fn records(&self) -> Result<Vec<PoolRecord>, PoolError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PoolError::io("listing", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            let Ok(name) = PoolName::new(stem) else {
                continue;
            };
            match self.load(&name) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping pool record"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes what the helper created for `name`: the vdev file, the (empty) mountpoint
    /// directory and, last, the record (so an interruption leaves the pool listed).
    ///
    /// # Errors
    /// The vdev file or the record exists but cannot be removed.
    pub fn forget(&self, name: &PoolName) -> Result<(), PoolError> {
        let vdev = self.vdev(name);
        remove_file_if_exists(&vdev)?;
        // Only an empty directory is removed: anything inside belongs to someone.
        let mnt = self.mountpoint(name);
        if let Err(e) = std::fs::remove_dir(&mnt) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %mnt.display(), error = %e, "mountpoint left in place");
            }
        }
        remove_file_if_exists(&self.record_path(name))
    }
}

fn remove_file_if_exists(path: &Path) -> Result<(), PoolError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PoolError::io("removing", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_forget_removes_everything() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = PoolDir::resolve(Some(tmp.path()));
        let name = PoolName::new("zt-xtest").expect("valid");
        let rec = dir.new_record(&name, 1 << 30, "zfs-fuse");
        dir.save(&rec).expect("save");
        std::fs::create_dir_all(dir.mountpoint(&name)).expect("mkdir");
        std::fs::write(dir.vdev(&name), b"").expect("vdev");
        assert_eq!(dir.load(&name).expect("load"), Some(rec.clone()));
        assert_eq!(dir.records().expect("records"), vec![rec]);
        dir.forget(&name).expect("forget");
        assert_eq!(dir.load(&name).expect("load"), None);
        assert!(!dir.vdev(&name).exists() && !dir.mountpoint(&name).exists());
        assert!(!dir.record_path(&name).exists());
    }

    #[test]
    fn a_corrupt_record_is_an_error_on_load_and_skipped_by_records() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = PoolDir::resolve(Some(tmp.path()));
        let good = PoolName::new("zt-xgood").expect("valid");
        let bad = PoolName::new("zt-xbad").expect("valid");
        let rec = dir.new_record(&good, 1 << 30, "zfs-fuse");
        dir.save(&rec).expect("save");
        std::fs::write(dir.record_path(&bad), "{").expect("write");
        let err = dir.load(&bad).expect_err("corrupt");
        assert!(err.to_string().contains("corrupt pool record"), "{err}");
        assert_eq!(dir.records().expect("records"), vec![rec]);
    }
}
