//! Where an operation's time goes: every `zfs`/`zpool` process of a phase's timed calls
//! (and the background work they left), grouped by kind of command, so that a phase at 10
//! and one at 2,000 results show which command's cost grows with the pool (a command that
//! walks every dataset, or the mount table) rather than only that an operation got slower.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::stats::{median, percentile};
use crate::Cmd;

/// What one kind of command cost over one phase, on one side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandCost {
    /// The kind: program, subcommand and the flags that change how much it walks
    /// (`zfs destroy -R`, `zfs list -r -t all`, `zpool list`).
    pub command: String,
    /// How many ran in the phase.
    pub count: usize,
    /// Median milliseconds of one.
    pub median_ms: f64,
    /// 95th percentile (nearest rank) milliseconds of one.
    pub p95_ms: f64,
    /// Milliseconds of all of them together.
    pub total_ms: f64,
}

/// The kind of `cmd` (see [`CommandCost::command`]): the values of `-o` (columns) and of
/// property lists do not change what a command walks, so they are left out; `-t` (which
/// types a listing includes) and `-d` (its depth) do, and are kept.
pub fn kind(cmd: &Cmd) -> String {
    let argv = cmd.argv();
    let mut words: Vec<&str> = argv.iter().take(2).map(String::as_str).collect();
    let mut rest = argv.iter().skip(2).map(String::as_str);
    while let Some(a) = rest.next() {
        match a {
            "--" => break,
            "-t" | "-d" => {
                words.push(a);
                if let Some(v) = rest.next() {
                    words.push(v);
                }
            }
            // Options with a value that names columns, properties or a sort key.
            "-o" | "-s" | "-S" => {
                rest.next();
            }
            flag if flag.starts_with('-') => words.push(flag),
            _ => {}
        }
    }
    words.join(" ")
}

/// The durations of the commands of one side in one phase, by kind.
#[derive(Debug, Default)]
pub struct CostSamples(HashMap<String, Vec<f64>>);

impl CostSamples {
    /// Adds one command of `kind` that took `ms`.
    pub fn add(&mut self, kind: String, ms: f64) {
        self.0.entry(kind).or_default().push(ms);
    }

    /// The costs, the most expensive kind (by total time) first.
    pub fn summarise(self) -> Vec<CommandCost> {
        let mut costs: Vec<CommandCost> = self
            .0
            .into_iter()
            .map(|(command, mut ms)| {
                ms.sort_by(f64::total_cmp);
                CommandCost {
                    command,
                    count: ms.len(),
                    median_ms: median(&ms),
                    p95_ms: percentile(&ms, 0.95),
                    total_ms: ms.iter().sum(),
                }
            })
            .collect();
        costs.sort_by(|a, b| {
            b.total_ms
                .total_cmp(&a.total_ms)
                .then_with(|| a.command.cmp(&b.command))
        });
        costs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_keeps_what_changes_the_walk_and_drops_columns_and_names() {
        let k = |args: &[&str]| kind(&Cmd::zfs(args.iter().copied()));
        assert_eq!(k(&["destroy", "-R", "--", "p/a@v1"]), "zfs destroy -R");
        assert_eq!(k(&["destroy", "--", "p/a"]), "zfs destroy");
        assert_eq!(
            k(&[
                "list",
                "-H",
                "-r",
                "-t",
                "all",
                "-o",
                "name,origin",
                "--",
                "p/r",
                "p/c"
            ]),
            "zfs list -H -r -t all"
        );
        assert_eq!(
            k(&["list", "-H", "-d", "1", "-o", "name", "--", "p"]),
            "zfs list -H -d 1"
        );
        assert_eq!(
            k(&["get", "-H", "-p", "-o", "value", "used", "--", "p"]),
            "zfs get -H -p"
        );
        assert_eq!(
            kind(&Cmd::zpool(["list", "-H", "-o", "name"])),
            "zpool list -H"
        );
    }

    #[test]
    fn costs_are_summarised_per_kind_the_costliest_first() {
        let mut s = CostSamples::default();
        for ms in [10.0, 30.0, 20.0] {
            s.add("zfs snapshot".into(), ms);
        }
        s.add("zfs destroy -R".into(), 100.0);
        let costs = s.summarise();
        assert_eq!(costs.len(), 2);
        assert_eq!(costs[0].command, "zfs destroy -R");
        assert_eq!((costs[0].count, costs[0].total_ms), (1, 100.0));
        assert_eq!(costs[1].command, "zfs snapshot");
        assert_eq!(costs[1].count, 3);
        assert_eq!(costs[1].median_ms, 20.0);
        assert_eq!(costs[1].p95_ms, 30.0);
        assert_eq!(costs[1].total_ms, 60.0);
        assert!(CostSamples::default().summarise().is_empty());
    }
}
