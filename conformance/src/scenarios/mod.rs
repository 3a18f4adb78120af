//! Named scenarios: each a readable restatement of one case (OBuilder's own checks, one per
//! known fault of OBuilder's ZFS store (see `faults`), single points of the contract). Every
//! backend runs all of them.

mod contract;
mod faults;
mod hostile;
mod obuilder;
pub(crate) mod support;

use crate::bad_input;
use support::Scenario;

macro_rules! registry {
    ($($module:ident :: $name:ident),+ $(,)?) => {
        /// Every scenario, in the order the suite runs them.
        pub(crate) const SCENARIOS: &[Scenario] = &[
            $(Scenario {
                name: stringify!($name),
                run: |ctx| Box::pin($module::$name(ctx)),
            }),+
        ];
    };
}

registry![
    obuilder::store_basics,
    obuilder::cache_basics,
    faults::deleting_a_base_keeps_its_children,
    faults::a_crashed_partial_build_is_reclaimed,
    faults::a_running_build_survives_deletion_of_its_base,
    faults::a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt,
    faults::a_cache_name_that_needs_escaping_works_and_stays_separate,
    faults::ids_a_naive_mapping_would_merge_stay_separate,
    faults::df_is_a_percentage_and_not_a_made_up_0,
    faults::an_abandoned_copy_does_not_keep_the_cache_busy,
    contract::a_missing_base_is_a_typed_error,
    contract::a_build_without_a_base_starts_empty,
    contract::the_log_is_written_during_the_build_and_kept,
    contract::writes_to_a_result_path_never_reach_later_builds,
    contract::the_state_dir_is_kept_and_untouched,
    contract::delete_is_idempotent_and_ids_can_be_reused,
    contract::the_first_release_of_a_generation_wins_in_every_order,
    contract::copies_are_independent_and_a_dropped_copy_is_never_published,
    contract::a_deep_chain_of_builds_keeps_every_layer,
    hostile::a_directory_swapped_for_a_link_never_leads_outside,
    hostile::a_second_open_of_an_open_store_fails_and_changes_nothing,
    bad_input::bad_input_changes_nothing,
];
