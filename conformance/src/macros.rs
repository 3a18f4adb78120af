//! [`conformance_tests!`](crate::conformance_tests): one named `#[test]` per check.

/// Generates a module of `#[test]`s, one per check of the suite (see
/// [`check_names`](crate::check_names)), each running that check against the backend that
/// `$factory` (an expression of a type implementing [`StoreFactory`](crate::StoreFactory),
/// evaluated once per test, with the enclosing module's items in scope) opens.
///
/// ```ignore
/// conformance::conformance_tests!(my_backend, MyFactory::new());
/// ```
///
/// Each test starts from the factory's [`defaults`](crate::StoreFactory::defaults), applies
/// the `ZSTORE_CONFORMANCE_*` variables ([`Config::with_env`](crate::Config::with_env)), runs
/// on a fresh multi-threaded runtime, and panics with the report if the check fails. Past
/// libtest's output capture it prints one line per check,
/// `conformance: <check> on <backend>: passed in 1.23 s` (`FAILED`, or `SKIPPED` with the
/// reason; the check's detail, such as how much of the fault sweep ran, after ` -- `), so a
/// skip never looks like a pass and a summary can be read off the output.
/// `cargo test my_backend::sequences` runs one check; with `ZSTORE_CONFORMANCE_REPLAY=FILE`
/// the `sequences` test replays that saved sequence instead of generating new ones.
///
/// The module also holds `self_test` (the suite must catch this backend's stores broken on
/// purpose, see [`self_test`](crate::self_test())) and `every_check_has_a_test`, which fails
/// if this macro and the suite ever disagree on the list of checks.
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $factory:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_tests_for!(
                $factory;
                store_basics
                cache_basics
                deleting_a_base_keeps_its_children
                a_crashed_partial_build_is_reclaimed
                a_running_build_survives_deletion_of_its_base
                a_failed_build_leaves_nothing_and_the_id_can_be_rebuilt
                a_cache_name_that_needs_escaping_works_and_stays_separate
                ids_a_naive_mapping_would_merge_stay_separate
                df_is_a_percentage_and_not_a_made_up_0
                an_abandoned_copy_does_not_keep_the_cache_busy
                a_missing_base_is_a_typed_error
                a_build_without_a_base_starts_empty
                the_log_is_written_during_the_build_and_kept
                writes_to_a_result_path_never_reach_later_builds
                the_state_dir_is_kept_and_untouched
                delete_is_idempotent_and_ids_can_be_reused
                the_first_release_of_a_generation_wins_in_every_order
                copies_are_independent_and_a_dropped_copy_is_never_published
                a_deep_chain_of_builds_keeps_every_layer
                a_directory_swapped_for_a_link_never_leads_outside
                a_second_open_of_an_open_store_fails_and_changes_nothing
                bad_input_changes_nothing
                sequences
                concurrency
                fault_sweep
                load
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_for {
    ($factory:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::__run_check_in_test($factory, stringify!($name));
            }
        )*

        /// The suite's self-test on this backend's storage: its stores broken on purpose, one
        /// defect each, must all be caught ([`self_test`]).
        #[test]
        fn self_test() {
            $crate::__run_self_test_in_test($factory);
        }

        #[test]
        fn every_check_has_a_test() {
            let generated: &[&str] = &[$(stringify!($name)),*];
            assert_eq!(generated, &$crate::check_names()[..]);
        }
    };
}

/// Generates the [crash test](crate::crash) as one `#[test]`,
/// `kill_9_at_random_moments_loses_nothing`: `$spec` is the backend's
/// [`StoreSpec`](crate::crash::StoreSpec) (made from the factory's storage), `$factory` an
/// expression of a type implementing [`StoreFactory`](crate::StoreFactory) that makes and
/// tears down the storage (evaluated in the parent only).
///
/// ```ignore
/// conformance::crash_test!(MySpec, MyFactory::new());
/// ```
///
/// Invoke it at the top of an integration-test file or inside a module: the test starts
/// itself again as the child, by its libtest name.
#[macro_export]
macro_rules! crash_test {
    ($spec:ty, $factory:expr) => {
        #[test]
        fn kill_9_at_random_moments_loses_nothing() {
            $crate::crash::__crash_test_in_test::<_, $spec>(
                concat!(module_path!(), "::kill_9_at_random_moments_loses_nothing"),
                || $factory,
            );
        }
    };
}
