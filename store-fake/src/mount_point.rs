//! Telling a mount point inside a tree from an ordinary directory, so that the fake neither
//! copies from nor removes anything under a filesystem a build function mounted (or bound)
//! inside its directory and left there: that is host data, not the store's.

use std::io;
use std::path::Path;

use rustix::fd::AsFd;
use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};

/// Whether the directory `path` (relative to `dirfd`; `""` for `dirfd` itself) is the root of
/// a mounted filesystem. Read from `statx`'s `STATX_ATTR_MOUNT_ROOT` where the kernel reports
/// it (Linux 5.8 and later; a bind mount of a directory of the same filesystem counts), else
/// judged by its device differing from `parent_dev`. Never follows a symlink.
pub(crate) fn is_mount_root(dirfd: impl AsFd, path: &Path, parent_dev: u64) -> io::Result<bool> {
    let flags = if path.as_os_str().is_empty() {
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    let st = rustix::fs::statx(dirfd, path, flags, StatxFlags::BASIC_STATS)?;
    if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT));
    }
    Ok(rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor) != parent_dev)
}
