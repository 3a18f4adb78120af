//! The whole suite against `store-fake`, under both busy policies, through the public macro.

mod support;

use store_fake::BusyPolicy;
use support::FakeFactory;

conformance::conformance_tests!(fake_report_busy, FakeFactory::new(BusyPolicy::ReportBusy));
conformance::conformance_tests!(fake_delete_wins, FakeFactory::new(BusyPolicy::DeleteWins));
