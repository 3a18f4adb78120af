//! [`check_top_dir`]: the check every backend makes when it takes back a build directory or a
//! cache copy. A build function or cache holder may have replaced the top directory with a
//! symlink (to anywhere on the host), a file, or nothing; the store then records nothing and
//! follows no link, so it never reads or writes outside its root because of what it was
//! handed back (see [`Store`](crate::Store#what-every-backend-promises)).

use std::fs;
use std::io;
use std::path::Path;

use crate::StoreError;

/// `Ok` if `path` is a directory (not a symlink to one); else
/// [`StoreError::NotADirectory`] saying what is there. It never follows a link.
///
/// # Errors
/// [`StoreError::NotADirectory`] for a symlink, a file, a special file, nothing, or a path
/// that cannot be examined.
pub fn check_top_dir(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) | Err(_) => Err(StoreError::NotADirectory {
            path: path.to_owned(),
            found: describe_path(path),
        }),
    }
}

/// What is at `path`, for messages ("a symlink to /etc", "nothing", "a file"), without
/// following a symlink.
pub fn describe_path(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => "nothing".to_owned(),
        Err(e) => format!("unreadable: {e}"),
        Ok(meta) if meta.file_type().is_symlink() => match fs::read_link(path) {
            Ok(target) => format!("a symlink to {}", target.display()),
            Err(_) => "a symlink".to_owned(),
        },
        Ok(meta) if meta.is_dir() => "a directory".to_owned(),
        Ok(meta) if meta.is_file() => "a file".to_owned(),
        Ok(_) => "a special file".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_directory_passes() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("d");
        fs::create_dir(&dir).expect("mkdir");
        check_top_dir(&dir).expect("a directory");
        let link = parent.path().join("l");
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let err = check_top_dir(&link).expect_err("a link to a directory");
        assert!(err.to_string().contains("a symlink to"), "{err}");
        let file = parent.path().join("f");
        fs::write(&file, "").expect("write");
        assert!(check_top_dir(&file).is_err());
        let err = check_top_dir(&parent.path().join("gone")).expect_err("missing");
        assert!(err.to_string().contains("nothing"), "{err}");
    }
}
