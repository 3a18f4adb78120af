//! `cargo xtask ci`: everything CI checks, in order, with timings and a closing count.
//!
//! Steps: format, clippy, the API docs (rustdoc warnings are errors), the workspace tests (with a ZFS engine made available first and
//! `ZSTORE_REQUIRE_ZFS=1`, so store-zfs's real-pool tests cannot skip; the suites a lane runs
//! at its own sizes are left to it, see [`LEFT_TO_LANES`]), the conformance lanes
//! (fake, zfs-fuse, vm: each runs the backend crate's own `tests/conformance.rs`, whose
//! `self_test` proves that every deliberately broken store is caught on that storage; the
//! vm lane also runs store-zfs's integration tests on OpenZFS in the same boot). Each lane
//! installs what it needs (as root) and leaves
//! nothing behind; a zfs-fuse daemon started for the tests is stopped at the end. Every step
//! runs even if an earlier one failed, so one CI run shows every problem; the exit status is
//! non-zero if any step failed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::cancel::Cancel;
use crate::engine::{self, EngineChoice, LocalEngine, zfs_fuse};
use crate::error::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Result, XtaskError};
use crate::leaks::{self, Footprint};
use crate::procs;
use crate::runner::{Cmd, Runner};

/// `ci` options.
#[derive(Debug, clap::Args)]
pub struct CiArgs {
    /// Skip these steps (fmt, clippy, doc, test, fake, zfs-fuse, vm);
    /// repeatable.
    #[arg(long, value_name = "STEP")]
    pub skip: Vec<String>,
}

const STEPS: [&str; 7] = ["fmt", "clippy", "doc", "test", "fake", "zfs-fuse", "vm"];

/// Steps that run beside the others, one after the other, once [`BACKGROUND_AFTER`] has run:
/// the VM lane is mostly qemu's own CPU and a first image build, the host steps mostly wait
/// for the zfs-fuse daemon (a whole run used a quarter of the 2 cores' time one step at a
/// time), so together they take about as long as the longer track. The VM lane runs the
/// suite (the self-test among its tests) and store-zfs's integration tests in one boot.
const BACKGROUND: [&str; 1] = ["vm"];

/// The step after which the [`BACKGROUND`] steps start: at once, since the VM lane is the
/// longer track (a cold image build alone takes 5-9 minutes, mostly debootstrap and the zfs
/// module's compile, and needs no workspace build); its cargo build of the guest's test
/// binaries waits for the workspace build on cargo's own lock.
const BACKGROUND_AFTER: &str = "fmt";

/// The most one step may take before it is stopped and counted as failed, so that a hang
/// (a wedged ZFS daemon, a stuck guest) costs a bounded time and the run still reports every
/// step. About three times what each took on the 2-core CI machine, cold build included.
fn step_limit(step: &str) -> Duration {
    let minutes = match step {
        "fmt" => 5,
        "clippy" => 15,
        "doc" => 10,
        "test" => 25,
        "fake" => 5,
        "zfs-fuse" => 12,
        "vm" => 45,
        _ => 10,
    };
    Duration::from_secs(minutes * 60)
}

/// The suites the workspace tests leave to a conformance lane: `(lane, the libtest filter of
/// its tests, whether the lane stands in for them only when the tests are on zfs-fuse)`. A lane
/// runs the very same tests (the backend crate's `tests/conformance.rs` module) at its own,
/// larger sizes, so running them in the test step as well only doubles their time (the
/// real-pool suite on zfs-fuse took 330 s of the test step's 1,046 s in CI, with the VM lane
/// short of CPU beside it). They stay in the test step when their lane is skipped, or when
/// the tests have another engine than the lane's (kernel OpenZFS on the host).
const LEFT_TO_LANES: [(&str, &str, bool); 2] = [
    ("fake", "report_busy::", false),
    ("zfs-fuse", "real_pool::", true),
];

/// The `(lane, libtest filter)` pairs of [`LEFT_TO_LANES`] that apply when the steps in
/// `skip` are skipped and the workspace tests run on zfs-fuse (`tests_on_zfs_fuse`) or not.
fn left_to_lanes(skip: &[String], tests_on_zfs_fuse: bool) -> Vec<(&'static str, &'static str)> {
    LEFT_TO_LANES
        .iter()
        .filter(|(lane, _, _)| !skip.iter().any(|s| s == lane))
        .filter(|(_, _, only_on_zfs_fuse)| tests_on_zfs_fuse || !only_on_zfs_fuse)
        .map(|(lane, filter, _)| (*lane, *filter))
        .collect()
}

/// Where a conformance lane's JSON report goes, in the run's private directory.
fn report_path(reports: &std::path::Path, lane: &str) -> PathBuf {
    reports.join(format!("{lane}.json"))
}

/// What one step runs: one or more commands. A conformance lane writes its report into
/// `reports` (see [`report_path`]); the workspace tests leave out the tests that libtest's
/// `--skip` matches with a filter of `left_out` (see [`left_to_lanes`]).
fn commands(
    step: &str,
    cargo: &OsString,
    me: &OsString,
    reports: &std::path::Path,
    left_out: &[&str],
) -> Vec<Cmd> {
    let conformance = |engine: &str| {
        Cmd::new(me)
            .args(["conformance", "--engine", engine, "--report"])
            .arg(report_path(reports, engine))
    };
    match step {
        "fmt" => vec![Cmd::new(cargo).args(["fmt", "--all", "--", "--check"])],
        "clippy" => vec![Cmd::new(cargo).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])],
        "doc" => vec![
            Cmd::new(cargo)
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        ],
        "test" => {
            let mut test = Cmd::new(cargo)
                .args(["test", "--workspace"])
                // Set, store-zfs's real-pool tests fail instead of skipping without ZFS.
                .env(store_zfs::testing::REQUIRE_ZFS_ENV, "1");
            if !left_out.is_empty() {
                test = test.arg("--");
                for filter in left_out {
                    test = test.args(["--skip", filter]);
                }
            }
            vec![test]
        }
        "vm" => vec![conformance("vm").arg("--with-store-zfs-tests")],
        lane => vec![conformance(lane)],
    }
}

/// Runs the CI steps; returns the exit status.
pub async fn run(runner: &Runner, cancel: &Cancel, args: &CiArgs) -> Result<u8> {
    if let Some(bad) = args.skip.iter().find(|s| !STEPS.contains(&s.as_str())) {
        return Err(XtaskError::Invalid(format!(
            "--skip {bad}: steps are {}",
            STEPS.join(", ")
        )));
    }
    let started = Instant::now();
    let mut engine = None;
    let results = steps(runner, cancel, args, &mut engine).await;
    // Whatever happened, stop a daemon the tests needed and this run started.
    let mut footprint = Footprint::default();
    if let Some(e) = engine {
        footprint.daemon = e.started_daemon();
        if let Err(err) = e.finish(false).await {
            eprintln!("xtask: ci: stopping the ZFS engine: {err}");
        }
    }
    let (results, depth) = results?;
    let leaks = leaks::check(&footprint).await;
    leaks.print("ci");
    println!("ci summary:");
    for (step, verdict, secs) in &results {
        println!("  {step:<12} {verdict:<8} {secs:>6.0} s");
        for line in depth.iter().filter(|(s, _)| s == step).map(|(_, l)| l) {
            println!("    {line}");
        }
    }
    let failed = results.iter().filter(|r| r.1 == "FAILED").count() + usize::from(!leaks.clean());
    let passed = results.iter().filter(|r| r.1 == "passed").count();
    let skipped = results.iter().filter(|r| r.1 == "skipped").count();
    println!(
        "ci: {passed} passed, {failed} failed, {skipped} skipped in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 { EXIT_OK } else { EXIT_FAILED })
}

/// One step's outcome: its name, `passed`/`FAILED`/`skipped`, and seconds.
type StepResult = (&'static str, &'static str, f64);

/// A line of a conformance lane's depth (fault points, sequences, load, kill -9 rounds),
/// with its step.
type DepthLine = (&'static str, String);

/// Runs every step not skipped: the foreground steps in order, and the [`BACKGROUND`] steps
/// in order beside them from [`BACKGROUND_AFTER`] on, their output kept in a log that is
/// printed when they end. `engine` receives the ZFS engine prepared for the workspace tests
/// (the caller undoes it).
async fn steps(
    runner: &Runner,
    cancel: &Cancel,
    args: &CiArgs,
    engine: &mut Option<LocalEngine>,
) -> Result<(Vec<StepResult>, Vec<DepthLine>)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The steps run a private copy of this executable: `cargo test --workspace` relinks
    // target/debug/xtask while the background VM lane still runs (and copies itself into the
    // guest), which once failed with "target/debug/xtask (deleted)".
    let private = tempfile::Builder::new()
        .prefix("zstore-ci-")
        .tempdir()
        .map_err(|e| XtaskError::io("creating", std::env::temp_dir(), e))?;
    let exe = std::env::current_exe()
        .map_err(|e| XtaskError::io("locating xtask", "/proc/self/exe", e))?;
    let copy = private.path().join("xtask");
    std::fs::copy(&exe, &copy).map_err(|e| XtaskError::io("copying", &exe, e))?;
    let me: OsString = copy.into();
    let ctx = Ctx {
        runner: runner.clone(),
        cancel: cancel.clone(),
        skip: args.skip.clone(),
        cargo,
        me,
        reports: private.path().to_owned(),
    };
    let log = std::env::temp_dir().join(format!("zstore-ci-{}-background.log", std::process::id()));
    let mut background = None;
    let mut results = Vec::new();
    for step in STEPS.into_iter().filter(|s| !BACKGROUND.contains(s)) {
        results.push(ctx.step(step, engine, None).await?);
        if step == BACKGROUND_AFTER {
            background = Some(spawn_background(ctx.clone(), log.clone())?);
        }
    }
    let background = match background {
        Some(b) => b,
        None => spawn_background(ctx.clone(), log.clone())?,
    };
    println!(
        "==> ci: waiting for the background steps ({})",
        BACKGROUND.join(", ")
    );
    let outcome = background.await;
    println!(
        "==> ci: output of the background steps ({}):",
        log.display()
    );
    match std::fs::read_to_string(&log) {
        Ok(text) => print!("{text}"),
        Err(e) => println!("(cannot read {}: {e})", log.display()),
    }
    let _ = std::fs::remove_file(&log);
    let bg = outcome.map_err(|e| XtaskError::Invalid(format!("the background steps: {e}")))??;
    for (step, verdict, secs) in &bg {
        println!("==> ci: {step}: {verdict} in {secs:.0} s (background)");
    }
    results.extend(bg);
    // Each lane's depth, from the report it wrote (none if it did not get that far).
    let mut depth = Vec::new();
    for (step, verdict, _) in &results {
        let path = report_path(private.path(), step);
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        match serde_json::from_slice::<crate::conformance::report::RunReport>(&text) {
            Ok(report) => depth.extend(report.depth().into_iter().map(|l| (*step, l))),
            Err(e) if *verdict != "skipped" => {
                depth.push((*step, format!("(its report {}: {e})", path.display())));
            }
            Err(_) => {}
        }
    }
    Ok((results, depth))
}

/// Starts the [`BACKGROUND`] steps, one after the other, with their output in `log`.
fn spawn_background(
    ctx: Ctx,
    log: PathBuf,
) -> Result<tokio::task::JoinHandle<Result<Vec<StepResult>>>> {
    let file = std::fs::File::create(&log).map_err(|e| XtaskError::io("creating", &log, e))?;
    println!(
        "==> ci: {} run in the background from now on (output in {}, printed when they end)",
        BACKGROUND.join(", "),
        log.display()
    );
    Ok(tokio::spawn(async move {
        let mut results = Vec::new();
        let mut no_engine = None;
        for step in BACKGROUND {
            results.push(ctx.step(step, &mut no_engine, Some(&file)).await?);
        }
        Ok(results)
    }))
}

/// What every step needs.
#[derive(Clone)]
struct Ctx {
    runner: Runner,
    cancel: Cancel,
    skip: Vec<String>,
    cargo: OsString,
    me: OsString,
    /// The run's private directory, where the lanes write their reports.
    reports: PathBuf,
}

impl Ctx {
    /// Runs one step (unless skipped), its output to the terminal or to `log`.
    async fn step(
        &self,
        step: &'static str,
        engine: &mut Option<LocalEngine>,
        log: Option<&std::fs::File>,
    ) -> Result<StepResult> {
        if self.skip.iter().any(|s| s == step) {
            return Ok((step, "skipped", 0.0));
        }
        let say = |line: String| match log {
            Some(mut f) => {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            None => println!("{line}"),
        };
        let started = Instant::now();
        let mut ok = true;
        // A daemon wedged by an earlier step would hang this one: replace it first.
        if matches!(step, "test" | "zfs-fuse") {
            match zfs_fuse::recover_if_wedged(&self.runner).await {
                Ok(true) => say(format!(
                    "==> ci: {step}: replaced a wedged zfs-fuse daemon first"
                )),
                Ok(false) => {}
                Err(e) => say(format!(
                    "==> ci: {step}: could not replace a wedged zfs-fuse daemon: {e}"
                )),
            }
        }
        let mut left_out = Vec::new();
        if step == "test" {
            // store-zfs's real-pool tests need a ZFS that answers: kernel OpenZFS if this
            // host has it, else zfs-fuse (installed, and a daemon started, if needed).
            match engine::prepare_local(&self.runner, EngineChoice::Auto).await {
                Ok(e) => {
                    say(format!("==> ci: test: ZFS for the tests: {}", e.describe()));
                    *engine = Some(e);
                }
                Err(e) => {
                    say(format!(
                        "==> ci: test: no ZFS engine for the real-pool tests: {e}"
                    ));
                    ok = false;
                }
            }
            let on_zfs_fuse = matches!(engine, Some(LocalEngine::ZfsFuse { .. }));
            for (lane, filter) in left_to_lanes(&self.skip, on_zfs_fuse) {
                say(format!(
                    "==> ci: test: {filter}* left to the {lane} lane, which runs those tests at its own sizes"
                ));
                left_out.push(filter);
            }
        }
        let deadline = started + step_limit(step);
        for cmd in commands(step, &self.cargo, &self.me, &self.reports, &left_out) {
            if !ok {
                break;
            }
            say(format!("==> ci: {step}: {}", cmd.display()));
            ok = match run_step(&self.runner, &self.cancel, &cmd, deadline, log).await? {
                Some(status) => status == EXIT_OK,
                None => {
                    say(format!(
                        "==> ci: {step}: stopped after its limit of {} minutes",
                        step_limit(step).as_secs() / 60
                    ));
                    false
                }
            };
        }
        let secs = started.elapsed().as_secs_f64();
        let verdict = if ok { "passed" } else { "FAILED" };
        say(format!("==> ci: {step}: {verdict} in {secs:.0} s"));
        Ok((step, verdict, secs))
    }
}

/// How long a step's process group has to clean up after SIGTERM before SIGKILL.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);

/// Runs one step in its own process group, streaming its output; on SIGINT/SIGTERM the whole
/// group gets SIGTERM (so a nested xtask cleans up its pool, daemon or VM) and is waited for.
/// At `deadline` the group gets SIGTERM too (then SIGKILL after [`CLEANUP_LIMIT`]) and the
/// result is `None`.
async fn run_step(
    runner: &Runner,
    cancel: &Cancel,
    cmd: &Cmd,
    deadline: Instant,
    log: Option<&std::fs::File>,
) -> Result<Option<u8>> {
    let output = |f: Option<&std::fs::File>| -> Result<Stdio> {
        Ok(match f {
            Some(f) => f
                .try_clone()
                .map_err(|e| XtaskError::Invalid(format!("duplicating the log file: {e}")))?
                .into(),
            None => Stdio::inherit(),
        })
    };
    let (stdout, stderr) = (output(log)?, output(log)?);
    let mut child = runner.spawn(cmd, |c| {
        c.process_group(0).stdout(stdout).stderr(stderr);
    })?;
    let pgid = child.id();
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| XtaskError::Invalid(format!("waiting for {}: {e}", cmd.display())))?,
        () = cancel.cancelled() => {
            if let Some(pgid) = pgid {
                procs::signal_group(pgid, Signal::TERM);
            }
            let _ = child.wait().await;
            return Err(XtaskError::Interrupted);
        }
        () = tokio::time::sleep_until(deadline.into()) => {
            if let Some(pgid) = pgid {
                procs::signal_group(pgid, Signal::TERM);
                if tokio::time::timeout(CLEANUP_LIMIT, child.wait()).await.is_err() {
                    procs::signal_group(pgid, Signal::KILL);
                }
            }
            let _ = child.wait().await;
            return Ok(None);
        }
    };
    Ok(Some(match status.code() {
        Some(c) => u8::try_from(c).unwrap_or(EXIT_FAILED),
        None => EXIT_INTERRUPTED,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_runs_once_and_has_a_limit_and_commands() {
        let (cargo, me) = (OsString::from("cargo"), OsString::from("xtask"));
        assert!(STEPS.contains(&BACKGROUND_AFTER) && !BACKGROUND.contains(&BACKGROUND_AFTER));
        for step in STEPS {
            assert!(
                !commands(step, &cargo, &me, std::path::Path::new("/r"), &[]).is_empty(),
                "{step}"
            );
            assert!(step_limit(step) >= Duration::from_secs(300), "{step}");
        }
        for step in BACKGROUND {
            assert!(STEPS.contains(&step), "{step}");
        }
    }

    fn argv(cmd: &Cmd) -> Vec<String> {
        cmd.argv()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_real_lanes_run_the_suite_and_the_guest_tests() {
        let (cargo, me) = (OsString::from("cargo"), OsString::from("xtask"));
        let r = std::path::Path::new("/r");
        let vm = commands("vm", &cargo, &me, r, &[]);
        assert_eq!(
            argv(&vm[0]),
            [
                "xtask",
                "conformance",
                "--engine",
                "vm",
                "--report",
                "/r/vm.json",
                "--with-store-zfs-tests"
            ]
        );
        assert_eq!(
            argv(&commands("zfs-fuse", &cargo, &me, r, &[])[0]),
            [
                "xtask",
                "conformance",
                "--engine",
                "zfs-fuse",
                "--report",
                "/r/zfs-fuse.json"
            ]
        );
        let test = &commands("test", &cargo, &me, r, &[])[0];
        assert!(test.display().contains("test --workspace"));
        let command = test.to_command();
        let require: Vec<_> = command
            .as_std()
            .get_envs()
            .filter(|(k, _)| *k == "ZSTORE_REQUIRE_ZFS")
            .map(|(_, v)| v.map(|v| v.to_owned()))
            .collect();
        assert_eq!(
            require,
            [Some("1".into())],
            "store-zfs's real-pool tests must not skip"
        );
    }

    #[test]
    fn the_test_step_leaves_a_suite_to_its_lane_only_if_the_lane_runs_it() {
        let skip =
            |steps: &[&str]| -> Vec<String> { steps.iter().map(|s| s.to_string()).collect() };
        assert_eq!(
            left_to_lanes(&[], true),
            [("fake", "report_busy::"), ("zfs-fuse", "real_pool::")]
        );
        // Kernel OpenZFS on the host: the zfs-fuse lane is another engine.
        assert_eq!(left_to_lanes(&[], false), [("fake", "report_busy::")]);
        assert_eq!(
            left_to_lanes(&skip(&["zfs-fuse"]), true),
            [("fake", "report_busy::")]
        );
        assert!(left_to_lanes(&skip(&["fake", "zfs-fuse"]), true).is_empty());
        let (cargo, me) = (OsString::from("cargo"), OsString::from("xtask"));
        let test = &commands(
            "test",
            &cargo,
            &me,
            std::path::Path::new("/r"),
            &["real_pool::"],
        )[0];
        assert_eq!(
            argv(test),
            [
                "cargo",
                "test",
                "--workspace",
                "--",
                "--skip",
                "real_pool::"
            ]
        );
    }
}
