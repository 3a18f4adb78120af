//! The benchmark report: what is written to `target/bench/report.json` (stable field names,
//! so runs can be compared across commits), the verdict on each target, and the tables
//! printed on stdout.

use serde::{Deserialize, Serialize};

use super::fake::FakeBench;
use super::ops::{Op, OpFigures, Phase};
use super::zfs_lane::ZfsBench;

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
    /// The targets and whether they were met.
    pub targets: Vec<Target>,
}

/// One target from the issue and how this run measured up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is asked.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub met: bool,
}

/// The build + cache cycle the "≥ 3× fewer commands" target is about: a build from a base
/// that acquires and publishes a cache.
pub const CYCLE: [Op; 3] = [Op::BuildFromBase, Op::CacheAcquire, Op::ReleasePublish];

/// Sum of (ours, baseline) mean processes and median milliseconds over [`CYCLE`].
pub fn cycle(phase: &Phase) -> ((f64, f64), (f64, f64)) {
    let figs: Vec<&OpFigures> = CYCLE.iter().filter_map(|op| phase.get(*op)).collect();
    let procs = (
        figs.iter().map(|f| f.ours.procs).sum(),
        figs.iter().map(|f| f.baseline.procs).sum(),
    );
    let ms = (
        figs.iter().map(|f| f.ours.median_ms).sum(),
        figs.iter().map(|f| f.baseline.median_ms).sum(),
    );
    (procs, ms)
}

/// Scale factor allowed between the small and the large phase.
pub const SCALE_LIMIT: f64 = 1.5;

/// Medians below this (calls that start no process) are left out of the scale verdict.
pub const NOISE_FLOOR_MS: f64 = 1.0;

/// Judges the ZFS and fake figures against the targets.
pub fn targets(zfs: Option<&ZfsBench>, fake: Option<&FakeBench>) -> Vec<Target> {
    let mut t = Vec::new();
    if let Some(z) = zfs {
        let worst = |op: Op, f: &dyn Fn(&OpFigures) -> f64| {
            z.phases
                .iter()
                .filter_map(|p| p.get(op))
                .map(f)
                .fold(0.0, f64::max)
        };
        let hit = worst(Op::ResultHit, &|f| f.ours.procs);
        t.push(Target {
            target: "result() on a hit spawns no process".into(),
            measured: format!("at most {hit:.2} processes per hit"),
            met: hit == 0.0,
        });
        let b = worst(Op::BuildFromBase, &|f| f.ours.syncing);
        t.push(Target {
            target: "build from base: ≤ 2 syncing zfs commands".into(),
            measured: format!("{b:.2} syncing"),
            met: b <= 2.0,
        });
        let r = worst(Op::ReleasePublish, &|f| f.ours.syncing);
        t.push(Target {
            target: "cache release that publishes: ≤ 3 syncing zfs commands".into(),
            measured: format!("{r:.2} syncing"),
            met: r <= 3.0,
        });
        for p in &z.phases {
            let ((po, pb), (mo, mb)) = cycle(p);
            let ratio = if po > 0.0 { pb / po } else { f64::INFINITY };
            t.push(Target {
                target: format!(
                    "build + cache cycle (build from base, acquire, publish) at {} results: \
                     ≥ 3× fewer zfs commands than OBuilder",
                    p.existing_results
                ),
                measured: format!("{po:.1} vs {pb:.1} processes: {ratio:.2}× fewer"),
                met: ratio >= 3.0,
            });
            t.push(Target {
                target: format!(
                    "build + cache cycle at {} results: faster than OBuilder",
                    p.existing_results
                ),
                measured: format!("{mo:.1} ms vs {mb:.1} ms (sum of medians)"),
                met: mo < mb,
            });
        }
        if let [small, large] = &z.phases[..] {
            let mut worst_op = None;
            let mut worst_ratio = 0.0;
            let mut procs_grew = Vec::new();
            for op in Op::ALL {
                let (Some(s), Some(l)) = (small.get(op), large.get(op)) else {
                    continue;
                };
                // Sub-millisecond calls (no process at all) are timer noise, not cost.
                if s.ours.median_ms.max(l.ours.median_ms) >= NOISE_FLOOR_MS {
                    let r = l.ours.median_ms / s.ours.median_ms;
                    if r > worst_ratio {
                        worst_ratio = r;
                        worst_op = Some(op);
                    }
                }
                if l.ours.procs > s.ours.procs + 0.01 {
                    procs_grew.push(op.label());
                }
            }
            t.push(Target {
                target: format!(
                    "per-operation cost at {} results within {SCALE_LIMIT}× of the cost at {} \
                     (medians; calls under {NOISE_FLOOR_MS} ms left out)",
                    large.existing_results, small.existing_results
                ),
                measured: format!(
                    "worst median ratio {worst_ratio:.2}× ({}); process counts grew for: {}",
                    worst_op.map_or("-", Op::label),
                    if procs_grew.is_empty() {
                        "none".to_owned()
                    } else {
                        procs_grew.join(", ")
                    }
                ),
                met: worst_ratio <= SCALE_LIMIT && procs_grew.is_empty(),
            });
        }
    }
    if let Some(f) = fake {
        for loc in &f.locations {
            if let Some(small) = loc.trees.iter().find(|tr| tr.files == 10) {
                t.push(Target {
                    target: format!(
                        "fake store on {} ({}): ≥ {:.0} builds/s from a 10-file base",
                        loc.label, loc.fs_type, f.target_small_builds_per_sec
                    ),
                    measured: format!("{:.0} builds/s", small.builds_per_sec),
                    met: small.builds_per_sec >= f.target_small_builds_per_sec,
                });
            }
        }
    }
    t
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

fn opt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

/// Prints every table and the targets on stdout.
pub fn print(report: &BenchReport) {
    if report.build_profile != "release" {
        println!(
            "note: xtask was built in {} mode; for figures to compare, run \
             `cargo run --release -p xtask -- bench ...`",
            report.build_profile
        );
    }
    if let Some(z) = &report.zfs {
        println!();
        println!(
            "ZFS store vs OBuilder's command sequences: {} (pool {}){}",
            z.engine,
            z.pool,
            if report.quick { ", --quick" } else { "" }
        );
        println!(
            "baseline: {}",
            if z.baseline_verbatim {
                "OBuilder's commands verbatim"
            } else {
                "closest commands that run on zfs-fuse (see baseline_substitutions in the JSON)"
            }
        );
        for p in &z.phases {
            print_phase(p);
        }
        if let [small, large] = &z.phases[..] {
            print_scale(small, large);
        }
        for n in &z.notes {
            println!("note: {n}");
        }
    }
    if let Some(f) = &report.fake {
        println!();
        println!(
            "Fake store: builds from a base vs a plain recursive copy of the base{}",
            if report.quick { " (--quick)" } else { "" }
        );
        println!(
            "{:<34} {:>7} {:>7} {:>10} {:>9} {:>10} {:>9} {:>8}",
            "file system",
            "files",
            "samples",
            "builds/s",
            "med ms",
            "copies/s",
            "med ms",
            "vs copy"
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
    println!();
    println!("Targets");
    for t in &report.targets {
        println!(
            "  [{}] {}: {}",
            if t.met { "met" } else { "NOT MET" },
            t.target,
            t.measured
        );
    }
}

fn print_phase(p: &Phase) {
    println!();
    println!(
        "{} existing results, {} pairs per operation (ms; procs = zfs/zpool processes per call, syncing/other)",
        p.existing_results, p.iterations
    );
    println!(
        "{:<20} | {:>8} {:>8} {:>12} | {:>8} {:>8} {:>12} | {:>9} {:>9}",
        "operation", "ours med", "p95", "procs", "OB med", "p95", "procs", "time o/b", "procs o/b"
    );
    for f in &p.ops {
        let procs =
            |s: &super::stats::Summary| format!("{:.1} ({:.1}/{:.1})", s.procs, s.syncing, s.other);
        println!(
            "{:<20} | {:>8.1} {:>8.1} {:>12} | {:>8.1} {:>8.1} {:>12} | {:>9} {:>9}",
            f.op.label(),
            f.ours.median_ms,
            f.ours.p95_ms,
            procs(&f.ours),
            f.baseline.median_ms,
            f.baseline.p95_ms,
            procs(&f.baseline),
            opt_ratio(f.time_ratio),
            opt_ratio(f.procs_ratio),
        );
    }
    let ((po, pb), (mo, mb)) = cycle(p);
    println!(
        "{:<20} | {:>8.1} {:>8} {:>12.1} | {:>8.1} {:>8} {:>12.1} | {:>9.2} {:>9.2}",
        "cycle*",
        mo,
        "",
        po,
        mb,
        "",
        pb,
        mo / mb,
        po / pb
    );
    println!(
        "* cycle = build from base + cache acquire + release (publishes): sums of medians and of processes"
    );
}

fn print_scale(small: &Phase, large: &Phase) {
    println!();
    println!(
        "Scale: median ms at {} vs {} existing results",
        small.existing_results, large.existing_results
    );
    println!(
        "{:<20} | {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7}",
        "operation", "ours", "", "ratio", "OB", "", "ratio"
    );
    for op in Op::ALL {
        let (Some(s), Some(l)) = (small.get(op), large.get(op)) else {
            continue;
        };
        let r = |a: f64, b: f64| if a > 0.0 { b / a } else { f64::NAN };
        println!(
            "{:<20} | {:>8.1} {:>8.1} {:>6.2}× | {:>8.1} {:>8.1} {:>6.2}×",
            op.label(),
            s.ours.median_ms,
            l.ours.median_ms,
            r(s.ours.median_ms, l.ours.median_ms),
            s.baseline.median_ms,
            l.baseline.median_ms,
            r(s.baseline.median_ms, l.baseline.median_ms),
        );
    }
}
