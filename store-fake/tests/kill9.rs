//! The crash test ([`conformance::crash`]) on the fake: child processes driving a
//! `FakeStore` are killed with `kill -9` at random moments; after each kill the store is
//! reopened and checked against what the child journaled. `ZSTORE_CRASH_ROUNDS`,
//! `ZSTORE_CRASH_SEED` and `ZSTORE_CRASH_MAX_DELAY_MS` size the run.

use store_fake::BusyPolicy;
use store_fake::testing::{FakeFactory, FakeSpec};

conformance::crash_test!(FakeSpec, FakeFactory::new(BusyPolicy::default()));
