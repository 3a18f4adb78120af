//! Every named scenario against every backend under test: the fake under both busy policies,
//! and the fake declared unable to reopen (scenarios that need reopen must skip, not fail).

mod support;

use conformance::{CheckOutcome, Config, StoreFactory};
use rstest::rstest;
use store_fake::BusyPolicy;
use support::{FakeFactory, NoReopen};

async fn run_one(factory: impl StoreFactory, scenario: &str) -> CheckOutcome {
    let config = Config {
        only: Some(vec![scenario.to_owned()]),
        ..Config::default()
    };
    let report = conformance::run(factory, config).await;
    report.assert_passed();
    report
        .check(scenario)
        .expect("the scenario ran")
        .outcome
        .clone()
}

#[rstest]
#[tokio::test(flavor = "multi_thread")]
async fn scenario(
    #[values(
        "store_basics",
        "cache_basics",
        "deleting_a_base_keeps_its_children",
        "a_crashed_partial_build_is_reclaimed",
        "a_running_build_survives_deletion_of_its_base",
        "a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt",
        "a_cache_name_that_needs_escaping_works_and_stays_separate",
        "ids_a_naive_mapping_would_merge_stay_separate",
        "df_is_a_percentage_and_not_a_made_up_0",
        "an_abandoned_copy_does_not_keep_the_cache_busy",
        "a_missing_base_is_a_typed_error",
        "a_build_without_a_base_starts_empty",
        "the_log_is_written_during_the_build_and_kept",
        "writes_to_a_result_path_never_reach_later_builds",
        "the_state_dir_is_kept_and_untouched",
        "delete_is_idempotent_and_ids_can_be_reused",
        "the_first_release_of_a_generation_wins_in_every_order",
        "copies_are_independent_and_a_dropped_copy_is_never_published",
        "a_deep_chain_of_builds_keeps_every_layer",
        "a_directory_swapped_for_a_link_never_leads_outside",
        "a_second_open_of_an_open_store_fails_and_changes_nothing",
        "bad_input_changes_nothing"
    )]
    name: &str,
    #[values(BusyPolicy::ReportBusy, BusyPolicy::DeleteWins)] policy: BusyPolicy,
    #[values(true, false)] can_reopen: bool,
) {
    let outcome = if can_reopen {
        run_one(FakeFactory::new(policy), name).await
    } else {
        run_one(NoReopen(FakeFactory::new(policy)), name).await
    };
    let needs_reopen = [
        "a_crashed_partial_build_is_reclaimed",
        "a_second_open_of_an_open_store_fails_and_changes_nothing",
    ]
    .contains(&name);
    match outcome {
        CheckOutcome::Passed => assert!(can_reopen || !needs_reopen),
        CheckOutcome::Skipped(why) => {
            assert!(needs_reopen && !can_reopen, "{name} skipped: {why}")
        }
        CheckOutcome::Failed(f) => panic!("{f}"),
    }
}

#[test]
fn every_scenario_is_listed_above() {
    let listed = include_str!("scenarios.rs");
    for name in conformance::check_names() {
        if !["sequences", "concurrency", "fault_sweep", "load"].contains(&name) {
            assert!(
                listed.contains(&format!("\"{name}\"")),
                "{name} is not in the matrix"
            );
        }
    }
}

/// The sequences check without reopen in the mix, for the fake declared unable to reopen.
#[tokio::test(flavor = "multi_thread")]
async fn sequences_without_reopen() {
    let config = Config {
        only: Some(vec!["sequences".into()]),
        cases: 16,
        ..Config::default()
    };
    let report = conformance::run(NoReopen(FakeFactory::new(BusyPolicy::ReportBusy)), config).await;
    report.assert_passed();
}
