//! The `sequences` check: random operation sequences run against a fresh store each, compared
//! with the model after every step; a failure is shrunk to a minimal sequence, printed as a
//! script and saved as JSON.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use proptest::test_runner::{
    Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::exec::{Session, Settings};
use crate::factory::SharedFactory;
use crate::generate::Universe;
use crate::ops::{Op, script};
use crate::report::{CheckOutcome, FailingSequence, Failure, Progress};

/// The name of the check.
pub(crate) const SEQUENCES: &str = "sequences";

/// A failing (or any) operation sequence as saved on disk, for [`replay`](crate::replay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceFile {
    /// Format version; this is version 1.
    pub format: u32,
    /// The backend it failed on.
    pub backend: String,
    /// The seed of the run that found it.
    pub seed: Option<u64>,
    /// What went wrong when it was saved.
    pub failure: Option<String>,
    /// The operations.
    pub ops: Vec<Op>,
}

/// What running one sequence found.
pub(crate) struct CaseOutcome {
    /// One note per step that ran (what an index resolved to, "skipped", ...).
    pub notes: Vec<String>,
    /// The first contract violation, if any.
    pub failure: Option<String>,
}

/// Runs `ops` against a fresh store, checking after every step, then tears the store down.
pub(crate) async fn run_case(
    factory: SharedFactory,
    settings: &Settings,
    ops: &[Op],
) -> CaseOutcome {
    let mut notes = Vec::new();
    let mut session = match Session::open(factory, settings.clone()).await {
        Ok(s) => s,
        Err(e) => {
            return CaseOutcome {
                notes,
                failure: Some(e),
            };
        }
    };
    let mut failure = None;
    for (i, op) in ops.iter().enumerate() {
        let outcome = std::panic::AssertUnwindSafe(session.step(op))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(note)) => notes.push(note),
            Ok(Err(e)) => {
                notes.push("<- fails here".into());
                failure = Some(format!("at step {}: {op}\n{e}", i + 1));
                break;
            }
            Err(payload) => {
                notes.push("<- panics here".into());
                failure = Some(format!(
                    "at step {}: {op}\nthe store panicked: {}",
                    i + 1,
                    panic_message(&*payload)
                ));
                break;
            }
        }
    }
    if failure.is_none()
        && let Err(e) = session.check(None).await
    {
        failure = Some(format!("after the last step:\n{e}"));
    }
    let closed = session.close().await;
    if failure.is_none()
        && let Err(e) = closed
    {
        failure = Some(e);
    }
    CaseOutcome { notes, failure }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "(a non-string payload)".to_owned()
    }
}

/// Runs the `sequences` check. Blocking: call it from a thread where `handle.block_on` is
/// allowed (e.g. inside `spawn_blocking`).
pub(crate) fn sequences(
    factory: SharedFactory,
    config: &Config,
    settings: &Settings,
    universe: &Universe,
    seed: u64,
    handle: &tokio::runtime::Handle,
) -> (CheckOutcome, Option<String>) {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let proptest_config = ProptestConfig {
        cases: config.cases,
        failure_persistence: None,
        max_shrink_time: u32::try_from(config.max_shrink_time.as_millis()).unwrap_or(u32::MAX),
        max_shrink_iters: 4096,
        max_global_rejects: 0,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(
        proptest_config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let strategy = universe.ops(config.max_ops);
    let done = AtomicU32::new(0);
    let shrinking = AtomicBool::new(false);
    // The depth actually run (before any shrinking), for the detail line.
    let (steps, longest) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |ops| {
        let outcome = handle.block_on(run_case(factory.clone(), settings, &ops));
        if !shrinking.load(Ordering::Relaxed) {
            steps.fetch_add(ops.len(), Ordering::Relaxed);
            longest.fetch_max(ops.len(), Ordering::Relaxed);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            config.emit(Progress::Case {
                check: SEQUENCES.into(),
                done: n,
                total: config.cases,
            });
        }
        match outcome.failure {
            None => Ok(()),
            Some(failure) => {
                if !shrinking.swap(true, Ordering::Relaxed) {
                    config.emit(Progress::Shrinking {
                        check: SEQUENCES.into(),
                    });
                }
                Err(TestCaseError::fail(failure))
            }
        }
    });
    let detail = format!(
        "{} cases of up to {} steps run ({} steps in all, the longest {}), {} checks after \
         each step; {:.0} s",
        done.load(Ordering::Relaxed),
        config.max_ops,
        steps.load(Ordering::Relaxed),
        longest.load(Ordering::Relaxed),
        if config.full_check_each_step {
            "full"
        } else {
            "quick"
        },
        started.elapsed().as_secs_f64()
    );
    let outcome = match result {
        Ok(()) => CheckOutcome::Passed,
        Err(TestError::Abort(why)) => CheckOutcome::Failed(Failure {
            message: format!("the property runner gave up: {why}"),
            sequence: None,
        }),
        Err(TestError::Fail(reason, ops)) => {
            // Run the minimal sequence once more to get the per-step notes for the script.
            let again = handle.block_on(run_case(factory.clone(), settings, &ops));
            let message = match again.failure {
                Some(m) => m,
                None => format!(
                    "{reason}\n(the minimal sequence did not fail again when re-run: the \
                     failure depends on timing)"
                ),
            };
            let file = SequenceFile {
                format: 1,
                backend: factory.name(),
                seed: Some(seed),
                failure: Some(message.clone()),
                ops: ops.clone(),
            };
            CheckOutcome::Failed(Failure {
                message,
                sequence: Some(FailingSequence {
                    script: script(&ops, &again.notes),
                    saved_to: save(config, &file),
                    ops,
                }),
            })
        }
    };
    (outcome, Some(detail))
}

fn save(config: &Config, file: &SequenceFile) -> Option<PathBuf> {
    let dir = config.artifacts();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let backend: String = file
        .backend
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!(
        "{backend}-seed{}-{stamp}.json",
        file.seed.unwrap_or_default()
    ));
    let json = serde_json::to_string_pretty(file).ok()?;
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, json));
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(target: "conformance", "could not save the failing sequence to {}: {e}", path.display());
            None
        }
    }
}
