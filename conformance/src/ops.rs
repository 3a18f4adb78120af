//! The operations of a generated test case, as data: what the model applies, what the runner
//! executes, what a failure report prints as a numbered script and saves as JSON.

use std::fmt;

use serde::{Deserialize, Serialize};
use store_api::{CacheName, Id, User};

use crate::tree::Edit;

/// How a generated build function ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// It returns `Ok(())`: the directory becomes the result.
    Succeed,
    /// It returns its own error, which must come back unchanged; nothing is recorded.
    Fail,
    /// It panics; the store must clean up and resume the same panic; nothing is recorded.
    Panic,
    /// It makes its edits, then never finishes: the build future is dropped while the function
    /// runs; nothing is recorded.
    CancelWhileRunning,
    /// The build future is polled once and dropped if it is not done by then (cancellation
    /// while the store itself is working, e.g. cloning the base). If it completed in that poll
    /// it counts as a normal successful build.
    CancelEarly,
}

/// One step of a generated sequence.
///
/// Steps that would break the caller's promises in the current state (building an id that has
/// a result, releasing a copy when none is out, reopening a store that cannot be reopened) are
/// skipped by the runner, so every sequence is valid and shrinking can remove any step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `build(base, id, f)`.
    Build {
        /// The id to build.
        id: Id,
        /// The base, if any (it may have no result: then `MissingBase` is expected).
        base: Option<Id>,
        /// What `f` does to its directory (after checking its initial contents).
        edits: Vec<Edit>,
        /// If set, `f` (re)writes the log at `log_file(id)` with this text.
        log: Option<String>,
        /// Whether `f` deletes its own base while it runs.
        delete_base_while_running: bool,
        /// How `f` ends.
        ending: Ending,
    },
    /// `delete(id)`.
    Delete {
        /// The id.
        id: Id,
    },
    /// Try to change the result of `id` through its path (the writes must fail or have no
    /// effect on the result).
    Tamper {
        /// The id.
        id: Id,
    },
    /// `cache(user, name)`; the copy joins the list of copies out.
    Acquire {
        /// The cache.
        cache: CacheName,
        /// The user a new cache is created for.
        user: User,
    },
    /// An edit in one of the copies out.
    Write {
        /// Which copy: an index into the copies out, taken modulo their number.
        copy: usize,
        /// The edit.
        edit: Edit,
    },
    /// `release` of one of the copies out.
    Release {
        /// Which copy: an index into the copies out, taken modulo their number.
        copy: usize,
    },
    /// Drop one of the copies out without releasing it.
    DropCopy {
        /// Which copy: an index into the copies out, taken modulo their number.
        copy: usize,
    },
    /// `delete_cache(name)`.
    DeleteCache {
        /// The cache.
        cache: CacheName,
    },
    /// `complete_deletes()`, then `df()`.
    CompleteDeletes,
    /// Drop every copy and the store, then open the store again over the same storage.
    Reopen,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Succeed => "succeeds",
            Ending::Fail => "fails with its own error",
            Ending::Panic => "panics",
            Ending::CancelWhileRunning => "is cancelled while f runs",
            Ending::CancelEarly => "is cancelled at its first poll",
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Build {
                id,
                base,
                edits,
                log,
                delete_base_while_running,
                ending,
            } => {
                write!(f, "build {id}")?;
                if let Some(base) = base {
                    write!(f, " from {base}")?;
                }
                let mut parts: Vec<String> = edits.iter().map(ToString::to_string).collect();
                if let Some(log) = log {
                    parts.push(format!("log {log:?}"));
                }
                if *delete_base_while_running {
                    parts.push("delete the base".into());
                }
                if !parts.is_empty() {
                    write!(f, ": {}", parts.join("; "))?;
                }
                write!(f, "; {ending}")
            }
            Op::Delete { id } => write!(f, "delete {id}"),
            Op::Tamper { id } => write!(f, "try to write into the result path of {id}"),
            Op::Acquire { cache, user } => write!(f, "acquire cache {cache:?} as {user}"),
            Op::Write { copy, edit } => write!(f, "in copy [{copy}]: {edit}"),
            Op::Release { copy } => write!(f, "release copy [{copy}]"),
            Op::DropCopy { copy } => write!(f, "drop copy [{copy}] without releasing it"),
            Op::DeleteCache { cache } => write!(f, "delete_cache {cache:?}"),
            Op::CompleteDeletes => f.write_str("complete_deletes, then df"),
            Op::Reopen => f.write_str("drop every copy and the store, then reopen it"),
        }
    }
}

/// Renders `ops` as a numbered script, one step per line (steps are numbered from 1).
///
/// `notes[i]`, when present, is appended to step `i` (the runner uses it to say which copy an
/// index resolved to, or that a step was skipped).
pub fn script(ops: &[Op], notes: &[String]) -> String {
    let mut out = String::new();
    for (i, op) in ops.iter().enumerate() {
        out.push_str(&format!("{:>3}. {op}", i + 1));
        if let Some(note) = notes.get(i).filter(|n| !n.is_empty()) {
            out.push_str(&format!("   [{note}]"));
        }
        out.push('\n');
    }
    out
}
