//! store-zfs's integration tests on real OpenZFS, in the guest of the VM lane.
//!
//! The host builds them (`cargo test -p store-zfs --no-run`), the VM lane copies the
//! executables into the guest's control directory, and `run-suite` runs each after the
//! suite with `ZSTORE_REQUIRE_ZFS=1`, so the tests that need a pool cannot skip. That is
//! where the OpenZFS-only paths of `store-zfs` (mounting after create and clone, `zfs
//! version`, `zpool wait -t free`, OpenZFS's wording of errors, no mount cap) meet the real
//! thing; on the host they only meet zfs-fuse and the in-memory fake.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;

use super::libtest;
use super::report::TestRun;
use crate::error::{Result, XtaskError};
use crate::runner::{Cmd, Runner};

/// Integration tests not run in the guest, and why.
const NOT_IN_GUEST: [(&str, &str); 1] = [(
    "crash",
    "its sweeps (every command failed, then stopped after, on a real pool) take over 35 \
     minutes under TCG; they run on zfs-fuse in `cargo test`, and on the OpenZFS-behaving \
     fake",
)];

/// Builds store-zfs's conformance suite (what the VM lane runs as its suite) and, with
/// `others`, its other integration tests (`tests/*.rs`, not the unit tests); returns the
/// suite's executable and the others', named by test target, except those in
/// [`NOT_IN_GUEST`].
pub async fn build(runner: &Runner, others: bool) -> Result<(PathBuf, Vec<(String, PathBuf)>)> {
    let selection: &[&str] = match others {
        true => &["--tests"],
        false => &["--test", libtest::TEST_TARGET],
    };
    let mut found = libtest::build_tests(runner, "store-zfs", selection).await?;
    let suite = found
        .iter()
        .position(|(name, _)| name == libtest::TEST_TARGET)
        .map(|i| found.remove(i).1)
        .ok_or_else(|| XtaskError::Invalid("cargo built no store-zfs conformance test".into()))?;
    if others {
        for (name, why) in NOT_IN_GUEST {
            eprintln!("xtask: not run in the guest: store-zfs test {name}: {why}");
        }
    }
    found.retain(|(name, _)| !NOT_IN_GUEST.iter().any(|(n, _)| n == name));
    Ok((suite, found))
}

/// Seconds each test executable took in the guest, run alone on an idle host (two test threads
/// each); the longest start first, so the executables running at once end at about the same
/// time. Unknown executables count as [`DEFAULT_SECS`].
const MEASURED_SECS: [(&str, u32); 6] = [
    ("kill9", 150), // estimated: 10 rounds of up to 8 s, each reopened and checked
    ("names", 34),
    ("concurrency", 23),
    ("delete", 18),
    ("cancel", 14),
    ("commands", 9),
];
/// See [`MEASURED_SECS`].
const DEFAULT_SECS: u32 = 5;

/// The crash test's rounds and latest kill in the guest: under TCG a child takes seconds to
/// open the store, and with the host's 1.5 s every kill landed before it had built anything.
const GUEST_CRASH_ROUNDS: u32 = 10;
const GUEST_CRASH_MAX_DELAY_MS: u32 = 8000;

fn estimated_secs(name: &str) -> u32 {
    let target = name.strip_prefix("test-").unwrap_or(name);
    MEASURED_SECS
        .iter()
        .find(|(n, _)| *n == target)
        .map_or(DEFAULT_SECS, |(_, s)| *s)
}

/// Runs the test executables (two test threads each, `ZSTORE_REQUIRE_ZFS=1`), as many at once
/// as there are CPUs, longest first. Prints each executable's output when it ends; returns the
/// runs in the order given.
///
/// In the guest (two vCPUs, idle host) one executable at a time took 111 s with the vCPUs 65%
/// busy (each executable's last test runs alone); two at once took 80 s, 97% busy.
pub async fn run(runner: &Runner, tests: &[PathBuf]) -> Vec<TestRun> {
    let at_once = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    run_at_once(runner, tests, at_once).await
}

async fn run_at_once(runner: &Runner, tests: &[PathBuf], at_once: usize) -> Vec<TestRun> {
    let mut queue: Vec<(usize, &PathBuf)> = tests.iter().enumerate().collect();
    queue.sort_by_key(|(i, exe)| (std::cmp::Reverse(estimated_secs(&name_of(exe))), *i));
    // Started in queue order as slots free up.
    let mut runs: Vec<(usize, TestRun)> = futures::stream::iter(queue)
        .map(|(i, exe)| async move { (i, run_one(runner, exe).await) })
        .buffer_unordered(at_once.max(1))
        .collect()
        .await;
    runs.sort_by_key(|(i, _)| *i);
    runs.into_iter().map(|(_, r)| r).collect()
}

fn name_of(exe: &Path) -> String {
    exe.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| exe.display().to_string())
}

/// Runs one test executable and prints its output (in one block) when it ends.
async fn run_one(runner: &Runner, exe: &Path) -> TestRun {
    let name = name_of(exe);
    println!("==> guest test {name}: running");
    let started = Instant::now();
    let cmd = Cmd::new(exe)
        .arg("--test-threads=2")
        .env("ZSTORE_REQUIRE_ZFS", "1")
        .env(
            conformance::crash::ROUNDS_ENV,
            GUEST_CRASH_ROUNDS.to_string(),
        )
        .env(
            conformance::crash::MAX_DELAY_ENV,
            GUEST_CRASH_MAX_DELAY_MS.to_string(),
        );
    let (passed, output) = match runner.output(&cmd).await {
        Ok(out) => (out.success(), format!("{}{}", out.stdout, out.stderr)),
        Err(e) => (false, e.to_string()),
    };
    let secs = started.elapsed().as_secs();
    let mut summary = output
        .lines()
        .rev()
        .find(|l| l.starts_with("test result:"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let tail: Vec<&str> = output.lines().rev().take(3).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        });
    // The crash test's closing count (rounds, kills, violations) goes into the summary, so
    // the report carries it to the host and CI's summary.
    if let Some(crash) = output
        .lines()
        .find(|l| l.starts_with("crash: ") && super::report::crash_line(l).is_some())
    {
        summary = format!("{}; {summary}", crash.trim());
    }
    // One print for the whole block, so the output of executables running at once does not
    // interleave.
    let mut block: String = output.lines().map(|l| format!("    {l}\n")).collect();
    block.push_str(&format!(
        "==> guest test {name}: {} in {secs} s\n",
        if passed { "passed" } else { "FAILED" }
    ));
    print!("{block}");
    TestRun {
        name,
        passed,
        secs,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Answers every command after a short sleep, failing `test-bad`; records the most
    /// commands in flight at once and the order they started in.
    #[derive(Default)]
    struct SlowExec {
        in_flight: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        started: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl crate::runner::Exec for SlowExec {
        async fn output(&self, cmd: &Cmd) -> std::io::Result<crate::runner::Output> {
            use std::os::unix::process::ExitStatusExt;
            use std::sync::atomic::Ordering::SeqCst;
            let name = cmd.display();
            self.started.lock().expect("lock").push(name.clone());
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            let bad = name.contains("test-bad");
            Ok(crate::runner::Output {
                status: std::process::ExitStatus::from_raw(i32::from(bad) << 8),
                stdout: format!("test result: {}\n", if bad { "FAILED" } else { "ok" }),
                stderr: String::new(),
            })
        }
    }

    #[tokio::test]
    async fn runs_two_at_a_time_longest_first_and_reports_in_the_given_order() {
        let exec = Arc::new(SlowExec::default());
        let runner = Runner::with_exec(exec.clone());
        let tests: Vec<PathBuf> = ["test-space", "test-bad", "test-names", "test-concurrency"]
            .iter()
            .map(|n| PathBuf::from("/ctl").join(n))
            .collect();
        let runs = run_at_once(&runner, &tests, 2).await;
        let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["test-space", "test-bad", "test-names", "test-concurrency"]
        );
        let passed: Vec<bool> = runs.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, false, true, true]);
        assert_eq!(exec.most.load(std::sync::atomic::Ordering::SeqCst), 2);
        let started = exec.started.lock().expect("lock").clone();
        assert!(started[0].contains("test-names") && started[1].contains("test-concurrency"));
        assert!(started.iter().all(|c| c.contains("--test-threads=2")));
        assert_eq!(run_at_once(&runner, &tests[..1], 8).await.len(), 1);
        assert!(run_at_once(&runner, &[], 2).await.is_empty());
    }
}
