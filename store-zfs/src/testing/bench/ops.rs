//! The measured operations and one measurement phase: `n` iterations of every operation,
//! ours and the baseline back to back (pair by pair, alternating which goes first), each
//! timed and its `zfs`/`zpool` processes counted.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::command_costs::{CommandCost, CostSamples};
use super::counting::CountingRunner;
use super::stats::{Sample, Summary, median_ratio};
use super::subject::{Lease, Side, Subject};
use super::{BenchError, Result};

/// The operations measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `build(None, id)`.
    BuildNoBase,
    /// `build(Some(base), id)`.
    BuildFromBase,
    /// `result(id)` of a result just built.
    ResultHit,
    /// `result(id)` of an id never built.
    ResultMiss,
    /// `delete(id)` of a result nothing was built from.
    Delete,
    /// `cache(user, name)` of an existing cache.
    CacheAcquire,
    /// Releasing the only copy out: it becomes the new version.
    ReleasePublish,
    /// Releasing a copy whose version was superseded meanwhile: it is thrown away.
    ReleaseDiscard,
    /// `complete_deletes()`.
    CompleteDeletes,
}

impl Op {
    /// Every operation, in table order.
    pub const ALL: [Op; 9] = [
        Op::BuildNoBase,
        Op::BuildFromBase,
        Op::ResultHit,
        Op::ResultMiss,
        Op::Delete,
        Op::CacheAcquire,
        Op::ReleasePublish,
        Op::ReleaseDiscard,
        Op::CompleteDeletes,
    ];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Op::BuildNoBase => "build without base",
            Op::BuildFromBase => "build from base",
            Op::ResultHit => "result hit",
            Op::ResultMiss => "result miss",
            Op::Delete => "delete",
            Op::CacheAcquire => "cache acquire",
            Op::ReleasePublish => "release (publishes)",
            Op::ReleaseDiscard => "release (discards)",
            Op::CompleteDeletes => "complete_deletes",
        }
    }
}

/// One operation's figures in one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpFigures {
    /// Which operation.
    pub op: Op,
    /// Ours.
    pub ours: Summary,
    /// The OBuilder baseline.
    pub baseline: Summary,
    /// Median over pairs of ours/baseline wall time (`None` without pairs).
    pub time_ratio: Option<f64>,
    /// Mean processes, ours/baseline (`None` if the baseline spawned none).
    pub procs_ratio: Option<f64>,
    /// The commands of ours' first sample (including deferred background work).
    pub ours_commands: Vec<String>,
    /// The commands of the baseline's first sample.
    pub baseline_commands: Vec<String>,
}

/// One phase: all operations at one number of existing results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Results each store held when the phase started (besides the phase's own).
    pub existing_results: usize,
    /// Iterations (pairs) per operation.
    pub iterations: usize,
    /// Per operation, in [`Op::ALL`] order.
    pub ops: Vec<OpFigures>,
    /// Ours: every command of the timed calls (and their background work), by kind, the
    /// costliest first.
    #[serde(default)]
    pub ours_command_costs: Vec<CommandCost>,
    /// The same for the baseline.
    #[serde(default)]
    pub baseline_command_costs: Vec<CommandCost>,
}

impl Phase {
    /// The figures of `op`.
    pub fn get(&self, op: Op) -> Option<&OpFigures> {
        self.ops.iter().find(|f| f.op == op)
    }
}

/// The cache both stores use in the measurements (created before the first phase).
pub const CACHE: &str = "bench";

/// Runs the phases' iterations against both stores.
pub struct Harness<'a> {
    /// The runner both stores go through.
    pub counter: Arc<CountingRunner>,
    /// Ours.
    pub ours: &'a Subject,
    /// The baseline.
    pub baseline: &'a Subject,
}

#[derive(Default)]
struct Collected {
    samples: HashMap<(Op, Side), Vec<Sample>>,
    commands: HashMap<(Op, Side), Vec<String>>,
    ours_costs: CostSamples,
    baseline_costs: CostSamples,
}

impl Harness<'_> {
    async fn settle(&self) {
        self.ours.idle().await;
        self.baseline.idle().await;
    }

    /// Times `fut` on `subject` and counts what it spawned, including background work it
    /// left (waited for outside the timed span).
    async fn timed<T>(
        &self,
        col: &mut Collected,
        op: Op,
        subject: &Subject,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.settle().await;
        self.counter.take_lines();
        self.counter.take_timings();
        let before = self.counter.counts();
        let t0 = Instant::now();
        let out = fut.await?;
        let wall = t0.elapsed();
        let mid = self.counter.counts();
        subject.idle().await;
        let after = self.counter.counts();
        let key = (op, subject.side());
        let lines = self.counter.take_lines();
        col.commands.entry(key).or_insert(lines);
        let costs = match subject.side() {
            Side::Ours => &mut col.ours_costs,
            Side::Baseline => &mut col.baseline_costs,
        };
        for (kind, ms) in self.counter.take_timings() {
            costs.add(kind, ms);
        }
        col.samples.entry(key).or_default().push(Sample {
            wall,
            counts: mid.since(&before),
            deferred: after.since(&mid),
        });
        Ok(out)
    }

    /// `n` iterations of every operation; ids are tagged with `tag` so phases never collide.
    pub async fn phase(&self, tag: &str, n: usize, existing: usize) -> Result<Phase> {
        let mut col = Collected::default();
        for i in 0..n {
            let order: [&Subject; 2] = if i % 2 == 0 {
                [self.ours, self.baseline]
            } else {
                [self.baseline, self.ours]
            };
            self.iteration(&mut col, &order, &format!("{tag}-{i}"), i == 0)
                .await?;
            if (i + 1) % 5 == 0 || i + 1 == n {
                eprintln!("xtask: bench: {existing} results: {}/{n} iterations", i + 1);
            }
        }
        let ops = Op::ALL
            .iter()
            .map(|&op| {
                let ours = col.samples.remove(&(op, Side::Ours)).unwrap_or_default();
                let base = col
                    .samples
                    .remove(&(op, Side::Baseline))
                    .unwrap_or_default();
                let (so, sb) = (Summary::of(&ours), Summary::of(&base));
                OpFigures {
                    op,
                    time_ratio: median_ratio(&ours, &base),
                    procs_ratio: (sb.procs > 0.0).then(|| so.procs / sb.procs),
                    ours: so,
                    baseline: sb,
                    ours_commands: col.commands.remove(&(op, Side::Ours)).unwrap_or_default(),
                    baseline_commands: col
                        .commands
                        .remove(&(op, Side::Baseline))
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Phase {
            existing_results: existing,
            iterations: n,
            ops,
            ours_command_costs: col.ours_costs.summarise(),
            baseline_command_costs: col.baseline_costs.summarise(),
        })
    }

    async fn iteration(
        &self,
        col: &mut Collected,
        order: &[&Subject; 2],
        tag: &str,
        first: bool,
    ) -> Result<()> {
        let nb = format!("nb{tag}");
        let fb = format!("fb{tag}");
        let miss = format!("missing{tag}");
        for s in order {
            self.timed(col, Op::BuildNoBase, s, s.build(None, &nb))
                .await?;
        }
        for s in order {
            self.timed(col, Op::BuildFromBase, s, s.build(Some(&nb), &fb))
                .await?;
        }
        for s in order {
            let hit = self.timed(col, Op::ResultHit, s, s.result(&fb)).await?;
            expect(hit.is_some(), s, "result of a result just built is None")?;
        }
        for s in order {
            let got = self.timed(col, Op::ResultMiss, s, s.result(&miss)).await?;
            expect(got.is_none(), s, "result of an id never built is Some")?;
        }
        let mut leases: [Option<Lease>; 2] = [None, None];
        for (k, s) in order.iter().enumerate() {
            leases[k] = Some(
                self.timed(col, Op::CacheAcquire, s, s.acquire(CACHE))
                    .await?,
            );
        }
        for lease in leases.iter().flatten() {
            // What a build step does with its cache copy.
            let file = lease.path().join("touched");
            std::fs::write(&file, tag).map_err(|e| BenchError::io("writing", &file, e))?;
        }
        for (k, s) in order.iter().enumerate() {
            let lease = take(&mut leases[k])?;
            let published = self
                .timed(col, Op::ReleasePublish, s, s.release(lease))
                .await?;
            expect(published, s, "the only copy out was not published")?;
        }
        // Two copies of one version: the first release publishes (not measured), which
        // makes the second one stale.
        let mut stale: [Option<Lease>; 2] = [None, None];
        for (k, s) in order.iter().enumerate() {
            let a = s.acquire(CACHE).await?;
            stale[k] = Some(s.acquire(CACHE).await?);
            expect(s.release(a).await?, s, "first of two copies not published")?;
        }
        for (k, s) in order.iter().enumerate() {
            let lease = take(&mut stale[k])?;
            let published = self
                .timed(col, Op::ReleaseDiscard, s, s.release(lease))
                .await?;
            expect(!published, s, "a stale copy was published")?;
        }
        for s in order {
            self.timed(col, Op::Delete, s, s.delete(&fb)).await?;
            s.delete(&nb).await?;
        }
        for s in order {
            // OBuilder's complete_deletes is a fixed 5 s sleep: one sample is enough.
            if first || s.side() == Side::Ours {
                self.timed(col, Op::CompleteDeletes, s, s.complete_deletes())
                    .await?;
            }
        }
        Ok(())
    }
}

fn take(slot: &mut Option<Lease>) -> Result<Lease> {
    slot.take()
        .ok_or_else(|| BenchError::Unexpected("internal: lease missing".into()))
}

fn expect(ok: bool, s: &Subject, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(BenchError::Unexpected(format!(
            "bench: {} store: {what}",
            match s.side() {
                Side::Ours => "our",
                Side::Baseline => "baseline",
            }
        )))
    }
}
