//! File trees: the model's picture of a directory, how to read one from disk, and the edits the
//! suite makes (applied identically to the model and to a real directory).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One entry of a [`Tree`]. Only what the contract promises to keep is recorded: contents,
/// permission bits and link targets (owners of files written by the suite are always the
/// suite's own user, so they carry no information).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File {
        /// Its bytes.
        content: Vec<u8>,
        /// Permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// A directory (its entries are separate keys of the tree).
    Dir {
        /// Permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// A symbolic link, never followed.
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
}

/// A directory's contents: relative paths (`/`-separated, no leading `/`) to entries. The
/// directory itself is not an entry, so an empty directory is an empty tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

/// Why a directory could not be read as a [`Tree`].
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct ReadTreeError {
    path: String,
    #[source]
    source: io::Error,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> &BTreeMap<String, Node> {
        &self.entries
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    /// Reads the directory at `root` (not following symlinks).
    ///
    /// # Errors
    /// If any entry cannot be read, or has a type other than file, directory or symlink.
    pub fn read(root: &Path) -> Result<Self, ReadTreeError> {
        let err = |path: &Path, source| ReadTreeError {
            path: path.display().to_string(),
            source,
        };
        // The root must exist and be a directory: walkdir alone would accept a file.
        let meta = fs::symlink_metadata(root).map_err(|e| err(root, e))?;
        if !meta.is_dir() {
            return Err(err(
                root,
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let mut entries = BTreeMap::new();
        for entry in walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                err(&path, io::Error::other(e.to_string()))
            })?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .map_err(|e| err(path, io::Error::other(e.to_string())))?
                .to_string_lossy()
                .into_owned();
            let meta = entry
                .metadata()
                .map_err(|e| err(path, io::Error::other(e)))?;
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.is_dir() {
                Node::Dir { mode }
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(path).map_err(|e| err(path, e))?;
                Node::Symlink {
                    target: target.to_string_lossy().into_owned(),
                }
            } else if meta.is_file() {
                Node::File {
                    content: fs::read(path).map_err(|e| err(path, e))?,
                    mode,
                }
            } else {
                return Err(err(
                    path,
                    io::Error::other("neither a file, a directory nor a symlink"),
                ));
            };
            entries.insert(rel, node);
        }
        Ok(Self { entries })
    }

    /// Applies `edit` to the model, with exactly the effect [`Edit::apply_to_dir`] has on disk.
    pub fn apply(&mut self, edit: &Edit) {
        let path = edit.path();
        self.make_parents(path);
        self.remove(path);
        match edit {
            Edit::Write { content, mode, .. } => {
                self.entries.insert(
                    path.to_owned(),
                    Node::File {
                        content: content.as_bytes().to_vec(),
                        mode: *mode,
                    },
                );
            }
            Edit::Mkdir { mode, .. } => {
                self.entries
                    .insert(path.to_owned(), Node::Dir { mode: *mode });
            }
            Edit::Symlink { target, .. } => {
                self.entries.insert(
                    path.to_owned(),
                    Node::Symlink {
                        target: target.clone(),
                    },
                );
            }
            Edit::Remove { .. } => {}
        }
    }

    /// Sets the file at `path` (replacing whatever is there), creating parents as needed.
    pub fn put_file(&mut self, path: &str, content: &[u8], mode: u32) {
        self.make_parents(path);
        self.remove(path);
        self.entries.insert(
            path.to_owned(),
            Node::File {
                content: content.to_vec(),
                mode,
            },
        );
    }

    fn make_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            if !matches!(self.entries.get(parent), Some(Node::Dir { .. })) {
                self.remove(parent);
                self.entries
                    .insert(parent.to_owned(), Node::Dir { mode: PARENT_MODE });
            }
            end += pos + 1;
        }
    }

    fn remove(&mut self, path: &str) {
        self.entries.remove(path);
        let prefix = format!("{path}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }

    /// A short human-readable difference between `self` (expected) and `actual`, or `None`.
    pub fn diff(&self, actual: &Tree) -> Option<String> {
        let mut lines = Vec::new();
        for (path, node) in &self.entries {
            match actual.entries.get(path) {
                None => lines.push(format!("  missing {path:?} (expected {})", show(node))),
                Some(got) if got != node => lines.push(format!(
                    "  {path:?}: expected {}, found {}",
                    show(node),
                    show(got)
                )),
                Some(_) => {}
            }
        }
        for (path, node) in &actual.entries {
            if !self.entries.contains_key(path) {
                lines.push(format!("  unexpected {path:?}: {}", show(node)));
            }
        }
        if lines.is_empty() {
            None
        } else {
            Some(lines.join("\n"))
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("(empty)");
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(p, n)| format!("{p}: {}", show(n)))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

fn show(node: &Node) -> String {
    match node {
        Node::File { content, mode } => {
            format!("file {:?} mode {mode:o}", String::from_utf8_lossy(content))
        }
        Node::Dir { mode } => format!("dir mode {mode:o}"),
        Node::Symlink { target } => format!("symlink -> {target:?}"),
    }
}

/// The mode of directories created implicitly as parents of an edited path.
pub const PARENT_MODE: u32 = 0o755;

/// The mode the suite gives to build logs it writes.
pub const LOG_MODE: u32 = 0o644;

/// One change the suite makes to a build directory or a cache copy.
///
/// Every edit first turns each missing or non-directory parent of its path into a directory
/// (mode `0o755`) and removes whatever is at the path, then creates the new entry. The
/// same rule is used on disk and in the model, so they stay equal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum Edit {
    /// Write a regular file.
    Write {
        /// Relative path.
        path: String,
        /// The file's contents.
        content: String,
        /// Permission bits.
        mode: u32,
    },
    /// Make an empty directory.
    Mkdir {
        /// Relative path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Make a symbolic link (possibly dangling).
    Symlink {
        /// Relative path.
        path: String,
        /// The link target, stored as is.
        target: String,
    },
    /// Remove whatever is at the path (recursively).
    Remove {
        /// Relative path.
        path: String,
    },
}

impl Edit {
    /// The relative path the edit is about.
    pub fn path(&self) -> &str {
        match self {
            Edit::Write { path, .. }
            | Edit::Mkdir { path, .. }
            | Edit::Symlink { path, .. }
            | Edit::Remove { path } => path,
        }
    }

    /// Applies the edit to the directory `root`.
    ///
    /// # Errors
    /// Any I/O error, with the path it happened on.
    pub fn apply_to_dir(&self, root: &Path) -> io::Result<()> {
        let path = self.path();
        make_parents(root, path)?;
        let full = root.join(path);
        remove_any(&full)?;
        match self {
            Edit::Write { content, mode, .. } => write_file(&full, content.as_bytes(), *mode),
            Edit::Mkdir { mode, .. } => {
                fs::create_dir(&full).map_err(|e| annotate(e, &full))?;
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode))
                    .map_err(|e| annotate(e, &full))
            }
            Edit::Symlink { target, .. } => symlink(target, &full).map_err(|e| annotate(e, &full)),
            Edit::Remove { .. } => Ok(()),
        }
    }
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edit::Write {
                path,
                content,
                mode,
            } => write!(f, "write {path:?} = {content:?} (mode {mode:o})"),
            Edit::Mkdir { path, mode } => write!(f, "mkdir {path:?} (mode {mode:o})"),
            Edit::Symlink { path, target } => write!(f, "symlink {path:?} -> {target:?}"),
            Edit::Remove { path } => write!(f, "remove {path:?}"),
        }
    }
}

/// Writes `content` to `path` (replacing a file there) and sets its permission bits.
///
/// # Errors
/// Any I/O error, naming the path.
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    remove_any(path)?;
    fs::write(path, content).map_err(|e| annotate(e, path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| annotate(e, path))
}

fn make_parents(root: &Path, path: &str) -> io::Result<()> {
    let mut end = 0;
    while let Some(pos) = path[end..].find('/') {
        let parent = root.join(&path[..end + pos]);
        let is_dir = fs::symlink_metadata(&parent).is_ok_and(|m| m.is_dir());
        if !is_dir {
            remove_any(&parent)?;
            fs::create_dir(&parent).map_err(|e| annotate(e, &parent))?;
            fs::set_permissions(&parent, fs::Permissions::from_mode(PARENT_MODE))
                .map_err(|e| annotate(e, &parent))?;
        }
        end += pos + 1;
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(annotate(e, path)),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| annotate(e, path)),
        Ok(_) => fs::remove_file(path).map_err(|e| annotate(e, path)),
    }
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits() -> Vec<Edit> {
        vec![
            Edit::Write {
                path: "d/x".into(),
                content: "1".into(),
                mode: 0o600,
            },
            Edit::Symlink {
                path: "l".into(),
                target: "../nowhere".into(),
            },
            Edit::Mkdir {
                path: "e".into(),
                mode: 0o700,
            },
            Edit::Write {
                path: "l/y".into(),
                content: "2".into(),
                mode: 0o644,
            },
            Edit::Remove { path: "d".into() },
            Edit::Write {
                path: "d".into(),
                content: "3".into(),
                mode: 0o755,
            },
        ]
    }

    #[test]
    fn model_and_disk_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = Tree::new();
        for edit in edits() {
            edit.apply_to_dir(dir.path()).expect("apply");
            model.apply(&edit);
            let disk = Tree::read(dir.path()).expect("read");
            assert_eq!(model.diff(&disk), None, "after {edit}");
        }
        assert!(matches!(model.get("e"), Some(Node::Dir { mode: 0o700 })));
        assert_eq!(model.entries().len(), 4, "{model}");
    }
}
