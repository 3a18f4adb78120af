//! [`self_test`]: proof, on a backend's own storage, that the suite catches every defect of
//! [`Defect`] there.
//!
//! Each planted defect wraps the backend's stores so that they break one point of the
//! contract, the way real backends have (see [`crate::broken`]), and one check of the suite
//! must then fail:
//!
//! - **The stale release, by the generated sequences.** A release that lost the race
//!   ("another copy of the same version was released first") is written into the latest
//!   version and published anyway: "last writer wins", the classic lost-update bug
//!   ([`Defect::PublishesStaleRelease`]). The contract says the first release of a generation
//!   wins and a stale release is discarded. The `sequences` check must fail for that reason
//!   with a minimal sequence of at most [`SELF_TEST_MAX_STEPS`] steps (the shortest is four:
//!   two acquires, two releases), and no other check may fail. This proves that the
//!   generator, the model and the shrinker work on this storage.
//! - **Every other defect, by the scenario named after it** (see [`catching_check`]): that scenario
//!   must fail. The name defects (escaping, `/` to `_`, case folding, truncation, trailing
//!   dots, Unicode normalization; ids folded by case or punctuation) run their scenario over
//!   only the collision groups that the defect's mapping merges, which keeps a slow engine's
//!   self-test short; the suite itself runs those scenarios over every group.
//!
//! Two defects apply only to some backends, and are reported as not applicable elsewhere:
//! [`Defect::NeverBusyWhileClaimingItMay`] needs a backend whose delete wins (one that says it
//! may return Busy has nothing to lie about), and [`Defect::IgnoresCacheOwner`] needs the
//! ownership checks (root). A trial whose check the suite skips on this backend (it cannot
//! reopen, say) is reported as skipped, with the reason, and does not count as a miss.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::broken::{BrokenFactory, Defect};
use crate::collisions::NameGroups;
use crate::config::Config;
use crate::factory::StoreFactory;
use crate::report::{CheckOutcome, Report};

/// The check that must catch the stale release.
const CHECK: &str = "sequences";
/// What its failure message must say.
const SYMPTOM: &str = "returned Published";
/// A minimal failing sequence longer than this was not shrunk.
pub const SELF_TEST_MAX_STEPS: usize = 8;

/// The check that must catch `defect` on the backend's own storage: `sequences` for the stale
/// release, the scenario named after it for every other.
pub fn catching_check(defect: Defect) -> &'static str {
    match defect {
        Defect::PublishesStaleRelease => CHECK,
        Defect::LeaksPreviousBuildIntoFreshBuild => "a_build_without_a_base_starts_empty",
        Defect::KeepsFailedBuild | Defect::RecordsCancelledBuild => {
            "a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt"
        }
        Defect::DeleteTakesChildren => "deleting_a_base_keeps_its_children",
        Defect::NeverBusyWhileClaimingItMay | Defect::IgnoresCacheOwner => "cache_basics",
        Defect::WritableResultFeedsLaterBuilds => {
            "writes_to_a_result_path_never_reach_later_builds"
        }
        Defect::LeaksCopyCountOnDrop => "an_abandoned_copy_does_not_keep_the_cache_busy",
        Defect::LossyCacheNameEscaping
        | Defect::CacheNameSlashToUnderscore
        | Defect::CacheNameCaseFolded
        | Defect::CacheNameTruncated
        | Defect::CacheNameTrailingDotsDropped
        | Defect::CacheNameUnicodeNormalized => ESCAPING,
        Defect::IdCaseFolded | Defect::IdPunctuationFolded => IDS,
        Defect::SwallowsBuildFnError => "store_basics",
        Defect::MissingBaseLeavesLeftover => "bad_input_changes_nothing",
    }
}

const ESCAPING: &str = "a_cache_name_that_needs_escaping_works_and_stays_separate";
const IDS: &str = "ids_a_naive_mapping_would_merge_stay_separate";

/// Whether the suite caught the stores broken on purpose, as it must.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SelfTestVerdict {
    /// Every defect that applies to the backend was caught by its check (the stale release
    /// with the right symptom and a shrunk sequence).
    pub caught: bool,
    /// What happened, for people.
    pub explanation: String,
}

/// The self-test's knobs for the stale release: only `sequences`, 60 cases of up to 10 steps
/// with quick checks, seed 7. Stale releases are rare in random sequences (a few cases in a
/// hundred have one); with this seed the suite finds one and shrinks it to a few steps in 32
/// cases in all, which keeps the self-test to a few minutes even on a slow engine. The
/// generated sequences depend only on the seed, for every store that keeps the contract
/// outside the defect. The other trials run their scenario with these knobs and
/// [`Config::only`] set to it.
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

/// Plants every [`Defect`] in the stores of `factory`, one at a time, runs the check that
/// must catch it (the stale release with `config`, normally [`self_test_config`]; the others
/// by [`catching_check`]), and says whether each was caught as it must be. A backend's tests
/// get this as the `self_test` test of [`conformance_tests!`](crate::conformance_tests).
pub async fn self_test<F: StoreFactory>(factory: F, config: Config) -> SelfTestVerdict {
    let factory = Arc::new(factory);
    let caps = factory.capabilities();
    let ownership = crate::suite::settings(&config).check_ownership;

    let broken = BrokenFactory::new(Arc::clone(&factory), Defect::PublishesStaleRelease);
    let opened = Arc::clone(&broken.opened);
    let report = crate::run(broken, config.clone()).await;
    let mut primary = verdict(&report);
    primary.explanation.push_str(&format!(
        " ({} cases run, shrinking included)",
        opened.load(Ordering::Relaxed)
    ));

    let (mut caught, mut missed, mut not_here) = (Vec::new(), Vec::new(), Vec::new());
    for &defect in Defect::ALL {
        if defect == Defect::PublishesStaleRelease {
            continue;
        }
        let check = catching_check(defect);
        let inapplicable = match defect {
            Defect::NeverBusyWhileClaimingItMay if caps.may_return_busy => {
                Some("the backend reports Busy, so it has nothing to hide")
            }
            Defect::IgnoresCacheOwner if !ownership => Some("owners are checked only as root"),
            _ => None,
        };
        if let Some(why) = inapplicable {
            not_here.push(format!("{defect:?} ({why})"));
            continue;
        }
        let started = Instant::now();
        let outcome = trial(Arc::clone(&factory), defect, check, &config).await;
        let took = started.elapsed().as_secs_f64();
        tracing::info!(?defect, check, took, ?outcome, "self-test trial");
        match outcome {
            CheckOutcome::Failed(_) => caught.push(format!("{defect:?} {took:.1} s")),
            CheckOutcome::Skipped(why) => {
                not_here.push(format!("{defect:?} ({check} skipped: {why})"))
            }
            CheckOutcome::Passed => missed.push(format!("{defect:?}: {check} passed")),
        }
    }

    let mut explanation = primary.explanation;
    explanation.push_str(&format!(
        "; {} more broken stores caught, each by its scenario: {}",
        caught.len(),
        caught.join(", ")
    ));
    if !not_here.is_empty() {
        explanation.push_str(&format!("; not applicable here: {}", not_here.join(", ")));
    }
    if !missed.is_empty() {
        explanation.push_str(&format!("; MISSED: {}", missed.join("; ")));
    }
    SelfTestVerdict {
        caught: primary.caught && missed.is_empty(),
        explanation,
    }
}

/// Runs `check` against the stores of `factory` broken by `defect`; the name scenarios draw
/// only the groups the defect merges.
async fn trial<F: StoreFactory>(
    factory: Arc<F>,
    defect: Defect,
    check: &str,
    config: &Config,
) -> CheckOutcome {
    let names = NameGroups::merged_by(defect);
    let names = if names.is_empty() {
        NameGroups::all()
    } else {
        names
    };
    let config = Config {
        only: Some(vec![check.to_owned()]),
        ..config.clone()
    };
    let report =
        crate::suite::run_with_names(BrokenFactory::new(factory, defect), config, names).await;
    report.check(check).map_or_else(
        || CheckOutcome::Skipped(format!("the suite has no check named {check}")),
        |c| c.outcome.clone(),
    )
}

fn missed(why: String) -> SelfTestVerdict {
    SelfTestVerdict {
        caught: false,
        explanation: why,
    }
}

/// Whether `report` shows the stale release caught as it must be.
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

    #[test]
    fn every_defect_has_a_check_of_the_suite() {
        let checks = crate::check_names();
        for &defect in Defect::ALL {
            let check = catching_check(defect);
            assert!(checks.contains(&check), "{defect:?}: no check {check}");
        }
    }
}
