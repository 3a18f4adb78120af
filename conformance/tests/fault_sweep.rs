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

/// The detail line's "X of Y fault points tried", as (X, Y); Y is `None` when the budget
/// left operations unprobed ("Y+").
fn points(detail: &str) -> (usize, Option<usize>) {
    let head = detail
        .split(" fault points tried")
        .next()
        .unwrap_or_else(|| panic!("no fault point count in {detail:?}"));
    let (tried, possible) = head
        .split_once(" of ")
        .unwrap_or_else(|| panic!("no fault point count in {detail:?}"));
    let tried = tried.parse().unwrap_or_else(|_| panic!("{detail:?}"));
    (tried, possible.parse().ok())
}

#[rstest]
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_survives_a_fault_at_every_step(
    #[values(BusyPolicy::ReportBusy, BusyPolicy::DeleteWins)] policy: BusyPolicy,
    #[values(1, 3)] at_once: usize,
) {
    let config = Config {
        fault_cases_at_once: at_once,
        // Every point must be tried: a sweep that skipped one fails.
        fault_floor_percent: Some(100),
        ..config()
    };
    let report = conformance::run(FakeFactory::new(policy), config).await;
    println!("{report}");
    report.assert_passed();
    let detail = detail(&report);
    let (tried, possible) = points(&detail);
    assert_eq!(Some(tried), possible, "{detail}");
    assert!(tried > 50, "{detail}");
    assert!(!detail.contains("not tried"), "{detail}");
    assert!(!detail.contains("no storage listing"), "{detail}");
    assert!(detail.contains(&format!("{at_once} at once")), "{detail}");
}

/// Cases run at once find what cases run one at a time find.
#[tokio::test(flavor = "multi_thread")]
async fn cases_at_once_catch_a_crash_bug_as_one_at_a_time_does() {
    let mut found = Vec::new();
    for at_once in [1, 4] {
        let report = conformance::run(
            FakeFactory::with_defect(CrashDefect::ReleaseRemovesOldVersionFirst),
            Config {
                fault_cases_at_once: at_once,
                ..config()
            },
        )
        .await;
        let check = report.check("fault_sweep").expect("ran");
        let CheckOutcome::Failed(failure) = &check.outcome else {
            panic!("not caught with {at_once} at once:\n{report}");
        };
        // Which operation and fault each problem is at (the rest names temporary paths).
        let at: Vec<String> = failure
            .message
            .lines()
            .filter(|l| l.starts_with("- "))
            .map(|l| l.split(": ").next().unwrap_or(l).to_owned())
            .collect();
        assert!(!at.is_empty(), "{report}");
        found.push(at);
    }
    assert_eq!(
        found[0], found[1],
        "the verdict depends on the cases at once"
    );
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
    let (tried, possible) = points(&detail);
    let possible = possible.unwrap_or_else(|| panic!("all operations probed: {detail}"));
    assert!(tried > 0 && tried < possible, "{detail}");
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
    assert_eq!(points(&detail).1, None, "{detail}");
}

/// With a floor of 100% a sweep that did not try every point fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_floor_of_all_fails_a_sweep_cut_short() {
    let report = conformance::run(
        FakeFactory::new(BusyPolicy::ReportBusy),
        Config {
            fault_budget: Some(std::time::Duration::ZERO),
            fault_floor_percent: Some(100),
            ..config()
        },
    )
    .await;
    let check = report.check("fault_sweep").expect("ran");
    let CheckOutcome::Failed(failure) = &check.outcome else {
        panic!("a sweep cut short passed a floor of 100%:\n{report}");
    };
    assert!(
        failure.message.contains("below the floor of 100%"),
        "{report}"
    );
}
