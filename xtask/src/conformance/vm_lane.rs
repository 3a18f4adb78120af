//! `--engine vm`: the same suite code, run inside the OpenZFS guest.
//!
//! The host copies its own xtask executable into the VM's control directory and boots the
//! guest with `xtask run-suite --engine kernel --report /mnt/zstore-ctl/report.json ...` as the
//! command (host and guest are both Debian bookworm, so the binary runs unchanged). Inside,
//! that is an ordinary local run on kernel OpenZFS: pool creation, suite, pool destruction and
//! leak check are the code the host lanes use. The guest's output streams to the terminal; its
//! JSON report comes back through the control directory, and the host adds its own leak check
//! (qemu gone, control directory removed) before printing the final line.
//!
//! With `--with-self-test` the suite's self-test runs in the same boot, as a second guest
//! command beside the suite (see [`VmSpec::also`]); its verdict joins the guest tests.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::report::{Outcome, RunReport, TestRun};
use crate::cancel::Cancel;
use crate::cli::ConformanceArgs;
use crate::error::{EXIT_OK, EXIT_TIMEOUT, EXIT_VM_FAILED, Result, XtaskError};
use crate::leaks::{self, Footprint, LeakReport};
use crate::pool;
use crate::runner::Runner;
use crate::vm::run::VmOutcome;
use crate::vm::{self, BuildOptions, GUEST_CTL, GuestExit, VmSpec};

/// Runs the suite in the guest and returns the combined report.
pub async fn run(runner: &Runner, cancel: &Cancel, args: &ConformanceArgs) -> RunReport {
    match run_inner(runner, cancel, args).await {
        Ok(r) => r,
        Err(e) => RunReport {
            engine: "vm (OpenZFS in qemu)".into(),
            pool: None,
            outcome: Outcome::Error {
                message: e.to_string(),
                exit_code: e.exit_code(),
            },
            leaks: None,
            tests: Vec::new(),
        },
    }
}

async fn run_inner(runner: &Runner, cancel: &Cancel, args: &ConformanceArgs) -> Result<RunReport> {
    let s = &args.suite;
    if s.pool.is_some() {
        return Err(XtaskError::Invalid(
            "--pool names a host pool; --engine vm creates its pool inside the guest".into(),
        ));
    }
    pool::parse_size(&s.size)?;
    let image = vm::image::ensure(
        runner,
        cancel,
        BuildOptions {
            rebuild: args.vm.rebuild_image,
            no_module_cache: false,
        },
    )
    .await?;
    let exe = std::env::current_exe()
        .map_err(|e| XtaskError::io("locating xtask", "/proc/self/exe", e))?;
    let ctl = PathBuf::from(GUEST_CTL);
    let mut argv: Vec<OsString> = vec![
        ctl.join("xtask").into(),
        "run-suite".into(),
        "--engine".into(),
        "kernel".into(),
        "--report".into(),
        ctl.join("report.json").into(),
        "--size".into(),
        s.size.clone().into(),
        "--prefix".into(),
        pool::prefix(s.prefix.as_deref()).into(),
    ];
    // The guest's engine is `kernel`; its suite is sized for the VM lane.
    argv.extend(["--lane".into(), "vm".into()]);
    if let Some(n) = s.cases {
        argv.extend(["--cases".into(), n.to_string().into()]);
    }
    if let Some(n) = s.lane.max_ops {
        argv.extend(["--max-ops".into(), n.to_string().into()]);
    }
    if let Some(n) = s.lane.concurrency_cases {
        argv.extend(["--concurrency-cases".into(), n.to_string().into()]);
    }
    if s.lane.quick_checks {
        argv.push("--quick-checks".into());
    }
    if let Some(n) = s.lane.parallel {
        argv.extend(["--parallel".into(), n.to_string().into()]);
    }
    if s.lane.self_test_broken_store {
        argv.push("--self-test-broken-store".into());
    }
    if let Some(seed) = s.seed {
        argv.extend(["--seed".into(), seed.to_string().into()]);
    }
    if s.keep {
        // The guest is thrown away anyway; --keep only skips the in-guest pool destroy.
        argv.push("--keep".into());
    }
    let mut spec = VmSpec::new(argv);
    spec.files.push((exe, "xtask".into()));
    if s.lane.with_self_test {
        if s.replay.is_some() {
            return Err(XtaskError::Invalid(
                "--with-self-test runs the self-test beside the suite; it cannot be combined \
                 with --replay"
                    .into(),
            ));
        }
        spec.also = self_test_argv(&ctl, s);
        spec.fetch
            .extend([SELF_TEST_REPORT, "output-also", "status-also"].map(String::from));
    }
    if let Some(replay) = &s.replay {
        spec.files.push((replay.clone(), "replay".into()));
        spec.argv
            .extend(["--replay".into(), ctl.join("replay").into()]);
    }
    if s.lane.with_store_zfs_tests {
        for (name, exe) in super::guest_tests::build(runner).await? {
            let file = format!("test-{name}");
            spec.argv
                .extend(["--then-run-test".into(), ctl.join(&file).into()]);
            spec.files.push((exe, file));
        }
    }
    spec.fetch.push("report.json".into());
    if let Ok(filter) = std::env::var("RUST_LOG") {
        spec.env.push(("RUST_LOG".into(), filter));
    }
    // The suite's knobs set on the host apply in the guest too.
    spec.env.extend(std::env::vars().filter(|(k, _)| {
        k.starts_with("ZSTORE_CONFORMANCE_") && k != "ZSTORE_CONFORMANCE_ARTIFACTS"
    }));
    spec.mem_mib = args.vm.vm_mem;
    if let Some(c) = args.vm.vm_cpus {
        spec.cpus = c;
    }
    spec.timeout = Duration::from_secs(args.vm.vm_timeout);
    spec.boot_timeout = Duration::from_secs(args.vm.vm_boot_timeout);
    spec.verbose = args.vm.vm_verbose;

    eprintln!(
        "xtask: booting the OpenZFS guest (kernel {}, zfs {}; qemu TCG, {} MiB, {} vCPU)",
        image.manifest.kernel, image.manifest.zfs, spec.mem_mib, spec.cpus
    );
    let outcome = vm::run::run(runner, cancel, &image, &spec).await?;
    match outcome.boot_to_ready {
        Some(t) => eprintln!(
            "xtask: VM: boot-to-ready {:.1} s; guest phases after qemu start: {}; VM wall time {:.1} s",
            t.as_secs_f64(),
            outcome.phase_summary(),
            outcome.wall.as_secs_f64()
        ),
        None => eprintln!(
            "xtask: VM: guest never got ready; wall time {:.1} s",
            outcome.wall.as_secs_f64()
        ),
    }
    let self_test = s.lane.with_self_test.then(|| self_test_result(&outcome));
    let host_leaks = leaks::check(
        runner,
        &Footprint {
            qemu_marker: Some(outcome.marker.clone()),
            dirs: vec![PathBuf::from(&outcome.marker)],
            files: vec![PathBuf::from(&outcome.marker)],
            ..Footprint::default()
        },
    )
    .await;
    host_leaks.print("host, VM lane");
    let guest_report: Option<RunReport> = outcome
        .fetched
        .get("report.json")
        .and_then(|b| serde_json::from_slice(b).ok());
    let engine = format!(
        "vm: {} in qemu (guest kernel {})",
        guest_report
            .as_ref()
            .map_or("OpenZFS", |r| r.engine.as_str()),
        image.manifest.kernel
    );
    let vm_error = |message: String, exit_code: u8| Outcome::Error { message, exit_code };
    let mut tests = Vec::new();
    let (outcome_, pool, guest_leaks) = match (outcome.exit, guest_report) {
        (GuestExit::Exited(_), Some(r)) => {
            tests = r.tests;
            (r.outcome, r.pool, r.leaks)
        }
        (GuestExit::Exited(code), None) => (
            vm_error(
                format!("the guest command exited with {code} without writing a report"),
                EXIT_VM_FAILED,
            ),
            None,
            None,
        ),
        (GuestExit::SetupFailed(why), _) => (
            vm_error(format!("guest set-up failed: {why}"), EXIT_VM_FAILED),
            None,
            None,
        ),
        (GuestExit::NoStatus(tail), _) => (
            vm_error(
                format!("the VM ended without a status; console:\n{tail}"),
                EXIT_VM_FAILED,
            ),
            None,
            None,
        ),
        (GuestExit::BootTimeout, _) => (
            vm_error(
                format!(
                    "the guest was not ready within {} s",
                    args.vm.vm_boot_timeout
                ),
                EXIT_TIMEOUT,
            ),
            None,
            None,
        ),
        (GuestExit::Timeout, _) => (
            vm_error(
                format!("the VM exceeded --vm-timeout {} s", args.vm.vm_timeout),
                EXIT_TIMEOUT,
            ),
            None,
            None,
        ),
    };
    let mut leftovers: Vec<String> = guest_leaks
        .map(|l| {
            l.leftovers
                .into_iter()
                .map(|l| format!("guest: {l}"))
                .collect()
        })
        .unwrap_or_default();
    if let Some((run, left)) = self_test {
        tests.push(run);
        leftovers.extend(left.into_iter().map(|l| format!("guest (self-test): {l}")));
    }
    leftovers.extend(
        host_leaks
            .leftovers
            .into_iter()
            .map(|l| format!("host: {l}")),
    );
    Ok(RunReport {
        engine,
        pool,
        outcome: outcome_,
        leaks: Some(LeakReport { leftovers }),
        tests,
    })
}

/// Where the self-test run beside the suite writes its report, in the control directory.
const SELF_TEST_REPORT: &str = "self-test.json";

/// The guest command of the self-test run beside the suite: what `--engine vm
/// --self-test-broken-store` runs in its own boot (same pool size and prefix, its own pool).
fn self_test_argv(ctl: &std::path::Path, s: &crate::cli::SuiteArgs) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        ctl.join("xtask").into(),
        "run-suite".into(),
        "--engine".into(),
        "kernel".into(),
        "--report".into(),
        ctl.join(SELF_TEST_REPORT).into(),
        "--size".into(),
        s.size.clone().into(),
        "--prefix".into(),
        pool::prefix(s.prefix.as_deref()).into(),
        "--lane".into(),
        "vm".into(),
        "--self-test-broken-store".into(),
    ];
    if s.keep {
        argv.push("--keep".into());
    }
    argv
}

/// Prints the output of the self-test run beside the suite and turns its report into a
/// guest-test result (passed only if the broken store was caught and nothing leaked), with
/// its leftovers.
fn self_test_result(outcome: &VmOutcome) -> (TestRun, Vec<String>) {
    if let Some(out) = outcome.fetched.get("output-also") {
        println!("--- the suite's self-test, run beside it in the same boot ---");
        for line in String::from_utf8_lossy(out).lines() {
            println!("self-test | {line}");
        }
    }
    let report: Option<RunReport> = outcome
        .fetched
        .get(SELF_TEST_REPORT)
        .and_then(|b| serde_json::from_slice(b).ok());
    let secs = match (outcome.phases.get("also-done"), outcome.phases.get("ready")) {
        (Some(done), Some(ready)) => (done - ready).max(0.0).round() as u64,
        _ => 0,
    };
    let (passed, summary, leftovers) = match report {
        Some(r) => {
            let summary = match &r.outcome {
                Outcome::Completed { report } => report.self_test.as_ref().map_or_else(
                    || "its report has no self-test verdict".to_owned(),
                    |v| v.explanation.clone(),
                ),
                Outcome::Error { message, .. } => message.clone(),
            };
            let passed = r.exit_code() == EXIT_OK;
            (
                passed,
                summary,
                r.leaks.map(|l| l.leftovers).unwrap_or_default(),
            )
        }
        None => {
            let status = outcome
                .fetched
                .get("status-also")
                .map(|b| String::from_utf8_lossy(b).trim().to_owned());
            let why = match status {
                Some(code) => format!("it exited with {code} without writing a report"),
                None => "it did not end".to_owned(),
            };
            (false, why, Vec::new())
        }
    };
    let run = TestRun {
        name: "self-test-broken-store".into(),
        passed,
        secs,
        summary,
    };
    (run, leftovers)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::conformance::report::{SelfTestVerdict, SuiteReport};

    fn outcome(fetched: &[(&str, Vec<u8>)]) -> VmOutcome {
        VmOutcome {
            exit: GuestExit::Exited(0),
            boot_to_ready: Some(Duration::from_secs(12)),
            phases: BTreeMap::from([("ready".into(), 12.0), ("also-done".into(), 250.4)]),
            wall: Duration::from_secs(500),
            fetched: fetched
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            marker: "/tmp/zstore-vm-x".into(),
        }
    }

    fn self_test_report(caught: bool, leftovers: &[&str]) -> Vec<u8> {
        let report = RunReport {
            engine: "kernel OpenZFS".into(),
            pool: Some("zstore-1".into()),
            outcome: Outcome::Completed {
                report: SuiteReport {
                    cases: Vec::new(),
                    seed: Some(5),
                    self_test: Some(SelfTestVerdict {
                        caught,
                        explanation: format!("caught: {caught}"),
                    }),
                },
            },
            leaks: Some(LeakReport {
                leftovers: leftovers.iter().map(|l| (*l).to_owned()).collect(),
            }),
            tests: Vec::new(),
        };
        serde_json::to_vec(&report).expect("encode")
    }

    #[test]
    fn the_self_test_beside_the_suite_passes_only_when_caught_and_clean() {
        let (run, left) =
            self_test_result(&outcome(&[(SELF_TEST_REPORT, self_test_report(true, &[]))]));
        assert!(run.passed, "{run:?}");
        assert_eq!((run.secs, run.summary.as_str()), (238, "caught: true"));
        assert!(left.is_empty());

        let (run, _) = self_test_result(&outcome(&[(
            SELF_TEST_REPORT,
            self_test_report(false, &[]),
        )]));
        assert!(!run.passed, "not caught fails");

        let (run, left) = self_test_result(&outcome(&[(
            SELF_TEST_REPORT,
            self_test_report(true, &["pool zstore-1 is still imported"]),
        )]));
        assert!(!run.passed, "a leak fails");
        assert_eq!(left, ["pool zstore-1 is still imported"]);

        let (run, _) = self_test_result(&outcome(&[("status-also", b"101\n".to_vec())]));
        assert!(!run.passed);
        assert!(run.summary.contains("exited with 101"), "{}", run.summary);
        let (run, _) = self_test_result(&outcome(&[]));
        assert!(!run.passed);
        assert!(run.summary.contains("did not end"), "{}", run.summary);
    }

    #[test]
    fn the_self_test_command_is_the_standalone_one() {
        let args = crate::cli::SuiteArgs {
            cases: Some(3),
            seed: Some(9),
            replay: None,
            keep: false,
            pool: None,
            allow_nonempty: false,
            size: "2G".into(),
            prefix: None,
            pool_dir: None,
            lane: Default::default(),
        };
        let argv: Vec<String> = self_test_argv(std::path::Path::new(GUEST_CTL), &args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv[0], format!("{GUEST_CTL}/xtask"));
        assert!(argv.ends_with(&[
            "--lane".into(),
            "vm".into(),
            "--self-test-broken-store".into()
        ]));
        // The self-test keeps its own seed and sizes (the lane's --seed/--cases are not its).
        assert!(!argv.iter().any(|a| a == "--seed" || a == "--cases"));
    }
}
