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
    /// How many groups of checks run at once (each check on its own stores, so they do not
    /// interfere). Above 1 only in the guest, whose two vCPUs otherwise idle while one `zfs`
    /// command at a time is emulated.
    pub parallel: usize,
}

impl Budget {
    /// The defaults of `lane`, measured on the 2-core CI machine (limits: zfs-fuse 5 minutes,
    /// VM 8 minutes with boot).
    ///
    /// - zfs-fuse: a `sequences` case of up to 40 steps with full checks costs ~1 s, a
    ///   `load` build ~0.1 s, the scenarios ~20 s; the fault sweep tries its ~110 faults in
    ///   ~75 s. 100 cases and the full load: about 4.5 minutes.
    /// - VM: every `zfs` command costs 100–200 ms under TCG; the named scenarios alone take
    ///   ~5 minutes one after the other (`bad_input_changes_nothing` ~80 s), a `sequences`
    ///   case of up to 12 steps with quick checks ~10 s, a `concurrency` case ~17 s. The
    ///   checks run in two groups at once (the guest has two vCPUs).
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
            parallel: 1,
        };
        match lane {
            Lane::Fake | Lane::Kernel => full,
            // The full load (200 builds, 10 at once): the store runs one zfs-fuse command at
            // a time (store_zfs::daemon_lock), which is what kept the daemon alive.
            Lane::ZfsFuse => Budget {
                cases: 100,
                fault_budget: Duration::from_secs(75),
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
                parallel: 2,
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

/// A rough cost of each check, in seconds in the guest, for balancing the groups that run at
/// once ([`Budget::parallel`]). Measured on the VM lane; a check missing here counts as 10 s.
fn estimated_secs(check: &str, config: &conformance::Config) -> f64 {
    let per_op = if config.full_check_each_step {
        2.5
    } else {
        0.8
    };
    match check {
        "sequences" => f64::from(config.cases) * (3.0 + per_op * config.max_ops as f64 / 2.0),
        "concurrency" => f64::from(config.concurrency_cases) * 17.0,
        "load" => 3.0 * config.load_builds as f64 / config.load_jobs.max(1) as f64 + 10.0,
        "fault_sweep" => config.fault_budget.map_or(300.0, |b| b.as_secs_f64()),
        "bad_input_changes_nothing" => 80.0,
        "the_first_release_of_a_generation_wins_in_every_order" => 42.0,
        "a_cache_name_that_needs_escaping_works_and_stays_separate" => 38.0,
        "a_deep_chain_of_builds_keeps_every_layer" => 25.0,
        _ => 10.0,
    }
}

/// Splits `checks` into at most `groups` groups of about equal estimated cost (largest
/// first, each to the cheapest group so far).
pub fn split(checks: &[&str], groups: usize, config: &conformance::Config) -> Vec<Vec<String>> {
    let mut sorted: Vec<(&str, f64)> = checks
        .iter()
        .map(|c| (*c, estimated_secs(c, config)))
        .collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut out: Vec<(f64, Vec<String>)> =
        vec![(0.0, Vec::new()); groups.clamp(1, checks.len().max(1))];
    for (check, cost) in sorted {
        if let Some(g) = out.iter_mut().min_by(|a, b| a.0.total_cmp(&b.0)) {
            g.0 += cost;
            g.1.push(check.to_owned());
        }
    }
    out.into_iter()
        .map(|(_, g)| g)
        .filter(|g| !g.is_empty())
        .collect()
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
    /// Run the checks in this many groups at once [default: 2 in the guest, else 1].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
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
    /// With --engine vm: also run the suite's self-test (what --self-test-broken-store runs
    /// alone) in the same boot, beside the suite: one boot instead of two, and the guest's
    /// second vCPU, which the self-test alone leaves mostly idle, is used. Its verdict is
    /// reported with the guest tests and fails the run if the broken store was not caught.
    #[arg(long, conflicts_with = "self_test_broken_store")]
    pub with_self_test: bool,
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
    fn split_balances_and_keeps_every_check() {
        let mut c = conformance::Config::default();
        Budget::for_lane(Lane::Vm).apply(&mut c);
        let checks = conformance::check_names();
        let groups = split(&checks, 2, &c);
        assert_eq!(groups.len(), 2);
        let mut all: Vec<String> = groups.concat();
        all.sort();
        let mut expected: Vec<String> = checks.iter().map(|s| (*s).to_owned()).collect();
        expected.sort();
        assert_eq!(all, expected, "every check runs exactly once");
        let cost = |g: &Vec<String>| g.iter().map(|n| estimated_secs(n, &c)).sum::<f64>();
        let (a, b) = (cost(&groups[0]), cost(&groups[1]));
        assert!((a - b).abs() <= a.max(b) * 0.3, "{a} vs {b}: {groups:?}");
        assert_eq!(split(&checks, 1, &c).len(), 1);
        assert_eq!(split(&["store_basics"], 2, &c).len(), 1);
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
