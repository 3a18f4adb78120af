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
//! The suite in the guest is store-zfs's own `tests/conformance.rs` (its `real_pool` tests,
//! the self-test among them), built on the host and run by `run-suite --test-exe`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::report::{Outcome, RunReport};
use crate::cancel::Cancel;
use crate::cli::ConformanceArgs;
use crate::error::{EXIT_VM_FAILED, Result, XtaskError};
use crate::leaks::LeakReport;
use crate::runner::Runner;
use crate::vm::{self, GUEST_CTL};

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
    s.file.bytes()?;
    let ctl = PathBuf::from(GUEST_CTL);
    let mut argv: Vec<OsString> = vec![
        "run-suite".into(),
        "--engine".into(),
        "kernel".into(),
        "--report".into(),
        ctl.join("report.json").into(),
    ];
    argv.extend(s.file.guest_args());
    // The guest's engine is `kernel`; its suite is sized for the VM lane, with this command
    // line's sizes on top (they travel as the variables below).
    argv.extend(["--lane".into(), "vm".into()]);
    if let Some(n) = s.lane.parallel {
        argv.extend(["--parallel".into(), n.to_string().into()]);
    }
    if s.lane.self_test_broken_store {
        argv.push("--self-test-broken-store".into());
    }
    if s.keep {
        // The guest is thrown away anyway; --keep only skips the in-guest pool destroy.
        argv.push("--keep".into());
    }
    argv.extend(["--test-exe".into(), ctl.join("test-conformance").into()]);
    // The image first: its build needs no workspace build, while the tests' build waits for
    // cargo's lock behind whatever else builds the workspace.
    let (image, mut spec) = vm::guest_xtask(runner, cancel, &args.vm, argv).await?;
    let (suite_exe, guest_tests) =
        super::guest_tests::build(runner, s.lane.with_store_zfs_tests).await?;
    spec.files.push((suite_exe, "test-conformance".into()));
    if let Some(replay) = &s.replay {
        spec.files.push((replay.clone(), "replay".into()));
        spec.argv
            .extend(["--replay".into(), ctl.join("replay").into()]);
    }
    if s.lane.with_store_zfs_tests {
        for (name, exe) in guest_tests {
            let file = format!("test-{name}");
            spec.argv
                .extend(["--then-run-test".into(), ctl.join(&file).into()]);
            spec.files.push((exe, file));
        }
    }
    spec.fetch.push("report.json".into());
    // The suite's knobs set on the host apply in the guest too.
    let mut vars: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("ZSTORE_CONFORMANCE_") && k != "ZSTORE_CONFORMANCE_ARTIFACTS"
        })
        .collect();
    vars.extend(super::seam::config(s, super::lane::Lane::Vm)?.to_env());
    spec.env.extend(vars);

    let (outcome, host_leaks) = vm::boot(runner, cancel, &image, &spec, "conformance").await?;
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
    let mut tests = Vec::new();
    let (outcome_, pool, guest_leaks) = match (outcome.exit.failure(&args.vm), guest_report) {
        (None, Some(r)) => {
            tests = r.tests;
            (r.outcome, r.pool, r.leaks)
        }
        (failure, _) => {
            let (message, exit_code) = failure.unwrap_or_else(|| {
                (
                    format!(
                        "the guest command exited ({:?}) without writing a report",
                        outcome.exit
                    ),
                    EXIT_VM_FAILED,
                )
            });
            (Outcome::Error { message, exit_code }, None, None)
        }
    };
    let mut leftovers: Vec<String> = guest_leaks
        .map(|l| {
            l.leftovers
                .into_iter()
                .map(|l| format!("guest: {l}"))
                .collect()
        })
        .unwrap_or_default();
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
