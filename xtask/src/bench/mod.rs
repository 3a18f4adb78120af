//! `cargo xtask bench`: what each store operation costs (wall time and `zfs`/`zpool`
//! processes), against OBuilder's ZFS store's command sequences on the same pool, and how fast
//! the fake store builds. Work in progress: the subcommand is registered, the measurements
//! follow.

use std::path::PathBuf;

use clap::Args;

use crate::cancel::Cancel;
use crate::engine::EngineChoice;
use crate::error::{Result, XtaskError};
use crate::runner::Runner;

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which store to measure: a ZFS engine (auto, kernel, zfs-fuse, vm) or the fake store.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineChoice,
    /// Fewer samples and 200 instead of 2,000 existing results (the report says so).
    #[arg(long)]
    pub quick: bool,
}

/// `run-bench` options (the guest side of `bench --engine vm`).
#[derive(Debug, Args)]
pub struct RunBenchArgs {
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// Fewer samples and fewer existing results.
    #[arg(long)]
    pub quick: bool,
}

/// Runs `bench`. Returns the exit status.
pub async fn bench(_runner: &Runner, _cancel: &Cancel, _args: &BenchArgs) -> Result<u8> {
    Err(XtaskError::Invalid("bench: not implemented yet".into()))
}

/// Runs `run-bench`. Returns the exit status.
pub async fn run_bench(_runner: &Runner, _cancel: &Cancel, _args: &RunBenchArgs) -> Result<u8> {
    Err(XtaskError::Invalid("run-bench: not implemented yet".into()))
}
