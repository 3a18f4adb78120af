//! The suite must fail stores that are subtly wrong: each broken wrapper of the fake below
//! breaks one point of the contract, and the `sequences` check must catch it with a shrunk,
//! replayable sequence (and the replay must fail the same way).

mod support;

use std::time::Duration;

use conformance::broken::Defect;
use conformance::{CheckOutcome, Config, Report};
use rstest::rstest;
use support::broken;

fn config(check: &str, dir: &std::path::Path) -> Config {
    Config {
        cases: 300,
        seed: Some(7),
        max_shrink_time: Duration::from_secs(20),
        artifacts_dir: Some(dir.to_path_buf()),
        only: Some(vec![check.to_owned()]),
        ..Config::default()
    }
}

fn expect_failure(report: &Report, check: &str) -> conformance::Failure {
    let c = report.check(check).expect("the check ran");
    match &c.outcome {
        CheckOutcome::Failed(f) => f.clone(),
        other => panic!("the suite did not catch the broken store: {check} ended {other:?}"),
    }
}

#[rstest]
#[case::publishes_stale_release(Defect::PublishesStaleRelease, &["returned Published"])]
#[case::leaks_previous_build(Defect::LeaksPreviousBuildIntoFreshBuild, &["did not start as an empty directory"])]
#[case::keeps_failed_build(Defect::KeepsFailedBuild, &["has no result"])]
#[case::delete_takes_children(Defect::DeleteTakesChildren, &["was built and not deleted", "destroyed while it ran"])]
#[case::never_busy(Defect::NeverBusyWhileClaimingItMay, &["may_return_busy"])]
#[case::writable_result_feeds_builds(Defect::WritableResultFeedsLaterBuilds, &["did not start as a copy"])]
#[case::records_cancelled_build(Defect::RecordsCancelledBuild, &["has no result"])]
#[case::leaks_copy_count(Defect::LeaksCopyCountOnDrop, &["Busy although no copy of it is out"])]
#[case::lossy_escaping(Defect::LossyCacheNameEscaping, &["does not hold what the contract says", "owned by", "returned Busy although no copy"])]
#[case::slash_to_underscore(Defect::CacheNameSlashToUnderscore, &["does not hold what the contract says", "owned by", "returned Busy although no copy"])]
#[case::cache_case_folded(Defect::CacheNameCaseFolded, &["does not hold what the contract says", "owned by", "returned Busy although no copy"])]
#[case::cache_truncated(Defect::CacheNameTruncated, &["does not hold what the contract says", "owned by", "returned Busy although no copy"])]
#[case::trailing_dots(Defect::CacheNameTrailingDotsDropped, &["does not hold what the contract says", "owned by", "returned Busy although no copy"])]
#[case::unicode_normalized(Defect::CacheNameUnicodeNormalized, &["does not hold what the contract says", "owned by", "returned Busy although no copy"])]
#[case::id_case_folded(Defect::IdCaseFolded, &["does not hold what the contract says", "already", "has no result", "has a result"])]
#[case::id_punctuation(Defect::IdPunctuationFolded, &["does not hold what the contract says", "already", "has no result", "has a result"])]
#[case::swallows_fn_error(Defect::SwallowsBuildFnError, &["the function's own error"])]
#[tokio::test(flavor = "multi_thread")]
async fn sequences_catch(#[case] defect: Defect, #[case] symptoms: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = conformance::run(broken(defect), config("sequences", dir.path())).await;
    let failure = expect_failure(&report, "sequences");
    println!("{report}");
    let symptom = symptoms
        .iter()
        .find(|s| failure.message.contains(**s))
        .unwrap_or_else(|| {
            panic!(
                "{defect:?} was caught, but not for an expected reason ({symptoms:?}):\n{report}"
            )
        });
    let seq = failure.sequence.as_ref().expect("a failing sequence");
    assert!(
        !seq.ops.is_empty() && seq.ops.len() <= 8,
        "the sequence was not shrunk to a few steps:\n{report}"
    );
    assert!(
        seq.script.contains("  1. "),
        "a numbered script:\n{}",
        seq.script
    );
    let saved = seq
        .saved_to
        .as_ref()
        .expect("the sequence was saved as JSON");
    let replayed = conformance::replay_with(broken(defect), saved.as_path(), Config::default())
        .await
        .expect("the saved sequence loads");
    let again = expect_failure(&replayed, "replay");
    assert!(
        again.message.contains(symptom),
        "the replay failed differently:\n{replayed}"
    );
}

/// Ownership can only be given away by root.
#[tokio::test(flavor = "multi_thread")]
async fn sequences_catch_a_cache_created_for_the_wrong_owner() {
    if conformance_user_is_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = conformance::run(
            broken(Defect::IgnoresCacheOwner),
            config("sequences", dir.path()),
        )
        .await;
        let failure = expect_failure(&report, "sequences");
        assert!(failure.message.contains("owned by 0:0"), "{report}");
    } else {
        eprintln!("skipped: only root can create caches for other users");
    }
}

fn conformance_user_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The named scenarios catch the faults they are named after.
#[rstest]
#[case::children(Defect::DeleteTakesChildren, "deleting_a_base_keeps_its_children")]
#[case::running_build(
    Defect::DeleteTakesChildren,
    "a_running_build_survives_deletion_of_its_base"
)]
#[case::failed_build(
    Defect::KeepsFailedBuild,
    "a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt"
)]
#[case::escaping(
    Defect::LossyCacheNameEscaping,
    "a_cache_name_that_needs_escaping_works_and_stays_separate"
)]
#[case::slash_to_underscore(
    Defect::CacheNameSlashToUnderscore,
    "a_cache_name_that_needs_escaping_works_and_stays_separate"
)]
#[case::cache_case_folded(
    Defect::CacheNameCaseFolded,
    "a_cache_name_that_needs_escaping_works_and_stays_separate"
)]
#[case::cache_truncated(
    Defect::CacheNameTruncated,
    "a_cache_name_that_needs_escaping_works_and_stays_separate"
)]
#[case::trailing_dots(
    Defect::CacheNameTrailingDotsDropped,
    "a_cache_name_that_needs_escaping_works_and_stays_separate"
)]
#[case::unicode_normalized(
    Defect::CacheNameUnicodeNormalized,
    "a_cache_name_that_needs_escaping_works_and_stays_separate"
)]
#[case::id_case_folded(Defect::IdCaseFolded, "ids_a_naive_mapping_would_merge_stay_separate")]
#[case::id_punctuation(
    Defect::IdPunctuationFolded,
    "ids_a_naive_mapping_would_merge_stay_separate"
)]
#[case::abandoned_copy(
    Defect::LeaksCopyCountOnDrop,
    "an_abandoned_copy_does_not_keep_the_cache_busy"
)]
#[case::first_release(
    Defect::PublishesStaleRelease,
    "the_first_release_of_a_generation_wins_in_every_order"
)]
#[case::test_cache(Defect::PublishesStaleRelease, "cache_basics")]
#[case::test_store(Defect::SwallowsBuildFnError, "store_basics")]
#[case::result_writes(
    Defect::WritableResultFeedsLaterBuilds,
    "writes_to_a_result_path_never_reach_later_builds"
)]
#[case::never_busy(Defect::NeverBusyWhileClaimingItMay, "cache_basics")]
#[case::bad_input_leftover(Defect::MissingBaseLeavesLeftover, "bad_input_changes_nothing")]
#[case::fresh_build_leaks(
    Defect::LeaksPreviousBuildIntoFreshBuild,
    "a_build_without_a_base_starts_empty"
)]
#[case::cancelled_build(
    Defect::RecordsCancelledBuild,
    "a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt"
)]
#[tokio::test(flavor = "multi_thread")]
async fn scenario_catches(#[case] defect: Defect, #[case] scenario: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = conformance::run(broken(defect), config(scenario, dir.path())).await;
    expect_failure(&report, scenario);
}

/// The concurrency property catches a store that publishes every release.
#[tokio::test(flavor = "multi_thread")]
async fn concurrency_catches_stale_releases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config("concurrency", dir.path());
    config.concurrency_cases = 20;
    let report = conformance::run(broken(Defect::PublishesStaleRelease), config).await;
    expect_failure(&report, "concurrency");
}
