//! A faithful copy of a directory tree, done in-process (no `cp` child process).
//!
//! This is how the fake clones a base into a build directory, a build directory into a
//! result's master, and a cache version into a leased copy. It keeps what a ZFS clone keeps,
//! as far as plain files allow: regular files (contents and all mode bits, setuid included),
//! directories (including empty ones), symlinks as symlinks (never followed), FIFOs and
//! device nodes, hard links between files inside the tree, owners (when the process may
//! `chown`) and access/modification times. Extended attributes and ACLs are not copied.
//!
//! Regular files go through [`std::fs::copy`], which uses `copy_file_range` and so shares
//! extents on filesystems that can (btrfs, XFS).

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};
use store_api::StoreError;
use walkdir::WalkDir;

use crate::mount_point::is_mount_root;
use crate::owner::ProcessIds;
use store_api::check_top_dir;

/// Copies the tree at `src` (a directory) to `dst`, which must not exist yet (its parent
/// must). On error `dst` may hold a partial copy: the caller removes it.
///
/// `src` itself must be a real directory ([`StoreError::NotADirectory`] otherwise). A
/// directory inside it on which another filesystem is mounted is copied as an empty
/// directory, as a snapshot of the tree would show it; nothing under it is read.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<(), StoreError> {
    let ids = ProcessIds::current();
    let mut dirs: Vec<(PathBuf, Metadata)> = Vec::new();
    let mut linked: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Never follow a symlink, not even at the top (walkdir's default follows a symlinked
    // root: a build directory swapped for a link to a host directory would be copied from
    // there, and onto itself), and never descend into a filesystem mounted inside the tree.
    let mut walk = WalkDir::new(src)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter();
    let mut top_dev = None;
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(src).to_owned();
            StoreError::io("reading the tree to copy at", path, e.into())
        })?;
        let from = entry.path();
        let to = match from.strip_prefix(src) {
            Ok(rel) if rel.as_os_str().is_empty() => dst.to_owned(),
            Ok(rel) => dst.join(rel),
            Err(_) => {
                return Err(StoreError::backend(format!(
                    "walking {} yielded {} outside it",
                    src.display(),
                    from.display()
                )));
            }
        };
        let meta = entry
            .metadata()
            .map_err(|e| StoreError::io("reading metadata of", from, e.into()))?;
        match top_dev {
            None => {
                check_top_dir(src)?;
                top_dev = Some(meta.dev());
            }
            Some(dev)
                if meta.is_dir()
                    && is_mount_root(CWD, from, dev)
                        .map_err(|e| StoreError::io("reading metadata of", from, e))? =>
            {
                // A mount point: copied as the empty directory a snapshot would show.
                tracing::warn!(path = %from.display(), "a filesystem is mounted inside the tree; its contents are not copied");
                walk.skip_current_dir();
            }
            Some(_) => {}
        }
        copy_entry(from, &to, &meta, &ids, &mut linked)
            .map_err(|e| StoreError::io(format!("copying {} to", from.display()), &to, e))?;
        if meta.is_dir() {
            dirs.push((to, meta));
        }
    }
    // Directory modes and times last: filling a directory changes its mtime, and a read-only
    // directory could not be filled by a process that is not root.
    for (dir, meta) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .and_then(|()| set_times(dir, meta))
            .map_err(|e| StoreError::io("setting mode and times of", dir, e))?;
    }
    Ok(())
}

fn copy_entry(
    from: &Path,
    to: &Path,
    meta: &Metadata,
    ids: &ProcessIds,
    linked: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        fs::create_dir(to)?;
        return ids.copy_owner(to, meta);
    }
    if meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = linked.get(&key) {
            return fs::hard_link(first, to);
        }
        linked.insert(key, to.to_owned());
    }
    if file_type.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        ids.copy_owner(to, meta)?;
        return set_times(to, meta);
    }
    if file_type.is_file() {
        fs::copy(from, to)?;
    } else {
        // FIFO, socket or device node.
        let mode = meta.mode();
        rustix::fs::mknodat(
            CWD,
            to,
            FileType::from_raw_mode(mode),
            Mode::from_raw_mode(mode & 0o7777),
            meta.rdev(),
        )?;
    }
    ids.copy_owner(to, meta)?;
    // `fs::copy` set the exact mode, but `chown` clears setuid/setgid; `mknod` applies the
    // umask. Set the exact mode where it may differ.
    if !file_type.is_file() || meta.mode() & 0o6000 != 0 {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    set_times(to, meta)
}

/// Sets the access and modification times of `path` (not following a symlink) to `meta`'s.
fn set_times(path: &Path, meta: &Metadata) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_device_nodes_when_root() {
        if !rustix::process::geteuid().is_root() {
            return; // Only root may make device nodes.
        }
        let parent = tempfile::tempdir().expect("tempdir");
        let src = parent.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        let null = rustix::fs::makedev(1, 3);
        rustix::fs::mknodat(
            CWD,
            src.join("null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            null,
        )
        .expect("mknod");
        // mknod applies the umask; make the source mode one the umask would change.
        fs::set_permissions(src.join("null"), fs::Permissions::from_mode(0o666)).expect("chmod");
        let dst = parent.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        let meta = fs::symlink_metadata(dst.join("null")).expect("lstat");
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), null);
        assert_eq!(meta.mode() & 0o7777, 0o666, "exact mode despite the umask");
    }

    #[test]
    fn keeps_exact_file_modes_whatever_the_umask() {
        let parent = tempfile::tempdir().expect("tempdir");
        let src = parent.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        let mut modes = vec![0o666, 0o777, 0o2755, 0o4711, 0o1644];
        if rustix::process::geteuid().is_root() {
            modes.push(0o000); // only root can read it to copy it
        }
        for &mode in &modes {
            let file = src.join(format!("{mode:o}"));
            fs::write(&file, "x").expect("write");
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        fs::set_permissions(&src, fs::Permissions::from_mode(0o777)).expect("chmod");
        let dst = parent.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        for &mode in &modes {
            let meta = fs::symlink_metadata(dst.join(format!("{mode:o}"))).expect("lstat");
            assert_eq!(meta.mode() & 0o7777, mode, "{mode:o}");
        }
        let top = fs::symlink_metadata(&dst).expect("lstat");
        assert_eq!(top.mode() & 0o7777, 0o777);
    }

    #[test]
    fn refuses_an_existing_destination() {
        let parent = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (parent.path().join("src"), parent.path().join("dst"));
        fs::create_dir(&src).expect("mkdir");
        fs::create_dir(&dst).expect("mkdir");
        let err = copy_tree(&src, &dst).expect_err("dst exists");
        assert!(err.to_string().contains("dst"), "{err}");
    }
}
