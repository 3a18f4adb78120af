//! The journal: what the child set out to do and what it saw done, one JSON record per line,
//! each synced to disk before the child goes on, so that after a `kill -9` the parent knows
//! every operation that was committed and every one that may have been in flight. The parent
//! appends what it observed after each crash, which resets the model to the truth.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How a release ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Released {
    /// The copy became the cache's content.
    Published,
    /// The copy was thrown away.
    Discarded,
    /// The store failed; the cache is at the old version or at this copy.
    Failed,
}

/// How a `delete_cache` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deleted {
    /// The cache is gone.
    Gone,
    /// A copy was out; nothing changed.
    Busy,
    /// The store failed; the cache may or may not be gone.
    Failed,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "kebab-case")]
pub enum Rec {
    /// About to build `id` (from `base`).
    BeginBuild { id: String, base: Option<String> },
    /// The build returned (`ok`: a result was committed).
    DoneBuild { id: String, ok: bool },
    /// About to delete `id`.
    BeginDelete { id: String },
    /// The delete returned.
    DoneDelete { id: String, ok: bool },
    /// About to release a copy of `cache` holding `token`.
    BeginRelease { cache: String, token: String },
    /// The release returned.
    DoneRelease {
        cache: String,
        token: String,
        outcome: Released,
    },
    /// About to delete `cache`.
    BeginDeleteCache { cache: String },
    /// The `delete_cache` returned.
    DoneDeleteCache { cache: String, outcome: Deleted },
    /// The parent killed the child (of round `round`): nothing is in flight any more.
    Killed { round: u64 },
    /// The parent saw `id` present (complete) after a crash.
    Present { id: String },
    /// The parent saw no result for `id` after a crash.
    Absent { id: String },
    /// The parent saw `cache` holding `token` (`None`: empty) after a crash.
    CacheIs {
        cache: String,
        token: Option<String>,
    },
}

/// An open journal, appended to with a sync after each record.
pub struct Journal {
    file: Mutex<File>,
}

impl Journal {
    /// Opens (creating) the journal at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Appends `rec` and syncs it to disk before returning.
    pub fn append(&self, rec: &Rec) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.write_all(&line)?;
        f.sync_data()
    }
}

/// Every record in the journal at `path`, in order. A last line cut short by the kill is
/// ignored; any other bad line is an error.
pub fn read(path: &Path) -> std::io::Result<Vec<Rec>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut recs = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => recs.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "{}: line {}: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok(recs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let j = Journal::open(&path).expect("open");
        let recs = vec![
            Rec::BeginBuild {
                id: "a".into(),
                base: None,
            },
            Rec::DoneRelease {
                cache: "c:/x".into(),
                token: "t".into(),
                outcome: Released::Published,
            },
        ];
        for r in &recs {
            j.append(r).expect("append");
        }
        assert_eq!(read(&path).expect("read"), recs);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"r\":\"begin-bu"))
            .expect("torn");
        assert_eq!(read(&path).expect("read"), recs);
    }
}
