//! Removing trees the builder may have made read-only.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use walkdir::WalkDir;

/// Removes the directory tree at `path`; a missing `path` is not an error.
///
/// If a read-only directory stops the removal (possible when the process is not root, e.g.
/// after a Go build left its module cache read-only), the tree's directories are made
/// writable by their owner and the removal is tried once more.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            match fs::remove_dir_all(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_dirs_writable(path: &Path) {
    for entry in WalkDir::new(path).follow_links(false).into_iter().flatten() {
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
}
