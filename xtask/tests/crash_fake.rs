//! `cargo xtask crash --engine fake`: real child processes killed with SIGKILL, the fake
//! store reopened and checked after each kill.

use std::process::Command;

#[test]
fn a_few_rounds_on_the_fake_store_find_no_violation() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["crash", "--engine", "fake", "--rounds", "5", "--seed", "3"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("xtask runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("crash: 5 rounds, 5 kills, 0 violations"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("round ").count(), 5, "{stdout}");
}
