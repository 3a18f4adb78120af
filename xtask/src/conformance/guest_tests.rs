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

/// Builds store-zfs's integration tests (`tests/*.rs`, not the unit tests) and returns their
/// executables, named by test target, except those in [`NOT_IN_GUEST`].
pub async fn build(runner: &Runner) -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|ws| ws.join("Cargo.toml"))
        .ok_or_else(|| XtaskError::Invalid("cannot find the workspace of xtask".into()))?;
    eprintln!("xtask: building store-zfs's integration tests for the guest");
    let out = runner
        .check(
            &Cmd::new(cargo)
                .arg("test")
                .arg("--manifest-path")
                .arg(manifest)
                .args([
                    "-p",
                    "store-zfs",
                    "--tests",
                    "--no-run",
                    "--message-format=json-render-diagnostics",
                ]),
        )
        .await?;
    let mut found = executables(&out.stdout);
    for (name, why) in NOT_IN_GUEST {
        eprintln!("xtask: not run in the guest: store-zfs test {name}: {why}");
    }
    found.retain(|(name, _)| !NOT_IN_GUEST.iter().any(|(n, _)| n == name));
    if found.is_empty() {
        return Err(XtaskError::Invalid(
            "cargo built no store-zfs test executable".into(),
        ));
    }
    Ok(found)
}

/// The integration-test executables in cargo's JSON messages.
fn executables(messages: &str) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        })
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            let exe = m["executable"].as_str()?.into();
            Some((name, exe))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Runs each test executable (two test threads, `ZSTORE_REQUIRE_ZFS=1`), printing its output
/// when it ends.
pub async fn run(runner: &Runner, tests: &[PathBuf]) -> Vec<TestRun> {
    let mut runs = Vec::new();
    for exe in tests {
        let name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| exe.display().to_string());
        println!("==> guest test {name}: running");
        let started = Instant::now();
        let cmd = Cmd::new(exe)
            .arg("--test-threads=2")
            .env("ZSTORE_REQUIRE_ZFS", "1");
        let (passed, output) = match runner.output(&cmd).await {
            Ok(out) => (out.success(), format!("{}{}", out.stdout, out.stderr)),
            Err(e) => (false, e.to_string()),
        };
        let secs = started.elapsed().as_secs();
        for line in output.lines() {
            println!("    {line}");
        }
        let summary = output
            .lines()
            .rev()
            .find(|l| l.starts_with("test result:"))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let tail: Vec<&str> = output.lines().rev().take(3).collect();
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            });
        println!(
            "==> guest test {name}: {} in {secs} s",
            if passed { "passed" } else { "FAILED" }
        );
        runs.push(TestRun {
            name,
            passed,
            secs,
            summary,
        });
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_integration_test_executables_only() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"store_zfs","kind":["lib"]},"profile":{"test":true},"executable":"/t/deps/store_zfs-1"}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"store_zfs","kind":["lib"]},"profile":{"test":false},"executable":null}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"crash","kind":["test"]},"profile":{"test":true},"executable":"/t/deps/crash-2"}"#,
            r#"{"reason":"compiler-message","message":{}}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            executables(&messages),
            vec![("crash".to_owned(), PathBuf::from("/t/deps/crash-2"))]
        );
    }
}
