//! [`CheckLine`]: the line each test [`conformance_tests!`](crate::conformance_tests)
//! generates prints for its check, past libtest's capture, and its parser, so that a driver
//! (such as `cargo xtask conformance`) can read a summary off a test run's output.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a check ended, as its line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineVerdict {
    /// `passed`.
    Passed,
    /// `FAILED`.
    Failed,
    /// `SKIPPED`: not applicable to this backend, not selected, or no backend here.
    Skipped,
}

impl LineVerdict {
    fn word(self) -> &'static str {
        match self {
            LineVerdict::Passed => "passed",
            LineVerdict::Failed => "FAILED",
            LineVerdict::Skipped => "SKIPPED",
        }
    }
}

/// `conformance: <check> on <backend>: <passed|FAILED|SKIPPED> in 1.23 s[ -- <detail>]`: the
/// one format of the per-check line. [`Display`](fmt::Display) writes it;
/// [`parse`](CheckLine::parse) reads it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckLine {
    /// The check's name (see [`check_names`](crate::check_names), or `self_test`).
    pub check: String,
    /// The backend's name, as its factory reports it.
    pub backend: String,
    /// How it ended.
    pub verdict: LineVerdict,
    /// How long it took, in seconds (two decimals on the line).
    pub secs: f64,
    /// Why it failed or was skipped, and the check's own detail (such as how much of the
    /// fault sweep ran).
    pub detail: Option<String>,
}

const PREFIX: &str = "conformance: ";

impl CheckLine {
    /// The line's fields, or `None` if `line` is not a per-check line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(PREFIX)?;
        // Check names have no spaces; a backend's name may hold anything but the verdict.
        let (check, rest) = rest.split_once(" on ")?;
        let (backend, verdict, rest) = [
            LineVerdict::Passed,
            LineVerdict::Failed,
            LineVerdict::Skipped,
        ]
        .into_iter()
        .find_map(|v| {
            let marker = format!(": {} in ", v.word());
            rest.find(&marker)
                .map(|at| (&rest[..at], v, &rest[at + marker.len()..]))
        })?;
        let (secs, detail) = match rest.split_once(" s -- ") {
            Some((secs, detail)) => (secs, Some(detail.to_owned())),
            None => (rest.strip_suffix(" s")?, None),
        };
        Some(Self {
            check: check.to_owned(),
            backend: backend.to_owned(),
            verdict,
            secs: secs.parse().ok()?,
            detail,
        })
    }
}

impl fmt::Display for CheckLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{} on {}: {} in {:.2} s",
            self.check,
            self.backend,
            self.verdict.word(),
            self.secs
        )?;
        if let Some(detail) = &self.detail {
            write!(f, " -- {detail}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for line in [
            CheckLine {
                check: "fault_sweep".into(),
                backend: "zfs-fuse".into(),
                verdict: LineVerdict::Passed,
                secs: 75.69,
                detail: Some("62 faults injected; 76 s".into()),
            },
            CheckLine {
                check: "sequences".into(),
                backend: "FakeZfs (zfs-fuse): on: odd".into(),
                verdict: LineVerdict::Failed,
                secs: 3.2,
                detail: Some(
                    "minimal failing sequence: 4 steps; at step 4: release returned Published"
                        .into(),
                ),
            },
            CheckLine {
                check: "store_basics".into(),
                backend: "fake".into(),
                verdict: LineVerdict::Skipped,
                secs: 0.0,
                detail: None,
            },
        ] {
            let text = line.to_string();
            assert_eq!(CheckLine::parse(&text), Some(line), "{text}");
        }
    }

    #[test]
    fn other_lines_are_not_check_lines() {
        for line in [
            "test real_pool::store_basics ... ok",
            "conformance: store_basics on zfs-fuse: maybe in 1 s",
            "conformance: store_basics on zfs-fuse: passed in x s",
            "crash: 5 rounds, 5 kills, 0 violations",
        ] {
            assert_eq!(CheckLine::parse(line), None, "{line}");
        }
    }
}
