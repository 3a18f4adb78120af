//! How big a conformance run is on each lane: the suite's knobs, chosen per engine so that
//! every check runs (every named scenario, `sequences`, `concurrency`, `fault_sweep`, `load`,
//! the self-test) within the lane's time limit on a 2-core machine, and the command-line
//! options that change them.
//!
//! Precedence, lowest first: the suite's own defaults, the lane's [`config`], the
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

/// The fault sweep's floor in the guest (percent of the possible faults within its budget).
/// Measured: the whole sweep (104 points and the 10 fault-free probes) took 1,449 s in the
/// guest with 3 cases at once beside the self-test; with a 150 s budget and 3 cases at once
/// in CI it did not get past the probes (the guest is CPU-bound under TCG: cases at once
/// only share the two vCPUs, unlike on a machine where commands wait for syncs). So the
/// guest sweeps one case at a time for [`VM_FAULT_BUDGET`], and the floor only makes sure
/// it injects at least one fault, and says so, until the guest runs it whole.
const VM_FAULT_FLOOR: u8 = 3;

/// The guest's fault-sweep budget (see [`VM_FAULT_FLOOR`]).
const VM_FAULT_BUDGET: Duration = Duration::from_secs(60);

/// How many checks run at once on `lane` (libtest's `--test-threads`; each check on its own
/// stores, so they do not interfere): 1 on zfs-fuse, whose daemon serves one command at a
/// time and whose fault sweep has a time budget; 2 in the guest, whose two vCPUs otherwise
/// idle while one `zfs` command at a time is emulated, and on the fake.
pub fn parallel(lane: Lane) -> usize {
    match lane {
        Lane::Fake | Lane::Vm => 2,
        Lane::ZfsFuse | Lane::Kernel => 1,
    }
}

/// The suite's knobs on `lane`, measured on the 2-core CI machine (limits: zfs-fuse 5
/// minutes, VM 8 minutes with boot). Every lane runs every kind of check.
///
/// - zfs-fuse: a `sequences` case of up to 40 steps with full checks costs ~1 s, a `load`
///   build ~0.1 s, the scenarios ~20 s; the fault sweep tries its ~110 faults in ~75 s. 100
///   cases and the full load: about 4.5 minutes. The fault floor (the least share of the
///   possible faults a sweep cut short by its budget must inject, so that a slower machine
///   cannot quietly shrink it): 62 of 106 faults (58%) in the 75 s on an idle 2-core machine,
///   46 (43%) beside the VM lane in CI.
/// - VM: every `zfs` command costs 100–200 ms under TCG; the named scenarios alone take ~5
///   minutes one after the other (`bad_input_changes_nothing` ~80 s), a `sequences` case of
///   up to 12 steps with quick checks ~10 s, a `concurrency` case ~17 s, a fault-sweep case
///   10-25 s.
pub fn config(lane: Lane) -> conformance::Config {
    let full = conformance::Config {
        fault_budget: Some(Duration::from_secs(180)),
        fault_floor_percent: Some(50),
        ..conformance::Config::default()
    };
    match lane {
        Lane::Fake | Lane::Kernel => full,
        // The full load (200 builds, 10 at once): the store runs one zfs-fuse command at a
        // time (store_zfs::daemon_lock), which is what kept the daemon alive.
        Lane::ZfsFuse => conformance::Config {
            cases: 100,
            fault_budget: Some(Duration::from_secs(75)),
            fault_floor_percent: Some(25),
            ..full
        },
        Lane::Vm => conformance::Config {
            cases: 8,
            max_ops: 12,
            concurrency_cases: 3,
            full_check_each_step: false,
            load_builds: 16,
            load_jobs: 4,
            fault_budget: Some(VM_FAULT_BUDGET),
            fault_floor_percent: Some(VM_FAULT_FLOOR),
            ..full
        },
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
    /// Run this many checks at once [default: 2 in the guest and on the fake, else 1].
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Use this lane's default sizes instead of the engine's (what `--engine vm` passes to
    /// the guest, whose engine is `kernel`).
    #[arg(long, value_enum, hide = true)]
    pub lane: Option<Lane>,
    /// Only the suite's self-test (every run includes it): plant each of the suite's defects
    /// in the store in turn and succeed only if the suite catches every one (the stale cache
    /// release with a shrunk sequence).
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
    /// The backend's conformance test executable, built on the host (what --engine vm passes
    /// to the guest, which has no cargo).
    #[arg(long, value_name = "FILE", hide = true)]
    pub test_exe: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_runs_every_check_kind() {
        for lane in [Lane::Fake, Lane::ZfsFuse, Lane::Kernel, Lane::Vm] {
            let c = config(lane);
            assert!(c.cases > 0 && c.max_ops > 0, "{lane:?}: sequences run");
            assert!(c.concurrency_cases > 0, "{lane:?}: concurrency runs");
            assert!(c.load_builds > 0 && c.load_jobs > 1, "{lane:?}: load runs");
            assert!(c.fault_budget.is_some() && c.fault_floor_percent.is_some());
        }
        let vm = config(Lane::Vm);
        assert_eq!((vm.cases, vm.max_ops, vm.concurrency_cases), (8, 12, 3));
        assert!(!vm.full_check_each_step);
    }
}
