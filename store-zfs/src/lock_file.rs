//! Lock files only the store's own user can create or hold: the zfs-fuse daemon lock and the
//! per-store open lock live in a directory of that user's (`/run/zstore`, owned by root and
//! not writable by anyone else), are opened without following a symlink, and must belong to
//! that user. Another local user can then neither plant the file nor hold its lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::FlockOperation;

/// The directory where the store keeps its lock files.
pub const LOCK_DIR: &str = "/run/zstore";

/// Opens (creating) the lock file `path`: its directory is created mode 0700 if missing, and
/// must be a real directory owned by this process's user and writable by no one else; the
/// file is opened without following a symlink, must be a regular file owned by this user, and
/// is made mode 0600.
///
/// # Errors
/// `PermissionDenied` with a message naming the path when the directory or the file is not
/// safe; any error of creating or opening them.
pub fn open_private(path: &Path) -> io::Result<File> {
    let refuse = |what: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, what));
    let euid = rustix::process::geteuid().as_raw();
    let dir = path.parent().unwrap_or(Path::new("/"));
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return refuse(format!("{} is not a directory (a symlink?)", dir.display()));
    }
    if meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "{} belongs to uid {} with mode {:o}: a lock directory must belong to uid {euid} \
             and be writable by no one else",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != euid {
        return refuse(format!(
            "{} is not a regular file of uid {euid}; remove it",
            path.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Tries to take an exclusive `flock` on `file` without waiting: `true` if taken.
pub fn try_lock(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_lock_file_is_private() {
        let parent = tempfile::tempdir().expect("tempdir");
        let path = parent.path().join("locks/l");
        let file = open_private(&path).expect("open");
        let dir = fs::metadata(parent.path().join("locks")).expect("stat");
        assert_eq!(dir.mode() & 0o777, 0o700);
        assert_eq!(file.metadata().expect("stat").mode() & 0o777, 0o600);
        assert!(try_lock(&file).expect("lock"));
        let other = open_private(&path).expect("second open");
        assert!(
            !try_lock(&other).expect("try"),
            "a second open file must not get it"
        );
    }

    #[test]
    fn a_planted_link_or_a_shared_directory_is_refused() {
        let parent = tempfile::tempdir().expect("tempdir");
        let target = parent.path().join("target");
        fs::write(&target, "").expect("write");
        let link = parent.path().join("link.lock");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(
            open_private(&link).is_err(),
            "a symlink in place of the lock file"
        );
        let shared = parent.path().join("shared");
        fs::create_dir(&shared).expect("mkdir");
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod");
        let err = open_private(&shared.join("l")).expect_err("a world-writable directory");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("writable by no one else"), "{err}");
    }

    #[test]
    fn a_lock_file_of_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            return; // only root can give a file away
        }
        let parent = tempfile::tempdir().expect("tempdir");
        let path = parent.path().join("l");
        fs::write(&path, "").expect("write");
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
        let err = open_private(&path).expect_err("owned by nobody");
        assert!(err.to_string().contains("remove it"), "{err}");
    }
}
