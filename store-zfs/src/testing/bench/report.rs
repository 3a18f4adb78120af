//! The ZFS part's verdict on each target and its tables on stdout.

use serde::{Deserialize, Serialize};

use super::ZfsBench;
use super::command_costs::CommandCost;
use super::ops::{Op, OpFigures, Phase};
use super::stats::Summary;

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

impl ZfsBench {
    /// Judges the figures against the targets.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let worst = |op: Op, f: &dyn Fn(&OpFigures) -> f64| {
            self.phases
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
        for p in &self.phases {
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
        if let [small, large] = &self.phases[..] {
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
        t
    }
}

fn opt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

/// Prints the ZFS part's tables on stdout (`quick`: the run was `--quick`, which the title
/// says). The targets are the caller's to print, with the other parts'.
pub fn print(z: &ZfsBench, quick: bool) {
    println!();
    println!(
        "ZFS store vs OBuilder's command sequences: {} (pool {}){}",
        z.engine,
        z.pool,
        if quick { ", --quick" } else { "" }
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
        print_command_costs(p);
    }
    if let [small, large] = &z.phases[..] {
        print_scale(small, large);
        print_command_scale(small, large);
    }
    for n in &z.notes {
        println!("note: {n}");
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
        let procs = |s: &Summary| format!("{:.1} ({:.1}/{:.1})", s.procs, s.syncing, s.other);
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

/// The cost of command kind `k` in `costs`, if any ran.
fn cost_of<'a>(costs: &'a [CommandCost], k: &str) -> Option<&'a CommandCost> {
    costs.iter().find(|c| c.command == k)
}

/// The kinds of command in `ours` then those only in `baseline`, each once.
fn kinds<'a>(ours: &'a [CommandCost], baseline: &'a [CommandCost]) -> Vec<&'a str> {
    let mut kinds: Vec<&str> = Vec::new();
    for c in ours.iter().chain(baseline) {
        if !kinds.contains(&c.command.as_str()) {
            kinds.push(&c.command);
        }
    }
    kinds
}

fn print_command_costs(p: &Phase) {
    println!();
    println!(
        "Where the time goes at {} existing results: every command of the timed calls and their \
         background work, by kind (per pair = count / {} pairs; ms)",
        p.existing_results, p.iterations
    );
    println!(
        "{:<28} | {:>8} {:>7} {:>7} {:>8} | {:>8} {:>7} {:>7} {:>8}",
        "command", "ours/pr", "med", "p95", "total", "OB/pr", "med", "p95", "total"
    );
    let per_pair = |c: &CommandCost| c.count as f64 / p.iterations.max(1) as f64;
    let cell = |c: Option<&CommandCost>| match c {
        Some(c) => format!(
            "{:>8.2} {:>7.1} {:>7.1} {:>8.0}",
            per_pair(c),
            c.median_ms,
            c.p95_ms,
            c.total_ms
        ),
        None => format!("{:>8} {:>7} {:>7} {:>8}", "-", "", "", ""),
    };
    for k in kinds(&p.ours_command_costs, &p.baseline_command_costs) {
        println!(
            "{k:<28} | {} | {}",
            cell(cost_of(&p.ours_command_costs, k)),
            cell(cost_of(&p.baseline_command_costs, k))
        );
    }
}

fn print_command_scale(small: &Phase, large: &Phase) {
    println!();
    println!(
        "Scale by command: median ms of one command at {} vs {} existing results",
        small.existing_results, large.existing_results
    );
    println!(
        "{:<28} | {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7}",
        "command", "ours", "", "ratio", "OB", "", "ratio"
    );
    let median = |costs: &[CommandCost], k: &str| cost_of(costs, k).map(|c| c.median_ms);
    let cells = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{a:>8.1} {b:>8.1} {:>6.2}×", b / a),
        (a, b) => format!(
            "{:>8} {:>8} {:>7}",
            a.map_or("-".into(), |a| format!("{a:.1}")),
            b.map_or("-".into(), |b| format!("{b:.1}")),
            ""
        ),
    };
    for k in kinds(&large.ours_command_costs, &large.baseline_command_costs) {
        println!(
            "{k:<28} | {} | {}",
            cells(
                median(&small.ours_command_costs, k),
                median(&large.ours_command_costs, k)
            ),
            cells(
                median(&small.baseline_command_costs, k),
                median(&large.baseline_command_costs, k)
            ),
        );
    }
}
