//! The whole conformance suite against `store-fake`, under both busy policies: one `#[test]`
//! per check (`cargo test -p store-fake --test conformance report_busy::sequences` runs one).

use store_fake::BusyPolicy;
use store_fake::testing::FakeFactory;

conformance::conformance_tests!(report_busy, FakeFactory::new(BusyPolicy::ReportBusy));
conformance::conformance_tests!(delete_wins, FakeFactory::new(BusyPolicy::DeleteWins));
