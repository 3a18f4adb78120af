//! The `load` check against the fake: 200 builds, 10 chains at once, one shared cache.

mod support;

use conformance::{Config, StoreFactory};
use store_fake::BusyPolicy;
use support::FakeFactory;

#[tokio::test(flavor = "multi_thread")]
async fn the_fake_holds_up_under_load() {
    let report = conformance::run(
        FakeFactory::new(BusyPolicy::ReportBusy),
        Config {
            only: Some(vec!["load".into()]),
            ..Config::default()
        },
    )
    .await;
    println!("{report}");
    report.assert_passed();
    let detail = report
        .check("load")
        .and_then(|c| c.detail.clone())
        .unwrap_or_default();
    assert!(detail.starts_with("200 builds checked of 200"), "{detail}");
    assert!(
        detail.contains("10 copies of the shared cache at once"),
        "{detail}"
    );
}

/// A store that runs one build at a time fails the check (builds of different ids may run
/// concurrently).
#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_serialises_builds_fails() {
    let report = conformance::run(
        support::Serial(FakeFactory::new(BusyPolicy::ReportBusy)),
        Config {
            only: Some(vec!["load".into()]),
            load_builds: 16,
            load_jobs: 4,
            op_timeout: std::time::Duration::from_secs(1),
            ..Config::default()
        },
    )
    .await;
    assert!(!report.passed(), "{report}");
    let _ = support::Serial(FakeFactory::new(BusyPolicy::ReportBusy)).name();
}
