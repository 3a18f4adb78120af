//! The fault sweep against the fake's step hook: the fake passes it, and each of the fake's
//! deliberate crash bugs is caught, with the operation and the step where it shows.

mod support;

use conformance::{CheckOutcome, Config, Report};
use rstest::rstest;
use store_fake::{BusyPolicy, CrashDefect};
use support::FakeFactory;

fn config() -> Config {
    Config {
        only: Some(vec!["fault_sweep".into()]),
        fault_budget: None,
        ..Config::default()
    }
}

fn detail(report: &Report) -> String {
    report
        .check("fault_sweep")
        .and_then(|c| c.detail.clone())
        .unwrap_or_default()
}

#[rstest]
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_survives_a_fault_at_every_step(
    #[values(BusyPolicy::ReportBusy, BusyPolicy::DeleteWins)] policy: BusyPolicy,
) {
    let report = conformance::run(FakeFactory::new(policy), config()).await;
    println!("{report}");
    report.assert_passed();
    let detail = detail(&report);
    assert!(detail.contains("faults injected"), "{detail}");
    assert!(!detail.contains("not tried"), "{detail}");
    assert!(!detail.contains("no storage listing"), "{detail}");
}

#[rstest]
#[case::release_removes_old_version_first(
    CrashDefect::ReleaseRemovesOldVersionFirst,
    "release-publish",
    "cache `c`"
)]
#[case::open_keeps_scratch(CrashDefect::OpenKeepsScratch, "build", "left behind")]
#[case::acquire_leaks_count(
    CrashDefect::AcquireLeaksCountOnFailure,
    "cache-acquire, step",
    "Busy although no copy is out"
)]
#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_catches(#[case] defect: CrashDefect, #[case] op: &str, #[case] symptom: &str) {
    let report = conformance::run(FakeFactory::with_defect(defect), config()).await;
    println!("{report}");
    let check = report.check("fault_sweep").expect("ran");
    let CheckOutcome::Failed(failure) = &check.outcome else {
        panic!("{defect:?} was not caught:\n{report}");
    };
    let lines: Vec<&str> = failure.message.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("- {op}")) && l.contains(symptom)),
        "{defect:?} was caught, but not as expected ({op}: {symptom}):\n{report}"
    );
    assert!(
        failure
            .message
            .contains(&format!("steps of {}", op.split(',').next().unwrap_or(op))),
        "the report lists the operation's steps:\n{report}"
    );
}

/// Without the capability the sweep is skipped, not failed.
#[tokio::test(flavor = "multi_thread")]
async fn skipped_without_fault_injection() {
    let report = conformance::run(
        support::NoReopen(FakeFactory::new(BusyPolicy::ReportBusy)),
        config(),
    )
    .await;
    report.assert_passed();
    assert!(matches!(
        report.check("fault_sweep").expect("listed").outcome,
        CheckOutcome::Skipped(_)
    ));
}

/// A depth limit tries fewer faults, and says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_depth_limits_the_faults_tried() {
    let report = conformance::run(
        FakeFactory::new(BusyPolicy::ReportBusy),
        Config {
            fault_depth: Some(2),
            ..config()
        },
    )
    .await;
    report.assert_passed();
    let detail = detail(&report);
    assert!(detail.contains(" of "), "{detail}");
}

/// A time budget cuts the sweep short (after at least one operation), and says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_time_budget_cuts_the_sweep_short_and_says_so() {
    let report = conformance::run(
        FakeFactory::new(BusyPolicy::ReportBusy),
        Config {
            fault_budget: Some(std::time::Duration::ZERO),
            ..config()
        },
    )
    .await;
    report.assert_passed();
    let detail = detail(&report);
    assert!(
        detail.contains("into 1 operations")
            && detail.contains("before 9 of 10 operations were tried"),
        "{detail}"
    );
}
