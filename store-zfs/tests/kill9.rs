//! The crash test ([`conformance::crash`]) on a real pool: child processes driving a
//! `ZfsStore` are killed with `kill -9` at random moments; after each kill the store is
//! reopened and checked against what the child journaled.
//!
//! The pool is the one `ZSTORE_TEST_POOL` names, or a new test pool. No ZFS on the machine:
//! the test prints `SKIPPED` and passes, or fails if `ZSTORE_REQUIRE_ZFS=1` (CI sets it).
//! `ZSTORE_CRASH_ROUNDS`, `ZSTORE_CRASH_SEED` and `ZSTORE_CRASH_MAX_DELAY_MS` size the run
//! (`cargo xtask crash` sets them).

use store_zfs::testing::{ZfsFactory, ZfsSpec};

conformance::crash_test!(ZfsSpec, ZfsFactory::on_test_pool(module_path!()));
