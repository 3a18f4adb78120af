//! The entry points: [`run`] (every check, or those [`Config::only`] names), [`replay`] (one
//! saved sequence), and the helper behind [`conformance_tests!`](crate::conformance_tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;

use crate::check_line::{CheckLine, LineVerdict};
use crate::collisions::NameGroups;
use crate::concurrency::{CONCURRENCY, concurrency};
use crate::config::{Config, ConfigError};
use crate::exec::{Settings, current_user};
use crate::factory::{Erased, SharedFactory, StoreFactory};
use crate::fault_sweep::{FAULT_SWEEP, fault_sweep};
use crate::generate::Universe;
use crate::load::{LOAD, load};
use crate::ops::{Op, script};
use crate::report::{CheckOutcome, CheckReport, FailingSequence, Failure, Progress, Report};
use crate::scenarios::SCENARIOS;
use crate::scenarios::support::{Ctx, Stop};
use crate::sequences::{SEQUENCES, SequenceFile, run_case, sequences};

/// The names of every check, in the order [`run`] runs them: the scenarios, then
/// `sequences`, `concurrency`, `fault_sweep` and `load`. Use them in [`Config::only`].
pub fn check_names() -> Vec<&'static str> {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .chain([SEQUENCES, CONCURRENCY, FAULT_SWEEP, LOAD])
        .collect()
}

pub(crate) fn settings(config: &Config) -> Settings {
    Settings {
        op_timeout: config.op_timeout,
        check_ownership: config
            .check_ownership
            .unwrap_or_else(|| current_user().uid() == 0),
        full_check_each_step: config.full_check_each_step,
    }
}

/// Runs the suite against the backend `factory` opens, and reports what it found.
///
/// Runs every check (or only those named in [`Config::only`]): the named scenarios, then the
/// `sequences` property (random operation sequences compared with the model after every step;
/// a failure is shrunk, printed as a numbered script, and saved as JSON for [`replay`]), then
/// the `concurrency` property (on a multi-threaded runtime of its own), the `fault_sweep`
/// (skipped unless the factory declares
/// [`Capabilities::fault_injection`](crate::Capabilities::fault_injection)) and the `load`
/// check.
///
/// Call it from any tokio runtime (multi-threaded or current-thread); it does not assume it
/// runs under `cargo test`. Progress goes to [`Config::progress`] and to `tracing`. It never
/// panics because the backend misbehaves: failures, hangs (see [`Config::op_timeout`]) and
/// panics of the store end up in the [`Report`].
pub async fn run<F: StoreFactory>(factory: F, config: Config) -> Report {
    run_with_names(factory, config, NameGroups::all()).await
}

/// [`run`], with the name scenarios drawing only the collision groups `names` (the self-test
/// narrows them to the groups its planted defect merges).
pub(crate) async fn run_with_names<F: StoreFactory>(
    factory: F,
    config: Config,
    names: NameGroups,
) -> Report {
    crate::quiet_panic::install();
    let factory: SharedFactory = Arc::new(Erased(factory));
    let seed = config.seed.unwrap_or_else(random_seed);
    let settings = settings(&config);
    let scenario_ctx = Ctx {
        names: Arc::new(names),
        ..Ctx::new(Arc::clone(&factory), settings.clone())
    };
    let caps = factory.capabilities();
    let mut checks = Vec::new();
    if let Some(why) = factory.unavailable() {
        for check in check_names().into_iter().filter(|c| config.wants(c)) {
            let started = begin(&config, check);
            checks.push(end(
                &config,
                check,
                started,
                CheckOutcome::Skipped(why.clone()),
            ));
        }
        return Report {
            backend: factory.name(),
            seed,
            checks,
        };
    }

    for scenario in SCENARIOS {
        if !config.wants(scenario.name) {
            continue;
        }
        let started = begin(&config, scenario.name);
        let ctx = scenario_ctx.clone();
        let limit = config.op_timeout * 10;
        let outcome = match tokio::time::timeout(
            limit,
            std::panic::AssertUnwindSafe((scenario.run)(ctx)).catch_unwind(),
        )
        .await
        {
            Err(_) => failed(format!(
                "the scenario did not finish within {limit:?} (hung?)"
            )),
            Ok(Err(payload)) => failed(format!(
                "the scenario panicked: {}",
                crate::sequences::panic_message(&*payload)
            )),
            Ok(Ok(Ok(()))) => CheckOutcome::Passed,
            Ok(Ok(Err(Stop::Skip(why)))) => CheckOutcome::Skipped(why),
            Ok(Ok(Err(Stop::Fail(message)))) => failed(message),
        };
        checks.push(end(&config, scenario.name, started, outcome));
    }

    if config.wants(SEQUENCES) {
        let started = begin(&config, SEQUENCES);
        let universe = Universe::new(settings.check_ownership, caps.can_reopen, current_user());
        let (f, c, s) = (Arc::clone(&factory), config.clone(), settings.clone());
        let handle = tokio::runtime::Handle::current();
        let (outcome, detail) =
            tokio::task::spawn_blocking(move || sequences(f, &c, &s, &universe, seed, &handle))
                .await
                .unwrap_or_else(|e| (failed(format!("the sequences check panicked: {e}")), None));
        let mut report = end(&config, SEQUENCES, started, outcome);
        report.detail = detail;
        checks.push(report);
    }

    if config.wants(CONCURRENCY) {
        let started = begin(&config, CONCURRENCY);
        let (f, c, s) = (Arc::clone(&factory), config.clone(), settings.clone());
        let outcome = tokio::task::spawn_blocking(move || concurrency(f, &c, &s, seed))
            .await
            .unwrap_or_else(|e| failed(format!("the concurrency check panicked: {e}")));
        checks.push(end(&config, CONCURRENCY, started, outcome));
    }

    if config.wants(FAULT_SWEEP) {
        let started = begin(&config, FAULT_SWEEP);
        let ctx = Ctx::new(Arc::clone(&factory), settings.clone());
        let (outcome, detail) = match std::panic::AssertUnwindSafe(fault_sweep(ctx, &config))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(payload) => (
                failed(format!(
                    "the fault sweep panicked: {}",
                    crate::sequences::panic_message(&*payload)
                )),
                None,
            ),
        };
        let mut report = end(&config, FAULT_SWEEP, started, outcome);
        report.detail = detail;
        checks.push(report);
    }

    if config.wants(LOAD) {
        let started = begin(&config, LOAD);
        let (f, c, s) = (Arc::clone(&factory), config.clone(), settings.clone());
        let (outcome, detail) = tokio::task::spawn_blocking(move || load(f, &c, &s))
            .await
            .unwrap_or_else(|e| (failed(format!("the load check panicked: {e}")), None));
        let mut report = end(&config, LOAD, started, outcome);
        report.detail = detail;
        checks.push(report);
    }

    Report {
        backend: factory.name(),
        seed,
        checks,
    }
}

fn begin(config: &Config, check: &str) -> Instant {
    config.emit(Progress::CheckStarted {
        check: check.to_owned(),
    });
    Instant::now()
}

fn end(config: &Config, check: &str, started: Instant, outcome: CheckOutcome) -> CheckReport {
    let took = started.elapsed();
    config.emit(Progress::CheckFinished {
        check: check.to_owned(),
        passed: !matches!(outcome, CheckOutcome::Failed(_)),
        took,
    });
    CheckReport {
        name: check.to_owned(),
        outcome,
        took,
        detail: None,
    }
}

fn failed(message: String) -> CheckOutcome {
    CheckOutcome::Failed(Failure {
        message,
        sequence: None,
    })
}

fn random_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Truncation is fine: any 64 bits of the clock mixed with the pid make a seed.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

/// What [`replay`] runs: a saved JSON file or a sequence in memory.
#[derive(Clone, Debug)]
pub enum ReplaySource {
    /// A file written by a failing `sequences` check (a [`SequenceFile`]).
    File(PathBuf),
    /// These operations.
    Ops(Vec<Op>),
}

impl From<PathBuf> for ReplaySource {
    fn from(p: PathBuf) -> Self {
        ReplaySource::File(p)
    }
}

impl From<&Path> for ReplaySource {
    fn from(p: &Path) -> Self {
        ReplaySource::File(p.to_path_buf())
    }
}

impl From<Vec<Op>> for ReplaySource {
    fn from(ops: Vec<Op>) -> Self {
        ReplaySource::Ops(ops)
    }
}

/// Why [`replay`] could not run a sequence at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a saved sequence.
    #[error("{} is not a saved conformance sequence: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A `ZSTORE_CONFORMANCE_*` variable is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Runs exactly one operation sequence (from a file saved by a failing run, or given
/// directly) against a fresh store, with the knobs of [`Config::from_env`].
///
/// The report has one check, `replay`, which fails with the same numbered script a failing
/// `sequences` check prints.
///
/// # Errors
/// A [`ReplayError`] if the file cannot be read or parsed, or the environment is malformed;
/// a failing sequence is not an error but a failed [`Report`].
pub async fn replay<F: StoreFactory>(
    factory: F,
    source: impl Into<ReplaySource>,
) -> Result<Report, ReplayError> {
    replay_with(factory, source, Config::from_env()?).await
}

/// [`replay`] with explicit knobs.
///
/// # Errors
/// A [`ReplayError`] if the file cannot be read or parsed.
pub async fn replay_with<F: StoreFactory>(
    factory: F,
    source: impl Into<ReplaySource>,
    config: Config,
) -> Result<Report, ReplayError> {
    crate::quiet_panic::install();
    let (ops, seed) = match source.into() {
        ReplaySource::Ops(ops) => (ops, config.seed.unwrap_or_default()),
        ReplaySource::File(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ReplayError::Read {
                path: path.clone(),
                source,
            })?;
            let file: SequenceFile = serde_json::from_str(&text)
                .map_err(|source| ReplayError::Parse { path, source })?;
            (file.ops, file.seed.unwrap_or_default())
        }
    };
    let factory: SharedFactory = Arc::new(Erased(factory));
    let started = begin(&config, "replay");
    let outcome = run_case(Arc::clone(&factory), &settings(&config), &ops).await;
    let check = match outcome.failure {
        None => CheckOutcome::Passed,
        Some(message) => CheckOutcome::Failed(Failure {
            message,
            sequence: Some(FailingSequence {
                script: script(&ops, &outcome.notes),
                saved_to: None,
                ops,
            }),
        }),
    };
    Ok(Report {
        backend: factory.name(),
        seed,
        checks: vec![end(&config, "replay", started, check)],
    })
}

/// Runs one check on a fresh multi-threaded runtime and panics with the report if it fails.
/// What the tests generated by [`conformance_tests!`](crate::conformance_tests) call.
#[doc(hidden)]
#[track_caller]
pub fn __run_check_in_test<F: StoreFactory>(factory: F, check: &str) {
    let mut config = factory
        .defaults()
        .with_env()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(only) = &config.only
        && !only.iter().any(|o| o == check)
    {
        uncaptured(&summary(
            check,
            &factory.name(),
            LineVerdict::Skipped,
            0.0,
            Some("not selected by ZSTORE_CONFORMANCE_ONLY".into()),
        ));
        return;
    }
    config.only = Some(vec![check.to_owned()]);
    let replay = match std::env::var_os(REPLAY_ENV) {
        Some(file) if check == crate::sequences::SEQUENCES => Some(PathBuf::from(file)),
        _ => None,
    };
    let runtime = test_runtime();
    let report = match replay {
        Some(file) => runtime
            .block_on(replay_with(factory, file.clone(), config))
            .unwrap_or_else(|e| panic!("{REPLAY_ENV}={}: {e}", file.display())),
        None => runtime.block_on(run(factory, config)),
    };
    for c in &report.checks {
        uncaptured(&summary_line(c, &report.backend));
    }
    report.assert_passed();
}

/// The environment variable that makes the generated `sequences` test replay one saved
/// sequence (a file a failing run wrote) instead of generating new ones.
pub const REPLAY_ENV: &str = "ZSTORE_CONFORMANCE_REPLAY";

/// Runs the suite's [`self_test`](crate::self_test()) on a fresh multi-threaded runtime and
/// panics unless the broken stores were caught. What the `self_test` test generated by
/// [`conformance_tests!`](crate::conformance_tests) calls.
#[doc(hidden)]
#[track_caller]
pub fn __run_self_test_in_test<F: StoreFactory>(factory: F) {
    let backend = factory.name();
    if let Some(why) = factory.unavailable() {
        uncaptured(&summary(
            "self_test",
            &backend,
            LineVerdict::Skipped,
            0.0,
            Some(why),
        ));
        return;
    }
    let started = Instant::now();
    let verdict = test_runtime().block_on(crate::self_test(factory, crate::self_test_config()));
    uncaptured(&summary(
        "self_test",
        &backend,
        if verdict.caught {
            LineVerdict::Passed
        } else {
            LineVerdict::Failed
        },
        started.elapsed().as_secs_f64(),
        Some(verdict.explanation.clone()),
    ));
    assert!(
        verdict.caught,
        "the suite's self-test failed: {}",
        verdict.explanation
    );
}

fn test_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"))
}

/// The line for one check's report: its outcome, a failure's first line and its minimal
/// sequence's length, and the check's detail.
fn summary_line(c: &CheckReport, backend: &str) -> String {
    let (verdict, why) = match &c.outcome {
        CheckOutcome::Passed => (LineVerdict::Passed, None),
        CheckOutcome::Skipped(why) => (LineVerdict::Skipped, Some(why.clone())),
        CheckOutcome::Failed(f) => {
            let first = f.message.lines().next().unwrap_or("").to_owned();
            let why = match &f.sequence {
                Some(seq) => format!("minimal failing sequence: {} steps; {first}", seq.ops.len()),
                None => first,
            };
            (LineVerdict::Failed, Some(why))
        }
    };
    let detail: Vec<String> = why.into_iter().chain(c.detail.clone()).collect();
    let detail = (!detail.is_empty()).then(|| detail.join("; "));
    summary(&c.name, backend, verdict, c.took.as_secs_f64(), detail)
}

/// The [`CheckLine`] every generated test prints (`cargo xtask conformance` reads its table
/// off it).
fn summary(
    check: &str,
    backend: &str,
    verdict: LineVerdict,
    secs: f64,
    detail: Option<String>,
) -> String {
    CheckLine {
        check: check.to_owned(),
        backend: backend.to_owned(),
        verdict,
        secs,
        detail,
    }
    .to_string()
}

/// Writes a line to standard error past libtest's capture (which only takes `eprintln!`),
/// so that a skipped check shows in `cargo test` output instead of looking like a pass.
fn uncaptured(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
