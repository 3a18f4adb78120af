//! `cargo xtask`: zstore's project automation (see `cargo xtask --help`).
//!
//! - `conformance`: run the store conformance suite on a fresh test pool of a ZFS engine
//!   (kernel OpenZFS, zfs-fuse, OpenZFS in a qemu guest, or the fake store), with leak checks.
//! - `pool create|destroy|list`: file-backed test pools for operators.
//! - `vm build|run|info`: the cached Debian guest with OpenZFS built by zfs-dkms.
//! - `engines`: which engines this machine has.
//! - `ci`: every CI step in order (what `.ci/run` calls).
//! - `crash`: kill -9 a process driving a store at random moments, reopen, check (crash
//!   safety with real processes).
//! - `bench`: per-operation cost of the ZFS store vs OBuilder's command sequences, and fake
//!   store throughput.
//!
//! Every external command goes through [`runner::Runner`] (argument vectors, logged with
//! `tracing`; set `RUST_LOG=xtask=debug` to see each one), except test-pool commands, which
//! go through `store_zfs::testing::pool` and a `store_zfs::Runner` (logged the same way,
//! under `store_zfs::testing::pool`).

mod bench;
mod cancel;
mod ci;
mod cli;
mod commands;
mod conformance;
mod crash;
mod engine;
mod error;
mod leaks;
mod pool;
mod prereq;
mod procs;
mod runner;
mod vm;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::{EXIT_SETUP, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // One thread: children spawned with a parent-death signal (qemu) are tied to the thread
    // that spawned them, and the main thread lives as long as the process.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xtask: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let code = rt.block_on(async {
        match dispatch(cli.command).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask: error: {e}");
                e.exit_code()
            }
        }
    });
    ExitCode::from(code)
}

async fn dispatch(command: Command) -> Result<u8> {
    let cancel = cancel::on_signals()?;
    let runner = runner::Runner::system();
    match command {
        Command::Conformance(args) => Ok(conformance::conformance(&runner, &cancel, &args).await),
        Command::RunSuite(args) => conformance::run_suite(&runner, &cancel, &args).await,
        Command::Pool(cmd) => commands::pool(&runner, cmd).await,
        Command::Vm(cmd) => commands::vm(&runner, &cancel, cmd).await,
        Command::Engines => commands::engines().await,
        Command::Ci(args) => ci::run(&runner, &cancel, &args).await,
        Command::Bench(args) => bench::bench(&runner, &cancel, &args).await,
        Command::RunBench(args) => bench::run_bench(&runner, &cancel, &args).await,
        Command::Crash(args) => crash::crash(&runner, &cancel, &args).await,
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // The test-pool helper lives in store-zfs; its log lines (each command it runs) are
    // xtask's output as much as xtask's own.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("xtask=info,store_zfs::testing::pool=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .compact()
        .init();
}
