//! Command-line interface (clap derive). `cargo xtask --help` shows it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineChoice;
use store_zfs::testing::pool::PoolName;

/// zstore project automation: conformance runs on real ZFS engines, test pools, and the qemu
/// OpenZFS guest.
///
/// Exit status: 0 success; 1 test failures or leftovers; 2 bad usage or missing prerequisites;
/// 124 timeout; 125 VM failure; 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the store conformance suite on a fresh file-backed pool of a ZFS engine.
    ///
    /// Creates a sparse-file pool with a unique name, runs the suite, checks that nothing the
    /// run created is left (pool, daemon, qemu, loop device, mount), destroys the pool unless
    /// --keep, and ends with "conformance: N passed, M failed".
    Conformance(ConformanceArgs),
    /// Manage file-backed test pools (only pools this tool created are listed or destroyed).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Build or use the qemu guest with OpenZFS (Debian bookworm + zfs-dkms).
    #[command(subcommand)]
    Vm(VmCommand),
    /// Show which ZFS engines this machine has.
    Engines,
    /// Run every CI step: fmt, clippy, workspace tests, conformance on fake, zfs-fuse and vm
    /// (root: installs zfs-fuse, qemu, debootstrap; builds the VM image if not cached).
    Ci(crate::ci::CiArgs),
    /// Run the suite in this environment and write a JSON report (what `--engine vm` runs
    /// inside the guest).
    #[command(hide = true)]
    RunSuite(RunSuiteArgs),
    /// Benchmark the ZFS store against OBuilder's command sequences on a fresh pool, and the
    /// fake store against a plain copy; prints a table and writes target/bench/report.json.
    Bench(crate::bench::BenchArgs),
    /// Run the ZFS benchmark in this environment and write a JSON report (what `bench
    /// --engine vm` runs inside the guest).
    #[command(hide = true)]
    RunBench(crate::bench::RunBenchArgs),
    /// Crash safety with real processes: a child drives random operations on a store on a
    /// fresh pool and is `kill -9`ed at random moments; after each kill the store is reopened
    /// and checked against what the child journaled. Ends with "crash: N rounds, K kills, V
    /// violations".
    Crash(crate::crash::CrashArgs),
}

/// Options shared by `conformance` and `run-suite`.
#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// Number of generated cases for property-based parts of the suite.
    #[arg(long, value_name = "N")]
    pub cases: Option<u32>,
    /// Seed for generated cases (printed by a failing run so it can be repeated).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Replay a failure recorded by an earlier run.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
    /// Keep the pool (and a zfs-fuse daemon this run started) afterwards, for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Use this existing pool instead of creating one (kernel or zfs-fuse engine).
    #[arg(long, value_name = "NAME")]
    pub pool: Option<PoolName>,
    /// With --pool: accept a pool that already holds datasets or files.
    #[arg(long, requires = "pool")]
    pub allow_nonempty: bool,
    /// The pool's file, size and name prefix.
    #[command(flatten)]
    pub file: crate::pool::PoolArgs,
    /// Suite sizes per lane, the self-test, guest tests.
    #[command(flatten)]
    pub lane: crate::conformance::lane::LaneArgs,
}

/// `conformance` options.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Which ZFS to test on. auto: kernel OpenZFS if `zfs version` works and /dev/zfs
    /// exists, else zfs-fuse (installed and started if needed, when root).
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: EngineChoice,
    /// Suite options.
    #[command(flatten)]
    pub suite: SuiteArgs,
    /// VM options (--engine vm).
    #[command(flatten)]
    pub vm: VmOptions,
    /// Also write the run's report as JSON here (`cargo xtask ci` reads each lane's for its
    /// summary).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Options for booting the guest.
#[derive(Debug, Clone, Args)]
pub struct VmOptions {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub vm_mem: u32,
    /// Guest vCPUs [default: host CPUs, at most 2].
    #[arg(long, value_name = "N")]
    pub vm_cpus: Option<u32>,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub vm_timeout: u64,
    /// Fail if the guest is not ready (zfs loaded) this many seconds after qemu starts.
    #[arg(long, default_value_t = 180, value_name = "SECS")]
    pub vm_boot_timeout: u64,
    /// Rebuild the guest image even if a cached one exists.
    #[arg(long)]
    pub rebuild_image: bool,
    /// Print guest boot phases and the guest console.
    #[arg(long)]
    pub vm_verbose: bool,
}

/// `run-suite` options.
#[derive(Debug, Args)]
pub struct RunSuiteArgs {
    /// Which local engine (no auto/vm here: this runs where the ZFS is).
    #[arg(long, value_enum, default_value = "kernel")]
    pub engine: EngineChoice,
    /// Write the JSON run report here.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// Suite options.
    #[command(flatten)]
    pub suite: SuiteArgs,
}

/// `pool` subcommands.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a file-backed pool (sparse file in the pool directory) and print its name.
    Create {
        /// Pool name [default: a unique name with the prefix].
        #[arg(long)]
        name: Option<PoolName>,
        /// Which ZFS (vm and fake have no host pools).
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineChoice,
        /// The pool's file, size and name prefix.
        #[command(flatten)]
        file: crate::pool::PoolArgs,
    },
    /// Destroy a pool this tool created (refuses any other pool).
    Destroy {
        /// The pool.
        name: PoolName,
        /// Directory for pool files [default: $ZSTORE_POOL_DIR or /var/tmp/zstore-pools].
        #[arg(long)]
        pool_dir: Option<PathBuf>,
    },
    /// List the pools this tool created, with their live state.
    List {
        /// Directory for pool files [default: $ZSTORE_POOL_DIR or /var/tmp/zstore-pools].
        #[arg(long)]
        pool_dir: Option<PathBuf>,
    },
}

/// `vm` subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Build the guest image into `~/.cache/zstore/vm-<key>/` (root; a no-op when cached).
    Build {
        /// Rebuild even if cached.
        #[arg(long)]
        rebuild: bool,
        /// Do not reuse compiled zfs modules from ~/.cache/zstore/zfs-ko (time a full build).
        #[arg(long)]
        no_module_cache: bool,
    },
    /// Boot the guest, create a pool ($POOL), run COMMAND, stream its output, exit with its
    /// status (124 timeout, 125 VM or guest set-up failure).
    Run {
        /// Host directory mounted at the same path in the guest (virtio-9p); the command
        /// runs there.
        #[arg(long, value_name = "DIR")]
        share: Option<PathBuf>,
        /// Working directory in the guest [default: the share, else /root].
        #[arg(long, value_name = "DIR")]
        workdir: Option<PathBuf>,
        /// Size of the guest pool.
        #[arg(long, default_value = "2G")]
        pool_size: String,
        /// Do not create a pool (the zfs module is still loaded).
        #[arg(long)]
        no_pool: bool,
        /// Extra environment for the command, VAR=VALUE (repeatable).
        #[arg(short, long = "env", value_name = "VAR=VALUE")]
        env: Vec<String>,
        /// VM options.
        #[command(flatten)]
        vm: VmOptions,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Show the image cache key, whether it is built, and what is in it.
    Info,
}
