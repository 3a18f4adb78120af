//! Ownership: copying owners in tree copies, and giving a new cache to its user.
//!
//! Only root may give files away. When the process is not root, a `chown` it is not
//! permitted to do is skipped and the file stays owned by the process; [`give_to`] then
//! reports that, so the store can still record the owner the caller asked for.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{MetadataExt, lchown};
use std::path::Path;

use rustix::process::{getegid, geteuid};
use store_api::User;

/// The effective user and group of this process, read once per tree copy.
pub(crate) struct ProcessIds {
    uid: u32,
    gid: u32,
}

impl ProcessIds {
    pub(crate) fn current() -> Self {
        Self {
            uid: geteuid().as_raw(),
            gid: getegid().as_raw(),
        }
    }

    pub(crate) fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Gives the new entry `to` the owner of the source entry described by `meta`.
    ///
    /// As root this always runs `lchown` (a new entry's group may come from a setgid parent,
    /// so "same as the process" is not enough to skip it). Otherwise it is tried only when the
    /// owner differs from the process's, and a refusal is ignored.
    pub(crate) fn copy_owner(&self, to: &Path, meta: &Metadata) -> io::Result<()> {
        let (uid, gid) = (meta.uid(), meta.gid());
        if !self.is_root() && uid == self.uid && gid == self.gid {
            return Ok(());
        }
        match lchown(to, Some(uid), Some(gid)) {
            Err(e) if !self.is_root() && e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            other => other,
        }
    }
}

/// Whether [`give_to`] changed the owner or had to leave it to the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Given {
    /// `path` is now owned by the user.
    Yes,
    /// The process is not permitted to give files away; `path` stays the process's.
    NotPermitted,
}

/// Makes `user` the owner of `path` (not following symlinks).
pub(crate) fn give_to(path: &Path, user: User) -> io::Result<Given> {
    match lchown(path, Some(user.uid()), Some(user.gid())) {
        Ok(()) => Ok(Given::Yes),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !geteuid().is_root() => {
            Ok(Given::NotPermitted)
        }
        Err(e) => Err(e),
    }
}
