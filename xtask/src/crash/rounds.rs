//! The parent: for each round, start the child on the store, `kill -9` it at a random moment,
//! wait for every process it left (its `zfs` commands), then reopen and check.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::journal;
use super::model::Model;
use super::rng::Rng;
use super::target::Target;
use super::verify;
use crate::cancel::Cancel;
use crate::error::{Result, XtaskError};
use crate::procs;
use crate::runner::{Cmd, Runner};

/// How a run went.
#[derive(Debug, Default)]
pub struct Tally {
    /// Rounds run.
    pub rounds: u64,
    /// Children killed while running.
    pub kills: u64,
    /// Broken promises, each with its round.
    pub violations: Vec<String>,
    /// Results checked in full, over all rounds.
    pub results_checked: usize,
    /// Interrupted ids built again.
    pub rebuilt: usize,
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub rounds: u64,
    pub seed: u64,
    /// The kill lands uniformly in `0..max_delay` after the child starts.
    pub max_delay: Duration,
}

/// Longest wait for the processes a killed child left (its `zfs` commands run to the end).
const ORPHANS_LIMIT: Duration = Duration::from_secs(120);

/// Runs every round against `target` (already set up), with `journal` as the shared record.
pub async fn run(
    runner: &Runner,
    cancel: &Cancel,
    target: &Target,
    journal_path: &Path,
    work: &Path,
    plan: &Plan,
) -> Result<Tally> {
    let exe = std::env::current_exe()
        .map_err(|e| XtaskError::io("locating xtask", "/proc/self/exe", e))?;
    let mut rng = Rng::new(plan.seed);
    let mut t = Tally::default();
    let max_ms = u64::try_from(plan.max_delay.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    for round in 1..=plan.rounds {
        if cancel.is_cancelled() {
            return Err(XtaskError::Interrupted);
        }
        let violations_at_start = t.violations.len();
        let log = work.join(format!("child-{round}.log"));
        let stderr = std::fs::File::create(&log)
            .map_err(|e| XtaskError::io("creating the child's log", &log, e))?;
        let cmd = Cmd::new(&exe).args([
            "crash-child".to_owned(),
            "--target".into(),
            target.arg(),
            "--journal".into(),
            journal_path.display().to_string(),
            "--seed".into(),
            rng.next_u64().to_string(),
            "--round".into(),
            round.to_string(),
        ]);
        let mut child = runner.spawn(&cmd, |c| {
            // Its own group, so that the `zfs` processes it leaves can be waited for.
            c.process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::from(stderr))
                .env("RUST_LOG", child_log_filter());
        })?;
        let pid = child.id().unwrap_or(0);
        let delay = Duration::from_millis(rng.next_u64() % max_ms);
        let started = Instant::now();
        let early = tokio::select! {
            status = child.wait() => Some(status),
            () = tokio::time::sleep(delay) => None,
            () = cancel.cancelled() => {
                procs::signal(pid, Signal::KILL);
                let _ = child.wait().await;
                return Err(XtaskError::Interrupted);
            }
        };
        let in_flight = journal::read(journal_path)
            .map(|r| Model::replay(&r).open)
            .unwrap_or_default();
        journal::Journal::open(journal_path)
            .and_then(|j| j.append(&journal::Rec::Killed { round }))
            .map_err(|e| XtaskError::io("writing the journal", journal_path, e))?;
        match early {
            Some(status) => {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                t.violations.push(format!(
                    "round {round}: the child ended by itself ({status:?}) after {} ms: {}",
                    started.elapsed().as_millis(),
                    tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ));
            }
            None => {
                procs::signal(pid, Signal::KILL);
                let status = child
                    .wait()
                    .await
                    .map_err(|e| XtaskError::Invalid(format!("waiting for the child: {e}")))?;
                use std::os::unix::process::ExitStatusExt;
                if status.signal() == Some(9) {
                    t.kills += 1;
                }
            }
        }
        if !group_gone(pid, ORPHANS_LIMIT).await {
            t.violations.push(format!(
                "round {round}: processes of the killed child still run after {ORPHANS_LIMIT:?}"
            ));
        }
        let checked = verify::after_crash(runner, target, journal_path, round % 2 == 0)
            .await
            .map_err(XtaskError::Invalid)?;
        t.rounds += 1;
        t.results_checked += checked.results;
        t.rebuilt += checked.rebuilt;
        let during = if in_flight.is_empty() {
            "with nothing journaled in flight".to_owned()
        } else {
            format!("during {}", in_flight.join(", "))
        };
        println!(
            "round {round:>3}: killed after {:>5} ms {during}; {} results intact{}",
            delay.as_millis(),
            checked.results,
            if checked.violations.is_empty() {
                String::new()
            } else {
                format!("; {} VIOLATION(S)", checked.violations.len())
            }
        );
        for v in checked.violations {
            println!("    {v}");
            t.violations.push(format!("round {round} ({during}): {v}"));
        }
        if t.violations.len() > violations_at_start {
            // Kept (with the work directory) for whoever looks into the violation.
            println!("    the child's log: {}", log.display());
        } else {
            let _ = std::fs::remove_file(&log);
        }
        if t.violations.len() >= 20 {
            println!("crash: stopping after 20 violations");
            break;
        }
    }
    Ok(t)
}

/// The child's `RUST_LOG`: the parent's when set (e.g. `store_zfs=debug` to see every command
/// the child ran before the kill), else warnings only.
fn child_log_filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned())
}

/// Waits until no process of group `pgid` is left.
async fn group_gone(pgid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether any live (non-zombie) process is in group `pgid`, from `/proc/<pid>/stat`.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the last ')': state, ppid, pgrp, ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first().is_some_and(|s| *s != "Z" && *s != "X")
                && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_group_is_alive_and_a_made_up_one_is_not() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).expect("stat");
        let pgrp: u32 = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(2)?.parse().ok())
            .expect("pgrp");
        assert!(group_alive(pgrp));
        assert!(!group_alive(u32::MAX - 7));
    }
}
