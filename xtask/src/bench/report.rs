//! The benchmark report: what is written to `target/bench/report.json` (stable field names,
//! so runs can be compared across commits), made of the libraries' parts and their verdicts,
//! and printed on stdout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use store_fake::testing::bench::{self as fake_bench, FakeBench};
use store_zfs::testing::bench::{self as zfs_bench, Target, ZfsBench};

use crate::engine::EngineChoice;
use crate::error::{Result, XtaskError};
use crate::runner::{Cmd, Runner};

/// Bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `git rev-parse HEAD` of the tree measured, when known.
    pub commit: Option<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// `--quick`: fewer samples and fewer existing results.
    pub quick: bool,
    /// `release` or `debug`: how xtask (and the stores linked into it) was compiled.
    pub build_profile: String,
    /// The engine asked for.
    pub engine: String,
    /// The ZFS part (absent for `--engine fake`).
    pub zfs: Option<ZfsBench>,
    /// The fake store's part (absent where it was not run).
    pub fake: Option<FakeBench>,
    /// The targets and whether they were met: the ZFS part's, then the fake's.
    pub targets: Vec<Target>,
}

impl BenchReport {
    /// The report of the parts that ran, with their verdicts.
    pub fn new(
        engine: EngineChoice,
        quick: bool,
        commit: Option<String>,
        started_unix: u64,
        zfs: Option<ZfsBench>,
        fake: Option<FakeBench>,
    ) -> Self {
        let mut targets = zfs.as_ref().map_or_else(Vec::new, ZfsBench::targets);
        // The fake part's targets have the same shape under their own type.
        targets.extend(fake.iter().flat_map(FakeBench::targets).map(|t| Target {
            target: t.target,
            measured: t.measured,
            met: t.met,
        }));
        BenchReport {
            schema: SCHEMA,
            commit,
            started_unix,
            quick,
            build_profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            engine: format!("{engine:?}").to_lowercase(),
            zfs,
            fake,
            targets,
        }
    }

    /// Prints every table and the targets on stdout.
    pub fn print(&self) {
        if self.build_profile != "release" {
            println!(
                "note: xtask was built in {} mode; for figures to compare, run \
                 `cargo run --release -p xtask -- bench ...`",
                self.build_profile
            );
        }
        if let Some(z) = &self.zfs {
            zfs_bench::print(z, self.quick);
        }
        if let Some(f) = &self.fake {
            fake_bench::print(f, self.quick);
        }
        println!();
        println!("Targets");
        for t in &self.targets {
            println!(
                "  [{}] {}: {}",
                if t.met { "met" } else { "NOT MET" },
                t.target,
                t.measured
            );
        }
    }

    /// Writes the report as JSON to `path` (through a temporary file, so a reader never sees
    /// half of one).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| XtaskError::io("creating", dir, e))?;
        }
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| XtaskError::Invalid(format!("encoding the report: {e}")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(|e| XtaskError::io("writing the report", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| XtaskError::io("writing the report", path, e))
    }
}

/// `<target dir>/bench/report.json`: `$CARGO_TARGET_DIR` or the workspace's `target`.
pub fn default_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        });
    target.join("bench").join("report.json")
}

/// `git rev-parse HEAD` of the workspace xtask was built from, when it answers.
pub async fn git_head(runner: &Runner) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let out = runner
        .output(
            &Cmd::new("git")
                .arg("-C")
                .arg(root)
                .args(["rev-parse", "HEAD"]),
        )
        .await
        .ok()?;
    out.success().then(|| out.stdout.trim().to_owned())
}
