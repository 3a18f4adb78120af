//! The parent: for each round, start the child on the store, `kill -9` it at a random moment,
//! wait for every process it left (a ZFS backend's `zfs` commands), then reopen and check.

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use super::StoreSpec;
use super::child::Command;
use super::journal;
use super::model::Model;
use super::rng::Rng;
use super::verify;

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

impl Tally {
    /// The closing line: `crash: N rounds, K kills, V violations`.
    pub fn summary(&self) -> String {
        format!(
            "crash: {} rounds, {} kills, {} violations",
            self.rounds,
            self.kills,
            self.violations.len()
        )
    }

    /// Whether the run passed: `planned` rounds, each ended by a kill, no violation.
    pub fn passed(&self, planned: u64) -> bool {
        self.violations.is_empty() && self.rounds == planned && self.kills == planned
    }
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Rounds, one kill each.
    pub rounds: u64,
    /// The seed of every choice, the parent's and (through it) the children's.
    pub seed: u64,
    /// The kill lands uniformly in `0..max_delay` after the child starts.
    pub max_delay: Duration,
    /// Keep the work directory after the run.
    pub keep: bool,
}

/// Longest wait for the processes a killed child left (its `zfs` commands run to the end).
const ORPHANS_LIMIT: Duration = Duration::from_secs(120);

/// Runs every round against `spec`'s storage (already set up); the journal and the
/// children's logs go to `work`.
pub async fn run<S: StoreSpec>(
    spec: &S,
    child_cmd: &Command,
    work: &Path,
    plan: &Plan,
) -> Result<Tally, String> {
    let journal_path = work.join("journal");
    let mut rng = Rng::new(plan.seed);
    let mut t = Tally::default();
    let max_ms = u64::try_from(plan.max_delay.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    for round in 1..=plan.rounds {
        let violations_at_start = t.violations.len();
        let log = work.join(format!("child-{round}.log"));
        let stderr = std::fs::File::create(&log)
            .map_err(|e| format!("creating the child's log {}: {e}", log.display()))?;
        let mut cmd = child_cmd.round(&journal_path, rng.next_u64(), round, stderr);
        tracing::debug!(round, ?cmd, "starting the crash child");
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the child: {e}"))?;
        let pid = child.id().unwrap_or(0);
        let delay = Duration::from_millis(rng.next_u64() % max_ms);
        let started = Instant::now();
        let early = tokio::select! {
            status = child.wait() => Some(status),
            () = tokio::time::sleep(delay) => None,
        };
        let in_flight = journal::read(&journal_path)
            .map(|r| Model::replay(&r).open)
            .unwrap_or_default();
        journal::Journal::open(&journal_path)
            .and_then(|j| j.append(&journal::Rec::Killed { round }))
            .map_err(|e| format!("writing the journal: {e}"))?;
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
                if let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                    let _ = rustix::process::kill_process(p, Signal::KILL);
                }
                let status = child
                    .wait()
                    .await
                    .map_err(|e| format!("waiting for the child: {e}"))?;
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
        let checked = verify::after_crash(spec, &journal_path, round % 2 == 0).await?;
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
