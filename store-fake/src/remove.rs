//! Removing trees the builder may have made read-only, or left a mount inside.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use walkdir::WalkDir;

use crate::mount_point::is_mount_root;

/// Removes `path`: a directory tree, a file or a symlink (never what it points to); a missing
/// `path` is not an error.
///
/// Removal never descends into a filesystem mounted inside the tree (a build function may
/// have mounted or bound a host directory there and not unmounted it): such a mount point,
/// and the directories above it, are left, and the error says where. It works through
/// directory descriptors opened without following symlinks, so a process that swaps a
/// directory for a link while the removal runs cannot send it elsewhere. Everything else is
/// removed even when one entry cannot be (an immutable file, say); the first error is
/// returned.
///
/// If a read-only directory stops the removal (possible when the process is not root, e.g.
/// after a Go build left its module cache read-only), the tree's directories are made
/// writable by their owner and the removal is tried once more.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match remove_once(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            remove_once(path)
        }
        other => other,
    }
}

fn remove_once(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let gone = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    if !meta.is_dir() {
        return gone(fs::remove_file(path));
    }
    let dir = rustix::fs::open(path, dir_flags(), Mode::empty())?;
    let parent_dev = path
        .parent()
        .and_then(|p| fs::symlink_metadata(p).ok())
        .map_or(meta.dev(), |m| m.dev());
    if is_mount_root(&dir, Path::new(""), parent_dev)? {
        // `path` itself has something mounted on it: leave it whole.
        return Err(mounted_at(path));
    }
    empty(&dir, meta.dev(), path)?;
    drop(dir);
    gone(fs::remove_dir(path))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn mounted_at(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "a filesystem is mounted at {}; the store does not remove what is under it \
             (unmount it, then the store removes the rest)",
            path.display()
        ),
    )
}

/// Removes everything in the directory open at `dir` (on device `dev`, at `path` for
/// messages), keeping going past entries that cannot be removed.
fn empty(dir: &OwnedFd, dev: u64, path: &Path) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        entries.push((name.to_owned(), entry.file_type()));
    }
    let mut first_error = None;
    for (name, file_type) in entries {
        if let Err(e) = remove_entry(dir, &name, file_type, dev, path) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn remove_entry(
    dir: &OwnedFd,
    name: &CString,
    file_type: FileType,
    dev: u64,
    path: &Path,
) -> io::Result<()> {
    let here = || path.join(name.to_string_lossy().as_ref());
    let is_dir = match file_type {
        FileType::Directory => true,
        FileType::Unknown => rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)?,
        _ => false,
    };
    if !is_dir {
        return unlink(dir, name, AtFlags::empty());
    }
    let sub = match rustix::fs::openat(dir, name.as_c_str(), dir_flags(), Mode::empty()) {
        // Swapped for a link or a file since it was listed: remove that instead.
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return unlink(dir, name, AtFlags::empty());
        }
        other => other?,
    };
    if is_mount_root(&sub, Path::new(""), dev)? {
        return Err(mounted_at(&here()));
    }
    let emptied = empty(&sub, dev, &here());
    drop(sub);
    emptied?;
    unlink(dir, name, AtFlags::REMOVEDIR)
}

fn unlink(dir: impl AsFd, name: &CStr, flags: AtFlags) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, flags) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        other => Ok(other?),
    }
}

fn make_dirs_writable(path: &Path) {
    for entry in WalkDir::new(path)
        .follow_links(false)
        .follow_root_links(false)
        .same_file_system(true)
        .into_iter()
        .flatten()
    {
        if let Ok(meta) = entry.metadata() {
            if meta.is_dir() {
                let mode = meta.permissions().mode() | 0o700;
                // Best effort: whatever stays read-only makes the retry fail with its error.
                let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_trees_with_read_only_directories_and_ignores_missing_paths() {
        let parent = tempfile::tempdir().expect("tempdir");
        let tree = parent.path().join("t");
        fs::create_dir_all(tree.join("ro/inner")).expect("mkdir");
        fs::write(tree.join("ro/inner/f"), "x").expect("write");
        fs::set_permissions(tree.join("ro"), fs::Permissions::from_mode(0o500)).expect("chmod");
        fs::set_permissions(tree.join("ro/inner"), fs::Permissions::from_mode(0o500))
            .expect("chmod");
        remove_tree(&tree).expect("remove");
        assert!(!tree.exists());
        remove_tree(&tree).expect("missing is fine");
    }

    #[test]
    fn removes_links_and_never_what_they_point_to() {
        let parent = tempfile::tempdir().expect("tempdir");
        let outside = parent.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("keep"), "x").expect("write");
        let tree = parent.path().join("t");
        fs::create_dir(&tree).expect("mkdir");
        std::os::unix::fs::symlink(&outside, tree.join("link")).expect("symlink");
        remove_tree(&tree).expect("remove");
        assert!(!tree.exists());
        let top_link = parent.path().join("top-link");
        std::os::unix::fs::symlink(&outside, &top_link).expect("symlink");
        remove_tree(&top_link).expect("remove a link");
        assert!(fs::symlink_metadata(&top_link).is_err());
        assert_eq!(fs::read_to_string(outside.join("keep")).expect("kept"), "x");
    }
}
