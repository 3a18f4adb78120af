//! The benchmark's fake part (the `bench` feature; not for production): builds per second
//! from a base of 10 and of 10,000 files, against a plain recursive copy of the same tree,
//! on the default temporary directory and on tmpfs (`/dev/shm`), reported separately.
//! `cargo xtask bench` drives it ([`run`]), judges it ([`FakeBench::targets`]) and prints
//! it ([`print()`]). Progress goes to stderr.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use store_api::{Id, NameError, Store, StoreError, StoreExt};

use crate::FakeStore;

/// What can stop the fake benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file-system operation of the benchmark's own failed.
    #[error("{context}: {path}: {source}")]
    Io {
        /// What the benchmark was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A call on the fake store failed (a build's error included).
    #[error("fake store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The base just built has no result.
    #[error("fake store: the base has no result")]
    NoBase,
}

impl From<StoreError> for BenchError {
    fn from(e: StoreError) -> Self {
        BenchError::Store(Box::new(e))
    }
}

impl From<NameError> for BenchError {
    fn from(e: NameError) -> Self {
        BenchError::Store(Box::new(e))
    }
}

impl From<store_api::BuildError<std::io::Error>> for BenchError {
    fn from(e: store_api::BuildError<std::io::Error>) -> Self {
        BenchError::Store(Box::new(e))
    }
}

/// Results of this module.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// One target from the issue and how this run measured up (the same shape as the ZFS
/// part's, so a report can list both).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub met: bool,
}

/// How many builds to time per tree size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakePlan {
    /// Builds from the 10-file base.
    pub small_builds: usize,
    /// Builds from the 10,000-file base.
    pub big_builds: usize,
}

impl FakePlan {
    /// The plan of a full run, or of a `--quick` one.
    pub fn new(quick: bool) -> Self {
        if quick {
            FakePlan {
                small_builds: 300,
                big_builds: 3,
            }
        } else {
            FakePlan {
                small_builds: 1000,
                big_builds: 10,
            }
        }
    }
}

/// The fake's part of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FakeBench {
    /// The plan.
    pub plan: FakePlan,
    /// One entry per file system measured.
    pub locations: Vec<FakeLocation>,
    /// Target: builds per second from a small base.
    pub target_small_builds_per_sec: f64,
}

/// The figures on one file system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FakeLocation {
    /// "default temp dir" or "tmpfs".
    pub label: String,
    /// The directory the store and the copies lived in.
    pub path: PathBuf,
    /// Its file-system type.
    pub fs_type: String,
    /// Per base size.
    pub trees: Vec<TreeFigures>,
}

/// Builds from one base size vs copies of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeFigures {
    /// Files in the base.
    pub files: usize,
    /// Builds (and copies) timed.
    pub samples: usize,
    /// Builds per second (timed calls only; the deletes between them are not timed).
    pub builds_per_sec: f64,
    /// Median build, milliseconds.
    pub build_median_ms: f64,
    /// Plain recursive copies of the base per second.
    pub copies_per_sec: f64,
    /// Median copy, milliseconds.
    pub copy_median_ms: f64,
    /// Builds per second / copies per second.
    pub vs_copy: f64,
}

/// The target from the issue: builds per second of small trees.
pub const TARGET_SMALL_BUILDS_PER_SEC: f64 = 1000.0;

/// Runs the fake benchmark on the default temp dir and, if it exists, `/dev/shm`.
pub async fn run(plan: FakePlan) -> Result<FakeBench> {
    let mut locations = vec![("default temp dir", std::env::temp_dir())];
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        locations.push(("tmpfs", shm));
    }
    let mut out = Vec::new();
    for (label, dir) in locations {
        eprintln!("xtask: bench: fake store on {} ({label})", dir.display());
        let scratch = tempfile::Builder::new()
            .prefix("zstore-bench-")
            .tempdir_in(&dir)
            .map_err(io("creating a scratch directory", &dir))?;
        let mut trees = Vec::new();
        for (files, samples) in [(10, plan.small_builds), (10_000, plan.big_builds)] {
            trees.push(tree(scratch.path(), files, samples).await?);
        }
        out.push(FakeLocation {
            label: label.to_owned(),
            fs_type: fs_type(&dir),
            path: dir,
            trees,
        });
    }
    Ok(FakeBench {
        plan,
        locations: out,
        target_small_builds_per_sec: TARGET_SMALL_BUILDS_PER_SEC,
    })
}

fn io<'a>(context: &'static str, p: &'a Path) -> impl Fn(std::io::Error) -> BenchError + 'a {
    move |source| BenchError::Io {
        context,
        path: p.to_owned(),
        source,
    }
}

fn id(s: String) -> Result<Id> {
    Ok(Id::new(s)?)
}

/// Writes `files` small files, at most 100 per directory.
fn make_tree(root: &Path, files: usize) -> std::io::Result<()> {
    for k in 0..files {
        let dir = root.join(format!("d{}", k / 100));
        if k % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        std::fs::write(dir.join(format!("f{k}")), format!("file {k} {:>52}\n", ""))?;
    }
    Ok(())
}

/// A plain recursive copy (directories and regular files; that is all the tree holds).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dst = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dst)?;
        } else {
            std::fs::copy(entry.path(), dst)?;
        }
    }
    Ok(())
}

async fn tree(scratch: &Path, files: usize, samples: usize) -> Result<TreeFigures> {
    let root = scratch.join(format!("store-{files}"));
    let store = FakeStore::open(&root)?;
    let base = id(format!("base-{files}"))?;
    store
        .build(None, &base, |dir| async move { make_tree(&dir, files) })
        .await?;
    let base_dir = store.result(&base).await?.ok_or(BenchError::NoBase)?;
    let mut builds = Vec::with_capacity(samples);
    for j in 0..samples {
        let step = id(format!("step-{files}-{j}"))?;
        let t0 = Instant::now();
        store
            .build(Some(&base), &step, |dir| async move {
                std::fs::write(dir.join("out"), "step\n")
            })
            .await?;
        builds.push(t0.elapsed());
        store.delete(&step).await?;
    }
    let copies_dir = scratch.join(format!("copies-{files}"));
    std::fs::create_dir(&copies_dir).map_err(io("creating", &copies_dir))?;
    let mut copies = Vec::with_capacity(samples);
    for j in 0..samples {
        let dst = copies_dir.join(j.to_string());
        let t0 = Instant::now();
        copy_tree(&base_dir, &dst).map_err(io("copying the base", &dst))?;
        copies.push(t0.elapsed());
        std::fs::remove_dir_all(&dst).map_err(io("removing a copy", &dst))?;
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
    let rate = |d: &[Duration]| d.len() as f64 / d.iter().sum::<Duration>().as_secs_f64();
    let med = |d: &[Duration]| {
        let mut v: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    };
    let (bps, cps) = (rate(&builds), rate(&copies));
    eprintln!("xtask: bench: fake, {files}-file base: {bps:.1} builds/s, {cps:.1} copies/s");
    Ok(TreeFigures {
        files,
        samples,
        builds_per_sec: bps,
        build_median_ms: med(&builds),
        copies_per_sec: cps,
        copy_median_ms: med(&copies),
        vs_copy: bps / cps,
    })
}

/// The file-system type of `dir`, by `statfs` magic number.
fn fs_type(dir: &Path) -> String {
    match rustix::fs::statfs(dir) {
        Ok(s) => match s.f_type as u64 {
            0xEF53 => "ext4".into(),
            0x0102_1994 => "tmpfs".into(),
            0x5846_5342 => "xfs".into(),
            0x9123_683E => "btrfs".into(),
            0x794C_7630 => "overlayfs".into(),
            0x2FC1_2FC1 => "zfs".into(),
            other => format!("0x{other:x}"),
        },
        Err(e) => format!("unknown ({e})"),
    }
}

/// The median of sorted values (mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl FakeBench {
    /// Judges the figures against the targets, per file system: builds per second
    /// from the 10-file base, and a 10,000-file build at least as fast as a plain copy.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        for loc in &self.locations {
            if let Some(small) = loc.trees.iter().find(|tr| tr.files == 10) {
                t.push(Target {
                    target: format!(
                        "fake store on {} ({}): ≥ {:.0} builds/s from a 10-file base",
                        loc.label, loc.fs_type, self.target_small_builds_per_sec
                    ),
                    measured: format!("{:.0} builds/s", small.builds_per_sec),
                    met: small.builds_per_sec >= self.target_small_builds_per_sec,
                });
            }
            if let Some(large) = loc.trees.iter().find(|tr| tr.files >= 10_000) {
                t.push(Target {
                    target: format!(
                        "fake store on {} ({}): a build from a {}-file base no slower than a \
                         plain recursive copy of it",
                        loc.label, loc.fs_type, large.files
                    ),
                    measured: format!("{:.2}× the copy's rate", large.vs_copy),
                    met: large.vs_copy >= 1.0,
                });
            }
        }
        t
    }
}

/// A rate per second: whole numbers from 10 up, one decimal below (a 10,000-file build runs
/// well under once a second, and `0` would hide it).
fn rate(per_sec: f64) -> String {
    if per_sec >= 10.0 {
        format!("{per_sec:.0}")
    } else {
        format!("{per_sec:.1}")
    }
}

/// Prints the fake part's table on stdout (`quick`: the run was `--quick`, which the title
/// says). The targets are the caller's to print, with the other parts'.
pub fn print(f: &FakeBench, quick: bool) {
    println!();
    println!(
        "Fake store: builds from a base vs a plain recursive copy of the base{}",
        if quick { " (--quick)" } else { "" }
    );
    println!(
        "{:<34} {:>7} {:>7} {:>10} {:>9} {:>10} {:>9} {:>8}",
        "file system", "files", "samples", "builds/s", "med ms", "copies/s", "med ms", "vs copy"
    );
    for loc in &f.locations {
        for tr in &loc.trees {
            println!(
                "{:<34} {:>7} {:>7} {:>10} {:>9.2} {:>10} {:>9.2} {:>7.2}×",
                format!("{} ({}, {})", loc.label, loc.fs_type, loc.path.display()),
                tr.files,
                tr.samples,
                rate(tr.builds_per_sec),
                tr.build_median_ms,
                rate(tr.copies_per_sec),
                tr.copy_median_ms,
                tr.vs_copy
            );
        }
    }
}
