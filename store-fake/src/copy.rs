//! A faithful copy of a directory tree, done in-process (no `cp` child process).
//!
//! This is how the fake clones a base into a build directory, a build directory into a
//! result's master, and a cache version into a leased copy. It keeps what a ZFS clone keeps,
//! as far as plain files allow: regular files (contents and all mode bits, setuid included),
//! directories (including empty ones), symlinks as symlinks (never followed), FIFOs and
//! device nodes, hard links between files inside the tree, owners (when the process may
//! `chown`) and access/modification times. Extended attributes and ACLs are not copied.
//!
//! Regular files are copied on file descriptors with `copy_file_range` (which shares extents
//! on filesystems that can, btrfs and XFS), their owner and mode set only where the new file
//! did not get them already: on a plain filesystem, creating inodes is most of a copy's cost,
//! and every other call on the path of one is worth saving. A tree with many files has them
//! copied by a few threads at once once its directories exist.

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
    // Plain files (one link) are copied once every directory exists, in parallel when many.
    let mut files: Vec<(PathBuf, PathBuf, Metadata)> = Vec::new();
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
        if meta.is_file() && meta.nlink() == 1 {
            files.push((from.to_owned(), to, meta));
            continue;
        }
        copy_entry(from, &to, &meta, &ids, &mut linked)
            .map_err(|e| StoreError::io(format!("copying {} to", from.display()), &to, e))?;
        if meta.is_dir() {
            dirs.push((to, meta));
        }
    }
    copy_files(&files, &ids)?;
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
        return copy_file(from, to, meta, ids);
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
    // `mknod` applies the umask, and `chown` clears setuid/setgid: set the exact mode.
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    set_times(to, meta)
}

/// Copy this many plain files or more with several threads.
const PARALLEL_FROM: usize = 256;
/// At most this many threads.
const MAX_THREADS: usize = 4;

/// Copies each `(from, to, meta)` plain file; several at a time when there are many. The
/// first error (by position) is returned, after every thread has stopped.
fn copy_files(files: &[(PathBuf, PathBuf, Metadata)], ids: &ProcessIds) -> Result<(), StoreError> {
    let copy_one = |(from, to, meta): &(PathBuf, PathBuf, Metadata)| {
        copy_file(from, to, meta, ids)
            .map_err(|e| StoreError::io(format!("copying {} to", from.display()), to, e))
    };
    let threads = if files.len() < PARALLEL_FROM {
        1
    } else {
        copy_threads()
    };
    if threads < 2 {
        return files.iter().try_for_each(copy_one);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                use std::sync::atomic::Ordering::Relaxed;
                while !failed.load(Relaxed) {
                    let k = next.fetch_add(1, Relaxed);
                    let Some(file) = files.get(k) else { break };
                    if let Err(e) = copy_one(file) {
                        failed.store(true, Relaxed);
                        errors
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((k, e));
                    }
                }
            });
        }
    });
    let mut errors = errors
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    errors.sort_by_key(|(k, _)| *k);
    match errors.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// How many threads copy a large tree's files: the CPUs this process may use, at most
/// [`MAX_THREADS`]. Asked once per process: std reads the cgroup's CPU quota, a few calls.
fn copy_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS)
    })
}

/// Copies the regular file `from` to the new file `to` (which must not exist, and is never
/// followed if it is a link) with `meta`'s contents, mode, owner and times.
///
/// All on file descriptors: the new file is created with the source's permission bits, and
/// `fchown`/`fchmod` run only where it did not get the source's owner and exact mode already
/// (as root, a source owned by root in a directory without setgid needs neither, nor does a
/// mode the umask left alone); `copy_file_range` copies the data, falling back to read and
/// write where the kernel or filesystem cannot.
fn copy_file(from: &Path, to: &Path, meta: &Metadata, ids: &ProcessIds) -> io::Result<()> {
    use rustix::fs::{Mode as M, OFlags};
    let src = rustix::fs::openat(
        CWD,
        from,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        M::empty(),
    )?;
    let mode = meta.mode() & 0o7777;
    let dst = rustix::fs::openat(
        CWD,
        to,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        M::from_raw_mode(mode & 0o777),
    )?;
    copy_data(&src, &dst, meta.len())?;
    let got = rustix::fs::fstat(&dst)?;
    let mut chowned = false;
    if (got.st_uid, got.st_gid) != (meta.uid(), meta.gid()) {
        match rustix::fs::fchown(
            &dst,
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
        ) {
            Ok(()) => chowned = true,
            Err(rustix::io::Errno::PERM) if !ids.is_root() => {}
            Err(e) => return Err(e.into()),
        }
    }
    // `chown` clears setuid/setgid (never set yet here); the umask may have cleared bits.
    if chowned || (got.st_mode & 0o7777) != mode {
        rustix::fs::fchmod(&dst, M::from_raw_mode(mode))?;
    }
    rustix::fs::futimens(&dst, &timestamps(meta))?;
    Ok(())
}

/// Copies the `len` bytes the source had when it was measured (fewer if it shrank since)
/// from `src` to `dst`: a copy of the file as it was then.
fn copy_data(src: &rustix::fd::OwnedFd, dst: &rustix::fd::OwnedFd, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(src, None, dst, None, want) {
            Ok(0) => return Ok(()),
            Ok(n) => left = left.saturating_sub(n as u64),
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::PERM,
            ) => {
                // Not on this pair of files (another filesystem on old kernels, a special
                // file system): plain reads and writes from where the copy got to.
                use std::io::Read;
                let from = fs::File::from(src.try_clone()?);
                let mut to = fs::File::from(dst.try_clone()?);
                io::copy(&mut from.take(left), &mut to)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    }
}

/// Sets the access and modification times of `path` (not following a symlink) to `meta`'s.
fn set_times(path: &Path, meta: &Metadata) -> io::Result<()> {
    rustix::fs::utimensat(CWD, path, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)?;
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

    /// Enough files for the threads: every file arrives whole, with its mode and times, and
    /// hard links stay links.
    #[test]
    fn a_large_tree_is_copied_exactly() {
        let parent = tempfile::tempdir().expect("tempdir");
        let src = parent.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        let count = PARALLEL_FROM * 2 + 7;
        for k in 0..count {
            let dir = src.join(format!("d{}", k % 5));
            fs::create_dir_all(&dir).expect("mkdir");
            let file = dir.join(format!("f{k}"));
            fs::write(&file, "x".repeat(k * 37)).expect("write");
            let mode = [0o644, 0o600, 0o755, 0o4755, 0o1600][k % 5];
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).expect("chmod");
            let when = rustix::fs::Timestamps {
                last_access: Timespec {
                    tv_sec: 1_000_000 + k as i64,
                    tv_nsec: 0,
                },
                last_modification: Timespec {
                    tv_sec: 2_000_000 + k as i64,
                    tv_nsec: 7,
                },
            };
            rustix::fs::utimensat(CWD, &file, &when, AtFlags::empty()).expect("utimes");
        }
        fs::hard_link(src.join("d0/f0"), src.join("d1/link")).expect("link");
        let dst = parent.path().join("dst");
        copy_tree(&src, &dst).expect("copy");
        for k in 0..count {
            let rel = format!("d{}/f{k}", k % 5);
            let (a, b) = (src.join(&rel), dst.join(&rel));
            // Metadata before any read: reading a file moves its atime (relatime, as the
            // atime set here is older than the mtime), the copy's own read of the source too.
            let (ma, mb) = (
                fs::symlink_metadata(&a).expect("lstat"),
                fs::symlink_metadata(&b).expect("lstat"),
            );
            assert_eq!(ma.mode(), mb.mode(), "{rel}");
            assert_eq!(
                (ma.mtime(), ma.mtime_nsec()),
                (mb.mtime(), mb.mtime_nsec()),
                "{rel}"
            );
            assert_eq!(
                mb.atime(),
                1_000_000 + k as i64,
                "{rel}: the atime the source had"
            );
            assert_eq!(
                fs::read(&a).expect("read"),
                fs::read(&b).expect("read"),
                "{rel}"
            );
            assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{rel}");
        }
        let (l0, l1) = (
            fs::symlink_metadata(dst.join("d0/f0")).expect("lstat"),
            fs::symlink_metadata(dst.join("d1/link")).expect("lstat"),
        );
        assert_eq!(l0.ino(), l1.ino(), "a hard link inside the tree stays one");
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
