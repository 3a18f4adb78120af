//! `cargo xtask conformance` and the hidden `run-suite` that the VM lane runs in the guest.

mod guest_tests;
pub mod lane;
pub mod libtest;
mod local;
pub mod report;
pub mod seam;
mod vm_lane;

use crate::cancel::Cancel;
use crate::cli::{ConformanceArgs, RunSuiteArgs};
use crate::engine::EngineChoice;
use crate::error::{EXIT_SETUP, Result, XtaskError};
use crate::runner::Runner;

/// Runs `conformance`: the suite on the chosen engine, then the summary table and the final
/// line. Returns the exit status.
pub async fn conformance(runner: &Runner, cancel: &Cancel, args: &ConformanceArgs) -> u8 {
    let report = match args.engine {
        EngineChoice::Vm => vm_lane::run(runner, cancel, args).await,
        local => local::run(runner, cancel, local, &args.suite).await,
    };
    report.print_table();
    report.print_final_line();
    if let Some(path) = &args.report
        && let Err(e) = write_report(&report, path)
    {
        eprintln!("xtask: conformance: {e}");
    }
    report.exit_code()
}

/// Writes `report` as JSON to `path` (through a temporary file, so a reader never sees half).
fn write_report(report: &report::RunReport, path: &std::path::Path) -> Result<()> {
    let text = serde_json::to_vec_pretty(report)
        .map_err(|e| XtaskError::Invalid(format!("encoding the report: {e}")))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| XtaskError::io("writing the report", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| XtaskError::io("writing the report", path, e))
}

/// Runs `run-suite`: a local run whose JSON report is written to `--report`; prints progress
/// and the table, but leaves the final line to whoever reads the report (the host side of
/// the VM lane). Returns the exit status.
pub async fn run_suite(runner: &Runner, cancel: &Cancel, args: &RunSuiteArgs) -> Result<u8> {
    if matches!(args.engine, EngineChoice::Vm | EngineChoice::Auto) {
        return Err(XtaskError::Invalid(
            "run-suite needs a local engine: kernel, zfs-fuse or fake".into(),
        ));
    }
    let report = local::run(runner, cancel, args.engine, &args.suite).await;
    report.print_table();
    write_report(&report, &args.report)?;
    let code = report.exit_code();
    if code == EXIT_SETUP {
        tracing::warn!("run-suite: set-up failed, see the report");
    }
    Ok(code)
}
