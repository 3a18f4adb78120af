//! [`self_test`]: proof, on a backend's own storage, that the suite catches a real-looking
//! defect there, with a shrunk sequence.
//!
//! The backend's stores are wrapped so that a release that lost the race ("another copy of
//! the same version was released first") is written into the latest version and published
//! anyway: "last writer wins", the classic lost-update bug
//! ([`Defect::PublishesStaleRelease`]). The contract says the first release of a generation
//! wins and a stale release is discarded. The self-test passes only if the `sequences` check
//! fails for that reason with a minimal sequence of at most [`SELF_TEST_MAX_STEPS`] steps (the
//! shortest is four: two acquires, two releases), and no other check failed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::broken::{BrokenFactory, Defect};
use crate::config::Config;
use crate::factory::StoreFactory;
use crate::report::{CheckOutcome, Report};

/// The check that must catch the defect.
const CHECK: &str = "sequences";
/// What its failure message must say.
const SYMPTOM: &str = "returned Published";
/// A minimal failing sequence longer than this was not shrunk.
pub const SELF_TEST_MAX_STEPS: usize = 8;

/// Whether the suite caught the store broken on purpose, as it must.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelfTestVerdict {
    /// Caught by the right check, with the right symptom and a shrunk sequence.
    pub caught: bool,
    /// What happened, for people.
    pub explanation: String,
}

/// The self-test's knobs: only `sequences`, 60 cases of up to 10 steps with quick checks,
/// seed 7. Stale releases are rare in random sequences (a few cases in a hundred have one);
/// with this seed the suite finds one and shrinks it to a few steps in 32 cases in
/// all, which keeps the self-test to a few minutes even on a slow engine. The generated
/// sequences depend only on the seed, for every store that keeps the contract outside the
/// defect.
pub fn self_test_config() -> Config {
    Config {
        only: Some(vec![CHECK.to_owned()]),
        cases: 60,
        max_ops: 10,
        seed: Some(7),
        full_check_each_step: false,
        max_shrink_time: Duration::from_secs(300),
        ..Config::default()
    }
}

/// Runs the suite (with `config`, normally [`self_test_config`]) against the stores of
/// `factory`, each broken by [`Defect::PublishesStaleRelease`], and says whether it was caught
/// as it must be. A backend's tests get this as the `self_test` test of
/// [`conformance_tests!`](crate::conformance_tests).
pub async fn self_test<F: StoreFactory>(factory: F, config: Config) -> SelfTestVerdict {
    let broken = BrokenFactory::new(factory, Defect::PublishesStaleRelease);
    let opened = Arc::clone(&broken.opened);
    let report = crate::run(broken, config).await;
    let mut verdict = verdict(&report);
    verdict.explanation.push_str(&format!(
        " ({} cases run, shrinking included)",
        opened.load(Ordering::Relaxed)
    ));
    verdict
}

fn missed(why: String) -> SelfTestVerdict {
    SelfTestVerdict {
        caught: false,
        explanation: why,
    }
}

/// Whether `report` shows the defect caught as it must be.
fn verdict(report: &Report) -> SelfTestVerdict {
    let unexpected: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.name != CHECK && matches!(c.outcome, CheckOutcome::Failed(_)))
        .map(|c| c.name.as_str())
        .collect();
    if !unexpected.is_empty() {
        return missed(format!("other checks failed too: {unexpected:?}"));
    }
    let Some(check) = report.checks.iter().find(|c| c.name == CHECK) else {
        return missed(format!("the {CHECK} check did not run"));
    };
    let failure = match &check.outcome {
        CheckOutcome::Failed(f) => f,
        CheckOutcome::Skipped(why) => return missed(format!("{CHECK} was skipped: {why}")),
        CheckOutcome::Passed => {
            return missed(format!(
                "{CHECK} passed: the suite did not catch the broken store"
            ));
        }
    };
    let Some(sequence) = &failure.sequence else {
        return missed(format!("{CHECK} failed without a failing sequence"));
    };
    let n = sequence.ops.len();
    if !failure.message.contains(SYMPTOM) {
        missed(format!(
            "{CHECK} failed ({n} steps), but not with \"{SYMPTOM}\": the broken store was \
             caught for another reason: {}",
            failure.message
        ))
    } else if n > SELF_TEST_MAX_STEPS {
        missed(format!(
            "{CHECK} caught it, but the sequence was not shrunk ({n} steps > \
             {SELF_TEST_MAX_STEPS})"
        ))
    } else {
        SelfTestVerdict {
            caught: true,
            explanation: format!(
                "the deliberately broken store (publishes stale cache copies) was caught by \
                 {CHECK} with a shrunk {n}-step sequence"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CheckReport, FailingSequence, Failure};

    fn report(outcome: CheckOutcome) -> Report {
        Report {
            backend: "b".into(),
            seed: 1,
            checks: vec![CheckReport {
                name: CHECK.into(),
                outcome,
                took: Duration::ZERO,
                detail: None,
            }],
        }
    }

    fn failed(steps: Option<usize>, message: &str) -> CheckOutcome {
        CheckOutcome::Failed(Failure {
            message: message.into(),
            sequence: steps.map(|n| FailingSequence {
                ops: vec![crate::Op::CompleteDeletes; n],
                script: String::new(),
                saved_to: None,
            }),
        })
    }

    #[test]
    fn caught_only_with_the_symptom_and_a_shrunk_sequence() {
        let msg = "at step 4: release copy 0\nrelease returned Published, expected Discarded";
        assert!(verdict(&report(failed(Some(4), msg))).caught);
        assert!(verdict(&report(failed(Some(8), msg))).caught);
        assert!(!verdict(&report(failed(Some(12), msg))).caught);
        assert!(!verdict(&report(failed(Some(4), "teardown failed"))).caught);
        assert!(!verdict(&report(failed(None, msg))).caught);
        assert!(!verdict(&report(CheckOutcome::Passed)).caught);
        assert!(!verdict(&report(CheckOutcome::Skipped("no".into()))).caught);
    }
}
