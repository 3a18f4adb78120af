//! The public entry points behave as documented for callers outside `cargo test`'s macro:
//! a current-thread runtime, progress callbacks, replay of given operations and of files.

mod support;

use std::sync::{Arc, Mutex};

use conformance::{CheckOutcome, Config, Edit, Ending, Op, Progress, ReplayError};
use store_api::{CacheName, Id, User};
use store_fake::BusyPolicy;
use support::FakeFactory;

fn small(only: &[&str]) -> Config {
    Config {
        cases: 4,
        concurrency_cases: 1,
        only: Some(only.iter().map(|s| (*s).to_owned()).collect()),
        ..Config::default()
    }
}

#[test]
fn runs_on_a_current_thread_runtime_and_reports_progress() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let config = Config {
        progress: Some(Arc::new(move |e: &Progress| {
            sink.lock().expect("not poisoned").push(e.to_string())
        })),
        seed: Some(42),
        ..small(&["store_basics", "sequences", "concurrency"])
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let report = runtime.block_on(conformance::run(
        FakeFactory::new(BusyPolicy::ReportBusy),
        config,
    ));
    report.assert_passed();
    assert_eq!(report.seed, 42);
    assert_eq!(report.checks.len(), 3, "{report}");
    let events = events.lock().expect("not poisoned");
    for expected in [
        "store_basics: started",
        "sequences: case 4/4",
        "concurrency: ok",
    ] {
        assert!(
            events.iter().any(|e| e.starts_with(expected)),
            "no progress event {expected:?} in {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_given_operations() {
    let id = |s: &str| Id::new(s).expect("valid");
    let ops = vec![
        Op::Build {
            id: id("base"),
            base: None,
            edits: vec![Edit::Write {
                path: "d/f".into(),
                content: "1".into(),
                mode: 0o640,
            }],
            log: Some("log".into()),
            delete_base_while_running: false,
            ending: Ending::Succeed,
        },
        Op::Build {
            id: id("top"),
            base: Some(id("base")),
            edits: vec![],
            log: None,
            delete_base_while_running: true,
            ending: Ending::Succeed,
        },
        Op::Acquire {
            cache: CacheName::new("c").expect("valid"),
            user: User::new(1000, 1000).expect("valid"),
        },
        Op::Release { copy: 0 },
        Op::Reopen,
    ];
    let json = serde_json::to_string(&ops).expect("ops serialise");
    assert!(json.contains("\"op\":\"build\""), "{json}");
    let report = conformance::replay_with(
        FakeFactory::new(BusyPolicy::DeleteWins),
        ops,
        Config::default(),
    )
    .await
    .expect("replay runs");
    report.assert_passed();
    assert!(matches!(report.checks[0].outcome, CheckOutcome::Passed));
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_of_a_file_that_is_not_a_sequence_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "{\"ops\": 3}").expect("write");
    let err = conformance::replay_with(
        FakeFactory::new(BusyPolicy::ReportBusy),
        path.as_path(),
        Config::default(),
    )
    .await
    .expect_err("not a sequence");
    assert!(matches!(err, ReplayError::Parse { .. }), "{err}");
    let missing = conformance::replay_with(
        FakeFactory::new(BusyPolicy::ReportBusy),
        dir.path().join("missing.json"),
        Config::default(),
    )
    .await
    .expect_err("no such file");
    assert!(matches!(missing, ReplayError::Read { .. }), "{missing}");
}
