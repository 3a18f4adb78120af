//! How big a conformance run is on each lane: the suite's knobs, chosen per engine so that
//! every check runs (every named scenario, `sequences`, `concurrency`, `load`) within the
//! lane's time limit on a 2-core machine, and the command-line options that change them.
//!
//! Precedence, lowest first: the suite's own defaults, the lane's [`Budget`], the
//! `ZSTORE_CONFORMANCE_*` environment variables (see [`conformance::Config`]), then the
//! command line (`--cases`, `--max-ops`, `--concurrency-cases`, `--quick-checks`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

/// Which lane a run is: decides the default size of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// `store-fake` on plain directories.
    Fake,
    /// zfs-fuse on this host (a `zfs` command costs ~10 ms).
    ZfsFuse,
    /// OpenZFS on this host.
    Kernel,
    /// OpenZFS in the qemu guest: TCG emulation, ~150–200 ms per `zfs` command.
    Vm,
}

/// The suite's size on one lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Random operation sequences (`sequences`).
    pub cases: u32,
    /// Longest sequence.
    pub max_ops: usize,
    /// Cases of the `concurrency` property.
    pub concurrency_cases: u32,
    /// Compare every result and cache after each step (`false`: only what the step touched,
    /// everything after reopen and at the end).
    pub full_check_each_step: bool,
    /// Builds of the `load` check, and how many run at once.
    pub load_builds: usize,
    /// See `load_builds`.
    pub load_jobs: usize,
    /// Time after which `fault_sweep` starts no new fault case (it runs only for factories
    /// with fault injection).
    pub fault_budget: Duration,
}

impl Budget {
    /// The defaults of `lane`. Measured on the 2-core CI machine (see `cargo xtask
    /// conformance` timings): zfs-fuse runs the suite's full size in about 2.5 minutes
    /// (limit 5); in the guest one `sequences` case of up to 12 steps costs ~10–15 s and a
    /// `concurrency` case ~17 s, and the named scenarios alone ~3.5 minutes, so the VM lane
    /// runs few, short cases with per-step checks limited to what each step touched (limit 8
    /// minutes, boot included).
    pub fn for_lane(lane: Lane) -> Self {
        let suite = conformance::Config::default();
        let full = Budget {
            cases: suite.cases,
            max_ops: suite.max_ops,
            concurrency_cases: suite.concurrency_cases,
            full_check_each_step: suite.full_check_each_step,
            load_builds: suite.load_builds,
            load_jobs: suite.load_jobs,
            fault_budget: suite.fault_budget.unwrap_or(Duration::from_secs(180)),
        };
        match lane {
            Lane::Fake | Lane::Kernel => full,
            // The daemon is shared by every user of the machine and deadlocked under many
            // concurrent builds in the benchmark: a smaller load keeps it safe.
            Lane::ZfsFuse => Budget {
                load_builds: 60,
                load_jobs: 4,
                ..full
            },
            Lane::Vm => Budget {
                cases: 8,
                max_ops: 12,
                concurrency_cases: 3,
                full_check_each_step: false,
                load_builds: 16,
                load_jobs: 4,
                fault_budget: Duration::from_secs(60),
            },
        }
    }

    /// Sets the suite's knobs to this budget.
    pub fn apply(&self, config: &mut conformance::Config) {
        config.cases = self.cases;
        config.max_ops = self.max_ops;
        config.concurrency_cases = self.concurrency_cases;
        config.full_check_each_step = self.full_check_each_step;
        config.load_builds = self.load_builds;
        config.load_jobs = self.load_jobs;
        config.fault_budget = Some(self.fault_budget);
    }
}

/// Suite-size and self-test options of `conformance` and `run-suite`.
#[derive(Debug, Clone, Default, Args)]
pub struct LaneArgs {
    /// Longest generated operation sequence [default: per engine].
    #[arg(long, value_name = "N")]
    pub max_ops: Option<usize>,
    /// Cases of the concurrency property [default: per engine].
    #[arg(long, value_name = "N")]
    pub concurrency_cases: Option<u32>,
    /// After each step compare only what it touched (everything after reopen and at the end).
    #[arg(long)]
    pub quick_checks: bool,
    /// Use this lane's default sizes instead of the engine's (what `--engine vm` passes to
    /// the guest, whose engine is `kernel`).
    #[arg(long, value_enum, hide = true)]
    pub lane: Option<Lane>,
    /// Self-test of the suite: wrap the store in a deliberately broken one (it publishes a
    /// stale cache copy) and succeed only if the suite catches it with a shrunk sequence.
    #[arg(long, hide = true)]
    pub self_test_broken_store: bool,
    /// With --engine vm: also run store-zfs's integration tests against real pools in the
    /// guest (built with `cargo test -p store-zfs --no-run`), in the same boot.
    #[arg(long)]
    pub with_store_zfs_tests: bool,
    /// Test executables to run after the suite, each with ZSTORE_REQUIRE_ZFS=1 (what
    /// --with-store-zfs-tests passes to the guest).
    #[arg(long = "then-run-test", value_name = "FILE", hide = true)]
    pub then_run_tests: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_runs_every_check_kind() {
        for lane in [Lane::Fake, Lane::ZfsFuse, Lane::Kernel, Lane::Vm] {
            let b = Budget::for_lane(lane);
            assert!(b.cases > 0 && b.max_ops > 0, "{lane:?}: sequences run");
            assert!(b.concurrency_cases > 0, "{lane:?}: concurrency runs");
            assert!(b.load_builds > 0 && b.load_jobs > 1, "{lane:?}: load runs");
        }
    }

    #[test]
    fn apply_sets_every_knob() {
        let mut c = conformance::Config::default();
        Budget::for_lane(Lane::Vm).apply(&mut c);
        assert_eq!((c.cases, c.max_ops, c.concurrency_cases), (8, 12, 3));
        assert!(!c.full_check_each_step);
        assert_eq!((c.load_builds, c.load_jobs), (16, 4));
    }
}
